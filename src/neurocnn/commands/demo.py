"""`neurocnn demo`: the main job on the embedded synthetic cohort, end to end.

Synthetic multimodal cohort (grey matter, white matter, FA; planted effects) → prepare → one split
table → a small 3D CNN (MriNet, S3, the three maps as input channels), a multi-branch S1 model (one
branch per modality) and the voxel SVM on the same folds →
interpretation of the CNN (Grad-CAM, guided backprop, Meaningful Perturbation on a few subjects,
checked against the planted ground truth) → the HTML report. Every stage is reused when it is
already done, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurocnn.commands._help import add_command
from neurocnn.errors import NeuroCNNError

MARKER = "neurocnn_demo.json"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo: the default fits 10 minutes on a 2-core CPU, `quick` about one."""

    subjects: int
    voxel_size: float
    effect_size: float
    folds: int
    epochs: int  # MriNet
    s1_epochs: int  # the S1 multi-branch model
    s1_model: str  # the trunk of each of its branches
    mp_subjects_per_fold: int
    mp_iterations: int
    randomisation: bool


FULL = DemoPlan(
    subjects=160,
    voxel_size=6.0,
    effect_size=0.25,
    folds=3,
    epochs=24,
    s1_epochs=24,
    s1_model="inception_1",
    mp_subjects_per_fold=1,
    mp_iterations=150,
    randomisation=True,
)
QUICK = DemoPlan(
    subjects=40,
    voxel_size=6.0,
    effect_size=0.2,
    folds=3,
    epochs=3,
    s1_epochs=3,
    s1_model="inception_1",
    mp_subjects_per_fold=1,
    mp_iterations=20,
    randomisation=False,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "demo",
        help="run the whole pipeline on a synthetic cohort",
        description="Make a synthetic multimodal cohort (grey matter, white matter, FA) "
        "with planted effects, prepare it, cross-validate a small 3D CNN, a multimodal "
        "model and the voxel SVM on the same folds, interpret the CNN and write the "
        "report. Re-running reuses what is already done.",
        example="neurocnn demo --quick --out neurocnn_demo",
    )
    p.add_argument(
        "--out", type=Path, default=Path("neurocnn_demo"), help="demo folder (default neurocnn_demo)"
    )
    p.add_argument("--quick", action="store_true", help="small cohort, 3 epochs (one to two minutes)")
    p.add_argument("--subjects", type=int, help="cohort size (default 160, or 40 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of cohort, splits and training (default 0)")
    p.set_defaults(func=run)


