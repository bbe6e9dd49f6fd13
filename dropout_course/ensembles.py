"""Deep ensembles (Lakshminarayanan et al. 2017): M networks trained independently, predictions averaged.

The reference method for predictive uncertainty that MC dropout is compared with: each member starts
from its own random initialisation and sees the data in its own order; the ensemble's predictive
distribution is the average of the members' softmax outputs, and the members' disagreement (mutual
information) plays the role of MC dropout's. The paper also trains with a proper scoring rule and,
optionally, adversarial examples; plain members trained on cross-entropy (a proper scoring rule) are the
simplest form. The cost is M trainings and M forward passes per prediction.

* :func:`train_ensemble`     train one network per seed, return the members and the training seconds.
* :func:`ensemble_predict`   stacked member outputs (M, N, ...), the shape :func:`~dropout_course.uncertainty.mc_predict`
                             returns, so the same scores (entropy, mutual information) apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .training import fit

__all__ = ["train_ensemble", "ensemble_predict"]


def train_ensemble(
    make_model: Callable[[int], nn.Module], train, seeds: Sequence[int], **fit_kwargs
) -> tuple[list[nn.Module], float]:
    """Train ``make_model(seed)`` with ``fit(..., seed=seed, **fit_kwargs)`` for each seed.

    Returns ``(members, seconds)``: the trained networks (in eval mode) and the total training time.
    """
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable seed -> nn.Module, got {type(make_model).__name__}")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty sequence of distinct seeds, got {seeds!r}")
    members, start = [], time.perf_counter()
    for seed in seeds:
        model = make_model(seed)
        if not isinstance(model, nn.Module):
            raise TypeError(f"make_model({seed}) must return an nn.Module, got {type(model).__name__}")
        fit(model, train, seed=seed, **{"progress": False, **fit_kwargs})
        members.append(model.eval())
    return members, time.perf_counter() - start


@torch.no_grad()
def ensemble_predict(members: Sequence[nn.Module], x: Tensor, *, softmax: bool = False) -> Tensor:
    """Outputs of every member on ``x`` in eval mode, stacked: (M, N, ...); softmax over the last dim if asked.

    >>> members = [nn.Linear(3, 2) for _ in range(4)]
    >>> ensemble_predict(members, torch.zeros(5, 3), softmax=True).shape
    torch.Size([4, 5, 2])
    """
    members = list(members)
    if not members or not all(isinstance(m, nn.Module) for m in members):
        raise TypeError("members must be a non-empty sequence of nn.Module")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    outs = []
    for model in members:
        mode = model.training
        model.eval()
        try:
            outs.append(model(x))
        finally:
            model.train(mode)
    out = torch.stack(outs)
    return torch.softmax(out, dim=-1) if softmax else out
