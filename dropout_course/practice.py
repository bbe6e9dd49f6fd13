"""Dropout in practice: a checklist that audits a model for the usual dropout mistakes.

:func:`audit_dropout` looks at a model's dropout sites (``p`` is the probability of DROPPING everywhere)
and, given an input batch, at how it behaves, and returns one :class:`Finding` per problem:

* ``no-dropout``: the model has no dropout module at all;
* ``logit-dropout``: a dropout module after the last weight layer, i.e. on the logits or outputs;
* ``dropout-before-batchnorm``: dropout directly followed by BatchNorm, whose statistics then differ
  between training and test (the variance shift of Li et al. 2019, notebook 09);
* ``keep-as-drop``: ``p >= 0.8``, which usually means a keep probability was passed where torch expects
  the drop probability;
* ``train-mode``: with ``x`` given, two forward passes in the model's current mode disagree, so the model
  is predicting in train mode (``model.eval()`` was not called).

The checks read the modules in registration order (the order of ``model.modules()``), which is the data
flow of ``nn.Sequential`` chains and of most hand-written models; an audit is a checklist, not a proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import is_dropout_module, restored_modes

__all__ = ["Finding", "audit_dropout", "leaf_modules"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SUSPICIOUS_P = 0.8


@dataclass(frozen=True)
class Finding:
    """One problem found by :func:`audit_dropout`: a short code and the advice in words."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module without children (dropout modules count as leaves), in order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if is_dropout_module(module) or not any(True for _ in module.children())
    ]


def _structure_findings(leaves: list[tuple[str, nn.Module]]) -> list[Finding]:
    findings = []
    dropouts = [(i, name, m) for i, (name, m) in enumerate(leaves) if is_dropout_module(m)]
    if not dropouts:
        return [Finding("no-dropout", "the model has no dropout module")]
    weights = [i for i, (_, m) in enumerate(leaves) if isinstance(m, _WEIGHT_LAYERS)]
    for i, name, module in dropouts:
        if weights and i > weights[-1]:
            findings.append(
                Finding(
                    "logit-dropout",
                    f"{name} ({type(module).__name__}) comes after the last weight layer: it drops outputs "
                    "(logits), which the loss is then computed on; put dropout only before weight layers",
                )
            )
        after = next((m for _, m in leaves[i + 1 :] if not isinstance(m, nn.Identity)), None)
        if isinstance(after, _BATCHNORMS):
            findings.append(
                Finding(
                    "dropout-before-batchnorm",
                    f"{name} feeds a BatchNorm layer: the variance BatchNorm sees in training is larger than at "
                    "test time (variance shift); move dropout after the last BatchNorm",
                )
            )
        p = getattr(module, "p", None)
        if isinstance(p, (int, float)) and p >= SUSPICIOUS_P:
            findings.append(
                Finding(
                    "keep-as-drop",
                    f"{name} drops a fraction p = {p:g} of its inputs: torch's and this course's p is the "
                    f"probability of DROPPING; if you meant to keep {p:g}, use p = {1 - p:g}",
                )
            )
    return findings


def audit_dropout(model: nn.Module, x: torch.Tensor | None = None) -> list[Finding]:
    """Check ``model`` for the usual dropout mistakes; return the findings (empty: nothing found).

    Args:
        model: the network to audit; its modes and parameters are left unchanged.
        x: optional input batch; if given, the model is run twice on it, without gradients, in its
            current mode, to check that predictions are deterministic (eval mode).

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Dropout(0.5))
        >>> [f.code for f in audit_dropout(net)]
        ['logit-dropout']
        >>> [f.code for f in audit_dropout(nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.9), nn.Linear(2, 2)))]
        ['keep-as-drop']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    findings = _structure_findings(leaf_modules(model))
    if x is not None:
        with restored_modes(model), torch.no_grad():
            state = torch.get_rng_state()
            first, second = model(x), model(x)
            torch.set_rng_state(state)
        if not torch.equal(first, second):
            findings.append(
                Finding(
                    "train-mode",
                    "two forward passes on the same input disagree: the model is in train mode, so dropout is "
                    "sampling masks; call model.eval() before predicting",
                )
            )
    return findings
