"""Action selection with a dropout Q-network: greedy (dropout off), Thompson sampling (one mask), epsilon-greedy.

Every function accepts one observation ``(obs_dim,)`` (returns an ``int``), a batch ``(N, obs_dim)`` or,
for a :class:`~dropout_course.rl.agents.QNetworkBatch`, one batch per agent ``(A, N, obs_dim)`` (returns an
int64 array of the leading shape). The network's train/eval mode is restored afterwards, and torch runs on
one thread: the networks are tiny, and waking threads costs more than the arithmetic.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
import torch
from torch import Tensor, nn

from ..config import seeded, torch_threads
from ..layers import is_dropout_module, restored_modes

__all__ = [
    "masks_from",
    "greedy_action",
    "thompson_action",
    "epsilon_greedy_action",
    "linear_schedule",
]


@contextlib.contextmanager
def masks_from(net: nn.Module, generator: torch.Generator | None):
    """Context manager: inside the block, the dropout layers of ``net`` draw their masks from ``generator``.

    The course's dropout layers have a ``generator`` attribute, swapped in for the block and restored
    after (also if the block raises). Any other dropout module (e.g. ``torch.nn.Dropout``) uses PyTorch's
    global RNG: the block then runs in a fork of it seeded from ``generator``, so the caller's global
    RNG state is untouched either way. With ``generator=None`` nothing changes.
    """
    if generator is None:
        yield net
        return
    dropouts = [m for m in net.modules() if is_dropout_module(m)]
    ours = [m for m in dropouts if hasattr(m, "generator")]
    saved = [m.generator for m in ours]
    torch_dropout = len(ours) < len(dropouts)  # e.g. torch.nn.Dropout: it draws from the global RNG
    try:
        for m in ours:
            m.generator = generator
        if torch_dropout:
            with seeded(int(torch.randint(0, 2**62, (1,), generator=generator))):
                yield net
        else:
            yield net
    finally:
        for m, g in zip(ours, saved, strict=True):
            m.generator = g


def _as_batch(obs) -> Tensor:
    """One observation (obs_dim,) as (1, obs_dim); a batch (..., obs_dim) unchanged; float32 tensor."""
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    return x.unsqueeze(0) if x.dim() == 1 else x


@torch_threads(1)
@torch.no_grad()
def _q_values(q_net: nn.Module, obs, training: bool, generator: torch.Generator | None) -> Tensor:
    """Q-values (..., n_actions) with dropout on (train mode) or off (eval mode); the modes are restored."""
    with restored_modes(q_net), masks_from(q_net, generator if training else None):
        q_net.train(training)
        return q_net(_as_batch(obs))


def _actions(q: Tensor, obs) -> int | np.ndarray:
    actions = q.argmax(dim=-1).numpy()
    return int(actions[0]) if np.ndim(obs) == 1 else actions


def greedy_action(q_net: nn.Module, obs) -> int | np.ndarray:
    """The action with the highest Q-value, dropout OFF (eval mode): deterministic.

    ``obs`` is one observation (returns an int) or a batch (returns an int64 array of actions).
    """
    return _actions(_q_values(q_net, obs, training=False, generator=None), obs)


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
    return _actions(_q_values(q_net, obs, training=True, generator=generator), obs)


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
    q = _q_values(q_net, obs, training=False, generator=None)  # (..., n_actions)
    actions = q.argmax(dim=-1).numpy()
    explore = rng.random(actions.shape) < epsilon
    actions = np.where(explore, rng.integers(0, q.shape[-1], size=actions.shape), actions)
    return int(actions[0]) if np.ndim(obs) == 1 else actions


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear decay from ``start`` to ``end`` over ``duration`` steps, then ``end`` (CleanRL's schedule)."""
    slope = (end - start) / max(duration, 1)
    return max(slope * t + start, end) if end <= start else min(slope * t + start, end)
