r"""What matrix did a learner's tanh RNN use at each step? Recovering it from the outputs alone.

For ``h_0 = 0, h_t = tanh(x_t W_ih^T + h_{t-1} W_t^T)`` with known ``x`` and ``W_ih``,
:math:`\operatorname{atanh}(h_t) - x_t W_{ih}^T = h_{t-1} W_t^T` is a least-squares problem in ``W_t`` with
``N > hidden`` rows (the test weights keep the states well-conditioned and away from saturation). A residual
means no single matrix was shared by the batch; the ratios ``W_t / W_hh`` are then 0 for dropped weights and
``1/(1-p)`` for kept ones, whatever the order of the learner's random calls. Used by :mod:`.weight_drop_checks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .core import Fail
from .masks import make_input

ZERO = 1e-3  # |recovered / true weight| below this: the weight was dropped
RESIDUAL = 1e-3  # least-squares residual above this (relative): not one matrix for the whole batch


@dataclass
class RNNCase:
    """Test sizes: the class name, input and hidden sizes, batch size, sequence length."""

    name: str = "WeightDropRNN"
    input_size: int = 24
    hidden_size: int = 16
    batch: int = 128
    steps: int = 6


def case_weights(case: RNNCase, p: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_ih`` with orthonormal rows (well-conditioned states) and ``W_hh`` with ``|entries|`` in
    ``[0.5, 1.5] / sqrt(hidden)``, times ``1-p`` so that the dropped-and-rescaled matrix never saturates tanh."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(case.input_size, case.hidden_size, generator=g, dtype=torch.float64))
    w_ih = (0.5 * q.T).float()  # (H, D)
    scale = max(1.0 - p, 0.15) / math.sqrt(case.hidden_size)
    w_hh = (make_input((case.hidden_size, case.hidden_size), seed + 1).double() * scale).float()  # (H, H)
    return w_ih, w_hh


def case_inputs(case: RNNCase, seed: int = 0) -> torch.Tensor:
    return make_input((case.steps, case.batch, case.input_size), seed + 2) * 0.8  # (T, N, D)


def _consistent(ratios: torch.Tensor) -> bool:
    """Whether every ratio is 0 (dropped) or one common value (kept, scaled)."""
    kept = ratios.abs() > ZERO
    if not kept.any():
        return True
    r = ratios[kept]
    return bool((r.max() - r.min()) <= 1e-3 * max(float(r.abs().max()), 1.0))


def _first_step(x0: torch.Tensor, w_ih: torch.Tensor, y0: torch.Tensor) -> None:
    a1 = x0 @ w_ih.T  # (N, H)
    if torch.allclose(y0, torch.tanh(a1), rtol=1e-4, atol=1e-4):
        return
    if torch.allclose(y0, a1, rtol=1e-4, atol=1e-4):
        raise Fail("the hidden state is not passed through tanh: h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T)")
    for name, act in (
        ("ReLU", torch.relu),
        ("sigmoid", torch.sigmoid),
        ("hardtanh", torch.nn.functional.hardtanh),
    ):
        if torch.allclose(y0, act(a1), rtol=1e-4, atol=1e-4):
            raise Fail(
                f"the activation is {name}, not tanh: h_t = tanh(x_t W_ih^T + h_(t-1) W_hh^T) (use torch.tanh)"
            )
    if (y0.abs() < 1).all():
        w_used = torch.linalg.lstsq(x0, torch.atanh(y0)).solution.T  # (H, D)
        ratios = w_used / w_ih
        if _consistent(ratios) and (ratios.abs() <= ZERO).any():
            raise Fail(
                "weight_ih is dropped too: weight drop (as in AWD-LSTM) acts on the recurrent matrix W_hh "
                "only; use weight_ih as it is"
            )
    raise Fail(
        "the first step is not h_1 = tanh(x_1 W_ih^T): x is time first (x[t] is the batch at step t, shape "
        "(N, input)); start from h_0 = 0 (zeros of shape (N, hidden)), use no bias, compute "
        "`x[t] @ self.weight_ih.T` (weight_ih has shape (hidden, input)), apply torch.tanh (no other "
        "activation), and return the states h_1..h_T (not h_0)"
    )


def recover(case: RNNCase, x: torch.Tensor, w_ih: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """The recurrent matrix used at steps 2..T, ``(T-1, H, H)`` in float64, recovered from the outputs.

    Fails with a diagnosis if the outputs are not finite, the first step is not ``tanh(x_1 W_ih^T)``, or some
    step is not ``tanh(x_t W_ih^T + h_{t-1} W^T)`` for one matrix ``W`` shared by the whole batch.
    """
    x, w_ih, y = x.double(), w_ih.double(), y.double()
    if not torch.isfinite(y).all():
        if p == 1:
            raise Fail(
                "p=1 gives NaN or inf: 0/0 from dividing by 1-p = 0; when p == 1 every weight of W_hh is "
                "dropped, so use a matrix of zeros"
            )
        raise Fail(f"the hidden states contain NaN or inf at p={p:g}")
    _first_step(x[0], w_ih, y[0])
    if (y.abs() >= 1 - 1e-7).any():
        raise Fail("some hidden states are ±1 or beyond: h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T)")
    pre = torch.atanh(y)
    matrices = []
    for t in range(1, case.steps):
        r = pre[t] - x[t] @ w_ih.T  # = h_{t-1} W^T, (N, H)
        sol = torch.linalg.lstsq(y[t - 1], r).solution  # (H, H) = W^T
        residual = float((y[t - 1] @ sol - r).abs().max()) / max(float(r.abs().max()), 1.0)
        if residual > RESIDUAL:
            raise Fail(
                f"step {t + 1} is not tanh(x_t W_ih^T + h_(t-1) W^T) for one matrix W shared by the whole batch: "
                "drop entries of the weight matrix W_hh (one mask for the batch), not of the hidden state "
                "h_(t-1) or of the product h_(t-1) W_hh^T"
            )
        matrices.append(sol.T)
    return torch.stack(matrices)


def weight_ratios(w_steps: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """``W_used / W_hh`` per step, exactly 0 where dropped; Fail on a transposed ``W_hh``."""
    w = w_hh.double()
    ratios = w_steps / w
    if not all(_consistent(r) for r in ratios):
        transposed = w_steps.transpose(1, 2) / w
        if all(_consistent(r) for r in transposed):
            raise Fail(
                "uses h_(t-1) @ W_hh instead of h_(t-1) @ W_hh.T: row i of weight_hh holds the weights INTO "
                "unit i, so the recurrent term is `h @ w_hh.T` (like nn.Linear)"
            )
    return torch.where(ratios.abs() <= ZERO, torch.zeros_like(ratios), ratios)


def check_recurrence(ratios: torch.Tensor, p: float) -> None:
    """Fail if no step used any recurrent weight although ``p < 1`` (impossible by chance at these sizes)."""
    if p < 1 and not ratios.any():
        raise Fail(
            f"every step is tanh(x_t W_ih^T) at p={p:g}: the recurrent term h_(t-1) W_hh^T is missing (is h "
            "updated inside the loop and fed to the next step?) or all of W_hh is dropped"
        )


def one_matrix(ratios: torch.Tensor) -> torch.Tensor:
    """Fail unless every step used the same matrix; return it (as ratios to ``W_hh``)."""
    dropped = ratios == 0
    if not (dropped == dropped[0]).all() or not torch.allclose(
        ratios, ratios[0].expand_as(ratios), rtol=1e-3
    ):
        changed = float((dropped != dropped[0]).any(0).double().mean())
        raise Fail(
            "a new mask at every time step: the dropped weights of W_hh change from step to step "
            f"({changed:.0%} of them differ); sample the dropped matrix ONCE per forward call, before the loop "
            "over time, and use it at every step"
        )
    return ratios[0]


def reference_rnn(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, ratios: torch.Tensor
) -> torch.Tensor:
    """The tanh RNN in float64 with ``W_hh * ratios[t-1]`` at step t (differentiable in ``w_hh``)."""
    x, w_ih = x.double(), w_ih.double()
    h = torch.tanh(x[0] @ w_ih.T)
    states = [h]
    for t in range(1, len(x)):
        h = torch.tanh(x[t] @ w_ih.T + h @ (w_hh * ratios[t - 1]).T)
        states.append(h)
    return torch.stack(states)
