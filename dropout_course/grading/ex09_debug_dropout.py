"""Grader of ``ex09_debug_dropout``: fix a training script's dropout bugs, one check per bug.

The notebook shows a colleague's script with five realistic bugs; the learner writes the fixed functions.
Each check judges the *behaviour* of the fix on networks built here (never the learner's own models):

* ``evaluate(model, X, y) -> float``: dropout off while evaluating (deterministic, equal to eval-mode
  accuracy), every module's mode restored, no autograd graph, a Python float.
* ``build_classifier(in_features, hidden, n_classes, keep_prob) -> nn.Module``: torch's ``nn.Dropout`` takes
  the DROP probability (``1 - keep_prob``); dropout after every hidden activation; none on the logits.
* ``mc_predict(model, x, T) -> (N, C)``: MC dropout on a network with BatchNorm (handed over in train mode,
  as during training): only the dropout modules sample, BatchNorm keeps its running statistics (unchanged,
  batch-independent predictions), the mean of the T softmaxes (z-scores against a 4,000-pass reference),
  modes restored, no autograd graph.
* ``FreshDropout(p)``: a dropout module that draws a new mask on every forward call (the script's module
  cached its mask, so every step dropped the same units).
* hidden: ``mc_predict_hidden`` and ``FreshDropout_hidden`` on other sizes and ``p``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..layers import is_dropout_module
from ..practice import leaf_modules
from .core import CheckContext, CheckSpec, Fail, Originality, Property
from .ex01_inverted_dropout import REFERENCES

EXERCISE = "ex09_debug_dropout"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order


class GradProbe(nn.Module):
    """Identity that records, in a buffer, whether autograd was enabled at its last forward (1/0; -1 never)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("grad_enabled", torch.tensor(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.fill_(int(torch.is_grad_enabled()))
        return x


def probe_net(p: float, seed: int, batchnorm: bool = False, in_features: int = 6) -> nn.Sequential:
    """A small classifier with a dropout site (and optionally BatchNorm after it), built with ``seed``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        GradProbe(),
        nn.Linear(in_features, 32),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(32, 32),
    ]
    if batchnorm:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Linear(32, 4)]
    net = nn.Sequential(*layers).double()
    if batchnorm:  # running statistics far from a batch's own, so using the batch's is visible
        bn = layers[5]
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _data(n: int, seed: int, in_features: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_features, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (n,), generator=g
    )


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _mixed_modes(model: nn.Module) -> nn.Module:
    """Put the modules of ``model`` in a mixed pattern of train/eval modes (the top module in train mode)."""
    for i, module in enumerate(model.modules()):
        module.training = i % 2 == 0
    return model


# --------------------------------------------------------------------------- evaluate


def _eval_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    was = _modes(model)
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).double().mean().item()
    for module, mode in zip(model.modules(), was, strict=True):
        module.training = mode
    return acc


def _as_number(value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Fail(f"must return a number (the accuracy), got {type(value).__name__}")
    return float(value)


def _evaluate_dropout_off(ctx: CheckContext) -> None:
    net = probe_net(0.5, 1).train()  # the script's state after training: train mode
    X, y = _data(400, 2)
    want = _eval_accuracy(net, X, y)
    got = [_as_number(ctx.call(ctx.candidate, net, X, y, copy_args=False)) for _ in range(3)]
    net.train()
    if len(set(got)) > 1:
        raise Fail(
            f"three calls give different accuracies {got}: dropout is still sampling masks; call model.eval() "
            "before predicting"
        )
    if not math.isclose(got[0], want, abs_tol=1e-6):  # float32 means of 400 0/1 values
        if math.isclose(got[0], want * 100, rel_tol=1e-6):
            raise Fail("returns a percentage; return the accuracy as a fraction in [0, 1]")
        if math.isclose(got[0], want * len(y), rel_tol=1e-6):
            raise Fail(
                f"returns the NUMBER of correct predictions ({got[0]:g} of {len(y)}): divide by the number of "
                "examples, the accuracy is a fraction in [0, 1]"
            )
        raise Fail(f"accuracy {got[0]:.4f}, the network in eval mode scores {want:.4f} on the same data")


def _evaluate_restores_modes(ctx: CheckContext) -> None:
    net = _mixed_modes(probe_net(0.5, 3))
    before = _modes(net)
    X, y = _data(50, 4)
    ctx.call(ctx.candidate, net, X, y, copy_args=False)
    if _modes(net) != before:
        raise Fail(
            "the model's modes are not what they were before the call: remember each module's mode "
            "(m.training for m in model.modules()) and restore it, so training can go on after evaluating"
        )


def _evaluate_no_graph(ctx: CheckContext) -> None:
    net = probe_net(0.5, 5)
    X, y = _data(50, 6)
    got = ctx.call(ctx.candidate, net, X, y, copy_args=False)
    if int(net[0].grad_enabled) == 1:
        raise Fail("the forward pass builds an autograd graph: evaluate under torch.no_grad()")
    if not isinstance(got, float):  # a NumPy float64 is a float too (as in ex06)
        raise Fail(f"must return a Python float (use .item()), got {type(got).__name__}")


CHECKS.append(
    CheckSpec(
        "evaluate",
        [
            Property(
                "dropout is off while evaluating (deterministic, eval-mode accuracy)",
                4,
                _evaluate_dropout_off,
            ),
            Property("leaves every module in the mode it found it", 2, _evaluate_restores_modes),
            Property("no autograd graph; returns a Python float", 2, _evaluate_no_graph),
        ],
    ),
)


# --------------------------------------------------------------------------- build_classifier


def _built(ctx: CheckContext, keep_prob: float) -> nn.Module:
    def build():
        model = ctx.call(ctx.candidate, 10, (16, 8), 3, keep_prob)
        if not isinstance(model, nn.Module):
            raise Fail(f"must return an nn.Module, got {type(model).__name__}")
        return model

    return ctx.memo(("built", keep_prob), build)


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_dropout_module(m)]


def _leaf_sequence(model: nn.Module) -> list[nn.Module]:
    return [m for _, m in leaf_modules(model)]


def _classifier_runs(ctx: CheckContext) -> None:
    model = _built(ctx, 0.8)
    if sum(isinstance(m, nn.Linear) for m in model.modules()) != 3:
        raise Fail("expected three nn.Linear layers for hidden = (16, 8): 10 -> 16 -> 8 -> 3")
    x = torch.randn(5, 10)
    model.eval()
    with torch.no_grad():
        out = ctx.call(model, x)
    if not isinstance(out, torch.Tensor) or out.shape != (5, 3):
        raise Fail(f"the model must map (5, 10) inputs to (5, 3) logits, got {getattr(out, 'shape', out)!r}")
    other = ctx.call(ctx.candidate, 10, (12, 6, 4), 3, 0.8)
    modules = other.modules() if isinstance(other, nn.Module) else []
    widths = [(m.in_features, m.out_features) for m in modules if isinstance(m, nn.Linear)]
    if widths != [(10, 12), (12, 6), (6, 4), (4, 3)]:
        raise Fail(
            f"with hidden = (12, 6, 4) the Linear layers are {widths}, expected 10 -> 12 -> 6 -> 4 -> 3: build "
            "one Linear -> ReLU -> Dropout per entry of `hidden` (a loop), not a fixed number of layers"
        )


def _classifier_drop_probability(ctx: CheckContext) -> None:
    for keep_prob in (0.8, 0.3):
        model = _built(ctx, keep_prob)
        ps = [m.p for m in _dropout_modules(model)]
        if not ps:
            raise Fail("the model has no dropout module")
        if any(math.isclose(p, keep_prob) for p in ps) and not math.isclose(keep_prob, 0.5):
            raise Fail(
                f"nn.Dropout(p) takes the probability of DROPPING: with keep_prob = {keep_prob} it needs "
                f"p = 1 - keep_prob = {1 - keep_prob:.1f}, got p = {ps}"
            )
        if not all(math.isclose(p, 1 - keep_prob) for p in ps):
            raise Fail(
                f"with keep_prob = {keep_prob} every dropout layer needs p = {1 - keep_prob:.1f}, got {ps}"
            )


def _classifier_no_logit_dropout(ctx: CheckContext) -> None:
    leaves = _leaf_sequence(_built(ctx, 0.8))
    last_linear = max(i for i, m in enumerate(leaves) if isinstance(m, nn.Linear))
    after = [type(m).__name__ for m in leaves[last_linear + 1 :]]
    if any(is_dropout_module(m) for m in leaves[last_linear + 1 :]):
        raise Fail(
            f"dropout after the output layer ({', '.join(after)}): it zeroes class scores, which the loss then "
            "trains on; put dropout after the hidden activations only"
        )


def _classifier_hidden_dropout(ctx: CheckContext) -> None:
    leaves = _leaf_sequence(_built(ctx, 0.8))
    names = [type(m).__name__ for m in leaves]
    linears = [i for i, m in enumerate(leaves) if isinstance(m, nn.Linear)]
    for a, b in zip(linears[:-1], linears[1:], strict=True):
        between = leaves[a + 1 : b]
        kinds = [is_dropout_module(m) for m in between]
        if not any(kinds):
            raise Fail(
                f"no dropout between hidden layers {names[a : b + 1]}: put one after each hidden activation"
            )
        if not any(
            isinstance(m, (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.LeakyReLU, nn.ELU)) for m in between
        ):
            raise Fail(
                f"no activation between hidden layers {names[a : b + 1]}: a stack of Linear layers is linear"
            )


CHECKS.append(
    CheckSpec(
        "build_classifier",
        [
            Property("builds 10 -> 16 -> 8 -> 3 and runs", 1, _classifier_runs),
            Property("nn.Dropout gets the DROP probability 1 - keep_prob", 3, _classifier_drop_probability),
            Property("no dropout on the logits", 2, _classifier_no_logit_dropout),
            Property("dropout after every hidden activation", 2, _classifier_hidden_dropout),
        ],
    ),
)


# --------------------------------------------------------------------------- mc_predict with BatchNorm


def _mc(ctx: CheckContext, net: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    out = ctx.call(ctx.candidate, net, x, T, copy_args=False)
    if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], 4):
        raise Fail(
            f"must return a ({x.shape[0]}, 4) tensor of mean probabilities, got {getattr(out, 'shape', out)!r}"
        )
    if not torch.allclose(out.sum(1), torch.ones(x.shape[0], dtype=out.dtype), atol=1e-6):
        raise Fail("the rows do not sum to 1: average the softmax probabilities of the T passes")
    return out.detach().double()


def _p0_prediction(ctx: CheckContext, n: int, seed: int):
    """The learner's MC prediction with p = 0 (handed over in train mode, as during training), the eval-mode
    prediction it must equal, and BatchNorm's mode at each of its calls (computed once per check)."""

    def compute():
        net = probe_net(0.0, seed, batchnorm=True)
        x, _ = _data(n, seed + 1)
        want = torch.softmax(net(x), 1).detach()
        bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
        bn_modes: list[bool] = []
        hook = bn.register_forward_pre_hook(lambda module, args: bn_modes.append(module.training))
        try:
            got = _mc(ctx, net.train(), x, 3)
        finally:
            hook.remove()
        return got, want, bn_modes

    return ctx.memo(("p0", n, seed), compute)


def _mc_batch_independent(n: int, seed: int):
    def test(ctx: CheckContext) -> None:
        got, want, bn_modes = _p0_prediction(ctx, n, seed)  # p = 0: MC must equal the eval prediction
        if not torch.allclose(got, want, atol=1e-6) and any(bn_modes):
            raise Fail(
                "with p = 0 the MC prediction differs from the eval-mode prediction: BatchNorm is normalising "
                "with the batch's own statistics (it is in train mode, as the model was handed over during "
                "training); call `model.eval()` first, then put only the dropout modules in train mode"
            )

    return test


def _mc_rows_are_examples(ctx: CheckContext, n: int, seed: int) -> None:
    got, want, bn_modes = _p0_prediction(ctx, n, seed)
    # BatchNorm in train mode is its own property's; a model never run is named by the checks below
    if bn_modes and not any(bn_modes) and not torch.allclose(got, want, atol=1e-6):
        raise Fail(
            "with p = 0 (and BatchNorm in eval mode) the MC prediction differs from the eval-mode prediction: "
            "row i must be the mean over the T passes of example i (after `x.repeat(T, 1)`, reshape "
            "(T*N, C) -> (T, N, C) and average over dim 0; `repeat_interleave` needs (N, T, C))"
        )


def _mc_running_stats(ctx: CheckContext) -> None:
    net = probe_net(0.5, 7, batchnorm=True)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    x, _ = _data(32, 8)
    _mc(ctx, net.train(), x, 10)  # left in train mode, as during training
    if not (torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])):
        raise Fail(
            "BatchNorm's running statistics changed: in train mode every MC pass overwrites the statistics "
            "learned in training; keep BatchNorm in eval mode"
        )


