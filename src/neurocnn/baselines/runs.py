"""The four baselines as functions that write run folders (`neurocnn baseline KIND`).

Each one computes its features and hands them, with its pipeline and grid, to
`neurocnn.baselines.cv_run.run_baseline`: the split table (a CNN run's, a saved table, or a new
stratified k-fold with the CNN runs' defaults), the nested cross-validation and the run folder.

>>> from neurocnn.baselines import CVOptions, run_svm                # doctest: +SKIP
>>> run_svm("cache/ixi_3mm", "runs/svm", CVOptions(splits="runs/mrinet"))   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurocnn.baselines import estimators as E
from neurocnn.baselines.cv_run import CVOptions, open_cohort, run_baseline
from neurocnn.baselines.features import (
    atlas_features,
    deep2d_features,
    mask_on_grid,
    table_features,
    voxel_features,
)
from neurocnn.baselines.lbp import lbp_features
from neurocnn.baselines.runfolder import COEFFICIENT, GAIN
from neurocnn.data.cache import PreparedCohort
from neurocnn.errors import NeuroCNNError

__all__ = ["KINDS", "CVOptions", "run_baseline", "run_deep2d", "run_lbp", "run_regional", "run_svm"]

KINDS = ("svm", "lbp", "regional", "deep2d")


def run_svm(
    cache: PreparedCohort | str | Path | None,
    out: Path | str,
    options: CVOptions | None = None,
    *,
    mask: str | Path | None = "auto",
    mask_fraction: float = 0.5,
    modalities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """SVM-RBF on flattened voxels with standardisation (S3); C and the RBF width by grid search.

    ``mask``: ``"auto"`` keeps voxels non-zero in ≥ ``mask_fraction`` of each training set's
    subjects, a NIfTI path gives a brain mask (resampled onto the grid), ``None``/``"none"`` keeps
    every voxel that is non-zero in any training subject of each fit.
    """
    options = options or CVOptions()
    cohort = open_cohort(cache, options)
    X, positions = voxel_features(cohort, modalities=modalities)
    if mask in (None, "none"):
        # the voxels non-zero in a training subject: one non-zero only in test subjects is left out
        step, described = E.VoxelMask(min_fraction=0.0), "none"
    elif str(mask) == "auto":
        if not 0 < mask_fraction <= 1:
            raise NeuroCNNError(f"--mask-fraction {mask_fraction} must be in (0, 1]")
        step, described = E.VoxelMask(min_fraction=mask_fraction), f"auto (non-zero in ≥ {mask_fraction:g})"
    else:
        grid_mask = mask_on_grid(cohort, mask)
        vol = grid_mask.size
        step = E.VoxelMask(mask=grid_mask.ravel()[positions % vol])
        described = str(Path(mask).resolve())
    estimator = E.svm_pipeline(mask=step, seed=options.seed)
    grid = E.parse_grid(options.grid, E.svm_grid(), estimator)
    features = {"type": "voxels", "mask": described, "modalities": modalities or cohort.modalities}
    return run_baseline(
        X,
        None,
        cohort,
        out,
        baseline="svm",
        name="svm_voxels",
        estimator=estimator,
        grid=grid,
        features=features,
        options=options,
    )


def run_lbp(
    cache: PreparedCohort | str | Path | None,
    out: Path | str,
    options: CVOptions | None = None,
    *,
    points: int = 8,
    radius: float = 1,
    method: str = "uniform",
    axis: int = 2,
    atlas: str | None = None,
    labels: str | None = None,
    modalities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Local binary patterns per slice (S4: 8 neighbours, radius 1), histograms per subject (or per
    atlas region), then SVM-RBF with standardisation, C and width by grid search."""
    options = options or CVOptions()
    cohort = open_cohort(cache, options)
    X, names = lbp_features(
        cohort,
        points=points,
        radius=radius,
        method=method,
        axis=axis,
        atlas=atlas,
        labels=labels,
        modalities=modalities,
    )
    estimator = E.svm_pipeline(seed=options.seed)
    grid = E.parse_grid(options.grid, E.svm_grid(), estimator)
    features = {
        "type": "lbp",
        "points": points,
        "radius": radius,
        "method": method,
        "slice_axis": axis,
        "atlas": str(atlas) if atlas else None,
        "labels": str(labels) if labels else None,
        "modalities": list(modalities or cohort.modalities),
    }
    return run_baseline(
        X,
        names,
        cohort,
        out,
        baseline="lbp",
        name="lbp_svm",
        estimator=estimator,
        grid=grid,
        features=features,
        options=options,
    )


