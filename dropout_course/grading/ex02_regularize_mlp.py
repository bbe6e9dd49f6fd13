"""Grader of ``ex02_regularize_mlp``: put dropout where it belongs in an over-fitting MLP and choose ``p``.

Checks:

* ``read_the_curves``: ``read_the_curves() -> {p: "over-fitting" | "good fit" | "under-fitting"}`` (or the
  dict itself), read from the learning curves of hidden dropout ``p`` in 0, 0.5 and 0.9 that the notebook
  measures.
* ``make_regularized_mlp``: structure of ``make_regularized_mlp(seed) -> nn.Module``: a fresh model from
  (N, 784) images to (N, 10) logits with the layers of the plain network (Linear 784-256-256-10), dropout
  after each hidden activation (optionally on the input), none on the logits, drop probabilities in a
  sensible range, dropping in train mode and deterministic in eval mode. The dropout sites are found by
  tracing one forward pass (forward hooks), so ``nn.Sequential``, the course's ``MLP`` and a hand-written
  ``nn.Module`` are all read the same way.
* ``validation_improvement``: the measured check. The learner's model and the plain network are trained
  with :func:`dropout_course.training.fit` on the same 1,000 MNIST images, with the same seeds, epochs and
  optimiser; the mean final validation loss over two seeds must be lower by at least :data:`REL_MARGIN` (4%), and
  the training loss must stay low (no under-fitting). The plain network's runs are cached in the process.
* ``validation_improvement_hidden``: the same on another data split with other seeds.

Every test runs on one thread, inside the grader's seeded and restored RNG state; the learner's model is
built by the learner's function inside ``training.seeded(seed)`` and trained as a deep copy.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn

from ..data import load_mnist
from ..training import evaluate, fit, seeded
from ..uncertainty import DROPOUT_TYPES
from .core import CheckSpec, Fail, Property, register

EXERCISE = "ex02_regularize_mlp"

IN_FEATURES, HIDDEN, N_CLASSES = 784, (256, 256), 10
N_TRAIN = 1000  # 100 images per digit: the 2 x 256 MLP memorises them within a few epochs
FIT = {"epochs": 20, "lr": 1e-3, "batch_size": 50}  # what the notebook's plain network is trained with
VISIBLE = (0, (0, 1))  # (data seed, training seeds) of the visible measured check
HIDDEN_RUNS = (1, (2, 3))  # another split and other seeds for the hidden one
REL_MARGIN = 0.04  # the mean validation loss must be at least 4% lower than the plain network's
MAX_TRAIN_LOSS = 0.25  # a mean final training loss above this is under-fitting (plain: ~0.002)
TRAIN_TIME_LIMIT = 60.0  # seconds one training run of the learner's model may take (plain: ~2 s)

HIDDEN_P_RANGE = (0.1, 0.7)  # sensible drop probabilities after hidden activations (inclusive)
MAX_INPUT_P = 0.5  # more input dropout than this throws away most of every digit

__all__ = ["plain_mlp", "trace_sites", "DIAGNOSES", "EXERCISE"]


def _one_thread(test):
    """Run a property test with torch on one thread (restored after): graders run single-threaded, and on a
    busy 2-core machine these small networks are as fast on one thread as on two."""

    @functools.wraps(test)
    def wrapper(ctx):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return test(ctx)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _prop(name: str, points: float, test) -> Property:
    return Property(name, points, _one_thread(test))


def plain_mlp() -> nn.Sequential:
    """The over-fitting network of the exercise: Linear 784-256-256-10 with ReLUs and no dropout."""
    return nn.Sequential(
        nn.Linear(IN_FEATURES, HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], N_CLASSES),
    )


# --------------------------------------------------------------------------- task 1: read the curves

OVER, GOOD, UNDER = "over-fitting", "good fit", "under-fitting"
DIAGNOSES = (OVER, GOOD, UNDER)
_CURVES_TRUTH = {0.0: OVER, 0.5: GOOD, 0.9: UNDER}
_CURVES_WHY = {
    (0.0, GOOD): (
        "p = 0: its training loss goes to ~0 while its validation loss climbs after its minimum: the network "
        "memorises the training images, that is over-fitting"
    ),
    (0.0, UNDER): (
        "p = 0: its training loss goes to ~0, so it fits the training data perfectly; the problem is the "
        "climbing validation loss: over-fitting, not under-fitting"
    ),
    (0.5, OVER): (
        "p = 0.5: its validation loss stays well below p = 0's and does not climb like it; this is the good fit"
    ),
    (0.5, UNDER): (
        "p = 0.5: its training loss is low (it fits the training images) and its validation loss is the lowest "
        "of the three: a good fit, not under-fitting"
    ),
    (0.9, OVER): (
        "p = 0.9: its *training* loss stays high: the thinned networks are too small to fit even the training "
        "data. Too much regularisation is under-fitting, not over-fitting"
    ),
    (0.9, GOOD): (
        "p = 0.9: its training loss stays high and its validation loss is the worst of the three: that is "
        "under-fitting (too much dropout)"
    ),
}


def _key(k):
    try:
        return float(k)
    except (TypeError, ValueError):
        return k


def _normalise(answer: str) -> str:
    return answer.strip().lower().replace("_", " ").replace("-", " ").replace("  ", " ")


def _read_answers(ctx) -> dict:
    """The learner's answers (a dict, or a function returning one) as {0.0: diagnosis, 0.5: ..., 0.9: ...}."""
    answers = ctx.candidate
    if callable(answers):
        answers = ctx.call(answers)
    if not isinstance(answers, dict):
        raise Fail(
            f"expected a dict {{p: diagnosis}} like {{0.0: 'over-fitting', ...}}, got {type(answers).__name__}"
        )
    answers = {_key(k): v for k, v in answers.items()}
    missing = [p for p in _CURVES_TRUTH if p not in answers]
    if missing:
        raise Fail(f"no answer for p = {', '.join(f'{p:g}' for p in missing)}: give one for 0.0, 0.5 and 0.9")
    out = {}
    allowed = {_normalise(d): d for d in DIAGNOSES}
    for p in _CURVES_TRUTH:
        value = answers[p]
        if value is ...:
            raise Fail(f"the answer for p = {p:g} is still `...`: replace it with one of {DIAGNOSES}")
        if not isinstance(value, str) or _normalise(value) not in allowed:
            raise Fail(f"the answer for p = {p:g} is {value!r}; use one of {', '.join(map(repr, DIAGNOSES))}")
        out[p] = allowed[_normalise(value)]
    return out


