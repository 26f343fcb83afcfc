"""The report's figures, each returned as PNG bytes (matplotlib Agg; brain maps with nilearn)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import auc, confusion_matrix, roc_curve


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _scores(pred: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Binary view: positive = the last class (the patients, by the usual sorting); scores = its
    probability."""
    positive = classes[-1]
    return (pred["label"] == positive).to_numpy(int), pred[f"prob_{positive}"].to_numpy(float)


def roc(runs: Sequence[tuple[str, pd.DataFrame]], classes: Sequence[str]) -> bytes:
    """ROC per fold (thin) and pooled out-of-fold (thick) for the first run; pooled for the others."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    name, first = runs[0]
    for (_, _), fold in first.groupby(["repeat", "fold"]):
        y, s = _scores(fold, classes)
        if len(set(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, color="tab:blue", alpha=0.25, lw=1)
    for i, (label, pred) in enumerate(runs):
        y, s = _scores(pred, classes)
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(
            fpr,
            tpr,
            lw=2.2 if i == 0 else 1.6,
            color=f"C{i}",
            label=f"{label} pooled (AUC {auc(fpr, tpr):.2f})",
        )
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC, positive class '{classes[-1]}' (thin: {name}'s folds)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def learning_curves(histories: dict[str, pd.DataFrame]) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (fold, h) in enumerate(sorted(histories.items())):
        c = f"C{i % 10}"
        if "train_loss" in h:
            axes[0].plot(h["epoch"], h["train_loss"], color=c, ls="--", lw=1)
        if "val_loss" in h:
            axes[0].plot(h["epoch"], h["val_loss"], color=c, lw=1.3, label=fold)
        if "val_balanced_accuracy" in h:
            axes[1].plot(h["epoch"], h["val_balanced_accuracy"], color=c, lw=1.3)
    axes[0].set_title("loss (dashed: training, solid: validation)", fontsize=9)
    axes[1].set_title("validation balanced accuracy", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    if len(histories) <= 12:
        axes[0].legend(fontsize=6, ncol=2)
    return _png(fig)


def confusion(pred: pd.DataFrame, classes: Sequence[str]) -> bytes:
    m = confusion_matrix(pred["label"], pred["prediction"], labels=list(classes))
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < m.max() / 2 else "white")
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("pooled out-of-fold predictions", fontsize=9)
    return _png(fig)


def brain_map(path: Path, background: np.ndarray, title: str, *, top_percent: float = 20.0) -> bytes:
    """Sagittal, coronal and axial slices through the map's peak, over the cohort's mean image.

    Voxels below the map's top ``top_percent`` % (of its non-zero voxels) are transparent, so the
    anatomy shows where the map is weak. Grids are RAS (as prepared), so no reorientation is needed.
    """
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    positive = data[data > 0]
    cut = np.percentile(positive, 100 - top_percent) if positive.size else np.inf
    peak = np.unravel_index(int(np.argmax(np.where(np.isfinite(data), data, -np.inf))), data.shape)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3), facecolor="black")
    vmax = float(np.nanmax(data)) if positive.size else 1.0
    # One grey scale for the whole background volume: scaled per slice, a slice at the edge of the
    # brain (nearly constant background) came out white.
    finite = background[np.isfinite(background)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    for ax, axis, name in zip(axes, range(3), ("sagittal", "coronal", "axial"), strict=True):
        index: list[int | slice] = [slice(None)] * 3
        index[axis] = int(peak[axis])
        bg = background[tuple(index)].T
        fg = data[tuple(index)].T
        ax.imshow(bg, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6))
        if positive.size:  # an all-zero map (e.g. a class nobody was predicted as) has no overlay
            ax.imshow(np.ma.masked_less(fg, cut), cmap="hot", origin="lower", vmin=cut, vmax=vmax, alpha=0.85)
        ax.set_title(f"{name} {index[axis]}", color="white", fontsize=8)
        ax.set_axis_off()
    what = f"top {top_percent:g}% of voxels" if positive.size else "zero everywhere"
    fig.suptitle(f"{title} ({what})", color="white", fontsize=10)
    return _png(fig)


def heatmap(matrix: pd.DataFrame, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(matrix.columns), 1.0 + 0.7 * len(matrix)))
    values = matrix.to_numpy(dtype=float)
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)
