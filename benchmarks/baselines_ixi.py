"""Classical baselines on IXI: sex, stratified 10-fold, the same splits for every baseline.

Every baseline of `neurocnn baseline` on the prepared IXI cohort (145 T1 scans registered to MNI,
brain-masked, z-scored; 141 with sex), with nested cross-validation (hyper-parameters chosen by an
inner 5-fold grid search on each training fold), plus two untuned references that reproduce the
plain scikit-learn numbers of ../shared/data/README.md on the same folds (logistic regression with
C = 1 on the regional volumes; SVM-RBF with C = 1 and gamma = "scale" on brain voxels). Then
`neurocnn compare` over all runs: pooled balanced accuracy and AUC with 95% bootstrap CIs over
participants, fold mean ± SD, and paired tests (corrected resampled t-test over folds,
permutation test on pooled predictions).

    .venv/bin/python benchmarks/baselines_ixi.py                   # all runs, writes results
    .venv/bin/python benchmarks/baselines_ixi.py --only regional_lr,svm_voxels
    .venv/bin/python benchmarks/baselines_ixi.py --with-2mm        # also the voxel SVM at 2 mm

Finished runs are kept under benchmarks/_work/baselines/ and reused (delete a folder to redo it);
the results file is benchmarks/results/baselines.md. deep2d needs pre-trained 2D weights, which
this machine does not have (nothing is downloaded): it is listed as not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "baselines"
RESULTS = ROOT / "benchmarks" / "results" / "baselines.md"
CACHE_3MM = ROOT / "benchmarks" / "_work" / "ixi_3mm"
CACHE_2MM = ROOT / "benchmarks" / "_work" / "ixi_2mm"
IXI = ROOT.parent / "shared" / "data" / "ixi"
DATE = datetime.date.today().isoformat()  # the day the results file is written


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def plan(jobs: int) -> dict[str, tuple[str, Callable[[Path], Any]]]:
    """name → (what it is, function writing its run folder)."""
    from neurocnn.baselines import CVOptions, run_lbp, run_regional, run_svm

    splits = WORK / "splits.tsv"

    def options(**kw: Any) -> CVOptions:
        return CVOptions(splits=splits, n_jobs=jobs, save_models=False, progress=True, **kw)

    table = {"table": IXI / "regional_volumes.csv", "names": IXI / "muse_labels.csv"}

    def regional(model: str, **kw: Any) -> Callable[[Path], Any]:
        return lambda out: run_regional(CACHE_3MM, out, options(**kw), models=[model], **table)

    def atlas(model: str) -> Callable[[Path], Any]:
        return lambda out: run_regional(CACHE_3MM, out, options(), models=[model], atlas="harvard_oxford")

    runs: dict[str, tuple[str, Callable[[Path], Any]]] = {
        "regional_lr_default": ("logistic regression, C = 1 (untuned), regional volumes",
                                regional("lr", grid=("C=1",))),
        "regional_lr": ("logistic regression, C by grid search, regional volumes", regional("lr")),
        "regional_knn": ("KNN, k and weights by grid search, regional volumes", regional("knn")),
        "regional_xgb": ("XGBoost, depth/trees/learning rate by grid search, regional volumes",
                         regional("xgb")),
        "regional_svm": ("SVM-RBF, C and width by grid search, regional volumes", regional("svm")),
        "regional_select": ("best of LR/KNN/XGB/SVM chosen in each training fold (S3), regional volumes",
                            regional("select")),
        "atlas_ho_lr": ("logistic regression on mean T1 per Harvard-Oxford region (nilearn masker)",
                        atlas("lr")),
        "atlas_ho_svm": ("SVM-RBF on mean T1 per Harvard-Oxford region", atlas("svm")),
        "svm_voxels_default": ("SVM-RBF, C = 1, gamma = 'scale' (untuned), brain voxels 3 mm",
                               lambda out: run_svm(CACHE_3MM, out, options(grid=("C=1", "gamma=1")))),
        "svm_voxels": ("SVM-RBF, C and width by grid search, brain voxels 3 mm (S3)",
                       lambda out: run_svm(CACHE_3MM, out, options())),
        "lbp_svm": ("LBP (8 neighbours, radius 1, uniform) axial slices, whole-brain histogram, SVM-RBF (S4)",
                    lambda out: run_lbp(CACHE_3MM, out, options())),
        "lbp_aal_svm": ("LBP histograms per AAL region (120 × 10), SVM-RBF",
                        lambda out: run_lbp(CACHE_3MM, out, options(), atlas="aal")),
        "svm_voxels_2mm": ("SVM-RBF, C and width by grid search, brain voxels 2 mm",
                           lambda out: run_svm(CACHE_2MM, out, options())),
    }  # fmt: skip
    return runs


def make_splits() -> Path:
    """Stratified 10-fold by participant, seed 0, as `neurocnn cv --folds 10 --seed 0` makes them."""
    from neurocnn.data import splits as S
    from neurocnn.data.cache import open_cache

    path = WORK / "splits.tsv"
    if not path.exists():
        S.save_splits(S.kfold(open_cache(CACHE_3MM).manifest, 10, val_fraction=0.1, seed=0), path)
    return path


def run_all(names: list[str], jobs: int) -> dict[str, dict[str, Any]]:
    runs = plan(jobs)
    timings_file = WORK / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for name in names:
        out = WORK / name
        if (out / "summary.json").exists():
            print(f"{name}: kept", file=sys.stderr)
            continue
        print(f"{name}: running", file=sys.stderr, flush=True)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        runs[name][1](out)
        timings[name] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(cpu_seconds() - cpu0, 1),
        }
        timings_file.write_text(json.dumps(timings, indent=1))
    return timings


def write_results(
    names: list[str], timings: dict[str, Any], load: tuple[float, float], argv: list[str]
) -> None:
    from neurocnn.evaluation.compare import compare_runs

    runs = plan(1)
    done = [n for n in names if (WORK / n / "summary.json").exists()]
    result = compare_runs([WORK / n for n in done], n_permutations=10000, n_boot=2000, seed=0)
    result.write(WORK / "comparison", overwrite=True)
    rows = result.runs.set_index("run")
    lines = [
        "# Classical baselines on IXI (sex)",
        "",
        f"Measured {DATE} with",
        "",
        "    .venv/bin/python " + " ".join(["benchmarks/baselines_ixi.py", *argv]),
        "",
        f"on {platform.machine()} Linux, {os.cpu_count()} cores shared with other jobs (load average "
        f"{load[0]:.1f} before, {load[1]:.1f} after), Python {platform.python_version()}, one process "
        "and one BLAS thread per run.",
        "",
        "Cohort: `benchmarks/_work/ixi_3mm` (145 IXI T1 scans, affine registration to MNI, brain-masked, "
        "z-scored, 61×73×61 at 3 mm; 141 with sex: 74 F, 67 M). Splits: one stratified 10-fold table by "
        "participant (seed 0, `benchmarks/_work/baselines/splits.tsv`, the table `neurocnn cv --folds 10 "
        "--seed 0` makes), the same for every row. Hyper-parameters: `GridSearchCV` with inner stratified "
        "5-fold on each training fold (balanced accuracy); SVMs' probabilities by Platt scaling within "
        "the training fold. CIs: percentile bootstrap over participants (2000 resamples) of the pooled "
        "out-of-fold predictions; ± is the SD over the 10 folds. Grids: SVM C ∈ {0.1, 1, 10, 100, 1000} × "
        "RBF width ∈ {0.01, 0.03, 0.1, 0.3, 1, 3} × gamma='scale'; logistic regression C ∈ 10^-3…10^2; "
        "KNN k ∈ {3, 5, 9, 15, 21} × uniform/distance; XGBoost depth {2, 4} × trees {100, 300} × "
        "learning rate {0.05, 0.2}. Wall and CPU seconds include feature extraction.",
        "",
        "For orientation, ../shared/data/README.md (plain scikit-learn, its own folds): logistic regression "
        "on the regional volumes 0.78 ± 0.11, XGBoost 0.80 ± 0.11, SVM-RBF on brain-masked 4 mm voxels "
        "0.79 ± 0.13 (balanced accuracy, fold mean ± SD).",
        "",
        "| run | what | balanced accuracy (95% CI) | folds mean ± SD | AUC (95% CI) | folds mean ± SD "
        "| wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in done:
        r = rows.loc[n]
        wall = timings.get(n, {}).get("wall_s", float("nan"))
        cpu = timings.get(n, {}).get("cpu_s", float("nan"))
        lines.append(
            f"| {n} | {runs[n][0]} | **{r['balanced_accuracy']:.3f}** ({r['balanced_accuracy_ci_low']:.3f}–"
            f"{r['balanced_accuracy_ci_high']:.3f}) | {r['balanced_accuracy_fold_mean']:.2f} ± "
            f"{r['balanced_accuracy_fold_std']:.2f} | {r['auc']:.3f} ({r['auc_ci_low']:.3f}–"
            f"{r['auc_ci_high']:.3f}) | {r['auc_fold_mean']:.2f} ± {r['auc_fold_std']:.2f} | {wall:.0f} "
            f"| {cpu:.0f} |"
        )
    lines += [
        "",
        "deep2d (pre-trained 2D CNN features → SVM, S1): not run — no pre-trained 2D weights on this "
        "machine and nothing is downloaded; `neurocnn baseline deep2d --weights FILE` runs it.",
        "",
    ]
    chosen = [
        ("regional_lr", "regional_lr_default"),
        ("svm_voxels", "svm_voxels_default"),
        ("regional_lr", "svm_voxels"),
        ("regional_select", "regional_lr"),
        ("regional_xgb", "regional_lr"),
        ("svm_voxels", "lbp_svm"),
        ("svm_voxels_2mm", "svm_voxels"),
    ]
    lines += [
        "## Paired comparisons (same folds)",
        "",
        "Difference A − B of pooled out-of-fold metrics with a paired bootstrap 95% CI over participants; "
        "corrected resampled t-test (Nadeau & Bengio) over the 10 fold differences (n_test/n_train = 1/9); "
        "permutation test swapping the two runs' predictions per participant (10,000 draws). Unadjusted p; "
        f"Holm-adjusted values over all {len(result.pairs) // 2} pairs are in "
        "`benchmarks/_work/baselines/comparison/pairs.csv`.",
        "",
        "| A − B | metric | difference (95% CI) | corrected t-test p | permutation p |",
        "|---|---|---|---|---|",
    ]
    for a, b in chosen:
        for m in ("balanced_accuracy", "auc"):
            if (p := result.pair(a, b, m)) is not None:
                lines.append(
                    f"| {a} − {b} | {m.replace('_', ' ')} | {p['difference']:+.3f} ({p['ci_low']:+.3f} to "
                    f"{p['ci_high']:+.3f}) | {_p(p['p_ttest'])} | {_p(p['p_permutation'])} |"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def _p(v: float) -> str:
    return "–" if v != v else ("<0.001" if v < 0.001 else f"{v:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated run names")
    parser.add_argument("--with-2mm", action="store_true", help="also the voxel SVM on the 2 mm cohort")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--no-results", action="store_true", help="run, but do not write the results file")
    args = parser.parse_args()
    names = [n for n in plan(1) if n != "svm_voxels_2mm" or args.with_2mm]
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    make_splits()
    before = os.getloadavg()[0]
    timings = run_all(names, args.jobs)
    if not args.no_results:
        every = [n for n in plan(1) if (WORK / n / "summary.json").exists()]
        write_results(every, timings, (before, os.getloadavg()[0]), sys.argv[1:])


if __name__ == "__main__":
    main()