def _curves_property(p: float):
    def test(ctx):
        answers = ctx.memo("answers", lambda: _read_answers(ctx))
        given = answers[p]
        if given != _CURVES_TRUTH[p]:
            raise Fail(_CURVES_WHY[(p, given)])

    return test


register(
    EXERCISE,
    CheckSpec(
        "read_the_curves",
        [
            Property("p = 0 (no dropout)", 1, _curves_property(0.0)),
            Property("p = 0.5", 1, _curves_property(0.5)),
            Property("p = 0.9", 1, _curves_property(0.9)),
        ],
        description="over-fitting, good fit or under-fitting from the learning curves",
    ),
)


# --------------------------------------------------------------------------- task 2: the model's structure


def _is_dropout(module: nn.Module) -> bool:
    if isinstance(module, DROPOUT_TYPES):
        return True
    return "dropout" in type(module).__name__.lower() and not any(True for _ in module.children())


def _p_of(module: nn.Module) -> float:
    p = getattr(module, "p", None)
    if isinstance(p, torch.Tensor) and p.numel() == 1:
        p = p.item()
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(float(p)):
        raise Fail(
            f"cannot read the drop probability of {type(module).__name__} (no numeric attribute `p`): use "
            "`nn.Dropout(p)` or `dropout_course.layers.Dropout(p)`"
        )
    return float(p)


def trace_sites(model: nn.Module, x: torch.Tensor) -> tuple[list[nn.Linear], list[list[float]]]:
    """The Linear layers of ``model`` in the order ``model(x)`` calls them, and the drop probabilities of
    the dropout modules called at each site: ``sites[0]`` before the first Linear (the input),
    ``sites[k]`` between Linear k and k+1 (hidden layer k), ``sites[-1]`` after the last (the logits).

    One forward pass in eval mode, without gradients; the model's modes are restored.
    """
    calls: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda module, args: calls.append(module))
        for m in model.modules()
        if isinstance(m, nn.Linear) or _is_dropout(m)
    ]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    linears: list[nn.Linear] = []
    sites: list[list[float]] = [[]]
    for module in calls:
        if isinstance(module, nn.Linear):
            linears.append(module)
            sites.append([])
        else:
            sites[-1].append(_p_of(module))
    return linears, sites


@functools.lru_cache(maxsize=1)
def _validation_images() -> torch.Tensor:
    return load_mnist(seed=0).val.X[:64].clone()  # (64, 784) real images


def _images(n: int = 16) -> torch.Tensor:
    return _validation_images()[:n].clone()


