"""Offline data loaders: shapes, balance, determinism, subsets, and no network access."""

import socket

import pytest
import torch

from dropout_course.data import (
    encode_names,
    load_digits,
    load_mnist,
    load_surnames,
    toy_function,
    toy_regression,
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist_shapes_balance_and_range(no_network):
    d = load_mnist()
    assert (len(d.train), len(d.val), len(d.test)) == (4000, 500, 500)
    assert d.train.X.shape == (4000, 784) and d.train.X.dtype == torch.float32
    assert 0.0 <= d.train.X.min() and d.train.X.max() <= 1.0
    for split in (d.train, d.val, d.test):
        counts = torch.bincount(split.y, minlength=10)
        assert counts.min() == counts.max()  # 500 per class in the source, split stratified
    images = load_mnist(flatten=False)
    assert images.train.X.shape == (4000, 1, 28, 28)


def test_splits_are_disjoint_and_deterministic(no_network):
    a, b, c = load_mnist(seed=0), load_mnist(seed=0), load_mnist(seed=1)
    assert torch.equal(a.train.X, b.train.X) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.test.X, c.test.X)
    rows = {tuple(r.tolist()) for r in a.test.X[:, ::7]}
    assert not rows & {tuple(r.tolist()) for r in a.train.X[:200, ::7]}


def test_n_train_subsets_are_balanced_and_nested(no_network):
    small, large = load_mnist(n_train=100, seed=3), load_mnist(n_train=300, seed=3)
    assert len(small.train) == 100
    assert torch.bincount(small.train.y).tolist() == [10] * 10
    small_rows = {tuple(r.tolist()) for r in small.train.X[:, 100:400:5]}
    large_rows = {tuple(r.tolist()) for r in large.train.X[:, 100:400:5]}
    assert small_rows <= large_rows
    assert torch.equal(small.test.X, large.test.X)  # the evaluation data do not depend on n_train


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="n_train=5000 is larger than the 4000"):
        load_mnist(n_train=5000)
    with pytest.raises(ValueError, match="n_train must be an int >= 1, got 0"):
        load_mnist(n_train=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        next(load_digits().train.batches(0))


def test_digits_and_batches(no_network):
    d = load_digits()
    assert d.train.X.shape[1] == 64 and d.n_classes == 10
    batches = list(d.train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(y) for _, y in batches) == len(d.train)
    assert torch.equal(torch.sort(torch.cat([y for _, y in batches])).values, torch.sort(d.train.y).values)


def test_surnames_balanced_unambiguous_and_encoded(no_network):
    d = load_surnames()
    assert d.n_classes == 8 and d.vocab[0] == "<pad>"
    counts = torch.bincount(torch.cat([d.train.y, d.val.y, d.test.y]))
    assert counts.min() == counts.max()
    assert d.train.X.dtype == torch.int64 and (d.train.X[:, 0] != 0).all()
    decoded = {"".join(d.vocab[i] for i in row if i) for row in d.train.X.tolist()}
    assert len(decoded) == len(d.train)  # no duplicates inside the split
    names_by_label = {}
    for row, label in zip(d.train.X.tolist(), d.train.y.tolist(), strict=True):
        names_by_label.setdefault("".join(d.vocab[i] for i in row if i), set()).add(label)
    assert all(len(labels) == 1 for labels in names_by_label.values())
    assert torch.equal(load_surnames(seed=2).train.X, load_surnames(seed=2).train.X)


def test_surnames_bad_countries():
    with pytest.raises(ValueError, match="at least 2 countries"):
        load_surnames(countries=["de_DE"])
    with pytest.raises(ValueError, match="unknown faker locale"):
        load_surnames(countries=["de_DE", "xx_XX"])


def test_encode_names_pads_and_marks_unknown():
    vocab = ["<pad>", "<unk>", "a", "b"]
    out = encode_names(["ab", "b?"], vocab, max_len=3)
    assert out.tolist() == [[2, 3, 0], [3, 1, 0]]


def test_toy_regression_has_a_gap():
    s = toy_regression(n_points=300, gap=(-1.0, 1.0), seed=0)
    assert s.X.shape == (300, 1) and s.y.shape == (300, 1)
    assert not ((s.X > -1) & (s.X < 1)).any()
    residual = s.y - toy_function(s.X)
    assert abs(residual.std().item() - 0.1) < 0.03
    with pytest.raises(ValueError, match="gap"):
        toy_regression(gap=(-5.0, 0.0))
