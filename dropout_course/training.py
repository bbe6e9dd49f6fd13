"""``fit()`` and ``evaluate()``: one small training loop for every lesson.

``fit`` trains in train mode (dropout on), measures in eval mode (dropout off), shows a ``tqdm.auto``
progress bar unless ``progress=False``, can stop early on the validation loss, and returns a
:class:`History` with per-epoch losses, accuracies and wall time.

Reproducibility: with ``seed=`` the loop runs inside :func:`dropout_course.config.seeded`, so the same
model state, data and seed give the same history, and the caller's global RNG state is untouched.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config import seeded  # also exported here: ``training.seeded`` is ``config.seeded``
from .data import Split
from .layers import restored_modes

__all__ = ["History", "fit", "evaluate", "max_norm_", "seeded"]

_LOSSES = {"cross_entropy": nn.functional.cross_entropy, "mse": nn.functional.mse_loss}


@dataclass
class History:
    """Per-epoch metrics of one ``fit`` run (eval-mode measurements) and its timing."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each epoch (training + measuring)
    best_epoch: int | None = None  # epoch with the lowest validation loss
    stopped_early: bool = False

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def to_frame(self):
        """The history as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        columns = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
        data = {c: getattr(self, c) for c in columns if len(getattr(self, c)) == len(self.epoch)}
        return pd.DataFrame(data)


def _as_split(data, name: str) -> Split:
    if isinstance(data, Split):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return Split(*data)
    raise TypeError(f"{name} must be a Split or an (X, y) tuple of tensors, got {type(data).__name__}")


@torch.no_grad()
def evaluate(model: nn.Module, data, loss: str = "cross_entropy", batch_size: int = 1024) -> dict[str, float]:
    """Loss (and accuracy for classification) of ``model`` on ``data`` in eval mode.

    The model's train/eval mode is restored afterwards. Returns ``{"loss": ..., "accuracy": ...}``
    (accuracy is NaN for ``loss="mse"``).
    """
    data = _as_split(data, "data")
    loss_fn = _loss_fn(loss)
    device = _device_of(model)
    total, correct, count = 0.0, 0, 0
    with restored_modes(model):
        model.eval()
        for X, y in data.batches(batch_size):
            X, y = X.to(device), y.to(device)
            out = model(X)
            total += loss_fn(out, y, reduction="sum").item()
            if loss == "cross_entropy":
                correct += (out.argmax(1) == y).sum().item()
            count += len(y) if loss == "cross_entropy" else y.numel()
    accuracy = correct / len(data) if loss == "cross_entropy" else float("nan")
    return {"loss": total / max(count, 1), "accuracy": accuracy}


def _loss_fn(loss: str):
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {loss!r}")
    return _LOSSES[loss]


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def max_norm_(model: nn.Module, c: float) -> None:
    r"""Rescale, in place, every unit's incoming weight vector whose L2 norm exceeds ``c`` back to norm ``c``.

    The max-norm constraint of Srivastava et al. (2014, section 5.1) used with dropout:
    :math:`\lVert w_j \rVert_2 \le c` for the weights :math:`w_j` (a row of an ``nn.Linear`` weight) into
    each unit :math:`j`; biases are not constrained. Applied after every optimizer step, it keeps the weights
    bounded however large the learning rate, so a dropout network can use a large learning rate.

    Args:
        model: the network; every ``nn.Linear`` in it is constrained.
        c: the largest allowed norm (Srivastava et al. report typical values of 3 to 4).

    Examples:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> max_norm_(layer, 1.0)
        >>> layer.weight
        Parameter containing:
        tensor([[0.6000, 0.8000]], requires_grad=True)
    """
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
        raise ValueError(f"max-norm c must be a positive number, got {c!r}")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            norms = module.weight.norm(dim=1, keepdim=True)  # (out_features, 1)
            module.weight.mul_(c / norms.clamp(min=c))


def _optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {name!r}")


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    max_norm: float | None = None,
    loss: str = "cross_entropy",
    patience: int | None = None,
    restore_best: bool = False,
    measure_train: bool = True,
    seed: int | None = None,
    progress: bool = True,
    description: str = "training",
) -> History:
    """Train ``model`` on ``train`` and return its :class:`History`.

    Args:
        model: the network; trained in place on the device its parameters are on.
        train, val: a :class:`~dropout_course.data.Split` or an ``(X, y)`` tuple; ``val`` is optional.
        epochs: maximum number of passes over ``train``.
        lr, batch_size, optimizer ("adam", "adamw", "sgd"), weight_decay, momentum: the optimizer.
        max_norm: if set, apply :func:`max_norm_` with this ``c`` after every optimizer step.
        loss: ``"cross_entropy"`` (classification, accuracy is tracked) or ``"mse"``.
        patience: early stopping: stop after this many epochs without a lower validation loss.
        restore_best: load the weights of the best validation epoch at the end.
        measure_train: measure train loss/accuracy in eval mode after each epoch (True) or record the
            running training loss with dropout on (False, cheaper; accuracy then NaN).
        seed: seed for batch order and dropout masks (global RNG forked, caller's state restored).
        progress: show a ``tqdm.auto`` progress bar.

    The model is left in eval mode, ready for prediction; call ``model.train()`` to train it further.
    """
    train = _as_split(train, "train")
    val = None if val is None else _as_split(val, "val")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    if (patience is not None or restore_best) and val is None:
        raise ValueError("early stopping (patience) and restore_best need a validation split (val=...)")
    if max_norm is not None and (
        isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0
    ):
        raise ValueError(f"max_norm must be a positive number or None, got {max_norm!r}")
    loss_fn = _loss_fn(loss)
    opt = _optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    plan = _Plan(
        train, val, epochs, batch_size, loss, loss_fn, patience, restore_best, measure_train, max_norm
    )
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        return _train_loop(model, opt, plan, progress=progress, description=description)


@dataclass(frozen=True)
class _Plan:
    """What one ``fit`` run does: data, length, loss and stopping rule (checked by ``fit``)."""

    train: Split
    val: Split | None
    epochs: int
    batch_size: int
    loss: str
    loss_fn: object
    patience: int | None
    restore_best: bool
    measure_train: bool
    max_norm: float | None = None


def _train_epoch(model: nn.Module, X: Tensor, y: Tensor, opt, plan: _Plan) -> float:
    """One pass over (X, y) in a random order, in train mode; returns the mean running loss."""
    model.train()
    order = torch.randperm(len(X), device=X.device)
    running = 0.0
    for first in range(0, len(order), plan.batch_size):
        idx = order[first : first + plan.batch_size]
        batch_loss = plan.loss_fn(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        if plan.max_norm is not None:
            max_norm_(model, plan.max_norm)
        running += batch_loss.item() * len(idx)
    return running / len(order)


def _train_loop(model: nn.Module, opt, plan: _Plan, *, progress: bool, description: str) -> History:
    from tqdm.auto import tqdm

    history = History()
    device = _device_of(model)
    X_all, y_all = plan.train.X.to(device), plan.train.y.to(device)
    best_loss, best_state, stale = float("inf"), None, 0
    bar = tqdm(range(1, plan.epochs + 1), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        running = _train_epoch(model, X_all, y_all, opt, plan)
        if plan.measure_train:
            train_metrics = evaluate(model, plan.train, plan.loss)
        else:
            train_metrics = {"loss": running, "accuracy": float("nan")}
        history.epoch.append(epoch)
        history.train_loss.append(train_metrics["loss"])
        history.train_acc.append(train_metrics["accuracy"])
        shown = {"train_loss": f"{history.train_loss[-1]:.3f}"}
        if plan.val is not None:
            val_metrics = evaluate(model, plan.val, plan.loss)
            history.val_loss.append(val_metrics["loss"])
            history.val_acc.append(val_metrics["accuracy"])
            shown["val_loss"] = f"{val_metrics['loss']:.3f}"
            if val_metrics["loss"] < best_loss:
                best_loss, stale, history.best_epoch = val_metrics["loss"], 0, epoch
                if plan.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        history.seconds.append(time.perf_counter() - start)
        if progress:
            bar.set_postfix(shown)
        if plan.patience is not None and stale >= plan.patience:
            history.stopped_early = True
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
