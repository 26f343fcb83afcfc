"""Agreement between attribution maps: the real Dice of thresholded maps and rank correlation.

S3 compared methods with a "Dice" that counted agreeing background voxels too (the share of
voxels on which two binary maps agree), which approaches 1 for any two small masks in a large
volume (their 0.93–0.94). Here ``dice`` is 2|A∩B| / (|A| + |B|); the seed's quantity is available as
:func:`voxel_agreement`, named for what it is, so the two can be compared.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.group import binarize

__all__ = ["DEFAULT_THRESHOLDS", "agreement_table", "dice", "rank_correlation", "voxel_agreement"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    "gradcam": 0.65,
    "hirescam": 0.65,
    "perturbation": 0.65,
    "guided_backprop": 0.04,
}
"""S3's thresholds on maps scaled to [0, 1] (HiResCAM takes Grad-CAM's); other methods 0.5."""


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise NeuroCNNError(f"maps of different shapes: {a.shape} and {b.shape}")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean maps; NaN when both are empty."""
    a, b = _pair(a, b)
    a, b = a.astype(bool), b.astype(bool)
    size = int(a.sum()) + int(b.sum())
    if size == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / size


def voxel_agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of voxels (of ``mask``) on which two boolean maps agree: what the S3 code called Dice."""
    a, b = _pair(a, b)
    same = a.astype(bool) == b.astype(bool)
    if mask is not None:
        same = same[np.asarray(mask, bool)]
    return float(same.mean()) if same.size else float("nan")


def rank_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rank correlation of two maps over the voxels of ``mask`` (all voxels by default).

    NaN when either map is constant there.
    """
    a, b = _pair(a, b)
    if mask is not None:
        inside = np.asarray(mask, bool)
        a, b = a[inside], b[inside]
    a, b = a.ravel(), b.ravel()
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def agreement_table(
    maps: Mapping[str, np.ndarray],
    *,
    thresholds: Mapping[str, float] | None = None,
    top_percent: float | None = None,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Pairwise agreement of named maps (e.g. the group maps of each method).

    Parameters
    ----------
    maps
        ``{method: (*spatial) map}``, all on one grid.
    thresholds
        Per-method thresholds on maps scaled to [0, 1] (default :data:`DEFAULT_THRESHOLDS`, 0.5 for
        other names); ignored when ``top_percent`` is given.
    top_percent
        Binarise every map at its top x % voxels (of ``mask``) instead.
    mask
        Voxels compared (e.g. the brain); all by default.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``method_a, method_b, threshold_a, threshold_b, voxels_a, voxels_b, dice,
        voxel_agreement, spearman``.
    """
    chosen = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    binary, used = {}, {}
    for name, m in maps.items():
        if top_percent is not None:
            binary[name] = binarize(m, top_percent=top_percent, mask=mask)
            used[name] = f"top {top_percent:g}%"
        else:
            t = float(chosen.get(name, 0.5))
            binary[name] = binarize(m, t, mask=mask)
            used[name] = f"{t:g}"
    rows = []
    for a, b in itertools.combinations(maps, 2):
        rows.append(
            {
                "method_a": a,
                "method_b": b,
                "threshold_a": used[a],
                "threshold_b": used[b],
                "voxels_a": int(binary[a].sum()),
                "voxels_b": int(binary[b].sum()),
                "dice": dice(binary[a], binary[b]),
                "voxel_agreement": voxel_agreement(binary[a], binary[b], mask),
                "spearman": rank_correlation(maps[a], maps[b], mask),
            }
        )
    columns = [
        "method_a",
        "method_b",
        "threshold_a",
        "threshold_b",
        "voxels_a",
        "voxels_b",
        "dice",
        "voxel_agreement",
        "spearman",
    ]
    return pd.DataFrame(rows, columns=columns)
