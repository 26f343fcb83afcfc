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
    g.add_argument("--mask", help="brain-mask column")
    g.add_argument("--cache", type=Path, help="an already prepared cohort instead of a table")
    g = p.add_argument_group("inference")
    g.add_argument("--strict", action="store_true", help="refuse scans that were in the training data")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    g.add_argument("--batch-size", type=int, default=8, help="default 8")
    g.add_argument("--jobs", type=int, help="preparation worker processes")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_leakage(run, cohort, strict: bool) -> None:  # type: ignore[no-untyped-def]
    """Warn about (or, with --strict, refuse) scans of ``cohort`` (a Cohort, or a prepared cohort
    given with --cache) that were in the run's training data."""
    from neurocnn.data.cache import PreparedCohort
    from neurocnn.evaluation.predict import cache_leakage, leakage

    problems = cache_leakage(run, cohort) if isinstance(cohort, PreparedCohort) else leakage(run, cohort)
    if not problems:
        return
    if strict:
        raise NeuroCNNError(
            f"{len(problems)} participant(s) or file(s) were in the training data of {run.path} (--strict):",
            problems=problems[:20],
        )
    print(
        f"warning: {len(problems)} participant(s) or file(s) were in the training data; "
        "their predictions are optimistic:",
        file=sys.stderr,
    )
    for p in problems[:20]:
        print(f"  - {p}", file=sys.stderr)


def warn_missing_mask(run, cohort) -> None:  # type: ignore[no-untyped-def]
    import json

    data = run.data()
    cache = Path(data.get("cache", ""))
    info = cache / "cache.json"
    if not info.exists():
        return
    masked = any("mask" in f for f in json.loads(info.read_text()).get("subject_files", []))
    unmasked = any(s.mask is None for s in cohort.subjects)
    if masked and unmasked and data.get("params", {}).get("apply_mask"):
        print(
            "warning: the training scans were masked; give --mask so that new scans are prepared "
            "the same way",
            file=sys.stderr,
        )
