"""Trained models to explain: the best model of each fold of a run folder, or one checkpoint.

Each fold's model may explain only its own test subjects (out-of-fold: no subject is explained by a
model that was trained on it); a lone checkpoint explains every labelled subject of a cache, with
no such guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from neurocnn.errors import NeuroCNNError

__all__ = ["FoldModel", "load_checkpoint_model", "load_run_models", "pick_subjects"]


@dataclass
class FoldModel:
    """One trained model and the cache rows it may explain (its test subjects), sorted."""

    name: str
    net: nn.Module
    test: np.ndarray


def load_run_models(
    run: Path | str, *, repeat: int = 0, folds: tuple[int, ...] | None = None
) -> tuple[list[FoldModel], Any]:
    """The best model of each finished outer fold of ``repeat`` (``RUN/folds/r{R}_f{F}/best.ckpt``)
    with its test rows, and the run's prepared cache."""
    from neurocnn.data.cache import open_cache
    from neurocnn.data.splits import load_splits, split_indices
    from neurocnn.training.module import build_network
    from neurocnn.training.runfolder import SPLITS, RunFolder, fold_config, fold_name
    from neurocnn.training.transfer import load_state

    rf = RunFolder(Path(run))
    config = rf.config()
    cache = open_cache(config.cache)
    table = load_splits(rf.path / SPLITS)
    outer = table[(table["inner"] == -1) & (table["repeat"] == repeat)]
    if outer.empty:
        raise NeuroCNNError(f"{rf.path}: no outer splits of repeat {repeat}")
    models: list[FoldModel] = []
    for fold in sorted(int(f) for f in outer["fold"].unique()):
        ckpt = rf.fold_dir(repeat, fold) / "best.ckpt"
        if (folds is not None and fold not in folds) or not ckpt.exists():
            continue
        net = build_network(fold_config(config, ckpt.parent), cache.shape, len(cache.classes))
        net.load_state_dict(load_state(ckpt))
        test = np.sort(split_indices(table, repeat, fold)["test"])
        models.append(FoldModel(fold_name(repeat, fold), net.eval(), test))
    if not models:
        raise NeuroCNNError(
            f"{rf.path}: no finished fold with best.ckpt (repeat {repeat}); train with `neurocnn cv`, "
            "or give --checkpoint"
        )
    return models, cache


def load_checkpoint_model(
    checkpoint: Path | str, cache_path: Path | str, model: str, model_options: dict[str, Any] | None = None
) -> tuple[list[FoldModel], Any]:
    """One checkpoint (Lightning or plain state dict) of zoo model ``model``, built for the cache's
    shape, with every labelled subject of the cache to explain."""
    from neurocnn.data.cache import open_cache
    from neurocnn.models import build
    from neurocnn.training.transfer import load_state

    cache = open_cache(cache_path)
    net = build(
        model,
        in_channels=int(cache.shape[1]),
        num_classes=len(cache.classes),
        input_shape=tuple(int(s) for s in cache.shape[2:]),
        **(model_options or {}),
    )
    try:
        net.load_state_dict(load_state(Path(checkpoint)))
    except RuntimeError as exc:
        raise NeuroCNNError(
            f"{checkpoint} does not fit {model} built for {tuple(cache.shape[1:])} inputs (give the "
            f"options it was trained with, --model-option KEY=VALUE): {str(exc).splitlines()[0]}"
        ) from None
    rows = cache.manifest["index"].to_numpy(dtype=np.int64)
    rows = np.sort(rows[cache.labels()[rows] >= 0])
    return [FoldModel("checkpoint", net.eval(), rows)], cache


def pick_subjects(rows: np.ndarray, labels: np.ndarray, k: int | None, start: int = 0) -> np.ndarray:
    """The first ``k`` of ``rows`` taking the classes in turn (deterministic and balanced); all
    rows when ``k`` is None or not smaller. ``start`` rotates which class goes first (pass the
    fold's position, so that one subject per fold still covers every class across folds)."""
    if k is None or k >= len(rows):
        return rows
    by_class = [list(rows[labels[rows] == c]) for c in np.unique(labels[rows])]
    if by_class:
        shift = start % len(by_class)
        by_class = by_class[shift:] + by_class[:shift]
    out: list[int] = []
    while len(out) < k:
        for members in by_class:
            if members and len(out) < k:
                out.append(members.pop(0))
    return np.sort(np.asarray(out, dtype=np.int64))
