"""One plotting style for the whole course: curves with spread bands, sweeps, masks."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["use_course_style", "learning_curves", "sweep_plot", "show_masks", "show_images", "band"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def use_course_style() -> None:
    """Apply the course's matplotlib style (call once per notebook)."""
    plt.rcParams.update(
        {
            "figure.figsize": (7.0, 4.0),
            "figure.dpi": 90,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
            "legend.frameon": False,
            "font.size": 10,
        }
    )


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def band(ax, x, values, label: str | None = None, color=None, linestyle="-"):
    """Plot the mean of ``values`` (seeds x points) against ``x`` with a +-1 standard deviation band."""
    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    (line,) = ax.plot(x, mean, label=label, color=color, linestyle=linestyle)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def learning_curves(
    df, metrics: Sequence[str] = ("train_loss", "val_loss"), ax=None, title: str | None = None
):
    """Per-epoch curves of each config in a tidy DataFrame, mean over seeds with a +-1 std band.

    The first metric is drawn solid, the others dashed, in the config's colour.
    """
    ax = _axes(ax)
    styles = ["-", "--", ":", "-."]
    for k, (config, group) in enumerate(df.groupby("config", sort=False)):
        color = PALETTE[k % len(PALETTE)]
        for metric, style in zip(metrics, styles, strict=False):
            sub = group[group.metric == metric]
            if sub.empty:
                continue
            table = sub.pivot_table(index="seed", columns="epoch", values="value")
            band(ax, table.columns.to_numpy(), table.to_numpy(), f"{config} {metric}", color, style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(", ".join(metrics))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def sweep_plot(runs, x: str, metrics: Sequence[str], ax=None, title: str | None = None, logx: bool = False):
    """Final metrics (one row per run, e.g. from ``experiments.final``) against a swept column ``x``,
    mean with a +-1 standard deviation band over seeds."""
    ax = _axes(ax)
    for metric in metrics:
        table = runs.pivot_table(index="seed", columns=x, values=metric)
        band(ax, table.columns.to_numpy(dtype=float), table.to_numpy(), metric)
    ax.set_xlabel(x)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def show_images(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cmap="gray",
    vmin=None,
    vmax=None,
    size: float = 1.3,
):
    """A grid of 2-D images (array-like of shape (K, H, W)); returns the figure."""
    images = np.asarray(images)
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    return fig


def show_masks(image, masked: Sequence, titles: Sequence[str] | None = None, size: float = 1.6):
    """An image beside versions of it under dropout masks (dropped pixels in red), in one row.

    ``image`` is (H, W); ``masked`` is a sequence of (H, W) arrays, the image after dropout.
    """
    image = np.asarray(image, dtype=float)
    panels = [image] + [np.asarray(m, dtype=float) for m in masked]
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size * 1.1))
    top = max(float(np.max(p)) for p in panels) or 1.0
    for k, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        ax.imshow(panel, cmap="gray", vmin=0, vmax=top)
        if k > 0:
            dropped = np.ma.masked_where(~((panel == 0) & (image != 0)), np.ones_like(panel))
            ax.imshow(dropped, cmap="autumn", alpha=0.7, vmin=0, vmax=1)
        ax.axis("off")
        ax.set_title(("input" if k == 0 else (titles[k - 1] if titles else f"mask {k}")), fontsize=8)
    fig.tight_layout()
    return fig