def _build(ctx, seed: int) -> nn.Module:
    """``make_regularized_mlp(seed)`` inside ``seeded(seed)``, as experiments.compare builds models."""
    with seeded(seed):
        model = ctx.call(ctx.candidate, seed)
    name = getattr(ctx.candidate, "__name__", "make_regularized_mlp")
    if model is None:
        raise Fail(f"`{name}` returns None: did you forget `return model`?")
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise Fail(
            f"`{name}` returns the class {model.__name__}, not a model: return an instance, e.g. `Net()`"
        )
    if type(model).__name__ == "MLPConfig":
        raise Fail(f"`{name}` returns an MLPConfig: build the model from it, `MLP(config)`")
    if not isinstance(model, nn.Module):
        raise Fail(f"`{name}` returns a {type(model).__name__}, expected a torch nn.Module")
    return model


def _model(ctx) -> nn.Module:
    """The learner's model for seed 0 (checked to be a fresh nn.Module mapping images to 10 logits)."""

    def compute():
        model = _build(ctx, 0)
        again = _build(ctx, 1)
        if again is model:
            raise Fail(
                "`make_regularized_mlp` returns the same model object on every call: build a new model "
                "inside the function (each seed must start from fresh weights)"
            )
        x = _images()
        model = copy.deepcopy(model)
        model.eval()
        with torch.no_grad():
            out = ctx.call(model, x, copy_args=False)
        if not isinstance(out, torch.Tensor):
            raise Fail(f"the model returns a {type(out).__name__}, expected a tensor of logits (N, 10)")
        if tuple(out.shape) != (len(x), N_CLASSES):
            raise Fail(
                f"the model maps a batch of {len(x)} images (N, 784) to shape {tuple(out.shape)}, expected "
                f"(N, 10) logits: keep the output layer Linear(256, 10) at the end"
            )
        if not torch.isfinite(out).all():
            raise Fail("the model's outputs contain NaN or inf")
        if out.min() >= 0 and torch.allclose(out.sum(1), torch.ones(len(x)), atol=1e-4):
            raise Fail(
                "the model returns probabilities (a softmax at the end): return the logits; the "
                "cross-entropy loss applies the softmax itself"
            )
        return model

    return ctx.memo("model", compute)


def _sites(ctx):
    return ctx.memo("sites", lambda: trace_sites(_model(ctx), _images()))


def _returns_module(ctx):
    _model(ctx)


def _keeps_layers(ctx):
    linears, _ = _sites(ctx)
    found = [(m.in_features, m.out_features) for m in linears]
    expected = [(IN_FEATURES, HIDDEN[0]), (HIDDEN[0], HIDDEN[1]), (HIDDEN[1], N_CLASSES)]
    if found != expected:
        shown = " -> ".join([str(found[0][0])] + [str(o) for _, o in found]) if found else "no Linear layer"
        raise Fail(
            f"the forward pass goes through Linear {shown}; keep the plain network's layers, Linear "
            "784 -> 256 -> 256 -> 10 (the exercise changes only the dropout, so the comparison is fair)"
        )


def _layers_ok(ctx):
    try:
        _keeps_layers(ctx)
    except Fail as exc:
        raise Fail(f"fix the layers first: {exc}") from None


def _drops_in_train_mode(ctx) -> bool:
    """Whether two train-mode forward passes of (a copy of) the model on the same images differ."""
    model = copy.deepcopy(_model(ctx)).train()
    x = _images(64)
    with torch.no_grad():
        return not torch.equal(ctx.call(model, x, copy_args=False), ctx.call(model, x, copy_args=False))


def _hidden_sites(ctx):
    _layers_ok(ctx)
    _, sites = _sites(ctx)
    hidden = sites[1:-1]
    if not any(sites):
        if any(_is_dropout(m) for m in _model(ctx).modules()):
            raise Fail(
                "the model has dropout modules but its forward pass never calls them: use them in `forward` "
                "(or list them in the nn.Sequential)"
            )
        if ctx.torch_dropout_calls or _drops_in_train_mode(ctx):
            raise Fail(
                "dropout is applied as a function inside forward; use dropout modules (`nn.Dropout(p)` or "
                "`dropout_course.layers.Dropout(p)`) so that the grader can find them and read their p"
            )
        raise Fail("the model has no dropout at all: add `nn.Dropout(P_HIDDEN)` after each hidden ReLU")
    missing = [k + 1 for k, ps in enumerate(hidden) if not ps]
    if len(missing) == len(hidden) and sites[0]:
        raise Fail(
            "dropout only on the input pixels: the hidden units are where co-adaptation happens, and where "
            "dropout regularises most; add dropout after each hidden ReLU"
        )
    if len(missing) == len(hidden) and sites[-1]:
        raise Fail(
            "dropout only after the output layer (on the logits), none after the hidden layers: move it "
            "after each hidden ReLU"
        )
    if missing:
        raise Fail(
            f"no dropout after hidden layer {' and '.join(map(str, missing))}: every hidden layer's "
            "activations need dropout (after its ReLU, before the next Linear)"
        )
    zero = [k + 1 for k, ps in enumerate(hidden) if max(ps) == 0.0]
    if zero:
        raise Fail(
            f"the dropout after hidden layer {' and '.join(map(str, zero))} has p = 0, which drops nothing: "
            "set P_HIDDEN to the drop probability you chose"
        )


