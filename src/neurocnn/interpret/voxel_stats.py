"""Voxel-wise two-sample t-test between groups with FDR correction (S4, Fig. 1).

Per voxel inside a mask: Student's t-test (equal variances, as SPM's two-sample t-test; Welch's test
with ``equal_var=False``) of group 1 against group 0, two-sided p-values and Benjamini–Hochberg
q-values over the tested voxels. Positive t means higher values in group 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.group import save_map

__all__ = ["VoxelTest", "voxelwise_ttest"]


@dataclass
class VoxelTest:
    """Maps of a voxel-wise test (NaN outside the mask)."""

    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    mask: np.ndarray
    alpha: float

    @property
    def significant(self) -> np.ndarray:
        return np.nan_to_num(self.q, nan=1.0) < self.alpha

    def save(self, folder: Path | str, affine: np.ndarray, prefix: str = "ttest") -> list[Path]:
        """Write ``<prefix>_t``, ``_q`` and ``_significant`` NIfTI maps (on the inputs' grid)."""
        folder = Path(folder)
        return [
            save_map(np.nan_to_num(self.t), affine, folder / f"{prefix}_t.nii.gz"),
            save_map(np.nan_to_num(self.q, nan=1.0), affine, folder / f"{prefix}_q.nii.gz"),
            save_map(self.significant.astype(np.float32), affine, folder / f"{prefix}_significant.nii.gz"),
        ]


def voxelwise_ttest(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    equal_var: bool = True,
    alpha: float = 0.05,
    chunk: int = 200_000,
) -> VoxelTest:
    """Voxel-wise t-test of group 1 vs group 0 with FDR (BH) correction.

    Parameters
    ----------
    images
        (N, *spatial) one value per subject and voxel (e.g. grey-matter maps, or attribution maps);
        may be a memory map.
    labels
        (N,) 0/1 group of each subject.
    mask
        Voxels tested; default: voxels that are non-zero in at least one subject.
    chunk
        Voxels processed at a time (bounds memory for large cohorts).
    """
    y = np.asarray(labels).astype(int)
    if set(np.unique(y)) != {0, 1}:
        raise NeuroCNNError(f"voxelwise_ttest needs labels 0 and 1, got {sorted(set(y.tolist()))}")
    if len(y) != len(images):
        raise NeuroCNNError(f"voxelwise_ttest: {len(images)} images but {len(y)} labels")
    spatial = tuple(images.shape[1:])
    flat = np.asarray(images).reshape(len(images), -1)
    if mask is None:
        inside = np.zeros(flat.shape[1], bool)
        for row in flat:
            inside |= row != 0
    else:
        inside = np.asarray(mask, bool).reshape(-1)
        if inside.size != flat.shape[1]:
            raise NeuroCNNError(f"voxelwise_ttest: mask shape {np.shape(mask)} differs from {spatial}")
    index = np.flatnonzero(inside)
    t = np.full(flat.shape[1], np.nan)
    p = np.full(flat.shape[1], np.nan)
    for start in range(0, len(index), chunk):
        cols = index[start : start + chunk]
        block = flat[:, cols].astype(np.float64)
        res = stats.ttest_ind(block[y == 1], block[y == 0], axis=0, equal_var=equal_var)
        t[cols], p[cols] = res.statistic, res.pvalue
    q = np.full_like(p, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        q[tested] = stats.false_discovery_control(p[tested], method="bh")
    return VoxelTest(
        t.reshape(spatial), p.reshape(spatial), q.reshape(spatial), inside.reshape(spatial), alpha
    )
