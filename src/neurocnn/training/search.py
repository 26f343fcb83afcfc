"""Nested hyper-parameter search of one outer fold (`neurocnn cv --nested K --search ...`).

Each candidate of the grid is trained on every inner split of the outer training set; the candidate
with the best mean balanced accuracy over the inner test folds is chosen (the outer test fold is
never looked at) and written to the fold's ``search.json``.

The search runs in one process: its inner models are scored, deleted and compared by the process
that writes the run folder, so a run that trains with several processes (DDP) is refused before it
starts (`check_search`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.data import splits as S
from neurocnn.data.cache import PreparedCohort
from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import ExperimentConfig
from neurocnn.training.distributed import world_size
from neurocnn.training.fold import FoldPlan, fit_fold
from neurocnn.training.runfolder import SEARCH, fold_name, write_json


def candidates(config: ExperimentConfig) -> list[dict[str, Any]]:
    """Every combination of the search grid, as dotted-key overrides."""
    keys = list(config.search)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*config.search.values())]


def check_search(config: ExperimentConfig) -> None:
    """Refuse a search under several training processes, before anything is trained.

    Under DDP only rank 0 gets an inner fold's metrics; the other processes would delete the inner
    checkpoints rank 0 is about to load, score every candidate as missing and race rank 0 to write
    search.json.
    """
    if not config.search:
        return
    configs = [config, *(config.with_overrides(c) for c in candidates(config))]
    processes = max(world_size(c.train.devices, c.train.num_nodes, c.train.accelerator) for c in configs)
    launched = os.environ.get("WORLD_SIZE", "1")
    processes = max(processes, int(launched) if launched.isdigit() else 1)
    if processes > 1:
        raise NeuroCNNError(
            f"a nested hyper-parameter search (--search) runs in one process, but this run trains with "
            f"{processes} processes; search with --devices 1 (e.g. on one GPU), then train the chosen "
            "settings with DDP"
        )


def search_fold(
    config: ExperimentConfig,
    cache: PreparedCohort,
    table: pd.DataFrame,
    repeat: int,
    fold: int,
    fold_dir: Path,
    *,
    resume: bool,
    progress: bool,
) -> ExperimentConfig:
    """Pick hyper-parameters on the inner folds of one outer training set (nested CV)."""
    grid = candidates(config)
    mine = table[(table["repeat"] == repeat) & (table["fold"] == fold)]
    S.check_nested(mine)  # inner splits use only the outer fold's training subjects
    inner_ids = sorted(int(i) for i in mine["inner"].unique() if i >= 0)
    scores = []
    for j, overrides in enumerate(grid):
        candidate = config.with_overrides({**overrides}).model_copy(update={"search": {}})
        values = []
        for i in inner_ids:
            ids = S.split_indices(table, repeat, fold, inner=i)
            d = fold_dir / "search" / f"c{j}_i{i}"
            done = d / "metrics.json"
            if done.exists():
                m = json.loads(done.read_text())
            else:
                plan = FoldPlan(
                    repeat,
                    fold,
                    ids["train"],
                    ids["val"],
                    ids["test"],
                    inner=i,
                    tag=f"{fold_name(repeat, fold)}_c{j}_i{i}",
                )
                m = fit_fold(candidate, cache, plan, d, resume=resume, progress=progress) or {}
                for ckpt in d.glob("*.ckpt"):
                    ckpt.unlink()  # inner models are only scored, never reused
            value = m.get("test", {}).get("balanced_accuracy")
            values.append(np.nan if value is None else float(value))
        scores.append(float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"))
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    write_json(
        fold_dir / SEARCH,
        {
            "candidates": grid,
            "inner_balanced_accuracy": scores,
            "chosen": grid[best],
            "criterion": "mean balanced accuracy over the inner test folds of the outer training set",
        },
    )
    for d in (fold_dir / "search").glob("*/logs"):
        shutil.rmtree(d, ignore_errors=True)
    return config.with_overrides(grid[best]).model_copy(update={"search": {}})
