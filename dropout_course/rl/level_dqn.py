"""DQN agents trained on K levels and tested on fresh ones: Cobbe et al.'s generalization protocol.

Read top to bottom: :class:`LevelDQNArgs` (hyperparameters), :func:`train_level_agents` (many agents at
once, each on its own training levels, with its own dropout rate and L2 weight), :func:`success_rate`
(greedy episodes on any levels). The update is the DQN of :mod:`dropout_course.rl.dqn` -- a replay
buffer, TD targets from a target network in eval mode, the online network fitted in train mode -- run
for ``A`` agents in lockstep with one :class:`~dropout_course.rl.agents.QNetworkBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import torch_threads
from ..layers import restored_modes
from .actions import linear_schedule, masks_from
from .agents import QNetworkBatch
from .levels import GridLevels

__all__ = ["LevelDQNArgs", "LevelReplay", "train_level_agents", "success_rate"]


@dataclass
class LevelDQNArgs:
    """Hyperparameters of :func:`train_level_agents` (names follow CleanRL's ``dqn.py``)."""

    seed: int = 0
    total_steps: int = 1000  # lockstep steps; each agent collects envs_per_agent transitions per step
    envs_per_agent: int = 8  # parallel episodes per agent, each on a training level drawn at random
    max_steps: int = 12  # an episode is cut after this many moves
    learning_rate: float = 1e-3
    gamma: float = 0.9
    batch_size: int = 64
    target_network_frequency: int = 50
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5
    learning_starts: int = 20
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        for name in ("total_steps", "envs_per_agent", "max_steps", "batch_size", "target_network_frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LevelDQNArgs.{name} must be a positive int, got {value!r}")
        for name in ("gamma", "start_e", "end_e", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"LevelDQNArgs.{name} must be in [0, 1], got {getattr(self, name)!r}")


class LevelReplay:
    """Each agent's transitions, stored as indices into the level tables: (level, cell, action, next cell, done).

    The observations are looked up in :attr:`GridLevels.obs` when sampled, so the buffer is five small
    integer arrays of shape (A, capacity) rather than copies of every view.
    """

    def __init__(self, n_agents: int, capacity: int) -> None:
        self.level, self.cell, self.action, self.next_cell = (
            np.zeros((n_agents, capacity), dtype=np.int64) for _ in range(4)
        )
        self.done = np.zeros((n_agents, capacity), dtype=np.float32)
        self.capacity, self.size = capacity, 0

    def add(self, level, cell, action, next_cell, done) -> None:
        """Store one transition per (agent, episode): arrays of shape (A, E)."""
        slots = (self.size + np.arange(level.shape[1])) % self.capacity
        for store, value in zip(
            (self.level, self.cell, self.action, self.next_cell, self.done),
            (level, cell, action, next_cell, done),
            strict=True,
        ):
            store[:, slots] = value
        self.size = min(self.size + level.shape[1], self.capacity)

    def sample(self, levels: GridLevels, batch_size: int, rng: np.random.Generator):
        """``batch_size`` transitions per agent: tensors s (A, B, D), a (A, B), d (A, B), s' (A, B, D)."""
        agents = np.arange(self.level.shape[0])[:, None]
        idx = rng.integers(0, self.size, size=(len(agents), batch_size))
        level = self.level[agents, idx]
        s = torch.from_numpy(levels.obs[level, self.cell[agents, idx]])
        s_next = torch.from_numpy(levels.obs[level, self.next_cell[agents, idx]])
        a = torch.from_numpy(self.action[agents, idx])
        return s, a, torch.from_numpy(self.done[agents, idx]), s_next


@torch_threads(1)
def train_level_agents(
    levels: GridLevels,
    agent_levels: Sequence[Sequence[int]],
    dropout: float | Sequence[float] = 0.0,
    l2: float | Sequence[float] = 0.0,
    args: LevelDQNArgs | None = None,
    progress: bool = False,
) -> QNetworkBatch:
    """Train one DQN agent per entry of ``agent_levels`` (its training levels: indices into ``levels``).

    All agents step in lockstep: each plays ``envs_per_agent`` episodes at once, every episode on one of
    its own training levels drawn uniformly, with epsilon-greedy exploration (epsilon decays linearly).
    The loss of agent ``i`` is its TD regression plus ``l2[i]`` times its sum of squared weights (the L2
    penalty of Cobbe et al.); its hidden units are dropped with probability ``dropout[i]`` while it is
    fitted. Returns the agents' Q-networks in eval mode.
    """
    args = LevelDQNArgs() if args is None else args
    n_agents = len(agent_levels)
    pools = [np.asarray(pool, dtype=np.int64) for pool in agent_levels]
    if n_agents == 0 or any(len(pool) == 0 for pool in pools):
        raise ValueError("agent_levels must give every agent at least one training level")
    if any(pool.min() < 0 or pool.max() >= len(levels) for pool in pools):
        raise ValueError(f"agent_levels must index levels 0..{len(levels) - 1}")
    l2 = torch.as_tensor([l2] * n_agents if np.ndim(l2) == 0 else l2, dtype=torch.float32)
    if l2.shape != (n_agents,) or (l2 < 0).any():
        raise ValueError(f"l2 must be one non-negative float or {n_agents} of them, got {l2.tolist()}")

    # ---- seeding: everything random below comes from these two generators
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    q_net = QNetworkBatch(n_agents, levels.obs_dim, 4, args.hidden, dropout, generator)
    target_net = QNetworkBatch(n_agents, levels.obs_dim, 4, args.hidden, dropout, torch.Generator()).eval()
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate)
    envs = args.envs_per_agent
    buffer = LevelReplay(n_agents, args.total_steps * envs)

    def new_levels() -> np.ndarray:  # (A, E): a training level of each agent for each episode
        return np.stack([pool[rng.integers(0, len(pool), size=envs)] for pool in pools])

    level = new_levels()
    cell = levels.start[level]
    moves = np.zeros((n_agents, envs), dtype=np.int64)
    decay = int(args.exploration_fraction * args.total_steps)
    with masks_from(q_net, generator):
        for step in tqdm(range(args.total_steps), disable=not progress, desc="agents", leave=False):
            # ---- act: epsilon-greedy on the eval-mode network, all agents and episodes at once
            q_net.eval()
            with torch.no_grad():
                action = q_net(torch.from_numpy(levels.obs[level, cell])).argmax(dim=2).numpy()  # (A, E)
            explore = rng.random(action.shape) < linear_schedule(args.start_e, args.end_e, decay, step)
            action = np.where(explore, rng.integers(0, 4, size=action.shape), action)
            next_cell, done = levels.step(level, cell, action)
            buffer.add(level, cell, action, next_cell, done)
            moves += 1
            over = done | (moves >= args.max_steps)  # a cut episode is not terminal: no done flag stored
            level = np.where(over, new_levels(), level)
            cell = np.where(over, levels.start[level], next_cell)
            moves[over] = 0

            # ---- learn: one TD step per agent; reward is 1 exactly on reaching the goal (d = 1)
            if step >= args.learning_starts:
                s, a, d, s_next = buffer.sample(levels, args.batch_size, rng)
                with torch.no_grad():
                    target = d + args.gamma * target_net(s_next).max(dim=2).values * (1.0 - d)  # (A, B)
                q_net.train()
                q_pred = q_net(s).gather(2, a[:, :, None]).squeeze(2)  # (A, B)
                loss = ((q_pred - target) ** 2).mean(dim=1) + l2 * q_net.l2()  # (A,)
                optimizer.zero_grad()
                loss.sum().backward()  # agents are independent: the sum just batches their updates
                optimizer.step()
                if (step - args.learning_starts + 1) % args.target_network_frequency == 0:
                    target_net.load_state_dict(q_net.state_dict())
    return q_net.eval()


