"""`neurocnn prepare`: cohort -> cache folder of prepared arrays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurocnn.commands._cohort_args import add_cohort_arguments, cohort_from_args, parse_shape
from neurocnn.commands._help import add_command, floats
from neurocnn.errors import NeuroCNNError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "prepare",
        help="reorient, mask, register, resample, normalise, cache",
        description="Prepare every subject onto one grid and write a cache folder "
        "(memory-mapped array, manifest, parameters, input hashes). An unchanged "
        "cohort is reused instantly; an interrupted run resumes.",
        example="neurocnn prepare ../shared/data/ixi/participants.csv --images t1 "
        "--mask dlmuse --label sex --covariates age --register --voxel-size 3 "
        "--out cache/ixi_3mm",
    )
    add_cohort_arguments(p)
    g = p.add_argument_group("preparation")
    g.add_argument("--out", type=Path, required=True, help="cache folder to write")
    g.add_argument(
        "--voxel-size",
        type=float,
        help="isotropic voxel size in mm (default: keep the input grid; with --register, 2 mm)",
    )
    g.add_argument("--shape", type=parse_shape, help="output shape, e.g. 58x70x58 (crop/pad)")
    g.add_argument(
        "--register",
        action="store_true",
        help="register to the MNI template (ANTsPy; --transform sets the kind)",
    )
    g.add_argument(
        "--template",
        default="icbm152_2009",
        help="registration template: icbm152_2009 (default, bundled) or a NIfTI path",
    )
    g.add_argument(
        "--transform",
        default="Affine",
        choices=["Rigid", "Similarity", "Affine"],
        help="registration transform (default Affine; Rigid keeps head size)",
    )
    g.add_argument(
        "--registration-seed",
        type=int,
        default=1,
        help="ANTs' random seed (default 1): the registration is then reproducible bit for bit; "
        "0 for ANTs' clock seed on every core (faster, differs from run to run)",
    )
    g.add_argument("--no-mask", action="store_true", help="do not zero voxels outside the mask")
    g.add_argument(
        "--normalise",
        default="zscore",
        choices=["zscore", "minmax", "none"],
        help="intensity normalisation per scan within the mask (default zscore)",
    )
    g.add_argument(
        "--clip",
        type=floats(2, allow_none=True),
        default=(0.5, 99.5),
        help="percentile clipping 'low,high' or 'none' (default 0.5,99.5)",
    )
    g.add_argument("--label-maps", default="", help="modalities that are label maps (nearest)")
    g.add_argument(
        "--dtype", default="float32", choices=["float32", "float16"], help="cache dtype (default float32)"
    )
    g.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --out cache prepared with other parameters or from another cohort (runs "
        "trained on it no longer match it); without it such a cache is refused. A cache of the same "
        "table and parameters whose scans changed is prepared again without it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.data.cohort_checks import label_warnings
    from neurocnn.data.prepare import prepare_cohort
    from neurocnn.data.preprocess import PrepareParams

    if args.registration_seed < 0:
        raise NeuroCNNError(
            f"--registration-seed must be 0 (ANTs' clock seed) or positive, got {args.registration_seed}"
        )
    cohort = cohort_from_args(args, require_labels=False)
    params = PrepareParams(
        voxel_size=args.voxel_size,
        shape=args.shape,
        registration=args.register,
        template=args.template,
        transform=args.transform,
        registration_seed=args.registration_seed or None,
        apply_mask=not args.no_mask,
        normalise=args.normalise,
        clip_percentiles=args.clip,
        label_maps=tuple(m for m in args.label_maps.split(",") if m),
        dtype=args.dtype,
    )
    for doubt in label_warnings(cohort.subjects, cohort.label_column):
        print(f"warning: {doubt}", file=sys.stderr)
    result = prepare_cohort(cohort, args.out, params, jobs=args.jobs, overwrite=args.overwrite)
    if result.changed_files:
        more = f" and {len(result.changed_files) - 1} more" if len(result.changed_files) > 1 else ""
        print(
            f"note: {len(result.changed_files)} input file(s) changed since {args.out} was prepared "
            f"({result.changed_files[0]}{more}); it was prepared again",
            file=sys.stderr,
        )
    shape = "x".join(map(str, result.cache.shape[2:]))
    if result.reused:
        print(f"{args.out}: up to date ({result.cache.shape[0]} subjects, {shape}); nothing to do")
    else:
        print(
            f"{args.out}: prepared {result.prepared} subject(s)"
            + (f", {result.resumed} resumed from an earlier run" if result.resumed else "")
            + f" in {result.seconds:.0f} s; array {result.cache.shape} {result.cache.info['dtype']}"
        )
    return 0
