"""Cross-validation driver (`neurocnn cv`): splits, run folder, one `fit_fold` per split, gather.

- Splits come from `neurocnn.data.splits` (stratified k-fold, repeated, nested; train/val/test
  fractions; independent test cohort; stratified subsets of the training data) or a saved table, and
  are saved in the run folder.
- ``folds``/``repeats`` select splits, so that a cluster job array trains one split per job; every
  split's seed depends only on the run seed and the split, so the folds of such jobs are the folds
  of one full run, and `neurocnn.evaluation.summary.gather` combines them.
- A fold that fails is recorded (``error.txt``) and the others still run; ``resume`` skips finished
  folds and continues unfinished ones from their ``last.ckpt``.
- ``permute_labels`` shuffles the labels across participants first: the whole pipeline on labels
  without signal, whose balanced accuracy must come out at chance.
- Nested CV: with a search grid, each outer fold picks the candidate with the best mean balanced
  accuracy over its inner folds (the outer test fold is never looked at), then trains on the outer
  training set with it (`neurocnn.training.search`; one process only).
- DDP: under Lightning's launcher (or torchrun/SLURM) every process runs this driver; only rank 0
  touches the run folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.data import splits as S
from neurocnn.data.cache import PreparedCohort, open_cache
from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import ExperimentConfig
from neurocnn.training.distributed import PLAN_ENV, process_rank, world_size
from neurocnn.training.fold import FoldPlan, fit_fold, make_network
from neurocnn.training.module import resolve_modalities
from neurocnn.training.runfolder import (
    DATA,
    ENVIRONMENT,
    SPLITS,
    RunFolder,
    check_same_data,
    environment,
    fold_name,
    open_run,
    write_json,
    write_text,
)
from neurocnn.training.sampling import sample_seed
from neurocnn.training.search import check_search, search_fold
from neurocnn.training.trainer import check_mlflow_uri, deterministic_mode
from neurocnn.training.transfer import check_source_cohort


@dataclass
class CVResult:
    run: Path
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None


def permute_labels(cache: PreparedCohort, seed: int) -> PreparedCohort:
    """The cohort with its labels shuffled across participants (sessions keep one label)."""
    m = cache.manifest.copy()
    labelled = m["label_index"] >= 0
    per = m[labelled].groupby("participant_id", sort=True)["label_index"].first()
    rng = np.random.default_rng(sample_seed(seed, 0x9E57))
    mapping = dict(zip(per.index, rng.permutation(per.to_numpy()), strict=True))
    m.loc[labelled, "label_index"] = m.loc[labelled, "participant_id"].map(mapping).astype(np.int64)
    m.loc[labelled, "label"] = [cache.classes[i] for i in m.loc[labelled, "label_index"]]
    return dataclasses.replace(cache, manifest=m)


def make_splits(config: ExperimentConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    s = config.splits
    if s.table:
        from neurocnn.baselines.nested import check_table_matches

        table = S.load_splits(s.table)
        # the table names cache indices: a cohort prepared again in another order would otherwise
        # train and test on other participants than the table says
        check_table_matches(table, manifest, source=f"the splits in {s.table}")
    elif s.scheme == "holdout":
        table = S.holdout(manifest, s.fractions, repeats=s.repeats, seed=config.seed)
    elif s.scheme == "independent":
        table = S.independent(manifest, val_fraction=s.val_fraction, seed=config.seed)
    else:
        table = S.kfold(
            manifest,
            s.folds,
            repeats=s.repeats,
            val_fraction=s.val_fraction,
            seed=config.seed,
            nested=s.nested,
        )
    if s.subset:
        table = S.subsample(table, s.subset, seed=config.seed)
    if config.search and not (table["inner"] >= 0).any():
        raise NeuroCNNError("a hyper-parameter search needs nested splits (--nested K)")
    if config.search:
        S.check_nested(table)  # inner splits within the outer training folds, checked before training
    return table


def data_record(cache: PreparedCohort) -> dict[str, Any]:
    """What `data.json` records about the training cohort."""
    m = cache.manifest
    labelled = m[m["label_index"] >= 0]
    zooms = cache.voxel_sizes()
    return {
        "cache": str(Path(cache.path).resolve()),
        "params": cache.info.get("params"),
        "params_hash": cache.info.get("params_hash"),
        "classes": cache.classes,
        "modalities": cache.modalities,
        "shape": list(cache.shape),
        "affine": cache.info.get("common_affine"),
        # for `predict`/`evaluate`: new scans must be prepared on the same resolution, and with a
        # brain mask exactly when the training scans were
        "voxel_size": None if zooms is None else [round(float(z), 6) for z in zooms],
        "masked": cache.masked,
        "mask_column": cache.info.get("mask_column"),
        "label_column": cache.info.get("label_column"),
        "participants": sorted(labelled["participant_id"].astype(str).unique().tolist()),
        "input_sha256": image_hashes(cache),
    }


def image_hashes(cache: PreparedCohort) -> list[str]:
    """sha256 of every image file of the cohort (masks left out: one mask may serve everyone)."""
    inputs = cache.info.get("inputs", {})
    paths = [p for files in cache.info.get("subject_files", []) for m, p in files.items() if m != "mask"]
    return sorted({inputs[p]["sha256"] for p in paths if p in inputs})


def resolve(config: ExperimentConfig, cache: PreparedCohort) -> ExperimentConfig:
    """Fill in what depends on the cohort, so that config.yaml says exactly what was trained."""
    mode = resolve_modalities(config, cache.shape[1])
    deterministic = deterministic_mode(config.train.deterministic, config.train.accelerator)
    return config.with_overrides(
        {
            "model.modalities": mode,
            "cache": str(Path(cache.path).resolve()),
            "train.deterministic": deterministic,
        }
    )


def run_cv(
    config: ExperimentConfig,
    out: Path | str,
    *,
    folds: Sequence[int] | None = None,
    repeats: Sequence[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> CVResult:
    """Train every selected split of ``config`` into the run folder ``out``, then gather.

    Parameters
    ----------
    folds, repeats
        Train only these outer folds / repeats (default all): one job of a job array.
    resume
        Continue an interrupted run: finished folds are kept, unfinished ones continue from their
        last checkpoint.
    overwrite
        Replace an existing run folder; with ``folds``/``repeats``, only the selected folds of a run
        with the same configuration.
    """
    out = Path(out)
    check_search(config)  # before anything is written or trained
    cache = open_cache(config.cache)
    S.check_two_classes(cache.manifest, cache.path)  # before anything is written or trained
    config = resolve(config, cache)
    make_network(config, cache)  # a user error (model, shape, transfer source) stops here, not per fold
    check_source_cohort(config, cache)  # a transfer source must not have seen the target's subjects
    if config.logging.mlflow:
        check_mlflow_uri(config.logging.mlflow)
    if config.permute_labels:
        cache = permute_labels(cache, config.seed)
    table = make_splits(config, cache.manifest)
    outer = table[table["inner"] == -1]
    selected = [
        (int(r), int(f))
        for r, f in sorted({(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)})
        if (folds is None or f in folds) and (repeats is None or r in repeats)
    ]
    if not selected:
        raise NeuroCNNError(
            f"no split matches fold(s) {list(folds or [])} repeat(s) {list(repeats or [])}; "
            f"the table has folds 0–{outer['fold'].max()} and repeats 0–{outer['repeat'].max()}"
        )
    rank = process_rank()
    run = RunFolder(out)
    partial = folds is not None or repeats is not None
    if rank == 0:
        # a job that trains some folds replaces only those folds: the others belong to other jobs
        run = open_run(out, config, overwrite=overwrite and not partial, resume=resume, shared=partial)
        if overwrite and partial:
            for rf in selected:
                shutil.rmtree(run.fold_dir(*rf), ignore_errors=True)
        record = data_record(cache)
        check_same_data(run, record)
        S.save_splits(table, run.path / SPLITS)
        write_json(run.path / DATA, record)
        if not (run.path / ENVIRONMENT).exists():
            write_json(run.path / ENVIRONMENT, environment())
        plan, skipped = _plan(run, selected, resume=resume)
        if plan:  # folds are (re)trained: the run's pooled results no longer describe its folds
            for name in ("predictions.csv", "metrics.json", "summary.json"):
                (run.path / name).unlink(missing_ok=True)
        os.environ[PLAN_ENV] = ",".join(fold_name(*rf) for rf in plan)  # DDP children inherit it
    else:
        # started by Lightning: rank 0's plan is inherited; by torchrun/SLURM: decide as rank 0 does
        # (no fold can finish before every process has joined the first one)
        names = os.environ.get(PLAN_ENV)
        if names is not None:
            plan = [rf for rf in selected if fold_name(*rf) in names.split(",")]
        else:
            plan = [rf for rf in selected if overwrite or not run.is_done(*rf)]
        skipped = []
    result = CVResult(run.path, skipped=[fold_name(*rf) for rf in skipped])
    show = _FoldBar(len(plan), enabled=progress and rank == 0)
    for r, f in plan:
        name = fold_name(r, f)
        fold_dir = run.fold_dir(r, f)
        ids = S.split_indices(table, r, f)
        fold_config = config
        try:
            (fold_dir / "error.txt").unlink(missing_ok=True)  # a retried fold is not failed while it runs
            if config.search:
                fold_config = search_fold(
                    config, cache, table, r, f, fold_dir, resume=resume, progress=progress
                )
            plan_rf = FoldPlan(r, f, ids["train"], ids["val"], ids["test"])
            metrics = fit_fold(
                fold_config, cache, plan_rf, fold_dir, run_dir=run.path, resume=resume, progress=progress
            )
            result.trained.append(name)
            show.advance(name, metrics)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if world_size(config.train.devices, config.train.num_nodes, config.train.accelerator) > 1:
                raise  # the other processes would wait for this one forever
            if rank == 0:
                fold_dir.mkdir(parents=True, exist_ok=True)
                write_text(fold_dir / "error.txt", traceback.format_exc())
            result.failed[name] = f"{type(exc).__name__}: {exc}"
            show.advance(name, None, error=result.failed[name])
    if rank == 0:
        from neurocnn.evaluation.summary import gather  # evaluation reads the run folder layout

        outer_all = {(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)}
        if all(run.is_done(*rf) for rf in outer_all):
            result.summary = gather(run.path, seed=config.seed)
    return result


def _plan(
    run: RunFolder, selected: list[tuple[int, int]], *, resume: bool
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    plan, skipped = [], []
    for rf in selected:
        if run.is_done(*rf):
            if not resume:
                raise NeuroCNNError(
                    f"{run.path}: fold {fold_name(*rf)} is already finished; --resume skips it, "
                    "--overwrite replaces the run"
                )
            skipped.append(rf)
        elif run.fold_dir(*rf).exists() and not resume:
            raise NeuroCNNError(
                f"{run.fold_dir(*rf)} exists (started by another job?); --resume continues it"
            )
        else:
            plan.append(rf)
    return plan, skipped


class _FoldBar:
    """A rich progress bar over folds, printed as one line after each fold (Lightning's own bar
    shows the epochs within a fold; two live displays would overwrite each other)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self.start = time.perf_counter()

    def advance(self, name: str, metrics: dict[str, Any] | None, error: str | None = None) -> None:
        self.done += 1
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        if error:
            what = f"[red]failed: {error[:80]}[/red]"
        else:
            test = (metrics or {}).get("test", {})
            ba = test.get("balanced_accuracy")
            what = f"test bal. acc {ba:.3f}" if isinstance(ba, float) else "trained"
            what += f", best epoch {(metrics or {}).get('best_epoch')}"
        row = Table.grid(padding=(0, 1))
        row.add_row(
            ProgressBar(total=self.total, completed=self.done, width=30),
            f"{self.done}/{self.total} folds",
            name,
            what,
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
        )
        Console(stderr=True).print(row)
