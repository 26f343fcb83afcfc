"""The four baselines as functions that write run folders (`neurocnn baseline KIND`).

Each one computes its features, takes the split table (a CNN run's, a saved table, or a new
stratified k-fold with the CNN runs' defaults, so that the same seed gives the same test folds),
runs the nested cross-validation of `neurocnn.baselines.nested` and writes the run folder of
`neurocnn.baselines.runfolder`.

>>> from neurocnn.baselines import CVOptions, run_svm                # doctest: +SKIP
>>> run_svm("cache/ixi_3mm", "runs/svm", CVOptions(splits="runs/mrinet"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from neurocnn.baselines import estimators as E
from neurocnn.baselines.features import (
    atlas_features,
    deep2d_features,
    mask_on_grid,
    table_features,
    voxel_features,
)
from neurocnn.baselines.lbp import lbp_features
from neurocnn.baselines.nested import SCORINGS, check_table_matches, nested_cv, outer_splits
from neurocnn.baselines.runfolder import (
    COEFFICIENT,
    DATA,
    ENVIRONMENT,
    GAIN,
    SPLITS,
    gather_baseline,
    is_done,
    open_baseline_run,
    save_splits,
    write_fold,
)
from neurocnn.data import splits as S
from neurocnn.data.cache import PreparedCohort, open_cache
from neurocnn.errors import NeuroCNNError
from neurocnn.training.runfolder import fold_name, write_json

KINDS = ("svm", "lbp", "regional", "deep2d")


@dataclass
class CVOptions:
    """How a baseline is cross-validated and where its splits come from.

    Parameters
    ----------
    splits
        A run folder (its ``splits.tsv``: results are then paired fold by fold with that run) or a
        split table file; None makes stratified k-fold splits with ``folds``, ``repeats``, ``seed``
        (the test folds equal those of a CNN run made with the same three values).
    inner_folds
        K of the inner cross-validation, when the table has no inner splits.
    scoring
        Hyper-parameter selection criterion (``balanced_accuracy``, ``roc_auc``, ``accuracy``).
    grid
        ``KEY=V1,V2`` overrides of the default grid (`neurocnn.baselines.estimators.parse_grid`).
    n_jobs
        Processes of the grid search.
    threads
        BLAS threads per process (`nested_cv`).
    save_models
        Keep each fold's fitted pipeline (model.joblib); the voxel SVM's take ~150 MB a fold at 3 mm.
    """

    splits: str | Path | None = None
    folds: int = 10
    repeats: int = 1
    seed: int = 0
    inner_folds: int = 5
    scoring: str = "balanced_accuracy"
    grid: Sequence[str] = field(default_factory=tuple)
    n_jobs: int = 1
    threads: int | None = 1
    resume: bool = False
    overwrite: bool = False
    save_models: bool = True
    n_boot: int = 2000
    progress: bool = True


def run_cache(run: Path | str) -> Path | None:
    """The prepared cohort a run folder was made from (its config.yaml or data.json), if recorded."""
    run = Path(run)
    for name, key in (("config.yaml", "cache"), ("data.json", "cache")):
        f = run / name
        if f.is_file():
            content = yaml.safe_load(f.read_text()) if name.endswith("yaml") else json.loads(f.read_text())
            if isinstance(content, dict) and content.get(key):
                return Path(content[key])
    return None


def resolve_splits(cache: PreparedCohort, options: CVOptions) -> tuple[pd.DataFrame, str]:
    """The split table for a baseline and a description of where it came from."""
    source = options.splits
    if source is None:
        table = S.kfold(
            cache.manifest, options.folds, repeats=options.repeats, val_fraction=0.1, seed=options.seed
        )
        text = f"stratified {options.folds}-fold × {options.repeats}, seed {options.seed}"
    else:
        path = Path(source)
        if path.is_dir():
            if not (path / SPLITS).is_file():
                raise NeuroCNNError(f"{path} has no {SPLITS}; give a run folder or a split table file")
            path = path / SPLITS
        table = S.load_splits(path)
        text = str(path.resolve())
    check_table_matches(table, cache.manifest, source=f"the splits ({text})")
    return table, text


def _check_options(options: CVOptions) -> None:
    if options.scoring not in SCORINGS:
        raise NeuroCNNError(f"scoring {options.scoring!r} is not one of {', '.join(SCORINGS)}")
    if options.inner_folds < 2:
        raise NeuroCNNError(f"inner folds = {options.inner_folds}: need at least 2")


def run_baseline(
    X: np.ndarray,
    feature_names: list[str] | None,
    cache: PreparedCohort,
    out: Path | str,
    *,
    baseline: str,
    name: str,
    estimator: Any,
    grid: Any,
    features: dict[str, Any],
    options: CVOptions,
    importance: str | None = None,
) -> dict[str, Any]:
    """Nested cross-validation of ``estimator`` on the features ``X`` into the run folder ``out``.

    Returns the run's summary (summary.json).
    """
    from neurocnn.training.crossval import data_record
    from neurocnn.training.runfolder import environment

    _check_options(options)
    if len(cache.classes) < 2:
        raise NeuroCNNError(f"{cache.path}: a classifier needs at least two classes, found {cache.classes}")
    table, source = resolve_splits(cache, options)
    config = {
        "kind": "baseline",
        "baseline": baseline,
        "cache": str(Path(cache.path).resolve()),
        "seed": options.seed,
        "model": {
            "name": name,
            "pipeline": [f"{step}: {type(obj).__name__}" for step, obj in getattr(estimator, "steps", [])],
            "grid": _plain_grid(grid),
            **({"importance": importance} if importance else {}),
        },
        "features": {**features, "n_features": int(X.shape[1])},
        "splits": {"source": source, "folds": len(outer_splits(table))},
        "selection": {"inner_folds": options.inner_folds, "scoring": options.scoring},
    }
    run = open_baseline_run(out, config, overwrite=options.overwrite, resume=options.resume)
    save_splits(table, run / SPLITS)
    write_json(run / DATA, data_record(cache))
    if not (run / ENVIRONMENT).exists():
        write_json(run / ENVIRONMENT, {**environment(), **_versions()})
    todo = [rf for rf in outer_splits(table) if not is_done(run, *rf)]
    for result in nested_cv(
        X,
        cache.manifest,
        table,
        estimator,
        grid,
        inner_folds=options.inner_folds,
        scoring=options.scoring,
        n_jobs=options.n_jobs,
        seed=options.seed,
        splits=todo,
        threads=options.threads,
        n_classes=len(cache.classes),
    ):
        metrics = write_fold(
            run,
            result,
            cache.manifest,
            cache.classes,
            feature_names=feature_names,
            save_model=options.save_models,
        )
        if options.progress:
            test = metrics["test"]
            print(
                f"{name} {fold_name(result.repeat, result.fold)}: balanced accuracy "
                f"{test['balanced_accuracy']:.3f}, AUC {test['auc']:.3f}; chose {result.best_params} "
                f"({result.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return gather_baseline(run, n_boot=options.n_boot, seed=options.seed)


def _plain_grid(grid: Any) -> Any:
    if isinstance(grid, list):
        return [_plain_grid(g) for g in grid]
    return {k: [E.describe_params({k: v})[k] for v in values] for k, values in grid.items()}


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out = {}
    for dist in ("scikit-learn", "scikit-image", "xgboost", "xgboost-cpu", "nilearn"):
        try:
            out[dist.replace("-", "_")] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _open(cache: PreparedCohort | str | Path | None, options: CVOptions) -> PreparedCohort:
    if isinstance(cache, PreparedCohort):
        return cache
    if cache is None:
        found = run_cache(options.splits) if options.splits and Path(options.splits).is_dir() else None
        if found is None:
            raise NeuroCNNError("give the prepared cohort (CACHE), or --splits RUN of a run that records it")
        cache = found
    return open_cache(cache)


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
    every voxel that is non-zero in any subject.
    """
    options = options or CVOptions()
    cohort = _open(cache, options)
    X, positions = voxel_features(cohort, modalities=modalities)
    if mask in (None, "none"):
        step, described = None, "none"
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
    cohort = _open(cache, options)
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
        from neurocnn.atlases import read_label_table

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
    cohort = _open(cache, options)
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
    cohort = _open(cache, options)
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
