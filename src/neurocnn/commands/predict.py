"""`neurocnn predict`: class probabilities for new scans from a run's fold models, as CSV."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neurocnn.commands import _run_cohort
from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "predict",
        help="predict new scans with a trained run",
        description="Prepare the scans exactly as the run's training cohort was and write, per scan, "
        "the ensemble's mean class probabilities, its decision and the majority vote of the fold "
        "models. Warns about (or refuses with --strict) scans that were training scans of the run "
        "(the same file), and notes participant ids of the training cohort given with other files.",
        example="neurocnn predict runs/mrinet scans/sub-101_gm.nii.gz scans/sub-102_gm.nii.gz\n"
        "neurocnn predict runs/mrinet --cohort new/participants.tsv --out predictions.csv",
    )
    _run_cohort.add_arguments(p)
    p.add_argument("scans", nargs="*", type=Path, default=[], help="NIfTI scans (one-modality runs)")
    p.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.data.cache import open_cache
    from neurocnn.data.cohort import read_cohort
    from neurocnn.evaluation.ensemble import ensemble_predictions
    from neurocnn.evaluation.predict import (
        check_prepared_alike,
        cohort_from_scans,
        prepare_like_run,
        remove_created,
    )

    if args.out is not None:
        check_out(args.out, args.overwrite)
    run_folder = _run_cohort.cnn_run(args.run)
    created: list[Path] = []  # what a failed prediction removes: the scans prepared for it
    data = run_folder.data()
    if args.cache is not None:
        cache = open_cache(args.cache)
        check_prepared_alike(run_folder, cache)
        _run_cohort.check_mask(run_folder, cache)
        _run_cohort.check_leakage(run_folder, cache, args.strict)
    else:
        if args.scans and args.cohort:
            raise NeuroCNNError("give scans or --cohort, not both")
        if args.scans and args.mask:
            raise NeuroCNNError("--mask names a column of a --cohort table; give the scans in a table")
        if args.scans:
            if len(data["modalities"]) > 1:
                raise NeuroCNNError(
                    f"the run uses {len(data['modalities'])} modalities ({', '.join(data['modalities'])}); "
                    "give a --cohort table with one column per modality"
                )
            cohort = cohort_from_scans(args.scans, data["modalities"][0])
        elif args.cohort:
            images = args.images.split(",") if args.images else data["modalities"]
            cohort = read_cohort(args.cohort, images=images, mask=args.mask, require_labels=False)
        else:
            raise NeuroCNNError("give scans (SCAN ...) or a --cohort table")
        _run_cohort.check_mask(run_folder, cohort, scans=bool(args.scans))
        _run_cohort.check_leakage(run_folder, cohort, args.strict)
        cache = prepare_like_run(
            run_folder, cohort, name="predict", jobs=args.jobs, progress=not args.no_progress, created=created
        )
    try:
        table, _ = ensemble_predictions(
            run_folder.path, cache, batch_size=args.batch_size, device=_run_cohort.device(args.device)
        )
    except BaseException:
        remove_created(created)
        raise
    table = table.drop(columns=["index"])
    if args.out:
        check_out(args.out, args.overwrite)  # (again: the file may have appeared meanwhile)
        write_csv(table, args.out)
        print(f"{args.out}: {len(table)} prediction(s)", file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace a file (a participants table, an earlier result) unless told to."""
    if out.is_dir():
        raise NeuroCNNError(f"--out {out} is a folder; give the path of the CSV file to write")
    if out.exists() and not overwrite:
        raise NeuroCNNError(f"--out {out} exists; give another path, or --overwrite to replace it")
    if not out.parent.is_dir():
        raise NeuroCNNError(f"--out {out}: folder {out.parent} does not exist; create it first")


def write_csv(table, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Write next to ``out`` and rename, so that ``out`` is either the old file or the whole new one."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
