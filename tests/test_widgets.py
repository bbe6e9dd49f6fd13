"""Widgets: controls redraw the figure, the numbers shown are right, bad input is named, and a kernel
without a widget front-end still gets a static figure."""

import base64
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient

from dropout_course.data import load_mnist, toy_regression
from dropout_course.models import MLP, MLPConfig
from dropout_course.widgets import Explorer, learning_curve_explorer, mask_explorer, mc_dropout_explorer

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def shown_png(explorer: Explorer) -> bytes:
    """The PNG currently in the explorer's Output widget (what a front-end shows)."""
    (output,) = explorer.output.outputs
    return base64.b64decode(output["data"]["image/png"])


@pytest.fixture(scope="module")
def digits():
    return load_mnist(flatten=False).train.X[:6, 0]  # (6, 28, 28) real digits


# --------------------------------------------------------------------------- light import


def test_import_is_light():
    code = "import sys, dropout_course.widgets; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], f"importing dropout_course.widgets loaded torch/pandas: {out}"


# --------------------------------------------------------------------------- mask explorer


def test_mask_explorer_slider_redraws_and_rescales(digits):
    explorer = mask_explorer(digits, p=0.2, seed=0)
    assert isinstance(explorer, Explorer) and set(explorer.controls) == {"p", "resample"}
    before_png, before_text = shown_png(explorer), explorer.summary_text
    keep_low = explorer.state["keep_images"].copy()
    assert "p = 0.20" in before_text and "1.25" in before_text  # 1 / (1 - 0.2)

    explorer.controls["p"].value = 0.7
    assert shown_png(explorer) != before_png and explorer.png == shown_png(explorer)
    assert "p = 0.70" in explorer.summary_text and "3.33" in explorer.summary_text
    keep_high = explorer.state["keep_images"]
    # The same draws for every p: raising p only drops more units.
    assert not (keep_high & ~keep_low).any()
    # Kept fraction within 5 binomial standard deviations of 1 - p.
    n = keep_high.size
    assert abs(keep_high.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
    # Kept pixels are rescaled by 1 / (1 - p), dropped ones are 0.
    expected = digits.numpy() * keep_high / 0.3
    np.testing.assert_allclose(explorer.state["images_out"], expected, rtol=1e-6)


def test_mask_explorer_resample_and_activations(digits):
    net = MLP(MLPConfig(in_features=784, hidden=(16,), n_classes=10))
    hidden = net.features(digits.reshape(6, -1))[0]  # requires grad: must be accepted
    explorer = mask_explorer(digits, hidden, p=0.5, seed=1)
    keep = explorer.state["keep_activations"].copy()
    assert keep.shape == (6, 16)
    np.testing.assert_allclose(
        explorer.state["activations_out"], hidden.detach().numpy() * keep * 2.0, rtol=1e-6
    )
    png = shown_png(explorer)
    explorer.controls["resample"].click()
    assert (explorer.state["keep_activations"] != keep).any() and shown_png(explorer) != png
    assert "units kept" in explorer.summary_text
    # The seed decides the masks.
    again = mask_explorer(digits, hidden, p=0.5, seed=1)
    assert (again.state["keep_activations"] == keep).all()


def test_mask_explorer_edges(digits):
    everything = mask_explorer(digits, p=1.0)
    assert not everything.state["keep_images"].any() and "everything dropped" in everything.summary_text
    nothing = mask_explorer(digits.reshape(6, 784), p=0.0)  # flattened input accepted
    np.testing.assert_allclose(nothing.state["images_out"], digits.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"p": 1.5}, ValueError, "1.5"),
        ({"p": "0.5"}, TypeError, "'0.5'"),
        ({"seed": -1}, ValueError, "-1"),
        ({"activations": torch.zeros(3)}, ValueError, r"\(3,\)"),
        ({"activations": [torch.zeros(6, 4)]}, TypeError, r"activations\[0\]"),
    ],
)
def test_mask_explorer_bad_arguments(digits, kwargs, error, message):
    with pytest.raises(error, match=message):
        mask_explorer(digits, **kwargs)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(5, 5), ValueError, r"\(5, 5\)"),
        (torch.full((2, 28, 28), 255.0), ValueError, r"\[0, 1\].*255"),
        (torch.zeros(20, 28, 28), ValueError, "20 images"),
        ("digits", TypeError, "str"),
    ],
)
def test_mask_explorer_bad_images(images, error, message):
    with pytest.raises(error, match=message):
        mask_explorer(images)


# --------------------------------------------------------------------------- learning curves


