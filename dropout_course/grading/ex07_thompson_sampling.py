"""Grader of ``ex07_thompson_sampling``: greedy and Thompson-sampling action selection with a dropout Q-net.

Checks: ``greedy_action`` (``f(q_net, obs) -> int``, dropout off), ``thompson_action`` (``f(q_net, obs) ->
int``, one dropout mask per decision) and the hidden ``thompson_action_hidden`` (another network built from
``torch.nn.Dropout``, four actions). Action frequencies are compared with the exact distribution of
one-mask Thompson sampling (estimated from 20,000 masks in one batched pass) within binomial tolerances,
so any correct implementation passes whatever the order of its random calls; on the course's network at two
observations, one of them with an action that almost no mask picks (an epsilon-greedy or softmax mix-in
takes it). The randomness must come from the network's dropout layers running in train mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .core import CheckSpec, Fail, Originality, Property

EXERCISE = "ex07_thompson_sampling"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order
_ORIGINALITY = Originality(
    "choose the actions yourself",
    tuple(
        f"dropout_course.rl{module}:{name}"
        for module in ("", ".actions")
        for name in ("greedy_action", "thompson_action", "epsilon_greedy_action")
    ),
    torch_dropout=False,
)
N_CALLS = 400  # decisions sampled from the learner's thompson_action
SIGMAS = 4.5  # per-action tolerance in binomial standard deviations


# seeds of the observations whose Thompson action frequencies are checked, per network: on the course's
# the first is a spread-out state, the second one where action 0 wins almost no mask (0.1%), so that an
# action Thompson sampling never takes (an epsilon-greedy or softmax mix-in) is seen
OBSERVATION_SEEDS = {"course": (14, 1), "torch": (5,)}


def _qnet(hidden_kind: str = "course", obs_seed: int | None = None):
    """The test networks: a course QNetwork (obs 4 -> 3 actions) or a torch nn.Dropout net (4 actions),
    and an observation (the first of :data:`OBSERVATION_SEEDS` unless ``obs_seed`` is given)."""
    obs_seed = OBSERVATION_SEEDS[hidden_kind][0] if obs_seed is None else obs_seed
    with torch.random.fork_rng(devices=[]):
        if hidden_kind == "course":
            from ..models import QNetwork, QNetworkConfig

            torch.manual_seed(14)
            net = QNetwork(QNetworkConfig(4, 3, (32,), 0.5))
            obs = torch.randn(1, 4, generator=torch.Generator().manual_seed(obs_seed))
        else:
            torch.manual_seed(3)
            net = nn.Sequential(nn.Linear(3, 24), nn.ReLU(), nn.Dropout(0.4), nn.Linear(24, 4))
            obs = torch.randn(1, 3, generator=torch.Generator().manual_seed(obs_seed))
    return net, obs[0].numpy().astype(np.float32)


def _reference(net: nn.Module, obs: np.ndarray, n: int = 20_000):
    """Exact-ish action probabilities: argmax and argmin with one mask per row; the greedy action."""
    was = net.training
    x = torch.as_tensor(obs).unsqueeze(0).repeat(n, 1)  # (n, obs_dim): one mask per row
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net.train()
        q = net(x)
        net.eval()
        greedy = int(net(x[:1]).argmax())
    net.train(was)
    k = q.shape[1]
    freq = np.bincount(q.argmax(1).numpy(), minlength=k) / n
    freq_min = np.bincount(q.argmin(1).numpy(), minlength=k) / n
    return freq, freq_min, greedy


def _as_action(a, fn_name: str, n_actions: int) -> int:
    if isinstance(a, torch.Tensor):
        raise Fail(
            f"`{fn_name}` returns a torch.Tensor ({a!r}); return a Python int, e.g. `int(q.argmax())` or "
            "`q.argmax().item()` (gym environments need an int)"
        )
    if a is None:
        raise Fail(f"`{fn_name}` returns None: did you forget the `return` statement?")
    if isinstance(a, np.ndarray):
        raise Fail(f"`{fn_name}` returns a numpy array of shape {a.shape}; return one Python int")
    if isinstance(a, np.integer):
        raise Fail(
            f"`{fn_name}` returns a numpy {type(a).__name__}, not a Python int as the task states: wrap it, "
            "`int(...)`"
        )
    if isinstance(a, bool) or not isinstance(a, int):
        raise Fail(f"`{fn_name}` returns a {type(a).__name__}, expected an int (the index of the action)")
    if not 0 <= int(a) < n_actions:
        raise Fail(f"`{fn_name}` returned {a}, not an action index in 0..{n_actions - 1}")
    return int(a)


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def _restores_mode(ctx, kind: str = "course"):
    """The network's own mode (the task: ``q_net.train(was)``) is back after the call, in both modes."""
    net, obs = _qnet(kind)
    name = getattr(ctx.candidate, "__name__", "the function")
    for mode in (False, True):
        net.train(mode)
        ctx.call(ctx.candidate, net, obs.copy(), copy_args=False)
        after = _modes(net)
        if after != [mode] * len(after):
            now = "train" if net.training else "eval"
            raise Fail(
                f"`{name}` leaves the network in {now} mode, it was in {'train' if mode else 'eval'} mode "
                "before the call: remember `was = q_net.training` and call `q_net.train(was)` at the end"
            )


