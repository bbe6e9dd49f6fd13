"""Dropout in reinforcement learning, in one readable file (in the style of CleanRL's ``dqn.py``).

* Action selection with a dropout Q-network: :func:`greedy_action` (eval mode, dropout off),
  :func:`thompson_action` (one MC dropout mask per decision, train mode) and
  :func:`epsilon_greedy_action`.
* CartPole physics variants (pole length, pole mass, gravity, ...) for generalization to unseen
  environments: :func:`make_cartpole`, :func:`set_cartpole_physics`, :func:`cartpole_physics`.
* DQN with a dropout :class:`~dropout_course.models.QNetwork`, a replay buffer and a target network,
  trained on several physics settings at once: :class:`DQNArgs`, :func:`train_dqn`,
  :func:`evaluate_policy`.
* A synthetic contextual bandit with a known optimal arm, to compare Thompson sampling by MC dropout
  with epsilon-greedy by cumulative regret: :class:`ContextualBandit`, :func:`run_bandit`.

Every dropout probability ``p`` is the probability of DROPPING a unit. Randomness is injected: seeds,
``torch.Generator`` and ``numpy.random.Generator``; nothing here reseeds the global RNGs.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .models import QNetwork, QNetworkConfig
from .training import seeded

__all__ = [
    "greedy_action",
    "thompson_action",
    "epsilon_greedy_action",
    "linear_schedule",
    "CARTPOLE_DEFAULTS",
    "set_cartpole_physics",
    "cartpole_physics",
    "make_cartpole",
    "DQNArgs",
    "DQNResult",
    "train_dqn",
    "evaluate_policy",
    "ContextualBandit",
    "run_bandit",
]


# --------------------------------------------------------------------------- action selection


def _single_thread(func):
    """Run ``func`` with PyTorch on one thread, restoring the caller's thread count afterwards.

    The networks here are tiny and each step is a handful of small matrix products: on a busy or
    2-core machine, multi-threaded kernels spend more time waking threads than computing (measured
    10-40x slower on a shared 2-core machine).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return func(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _as_batch(obs) -> Tensor:
    """One observation (obs_dim,) or a batch (N, obs_dim) as a float32 tensor of shape (N, obs_dim)."""
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    return x.unsqueeze(0) if x.dim() == 1 else x  # (N, obs_dim)


class _masks_from:
    """Context manager: the dropout layers of ``net`` draw their masks from ``generator`` (if given).

    The course's dropout layers take a ``generator`` attribute; for any other dropout module (e.g.
    ``torch.nn.Dropout``) the block runs on PyTorch's global RNG seeded from ``generator`` in a fork, so
    the caller's global RNG state is left untouched either way.
    """

    def __init__(self, net: nn.Module, generator: torch.Generator | None) -> None:
        self.net, self.generator = net, generator

    def __enter__(self):
        if self.generator is None:
            return self
        modules = list(self.net.modules())
        self.ours = [m for m in modules if hasattr(m, "generator") and hasattr(m, "p")]
        self.others = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in modules)
        self.saved = [m.generator for m in self.ours]
        for m in self.ours:
            m.generator = self.generator
        if self.others:
            self.fork = seeded(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            self.fork.__enter__()
        return self

    def __exit__(self, *exc):
        if self.generator is None:
            return False
        for m, g in zip(self.ours, self.saved, strict=True):
            m.generator = g
        if self.others:
            self.fork.__exit__(*exc)
        return False


@_single_thread
@torch.no_grad()
def _q_values(q_net: nn.Module, obs, training: bool, generator: torch.Generator | None) -> Tensor:
    """Q-values (N, n_actions) with the network in train (dropout on) or eval mode; mode restored after."""
    was_training = q_net.training
    if was_training != training:
        q_net.train(training)
    try:
        with _masks_from(q_net, generator if training else None):
            return q_net(_as_batch(obs))
    finally:
        if was_training != training:
            q_net.train(was_training)


def greedy_action(q_net: nn.Module, obs) -> int | np.ndarray:
    """The action with the highest Q-value, dropout OFF (eval mode): deterministic.

    ``obs`` is one observation (returns an int) or a batch (returns an int64 array of actions).
    """
    actions = _q_values(q_net, obs, training=False, generator=None).argmax(dim=1).numpy()
    return int(actions[0]) if np.ndim(obs) == 1 else actions


def thompson_action(q_net: nn.Module, obs, generator: torch.Generator | None = None) -> int | np.ndarray:
    """Thompson sampling by MC dropout (dropout ON): sample one dropout mask, act greedily on that network.

    Each call is one decision with a fresh mask: the dropout network with that mask is one sample from
    the approximate posterior over Q-functions (Gal & Ghahramani 2016), and acting greedily on a
    posterior sample is Thompson sampling. The network's train/eval mode is restored afterwards.

    Args:
        q_net: a Q-network with dropout layers, (N, obs_dim) -> (N, n_actions).
        obs: one observation (obs_dim,) -> returns an int; or a batch (N, obs_dim) -> int64 array (N,).
        generator: optional ``torch.Generator`` for the masks (reproducible decisions).
    """
    actions = _q_values(q_net, obs, training=True, generator=generator).argmax(dim=1).numpy()
    return int(actions[0]) if np.ndim(obs) == 1 else actions


def epsilon_greedy_action(
    q_net: nn.Module, obs, epsilon: float, rng: np.random.Generator
) -> int | np.ndarray:
    """Epsilon-greedy: a uniformly random action with probability ``epsilon``, else the greedy one.

    The greedy action uses the network in eval mode (dropout off). ``obs`` is one observation (returns an
    int) or a batch (returns an int64 array, one independent coin flip per row).
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be a probability in [0, 1], got {epsilon!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    q = _q_values(q_net, obs, training=False, generator=None)  # (N, n_actions)
    n, n_actions = q.shape
    actions = q.argmax(dim=1).numpy()
    explore = rng.random(n) < epsilon
    actions = np.where(explore, rng.integers(0, n_actions, size=n), actions)
    return int(actions[0]) if np.ndim(obs) == 1 else actions


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear decay from ``start`` to ``end`` over ``duration`` steps, then ``end`` (CleanRL's schedule)."""
    slope = (end - start) / max(duration, 1)
    return max(slope * t + start, end) if end <= start else min(slope * t + start, end)


# --------------------------------------------------------------------------- CartPole variants

CARTPOLE_DEFAULTS = {
    "gravity": 9.8,
    "masscart": 1.0,
    "masspole": 0.1,
    "length": 0.5,  # HALF the pole's length, as in gymnasium
    "force_mag": 10.0,
}


def set_cartpole_physics(env: gym.Env, **physics: float) -> gym.Env:
    """Change CartPole's physics in place (``gravity``, ``masscart``, ``masspole``, ``length``,
    ``force_mag``) and update the derived ``total_mass`` and ``polemass_length``; return ``env``.

    >>> env = set_cartpole_physics(gym.make("CartPole-v1"), length=1.0)
    >>> env.unwrapped.polemass_length
    0.1
    """
    cartpole = env.unwrapped
    for name, value in physics.items():
        if name not in CARTPOLE_DEFAULTS:
            raise ValueError(f"unknown CartPole parameter {name!r}; allowed: {sorted(CARTPOLE_DEFAULTS)}")
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"CartPole parameter {name} must be a positive number, got {value!r}")
        setattr(cartpole, name, float(value))
    # Derived quantities the dynamics use directly: they must follow the parameters.
    cartpole.total_mass = cartpole.masspole + cartpole.masscart
    cartpole.polemass_length = cartpole.masspole * cartpole.length
    return env


