"""Figures of a transfer study (matplotlib, Agg backend: no display needed). Each function returns PNG bytes.

* :func:`heatmap`: the transfer matrix at one eps.
* :func:`curves`: mean transfer success against a swept value (eps or gamma), one line per attack, error bars
  = std over seeds.
* :func:`example_grid`: clean image, amplified perturbation, adversarial image, with the labels predicted.
* :func:`perturbation_gallery`: learned perturbations (rows) shown at a common scale, one column per panel.
* :func:`interval_bars`: horizontal bars of means with their intervals and a dashed reference line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["curves", "example_grid", "heatmap", "interval_bars", "perturbation_gallery"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
            label: str = "success", axes: tuple[str, str] | None = None, vmax: float = 1.0) -> bytes:
    """A rows x cols heatmap of rates in ``[0, vmax]`` (NaN cells blank), annotated in percent (one decimal when
    ``vmax`` is below 0.5, e.g. shares of features); ``label`` names the colour bar, ``axes`` the (row, column)
    axes."""
    h = max(2.2, 0.38 * len(rows) + 1.4)
    w = max(4.0, 0.85 * len(cols) + 2.8)
    fig, ax = plt.subplots(figsize=(w, h))
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.0f}" if vmax >= 0.5 else f"{100 * v:.1f}", ha="center", va="center",
                        fontsize=7, color="white" if v > 0.6 * vmax else "black")
    ax.set_title(title, fontsize=10)
    if axes is not None:
        ax.set_ylabel(axes[0])
        ax.set_xlabel(axes[1])
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label=label)
    return _png(fig)


def curves(series: dict[str, dict[str, list[tuple[float, float, float | None]]]], xlabel: str, title: str,
           baselines: dict[str, dict[str, float]] | None = None) -> bytes:
    """Success curves: ``series[panel][line] = [(x, mean, std or None), ...]``, one panel per source.

    ``baselines[panel][name]`` draws a dashed horizontal line (an attack that does not depend on x).
    """
    panels = list(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, pts in series[panel].items():
            pts = sorted(pts)
            xs = [p[0] for p in pts]
            ys = [100 * p[1] for p in pts]
            err = [100 * (p[2] or 0.0) for p in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3.5, capsize=2.5, lw=1.4, label=name)
        for name, y in ((baselines or {}).get(panel) or {}).items():
            ax.axhline(100 * y, ls="--", lw=1, color="grey")
            ax.annotate(name, (ax.get_xlim()[0], 100 * y), fontsize=7, color="grey", va="bottom")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean transfer success (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _show(img: torch.Tensor) -> np.ndarray:
    a = img.detach().cpu().float().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def example_grid(x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[str], preds: Sequence[Sequence[str]],
                 model_names: Sequence[str], eps: float, title: str) -> bytes:
    """Rows of (clean, perturbation amplified to fill ``[0, 1]`` at +-eps, adversarial).

    Args:
        x: clean images ``(k, C, H, W)``.
        x_adv: adversarial images, same shape.
        labels: true class names, one per image.
        preds: ``preds[i][j]``: model ``j``'s predicted class name on adversarial image ``i``.
        model_names: the models whose predictions are listed (the source first).
        eps: the budget used to amplify the perturbation (``0.5 + delta / (2 eps)``).
        title: the figure's title.
    """
    k = x.shape[0]
    fig, axes = plt.subplots(k, 3, figsize=(7.2, 2.0 * k + 0.4), squeeze=False)
    grey = x.shape[1] == 1
    scale = 2 * eps if eps > 0 else 1.0
    for i in range(k):
        delta = (x_adv[i] - x[i]) / scale + 0.5
        panels = [(x[i], f"clean: {labels[i]}"), (delta, f"perturbation x{1 / scale:.1f}"),
                  (x_adv[i], "adversarial")]
        for j, (img, cap) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(_show(img), cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(cap, fontsize=7)
        lines = [f"{m}: {p}" for m, p in zip(model_names, preds[i], strict=True)]
        axes[i][2].set_xlabel("\n".join(lines[:4]), fontsize=6.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def perturbation_gallery(rows: Sequence[tuple[str, Sequence[torch.Tensor | None]]], columns: Sequence[str],
                         eps: float, title: str) -> bytes:
    """A grid of perturbations ``(C, H, W)`` in ``[-eps, eps]``, each shown as ``0.5 + delta / (2 eps)`` (mid grey
    is zero); ``rows[i] = (label, panels)``, a ``None`` panel is left blank. A row whose label starts with
    ``"image"`` holds clean images in ``[0, 1]``, shown as they are."""
    nr, nc = len(rows), len(columns)
    fig, axes = plt.subplots(nr, nc, figsize=(1.35 * nc + 1.6, 1.45 * nr + 0.6), squeeze=False)
    scale = 2 * eps if eps > 0 else 1.0
    for i, (label, panels) in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            t = panels[j] if j < len(panels) else None
            if t is not None:
                img = t if label.startswith("image") else t / scale + 0.5
                grey = t.shape[0] == 1
                ax.imshow(_show(img), cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
        axes[i][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def interval_bars(labels: Sequence[str], means: Sequence[float], lows: Sequence[float | None],
                  highs: Sequence[float | None], title: str, xlabel: str, reference: float | None = None,
                  reference_label: str = "", colours: Sequence[str] | None = None) -> bytes:
    """Horizontal bars of rates in ``[0, 1]`` (shown in percent) with interval whiskers where known, top to bottom
    in the order given; ``reference`` draws a dashed vertical line (a control's mean)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * n + 1.2))
    ys = np.arange(n)[::-1]
    m = np.array([100 * v for v in means])
    lo = np.array([100 * (v if a is None else a) for v, a in zip(means, lows, strict=True)])
    hi = np.array([100 * (v if h is None else h) for v, h in zip(means, highs, strict=True)])
    ax.barh(ys, m, color=list(colours) if colours else "tab:blue", alpha=0.8)
    ax.errorbar(m, ys, xerr=[np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)], fmt="none", ecolor="black",
                capsize=2.5, lw=1)
    if reference is not None:
        ax.axvline(100 * reference, ls="--", lw=1, color="grey")
        ax.annotate(reference_label, (100 * reference, ys[0] + 0.6), fontsize=7, color="grey", ha="left")
    ax.set_yticks(ys, labels=list(labels), fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
