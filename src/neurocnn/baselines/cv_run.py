"""The cross-validation of one baseline, written as a run folder: options, splits, the run itself.

`run_baseline` takes a feature matrix and a scikit-learn pipeline with its grid, resolves the split
table (a CNN run's, a saved table, or a new stratified k-fold with the CNN runs' defaults, so that
the same seed gives the same test folds), runs the nested cross-validation of
`neurocnn.baselines.nested` fold by fold (resumable) and gathers the run folder of
`neurocnn.baselines.runfolder`. The baselines themselves are in `neurocnn.baselines.runs`.
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
from neurocnn.baselines.nested import (
    SCORINGS,
    check_inner_folds,
    check_table_matches,
    nested_cv,
    outer_splits,
)
from neurocnn.baselines.runfolder import (
    DATA,
    ENVIRONMENT,
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
    S.check_two_classes(cache.manifest, cache.path)  # (classes given with --classes may be absent)
    table, source = resolve_splits(cache, options)
    check_inner_folds(table, cache.manifest, options.inner_folds, cache.classes)  # before any fit
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


def open_cohort(cache: PreparedCohort | str | Path | None, options: CVOptions) -> PreparedCohort:
    """The prepared cohort itself, its path, or (None) the one the --splits run was made from."""
    if isinstance(cache, PreparedCohort):
        return cache
    if cache is None:
        found = run_cache(options.splits) if options.splits and Path(options.splits).is_dir() else None
        if found is None:
            raise NeuroCNNError("give the prepared cohort (CACHE), or --splits RUN of a run that records it")
        cache = found
    return open_cache(cache)
