"""Interactive ipywidgets demos of dropout, with a static figure wherever no widget front-end runs.

Here, as everywhere in the course, ``p`` is the probability of DROPPING a unit; kept units are rescaled
by ``1 / (1 - p)`` (inverted dropout).

* :func:`mask_explorer`            a ``p`` slider and a "resample" button over MNIST digits and a hidden
                                   layer's activations: which units are kept, and their rescaled values.
* :func:`learning_curve_explorer`  choose ``p`` (and the training-set size) in a sweep the notebook ran,
                                   see train/validation curves with their spread over seeds.
* :func:`mc_dropout_explorer`      MC-dropout predictive mean and +-2 std band of 1-D regressors, with
                                   sliders for the number of samples ``T`` and for ``p``.

How they display. Each function builds an :class:`Explorer` (an ``ipywidgets.VBox``: controls, a
summary line and an ``Output`` holding the figure), displays it, and returns it. The displayed output
is ONE mime bundle holding both the widget view and a static PNG of the default state:

* JupyterLab / Notebook / VS Code with ipywidgets render the live widget (its renderer outranks PNG);
* ``jupyter nbconvert --execute``, nbval, GitHub and other static viewers keep and show the PNG.

So ``mask_explorer(images)`` as the last line of a cell shows the explorer once (the returned object is
not displayed a second time in the cell that created it), and ``explorer = mask_explorer(images)``
shows it too. Outside IPython (scripts, tests) nothing is displayed; drive the returned explorer
through ``explorer.controls[name].value`` and read ``explorer.output.outputs`` or ``explorer.figure``.

Figures are drawn on ``matplotlib.figure.Figure`` objects (not pyplot), so the inline backend never
shows a stray copy, and are put into the ``Output`` as PNG data, which works with or without a kernel.
"""

from __future__ import annotations

import base64
import html
import io
import numbers
from collections.abc import Callable, Mapping

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

__all__ = ["Explorer", "mask_explorer", "learning_curve_explorer", "mc_dropout_explorer"]

_DROPPED_RGBA = (0.85, 0.1, 0.1, 0.85)  # dropped units are painted red in every figure


