"""IXI sex: a CNN against the voxel SVM as the training set grows (a learning curve).

Does the CNN's standing against the voxel SVM change with the number of training subjects?
Each point is one draw of ``ixi_sex.py --stage small --small-fraction F``: a stratified share F of
every training fold (the same subjects for the CNN and for the voxel SVM, whose nested grid search
runs on them), the untouched test folds (all 141 subjects once). Full-data runs (F = 1) are given
with ``--full CNN_RUN SVM_RUN`` (the same folds). For every point: training subjects per fold, both
models' pooled balanced accuracy and AUC with 95% bootstrap CIs, and CNN − SVM with its paired
bootstrap CI and the corrected resampled t-test (`neurocnn compare`'s statistics).

    .venv/bin/python benchmarks/ixi_sex.py --stage small --only mrinet --small-fraction 0.25 \\
        --small-repeats 1 --epochs 40 --patience 40 --schedule cosine --no-val --precision 32-true \\
        --suffix _40ep_cosine_no_val_fp32
    .venv/bin/python benchmarks/ixi_learning_curve.py --cnn mrinet --suffix _40ep_cosine_no_val_fp32 \\
        [--full RUN SVM_RUN]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "_work" / "ixi_sex" / "runs"
BASELINES = ROOT / "benchmarks" / "_work" / "ixi_sex" / "baselines"


def points(cnn: str, suffix: str) -> list[tuple[int, int, Path, Path]]:
    """(percent, draw, CNN run, SVM run) of every finished subset draw, smallest share first."""
    found = []
    for run in RUNS.glob(f"{cnn}{suffix}_subset*_r*"):
        match = re.fullmatch(rf"{re.escape(cnn + suffix)}_subset(\d+)_r(\d+)", run.name)
        if not match or not (run / "summary.json").exists():
            continue
        pct, r = int(match.group(1)), int(match.group(2))
        svm = BASELINES / f"svm_voxels_no_val_subset{pct}_r{r}"
        if (svm / "summary.json").exists():
            found.append((pct, r, run, svm))
    return sorted(found)


def train_subjects(run: Path) -> str:
    """Training subjects per outer fold (min–max) of a CNN run's split table."""
    from neurocnn.data.splits import load_splits

    table = load_splits(run / "splits.tsv")
    outer = table[(table["inner"] == -1) & (table["role"] == "train")]
    counts = outer.groupby(["repeat", "fold"])["participant_id"].nunique()
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}–{high}"


def row(label: str, n_train: str, cnn: Path, svm: Path) -> str:
    from neurocnn.evaluation.compare import compare_runs

    comparison = compare_runs([cnn, svm], names=["cnn", "svm"], n_permutations=2000, n_boot=2000, seed=0)
    runs = comparison.runs.set_index("run")
    cells = [label, n_train]
    for metric in ("balanced_accuracy", "auc"):
        for name in ("cnn", "svm"):
            r = runs.loc[name]
            cells.append(f"{r[metric]:.3f} ({r[f'{metric}_ci_low']:.3f}–{r[f'{metric}_ci_high']:.3f})")
        p = comparison.pair("cnn", "svm", metric)
        assert p is not None
        cells.append(
            f"{p['difference']:+.3f} ({p['ci_low']:+.3f} to {p['ci_high']:+.3f}), p {p['p_ttest']:.2f}"
        )
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cnn", default="mrinet")
    p.add_argument("--suffix", default="_40ep_cosine_no_val_fp32")
    p.add_argument("--full", nargs=2, type=Path, metavar=("CNN_RUN", "SVM_RUN"), help="the F = 1 point")
    args = p.parse_args(argv)
    found = points(args.cnn, args.suffix)
    if not found and not args.full:
        sys.exit(f"no finished subset draw of {args.cnn}{args.suffix} under {RUNS}")
    print(
        "| share of training fold (draw) | training subjects per fold | CNN balanced accuracy | "
        "SVM balanced accuracy | CNN − SVM | CNN AUC | SVM AUC | CNN − SVM (AUC) |"
    )
    print("|---|---:|---|---|---|---|---|---|")
    for pct, r, cnn, svm in found:
        print(row(f"{pct} % (r{r})", train_subjects(cnn), cnn, svm), flush=True)
    if args.full:
        cnn, svm = args.full
        n = train_subjects(cnn) if (cnn / "splits.tsv").exists() else "all"
        print(row("100 %", n, cnn, svm))
    print(f"\nCNN: {args.cnn}{args.suffix}; SVM: the voxel SVM (nested grid search) on the same subjects.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
