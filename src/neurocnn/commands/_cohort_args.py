"""Arguments that name a cohort, shared by the verbs that read one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neurocnn.data.cohort import Cohort


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cohort")
    g.add_argument("table", type=Path, nargs="?", help="participants table (CSV/TSV)")
    g.add_argument(
        "--images",
        default="t1",
        help="image column(s), one per modality, comma-separated (default t1; with --bids: the name "
        "of the modality the --pattern finds)",
    )
    g.add_argument("--label", help="label column (e.g. diagnosis, sex)")
    g.add_argument("--covariates", default="", help="covariate columns, comma-separated")
    g.add_argument(
        "--mask",
        help="brain-mask column (binary mask or label map, > 0 is brain); with --bids, a path under "
        "the folder with {sub} (and {ses}) placeholders, e.g. derivatives/masks/sub-{sub}_mask.nii.gz",
    )
    g.add_argument("--classes", help="class order, comma-separated (default: sorted labels)")
    g.add_argument("--bids", type=Path, help="BIDS-like folder instead of a table")
    g.add_argument(
        "--pattern",
        default="sub-*/anat/sub-*_T1w.nii.gz",
        help="glob under --bids (default sub-*/anat/sub-*_T1w.nii.gz)",
    )


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cohort_from_args(args: argparse.Namespace, *, require_labels: bool) -> Cohort:
    from neurocnn.data.cohort import cohort_from_bids, read_cohort
    from neurocnn.errors import NeuroCNNError

    classes = _split(args.classes) or None
    if args.bids is not None:
        images = _split(args.images)
        if len(images) > 1:
            raise NeuroCNNError(
                f"--bids reads one modality (the files --pattern finds), not {', '.join(images)}; "
                "for several modalities give a participants table with one column per modality"
            )
        if args.mask is not None and "{sub}" not in args.mask:
            raise NeuroCNNError(
                f"--mask {args.mask!r}: with --bids it is a path pattern with {{sub}}, "
                "e.g. derivatives/masks/sub-{sub}_mask.nii.gz"
            )
        return cohort_from_bids(
            args.bids,
            args.pattern,
            modality=images[0] if images else "t1",
            label=args.label,
            covariates=_split(args.covariates),
            mask_pattern=args.mask,
            classes=classes,
            require_labels=require_labels,
        )
    if args.table is None:
        raise NeuroCNNError("give a participants table (TABLE) or a BIDS folder (--bids)")
    return read_cohort(
        args.table,
        images=_split(args.images),
        label=args.label,
        covariates=_split(args.covariates),
        mask=args.mask,
        classes=classes,
        require_labels=require_labels,
    )


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().replace("×", "x").split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 61x73x61")
    return parts  # type: ignore[return-value]