def _not_on_logits(ctx):
    _layers_ok(ctx)
    _, sites = _sites(ctx)
    if any(p > 0 for p in sites[-1]):
        raise Fail(
            f"dropout on the logits (p = {max(sites[-1]):g} after the output layer): it zeroes class scores at "
            "random, so the loss trains against noise in the predictions themselves. Dropout goes on the "
            "inputs of layers (input pixels, hidden activations), never after the last layer"
        )


def _sensible_p(ctx):
    _layers_ok(ctx)
    _, sites = _sites(ctx)
    lo, hi = HIDDEN_P_RANGE
    hidden = [p for ps in sites[1:-1] for p in ps if p > 0]
    for p in hidden:
        if p > hi:
            raise Fail(
                f"hidden p = {p:g} drops {p:.0%} of the hidden units at every step: p is the probability of "
                f"DROPPING (did you mean keep probability {p:g}, i.e. p = {1 - p:.2g}?). So much dropout "
                "under-fits; the usual hidden p is 0.5"
            )
        if p < lo:
            raise Fail(
                f"hidden p = {p:g} is too little to regularise this network measurably; the usual hidden p is "
                "0.5 (Srivastava et al., 2014)"
            )
    for p in sites[0]:
        if p > MAX_INPUT_P:
            raise Fail(
                f"input p = {p:g} drops {p:.0%} of every digit's pixels: p is the probability of DROPPING "
                f"(keep probability {p:g} would be p = {1 - p:.2g}); Hinton et al. (2012) drop 20% of the "
                "input (p = 0.2)"
            )


def _train_eval(ctx):
    model = copy.deepcopy(_model(ctx)).eval()
    x = _images(64)
    with torch.no_grad():
        a, b = ctx.call(model, x, copy_args=False), ctx.call(model, x, copy_args=False)
    if not torch.equal(a, b):
        raise Fail(
            "in eval mode two forward passes on the same images differ: dropout is still on at evaluation. "
            "`F.dropout(x, p)` defaults to training=True: pass `training=self.training`, or use modules"
        )
    if not _drops_in_train_mode(ctx):
        raise Fail("in train mode two forward passes give the same output: the model never drops anything")


register(
    EXERCISE,
    CheckSpec(
        "make_regularized_mlp",
        [
            _prop("returns a new nn.Module mapping (N, 784) images to (N, 10) logits", 1, _returns_module),
            _prop("keeps the plain network's layers: Linear 784 -> 256 -> 256 -> 10", 1, _keeps_layers),
            _prop("dropout after every hidden layer's activation", 2, _hidden_sites),
            _prop("no dropout on the output logits", 1, _not_on_logits),
            _prop("drop probabilities in a sensible range (p = probability of dropping)", 2, _sensible_p),
            _prop("drops in train mode, deterministic in eval mode", 1, _train_eval),
        ],
        description="structure of make_regularized_mlp(seed)",
    ),
)


# --------------------------------------------------------------------------- task 3: measured improvement


@functools.lru_cache(maxsize=4)
def _data(data_seed: int):
    return load_mnist(n_train=N_TRAIN, seed=data_seed)


def _final(model: nn.Module, data_seed: int, seed: int) -> tuple[float, float, float]:
    """Train ``model`` like the notebook's plain network; final (train loss, val loss, val accuracy).

    Measured once, after the last epoch, in eval mode (the same numbers as the last entries of a history
    measured every epoch: measuring does not use the random generator).
    """
    data = _data(data_seed)
    fit(model, data.train, seed=seed, progress=False, measure_train=False, **FIT)
    train, val = evaluate(model, data.train), evaluate(model, data.val)
    return train["loss"], val["loss"], val["accuracy"]