def cartpole_physics(env: gym.Env) -> dict[str, float]:
    """The physics parameters of a CartPole env (including the derived ones) as a dict."""
    cartpole = env.unwrapped
    names = [*CARTPOLE_DEFAULTS, "total_mass", "polemass_length"]
    return {name: float(getattr(cartpole, name)) for name in names}


def make_cartpole(
    physics: dict | None = None, seed: int | None = None, max_episode_steps: int = 200
) -> gym.Env:
    """A CartPole-v1 env with the given physics, episodes capped at ``max_episode_steps``.

    With ``seed``, the action space is seeded and the env is reset once with ``seed`` (so later
    ``env.reset()`` calls without a seed continue a reproducible sequence).
    """
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
    env = gym.make("CartPole-v1", max_episode_steps=max_episode_steps)
    set_cartpole_physics(env, **(physics or {}))
    if seed is not None:
        env.action_space.seed(seed)
        env.reset(seed=seed)
    return env


# --------------------------------------------------------------------------- DQN


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


@dataclass
class DQNResult:
    """A trained Q-network and its training log."""

    q_net: QNetwork
    episodes: list[dict] = field(default_factory=list)  # one row per finished episode: step, env, return
    losses: list[float] = field(default_factory=list)  # TD loss of each gradient step


@_single_thread
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

    # ---- seeding: everything random below comes from these three
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    envs = [
        make_cartpole(p, seed=args.seed + 1000 * k, max_episode_steps=args.max_episode_steps)
        for k, p in enumerate(train_physics)
    ]
    n_envs = len(envs)
    obs = np.stack([env.reset(seed=args.seed + 1000 * k)[0] for k, env in enumerate(envs)])  # (E, 4)

    config = QNetworkConfig(
        obs_dim=4, n_actions=2, hidden=tuple(args.hidden), dropout=args.dropout, layer_norm=args.layer_norm
    )
    with seeded(args.seed):
        q_net = QNetwork(config)
    target_net = copy.deepcopy(q_net).eval()
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    # ---- replay buffer (preallocated NumPy arrays)
    size = args.buffer_size
    buf_obs = np.zeros((size, 4), dtype=np.float32)
    buf_next = np.zeros((size, 4), dtype=np.float32)
    buf_action = np.zeros(size, dtype=np.int64)
    buf_reward = np.zeros(size, dtype=np.float32)
    buf_done = np.zeros(size, dtype=np.float32)  # 1 where the episode TERMINATED (no bootstrap)
    filled = 0

    result = DQNResult(q_net=q_net)
    episode_return = np.zeros(n_envs)
    gradient_steps = 0
    decay_steps = int(args.exploration_fraction * args.total_steps)
    masks = _masks_from(q_net, generator)  # every dropout mask below comes from ``generator``
    masks.__enter__()
    for step in tqdm(range(args.total_steps), disable=not progress, desc="DQN", leave=False):
        # ---- act in all envs at once
        if args.exploration == "thompson":
            actions = thompson_action(q_net, obs, generator=generator)
        else:
            epsilon = linear_schedule(args.start_e, args.end_e, decay_steps, step)
            actions = epsilon_greedy_action(q_net, obs, epsilon, rng)
        next_obs = np.empty_like(obs)  # true next states (for the buffer)
        reset_obs = np.empty_like(obs)  # what the agent sees next (a fresh episode after a done)
        rewards, terminals = np.zeros(n_envs), np.zeros(n_envs)
        for k, env in enumerate(envs):
            o, r, terminated, truncated, _ = env.step(int(actions[k]))
            next_obs[k], rewards[k], terminals[k] = o, r, terminated
            episode_return[k] += r
            if terminated or truncated:  # bootstrap through time-limit truncations, not terminations
                result.episodes.append({"step": step, "env": k, "return": float(episode_return[k])})
                episode_return[k] = 0.0
                o, _ = env.reset()
            reset_obs[k] = o
        slots = (np.arange(n_envs) + step * n_envs) % size
        buf_obs[slots], buf_next[slots], buf_action[slots] = obs, next_obs, actions
        buf_reward[slots], buf_done[slots] = rewards, terminals
        filled = min(filled + n_envs, size)
        obs = reset_obs

        # ---- learn: one gradient step on a replayed minibatch
        if step >= args.learning_starts and step % args.train_frequency == 0:
            idx = rng.integers(0, filled, size=args.batch_size)
            s, s_next = torch.from_numpy(buf_obs[idx]), torch.from_numpy(buf_next[idx])  # (B, 4)
            a, r, d = (
                torch.from_numpy(buf_action[idx]),
                torch.from_numpy(buf_reward[idx]),
                torch.from_numpy(buf_done[idx]),
            )
            with torch.no_grad():
                td_target = r + args.gamma * target_net(s_next).max(dim=1).values * (1.0 - d)  # (B,)
            q_net.train()  # dropout on while fitting the TD targets
            q_pred = q_net(s).gather(1, a[:, None]).squeeze(1)  # (B,)
            loss = nn.functional.mse_loss(q_pred, td_target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            result.losses.append(loss.item())
            gradient_steps += 1
            if gradient_steps % args.target_network_frequency == 0:
                target_net.load_state_dict(q_net.state_dict())
    masks.__exit__(None, None, None)
    for env in envs:
        env.close()
    q_net.eval()
    return result


@_single_thread
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
    obs = np.stack([env.reset(seed=seed + j % episodes)[0] for j, env in enumerate(envs)])  # (S*episodes, 4)
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
    for env in envs:
        env.close()
    return returns.reshape(len(physics), episodes)


# --------------------------------------------------------------------------- contextual bandit


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


@_single_thread
def run_bandit(
    bandit: ContextualBandit,
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
    """Play ``steps`` rounds of ``bandit``; return the cumulative regret after each round, shape (steps,).

    The agent is a :class:`QNetwork` (context -> predicted reward of each arm) trained after every round
    by one Adam step of MSE on a minibatch of past (context, arm, reward). ``policy``:
    ``"thompson"`` -- :func:`thompson_action` (one dropout mask per round); ``"epsilon"`` --
    :func:`epsilon_greedy_action` with a fixed ``epsilon``; ``"greedy"`` -- epsilon = 0.
    Regret of a round: :math:`\\max_a \\mu_a(x_t) - \\mu_{a_t}(x_t)`.
    """
    if policy not in ("thompson", "epsilon", "greedy"):
        raise ValueError(f"policy must be 'thompson', 'epsilon' or 'greedy', got {policy!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if policy == "thompson" and dropout == 0:
        raise ValueError("Thompson sampling by MC dropout needs dropout > 0, got dropout=0")
    # ---- seeding
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):
        net = QNetwork(QNetworkConfig(bandit.context_dim, bandit.n_arms, tuple(hidden), dropout))
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)

    contexts = torch.from_numpy(bandit.contexts(steps, rng))  # (T, d)
    means = bandit.mean_rewards(contexts.numpy())  # (T, n_arms)
    arms = torch.zeros(steps, dtype=torch.int64)
    rewards = torch.zeros(steps)
    regret = np.zeros(steps)
    for t in range(steps):
        x = contexts[t].numpy()
        if policy == "thompson":
            arm = thompson_action(net, x, generator=generator)
        else:
            arm = epsilon_greedy_action(net, x, epsilon if policy == "epsilon" else 0.0, rng)
        arms[t] = arm
        rewards[t] = float(means[t, arm] + bandit.noise_std * rng.normal())
        regret[t] = means[t].max() - means[t, arm]
        # one gradient step on past data
        idx = torch.randint(0, t + 1, (min(batch_size, t + 1),), generator=generator)
        net.train()
        with _masks_from(net, generator):
            pred = net(contexts[idx]).gather(1, arms[idx, None]).squeeze(1)  # (B,)
        loss = nn.functional.mse_loss(pred, rewards[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return np.cumsum(regret)