def regional_matrix(
    cohort: PreparedCohort,
    *,
    table: str | Path | None = None,
    id_column: str = "participant_id",
    columns: Sequence[str] | None = None,
    names: str | Path | None = None,
    atlas: str | Path | None = None,
    labels: str | Path | None = None,
    modalities: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Regional features from a table or an atlas (exactly one), their names, and a description."""
    if (table is None) == (atlas is None):
        raise NeuroCNNError(
            "regional features come from --table FILE or from --atlas NAME|PATH (give one of them)"
        )
    if table is not None:
        from neurocnn.atlas_labels import read_label_table

        readable = {str(k): v for k, v in read_label_table(names).items()} if names else None
        X, feature_names, ignored = table_features(
            cohort.manifest, table, id_column=id_column, columns=columns, names=readable
        )
        if ignored:
            print(f"{table}: non-numeric column(s) ignored: {', '.join(ignored)}", file=sys.stderr)
        described = {
            "type": "table",
            "table": str(Path(table).resolve()),
            "id_column": id_column,
            "columns": list(columns) if columns else "numeric",
            "names": str(names) if names else None,
        }
    else:
        X, feature_names = atlas_features(cohort, atlas, labels, modalities=modalities)  # type: ignore[arg-type]
        described = {
            "type": "atlas",
            "atlas": str(atlas),
            "labels": str(labels) if labels else None,
            "strategy": "mean",
            "modalities": list(modalities or cohort.modalities),
        }
    return X, feature_names, described


def run_regional(
    cache: PreparedCohort | str | Path | None,
    out: Path | str,
    options: CVOptions | None = None,
    *,
    models: Sequence[str] = E.REGIONAL_MODELS,
    **feature_options: Any,
) -> dict[str, dict[str, Any]]:
    """Regional features → logistic regression, KNN, XGBoost, SVM (and ``select``, S3's choice
    among them inside each training fold), each tuned by grid search.

    With one model ``out`` is its run folder; with several, ``out/<model>`` for each. Feature
    options: see `regional_matrix`. Returns {model: summary}.
    """
    options = options or CVOptions()
    unknown = [m for m in models if m not in (*E.REGIONAL_MODELS, E.SELECT)]
    if unknown or not models:
        raise NeuroCNNError(
            f"unknown regional model(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join((*E.REGIONAL_MODELS, E.SELECT))}"
        )
    specs = {}
    for model in models:  # every grid is checked before any model runs
        estimator, grid = E.regional_model(model, seed=options.seed, n_jobs=1)
        specs[model] = (estimator, E.parse_grid(options.grid, grid, estimator))
    cohort = open_cohort(cache, options)
    X, names, features = regional_matrix(cohort, **feature_options)
    summaries = {}
    importance = {"lr": COEFFICIENT, "xgb": GAIN}
    for model, (estimator, grid) in specs.items():
        target = Path(out) if len(models) == 1 else Path(out) / model
        summaries[model] = run_baseline(
            X,
            names,
            cohort,
            target,
            baseline="regional",
            name=f"regional_{model}",
            estimator=estimator,
            grid=grid,
            features=features,
            options=options,
            importance=importance.get(model),
        )
    return summaries


def run_deep2d(
    cache: PreparedCohort | str | Path | None,
    out: Path | str,
    options: CVOptions | None = None,
    *,
    weights: str | Path | None = None,
    backbone: str = "vgg19",
    axis: int = 2,
    pool: str = "mean",
    modalities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Deep features of a pre-trained 2D CNN (S1; `neurocnn.models.features2d`) → SVM-RBF."""
    options = options or CVOptions()
    if weights is None:
        raise NeuroCNNError(
            "deep2d needs pre-trained 2D weights: --weights PATH to a state dict saved with torch.save "
            "(e.g. ImageNet weights of the backbone); features of a random network would mean nothing"
        )
    cohort = open_cohort(cache, options)
    X, names = deep2d_features(
        cohort,
        weights,
        backbone=backbone,
        slice_axis=axis,
        pool=pool,
        modalities=modalities,
        threads=options.threads,
    )
    estimator = E.svm_pipeline(seed=options.seed)
    grid = E.parse_grid(options.grid, E.svm_grid(), estimator)
    features = {
        "type": "deep2d",
        "weights": str(Path(weights).resolve()),
        "backbone": backbone,
        "slice_axis": axis,
        "pool": pool,
        "modalities": list(modalities or cohort.modalities),
    }
    return run_baseline(
        X,
        names,
        cohort,
        out,
        baseline="deep2d",
        name=f"deep2d_{backbone}_svm",
        estimator=estimator,
        grid=grid,
        features=features,
        options=options,
    )
