"""fit()/evaluate(): learning happens, seeds reproduce, early stopping, the caller's RNG is untouched."""

import pytest
import torch

from dropout_course.data import Split
from dropout_course.models import MLP, MLPConfig
from dropout_course.training import History, evaluate, fit, seeded


def tiny_problem(seed=0, n=200):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 10, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    return Split(X[: n // 2], y[: n // 2]), Split(X[n // 2 :], y[n // 2 :])


def new_model(seed=0, p=0.2):
    with seeded(seed):
        return MLP(MLPConfig(in_features=10, hidden=(32,), n_classes=2, hidden_dropout=p))


def test_loss_decreases_and_history_is_complete():
    train, val = tiny_problem()
    history = fit(new_model(), train, val, epochs=15, lr=1e-2, seed=0, progress=False)
    assert isinstance(history, History) and history.epoch == list(range(1, 16))
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_acc[-1] > 0.85
    assert len(history.seconds) == 15 and history.total_seconds > 0
    frame = history.to_frame()
    assert list(frame.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]


def test_same_seed_same_history_and_caller_rng_untouched():
    train, val = tiny_problem()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = fit(new_model(), train, val, epochs=3, seed=7, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = fit(new_model(), train, val, epochs=3, seed=7, progress=False)
    c = fit(new_model(), train, val, epochs=3, seed=8, progress=False)
    assert a.val_loss == b.val_loss and a.train_loss == b.train_loss
    assert a.train_loss != c.train_loss


def test_early_stopping_and_restore_best():
    train, val = tiny_problem(n=60)
    model = new_model(p=0.0)
    history = fit(
        model, train, val, epochs=300, lr=5e-2, patience=3, restore_best=True, seed=0, progress=False
    )
    assert history.stopped_early and len(history.epoch) < 300
    assert history.epoch[-1] - history.best_epoch == 3
    restored = evaluate(model, val)["loss"]
    assert restored == pytest.approx(min(history.val_loss), rel=1e-5)


def test_evaluate_restores_mode_and_mse():
    train, _ = tiny_problem()
    model = new_model()
    model.train()
    evaluate(model, train)
    assert model.training
    regression = torch.nn.Linear(10, 1)
    out = evaluate(regression, (train.X, train.y.float().unsqueeze(1)), loss="mse")
    assert out["loss"] > 0 and out["accuracy"] != out["accuracy"]  # NaN accuracy for regression


def test_bad_arguments():
    train, _ = tiny_problem()
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        fit(new_model(), train, epochs=0, progress=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(new_model(), train, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="need a validation split"):
        fit(new_model(), train, patience=2, progress=False)
    with pytest.raises(TypeError, match="train must be a Split or an \\(X, y\\) tuple"):
        fit(new_model(), [1, 2], progress=False)
    with pytest.raises(ValueError, match="optimizer must be"):
        fit(new_model(), train, optimizer="lbfgs", progress=False)


def test_max_norm_bounds_every_unit_and_rejects_bad_c():
    import pytest
    import torch
    from torch import nn

    from dropout_course.training import fit, max_norm_

    torch.manual_seed(0)
    X, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    fit(model, (X, y), epochs=3, lr=1.0, optimizer="sgd", max_norm=0.5, progress=False, seed=0)
    for layer in (model[0], model[3]):
        assert layer.weight.norm(dim=1).max().item() <= 0.5 + 1e-6
    unconstrained = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    fit(unconstrained, (X, y), epochs=3, lr=1.0, optimizer="sgd", progress=False, seed=0)
    assert unconstrained[0].weight.norm(dim=1).max().item() > 0.5  # the control: the constraint did the work
    small = nn.Linear(3, 2)
    before = small.weight.detach().clone()
    max_norm_(small, 100.0)
    assert torch.equal(small.weight.detach(), before)  # rows inside the ball are left alone
    for bad in (0, -1.0, True, "3"):
        with pytest.raises(ValueError, match="positive number"):
            fit(model, (X, y), epochs=1, max_norm=bad, progress=False)