def sweep_frame(with_sizes: bool = False) -> pd.DataFrame:
    """A tidy frame shaped like experiments.sweep_p's (and sweep_train_size's), without training."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (100, 400) if with_sizes else (None,):
        for p in (0.0, 0.5):
            for seed in (0, 1, 2):
                for epoch in range(1, 6):
                    train = 1.0 / epoch
                    val = train + (0.5 - p) * (0.5 if n in (None, 100) else 0.2) + 0.01 * rng.normal()
                    for metric, value in [
                        ("train_loss", train),
                        ("val_loss", val),
                        ("train_acc", 1 - train / 2),
                        ("val_acc", 1 - val / 2),
                    ]:
                        row = {
                            "config": p,
                            "seed": seed,
                            "epoch": epoch,
                            "metric": metric,
                            "value": value,
                            "p": p,
                        }
                        if n is not None:
                            row["n_train"] = n
                        rows.append(row)
                rows.append(
                    {"config": p, "seed": seed, "epoch": 5, "metric": "test_acc", "value": 0.9, "p": p}
                )
    return pd.DataFrame(rows)


def test_learning_curve_explorer_choices_redraw():
    explorer = learning_curve_explorer(sweep_frame())
    assert set(explorer.controls) == {"p", "baseline"}
    assert explorer.controls["p"].options == (0.0, 0.5) and explorer.controls["p"].value == 0.5
    png, text = shown_png(explorer), explorer.summary_text
    assert "p = 0.5" in text and "3 seeds" in text
    explorer.controls["p"].value = 0.0
    assert shown_png(explorer) != png and "p = 0.0" in explorer.summary_text
    # The gap shown is the measured one: val - train loss at the last epoch is ~0.25 for p = 0.
    assert "val_loss - train_loss = +0.2" in explorer.summary_text
    # Two panels (loss, accuracy), each with train and validation curves.
    assert len(explorer.figure.axes) == 2 and len(explorer.figure.axes[0].get_lines()) >= 2
    explorer.controls["p"].value = 0.5
    lines = len(explorer.figure.axes[0].get_lines())
    explorer.controls["baseline"].value = False  # the grey p = 0 reference curves go away
    assert len(explorer.figure.axes[0].get_lines()) == lines - 2


def test_learning_curve_explorer_with_sizes():
    explorer = learning_curve_explorer(sweep_frame(with_sizes=True))
    assert explorer.controls["n_train"].options == (100, 400)
    text = explorer.summary_text
    explorer.controls["n_train"].value = 100
    assert explorer.summary_text != text and "n_train = 100" in explorer.summary_text


def test_learning_curve_explorer_bad_frames():
    with pytest.raises(TypeError, match="DataFrame.*list"):
        learning_curve_explorer([1, 2])
    with pytest.raises(ValueError, match="'value'"):
        learning_curve_explorer(sweep_frame().drop(columns="value"))
    with pytest.raises(ValueError, match="test_acc"):
        learning_curve_explorer(sweep_frame().query("metric == 'test_acc'"))


# --------------------------------------------------------------------------- MC dropout


@pytest.fixture(scope="module")
def regressors():
    torch.manual_seed(0)
    return {
        p: MLP(MLPConfig(in_features=1, hidden=(32,), n_classes=1, hidden_dropout=p)).eval()
        for p in (0.1, 0.5)
    }


def test_mc_dropout_explorer_sliders(regressors):
    train = toy_regression(40)
    grid = torch.linspace(-5, 5, 50).unsqueeze(1)
    explorer = mc_dropout_explorer(regressors, train, grid, max_T=40)
    assert explorer.controls["T"].max == 40 and explorer.controls["p"].value == 0.5
    mean, std = explorer.state["mean"], explorer.state["std"]
    assert mean.shape == std.shape == (50,) and (std > 0).all()
    png = shown_png(explorer)
    explorer.controls["T"].value = 1
    assert (explorer.state["std"] == 0).all() and shown_png(explorer) != png
    explorer.controls["T"].value = 40
    std_high = explorer.state["std"].mean()
    explorer.controls["p"].value = 0.1
    assert explorer.state["std"].mean() < std_high  # less dropout, less spread (same weights scale)
    # Sampling left every module's mode as it was (eval).
    for model in regressors.values():
        assert not any(m.training for m in model.modules())


def test_mc_dropout_explorer_bad_arguments(regressors):
    train, grid = toy_regression(20), torch.linspace(-1, 1, 5).unsqueeze(1)
    plain = {0.5: torch.nn.Linear(1, 1)}
    with pytest.raises(ValueError, match="no dropout"):
        mc_dropout_explorer(plain, train, grid)
    with pytest.raises(ValueError, match="1.5"):
        mc_dropout_explorer({1.5: regressors[0.5]}, train, grid)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        mc_dropout_explorer(regressors, train, grid[:, 0])
    with pytest.raises(ValueError, match="max_T.*1"):
        mc_dropout_explorer(regressors, train, grid, max_T=1)
    with pytest.raises(TypeError, match="dict"):
        mc_dropout_explorer([regressors[0.5]], train, grid)
    with pytest.raises(TypeError, match="ndarray"):
        mc_dropout_explorer(regressors, train, grid.numpy())


# --------------------------------------------------------------------------- display


def test_bundle_has_widget_view_and_static_png(digits):
    bundle = mask_explorer(digits)._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "text/plain" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


def test_kernel_output_holds_one_figure_per_explorer():
    """Executed without a widget front-end (as nbconvert/nbval do), each explorer leaves exactly one
    output that holds both the widget view and a PNG, also when it is the cell's last expression."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch\nfrom dropout_course.widgets import mask_explorer\ndigits = torch.rand(3, 28, 28)"
        ),
        nbformat.v4.new_code_cell("mask_explorer(digits)"),  # displayed by the call, not again as result
        nbformat.v4.new_code_cell("explorer = mask_explorer(digits, p=0.3)"),
        nbformat.v4.new_code_cell("explorer"),  # a later cell shows it again
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    for cell in nb.cells[1:]:
        assert [o.output_type for o in cell.outputs] == ["display_data"], cell.outputs
        data = cell.outputs[0].data
        assert WIDGET_MIME in data and base64.b64decode(data["image/png"]).startswith(b"\x89PNG")


def test_mc_dropout_explorer_dropconnect_uses_separate_passes():
    from dropout_course.layers import DropConnectLinear

    torch.manual_seed(0)
    net = torch.nn.Sequential(DropConnectLinear(1, 16, 0.3), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()
    explorer = mc_dropout_explorer(
        {0.3: net}, toy_regression(20), torch.linspace(-2, 2, 9).unsqueeze(1), max_T=20
    )
    assert (explorer.state["std"] > 0).any() and not any(m.training for m in net.modules())