def _returns_int(ctx, kind: str = "course"):
    net, obs = _qnet(kind)
    n_actions = 3 if kind == "course" else 4
    name = getattr(ctx.candidate, "__name__", "the function")
    _as_action(ctx.call(ctx.candidate, net, obs.copy(), copy_args=False), name, n_actions)


# --------------------------------------------------------------------------- greedy_action


def _greedy_is_argmax(ctx):
    net, obs0 = _qnet()
    g = torch.Generator().manual_seed(7)
    observations = [obs0] + [torch.randn(4, generator=g).numpy() for _ in range(5)]
    net.eval()
    with torch.no_grad():
        q = net(torch.as_tensor(np.stack(observations)))  # (6, 3)
    best, worst = q.argmax(1).tolist(), q.argmin(1).tolist()
    got = []
    dropout_on: list[bool] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: dropout_on.append(mod.training))
        for m in net.modules()
        if "Dropout" in type(m).__name__
    ]
    try:
        for obs in observations:
            net.train()  # the function must switch dropout off itself
            got.append(
                _as_action(ctx.call(ctx.candidate, net, obs.copy(), copy_args=False), "greedy_action", 3)
            )
    finally:
        for h in hooks:
            h.remove()
    if got == best:
        again = [
            _as_action(ctx.call(ctx.candidate, net.train(), obs0.copy(), copy_args=False), "greedy_action", 3)
            for _ in range(30)
        ]
        if len(set(again)) > 1:
            raise Fail(
                "repeated calls on one observation give different actions: dropout is on; use eval mode"
            )
        if any(dropout_on):
            raise Fail(
                "the dropout layers ran in train mode (sampling masks): the greedy Q-values are those of the "
                "network in eval mode, `q_net.eval()`, not an average of dropout samples"
            )
        return
    if got == worst:
        raise Fail("picks the action with the LOWEST Q-value (argmin): the greedy action is q.argmax()")
    again = [
        _as_action(ctx.call(ctx.candidate, net.train(), obs0.copy(), copy_args=False), "greedy_action", 3)
        for _ in range(30)
    ]
    if len(set(again)) > 1:
        raise Fail(
            "repeated calls on one observation give different actions: dropout is still on. Greedy action "
            "selection uses the network in eval mode (`q_net.eval()`), whatever mode it was in"
        )
    raise Fail(f"actions {got} are not the argmax of the eval-mode Q-values {best}")


CHECKS.append(
    CheckSpec(
        "greedy_action",
        [
            Property("returns a Python int", 1, _returns_int),
            Property("is the argmax of the Q-values with dropout off", 2, _greedy_is_argmax),
            Property("restores the network's train/eval mode", 1, _restores_mode),
        ],
        originality=_ORIGINALITY,
    ),
)

# --------------------------------------------------------------------------- thompson_action


def _samples(ctx, kind: str = "course", obs_seed: int | None = None):
    """N_CALLS decisions of the learner; their frequencies, the reference's, and whether dropout ran on."""

    def compute():
        net, obs = _qnet(kind, obs_seed)
        freq, freq_min, greedy = _reference(net, obs)
        net.eval()
        k = len(freq)
        dropout_on: list[bool] = []
        hooks = [
            m.register_forward_pre_hook(lambda mod, args: dropout_on.append(mod.training))
            for m in net.modules()
            if "Dropout" in type(m).__name__
        ]
        actions = []
        try:
            for _ in range(N_CALLS):
                a = ctx.call(ctx.candidate, net, obs.copy(), copy_args=False)
                actions.append(_as_action(a, "thompson_action", k))
        finally:
            for h in hooks:
                h.remove()
        return np.bincount(actions, minlength=k) / N_CALLS, freq, freq_min, greedy, any(dropout_on)

    return ctx.memo(("samples", kind, obs_seed), compute)


