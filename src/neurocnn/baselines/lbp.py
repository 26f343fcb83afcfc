"""Local binary patterns per slice, pooled into histograms per subject (S4's LBP + SVM baseline).

Each 2D slice (along ``axis``) of each modality goes through scikit-image's
`local_binary_pattern` with ``points`` neighbours on a circle of ``radius`` voxels (S4: 8 and 1).
The codes of all slices are counted over the brain (non-zero voxels of the brain-masked cohort), or
separately over each region of an atlas, and the counts are turned into frequencies, so that brain
size does not enter the features; one subject gives one vector of ``n_bins × regions × modalities``.

scikit-image recommends integer images: each volume is quantised to 256 grey levels between its
0.5th and 99.5th brain percentiles before the patterns are computed. The patterns compare a voxel
with its neighbours, whose diagonal ones scikit-image interpolates bilinearly, so a linear rescale
keeps the codes except where rounding or clipping changes an order; a non-linear one does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurocnn.data.cache import PreparedCohort
from neurocnn.errors import NeuroCNNError

METHODS = ("uniform", "nri_uniform", "default", "ror")
LEVELS = 256


def n_bins(points: int, method: str) -> int:
    """Number of distinct codes of a method (scikit-image's conventions)."""
    if method == "uniform":
        return points + 2
    if method == "nri_uniform":
        return points * (points - 1) + 3
    if method in ("default", "ror"):
        return 2**points
    raise NeuroCNNError(f"LBP method {method!r} is not supported; choose one of {', '.join(METHODS)}")


def _quantise(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    values = volume[brain]
    if values.size == 0:
        return np.zeros(volume.shape, dtype=np.uint8)
    lo, hi = np.percentile(values, [0.5, 99.5])
    scaled = (volume - lo) / max(float(hi - lo), 1e-12) * (LEVELS - 1)
    return np.clip(np.rint(scaled), 0, LEVELS - 1).astype(np.uint8)


def lbp_histograms(
    volume: np.ndarray,
    *,
    points: int = 8,
    radius: float = 1,
    method: str = "uniform",
    axis: int = 2,
    regions: np.ndarray | None = None,
    region_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Code frequencies of one 3D volume: (n_regions, n_bins), rows summing to 1 (0 if empty).

    Parameters
    ----------
    volume
        A 3D image; its non-zero voxels are the brain.
    regions, region_ids
        An integer label volume on the same grid and the labels to count separately; without
        them one histogram over the whole brain.
    """
    from skimage.feature import local_binary_pattern

    if volume.ndim != 3:
        raise NeuroCNNError(f"LBP needs a 3D volume, got shape {volume.shape}")
    if axis not in (0, 1, 2):
        raise NeuroCNNError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    bins = n_bins(points, method)
    brain = volume != 0
    image = _quantise(np.asarray(volume, dtype=np.float64), brain)
    codes = np.empty(volume.shape, dtype=np.int32)
    for k in range(volume.shape[axis]):
        index = [slice(None)] * 3
        index[axis] = k
        codes[tuple(index)] = local_binary_pattern(image[tuple(index)], points, radius, method=method)
    masks = [brain] if regions is None else [brain & (regions == r) for r in region_ids or []]
    out = np.zeros((len(masks), bins))
    for i, m in enumerate(masks):
        counts = np.bincount(codes[m].ravel(), minlength=bins)[:bins].astype(np.float64)
        total = counts.sum()
        out[i] = counts / total if total else counts
    return out


def lbp_features(
    cache: PreparedCohort,
    *,
    points: int = 8,
    radius: float = 1,
    method: str = "uniform",
    axis: int = 2,
    atlas: str | None = None,
    labels: str | None = None,
    modalities: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """LBP histograms of every subject of a prepared cohort, (N, features), and feature names.

    With ``atlas`` (a bundled atlas name or a NIfTI label map with its table ``labels``) the
    histograms are per region, resampled onto the cohort's grid through the affines.
    """
    from neurocnn.baselines.features import _grid_affine, _modality_indices

    bins = n_bins(points, method)
    channels = _modality_indices(cache, modalities)
    regions, region_ids, region_names = None, None, ["brain"]
    if atlas:
        from neurocnn.atlases import load_atlas, resample_labels_to

        img, table = load_atlas(atlas, labels)
        on_grid = resample_labels_to(img, (cache.shape[2:], _grid_affine(cache, "regional LBP")))
        regions = np.asarray(on_grid.dataobj)
        region_ids = sorted(int(v) for v in np.unique(regions) if v != 0)
        if not region_ids:
            raise NeuroCNNError(f"atlas {atlas}: no region falls on the cohort's grid")
        region_names = [table.get(r, f"region {r}") for r in region_ids]
    data = cache.array()
    rows = []
    for i in range(data.shape[0]):
        per_modality = [
            lbp_histograms(
                np.asarray(data[i, c], dtype=np.float32),
                points=points,
                radius=radius,
                method=method,
                axis=axis,
                regions=regions,
                region_ids=region_ids,
            ).ravel()
            for c in channels
        ]
        rows.append(np.concatenate(per_modality))
    names = [f"{cache.modalities[c]}:{r}:lbp{b}" for c in channels for r in region_names for b in range(bins)]
    return np.stack(rows), names
