"""Grader of ``ex02_regularize_mlp``: put dropout where it belongs in an over-fitting MLP and choose ``p``.

Checks:

* ``read_the_curves``: ``read_the_curves() -> {p: "over-fitting" | "good fit" | "under-fitting"}`` (or the
  dict itself), read from the learning curves of hidden dropout ``p`` in 0, 0.5 and 0.9 that the notebook
  measures.
* ``make_regularized_mlp``: structure of ``make_regularized_mlp(seed) -> nn.Module``: a fresh model from
  (N, 784) images to (N, 10) logits with the layers of the plain network (Linear 784-256-256-10), dropout
  after each hidden activation (optionally on the input), none on the logits, drop probabilities in a
  sensible range, dropping in train mode and deterministic in eval mode (properties in
  :mod:`.mlp_structure`, which finds the dropout sites by tracing one forward pass).
* ``validation_improvement``: the measured check. The learner's model and the plain network are trained
  with :func:`dropout_course.training.fit` on the same 1,000 MNIST images, with the same seeds, epochs and
  optimiser; the mean final validation loss over two seeds must be at least :data:`REL_MARGIN` (4%)
  lower, and the training loss must stay low (no under-fitting). The plain network's runs are cached in the process.
* ``validation_improvement_hidden``: the same on another data split with other seeds.

Every test runs on one thread, inside the grader's seeded and restored RNG state; the learner's model is
built by the learner's function inside ``config.seeded(seed)`` and trained as a deep copy.
"""

from __future__ import annotations

import copy
import functools

from torch import nn

from ..config import seeded, torch_threads
from ..data import load_mnist
from ..training import evaluate, fit
from .core import CheckSpec, Fail, Originality, Property
from .mlp_structure import (
    HIDDEN,
    IN_FEATURES,
    N_CLASSES,
    build_model,
    dropout_sites,
    drops_in_train_mode,
    hidden_sites,
    keeps_layers,
    not_on_logits,
    relu_activations,
    returns_module,
    sensible_p,
    trace_sites,
    train_eval,
)

EXERCISE = "ex02_regularize_mlp"
CHECKS: list[CheckSpec] = []  # this exercise\'s checks, in notebook order

N_TRAIN = 1000  # 100 images per digit: the 2 x 256 MLP memorises them within a few epochs
FIT = {"epochs": 20, "lr": 1e-3, "batch_size": 50}  # what the notebook's plain network is trained with
VISIBLE = (0, (0, 1))  # (data seed, training seeds) of the visible measured check
HIDDEN_RUNS = (1, (2, 3))  # another split and other seeds for the hidden one
REL_MARGIN = 0.04  # the mean validation loss must be at least 4% lower than the plain network's
MAX_TRAIN_LOSS = 0.25  # a mean final training loss above this is under-fitting (plain: ~0.005)
TRAIN_TIME_LIMIT = 60.0  # seconds one training run of the learner's model may take (plain: ~2 s)

__all__ = ["plain_mlp", "plain_run", "trace_sites", "DIAGNOSES", "EXERCISE", "FIT", "N_TRAIN"]


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


CHECKS.append(
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

# the task is to build the network with dropout placed: the course's MLP (its dropout sites built in) is not
_ORIGINALITY = Originality(
    "build the network yourself (nn.Sequential or your own nn.Module; dropout modules are fine)",
    ("dropout_course.models:MLP",),
    torch_dropout=False,
)


CHECKS.append(
    CheckSpec(
        "make_regularized_mlp",
        [
            Property("returns a new nn.Module mapping (N, 784) images to (N, 10) logits", 1, returns_module),
            Property("keeps the plain network's layers: Linear 784 -> 256 -> 256 -> 10", 1, keeps_layers),
            Property("a ReLU after each hidden Linear, as in the plain network", 1, relu_activations),
            Property("dropout after every hidden layer's activation", 2, hidden_sites),
            Property("no dropout on the output logits", 1, not_on_logits),
            Property("drop probabilities in a sensible range (p = probability of dropping)", 2, sensible_p),
            Property("drops in train mode, deterministic in eval mode", 1, train_eval),
        ],
        description="structure of make_regularized_mlp(seed)",
        originality=_ORIGINALITY,
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
    with torch_threads(1), seeded(seed):  # the same thread count as the learner's runs in a check
        model = plain_mlp()
        return _final(model, data_seed, seed)


def _learner_runs(ctx, data_seed: int, seeds: tuple[int, ...]) -> list[tuple[float, float, float]]:
    def compute():
        for prop in (returns_module, keeps_layers):
            try:
                prop(ctx)
            except Fail as exc:
                raise Fail(f"fix make_regularized_mlp first (see its check): {exc}") from None
        _, sites = dropout_sites(ctx)
        if not any(p > 0 for ps in sites for p in ps) and not drops_in_train_mode(ctx):
            raise Fail(
                "the model drops nothing (no dropout with p > 0), so there is no regularisation to measure: "
                "add dropout after each hidden ReLU (see the make_regularized_mlp check)"
            )
        runs = []
        for seed in seeds:
            model = copy.deepcopy(build_model(ctx, seed))  # the learner's object is never trained

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


CHECKS.append(
    CheckSpec(
        "validation_improvement",
        [
            Property(
                f"lowers the plain network's validation loss by >= {REL_MARGIN:.0%} (mean of 2 seeds)",
                4,
                _improves(*VISIBLE),
            ),
            Property("still fits the training data (no under-fitting)", 1, _fits_training_data(*VISIBLE)),
        ],
        description="trained against the plain network, same data, seeds and epochs",
        originality=_ORIGINALITY,
    ),
)
CHECKS.append(
    CheckSpec(
        "validation_improvement_hidden",
        [
            Property("lowers the validation loss on another split and seeds", 2, _improves(*HIDDEN_RUNS)),
            Property("still fits the training data there", 1, _fits_training_data(*HIDDEN_RUNS)),
        ],
        hidden=True,
        description="another data split, other seeds",
        originality=_ORIGINALITY,
    ),
)
