"""Group maps and their files: per-class means, the conjoined map (S3), thresholds, NIfTI output.

- A group map is the mean of the subjects' maps of one class (S3). With ``normalise=True`` each
  subject's map is first divided by its maximum, so that every subject weighs the same (Grad-CAM
  and gradient magnitudes differ by orders of magnitude between subjects).
- The conjoined map is the sum of the class maps (S3: "the sum of these masks voxel-wise").
- Thresholds apply to maps scaled to [0, 1] by their maximum (:func:`scale_unit`); S3 used 0.65 for
  Grad-CAM and Meaningful Perturbation and 0.04 for guided backprop. A top-x % threshold keeps the
  x % highest voxels instead.
- Maps are written as float32 NIfTI images on the prepared grid, with the cache's affine, so they
  overlay on the inputs and on any atlas resampled through the affines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from neurocnn.errors import NeuroCNNError

__all__ = [
    "binarize",
    "conjoined_map",
    "group_maps",
    "load_map",
    "save_map",
    "save_subject_maps",
    "scale_unit",
]


def _array(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        return maps.detach().cpu().numpy()
    return np.asarray(maps)


def scale_unit(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """The map divided by its maximum (an all-zero or negative map is returned unchanged)."""
    a = _array(values).astype(np.float32, copy=True)
    peak = float(np.nanmax(a)) if a.size else 0.0
    if peak > 0:
        a /= peak
    return a


def binarize(
    values: np.ndarray | torch.Tensor,
    threshold: float | None = None,
    *,
    top_percent: float | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean map: ``scale_unit(map) >= threshold``, or the ``top_percent`` % highest voxels.

    Parameters
    ----------
    threshold
        On the map scaled to [0, 1] by its maximum.
    top_percent
        Instead of a threshold: keep this percentage of voxels (of ``mask`` when given), highest
        values first.
    mask
        Voxels that may be selected (e.g. the brain); others are always False.
    """
    a = scale_unit(values)
    inside = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    if inside.shape != a.shape:
        raise NeuroCNNError(f"binarize: mask shape {inside.shape} differs from map shape {a.shape}")
    if (threshold is None) == (top_percent is None):
        raise NeuroCNNError("binarize: give either threshold or top_percent")
    if top_percent is not None:
        if not 0 < top_percent <= 100:
            raise NeuroCNNError(f"top_percent must lie in (0, 100], got {top_percent}")
        values_in = a[inside]
        if values_in.size == 0:
            return np.zeros(a.shape, bool)
        k = max(1, round(values_in.size * top_percent / 100))
        cut = np.partition(values_in, values_in.size - k)[values_in.size - k]
        return (a >= cut) & inside
    return (a >= float(threshold)) & inside  # type: ignore[arg-type]


def group_maps(
    maps: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    *,
    normalise: bool = True,
) -> dict[str, np.ndarray]:
    """Mean map of each class.

    Parameters
    ----------
    maps
        (N, *spatial) subject maps.
    labels
        (N,) class index of each subject (true or predicted; the caller decides).
    classes
        Class names, indexed by the labels.
    normalise
        Divide each subject's map by its maximum first.

    Returns
    -------
    dict
        ``{class name: (*spatial) float32 mean map}`` for every class with at least one subject.
    """
    a = _array(maps).astype(np.float32, copy=False)
    y = np.asarray(labels).astype(int)
    if len(a) != len(y):
        raise NeuroCNNError(f"group_maps: {len(a)} maps but {len(y)} labels")
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(classes):
        members = np.flatnonzero(y == k)
        if len(members) == 0:
            continue
        total = np.zeros(a.shape[1:], np.float64)
        for i in members:
            total += scale_unit(a[i]) if normalise else a[i]
        out[str(name)] = (total / len(members)).astype(np.float32)
    return out


def conjoined_map(groups: Mapping[str, np.ndarray]) -> np.ndarray:
    """S3's conjoined map: the voxel-wise sum of the class maps."""
    if not groups:
        raise NeuroCNNError("conjoined_map: no class maps")
    return np.sum([np.asarray(g, np.float32) for g in groups.values()], axis=0).astype(np.float32)


def save_map(values: np.ndarray | torch.Tensor, affine: np.ndarray, path: Path | str) -> Path:
    """Write a 3D (or 4D) map as float32 NIfTI with the prepared grid's affine."""
    path = Path(path)
    a = _array(values).astype(np.float32)
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise NeuroCNNError(f"save_map: expected a 4x4 affine, got {affine.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(a, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def save_subject_maps(
    maps: np.ndarray | torch.Tensor, affine: np.ndarray, path: Path | str, table: pd.DataFrame
) -> Path:
    """Write subject maps as one 4D NIfTI (volume i = row i of ``table``) and ``table`` beside it
    as TSV (same name, ``.tsv``)."""
    a = _array(maps)
    if len(a) != len(table):
        raise NeuroCNNError(f"save_subject_maps: {len(a)} maps but {len(table)} table rows")
    path = save_map(np.moveaxis(a, 0, -1), affine, path)
    table.to_csv(_tsv_beside(path), sep="\t", index=False)
    return path


def _tsv_beside(path: Path) -> Path:
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return path.with_name(name + ".tsv")


def load_map(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A map written by :func:`save_map`: (data, affine)."""
    path = Path(path)
    if not path.is_file():
        raise NeuroCNNError(f"map {path}: file not found")
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine)
