"""Real data: sex classification on IXI with the seed CNNs against the classical baselines (issue 7).

Stages (each resumable; finished runs are reused):

1. ``data``: the T1 cohort prepared by ``benchmarks/baselines_ixi.py``'s preparation (145 IXI T1
   scans, affine registration to MNI, brain-masked with the ``dlmuse`` label map, z-scored, 3 mm,
   61×73×61: ``benchmarks/_work/ixi_3mm``), and a tissue cohort for the multimodal model: grey- and
   white-matter maps made from each subject's DLMUSE segmentation (derived regions 601 = all grey
   matter, 604 = all white matter of ``muse_derived_regions.csv``), registered with the T1's
   transform and resampled linearly (partial-volume fractions), 3 mm.
2. ``cnn``: 10-fold CV of every CNN in ``--only`` on the baselines' split table
   (``benchmarks/_work/baselines/splits.tsv``: the same folds as every baseline; 10 % of each
   training fold is the validation set for early stopping and checkpoint selection).
3. ``small``: S2's small-sample experiment: the same folds, a stratified 20 % of each training
   fold (``--small-fraction``), ``--small-repeats`` draws from ``--small-first`` on (draw r seeds
   both the subset and the weights), the voxel SVM on the same subjects.
4. ``interpret``: Grad-CAM and guided backprop of the best CNN, group maps, top-5 regions of AAL2
   (grey matter) and of the JHU white-matter atlas (``../shared/data/atlases``).
5. ``results``: `neurocnn.evaluation.compare.compare_runs` over the CNNs and the baselines (balanced
   accuracy and AUC with bootstrap CIs, paired tests of each CNN against the best baseline), the
   HTML report, and ``benchmarks/results/ixi_sex.md``.

    .venv/bin/python benchmarks/ixi_sex.py                         # everything (hours on a CPU)
    .venv/bin/python benchmarks/ixi_sex.py --stage cnn --only mrinet --epochs 30
    .venv/bin/python benchmarks/ixi_sex.py --stage results

Run ``benchmarks/baselines_ixi.py`` first: it prepares the T1 cohort and runs the baselines.
S2's PIF-CNN and its plain baseline are built for 1 mm inputs (the baseline needs at least 98³
voxels; at 3 mm the PIF-CNN's trunk leaves a 1-voxel feature map): they run on a 1.5 mm cohort
(121×145×121, prepared on request with ``--stage data --pif``, 8 min). On the 2-core CPU one
draw of the small-sample experiment (5 folds, 25 training subjects, 30 epochs) took 10–17 min per
network (RESULTS.md); at that step rate the full training folds (about 127 subjects) would take
about 100 min per network for 10 folds (an estimate, not run): a GPU job.
``benchmarks/ixi_small.py`` tabulates the finished draws.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from ixi_sex_data import (  # benchmarks/ixi_sex_data.py: paths and the data stage
    BASE,
    JHU,
    PIF_CACHE,
    RIGID_CACHE,
    ROOT,
    SPLITS,
    T1_CACHE,
    TISSUE_CACHE,
    WORK,
    prepare_data,
    prepare_rigid,
    run_rigid_baselines,
)
from neurocnn.hardware import fast_bfloat16

RESULTS = ROOT / "benchmarks" / "results" / "ixi_sex.md"
BASELINES = ("svm_voxels", "svm_voxels_default", "regional_select", "regional_xgb", "regional_lr")
DATE = datetime.date.today().isoformat()  # the day the results file is written

# name -> (description, cache, model section)
CNNS: dict[str, tuple[str, Path, dict[str, Any]]] = {
    "mrinet": ("MriNet (S3, Xin et al. 2019), T1", T1_CACHE, {"name": "mrinet"}),
    "mrinet_rigid": (
        "MriNet, T1 registered rigidly (head size kept)",
        RIGID_CACHE,
        {"name": "mrinet"},
    ),
    "sequential_2": ("S1 sequential_2, T1", T1_CACHE, {"name": "sequential_2"}),
    "inception_1": ("S1 inception_1, T1", T1_CACHE, {"name": "inception_1"}),
    "s1_multimodal": (
        "S1 sequential_2, one branch per modality: grey- and white-matter maps",
        TISSUE_CACHE,
        {"name": "sequential_2", "modalities": "branches"},
    ),
    "s1_multimodal_inception": (
        "S1 inception_1, one branch per modality: grey- and white-matter maps",
        TISSUE_CACHE,
        {"name": "inception_1", "modalities": "branches"},
    ),
    "mrinet_tissue": (
        "MriNet, grey- and white-matter maps as two input channels",
        TISSUE_CACHE,
        {"name": "mrinet", "modalities": "channels"},
    ),
    "densenet121": ("DenseNet-121 3D (S4), T1", T1_CACHE, {"name": "densenet121"}),
    "channel_dimension": (
        "S4's channel-dimension model: 2D DenseNet-121, the 61 axial slices as channels, T1",
        T1_CACHE,
        {"name": "channel_dimension"},
    ),
    "pif_cnn": ("PIF-CNN (S2), T1 at 1.5 mm", PIF_CACHE, {"name": "pif_cnn"}),
    "pif_baseline": ("plain 5-conv CNN (S2's baseline), T1 at 1.5 mm", PIF_CACHE, {"name": "pif_baseline"}),
}
DEFAULT_CNNS = ("mrinet", "sequential_2", "inception_1", "s1_multimodal")


def quiet() -> None:
    import lightning.pytorch  # noqa: F401  (sets its logger to INFO on import)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def splits_without_val() -> Path:
    """The baselines' split table with each fold's validation subjects moved to its training set
    (for training to a fixed schedule and keeping the last epoch: no checkpoint selection)."""
    from neurocnn.data.splits import load_splits, save_splits

    table = load_splits(SPLITS)
    table["role"] = table["role"].replace({"val": "train"})
    return save_splits(table, WORK / "splits_no_val.tsv")


def cv_config(name: str, args: argparse.Namespace, **splits: Any) -> Any:
    from neurocnn.training import parse_config

    _, cache, model = CNNS[base_cnn(name) or name]
    table = splits_without_val() if args.no_val else SPLITS
    # S2: the baseline gets flips and translations, PIF models flips only (a shift misaligns patches).
    shift = None if model["name"] == "pif_cnn" else (-2, 3)
    return parse_config(
        {
            "cache": str(cache),
            "model": model,
            "splits": {"table": str(table), **splits},
            "optim": {
                "optimizer": args.optimizer,
                "lr": args.lr,
                "weight_decay": 1e-4,
                "schedule": args.schedule,
            },
            "train": {
                "max_epochs": args.epochs,
                "batch_size": 8,
                "early_stopping": args.patience,
                "min_epochs": args.min_epochs,
                "ema": args.ema,
                "select": "loss",  # ~13 validation subjects: the loss is a steadier guide than accuracy
                "precision": args.precision,
            },
            "augment": {"flip": True, "shift": shift},
            "seed": args.seed,
        }
    )


def run_cnns(names: list[str], args: argparse.Namespace) -> None:
    from neurocnn.training import run_cv

    for name in names:
        out = WORK / "runs" / f"{name}{args.suffix}"
        if (out / "summary.json").exists() and not args.fold:
            print(f"{name}: kept", flush=True)
            continue
        print(f"{name}: training", flush=True)
        t0 = time.perf_counter()
        result = run_cv(cv_config(name, args), out, folds=args.fold, resume=out.exists(), progress=True)
        _timing(out.name, time.perf_counter() - t0)
        if result.summary:
            pooled = result.summary["pooled"]["balanced_accuracy"]
            print(f"{name}: balanced accuracy {pooled['value']:.3f} {pooled['ci95']}", flush=True)


def run_small(names: list[str], args: argparse.Namespace) -> None:
    """S2's small-sample experiment: each CNN on a stratified 20 % of every training fold (the same
    subjects for every CNN of a repeat), and the voxel SVM on those same subjects. With
    ``--small-folds N`` only the first N outer folds are trained; their pooled predictions are then
    written to ``predictions_first{N}.csv`` of each run (`neurocnn compare` reads such a file)."""
    import pandas as pd

    from neurocnn.baselines import CVOptions, run_svm
    from neurocnn.data.splits import load_splits, save_splits
    from neurocnn.training import run_cv
    from neurocnn.training.runfolder import fold_name

    folds = list(range(args.small_folds)) if args.small_folds else None
    part = f"_first{args.small_folds}" if folds else ""
    pct = f"subset{round(100 * args.small_fraction)}"
    for r in range(args.small_first, args.small_first + args.small_repeats):
        splits = None
        for name in names:
            out = WORK / "runs" / f"{name}{args.suffix}_{pct}_r{r}"
            if not (out / "summary.json").exists():
                print(f"{out.name}: training", flush=True)
                config = cv_config(name, args).with_overrides(
                    {"splits.subset": args.small_fraction, "seed": r}
                )
                t0 = time.perf_counter()
                run_cv(config, out, folds=folds, resume=out.exists(), progress=True)
                _timing(out.name, time.perf_counter() - t0)
            if folds:
                per_fold = [pd.read_csv(out / "folds" / fold_name(0, f) / "predictions.csv") for f in folds]
                pd.concat(per_fold, ignore_index=True).to_csv(out / f"predictions{part}.csv", index=False)
            splits = out / "splits.tsv"
        svm = WORK / "baselines" / f"svm_voxels{'_no_val' if args.no_val else ''}_{pct}_r{r}{part}"
        if splits is not None and not (svm / "summary.json").exists():
            print(f"{svm.name}: running", flush=True)
            table = load_splits(splits)
            if folds:
                table = table[table["fold"].isin(folds)]
            svm.parent.mkdir(parents=True, exist_ok=True)
            splits = save_splits(table, svm.parent / f"{svm.name}_splits.tsv")
            run_svm(T1_CACHE, svm, CVOptions(splits=splits, n_jobs=2, save_models=False, progress=True))


def _timing(name: str, seconds: float) -> None:
    path = WORK / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=1))


def finished_cnns() -> list[str]:
    """Finished CNN runs: each model's own folder and its variants (``--suffix``), not the subsets."""
    runs = (WORK / "runs").glob("*/summary.json") if (WORK / "runs").exists() else []
    names = sorted(p.parent.name for p in runs if not re.search(r"_subset\d+_r\d+$", p.parent.name))
    return [n for n in names if base_cnn(n) is not None]


