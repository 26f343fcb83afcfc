"""Test-time augmentation of a cross-validated run (`neurocnn tta RUN`).

Every finished fold's model is tested again on its own test subjects, with the mean of the class
probabilities over each scan and its left-right mirror (the sagittal flip of the first spatial axis,
x in the RAS cache: the flip of training's ``augment.flip``). The decision is the arg-max of the
mean. The model and the folds are the run's; only the test-time input changes, so the result pairs
with the run's own predictions subject by subject (`neurocnn compare RUN RUN/tta_flip`).

Averaging over the mirror assumes that what separates the classes is not lateralised: a model that
learned a left-sided effect sees it on the right in the mirror, and the mean dilutes it. Use it for
models trained with flips, on effects expected on both sides. (On the demo's cohort, whose planted
effects are one-sided, MriNet trained without flips fell from 0.92 to 0.78 balanced accuracy.)

The result is a run folder of its own (config, data and splits of the run; per-fold predictions
and metrics; then the pooled summary of `neurocnn.evaluation.summary.gather`) with ``tta.json``
saying where it came from, so `compare` and `report` read it like any run. Folds still training are
left out and listed as missing; running it again after they finish brings them in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from neurocnn.data.cache import open_cache
from neurocnn.data.splits import load_splits, split_indices
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import predict_proba
from neurocnn.evaluation.metrics import classification_metrics
from neurocnn.training.crossval import data_record, permute_labels
from neurocnn.training.fold import FoldPlan, write_predictions
from neurocnn.training.module import build_network
from neurocnn.training.runfolder import (
    CONFIG,
    DATA,
    ENVIRONMENT,
    MARKER,
    SPLITS,
    RunFolder,
    check_same_data,
    fold_name,
    write_json,
    write_text,
)
from neurocnn.training.transfer import load_state

TRANSFORMS = ("flip",)
RECORD = "tta.json"


def tta_run(
    run_dir: Path | str,
    out: Path | str | None = None,
    *,
    transforms: tuple[str, ...] = ("flip",),
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-test the finished folds of ``run_dir`` with test-time augmentation into ``out``
    (default ``RUN/tta_flip``); return the gathered summary."""
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown or not transforms:
        raise NeuroCNNError(f"test-time transforms must be among {', '.join(TRANSFORMS)}; got {unknown}")
    run = RunFolder(Path(run_dir))
    config, data = run.config(), run.data()
    out = Path(out) if out is not None else default_out(run.path, transforms)
    _check_out(out, overwrite=overwrite)
    cache = open_cache(config.cache)
    check_same_data(run, data_record(cache))  # the cache under that path was not prepared anew
    if config.permute_labels:
        cache = permute_labels(cache, config.seed)
    table = load_splits(run.path / SPLITS)
    outer = table[table["inner"] == -1]
    folds = sorted({(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)})
    done = [rf for rf in folds if run.is_done(*rf)]
    if not done:
        raise NeuroCNNError(f"{run.path} has no finished fold yet; nothing to test")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    record = {"source": str(run.path.resolve()), "transforms": list(transforms), "folds": []}
    write_json(out / RECORD, record)  # first: what makes the folder one that --overwrite may replace
    write_text(out / MARKER, "neurocnn test-time augmentation of a run\n")
    for name in (CONFIG, DATA, SPLITS, ENVIRONMENT):
        if (run.path / name).exists():
            shutil.copy2(run.path / name, out / name)
    shape, n_classes = tuple(data["shape"]), len(data["classes"])
    device = "cuda" if config.train.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    from rich.progress import track

    for r, f in track(done, description="test-time augmentation", disable=not progress):
        source = run.fold_dir(r, f)
        metrics = json.loads((source / "metrics.json").read_text())
        checkpoint = _selected_checkpoint(source)
        net = build_network(config, shape, n_classes)
        net.load_state_dict(load_state(checkpoint))
        ids = split_indices(table, r, f)
        plan = FoldPlan(r, f, ids["train"], ids["val"], ids["test"])
        probs, preds = predict_proba(
            net, cache, plan.test, batch_size=config.train.batch_size, device=device, flip=True
        )
        target = out / "folds" / fold_name(r, f)
        target.mkdir(parents=True)
        write_predictions(target / "predictions.csv", cache, plan, probs, preds)
        y = cache.labels()[plan.test]
        write_json(
            target / "metrics.json",
            {**metrics, "test": classification_metrics(y, probs, preds), "tta": list(transforms)},
        )
    write_json(out / RECORD, {**record, "folds": [fold_name(*rf) for rf in done]})
    from neurocnn.evaluation.summary import gather

    return gather(out, seed=config.seed)


def default_out(run_dir: Path | str, transforms: tuple[str, ...] = ("flip",)) -> Path:
    return Path(run_dir) / f"tta_{'_'.join(transforms)}"


def _selected_checkpoint(fold_dir: Path) -> Path:
    """The checkpoint the fold's own test predictions came from (fit.json's ``best``)."""
    fit = fold_dir / "fit.json"
    name = json.loads(fit.read_text())["best"] if fit.exists() else "best.ckpt"
    path = fold_dir / name
    if not path.exists():
        raise NeuroCNNError(f"{fold_dir}: its checkpoint {name} is missing; the fold cannot be tested again")
    return path


def _check_out(out: Path, *, overwrite: bool) -> None:
    """An earlier result of `tta` is replaced only with ``overwrite``; other folders never."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / RECORD).exists():
        raise NeuroCNNError(f"{out} exists and is not a test-time augmentation folder; choose another --out")
    if not overwrite:
        raise NeuroCNNError(f"{out} holds an earlier test-time augmentation; --overwrite replaces it")
