"""The first-symbol memory task: labels, lengths, padding, determinism and input checks."""

import pytest
import torch

from dropout_course.data import first_symbol_sequences


def test_label_is_first_symbol_and_filler_elsewhere():
    data = first_symbol_sequences(n_train=300, n_val=50, n_test=50, n_classes=4, n_filler=6, seed=3)
    for split in (data.train, data.val, data.test):
        X, y = split.X, split.y
        assert X.dtype == torch.int64 and X.shape[1] == 40
        assert torch.equal(y, X[:, 0] - 1)
        rest = X[:, 1:]
        assert ((rest == 0) | ((rest >= 5) & (rest <= 10))).all(), "label symbols appear only at position 0"
    assert len(data.train) == 300 and len(data.val) == 50 and len(data.test) == 50
    assert data.n_classes == 4 and len(data.vocab) == 1 + 4 + 6


def test_lengths_in_range_and_right_padded():
    data = first_symbol_sequences(n_train=500, n_val=10, n_test=10, min_len=20, max_len=40, seed=0)
    X = data.train.X
    lengths = (X != 0).sum(1)
    assert lengths.min() >= 20 and lengths.max() <= 40
    assert lengths.min() < 25 and lengths.max() > 35, "lengths should spread over the range"
    steps = torch.arange(X.shape[1])
    assert ((X != 0) == (steps < lengths[:, None])).all(), "padding only after the last real token"


def test_classes_roughly_balanced_and_deterministic():
    a = first_symbol_sequences(n_train=2000, n_val=10, n_test=10, seed=1)
    b = first_symbol_sequences(n_train=2000, n_val=10, n_test=10, seed=1)
    c = first_symbol_sequences(n_train=2000, n_val=10, n_test=10, seed=2)
    assert torch.equal(a.train.X, b.train.X) and not torch.equal(a.train.X, c.train.X)
    counts = torch.bincount(a.train.y, minlength=4).float() / 2000
    assert (counts - 0.25).abs().max() < 0.05  # binomial sd ~0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"min_len": 30, "max_len": 20}, "max_len"),
        ({"n_train": 0}, "n_train"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        first_symbol_sequences(**kwargs)