def _cv_config(
    cache: Path, splits: Path, model: dict[str, Any], lr: float, epochs: int, plan: DemoPlan, seed: int
) -> Any:
    from neurocnn.training import parse_config

    return parse_config(
        {
            "cache": str(cache),
            "seed": seed,
            "model": model,
            "splits": {"table": str(splits), "folds": plan.folds},
            "optim": {"optimizer": "adam", "lr": lr},
            "train": {"max_epochs": epochs, "batch_size": 8, "early_stopping": None},
        }
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from neurocnn.baselines.runs import CVOptions, run_svm
    from neurocnn.data import splits as S
    from neurocnn.data.cohort import read_cohort
    from neurocnn.data.prepare import prepare_cohort
    from neurocnn.data.preprocess import PrepareParams
    from neurocnn.data.synthetic import default_spec, make_cohort
    from neurocnn.interpret.perturbation import PerturbationConfig
    from neurocnn.interpret.pipeline import InterpretOptions, interpret_run
    from neurocnn.report import build_report
    from neurocnn.training import run_cv

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    console = Console()
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise NeuroCNNError(f"{out} exists and is not a neurocnn demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    base = QUICK if args.quick else FULL
    plan = DemoPlan(**{**base.__dict__, "subjects": args.subjects or base.subjects})
    spec = default_spec(plan.subjects, plan.voxel_size, effect_size=plan.effect_size, seed=args.seed)
    record = {"spec": spec.model_dump(mode="json"), "plan": plan.__dict__}
    previous = json.loads((out / MARKER).read_text()) if (out / MARKER).exists() else None
    if previous is not None and previous != record:
        raise NeuroCNNError(f"{out} holds a demo made with other settings; use another --out")
    (out / MARKER).write_text(json.dumps(record, indent=1))
    start = time.perf_counter()

    def stage(text: str) -> None:
        console.rule(f"[bold]{text}[/bold] [dim]({time.perf_counter() - start:.0f} s)[/dim]")

    stage("1/6 synthetic cohort")
    cohort_dir = out / "cohort"
    recorded = cohort_dir / "cohort.json"
    if recorded.exists() and json.loads(recorded.read_text()).get("spec") == spec.model_dump(mode="json"):
        console.print(f"[dim]{cohort_dir} is up to date (reused)[/dim]")
    else:
        with Progress(console=console) as bar:
            task = bar.add_task("synthesising", total=plan.subjects)
            make_cohort(
                spec,
                cohort_dir,
                overwrite=True,
                progress=lambda done, total: bar.update(task, completed=done),
            )

    stage("2/6 prepare")
    cohort = read_cohort(
        cohort_dir / "participants.tsv",
        images=list(spec.modalities),
        label="label",
        covariates=["age", "sex"],
    )
    # tissue maps already on the MNI grid: keep their scale (no z-scoring of probabilities)
    prepared = prepare_cohort(cohort, out / "cache", PrepareParams(normalise="none", clip_percentiles=None))
    console.print(f"cache {prepared.cache.shape} ({'reused' if prepared.reused else 'written'})")

    stage("3/6 splits and cross-validation")
    runs = out / "runs"
    splits_path = runs / "splits.tsv"
    S.save_splits(S.kfold(prepared.cache.manifest, plan.folds, seed=args.seed), splits_path)
    # Chosen on the default cohort (benchmarks/RESULTS.md, "`neurocnn demo`: wall time"): MriNet at
    # Adam 3e-4 (1e-3 collapsed to one class), with the three maps as input channels: one trunk
    # instead of one per modality costs about a third of the time per epoch, and scored 0.86 [0.81,
    # 0.91] in 24 epochs against 0.78 [0.72, 0.84] for three branches in 16. S1's multimodal model
    # with inception_1 branches at Adam 3e-4 for 24 epochs: 0.87 [0.82, 0.92]; its sequential_2
    # branches stayed at chance (0.50-0.57) at every rate tried, and inception_1 needs the 24 epochs
    # (its loss starts to fall near epoch 14; 16 epochs: 0.74).
    models = {
        "mrinet": ({"name": "mrinet", "modalities": "channels"}, 3e-4, plan.epochs),
        "s1_multimodal": ({"name": plan.s1_model, "modalities": "branches"}, 3e-4, plan.s1_epochs),
    }
    for name, (model, lr, epochs) in models.items():
        if (runs / name / "summary.json").exists():
            console.print(f"[dim]{name}: finished earlier (reused)[/dim]")
            continue
        console.print(f"training {name} ({plan.folds} folds, {epochs} epochs)")
        run_cv(
            _cv_config(out / "cache", splits_path, model, lr, epochs, plan, args.seed),
            runs / name,
            resume=(runs / name).exists(),
        )
    if not (runs / "svm" / "summary.json").exists():
        console.print("voxel SVM with nested grid search on the same folds")
        run_svm(
            out / "cache",
            runs / "svm",
            CVOptions(splits=runs / "mrinet", inner_folds=3, save_models=False, overwrite=True),
        )

    stage("4/6 interpretation of MriNet")
    interp = runs / "mrinet" / "interpret"
    if not (interp / "summary.json").exists():
        options = InterpretOptions(
            methods=("gradcam", "guided_backprop", "perturbation"),
            atlases=("aal2",),
            perturbation_subjects_per_fold=plan.mp_subjects_per_fold,
            randomisation=plan.randomisation,
            randomisation_subjects=4,
            ground_truth=str(cohort_dir),
            perturbation=PerturbationConfig(max_iter=plan.mp_iterations),
        )
        interpret_run(runs / "mrinet", interp, options)

    stage("5/6 report")
    report = build_report(
        [runs / "mrinet", runs / "s1_multimodal", runs / "svm"],
        out / "report.html",
        title="neurocnn demo: synthetic cohort with planted effects",
    )

    stage("6/6 summary")
    for line in summary_lines(runs, interp):
        console.print(line)
    console.print(f"report: {report}   ({time.perf_counter() - start:.0f} s in all)")
    return 0


def summary_lines(runs: Path, interp: Path) -> list[str]:
    """Three lines: the CNNs, the baseline, and whether the maps found the planted regions."""
    import pandas as pd

    def ba(name: str) -> str:
        s = json.loads((runs / name / "summary.json").read_text())["pooled"]["balanced_accuracy"]
        return f"{s['value']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"

    lines = [
        f"CNNs (balanced accuracy, 95% CI): MriNet {ba('mrinet')}, S1 multimodal {ba('s1_multimodal')}",
        f"baseline: voxel SVM {ba('svm')} (same folds)",
    ]
    truth = interp / "ground_truth.tsv"
    if truth.exists():
        t = pd.read_csv(truth, sep="\t")
        parts = []
        for method, g in t.groupby("method", sort=False):
            parts.append(
                f"{method} mass in planted regions ×{g['mass_share'].sum() / g['volume_share'].sum():.1f}"
                " of their volume share"
            )
        lines.append("maps vs ground truth: " + "; ".join(parts))
    return lines