def _upper(expected):
    """The largest frequency over N_CALLS calls still consistent with probability ``expected``."""
    return expected + SIGMAS * np.sqrt(expected * (1 - expected) / N_CALLS) + 1.0 / N_CALLS


def _close(observed: np.ndarray, expected: np.ndarray) -> bool:
    tol = SIGMAS * np.sqrt(expected * (1 - expected) / N_CALLS) + 1.0 / N_CALLS
    return bool(np.all(np.abs(observed - expected) <= tol))


def _fmt(f: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in f) + ")"


def _thompson_varies(ctx, kind: str = "course"):
    observed, freq, _, greedy, dropout_ran = _samples(ctx, kind)
    if observed.max() == 1.0:
        action = int(observed.argmax())
        if not dropout_ran:
            raise Fail(
                f"all {N_CALLS} calls return action {action}{' (the greedy one)' if action == greedy else ''}: "
                "the dropout layers never ran in train mode, dropout is off. Put the network in "
                "train mode (`q_net.train()`) for the sampled forward pass, then restore its mode"
            )
        raise Fail(
            f"all {N_CALLS} calls return action {action}: every call uses the same mask. Draw a fresh mask "
            "each call (do not reseed or cache the mask inside the function)"
        )
    if not dropout_ran:
        raise Fail(
            "the actions vary, but the network's dropout layers never ran in train mode: the randomness does "
            "not come from a dropout mask. A Thompson sample is ONE forward pass with the network in train "
            "mode (`q_net.train()`), then the argmax of its Q-values"
        )


def _thompson_distribution(ctx, kind: str = "course"):
    for obs_seed in OBSERVATION_SEEDS[kind]:
        _thompson_distribution_at(ctx, kind, obs_seed)


def _thompson_distribution_at(ctx, kind: str, obs_seed: int):
    observed, freq, freq_min, greedy, _ = _samples(ctx, kind, obs_seed)
    if _close(observed, freq):
        return
    _thompson_varies(ctx, kind)
    if _close(observed, freq_min):
        raise Fail(
            "picks the action with the LOWEST sampled Q-value (argmin): act greedily on the sample, argmax"
        )
    if observed[greedy] > freq[greedy] + SIGMAS * math.sqrt(freq[greedy] * (1 - freq[greedy]) / N_CALLS):
        raise Fail(
            f"too deterministic: the greedy action {greedy} is chosen {observed[greedy]:.0%} of the time, one "
            f"mask per decision gives {freq[greedy]:.0%}. Thompson sampling acts on ONE sampled network "
            "(one forward pass with one mask), not on the average of several samples"
        )
    never = [a for a in range(len(freq)) if freq[a] <= 0.005 and observed[a] > _upper(freq[a])]
    if never:
        raise Fail(
            f"action {never[0]} is chosen {observed[never[0]]:.1%} of the time, but it wins under "
            f"{freq[never[0]]:.1%} of the dropout masks (frequencies {_fmt(observed)}, one mask per decision "
            f"{_fmt(freq)}): something other than the sampled network picks actions (an epsilon-greedy or "
            "softmax mix-in?). Thompson sampling takes the argmax of the sampled Q-values, every time"
        )
    raise Fail(
        f"action frequencies {_fmt(observed)} over {N_CALLS} calls differ from those of one dropout mask "
        f"per decision {_fmt(freq)}: one forward pass in train mode, then the argmax of its Q-values"
    )


CHECKS.append(
    CheckSpec(
        "thompson_action",
        [
            Property("returns a Python int", 1, _returns_int),
            Property("samples: a fresh dropout mask on every call", 2, _thompson_varies),
            Property(
                "chooses actions with the frequencies of one mask per decision", 2, _thompson_distribution
            ),
            Property("restores the network's train/eval mode", 1, _restores_mode),
        ],
        originality=_ORIGINALITY,
    ),
)

CHECKS.append(
    CheckSpec(
        "thompson_action_hidden",
        [
            Property(
                "returns a Python int (torch nn.Dropout network)", 1, lambda c: _returns_int(c, "torch")
            ),
            Property(
                "samples: a fresh dropout mask on every call", 1, lambda c: _thompson_varies(c, "torch")
            ),
            Property(
                "frequencies of one mask per decision (4 actions)",
                2,
                lambda c: _thompson_distribution(c, "torch"),
            ),
            Property("restores the network's train/eval mode", 1, lambda c: _restores_mode(c, "torch")),
        ],
        hidden=True,
        originality=_ORIGINALITY,
    ),
)
