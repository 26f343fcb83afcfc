"""`neurocnn interpret`: attribution maps, group maps, atlas tables and sanity checks of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError

METHOD_NAMES = {
    "gradcam": "gradcam",
    "grad-cam": "gradcam",
    "hirescam": "hirescam",
    "guided": "guided_backprop",
    "guided_backprop": "guided_backprop",
    "guided-backprop": "guided_backprop",
    "mp": "perturbation",
    "perturbation": "perturbation",
    "occlusion": "occlusion",
    "ig": "integrated_gradients",
    "integrated_gradients": "integrated_gradients",
    "integrated-gradients": "integrated_gradients",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``interpret`` verb to the CLI."""
    p = add_command(
        sub,
        "interpret",
        help="explain a trained run: Grad-CAM, guided backprop, Meaningful Perturbation, atlas tables",
        description="Each fold's best model explains its own test subjects (out-of-fold maps). "
        "Writes per-subject maps (4D NIfTI), per-class and conjoined group maps on the prepared "
        "grid, region scores for each atlas (resampled through the affines), Dice and rank "
        "correlation between methods, accuracy on inputs masked by each group map, and on request "
        "the model-randomisation test, the first-layer analysis, voxel-wise t-tests and, for "
        "synthetic cohorts, how well the maps find the planted regions. Without a run folder, "
        "--checkpoint with --cache and --model explains every subject of a cache with one model.",
        example="neurocnn interpret runs/mrinet --methods gradcam,guided,mp --perturbation-subjects 4\n"
        "neurocnn interpret runs/mrinet --atlas aal2 --atlas jhu.nii.gz:jhu.json --randomisation\n"
        "neurocnn interpret --checkpoint best.ckpt --cache cache/ --model mrinet --out maps/",
    )
    p.add_argument("run", type=Path, nargs="?", help="run folder written by `neurocnn cv`")
    p.add_argument("--out", type=Path, help="output folder (default RUN/interpret)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier interpretation in --out (never a run folder or any other folder)",
    )
    p.add_argument(
        "--methods",
        default="gradcam,guided_backprop,perturbation",
        help="comma-separated: gradcam, hirescam, guided_backprop (guided), perturbation (mp), "
        "occlusion, integrated_gradients (ig)",
    )
    p.add_argument(
        "--atlas",
        action="append",
        metavar="NAME|IMAGE:LABELS",
        help="bundled atlas name (aal2, harvard_oxford, ...) or a label map with its table; "
        "repeatable (default aal2)",
    )
    p.add_argument("--top", type=int, default=5, help="regions listed per map (default 5)")
    p.add_argument(
        "--folds", help="comma-separated outer folds (default all finished; failed or unfinished: skipped)"
    )
    p.add_argument("--repeat", type=int, default=0, help="repeat whose folds are used (default 0)")
    p.add_argument("--subjects", type=int, help="test subjects explained per fold (default all)")
    p.add_argument(
        "--perturbation-subjects",
        type=int,
        default=4,
        help="subjects per fold for Meaningful Perturbation, classes in turn (default 4; 0 = all; "
        "about 1.5-3 min each on a 2-core CPU)",
    )
    p.add_argument("--mp-iterations", type=int, help="Meaningful Perturbation steps at most (default 300)")
    p.add_argument(
        "--mp-bf16",
        action="store_true",
        help="Meaningful Perturbation's network in bfloat16 (1.6× faster on CPUs with AVX-512 BF16)",
    )
    p.add_argument(
        "--mp-sigma-mask",
        type=float,
        metavar="VOXELS",
        help="Meaningful Perturbation's mask blur σm in voxels of the cache (default 10, S3's; with "
        "3 the maps found the planted regions of the ground-truth cohort, benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--layer",
        help="Grad-CAM/HiResCAM target layer, e.g. features.block1 (default: the model's); for MriNet "
        "prefer --methods hirescam --layer features.block1 (see benchmarks/RESULTS.md)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--target", choices=["predicted", "true"], default="predicted", help="class explained")
    p.add_argument(
        "--top-percent",
        type=float,
        help="threshold maps at their top x%% (default: S3's fixed thresholds, 0.65 for Grad-CAM)",
    )
    p.add_argument("--no-masked-eval", action="store_true", help="skip the masked re-evaluation")
    p.add_argument("--randomisation", action="store_true", help="model-randomisation sanity check")
    p.add_argument("--first-layer", action="store_true", help="first hidden layer analysis")
    p.add_argument("--voxel-stats", action="store_true", help="voxel-wise t-test of the inputs (FDR)")
    p.add_argument("--ground-truth", type=Path, metavar="COHORT", help="synthetic cohort folder")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("without a run folder")
    g.add_argument("--checkpoint", type=Path, help="a Lightning checkpoint or state dict")
    g.add_argument("--cache", type=Path, help="prepared cohort to explain")
    g.add_argument("--model", help="model name of the checkpoint")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def build_options(args: argparse.Namespace) -> Any:
    """`InterpretOptions` from the parsed arguments."""
    from pydantic import ValidationError

    from neurocnn.interpret.perturbation import PerturbationConfig
    from neurocnn.interpret.pipeline import InterpretOptions

    methods = []
    for name in (m.strip().lower() for m in args.methods.split(",") if m.strip()):
        if name not in METHOD_NAMES:
            raise NeuroCNNError(
                f"--methods: unknown method {name!r}; choose from {', '.join(sorted(set(METHOD_NAMES)))}"
            )
        methods.append(METHOD_NAMES[name])
    folds = None
    if args.folds:
        try:
            folds = tuple(int(f) for f in args.folds.split(","))
        except ValueError as exc:
            raise NeuroCNNError(f"--folds {args.folds!r}: expected comma-separated integers") from exc
    mp_options: dict[str, Any] = {"precision": "bfloat16" if args.mp_bf16 else "float32"}
    if args.mp_iterations:
        mp_options["max_iter"] = args.mp_iterations
    if args.mp_sigma_mask is not None:
        mp_options["sigma_mask"] = args.mp_sigma_mask
    try:
        mp = PerturbationConfig(**mp_options)
    except ValidationError as exc:
        raise NeuroCNNError(f"Meaningful Perturbation options: {exc.errors()[0]['msg']}") from exc
    try:
        return InterpretOptions(
            methods=tuple(dict.fromkeys(methods)),
            atlases=tuple(args.atlas or ["aal2"]),
            top=args.top,
            repeat=args.repeat,
            folds=folds,
            subjects_per_fold=args.subjects,
            perturbation_subjects_per_fold=args.perturbation_subjects or None,
            batch_size=args.batch_size,
            target=args.target,
            top_percent=args.top_percent,
            masked_eval=not args.no_masked_eval,
            randomisation=args.randomisation,
            first_layer=args.first_layer,
            voxel_stats=args.voxel_stats,
            ground_truth=str(args.ground_truth) if args.ground_truth else None,
            perturbation=mp,
            layer=args.layer,
            seed=args.seed,
        )
    except ValidationError as exc:
        problems = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise NeuroCNNError("invalid interpret options", problems=problems) from None


def _model_options(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NeuroCNNError(f"--model-option {item!r}: expected KEY=VALUE, e.g. dropout=0.2")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    """Interpret the run (or checkpoint), print the summary; return the exit code."""
    from neurocnn.interpret.markdown import summary_lines
    from neurocnn.interpret.pipeline import interpret_checkpoint, interpret_run

    options = build_options(args)
    if args.checkpoint is not None:
        if args.cache is None or args.model is None or args.out is None:
            raise NeuroCNNError("--checkpoint needs --cache, --model and --out")
        summary = interpret_checkpoint(
            args.checkpoint,
            args.cache,
            args.out,
            options,
            model=args.model,
            model_options=_model_options(args.model_option),
            overwrite=args.overwrite,
        )
        out = args.out
    else:
        if args.run is None:
            raise NeuroCNNError("give a run folder (neurocnn interpret RUN), or --checkpoint with --cache")
        out = args.out or args.run / "interpret"
        summary = interpret_run(args.run, out, options, overwrite=args.overwrite)
    for line in summary_lines(summary):
        print(line)
    print(f"maps and tables in {out}")
    return 0