@torch_threads(1)
@torch.no_grad()
def success_rate(
    q_net: QNetworkBatch,
    levels: GridLevels,
    agent_levels: np.ndarray,
    max_steps: int = 12,
    mode: str = "eval",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Fraction of levels each agent solves greedily within ``max_steps``: shape (A,).

    ``agent_levels`` (A, n): the levels agent ``i`` plays, one episode each, from the level's start.
    ``mode="eval"``: dropout off (deterministic, how an agent is evaluated); ``"train"``: dropout left on,
    a fresh mask at every decision. The network's mode is restored.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    level = np.asarray(agent_levels, dtype=np.int64)
    if level.ndim != 2 or level.shape[0] != q_net.n_agents:
        raise ValueError(f"agent_levels must have shape ({q_net.n_agents}, n), got {level.shape}")
    cell, solved = levels.start[level], np.zeros(level.shape, dtype=bool)
    with restored_modes(q_net), masks_from(q_net, generator if mode == "train" else None):
        q_net.train(mode == "train")
        for _ in range(max_steps):
            action = q_net(torch.from_numpy(levels.obs[level, cell])).argmax(dim=2).numpy()
            next_cell, done = levels.step(level, cell, action)
            cell = np.where(solved, cell, next_cell)
            solved |= done
    return solved.mean(axis=1)
