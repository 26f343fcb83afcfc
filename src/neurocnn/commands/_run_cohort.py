"""Arguments and steps shared by `neurocnn evaluate` and `neurocnn predict`: a cohort for a trained
run, prepared like its training cohort and checked for leakage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocnn.errors import NeuroCNNError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder written by `neurocnn cv`")
    g = p.add_argument_group("cohort")
    g.add_argument("--cohort", type=Path, help="participants table (CSV/TSV) of the scans")
    g.add_argument("--images", help="image columns (default: the run's modalities)")
    g.add_argument(
        "--mask", help="brain-mask column (needed exactly when the run's training scans had brain masks)"
    )
    g.add_argument("--cache", type=Path, help="an already prepared cohort instead of a table")
    g = p.add_argument_group("inference")
    g.add_argument(
        "--strict",
        action="store_true",
        help="refuse scans that were training scans of the run (the same file); a participant id of "
        "the training cohort with another file is only noted",
    )
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    g.add_argument("--batch-size", type=int, default=8, help="default 8")
    g.add_argument("--jobs", type=int, help="preparation worker processes")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cnn_run(path: Path):  # type: ignore[no-untyped-def]
    """The run folder of a `neurocnn cv` run; a baseline run (`neurocnn baseline`: scikit-learn models,
    no network) or a folder that is no run is refused before any scan is read."""
    import yaml

    from neurocnn.training.runfolder import CONFIG, RunFolder

    if not path.is_dir():
        raise NeuroCNNError(f"run folder {path} not found; give a folder written by `neurocnn cv`")
    try:
        config = yaml.safe_load((path / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        config = None  # (no config: RunFolder.data says what is missing)
    if isinstance(config, dict) and config.get("kind") == "baseline":
        raise NeuroCNNError(
            f"{path} is a baseline run (neurocnn baseline); predict/evaluate need a `neurocnn cv` run"
        )
    return RunFolder(path)


def check_leakage(run, cohort, strict: bool) -> None:  # type: ignore[no-untyped-def]
    """Warn about scans of ``cohort`` (a Cohort, or a prepared cohort given with --cache) that were
    training scans of the run (the same file, by sha256), or refuse them with --strict; note subjects
    whose participant id alone was in the training cohort (with --strict too: an id cannot tell the
    same person from another, BIDS datasets all have a sub-01)."""
    from neurocnn.data.cache import PreparedCohort
    from neurocnn.evaluation.predict import cache_leakage, leakage

    found = cache_leakage(run, cohort) if isinstance(cohort, PreparedCohort) else leakage(run, cohort)
    scans, ids = list(found.scans.values()), list(found.ids.values())
    if scans and strict:
        raise NeuroCNNError(
            f"{len(scans)} subject(s) have scans that were in the training data of {run.path} (--strict):",
            problems=scans[:20],
        )
    if scans:
        _say(
            f"warning: {len(scans)} subject(s) have scans that were in the training data; "
            "their predictions are optimistic:",
            scans,
        )
    if ids:
        _say(
            f"note: {len(ids)} subject(s) have a participant id of the training cohort, with other files "
            "(another session of the same person would make their predictions optimistic):",
            ids,
        )


def _say(head: str, lines: list[str]) -> None:
    print(head, file=sys.stderr)
    for line in lines[:20]:
        print(f"  - {line}", file=sys.stderr)


def training_masked(run) -> tuple[bool | None, str | None]:  # type: ignore[no-untyped-def]
    """(whether the run's training scans were prepared with a brain mask, the mask column), from its
    data.json; an older run's from its training cache's cache.json; (None, None) when unknown."""
    import json

    data = run.data()
    if data.get("masked") is not None:
        return bool(data["masked"]), data.get("mask_column")
    info = Path(data.get("cache") or "") / "cache.json"
    try:
        recorded = json.loads(info.read_text())
    except (OSError, ValueError):
        return None, None
    files = recorded.get("subject_files")
    if files is None:
        return None, None
    return any("mask" in f for f in files), recorded.get("mask_column")


def check_mask(run, cohort, *, scans: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Refuse scans (a Cohort, or a prepared cohort given with --cache) prepared with a brain mask when
    the training scans were not, or without one when they were: the mask sets what is zeroed, where
    the grid is centred and where intensities are normalised, so the fold models would see inputs
    unlike their training data."""
    from neurocnn.data.cache import PreparedCohort

    trained, column = training_masked(run)
    if isinstance(cohort, PreparedCohort):
        given = cohort.masked
        where = f"{cohort.path} was prepared"
    else:
        given = any(s.mask is not None for s in cohort.subjects)
        where = "these scans would be prepared"
    if trained is None or given is None or trained == given:
        return
    if trained:
        named = f" (mask {column!r})" if column else ""
        if scans:
            fix = "give a --cohort table with a brain-mask column and --mask COLUMN"
        elif isinstance(cohort, PreparedCohort):
            fix = "give --cohort TABLE with --mask COLUMN, and the scans are prepared like the run's"
        else:
            fix = "give --mask COLUMN (the brain masks of these scans)"
        raise NeuroCNNError(
            f"the training scans of {run.path} were prepared with a brain mask{named}, {where} without "
            f"one; {fix}"
        )
    fix = "give --cohort TABLE without --mask" if isinstance(cohort, PreparedCohort) else "drop --mask"
    raise NeuroCNNError(
        f"the training scans of {run.path} were prepared without a brain mask, {where} with one; {fix}"
    )