MEAN_T, REFERENCE_T = 1000, 4000  # passes of the learner's mean and of the reference's
MAX_MEAN_Z2 = 6.0  # largest mean squared z-score of the learner's mean probabilities (1 expected)


def _spread_net(p: float, seed: int) -> nn.Sequential:
    """``probe_net`` with BatchNorm and a 20x larger output layer: its class probabilities vary a lot from
    mask to mask, so the mean of the softmaxes and the softmax of the mean logits differ clearly."""
    net = probe_net(p, seed, batchnorm=True)
    with torch.no_grad():
        net[-1].weight.mul_(20.0)
    return net


def _dropout_logits(net: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """(T, N, C) logits of ``net`` (in eval mode) with its dropout modules sampling, in chunks of 1000."""
    chunks = []
    with torch.no_grad():
        for start in range(0, T, 1000):
            k = min(1000, T - start)
            chunks.append(net(x.repeat(k, 1)).reshape(k, len(x), -1))
    return torch.cat(chunks)


@functools.lru_cache(maxsize=4)
def _mc_reference(n: int, p: float, seed: int):
    """Per-example mean and spread of one pass's softmax, and the softmax of the mean logits (REFERENCE_T
    passes, seeded; cached)."""
    net = _spread_net(p, seed)
    x, _ = _data(n, seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if is_dropout_module(m):
                m.train()
        logits = _dropout_logits(net, x, REFERENCE_T)
    probs = logits.softmax(-1)
    return probs.mean(0), probs.std(0), logits.mean(0).softmax(-1)


def _mc_mean_of_softmaxes(ctx: CheckContext, n: int, p: float, seed: int) -> None:
    """The learner's mean over MEAN_T passes matches MC dropout's mean softmax (z-scores), else named."""
    mean, std, of_mean_logits = _mc_reference(n, p, seed)
    net = _spread_net(p, seed)
    x, _ = _data(n, seed + 1)
    got = _mc(ctx, net, x, MEAN_T)
    se = std * math.sqrt(1 / MEAN_T + 1 / REFERENCE_T) + 1e-4
    z2 = ((got - mean) / se).pow(2).mean().item()
    if z2 <= MAX_MEAN_Z2:
        return
    if ((got - of_mean_logits) / se).pow(2).mean().item() <= MAX_MEAN_Z2:
        raise Fail(
            "averages the LOGITS of the T passes and applies one softmax: MC dropout averages the "
            "probabilities, the mean of softmax(logits_t) over the passes"
        )
    raise Fail(
        f"the mean of {MEAN_T} passes differs from MC dropout's mean probabilities (mean squared z-score "
        f"{z2:.1f}, about 1 expected): the model in eval mode, only the dropout modules in train mode, the "
        "mean of the T softmaxes"
    )


def _mc_samples(n: int, p: float, seed: int):
    def test(ctx: CheckContext) -> None:
        net = probe_net(p, seed, batchnorm=True)
        x, _ = _data(n, seed + 1)
        eval_probs = torch.softmax(net(x), 1).detach()
        _mc_rows_are_examples(ctx, n, seed)
        first, second = _mc(ctx, net, x, 30), _mc(ctx, net, x, 30)
        if torch.allclose(first, eval_probs, atol=1e-9):
            raise Fail(
                "returns the eval-mode prediction: dropout must stay ON (sampling) during the T passes"
            )
        if torch.equal(first, second):
            raise Fail("two calls return identical averages: draw new masks on every pass")
        # Averaging T passes shrinks the call-to-call difference like 1/sqrt(T): 5.5x from T = 1 to T = 30.
        single = (_mc(ctx, net, x, 1) - _mc(ctx, net, x, 1)).abs().mean().item()
        averaged = (first - second).abs().mean().item()
        if averaged > single / 2:
            raise Fail(
                f"two calls differ as much with T = 30 ({averaged:.3f}) as with T = 1 ({single:.3f}): "
                "average the T passes"
            )
        _mc_mean_of_softmaxes(ctx, n, p, seed)

    return test


def _mc_restores_modes(ctx: CheckContext) -> None:
    net = _mixed_modes(probe_net(0.5, 9, batchnorm=True))
    before = _modes(net)
    x, _ = _data(16, 10)
    _mc(ctx, net, x, 5)
    if _modes(net) != before:
        raise Fail("the modules' modes are not restored: remember each module's own mode and set it back")


def _mc_no_graph(ctx: CheckContext) -> None:
    net = probe_net(0.5, 13, batchnorm=True)
    x, _ = _data(16, 14)
    out = ctx.call(ctx.candidate, net, x, 5, copy_args=False)
    if int(net[0].grad_enabled) == 1 or (isinstance(out, torch.Tensor) and out.requires_grad):
        raise Fail(
            "the T forward passes build an autograd graph (kept alive by the returned tensor): predict under "
            "`torch.no_grad()`"
        )


def _mc_properties(n: int, p: float, seed: int) -> list[Property]:
    return [
        Property(
            "BatchNorm uses its running statistics (p = 0 gives the eval prediction)",
            3,
            _mc_batch_independent(n, seed),
        ),
        Property("BatchNorm's running statistics are left unchanged", 2, _mc_running_stats),
        Property("dropout samples: T passes with fresh masks, averaged", 2, _mc_samples(n, p, seed)),
        Property("restores every module's mode", 1, _mc_restores_modes),
        Property("no autograd graph", 1, _mc_no_graph),
    ]


_MC_ORIGINALITY = Originality(
    "fix MC-dropout prediction yourself",
    (
        "dropout_course.uncertainty:mc_predict",
        "dropout_course.uncertainty:mc_predict_loop",
        "dropout_course.uncertainty:mc_dropout_mode",
    ),
    torch_dropout=False,
)
CHECKS.append(CheckSpec("mc_predict", _mc_properties(64, 0.5, 11), originality=_MC_ORIGINALITY))
CHECKS.append(
    CheckSpec("mc_predict_hidden", _mc_properties(7, 0.2, 21), hidden=True, originality=_MC_ORIGINALITY),
)


# --------------------------------------------------------------------------- a fresh mask per call


def _module(ctx: CheckContext, p: float) -> nn.Module:
    module = ctx.call(ctx.candidate, p)
    if not isinstance(module, nn.Module):
        raise Fail(f"FreshDropout(p) must create an nn.Module, got {type(module).__name__}")
    for sub in module.modules():
        if sub is not module and is_dropout_module(sub):
            raise Fail(f"wraps a ready-made dropout layer ({type(sub).__name__}): write the mask code itself")
    return module.train()


def _fresh_each_call(shape, p: float):
    def test(ctx: CheckContext) -> None:
        module = _module(ctx, p)
        x = torch.ones(shape)
        masks = [ctx.call(module, x) != 0 for _ in range(3)]
        if torch.equal(masks[0], masks[1]) and torch.equal(masks[1], masks[2]):
            raise Fail(
                "the same units are dropped on every call of one module: the mask is cached and reused across "
                "steps; draw a new mask inside forward() every time"
            )
        other = ctx.call(module, torch.ones(shape[0] * 2, *shape[1:]))
        if other.shape != (shape[0] * 2, *shape[1:]):
            raise Fail(f"an input of another batch size gives output of shape {tuple(other.shape)}")

    return test


def _drop_rate_and_scale(shape, p: float):
    def test(ctx: CheckContext) -> None:
        module = _module(ctx, p)
        x = 0.5 + torch.rand(shape, generator=torch.Generator().manual_seed(1))  # no zero, all different
        out = ctx.call(module, x)
        if torch.equal(out[0] == 0, out[1] == 0):
            raise Fail("the first two samples share one mask: draw one value per element")
        n = out.numel()
        dropped = (out == 0).double().mean().item()
        tolerance = 6 * math.sqrt(p * (1 - p) / n)
        if abs(dropped - p) > tolerance:
            if abs(dropped - (1 - p)) <= tolerance:
                raise Fail(
                    f"drops a fraction {dropped:.3f} of the units, about 1 - p: p is the probability of "
                    f"DROPPING (p = {p}), keep a unit where `torch.rand_like(x) >= p`"
                )
            raise Fail(
                f"drops a fraction {dropped:.3f} of the units, expected p = {p} (within {tolerance:.3f})"
            )
        kept = out[out != 0] / x[out != 0]
        if kept.numel() and not torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-5):
            if torch.allclose(out[out != 0], torch.full_like(kept, 1 / (1 - p)), rtol=1e-5):
                raise Fail(
                    "the kept units are all 1/(1-p), whatever the input: the output is the scaled mask itself; "
                    "return x * mask / (1 - p)"
                )
            raise Fail(
                f"kept units are scaled by {kept.unique()[:3].tolist()}, expected 1/(1-p) = {1 / (1 - p):.4g}"
            )

    return test


def _eval_identity(ctx: CheckContext) -> None:
    module = _module(ctx, 0.5).eval()
    x = torch.randn(8, 20)
    if not torch.equal(ctx.call(module, x), x):
        raise Fail("in eval mode the module must return its input unchanged")


def _fresh_properties(shape, p: float) -> list[Property]:
    return [
        Property("a fresh mask on every forward call", 3, _fresh_each_call(shape, p)),
        Property(
            "drops a fraction p and scales the kept units by 1/(1-p)", 2, _drop_rate_and_scale(shape, p)
        ),
        Property("the identity in eval mode", 1, _eval_identity),
    ]


_FRESH_ORIGINALITY = Originality("write the dropout module yourself", REFERENCES)
CHECKS.append(CheckSpec("FreshDropout", _fresh_properties((64, 200), 0.3), originality=_FRESH_ORIGINALITY))
CHECKS.append(
    CheckSpec(
        "FreshDropout_hidden",
        _fresh_properties((16, 3, 40), 0.7),
        hidden=True,
        originality=_FRESH_ORIGINALITY,
    ),
)
