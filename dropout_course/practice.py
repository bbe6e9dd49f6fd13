"""Dropout in practice: the recipe as one printable card, a learning-rate study, and an audit of a model.

:data:`RECIPE` holds the course's decisions (where dropout goes, which ``p``, which variant) with the
notebook or paper behind each; :func:`recipe_card` draws them as a one-page figure.
:func:`learning_rate_sweep` trains configurations over a grid of learning rates (Srivastava et al. 2014,
appendix A.2-A.3: dropout networks want a larger learning rate, helped by a max-norm constraint).

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .layers import is_dropout_module, restored_modes

__all__ = ["Finding", "audit_dropout", "leaf_modules", "RECIPE", "recipe_card", "learning_rate_sweep"]

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


# --------------------------------------------------------------------------- the recipe, one page

RECIPE: tuple[tuple[str, str, str], ...] = (
    (
        "Fully connected hidden layers",
        "p = 0.5 after each activation; 0.2-0.5 if the layer is narrow",
        "02, Srivastava A.4",
    ),
    ("Inputs (pixels, features)", "p = 0.2 or less; none for few or categorical inputs", "02, Hinton 2012"),
    ("Output layer (logits)", "no dropout", "ex09"),
    ("Width", "a layer of n units without dropout needs about n / (1 - p) with it", "02, Srivastava A.1"),
    ("Convolutional maps", "spatial (channel) dropout or DropBlock, small p; element-wise is weak", "04"),
    ("Recurrent networks", "one mask per sequence (locked); weight drop on W_hh", "05"),
    ("Transformers", "residual + embedding dropout ~0.1; attention dropout; drop path when deep", "06"),
    ("With BatchNorm", "dropout after the last BatchNorm, never right before one", "09, Li 2019"),
    ("Optimiser", "re-tune the learning rate with dropout on; max-norm c = 3-4 is Srivastava's choice", "10"),
    ("Large-scale pre-training", "often p = 0 (PaLM); p = 0.1 when fine-tuning (PaLM, BERT)", "10"),
    ("Uncertainty", "keep dropout on at test time, average T passes (MC dropout)", "07"),
    (
        "Debugging",
        "model.eval() to predict; loss must fall with dropout off; audit_dropout(model, x)",
        "ex09, 10",
    ),
)


def recipe_card(rows: Iterable[tuple[str, str, str]] = RECIPE, title: str = "Dropout: the recipe"):
    """The recipe as a one-page figure (a table: decision, what to do, where it is measured); returns it.

    Save it for printing with ``recipe_card().savefig("dropout_recipe.pdf")``.
    """
    import matplotlib.pyplot as plt

    rows = [tuple(r) for r in rows]
    if not rows or any(len(r) != 3 for r in rows):
        raise ValueError("rows must be a non-empty sequence of (decision, recipe, evidence) triples")
    fig, ax = plt.subplots(figsize=(11.0, 0.42 * len(rows) + 1.2))
    ax.axis("off")
    table = ax.table(
        cellText=rows,
        colLabels=("Decision", "What to do", "Measured / source"),
        colWidths=(0.22, 0.62, 0.16),
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.5)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8eef7")
    ax.set_title(title, fontsize=13, weight="bold", loc="left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- learning rate and max-norm


def learning_rate_sweep(
    configs: Mapping[str, Callable[[int], nn.Module]],
    data,
    lrs: Iterable[float],
    seeds: Iterable[int] = (0, 1),
    fit_kwargs: Mapping | None = None,
    per_config_fit: Mapping[str, Mapping] | None = None,
    progress: bool = True,
):
    """Train every configuration at every learning rate and seed; one row per run.

    Args:
        configs: ``{name: make_model(seed)}``.
        data: train/val/test splits (see :mod:`dropout_course.data`); test metrics come from ``data.test``.
        lrs: the learning rates.
        seeds: seeds (initial weights, batch order and masks); runs with the same seed are paired.
        fit_kwargs: shared keyword arguments of :func:`~dropout_course.training.fit` (not ``lr``).
        per_config_fit: per-name overrides (e.g. ``{"dropout + max-norm": {"max_norm": 2.0}}``).

    Returns:
        A DataFrame with columns ``config, lr, seed, test_loss, test_acc``.
    """

    from . import experiments

    lrs = [float(lr) for lr in lrs]
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be positive learning rates, got {lrs!r}")
    if "lr" in (fit_kwargs or {}):
        raise ValueError("fit_kwargs must not set lr: the sweep sets it")
    names = {(name, lr): f"{name} @ lr={lr:g}" for name in configs for lr in lrs}
    runs = experiments.compare(
        {label: configs[name] for (name, _), label in names.items()},
        data,
        seeds,
        fit_kwargs,
        {label: {**((per_config_fit or {}).get(name, {})), "lr": lr} for (name, lr), label in names.items()},
        progress=progress,
    )
    finals = experiments.final(runs, ["test_loss", "test_acc"])
    lookup = {label: key for key, label in names.items()}
    finals["lr"] = [lookup[c][1] for c in finals["config"]]
    finals["config"] = [lookup[c][0] for c in finals["config"]]
    return finals[["config", "lr", "seed", "test_loss", "test_acc"]].reset_index(drop=True)
