"""A contextual bandit with a known optimal arm, and agents that play it: Thompson sampling vs epsilon-greedy.

Read top to bottom: :class:`ContextualBandit` (the problem, with its exact mean rewards, so regret is
known), :func:`run_bandits` (one agent per bandit, all in lockstep; the agents of different policies
given the same seed see the same contexts, the same reward noise and start from the same weights, so
policies can be compared seed by seed), :func:`exploration_floor` (the regret per round that uniform
exploration alone costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..config import torch_threads
from .actions import epsilon_greedy_action, masks_from, thompson_action
from .agents import QNetworkBatch

__all__ = ["ContextualBandit", "run_bandits", "run_bandit", "exploration_floor"]


class ContextualBandit:
    """A synthetic contextual bandit with a known optimal arm.

    Contexts :math:`x \\sim \\mathcal{U}[-1, 1]^d`; arm :math:`a` pays
    :math:`r = \\mu_a(x) + \\varepsilon`, :math:`\\varepsilon \\sim \\mathcal{N}(0, \\sigma^2)`, with a
    non-linear mean :math:`\\mu_a(x) = \\sin(w_a^\\top x + b_a)` (random :math:`w_a, b_a` from ``seed``),
    so which arm is best changes across the context space.
    """

    def __init__(
        self,
        n_arms: int = 4,
        context_dim: int = 2,
        noise_std: float = 0.1,
        seed: int = 0,
        scale: float = 2.0,
    ) -> None:
        if isinstance(n_arms, bool) or not isinstance(n_arms, int) or n_arms < 2:
            raise ValueError(f"n_arms must be an int >= 2, got {n_arms!r}")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim must be a positive int, got {context_dim!r}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.n_arms, self.context_dim, self.noise_std = n_arms, context_dim, float(noise_std)
        params = np.random.default_rng(seed)
        self.w = params.normal(0.0, scale, size=(n_arms, context_dim))
        self.b = params.uniform(0.0, 2 * np.pi, size=n_arms)

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` contexts, shape (n, context_dim), float32."""
        return rng.uniform(-1.0, 1.0, size=(n, self.context_dim)).astype(np.float32)

    def mean_rewards(self, x: np.ndarray) -> np.ndarray:
        """Expected reward of every arm, (n, n_arms) for contexts (n, context_dim)."""
        return np.sin(np.atleast_2d(x) @ self.w.T + self.b)  # (n, n_arms)

    def pull(self, x: np.ndarray, arm: int, rng: np.random.Generator) -> float:
        """A noisy reward for ``arm`` at one context ``x``."""
        return float(self.mean_rewards(x)[0, arm] + self.noise_std * rng.normal())


def exploration_floor(
    bandit: ContextualBandit, epsilon: float, n_contexts: int = 20_000, seed: int = 0
) -> float:
    """Expected regret per round of exploring alone: :math:`\\epsilon\\, \\mathbb{E}_x[\\max_a \\mu_a(x) -
    \\tfrac{1}{n}\\sum_a \\mu_a(x)]`.

    With probability ``epsilon`` epsilon-greedy pulls a uniform arm, whatever it has learned, so its
    regret per round never falls below this: its cumulative regret grows at least linearly with this slope.
    """
    means = bandit.mean_rewards(bandit.contexts(n_contexts, np.random.default_rng(seed)))
    return float(epsilon * (means.max(axis=1) - means.mean(axis=1)).mean())


@torch_threads(1)
def run_bandits(
    bandits: Sequence[ContextualBandit],
    policy: str = "thompson",
    steps: int = 1000,
    epsilon: float = 0.1,
    dropout: float = 0.2,
    hidden: tuple[int, ...] = (64, 64),
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Play each bandit with its own agent for ``steps`` rounds; cumulative regret, shape (len(bandits), steps).

    Agent ``i`` is a dropout Q-network (context -> predicted reward of each arm) trained after every round
    by one Adam step of MSE on a minibatch of its past (context, arm, reward), dropout on. ``policy``:
    ``"thompson"`` -- :func:`~dropout_course.rl.actions.thompson_action` (one dropout mask per round);
    ``"epsilon"`` -- :func:`~dropout_course.rl.actions.epsilon_greedy_action` with a fixed ``epsilon``;
    ``"greedy"`` -- epsilon = 0. Regret of a round: :math:`\\max_a \\mu_a(x_t) - \\mu_{a_t}(x_t)`.
    Contexts, reward noise and initial weights depend only on ``seed``, not on ``policy`` (paired runs).
    """
    if policy not in ("thompson", "epsilon", "greedy"):
        raise ValueError(f"policy must be 'thompson', 'epsilon' or 'greedy', got {policy!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if policy == "thompson" and dropout == 0:
        raise ValueError("Thompson sampling by MC dropout needs dropout > 0, got dropout=0")
    bandits = list(bandits)
    if not bandits or len({(b.n_arms, b.context_dim) for b in bandits}) != 1:
        raise ValueError("bandits must be a non-empty list with the same n_arms and context_dim")
    n_agents, n_arms = len(bandits), bandits[0].n_arms

    # ---- seeding: contexts and noise first, so they do not depend on the policy
    rng = np.random.default_rng(seed)
    contexts = np.stack([b.contexts(steps, rng) for b in bandits])  # (A, T, d)
    noise = np.stack([b.noise_std * rng.normal(size=steps) for b in bandits])  # (A, T)
    means = np.stack([b.mean_rewards(x) for b, x in zip(bandits, contexts, strict=True)])  # (A, T, n_arms)
    generator = torch.Generator().manual_seed(seed)
    net = QNetworkBatch(n_agents, bandits[0].context_dim, n_arms, tuple(hidden), dropout, generator)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)

    x_all = torch.from_numpy(contexts)
    arms = np.zeros((n_agents, steps), dtype=np.int64)
    rewards = np.zeros((n_agents, steps), dtype=np.float32)
    agents = np.arange(n_agents)
    for t in range(steps):
        x = contexts[:, t : t + 1]  # (A, 1, d)
        if policy == "thompson":
            arm = thompson_action(net, x, generator=generator)[:, 0]
        else:
            arm = epsilon_greedy_action(net, x, epsilon if policy == "epsilon" else 0.0, rng)[:, 0]
        arms[:, t] = arm
        rewards[:, t] = means[agents, t, arm] + noise[:, t]
        # ---- one gradient step per agent on a minibatch of its past rounds
        idx = rng.integers(0, t + 1, size=(n_agents, min(batch_size, t + 1)))
        net.train()
        with masks_from(net, generator):
            pred = net(x_all[agents[:, None], idx]).gather(
                2, torch.from_numpy(arms[agents[:, None], idx, None])
            )
        target = torch.from_numpy(rewards[agents[:, None], idx])
        loss = nn.functional.mse_loss(pred.squeeze(2), target, reduction="none").mean(dim=1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    regret = means.max(axis=2) - np.take_along_axis(means, arms[:, :, None], axis=2)[:, :, 0]  # (A, T)
    return np.cumsum(regret, axis=1)


def run_bandit(bandit: ContextualBandit, policy: str = "thompson", steps: int = 1000, **kwargs) -> np.ndarray:
    """:func:`run_bandits` for one bandit: its cumulative regret after each round, shape (steps,)."""
    return run_bandits([bandit], policy, steps, **kwargs)[0]
