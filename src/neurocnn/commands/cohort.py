"""`neurocnn cohort`: read and validate a cohort, print what is in it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from neurocnn.commands._cohort_args import add_cohort_arguments, cohort_from_args
from neurocnn.commands._help import add_command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "cohort",
        help="check a cohort table and its images",
        description="Read a participants table (or a BIDS folder), read every image "
        "once, and report every problem of every subject in one message.",
        example="neurocnn cohort participants.tsv --images gm,wm --label diagnosis "
        "--covariates age,sex --folds 10",
    )
    add_cohort_arguments(p)
    p.add_argument("--folds", type=int, help="check that each class has at least this many subjects")
    p.add_argument(
        "--unlabelled-ok", action="store_true", help="allow subjects without a label (for prediction)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.data.cohort import validate_cohort
    from neurocnn.data.cohort_checks import label_warnings
    from neurocnn.errors import NeuroCNNError

    cohort = cohort_from_args(args, require_labels=not args.unlabelled_ok)
    doubts = label_warnings(cohort.subjects, cohort.label_column)
    found = sorted({s.label for s in cohort.subjects if s.label is not None})
    if args.folds and cohort.label_column and len(found) == 1:
        raise NeuroCNNError(
            f"{cohort.source}: a classifier needs at least two classes, found {found} in label column "
            f"{cohort.label_column!r}; choose another --label, or add subjects of the other class(es)"
        )
    validate_cohort(cohort, n_folds=args.folds, require_labels=not args.unlabelled_ok)
    counts = Counter(s.label for s in cohort.subjects)
    classes = ", ".join(f"{c} (index {i}): {counts[c]}" for i, c in enumerate(cohort.classes))
    print(
        f"{cohort.source}: {len(cohort)} subjects, {len({s.participant_id for s in cohort.subjects})}"
        f" participants, modalities {', '.join(cohort.modalities)}; all images readable"
    )
    if cohort.label_column:
        print(
            f"label {cohort.label_column!r}: {classes}"
            + (f"; unlabelled: {counts[None]}" if counts[None] else "")
        )
    for doubt in doubts:
        print(f"warning: {doubt}", file=sys.stderr)
    return 0
