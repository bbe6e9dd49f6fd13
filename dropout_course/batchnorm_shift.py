"""Dropout before BatchNorm: the *variance shift* (Li et al. 2019), measured, predicted and fixed.

BatchNorm normalises each feature with statistics collected in training mode and reuses them (its running
mean and variance) at test time. If dropout sits before BatchNorm, the feature BatchNorm sees in training,

.. math::
    z = w^\\top \\frac{m \\odot a}{1 - p}, \\qquad m_i \\sim \\mathrm{Bernoulli}(1 - p),

has the same mean as at test time (:math:`z = w^\\top a`, dropout off) but a larger variance. Conditioning
on the input :math:`a` (law of total variance; the masks are independent of :math:`a` and of each other),

.. math::
    \\operatorname{Var}_{\\text{train}}[z] = \\operatorname{Var}[w^\\top a]
        + \\frac{p}{1 - p} \\sum_i w_i^2 \\, \\mathbb{E}[a_i^2],

exactly. At test time BatchNorm divides by the square root of this too-large variance, so its outputs
shrink; in a stack of ``Dropout -> Linear -> BatchNorm -> ReLU`` blocks every block passes a shrunken
signal to the next, and the shift compounds with depth.

This module builds such stacks (:func:`bn_stack`), measures the variances each BatchNorm layer sees with
dropout on and off (:func:`bn_variances`), predicts the training variance from the formula
(:func:`predicted_train_variance`) and applies the cheapest fix, recomputing BatchNorm's statistics with
dropout off (:func:`recalibrate_bn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import seeded
from .layers import Dropout, check_probability, is_dropout_module

__all__ = ["bn_stack", "BNVariances", "bn_variances", "predicted_train_variance", "recalibrate_bn"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def bn_stack(
    depth: int,
    p: float,
    dropout_before_bn: bool = True,
    width: int = 128,
    in_features: int = 784,
    n_classes: int = 10,
) -> nn.Sequential:
    """An MLP with ``depth`` BatchNorm blocks and dropout (drop probability ``p``) before or after them.

    ``dropout_before_bn=True`` (the harmful placement)::

        Linear -> BN -> ReLU -> [Dropout(p) -> Linear -> BN -> ReLU] * depth -> Linear

    ``dropout_before_bn=False`` (the fix: dropout only after the last BatchNorm)::

        Linear -> BN -> ReLU -> [Linear -> BN -> ReLU] * depth -> Dropout(p) -> Linear

    Shape: input (N, in_features) (images are flattened); output logits (N, n_classes).

    Examples:
        >>> net = bn_stack(depth=2, p=0.5)
        >>> sum(isinstance(m, nn.BatchNorm1d) for m in net)
        3
        >>> net(torch.zeros(4, 784)).shape
        torch.Size([4, 10])
    """
    depth, width = _positive_int("depth", depth), _positive_int("width", width)
    in_features, n_classes = _positive_int("in_features", in_features), _positive_int("n_classes", n_classes)
    p = check_probability(p)
    if not isinstance(dropout_before_bn, bool):
        raise TypeError(f"dropout_before_bn must be a bool, got {dropout_before_bn!r}")
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU()]
    for _ in range(depth):
        block = [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
        layers += [Dropout(p), *block] if dropout_before_bn else block
    if not dropout_before_bn:
        layers.append(Dropout(p))
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


@dataclass
class BNVariances:
    """Per-feature variances of one BatchNorm layer's input, each a tensor of shape (features,).

    ``train``: over the data with dropout sampled (what BatchNorm saw in training); ``test``: with dropout
    off (what it sees at test time); ``running``: BatchNorm's running variance. ``predicted``: the formula of
    :func:`predicted_train_variance` for this layer's own dropout, fed with the dropout layer's input as it is
    in training (upstream dropout on); ``predicted_local``: the same formula fed with the test-time input
    (upstream dropout off), i.e. ignoring the noise that earlier blocks pass on. ``p``: this layer's
    dropout probability (0 if no dropout feeds it).
    """

    train: Tensor
    test: Tensor
    running: Tensor
    predicted: Tensor
    predicted_local: Tensor
    p: float

    @staticmethod
    def _median(ratio: Tensor) -> float:
        return float(ratio.median())

    @property
    def shift(self) -> float:
        """Median over features of Var_train / Var_test: the measured variance shift of this layer."""
        return self._median(self.train / self.test)

    @property
    def predicted_shift(self) -> float:
        """Median over features of predicted Var_train / Var_test (upstream noise included)."""
        return self._median(self.predicted / self.test)

    @property
    def predicted_local_shift(self) -> float:
        """Median over features of the formula's Var_train / Var_test with the test-time input."""
        return self._median(self.predicted_local / self.test)

    @property
    def running_over_test(self) -> float:
        """Median over features of running variance / Var_test: how much BatchNorm over-divides at test."""
        return self._median(self.running / self.test)