def base_cnn(run: str) -> str | None:
    """The CNNS entry a run folder belongs to (the longest name it equals or starts with + '_')."""
    matches = [n for n in CNNS if run == n or run.startswith(n + "_")]
    return max(matches, key=len) if matches else None


def describe(run: str) -> str:
    base = base_cnn(run)
    if base is None:
        return f"baseline ({run})"
    suffix = run[len(base) + 1 :].replace("_", " ")
    return CNNS[base][0] + (f", {suffix}" if suffix else "")


def pooled(run: Path, metric: str = "balanced_accuracy") -> float:
    return float(json.loads((run / "summary.json").read_text())["pooled"][metric]["value"])


def interpret_best(args: argparse.Namespace) -> Path | None:
    from neurocnn.interpret.perturbation import PerturbationConfig
    from neurocnn.interpret.pipeline import InterpretOptions, interpret_run

    done = [n for n in finished_cnns() if CNNS[base_cnn(n) or n][1] == T1_CACHE]
    if not done:
        print("no finished T1 CNN to interpret", flush=True)
        return None
    best = max(done, key=lambda n: pooled(WORK / "runs" / n))
    out = WORK / "runs" / best / "interpret"
    if not (out / "summary.json").exists():
        # The methods and settings that found the planted regions of the synthetic ground-truth
        # cohort with MriNet (benchmarks/RESULTS.md): HiResCAM at the first block (Grad-CAM cannot
        # localise through MriNet's flatten head) and Meaningful Perturbation with σm = 3 voxels.
        options = InterpretOptions(
            methods=("hirescam", "guided_backprop", "perturbation"),
            atlases=("aal2", f"{JHU}.nii.gz:{JHU}.json"),
            top=5,
            masked_eval=True,
            layer="features.block1" if base_cnn(best) == "mrinet" else None,
            perturbation_subjects_per_fold=1,
            perturbation=PerturbationConfig(
                sigma_mask=3.0, precision="bfloat16" if fast_bfloat16() else "float32"
            ),
            randomisation=True,
            randomisation_subjects=4,
        )
        interpret_run(WORK / "runs" / best, out, options, progress=True, overwrite=True)
    return out


