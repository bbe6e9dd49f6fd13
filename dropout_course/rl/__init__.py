"""Dropout in reinforcement learning: one small module per topic, each readable top to bottom.

* :mod:`~dropout_course.rl.actions` -- acting with a dropout Q-network: :func:`greedy_action` (dropout
  off), :func:`thompson_action` (one MC dropout mask per decision), :func:`epsilon_greedy_action`.
* :mod:`~dropout_course.rl.cartpole` -- CartPole with other physics: :func:`make_cartpole`.
* :mod:`~dropout_course.rl.dqn` -- single-agent DQN on CartPole (CleanRL style): :class:`DQNArgs`,
  :class:`ReplayBuffer`, :func:`train_dqn`, :func:`evaluate_policy`.
* :mod:`~dropout_course.rl.agents` -- many independent dropout Q-networks in one batched module
  (:class:`QNetworkBatch`), so experiments can afford many seeds.
* :mod:`~dropout_course.rl.levels` and :mod:`~dropout_course.rl.level_dqn` -- procedurally generated
  gridworld levels and DQN agents trained on K of them, tested on fresh ones (Cobbe et al. 2019).
* :mod:`~dropout_course.rl.bandits` -- a contextual bandit with known regret: Thompson sampling by MC
  dropout vs epsilon-greedy vs greedy.

Every dropout probability ``p`` is the probability of DROPPING a unit. Randomness is injected (seeds,
``torch.Generator``, ``numpy.random.Generator``); nothing here reseeds the global RNGs.
"""

from .actions import epsilon_greedy_action, greedy_action, linear_schedule, masks_from, thompson_action
from .agents import QNetworkBatch
from .bandits import ContextualBandit, exploration_floor, run_bandit, run_bandits
from .cartpole import CARTPOLE_DEFAULTS, cartpole_physics, make_cartpole, set_cartpole_physics
from .dqn import DQNArgs, DQNResult, ReplayBuffer, evaluate_policy, train_dqn
from .level_dqn import LevelDQNArgs, LevelReplay, success_rate, train_level_agents
from .levels import GridLevels, random_level

__all__ = [
    "greedy_action",
    "thompson_action",
    "epsilon_greedy_action",
    "linear_schedule",
    "masks_from",
    "QNetworkBatch",
    "CARTPOLE_DEFAULTS",
    "set_cartpole_physics",
    "cartpole_physics",
    "make_cartpole",
    "DQNArgs",
    "DQNResult",
    "ReplayBuffer",
    "train_dqn",
    "evaluate_policy",
    "GridLevels",
    "random_level",
    "LevelDQNArgs",
    "LevelReplay",
    "train_level_agents",
    "success_rate",
    "ContextualBandit",
    "exploration_floor",
    "run_bandits",
    "run_bandit",
]