# --------------------------------------------------------------------------- the widget container


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _current_request():
    """An id of the cell being executed (parent message id, else execution count), or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return None
    ip = get_ipython()
    if ip is None:
        return None
    parent = ip.get_parent() if hasattr(ip, "get_parent") else None
    msg_id = (parent or {}).get("header", {}).get("msg_id")
    return msg_id or ("count", ip.execution_count)


class Explorer(widgets.VBox):
    """A course demo: ``controls`` (name -> widget), a ``summary`` line and an ``output`` with the figure.

    ``render()`` redraws the figure from the current control values (the controls call it on change);
    ``figure`` is the last figure drawn and ``png`` its PNG bytes. Displaying the explorer gives a mime
    bundle with the widget view AND ``image/png``, so static renderings keep a figure.
    """

    def __init__(
        self, controls: Mapping[str, widgets.Widget], draw: Callable[[Explorer], tuple[Figure, str]], **kw
    ):
        self.controls = dict(controls)
        self.state: dict = {}
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self._draw = draw
        self.figure: Figure | None = None
        self.png: bytes = b""
        self._shown_in = None
        row = widgets.HBox([c for c in self.controls.values()])
        super().__init__([row, self.summary, self.output], **kw)
        self.render()

    def render(self) -> None:
        """Redraw the figure and the summary line from the current control values."""
        fig, summary = self._draw(self)
        self.figure, self.png = fig, _png(fig)
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": summary},
                "metadata": {},
            },
        )
        self.summary.value = f"<code>{html.escape(summary)}</code>"  # after the figure: a sign it is there

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["image/png"] = base64.b64encode(self.png).decode("ascii")
        data["text/plain"] = self.summary_text
        return data

    @property
    def summary_text(self) -> str:
        """The summary line as plain text."""
        return html.unescape(self.summary.value.removeprefix("<code>").removesuffix("</code>"))

    def show(self) -> None:
        """Display the explorer (widget view + static PNG) in the current cell, once."""
        from IPython.display import display

        self._shown_in = _current_request()
        display(self._repr_mimebundle_(), raw=True)

    def _ipython_display_(self):
        # The creating function already displayed it in this cell: do not show it twice when it is also
        # the cell's last expression. In any later cell, display it again (a new view of the same widget).
        request = _current_request()
        if request is not None and request == self._shown_in:
            return
        self.show()


def _finish(explorer: Explorer) -> Explorer:
    if _current_request() is not None:
        explorer.show()
    return explorer


# --------------------------------------------------------------------------- input checks


def _as_array(x, name: str) -> np.ndarray:
    """A float NumPy copy of a tensor or array-like ``x``; TypeError naming ``name`` otherwise."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, possibly requiring grad
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and x and hasattr(x[0], "detach"):
        raise TypeError(
            f"{name} is a {type(x).__name__} of {len(x)} tensors (one per layer, as MLP.features(x) returns); "
            f"pass one layer's tensor, e.g. {name}[0]"
        )
    if isinstance(x, (str, bytes, Mapping)) or x is None:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") from err
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_p(p, name: str = "p") -> float:
    from .layers import check_probability  # torch is already loaded wherever this is called

    return check_probability(p, name)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _images(images) -> np.ndarray:
    arr = _as_array(images, "images")
    if arr.ndim == 4 and arr.shape[1] == 1:  # (K, 1, H, W) -> (K, H, W)
        arr = arr[:, 0]
    elif arr.ndim == 2 and arr.shape[1] == 784:  # flattened MNIST (K, 784)
        arr = arr.reshape(-1, 28, 28)
    if arr.ndim != 3 or len(arr) == 0:
        raise ValueError(
            f"images must have shape (K, 28, 28) (or (K, 784)), got shape {tuple(np.shape(images))}"
        )
    if len(arr) > 16:
        raise ValueError(f"images holds {len(arr)} images; pass at most 16 (e.g. images[:8])")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"images must hold pixels in [0, 1], got values in [{arr.min():.3g}, {arr.max():.3g}]"
        )
    return arr


# --------------------------------------------------------------------------- mask explorer


def _rgb(values, lo: float, hi: float, dropped, cmap: str = "gray", gap: int = 0) -> np.ndarray:
    """RGB image of ``values`` on the colour scale [lo, hi] with ``dropped`` cells painted red.

    With ``gap``, ``values`` is a stack (K, H, W) laid side by side with ``gap`` white columns between.
    """
    from matplotlib import colormaps

    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = colormaps[cmap](scaled)[..., :3]
    rgb[dropped] = _DROPPED_RGBA[:3]
    if gap:
        k, h, w = values.shape
        sheet = np.ones((h, k * (w + gap) - gap, 3))
        for j in range(k):
            sheet[:, j * (w + gap) : j * (w + gap) + w] = rgb[j]
        rgb = sheet
    return rgb


