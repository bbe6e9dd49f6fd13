"""DQN with a dropout Q-network on CartPole, in the style of CleanRL's ``dqn.py``: arguments, buffer, loop.

Read top to bottom: :class:`DQNArgs` (the hyperparameters), :class:`ReplayBuffer` (the transitions),
:func:`train_dqn` (one seeding block, then act -> store -> learn), :func:`evaluate_policy` (greedy
episodes with dropout off, or left on to show what that does). Every dropout probability ``p`` is the
probability of DROPPING a unit.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import seeded, torch_threads
from ..models import QNetwork, QNetworkConfig
from .actions import (
    epsilon_greedy_action,
    greedy_action,
    linear_schedule,
    masks_from,
    thompson_action,
)
from .cartpole import make_cartpole

__all__ = ["DQNArgs", "ReplayBuffer", "DQNResult", "train_dqn", "evaluate_policy"]


@dataclass
class DQNArgs:
    """DQN hyperparameters (names follow CleanRL's ``dqn.py``). One env per training setting is stepped
    in lockstep; ``total_steps`` counts these vectorised steps."""

    seed: int = 1
    total_steps: int = 1000  # vectorised env steps (transitions = total_steps * number of settings)
    learning_rate: float = 2e-3
    buffer_size: int = 10_000
    gamma: float = 0.98
    target_network_frequency: int = 25  # gradient steps between hard target-network updates
    batch_size: int = 64
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.4  # fraction of total_steps over which epsilon decays
    learning_starts: int = 100
    train_frequency: int = 1
    hidden: tuple[int, ...] = (64, 64)
    dropout: float = 0.0  # probability of DROPPING a hidden unit of the Q-network
    layer_norm: bool = False  # with a small dropout: DroQ's Q-function
    weight_decay: float = 0.0
    exploration: str = "epsilon"  # "epsilon" (epsilon-greedy) or "thompson" (MC dropout)
    max_episode_steps: int = 200

    def __post_init__(self) -> None:
        positive = ("total_steps", "buffer_size", "target_network_frequency", "batch_size", "train_frequency")
        positive += ("max_episode_steps",)
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DQNArgs.{name} must be a positive int, got {value!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(
                f"DQNArgs.learning_starts must be a non-negative int, got {self.learning_starts!r}"
            )
        for name in ("gamma", "start_e", "end_e", "exploration_fraction", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"DQNArgs.{name} must be in [0, 1], got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"DQNArgs.learning_rate must be positive, got {self.learning_rate!r}")
        if self.exploration not in ("epsilon", "thompson"):
            raise ValueError(f"DQNArgs.exploration must be 'epsilon' or 'thompson', got {self.exploration!r}")
        if self.exploration == "thompson" and self.dropout == 0:
            raise ValueError("DQNArgs.exploration='thompson' needs dropout > 0, got dropout=0")


class ReplayBuffer:
    """A circular buffer of transitions ``(obs, action, reward, next_obs, done)`` with uniform sampling.

    ``done`` is 1 only where the episode TERMINATED (no bootstrapping from ``next_obs``); a time-limit
    truncation stores 0, so the TD target still bootstraps through it.

    >>> buffer = ReplayBuffer(capacity=3, obs_dim=2)
    >>> buffer.add(np.zeros((2, 2)), np.array([0, 1]), np.ones(2), np.ones((2, 2)), np.zeros(2))
    >>> len(buffer)
    2
    >>> buffer.add(np.zeros((2, 2)), np.array([1, 1]), np.ones(2), np.ones((2, 2)), np.ones(2))
    >>> len(buffer), buffer.actions.tolist()  # capacity 3: the oldest transition was overwritten
    (3, [1, 1, 1])
    """

    def __init__(self, capacity: int, obs_dim: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.position = 0  # where the next transition goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, dones) -> None:
        """Store a batch of ``n`` transitions (arrays with leading dimension ``n``)."""
        slots = (self.position + np.arange(len(actions))) % self.capacity
        self.obs[slots], self.next_obs[slots], self.actions[slots] = obs, next_obs, actions
        self.rewards[slots], self.dones[slots] = rewards, dones
        self.position = int(slots[-1] + 1) % self.capacity
        self.size = min(self.size + len(actions), self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[Tensor, ...]:
        """``batch_size`` transitions drawn uniformly with replacement, as tensors ``(s, a, r, s', d)``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        idx = rng.integers(0, self.size, size=batch_size)
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.dones)
        return tuple(torch.from_numpy(a[idx]) for a in arrays)


@dataclass
class DQNResult:
    """A trained Q-network and its training log."""

    q_net: QNetwork
    episodes: list[dict] = field(default_factory=list)  # one row per finished episode: step, env, return
    losses: list[float] = field(default_factory=list)  # TD loss of each gradient step


def _td_step(q_net, target_net, optimizer, batch, gamma: float) -> float:
    """One gradient step of the TD regression :math:`(Q_\\theta(s, a) - y)^2`; returns the loss."""
    s, a, r, s_next, d = batch  # (B, obs_dim), (B,), (B,), (B, obs_dim), (B,)
    with torch.no_grad():
        td_target = r + gamma * target_net(s_next).max(dim=1).values * (1.0 - d)  # (B,)
    q_net.train()  # dropout on while fitting the TD targets
    q_pred = q_net(s).gather(1, a[:, None]).squeeze(1)  # (B,)
    loss = nn.functional.mse_loss(q_pred, td_target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@torch_threads(1)
def train_dqn(args: DQNArgs, train_physics: list[dict] | None = None, progress: bool = False) -> DQNResult:
    """Train DQN on one CartPole env per physics setting in ``train_physics``, stepped in lockstep.

    Standard DQN (Mnih et al. 2015): a replay buffer, TD targets
    :math:`y = r + \\gamma (1 - d) \\max_{a'} Q_{\\bar\\theta}(s', a')` from a target network
    :math:`Q_{\\bar\\theta}` (eval mode, copied every ``target_network_frequency`` gradient steps), and the
    online network trained in train mode, so dropout regularizes the regression onto the targets.
    Returns the online Q-network in eval mode and the training log.
    """
    train_physics = [{}] if train_physics is None else list(train_physics)
    if not train_physics:
        raise ValueError("train_physics must list at least one physics setting, got []")

    # ---- seeding: everything random below comes from these two generators and the env seeds
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    envs = [
        make_cartpole(p, seed=args.seed + 1000 * k, max_episode_steps=args.max_episode_steps)
        for k, p in enumerate(train_physics)
    ]
    obs = np.stack([env.reset(seed=args.seed + 1000 * k)[0] for k, env in enumerate(envs)])  # (E, 4)

    config = QNetworkConfig(
        obs_dim=4, n_actions=2, hidden=tuple(args.hidden), dropout=args.dropout, layer_norm=args.layer_norm
    )
    with seeded(args.seed):
        q_net = QNetwork(config)
    target_net = copy.deepcopy(q_net).eval()
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    buffer = ReplayBuffer(args.buffer_size, obs_dim=4)

    result = DQNResult(q_net=q_net)
    episode_return = np.zeros(len(envs))
    decay_steps = int(args.exploration_fraction * args.total_steps)
    try:
        with masks_from(q_net, generator):  # every dropout mask below comes from ``generator``
            for step in tqdm(range(args.total_steps), disable=not progress, desc="DQN", leave=False):
                # ---- act in all envs at once
                if args.exploration == "thompson":
                    actions = thompson_action(q_net, obs, generator=generator)
                else:
                    epsilon = linear_schedule(args.start_e, args.end_e, decay_steps, step)
                    actions = epsilon_greedy_action(q_net, obs, epsilon, rng)
                next_obs = np.empty_like(obs)  # true next states (for the buffer)
                seen_next = np.empty_like(obs)  # what the agent sees next (a fresh episode after a done)
                rewards, terminals = np.zeros(len(envs)), np.zeros(len(envs))
                for k, env in enumerate(envs):
                    o, r, terminated, truncated, _ = env.step(int(actions[k]))
                    next_obs[k], rewards[k], terminals[k] = o, r, terminated
                    episode_return[k] += r
                    if terminated or truncated:  # bootstrap through time-limit truncations only
                        result.episodes.append({"step": step, "env": k, "return": float(episode_return[k])})
                        episode_return[k] = 0.0
                        o, _ = env.reset()
                    seen_next[k] = o
                buffer.add(obs, actions, rewards, next_obs, terminals)
                obs = seen_next

                # ---- learn: one gradient step on a replayed minibatch
                if step >= args.learning_starts and step % args.train_frequency == 0:
                    batch = buffer.sample(args.batch_size, rng)
                    result.losses.append(_td_step(q_net, target_net, optimizer, batch, args.gamma))
                    if len(result.losses) % args.target_network_frequency == 0:
                        target_net.load_state_dict(q_net.state_dict())
    finally:
        for env in envs:
            env.close()
    q_net.eval()
    return result


@torch_threads(1)
def evaluate_policy(
    q_net: nn.Module,
    physics: list[dict] | None = None,
    episodes: int = 5,
    seed: int = 0,
    mode: str = "eval",
    max_episode_steps: int = 200,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Returns of greedy episodes, array of shape (len(physics), episodes).

    ``mode="eval"``: greedy on the network in eval mode (dropout off, deterministic) -- how a trained
    agent should be evaluated. ``mode="train"``: greedy on a fresh dropout mask at every decision
    (dropout left on by mistake; this is Thompson sampling). All episodes run in lockstep, batched.
    Episode ``j`` of every setting starts from ``env.reset(seed=seed + j)``.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    physics = [{}] if physics is None else list(physics)
    envs = [make_cartpole(p, max_episode_steps=max_episode_steps) for p in physics for _ in range(episodes)]
    try:
        obs = np.stack(
            [env.reset(seed=seed + j % episodes)[0] for j, env in enumerate(envs)]
        )  # (S*episodes, 4)
        returns = np.zeros(len(envs))
        alive = np.ones(len(envs), dtype=bool)
        while alive.any():
            live = np.flatnonzero(alive)
            if mode == "eval":
                actions = greedy_action(q_net, obs[live])
            else:
                actions = thompson_action(q_net, obs[live], generator=generator)
            for a, i in zip(actions, live, strict=True):
                o, r, terminated, truncated, _ = envs[i].step(int(a))
                returns[i] += r
                obs[i] = o
                if terminated or truncated:
                    alive[i] = False
    finally:
        for env in envs:
            env.close()
    return returns.reshape(len(physics), episodes)
