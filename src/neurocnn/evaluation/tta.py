"""Test-time augmentation of a cross-validated run (`neurocnn tta RUN`).

Every finished fold's model is tested again on its own test subjects, with the mean of the class
probabilities over each scan and its left-right mirror (the sagittal flip of the first spatial axis,
x in the RAS cache: the flip of training's ``augment.flip``). The decision is the arg-max of the
mean. The model and the folds are the run's; only the test-time input changes, so the result pairs
with the run's own predictions subject by subject
(`neurocnn compare runs/mrinet runs/mrinet/mrinet_tta_flip`).

Averaging over the mirror assumes that what separates the classes is not lateralised: a model that
learned a left-sided effect sees it on the right in the mirror, and the mean dilutes it. Use it for
models trained with flips, on effects expected on both sides. (On the demo's cohort, whose planted
effects are one-sided, MriNet trained without flips fell from 0.92 to 0.78 balanced accuracy.)

The result is a run folder of its own (config, data and splits of the run; per-fold predictions
and metrics; then the pooled summary of `neurocnn.evaluation.summary.gather`) with ``tta.json``
saying where it came from and which checkpoint (size, modification time) each fold's model was read
from, so `compare` and `report` read it like any run. Folds still training are left out and listed
as missing; running it again with ``--overwrite`` after they finish brings them in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from neurocnn.data.cache import INFO, PreparedCohort, open_cache, swap_folder
from neurocnn.data.splits import load_splits, split_indices
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import inference_device, predict_proba
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
    fold_config,
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
    cache: Path | str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-test the finished folds of ``run_dir`` with test-time augmentation into ``out``
    (default ``RUN/<name of RUN>_tta_flip``, so that `compare` and `report`, which name runs by
    folder, say what it is); return the gathered summary.

    ``cache``: where the run's prepared cohort is now, when it was moved (checked to be the same
    cohort). The result is written next to ``out`` and moved into place at the end, so an earlier
    result is replaced only by a complete new one.
    """
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown or not transforms:
        raise NeuroCNNError(f"test-time transforms must be among {', '.join(TRANSFORMS)}; got {unknown}")
    run = RunFolder(Path(run_dir))
    if (run.path / RECORD).exists():
        raise NeuroCNNError(f"{run.path} is itself a test-time augmentation result; give the training run")
    config, data = run.config(), run.data()
    out = Path(out).resolve() if out is not None else default_out(run.path, transforms)
    _clean_after_kill(out)
    _check_out(out, overwrite=overwrite)
    prepared = _open_run_cache(run, Path(cache) if cache is not None else Path(config.cache))
    if config.permute_labels:
        prepared = permute_labels(prepared, config.seed)
    table = load_splits(run.path / SPLITS)
    outer = table[table["inner"] == -1]
    folds = sorted({(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)})
    done = [rf for rf in folds if run.is_done(*rf)]
    if not done:
        raise NeuroCNNError(f"{run.path} has no finished fold yet; nothing to test")
    if not any(len(split_indices(table, *rf)["test"]) for rf in done):
        raise NeuroCNNError(
            f"{run.path} has no test subjects in its folds (trained on all subjects?); "
            "test it on another cohort with `neurocnn evaluate`"
        )
    checkpoints = {rf: _selected_checkpoint(run.fold_dir(*rf)) for rf in done}  # all found, or stop here

    shape, n_classes = tuple(data["shape"]), len(data["classes"])
    device = inference_device(config.train.accelerator)
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    record = {
        "source": str(run.path.resolve()),
        "transforms": list(transforms),
        "folds": {
            fold_name(*rf): {"checkpoint": c.name, "size": c.stat().st_size, "mtime_ns": c.stat().st_mtime_ns}
            for rf, c in checkpoints.items()
        },
    }
    work = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_json(work / RECORD, record)
        write_text(work / MARKER, "neurocnn test-time augmentation of a run\n")
        for name in (CONFIG, DATA, SPLITS, ENVIRONMENT):
            if (run.path / name).exists():
                shutil.copy2(run.path / name, work / name)
        for rf in folds:  # failed folds stay failed in the summary, not missing
            error = run.fold_dir(*rf) / "error.txt"
            if rf not in checkpoints and error.exists():
                (work / "folds" / fold_name(*rf)).mkdir(parents=True)
                shutil.copy2(error, work / "folds" / fold_name(*rf) / "error.txt")
        from rich.progress import track

        for (r, f), checkpoint in track(
            checkpoints.items(), description="test-time augmentation", disable=not progress
        ):
            net = build_network(fold_config(config, checkpoint.parent), shape, n_classes)
            net.load_state_dict(load_state(checkpoint))
            ids = split_indices(table, r, f)
            plan = FoldPlan(r, f, ids["train"], ids["val"], ids["test"])
            probs, preds = predict_proba(
                net, prepared, plan.test, batch_size=config.train.batch_size, device=device, flip=True
            )
            target = work / "folds" / fold_name(r, f)
            target.mkdir(parents=True)
            write_predictions(target / "predictions.csv", prepared, plan, probs, preds)
            metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
            y = prepared.labels()[plan.test]
            write_json(
                target / "metrics.json",
                {**metrics, "test": classification_metrics(y, probs, preds), "tta": list(transforms)},
            )
        swap_folder(work, out)  # an earlier result goes only once the new one is in place
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from neurocnn.evaluation.summary import gather

    return gather(out, seed=config.seed)


def _clean_after_kill(out: Path) -> None:
    """Undo what a killed earlier `tta` into ``out`` left: its unfinished result
    (``.<out>.<pid>.tmp``) goes, and an earlier result that `swap_folder` had moved aside
    (``<out>.old-<pid>``) comes back if nothing took its place."""
    if not out.name:
        raise NeuroCNNError(f"{out} cannot hold a result; give --out a folder")
    if not out.parent.is_dir():
        return
    for stale in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        if _pid_gone(stale.name.rsplit(".", 2)[-2]):
            shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(out.parent.glob(f"{out.name}.old-*")):
        if _pid_gone(old.name.rsplit("-", 1)[-1]):
            if out.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.rename(out)


def _pid_gone(pid_text: str) -> bool:
    """Whether the process whose id a leftover folder's name carries is no longer running."""
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _open_run_cache(run: RunFolder, path: Path) -> PreparedCohort:
    """The run's prepared cohort at ``path``, refused if it is not the one the run was trained on."""
    if not (path / INFO).exists():
        raise NeuroCNNError(
            f"the prepared cohort of {run.path} is not at {path}; give --cache where it is now"
        )
    prepared = open_cache(path)
    try:
        check_same_data(run, data_record(prepared))
    except NeuroCNNError:
        raise NeuroCNNError(
            f"{path} holds a cohort prepared differently from the one {run.path} was trained on; "
            "give --cache the run's own prepared cohort"
        ) from None
    return prepared


def default_out(run_dir: Path | str, transforms: tuple[str, ...] = ("flip",)) -> Path:
    run = Path(run_dir)
    return run / f"{run.resolve().name}_tta_{'_'.join(transforms)}"


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
    if out.exists() and not out.is_dir():
        raise NeuroCNNError(f"{out} is a file; give --out a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / RECORD).exists():
        raise NeuroCNNError(f"{out} exists and is not a test-time augmentation folder; choose another --out")
    if not overwrite:
        raise NeuroCNNError(f"{out} holds an earlier test-time augmentation; --overwrite replaces it")