def _draw_masks(images, acts, p: float, u_img, u_act) -> tuple[Figure, str, dict]:
    """Figure of images and activations under the keep masks ``u >= p``, scaled by 1/(1-p).

    One RGB picture per row (a few axes, not one per digit) keeps a redraw fast.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    keep_img = u_img >= p  # P(keep) = 1 - p; the same u for every p, so raising p only drops more units
    shown = images * keep_img * scale
    k = len(images)
    top = max(scale, 1.0)  # one colour scale for both rows: kept pixels get brighter as p grows
    dropped_img = (~keep_img) & (images > 0)
    fig = Figure(figsize=(max(1.0 * k, 6.0) + 1.0, 2.6 + (2.6 if acts is not None else 0.0)))
    rows = 3 if acts is not None else 2
    grid = fig.add_gridspec(
        rows,
        3,
        height_ratios=[1, 1, 2.2][:rows],
        width_ratios=[1, 1, 0.04],
        hspace=0.35,
        wspace=0.15,
        left=0.07,
        right=0.88,
        top=0.9,
        bottom=0.1 if acts is not None else 0.03,
    )
    for r, (panel, label) in enumerate(((images, "input x"), (shown, "x·m/(1-p)"))):
        ax = fig.add_subplot(grid[r, :2])
        ax.imshow(_rgb(panel, 0.0, top, dropped_img if r else np.zeros_like(dropped_img), gap=3))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=8)
        ax.grid(False)
        ax.spines[:].set_visible(False)
    fig.colorbar(
        ScalarMappable(Normalize(0.0, top), "gray"), cax=fig.add_subplot(grid[:2, 2]), label="pixel value"
    )
    n_on = int((images > 0).sum())
    kept_on = int(((images > 0) & keep_img).sum())
    parts = [
        f"p = {p:.2f}",
        f"scale 1/(1-p) = {scale:.2f}" if p < 1 else "p = 1: everything dropped, output 0",
        f"ink pixels kept {kept_on}/{n_on} ({100 * kept_on / max(n_on, 1):.0f}%)",
    ]
    state = {"keep_images": keep_img, "images_out": shown}
    if acts is not None:
        keep_act = u_act >= p
        acts_out = acts * keep_act * scale
        lo = min(0.0, float(acts.min()), float(acts_out.min()))
        hi = max(float(acts.max()), float(acts_out.max()), 1e-12)
        cmap = "RdBu_r" if lo < 0 else "viridis"
        if lo < 0:
            lo, hi = -max(-lo, hi), max(-lo, hi)
        titles = ("activations h", "h·m/(1-p)  (dropped in red)")
        for c, (panel, title) in enumerate(zip((acts, acts_out), titles, strict=True)):
            ax = fig.add_subplot(grid[2, c])
            dropped = ~keep_act if c else np.zeros_like(keep_act)
            ax.imshow(_rgb(panel, lo, hi, dropped, cmap), aspect="auto", interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("hidden unit", fontsize=8)
            if c == 0:
                ax.set_ylabel("example", fontsize=8)
            ax.grid(False)
        fig.colorbar(
            ScalarMappable(Normalize(lo, hi), cmap), cax=fig.add_subplot(grid[2, 2]), label="activation"
        )
        parts.append(f"units kept {int(keep_act.sum())}/{keep_act.size}")
        parts.append(f"mean h {acts.mean():.3f} -> {acts_out.mean():.3f} after dropout")
        state.update(keep_activations=keep_act, activations_out=acts_out)
    fig.suptitle(f"dropout mask at p = {p:.2f} (dropped units in red)", fontsize=10)
    return fig, " · ".join(parts), state


def mask_explorer(images, activations=None, p=0.5, seed=0) -> Explorer:
    r"""A ``p`` slider and a "resample" button showing a dropout mask on digits and hidden activations.

    ``p`` is the probability of DROPPING each unit. A unit is kept when its uniform draw ``u >= p``
    (probability ``1 - p``) and kept values are multiplied by ``1 / (1 - p)``:
    :math:`\tilde x = x \odot m / (1 - p)`, :math:`m_i \sim \mathrm{Bernoulli}(1 - p)`. The draws are
    fixed until "resample", so raising ``p`` drops more of the same units instead of a fresh mask.

    Args:
        images: K <= 16 images, (K, 28, 28) (or (K, 1, 28, 28) / (K, 784)), tensor or array in [0, 1].
        activations: optional hidden-layer activations (K', H) (e.g. ``MLP.features(x)``).
        p: initial drop probability in [0, 1].
        seed: seed of the ``numpy.random.Generator`` that draws the masks (resample draws the next ones).

    Returns:
        The :class:`Explorer`; ``controls["p"]`` (FloatSlider), ``controls["resample"]`` (Button);
        ``state`` holds ``keep_images``, ``images_out`` (and ``keep_activations``, ``activations_out``).

    Examples:
        >>> from dropout_course.data import load_mnist
        >>> digits = load_mnist(flatten=False).train.X[:6, 0]
        >>> explorer = mask_explorer(digits, p=0.3)
        >>> explorer.controls["p"].value = 0.6  # redraws
    """
    imgs = _images(images)
    acts = None
    if activations is not None:
        acts = _as_array(activations, "activations")
        if acts.ndim != 2 or acts.size == 0:
            raise ValueError(f"activations must have shape (K, H), got shape {acts.shape}")
    p = _check_p(p)
    rng = np.random.default_rng(_check_seed(seed))
    draws = {}

    def resample(_=None):
        draws["img"] = rng.random(imgs.shape)
        draws["act"] = rng.random(acts.shape) if acts is not None else None

    resample()
    slider = widgets.FloatSlider(
        value=p,
        min=0.0,
        max=1.0,
        step=0.05,
        description="p (drop)",
        continuous_update=True,
        readout_format=".2f",
    )
    button = widgets.Button(description="resample", icon="refresh", tooltip="draw a new dropout mask")

    def draw(explorer):
        fig, text, state = _draw_masks(imgs, acts, float(slider.value), draws["img"], draws["act"])
        explorer.state = state
        return fig, text

    explorer = Explorer({"p": slider, "resample": button}, draw)
    slider.observe(lambda change: explorer.render(), names="value")

    def on_resample(_):
        resample()
        explorer.render()

    button.on_click(on_resample)
    explorer.resample = lambda: on_resample(None)
    return _finish(explorer)


# --------------------------------------------------------------------------- learning curves


_CURVE_COLUMNS = ("config", "seed", "epoch", "metric", "value")


def _check_frame(df):
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame from experiments.sweep_p, got {type(df).__name__}")
    missing = [c for c in _CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"df lacks columns {missing}; expected the tidy frame of experiments.sweep_p "
            f"(columns {list(_CURVE_COLUMNS)} and p), got columns {list(df.columns)}"
        )
    panels = [
        (m, v) for m, v in (("train_loss", "val_loss"), ("train_acc", "val_acc")) if m in set(df.metric)
    ]
    if not panels:
        raise ValueError(
            f"df has no per-epoch train_loss/train_acc rows; its metrics are {sorted(set(df.metric))}"
        )
    return panels


def _draw_curves(df, panels, key: str, choice, size, baseline) -> tuple[Figure, str]:
    from .plots import band, learning_curves

    sel = df[df[key] == choice]
    base = df[df[key] == baseline] if baseline is not None and baseline != choice else None
    if size is not None:
        sel = sel[sel.n_train == size]
        base = base[base.n_train == size] if base is not None else None
    fig = Figure(figsize=(5.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    label = f"{key} = {choice}" + (f", n_train = {size}" if size is not None else "")
    parts = [label, f"{sel.seed.nunique()} seeds"]
    for ax, metrics in zip(axes, panels, strict=True):
        if base is not None:
            for metric, style in zip(metrics, ("-", "--"), strict=True):
                table = base[base.metric == metric].pivot_table(index="seed", columns="epoch", values="value")
                if not table.empty:
                    band(
                        ax,
                        table.columns.to_numpy(),
                        table.to_numpy(),
                        f"{key}={baseline} {metric}",
                        "0.6",
                        style,
                    )
        curves = sel.assign(config=f"{key}={choice}")
        learning_curves(curves, metrics, ax=ax)
        ax.set_ylabel(metrics[0].split("_")[1])
        ax.legend(fontsize=7)
        last = sel[sel.epoch == sel.epoch.max()]
        tr = last[last.metric == metrics[0]].set_index("seed").value
        va = last[last.metric == metrics[1]].set_index("seed").value
        gap = (va - tr).dropna()
        if len(gap):
            spread = f" ± {gap.std(ddof=1):.3f}" if len(gap) > 1 else ""
            parts.append(f"final {metrics[1]} - {metrics[0]} = {gap.mean():+.3f}{spread}")
    fig.suptitle(f"train (solid) and validation (dashed), mean ± 1 std over seeds: {label}", fontsize=10)
    fig.tight_layout()
    return fig, " · ".join(parts)


def learning_curve_explorer(df) -> Explorer:
    """Choose ``p`` (and the training-set size) in a sweep and see its train/validation curves over seeds.

    ``p`` is the probability of DROPPING a unit. No training happens here: ``df`` holds results the
    notebook computed.

    Args:
        df: the tidy DataFrame of :func:`dropout_course.experiments.sweep_p` (columns ``config, seed,
            epoch, metric, value, p``) or of ``sweep_train_size`` (with ``n_train``; without ``p`` the
            choice is over ``config``). Per-epoch metrics ``train_loss/val_loss`` (and ``train_acc/val_acc``
            if present) are drawn, mean and +-1 std band over seeds.

    Returns:
        The :class:`Explorer`; ``controls["p"]`` (or ``controls["config"]``) and, with ``n_train``,
        ``controls["n_train"]`` (SelectionSliders); ``controls["baseline"]`` (Checkbox: draw the first
        choice, e.g. ``p = 0``, in grey for comparison).
    """
    panels = _check_frame(df)
    key = "p" if "p" in df.columns else "config"
    choices = sorted(df[key].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    if not choices:
        raise ValueError(f"df has no values in column {key!r}")
    controls = {
        key: widgets.SelectionSlider(
            options=choices,
            value=choices[-1] if len(choices) > 1 else choices[0],
            description=f"{key} (drop)" if key == "p" else key,
        )
    }
    if "n_train" in df.columns:
        sizes = sorted(int(n) for n in df.n_train.dropna().unique())
        controls["n_train"] = widgets.SelectionSlider(options=sizes, value=sizes[-1], description="n_train")
    controls["baseline"] = widgets.Checkbox(
        value=len(choices) > 1, description=f"compare with {key}={choices[0]}"
    )

    def draw(explorer):
        size = controls["n_train"].value if "n_train" in controls else None
        baseline = choices[0] if controls["baseline"].value else None
        return _draw_curves(df, panels, key, controls[key].value, size, baseline)

    explorer = Explorer(controls, draw)
    for control in controls.values():
        control.observe(lambda change: explorer.render(), names="value")
    return _finish(explorer)


# --------------------------------------------------------------------------- MC dropout


def _mc_samples(model, x, T: int, seed: int):
    """``T`` MC-dropout passes of ``x`` as a (T, G) NumPy array (dropout on, every mode restored after)."""
    from .layers import DropConnectLinear
    from .uncertainty import mc_predict, mc_predict_loop

    # DropConnect masks the weights once per batch: its T samples need T separate passes.
    shared = any(isinstance(m, DropConnectLinear) for m in model.modules())
    out = (mc_predict_loop if shared else mc_predict)(model, x, T=T, seed=seed)  # (T, G, 1)
    return out.reshape(T, len(x)).double().cpu().numpy()


def _check_mc_models(models) -> None:
    """``models`` must be a non-empty ``{p: nn.Module}`` whose modules each contain a dropout module."""
    from torch import nn

    from .layers import is_dropout_module

    if not isinstance(models, Mapping) or not models:
        raise TypeError(f"models must be a non-empty dict {{p: nn.Module}}, got {models!r:.80}")
    for p, model in models.items():
        _check_p(p, name=f"models key {p!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{p!r}] must be a torch.nn.Module, got {type(model).__name__}")
        if not any(is_dropout_module(m) for m in model.modules()):
            raise ValueError(
                f"models[{p!r}] ({type(model).__name__}) has no dropout layers: MC dropout needs some"
            )


def _check_regression_split(train) -> tuple[np.ndarray, np.ndarray]:
    """``train.X`` and ``train.y`` of a 1-D regression split as (N, 1) arrays."""
    if not (hasattr(train, "X") and hasattr(train, "y")):
        raise TypeError(f"train must be a dropout_course.data.Split with X and y, got {type(train).__name__}")
    X, y = _as_array(train.X, "train.X"), _as_array(train.y, "train.y")
    if X.ndim != 2 or X.shape[1] != 1 or y.shape != X.shape:
        raise ValueError(f"train.X and train.y must both have shape (N, 1), got {X.shape} and {y.shape}")
    return X, y


def _check_mc_grid(x_grid, max_T):
    """The (G, 1) float grid (detached) and ``max_T`` as an int, after checking both."""
    import torch

    if not isinstance(x_grid, torch.Tensor):
        raise TypeError(f"x_grid must be a torch.Tensor of shape (G, 1), got {type(x_grid).__name__}")
    if x_grid.dim() != 2 or x_grid.shape[1] != 1 or len(x_grid) < 2:
        raise ValueError(f"x_grid must have shape (G, 1) with G >= 2, got shape {tuple(x_grid.shape)}")
    if isinstance(max_T, bool) or not isinstance(max_T, numbers.Integral) or max_T < 2:
        raise ValueError(f"max_T must be an int >= 2, got {max_T!r}")
    return x_grid.detach().float(), int(max_T)


def mc_dropout_explorer(models, train, x_grid, max_T=200) -> Explorer:
    r"""Sliders for the number of MC samples ``T`` and the drop probability ``p`` of 1-D regressors.

    For the model trained with drop probability ``p`` (the probability of DROPPING a unit), dropout stays
    ON at prediction time and ``T`` stochastic passes give the predictive mean and spread
    :math:`\hat\mu(x) = \frac1T\sum_t f_t(x)`, :math:`\hat\sigma^2(x) = \frac1T\sum_t (f_t(x)-\hat\mu(x))^2`,
    drawn as the mean and a :math:`\pm 2\hat\sigma` band over the training points. ``max_T`` passes are
    drawn once per model (one batched pass, fixed seed) and the ``T`` slider uses the first ``T``, so the
    estimate visibly settles as ``T`` grows. Dropout modules are in train mode only while sampling.
    Each grid point gets its own masks (as in :func:`dropout_course.uncertainty.mc_predict`), so the
    mean and spread per point are exact MC estimates, but sample ``t`` across the grid is not one network.

    Args:
        models: ``{p: trained nn.Module}`` mapping (N, 1) inputs to (N, 1) outputs, with dropout layers.
        train: a :class:`dropout_course.data.Split` with ``X`` and ``y`` of shape (N, 1).
        x_grid: (G, 1) tensor of inputs to predict at.
        max_T: largest number of MC samples (the ``T`` slider's maximum), an int >= 2.

    Returns:
        The :class:`Explorer`; ``controls["T"]`` (IntSlider), ``controls["p"]`` (SelectionSlider);
        ``state`` holds ``mean`` and ``std`` (G,) of the current view.
    """
    _check_mc_models(models)
    X, y = _check_regression_split(train)
    grid, max_T = _check_mc_grid(x_grid, max_T)
    xs = grid[:, 0].cpu().numpy()
    ps = sorted(models)
    cache: dict = {}

    def samples(p):
        if p not in cache:
            model = models[p]
            device = next(iter(model.parameters()), grid).device
            cache[p] = _mc_samples(model, grid.to(device), max_T, seed=0)
        return cache[p]

    controls = {
        "T": widgets.IntSlider(value=min(50, max_T), min=1, max=max_T, description="T (samples)"),
        "p": widgets.SelectionSlider(options=ps, value=ps[-1], description="p (drop)"),
    }

    def draw(explorer):
        T, p = controls["T"].value, controls["p"].value
        s = samples(p)[:T]
        mean, std = s.mean(axis=0), s.std(axis=0)
        explorer.state = {"mean": mean, "std": std, "T": T, "p": p}
        fig = Figure(figsize=(7.0, 4.0), layout="tight")
        ax = fig.subplots()
        ax.fill_between(xs, mean - 2 * std, mean + 2 * std, alpha=0.25, color="#1f77b4", label="mean ± 2 std")
        ax.plot(xs, mean, color="#1f77b4", linewidth=2.0, label=f"MC mean (T = {T})")
        ax.scatter(X[:, 0], y[:, 0], s=8, color="black", alpha=0.6, label="training data", zorder=3)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"MC dropout, p = {p}, T = {T}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        text = (
            f"p = {p} · T = {T} · mean 2·std over the grid {2 * std.mean():.3f}"
            f" · largest 2·std {2 * std.max():.3f} at x = {xs[int(std.argmax())]:.2f}"
        )
        return fig, text

    explorer = Explorer(controls, draw)
    for control in controls.values():
        control.observe(lambda change: explorer.render(), names="value")
    return _finish(explorer)