@torch.no_grad()
def _record(net: nn.Sequential, X: Tensor, dropout_on: bool) -> dict[int, Tensor]:
    """The input of every module of ``net`` (by position) in one forward pass over ``X``."""
    net.eval()
    for m in filter(is_dropout_module, net.modules()):
        m.train(dropout_on)  # dropout sampled or not; BatchNorm stays in eval mode (running statistics)
    seen: dict[int, Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, inputs, out, i=i: seen.__setitem__(i, inputs[0]))
        for i, m in enumerate(net)
    ]
    try:
        net(X)
    finally:
        for h in handles:
            h.remove()
        net.eval()
    return seen


def bn_variances(net: nn.Sequential, X: Tensor, seed: int = 0) -> list[BNVariances]:
    """Measured and predicted variances of every BatchNorm layer's input over ``X``, in depth order.

    With dropout on, each Dropout module samples masks while every BatchNorm uses its running statistics,
    so the pass reproduces the training distribution of every layer's input (up to batch statistics).
    The network is left in eval mode. ``net`` must be an ``nn.Sequential`` in which every BatchNorm1d
    follows a Linear layer, itself optionally preceded by a Dropout (as :func:`bn_stack` builds it).
    The masks are drawn inside ``config.seeded(seed)``: the same call gives the same numbers, and the
    caller's random state is left as it was.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"net must be an nn.Sequential, got {type(net).__name__}")
    with seeded(seed):
        on = _record(net, X, True)
    off = _record(net, X, False)
    result = []
    for i, m in enumerate(net):
        if not isinstance(m, nn.BatchNorm1d):
            continue
        if i == 0 or not isinstance(net[i - 1], nn.Linear):
            raise ValueError(f"BatchNorm1d at position {i} does not follow a Linear layer")
        linear = net[i - 1]
        has_dropout = i >= 2 and is_dropout_module(net[i - 2])
        p, source = (float(net[i - 2].p), i - 2) if has_dropout else (0.0, i - 1)
        result.append(
            BNVariances(
                train=on[i].var(0),
                test=off[i].var(0),
                running=m.running_var.clone(),
                predicted=predicted_train_variance(linear, on[source], p),
                predicted_local=predicted_train_variance(linear, off[source], p),
                p=p,
            )
        )
    return result


def predicted_train_variance(linear: nn.Linear, a: Tensor, p: float) -> Tensor:
    """Var_train of ``linear(dropout(a, p))`` per output feature, from the formula (law of total variance).

    ``Var[w^T a] + p / (1 - p) * sum_i w_i^2 E[a_i^2]``, with the expectation and variance over the rows of
    ``a`` (N, fan_in): the inputs of the dropout layer, i.e. its output's values before masking. For
    ``p = 0`` this is the test variance. Returns a tensor of shape (out_features,).
    """
    p = check_probability(p)
    if p == 1.0:
        raise ValueError("p = 1 drops every input: the rescaling 1/(1 - p) is undefined")
    with torch.no_grad():
        clean = a @ linear.weight.T  # (N, out): the bias does not change a variance
        noise = (linear.weight**2) @ (a**2).mean(0)  # (out,): sum_i w_i^2 E[a_i^2]
        return clean.var(0) + p / (1 - p) * noise


@torch.no_grad()
def recalibrate_bn(net: nn.Module, X: Tensor, batch_size: int = 500) -> nn.Module:
    """The fix without retraining: recompute every BatchNorm's running statistics with dropout OFF.

    Resets each BatchNorm layer's running mean/variance, accumulates them over ``X`` (a cumulative average
    over batches of ``batch_size``) with dropout off, and leaves the network in eval mode. Returns ``net``.
    """
    batch_size = _positive_int("batch_size", batch_size)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("net has no BatchNorm layer to recalibrate")
    net.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    try:
        for xb in X.split(batch_size):
            net(xb)
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        net.eval()
    return net