def results(args: argparse.Namespace) -> None:
    import pandas as pd

    from neurocnn.evaluation.compare import compare_runs
    from neurocnn.report import build_report

    cnns = finished_cnns()
    small = sorted(p.name for p in (WORK / "runs").glob("*_subset*_r*") if (p / "summary.json").exists())
    baselines = [b for b in BASELINES if (BASE / b / "summary.json").exists()]
    paths = [WORK / "runs" / n for n in cnns] + [BASE / b for b in baselines]
    if not paths:
        raise SystemExit("nothing finished yet")
    comparison = compare_runs(paths, n_permutations=10000, n_boot=2000, seed=0)
    comparison.write(WORK / "comparison", overwrite=True)
    rows = comparison.runs.set_index("run")
    best_base = max(baselines, key=lambda b: pooled(BASE / b)) if baselines else None
    timings = json.loads((WORK / "timings.json").read_text()) if (WORK / "timings.json").exists() else {}
    lines = [
        "# IXI sex classification: seed CNNs against the classical baselines",
        "",
        f"Measured {DATE} with `benchmarks/ixi_sex.py` (stages data, cnn, results) on {platform.machine()} "
        f"Linux, {os.cpu_count()} CPU cores, no GPU; each CNN's training settings are in its run folder's "
        "config.yaml (flips and −2…3 voxel shifts, checkpoint by validation loss).",
        "",
        "141 labelled IXI subjects (74 F, 67 M), stratified 10-fold, the same split table as the baselines "
        "(`benchmarks/_work/baselines/splits.tsv`); each CNN's checkpoint chosen on 10 % of its training "
        "fold, never on the test fold. CIs: bootstrap over participants of the pooled out-of-fold "
        "predictions; ± is the SD over folds.",
        "",
        "| run | what | balanced accuracy (95% CI) | folds mean ± SD | AUC (95% CI) | wall min |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        r = rows.loc[path.name]
        what = describe(path.name) if path.parent.name == "runs" else f"baseline ({path.name})"
        wall = timings.get(path.name)
        lines.append(
            f"| {path.name} | {what} | **{r['balanced_accuracy']:.3f}** ({r['balanced_accuracy_ci_low']:.3f}–"
            f"{r['balanced_accuracy_ci_high']:.3f}) | {r['balanced_accuracy_fold_mean']:.2f} ± "
            f"{r['balanced_accuracy_fold_std']:.2f} | {r['auc']:.3f} ({r['auc_ci_low']:.3f}–"
            f"{r['auc_ci_high']:.3f}) | {'' if wall is None else f'{wall / 60:.0f}'} |"
        )
    if best_base:
        lines += [
            "",
            f"Paired against the best baseline ({best_base}): CNN − baseline, paired bootstrap 95% CI; "
            "corrected resampled t-test over folds; permutation test on pooled predictions.",
            "",
            "| CNN − baseline | metric | difference (95% CI) | corrected t-test p | permutation p |",
            "|---|---|---|---|---|",
        ]
        for n in cnns:
            for m in ("balanced_accuracy", "auc"):
                if (p := comparison.pair(n, best_base, m)) is not None:
                    lines.append(
                        f"| {n} − {best_base} | {m.replace('_', ' ')} | {p['difference']:+.3f} "
                        f"({p['ci_low']:+.3f} to {p['ci_high']:+.3f}) | {p['p_ttest']:.3f} "
                        f"| {p['p_permutation']:.3f} |"
                    )
    partial = sorted((WORK / "runs").glob("*_subset*_r*/predictions_first*.csv"))
    if small or partial:
        from sklearn.metrics import balanced_accuracy_score

        lines += ["", "Subsets of the training folds (S2's small-sample experiment: 20 %):", ""]
        lines += [f"- {s}: balanced accuracy {pooled(WORK / 'runs' / s):.3f}" for s in small]
        for csv in partial:
            t = pd.read_csv(csv, dtype={"label": str, "prediction": str})
            score = balanced_accuracy_score(t["label"], t["prediction"])
            folds = csv.stem.removeprefix("predictions_")
            lines.append(f"- {csv.parent.name} ({folds} folds): balanced accuracy {score:.3f}")
    interp = [WORK / "runs" / n / "interpret" for n in cnns if (WORK / "runs" / n / "interpret").exists()]
    for folder in interp:
        info = json.loads((folder / "summary.json").read_text())
        lines += [
            "",
            f"Interpretation of {folder.parent.name} (out-of-fold: each fold's model explains its own "
            f"test subjects; `{folder.relative_to(ROOT)}`): top 5 regions of the conjoined group maps "
            "(S3's score), and the model-randomisation test (Spearman of the trained vs randomised "
            "model's maps, median).",
            "",
            "| method | subjects | atlas | top 5 regions | randomised ρ |",
            "|---|---:|---|---|---:|",
        ]
        for method, m in info["methods"].items():
            rho = m.get("randomisation_spearman_median")
            for atlas, regions in m.get("regions", {}).items():
                top5 = ", ".join(f"{r['region']} {r['score']:.3f}" for r in regions[:5])
                rho_text = "" if rho is None else f"{rho:.2f}"
                lines.append(f"| {method} | {m.get('subjects', '')} | {atlas} | {top5} | {rho_text} |")
    report = build_report(paths, WORK / "report.html", title="neurocnn: IXI sex classification")
    lines += ["", f"Report: `{report}` (not committed: it embeds maps of real subjects' data)."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--stage",
        choices=["data", "cnn", "small", "interpret", "results", "all", "rigid-baselines"],
        default="all",
        help="rigid-baselines: head size alone and the voxel SVM on the rigidly registered cohort",
    )
    p.add_argument("--only", help=f"comma-separated CNNs (default {','.join(DEFAULT_CNNS)})")
    p.add_argument("--fold", type=int, action="append", help="train only these folds (repeatable)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--min-epochs", type=int, default=0, help="early stopping cannot stop before this epoch")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--optimizer",
        choices=["adam", "adadelta"],
        default="adam",
        help="adadelta (lr 1.0) is S1's: with Adam its ReLU-only models die (RESULTS.md)",
    )
    p.add_argument(
        "--schedule",
        choices=["none", "cosine"],
        default="none",
        help="learning-rate schedule (cosine: annealed to 0 over --epochs)",
    )
    p.add_argument(
        "--no-val",
        action="store_true",
        help="cnn: train on each fold's validation subjects too and keep the last epoch",
    )
    p.add_argument("--ema", type=float, help="moving average of the weights, decay per step (train.ema)")
    p.add_argument(
        "--suffix", default="", help="cnn: appended to the run folder's name (another setting, same model)"
    )
    p.add_argument("--seed", type=int, default=0, help="cnn: seed of weights and batches (same folds)")
    p.add_argument("--small-repeats", type=int, default=3)
    p.add_argument(
        "--small-first", type=int, default=0, help="small: index of the first draw (r0, r1, …) to run"
    )
    p.add_argument("--small-folds", type=int, help="small: only the first N outer folds (CPU time)")
    p.add_argument(
        "--small-fraction",
        type=float,
        default=0.2,
        help="small: stratified share of each training fold kept (S2: 0.2; other values give the "
        "points of a learning curve, tabulated by benchmarks/ixi_learning_curve.py)",
    )
    p.add_argument(
        "--precision",
        help="Lightning precision (default: bf16-mixed where bfloat16 is native, i.e. 1.5× faster "
        "MriNet steps on an AVX-512 BF16 CPU; 32-true elsewhere, where it is slower)",
    )
    p.add_argument("--pif", action="store_true", help="data: also the 1.5 mm cohort for S2's models")
    p.add_argument(
        "--rigid", action="store_true", help="data: also the T1 cohort registered rigidly (head size kept)"
    )
    args = p.parse_args()
    if args.precision is None:
        args.precision = "bf16-mixed" if fast_bfloat16() else "32-true"
    names = args.only.split(",") if args.only else list(DEFAULT_CNNS)
    unknown = [n for n in names if n not in CNNS]
    if unknown:
        p.error(f"unknown CNN(s) {unknown}; choose from {', '.join(CNNS)}")
    quiet()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.stage in ("data", "all"):
        prepare_data(args.pif)
        if args.rigid:
            prepare_rigid()
    if args.stage in ("cnn", "all"):
        run_cnns(names, args)
    if args.stage in ("small", "all"):
        run_small([n for n in names if n in ("pif_cnn", "pif_baseline", "mrinet")], args)
    if args.stage in ("interpret", "all"):
        interpret_best(args)
    if args.stage == "rigid-baselines":
        run_rigid_baselines()
    if args.stage in ("results", "all"):
        results(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
