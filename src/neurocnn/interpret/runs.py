"""Trained models to explain: the best model of each fold of a run folder, or one checkpoint.

Each fold's model may explain only its own test subjects (out-of-fold: no subject is explained by a
model that was trained on it); a lone checkpoint explains every labelled subject of a cache, with
no such guarantee.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from neurocnn.errors import NeuroCNNError

__all__ = [
    "FoldModel",
    "finished_folds",
    "load_checkpoint_model",
    "load_finished_models",
    "load_run_models",
    "pick_subjects",
]


@dataclass
class FoldModel:
    """One trained model and the cache rows it may explain (its test subjects), sorted."""

    name: str
    net: nn.Module
    test: np.ndarray


def finished_folds(
    run: Path | str, *, repeat: int = 0, folds: tuple[int, ...] | None = None
) -> tuple[dict[int, Path], dict[str, str]]:
    """The checkpoint of each finished outer fold of ``repeat`` (``folds``: only those), and why
    each other one is skipped (failed, still training or interrupted, checkpoint gone).

    A fold is finished when its ``metrics.json`` is written (last, after its test predictions) and
    it has no ``error.txt``; its model is the checkpoint ``fit.json`` names (else ``best.ckpt``).
    ``best.ckpt`` alone proves nothing: it is written from the first epoch on.
    """
    from neurocnn.data.splits import load_splits
    from neurocnn.training.checkpoints import FIT_RECORD
    from neurocnn.training.runfolder import SPLITS, RunFolder, fold_name, read_config

    rf = RunFolder(Path(run))
    read_config(rf.path)  # a clear error for a folder that is not a run
    table = load_splits(rf.path / SPLITS)
    outer = table[(table["inner"] == -1) & (table["repeat"] == repeat)]
    if outer.empty:
        raise NeuroCNNError(f"{rf.path}: no outer splits of repeat {repeat}")
    available = sorted(int(f) for f in outer["fold"].unique())
    unknown = sorted(set(folds or ()) - set(available))
    if unknown:
        raise NeuroCNNError(
            f"{rf.path}: no fold {', '.join(map(str, unknown))} in repeat {repeat} "
            f"(folds {', '.join(map(str, available))})"
        )
    use: dict[int, Path] = {}
    skipped: dict[str, str] = {}
    for fold in available:
        if folds is not None and fold not in folds:
            continue
        d, name = rf.fold_dir(repeat, fold), fold_name(repeat, fold)
        if (d / "error.txt").exists():
            skipped[name] = "failed (see its error.txt)"
            continue
        if not rf.is_done(repeat, fold):
            skipped[name] = "not finished (no metrics.json: still training, interrupted or not started)"
            continue
        if not (outer[outer["fold"] == fold]["role"] == "test").any():
            skipped[name] = "no test subjects to explain out-of-fold (give --checkpoint and a test cache)"
            continue
        ckpt = d / "best.ckpt"
        if (d / FIT_RECORD).exists():
            ckpt = d / str(json.loads((d / FIT_RECORD).read_text()).get("best") or "best.ckpt")
        if not ckpt.exists():
            skipped[name] = f"finished, but its checkpoint {ckpt.name} is gone"
            continue
        use[fold] = ckpt
    return use, skipped


def load_run_models(
    run: Path | str, *, repeat: int = 0, folds: tuple[int, ...] | None = None
) -> tuple[list[FoldModel], Any]:
    """The best model of each finished outer fold of ``repeat`` (`finished_folds`) with its test
    rows, and the run's prepared cache."""
    models, cache, _ = load_finished_models(run, repeat=repeat, folds=folds)
    return models, cache


def load_finished_models(
    run: Path | str, *, repeat: int = 0, folds: tuple[int, ...] | None = None
) -> tuple[list[FoldModel], Any, dict[str, str]]:
    """`load_run_models`, and why each other fold was skipped (`finished_folds`)."""
    from neurocnn.data.cache import open_cache
    from neurocnn.data.splits import load_splits, split_indices
    from neurocnn.training.module import build_network
    from neurocnn.training.runfolder import SPLITS, RunFolder, fold_config, fold_name
    from neurocnn.training.transfer import load_state

    rf = RunFolder(Path(run))
    use, skipped = finished_folds(rf.path, repeat=repeat, folds=folds)
    if not use:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise NeuroCNNError(
            f"{rf.path}: no finished fold (repeat {repeat}){f' ({why})' if why else ''}; train with "
            "`neurocnn cv`, or give --checkpoint"
        )
    config = rf.config()
    cache = open_cache(config.cache)
    table = load_splits(rf.path / SPLITS)
    models: list[FoldModel] = []
    for fold, ckpt in use.items():
        net = build_network(fold_config(config, ckpt.parent), cache.shape, len(cache.classes))
        net.load_state_dict(load_state(ckpt))
        test = np.sort(split_indices(table, repeat, fold)["test"])
        models.append(FoldModel(fold_name(repeat, fold), net.eval(), test))
    return models, cache, skipped


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
