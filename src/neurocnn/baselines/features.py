"""Feature matrices of a prepared cohort for the baselines: voxels, a user's table of regional
measures, regional means of an atlas, and deep features of a pre-trained 2D CNN.

Each function returns one row per manifest row (the cache order) and the names of the columns.
Every feature here is computed from one subject's own data, without labels and without fitting
anything across subjects, so computing them once for the whole cohort lets nothing of a test fold
into training; whatever is learnt (masks from the data, imputation, scaling) is a pipeline step,
fitted within each training fold (`neurocnn.baselines.estimators`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neurocnn.data.cache import PreparedCohort
from neurocnn.errors import NeuroCNNError

CHUNK = 16
"""Subjects read from the memory-mapped cache at a time."""


def _modality_indices(cache: PreparedCohort, modalities: Sequence[str] | None) -> list[int]:
    if not modalities:
        return list(range(cache.shape[1]))
    unknown = [m for m in modalities if m not in cache.modalities]
    if unknown:
        raise NeuroCNNError(
            f"{cache.path}: no modality {', '.join(unknown)}; the cohort has {', '.join(cache.modalities)}"
        )
    return [cache.modalities.index(m) for m in modalities]


def _grid_affine(cache: PreparedCohort, what: str) -> np.ndarray:
    affine = cache.affine
    if affine is None:
        raise NeuroCNNError(
            f"{cache.path}: subjects are on different grids; {what} needs one common grid "
            "(prepare the cohort with --shape so that every subject shares it)"
        )
    return affine


def voxel_features(
    cache: PreparedCohort, *, modalities: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened voxels (N, V) float32 and their flat positions in the (C, X, Y, Z) volume.

    Voxels that are zero in every subject of the cohort are left out: they are zero in every
    training fold as well, so no model could use them and no result changes; the matrix shrinks
    to about a third for a brain-masked cohort.
    """
    channels = _modality_indices(cache, modalities)
    data = cache.array()
    n = data.shape[0]
    vol = int(np.prod(data.shape[2:]))
    keep = np.zeros(len(channels) * vol, dtype=bool)
    for start in range(0, n, CHUNK):
        block = np.asarray(data[start : start + CHUNK, channels]).reshape(-1, keep.size)
        keep |= (block != 0).any(axis=0)
    X = np.empty((n, int(keep.sum())), dtype=np.float32)
    for start in range(0, n, CHUNK):
        block = np.asarray(data[start : start + CHUNK, channels]).reshape(-1, keep.size)
        X[start : start + len(block)] = block[:, keep]
    flat = np.flatnonzero(keep)
    if channels != list(range(data.shape[1])):
        # positions in the selected channels → positions in the full (C, X, Y, Z) volume
        flat = np.asarray(channels)[flat // vol] * vol + flat % vol
    return X, flat


def mask_on_grid(cache: PreparedCohort, path: str | Path) -> np.ndarray:
    """A user's brain mask (NIfTI, non-zero = brain) on the cohort's grid, through the affines."""
    from neurocnn.atlases import resample_labels_to

    path = Path(path)
    if not path.is_file():
        raise NeuroCNNError(f"mask {path}: file not found; give a NIfTI brain mask, `auto` or `none`")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise NeuroCNNError(f"mask {path}: not a readable NIfTI image ({exc})") from exc
    if data.ndim != 3:
        raise NeuroCNNError(f"mask {path}: expected a 3D image, got shape {data.shape}")
    binary = nib.Nifti1Image((data > 0).astype(np.uint8), img.affine)
    on_grid = resample_labels_to(binary, (cache.shape[2:], _grid_affine(cache, "a mask file")))
    mask = np.asarray(on_grid.dataobj) > 0
    if not mask.any():
        raise NeuroCNNError(
            f"mask {path}: no voxel of the mask falls on the cohort's grid; is it in the same space "
            "(e.g. MNI) as the prepared images?"
        )
    return mask


def table_features(
    manifest: pd.DataFrame,
    path: str | Path,
    *,
    id_column: str = "participant_id",
    columns: Sequence[str] | None = None,
    names: dict[str, str] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Regional measures from a CSV/TSV table, joined to the manifest by participant.

    Parameters
    ----------
    path
        A table with one row per participant (e.g. ``regional_volumes.csv`` of IXI).
    id_column
        The participant column of the table.
    columns
        The feature columns (default: every numeric column except the id).
    names
        Readable names of columns (e.g. MUSE label 702 → ICV), for importances and plots.

    Returns
    -------
    (X, feature names, ignored columns)
        X has one row per manifest row and NaN where the table has no value (imputed within each
        training fold); non-numeric columns are ignored unless named in ``columns``.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroCNNError(f"feature table {path}: file not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    table = pd.read_csv(path, sep=sep, dtype={id_column: str})
    if id_column not in table.columns:
        raise NeuroCNNError(
            f"feature table {path}: no column {id_column!r} (columns: "
            f"{', '.join(map(str, table.columns[:8]))}…); give the participant column with --id-column"
        )
    duplicated = table[id_column][table[id_column].duplicated()].unique().tolist()
    if duplicated:
        raise NeuroCNNError(
            f"feature table {path}: participants listed more than once: {', '.join(duplicated[:5])}; "
            "give one row per participant"
        )
    ignored: list[str] = []
    if columns:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise NeuroCNNError(f"feature table {path}: no column(s) {', '.join(missing)}")
        chosen = list(columns)
        bad = [c for c in chosen if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            raise NeuroCNNError(f"feature table {path}: column(s) {', '.join(bad)} are not numeric")
    else:
        chosen = [c for c in table.columns if c != id_column and pd.api.types.is_numeric_dtype(table[c])]
        ignored = [str(c) for c in table.columns if c != id_column and c not in chosen]
    if not chosen:
        raise NeuroCNNError(f"feature table {path}: no numeric feature column")
    ids = manifest["participant_id"].astype(str)
    labelled = manifest["label_index"].to_numpy() >= 0
    absent = sorted(set(ids[labelled]) - set(table[id_column]))
    if absent:
        raise NeuroCNNError(
            f"feature table {path}: {len(absent)} labelled participant(s) of the cohort have no row "
            f"({', '.join(absent[:5])}); add them or leave them out of the cohort"
        )
    X = table.set_index(id_column).reindex(ids.to_numpy())[chosen].to_numpy(dtype=np.float64)
    return X, unique_names([str(c) for c in chosen], names or {}), ignored


def unique_names(columns: Sequence[str], names: dict[str, str]) -> list[str]:
    """Readable names of columns; a name given to several columns (MUSE calls both label 82 and
    derived region 417 ``Frontal_WM_L``) gets its column in brackets, so that names stay unique."""
    readable = [str(names.get(c, c)) for c in columns]
    counts = pd.Series(readable).value_counts()
    return [f"{r} [{c}]" if counts[r] > 1 else r for r, c in zip(readable, columns, strict=True)]


def atlas_features(
    cache: PreparedCohort,
    atlas: str | Path,
    labels: str | Path | None = None,
    *,
    modalities: Sequence[str] | None = None,
    strategy: str = "mean",
) -> tuple[np.ndarray, list[str]]:
    """Mean (or ``strategy``) value of each atlas region in each modality, with nilearn's
    `NiftiLabelsMasker` on the prepared grid.

    ``atlas`` is a bundled atlas name (`neurocnn.atlases.available_atlases`) or the path of a
    NIfTI label map with its label table ``labels``; it is resampled onto the cohort's grid
    through the affines (nearest neighbour). Regions that no voxel of the grid falls into are
    left out. Columns are named ``<modality>:<region>``.
    """
    from nilearn.maskers import NiftiLabelsMasker

    from neurocnn.atlases import load_atlas, resample_labels_to

    affine = _grid_affine(cache, "atlas features")
    img, table = load_atlas(atlas, labels)
    on_grid = resample_labels_to(img, (cache.shape[2:], affine))
    present = sorted(int(v) for v in np.unique(np.asarray(on_grid.dataobj)) if v != 0)
    if not present:
        raise NeuroCNNError(
            f"atlas {atlas}: no region falls on the cohort's grid; is the cohort in the atlas' space (MNI)?"
        )
    masker = NiftiLabelsMasker(
        on_grid, strategy=strategy, resampling_target=None, standardize=None, reports=False
    )
    masker.fit()
    channels = _modality_indices(cache, modalities)
    data = cache.array()
    blocks = []
    for c in channels:
        rows = []
        for start in range(0, data.shape[0], CHUNK):
            chunk = np.asarray(data[start : start + CHUNK, c], dtype=np.float32)
            rows.append(masker.transform(nib.Nifti1Image(np.moveaxis(chunk, 0, -1), affine)))
        blocks.append(np.concatenate(rows))
    ids = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
    if ids != present:
        raise NeuroCNNError(f"atlas {atlas}: nilearn's regions {ids[:5]}… differ from the label map's")
    region_names = [table.get(v, f"region {v}") for v in ids]
    names = [f"{cache.modalities[c]}:{r}" for c in channels for r in region_names]
    return np.concatenate(blocks, axis=1), names


def deep2d_features(
    cache: PreparedCohort,
    weights: str | Path,
    *,
    backbone: str = "vgg19",
    slice_axis: int = 2,
    pool: str = "mean",
    modalities: Sequence[str] | None = None,
    batch_size: int = 32,
    threads: int | None = 1,
) -> tuple[np.ndarray, list[str]]:
    """Deep features of a pre-trained 2D CNN per subject (S1), one block per modality.

    Uses `neurocnn.models.features2d.extract_deep_features` (slices along ``slice_axis`` through
    the network, spatially averaged last convolutional maps, pooled over slices). ``threads``:
    PyTorch's intra-op threads meanwhile (None: unchanged; on the busy 2-core development machine
    one thread was 30× faster than two for small slices).
    """
    import torch

    from neurocnn.models.features2d import extract_deep_features

    channels = _modality_indices(cache, modalities)
    data = cache.array()
    blocks = []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for c in channels:
            rows = [
                extract_deep_features(
                    np.array(data[start : start + CHUNK, c], dtype=np.float32),
                    weights=weights,
                    backbone=backbone,
                    slice_axis=slice_axis,
                    pool=pool,
                    batch_size=batch_size,
                )
                for start in range(0, data.shape[0], CHUNK)
            ]
            blocks.append(np.concatenate(rows))
    finally:
        torch.set_num_threads(before)
    X = np.concatenate(blocks, axis=1)
    per = X.shape[1] // len(channels)
    names = [f"{cache.modalities[c]}:{backbone}_{j}" for c in channels for j in range(per)]
    return X, names