@functools.lru_cache(maxsize=8)
def plain_run(data_seed: int, seed: int) -> tuple[float, float, float]:
    """The plain network's final (train loss, val loss, val accuracy) for one split and seed (cached)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with seeded(seed):
            model = plain_mlp()
        return _final(model, data_seed, seed)
    finally:
        torch.set_num_threads(threads)


def _learner_runs(ctx, data_seed: int, seeds: tuple[int, ...]) -> list[tuple[float, float, float]]:
    def compute():
        for prop in (_returns_module, _keeps_layers):
            try:
                prop(ctx)
            except Fail as exc:
                raise Fail(f"fix make_regularized_mlp first (see its check): {exc}") from None
        _, sites = _sites(ctx)
        if not any(p > 0 for ps in sites for p in ps) and not _drops_in_train_mode(ctx):
            raise Fail(
                "the model drops nothing (no dropout with p > 0), so there is no regularisation to measure: "
                "add dropout after each hidden ReLU (see the make_regularized_mlp check)"
            )
        runs = []
        for seed in seeds:
            model = copy.deepcopy(_build(ctx, seed))  # the learner's object is never trained

            def train_your_model(model=model, seed=seed):
                return _final(model, data_seed, seed)

            limit, ctx.time_limit = ctx.time_limit, max(ctx.time_limit, TRAIN_TIME_LIMIT)
            try:
                runs.append(ctx.call(train_your_model, copy_args=False))
            finally:
                ctx.time_limit = limit
        return runs

    return ctx.memo(("runs", data_seed, seeds), compute)


def _mean(values) -> float:
    return float(sum(values) / len(values))


def _numbers(ctx, data_seed: int, seeds: tuple[int, ...]):
    runs = _learner_runs(ctx, data_seed, seeds)
    plain = [plain_run(data_seed, s) for s in seeds]
    return {
        "train": _mean([r[0] for r in runs]),
        "val": _mean([r[1] for r in runs]),
        "acc": _mean([r[2] for r in runs]),
        "plain_train": _mean([r[0] for r in plain]),
        "plain_val": _mean([r[1] for r in plain]),
        "plain_acc": _mean([r[2] for r in plain]),
        "n": len(seeds),
    }


def _describe(m: dict) -> str:
    return (
        f"validation loss {m['val']:.3f} with your dropout vs {m['plain_val']:.3f} without (training loss "
        f"{m['train']:.3f} vs {m['plain_train']:.3f}; validation accuracy {m['acc']:.1%} vs "
        f"{m['plain_acc']:.1%}; mean of {m['n']} seeds)"
    )


def _improves(data_seed: int, seeds: tuple[int, ...]):
    def test(ctx):
        m = _numbers(ctx, data_seed, seeds)
        if m["val"] <= (1 - REL_MARGIN) * m["plain_val"]:
            return
        if m["train"] > MAX_TRAIN_LOSS:
            raise Fail(
                f"too much dropout: the model under-fits. {_describe(m)}. Its training loss stays high, so it "
                "cannot even fit the training images: lower p"
            )
        why = (
            "The training loss still goes to ~0: the network still memorises the images, too little dropout"
            if m["train"] < 0.05
            else "The dropout does not pay off here"
        )
        raise Fail(
            f"no clear improvement: {_describe(m)}; it should be at least {REL_MARGIN:.0%} lower, at most "
            f"{(1 - REL_MARGIN) * m['plain_val']:.3f}. {why}: try hidden p around 0.5 after each hidden ReLU, "
            "with input p around 0.2"
        )

    return test


def _fits_training_data(data_seed: int, seeds: tuple[int, ...]):
    def test(ctx):
        m = _numbers(ctx, data_seed, seeds)
        if m["train"] > MAX_TRAIN_LOSS:
            raise Fail(
                f"under-fitting: the final training loss is {m['train']:.3f} (the plain network's "
                f"{m['plain_train']:.3f}; at most {MAX_TRAIN_LOSS:g} allowed): so much dropout that the thinned "
                "networks cannot fit the training images. Lower p (is it the DROP probability?)"
            )

    return test


register(
    EXERCISE,
    CheckSpec(
        "validation_improvement",
        [
            _prop(
                f"lowers the plain network's validation loss by >= {REL_MARGIN:.0%} (mean of 2 seeds)",
                4,
                _improves(*VISIBLE),
            ),
            _prop("still fits the training data (no under-fitting)", 1, _fits_training_data(*VISIBLE)),
        ],
        description="trained against the plain network, same data, seeds and epochs",
    ),
)
register(
    EXERCISE,
    CheckSpec(
        "validation_improvement_hidden",
        [
            _prop("lowers the validation loss on another split and seeds", 2, _improves(*HIDDEN_RUNS)),
            _prop("still fits the training data there", 1, _fits_training_data(*HIDDEN_RUNS)),
        ],
        hidden=True,
        description="another data split, other seeds",
    ),
)
