"""IXI sex, S2's small-sample experiment: the draws of ``ixi_sex.py --stage small`` side by side.

Each draw r trained the PIF-CNN and its plain CNN on a stratified 20 % of every training fold (the
same subjects for both and for the voxel SVM; draw r seeds the subset and the weights) and predicted
the untouched test folds. This reads every finished draw and prints, per draw and model, the
balanced accuracy and AUC of the pooled test predictions, the folds whose predictions were all one
class (a network that learnt nothing), and across draws the mean ± SD and the paired differences
(PIF-CNN − plain CNN, PIF-CNN − SVM) with a paired t-test over draws (S2 compares means over its
ten draws).

    .venv/bin/python benchmarks/ixi_small.py                       # --suffix _30ep_cosine_no_val --folds 5
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "_work" / "ixi_sex" / "runs"
BASELINES = ROOT / "benchmarks" / "_work" / "ixi_sex" / "baselines"


def scores(table: pd.DataFrame) -> dict[str, float]:
    """Balanced accuracy, AUC and the number of one-class folds of a predictions table."""
    from neurocnn.evaluation.metrics import classification_metrics
    from neurocnn.evaluation.summary import as_arrays

    classes = sorted(c.removeprefix("prob_") for c in table.columns if c.startswith("prob_"))
    y, prob, pred = as_arrays(table, classes)
    m = classification_metrics(y, prob, pred)
    one_class = int((table.groupby("fold")["prediction"].nunique() == 1).sum())
    return {"balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"], "one_class_folds": one_class}


def draws(suffix: str, folds: int | None) -> dict[int, dict[str, pd.DataFrame]]:
    """Finished draws in order: r -> {model: its predictions}, with every model of the draw present."""
    from neurocnn.evaluation.summary import read_predictions

    part = f"_first{folds}" if folds else ""
    name = f"predictions{part}.csv"
    found: dict[int, dict[str, pd.DataFrame]] = {}
    for run in RUNS.glob(f"pif_cnn{suffix}_subset20_r*"):
        match = re.search(r"_r(\d+)$", run.name)
        if not match:
            continue
        r = int(match.group(1))
        files = {
            "pif_cnn": run / name,
            "pif_baseline": RUNS / f"pif_baseline{suffix}_subset20_r{r}" / name,
            "svm_voxels": BASELINES / f"svm_voxels_no_val_subset20_r{r}{part}" / "predictions.csv",
        }
        if all(f.exists() for f in files.values()):
            tables = {model: read_predictions(f) for model, f in files.items()}
            tests = [set(t["participant_id"]) for t in tables.values()]
            if any(t != tests[0] for t in tests):
                sys.exit(f"draw r{r}: the models predicted different test subjects")
            found[r] = tables
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    from scipy import stats

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suffix", default="_30ep_cosine_no_val")
    p.add_argument("--folds", type=int, default=5, help="the draws' --small-folds (0: all folds)")
    args = p.parse_args(argv)
    found = draws(args.suffix, args.folds or None)
    if not found:
        sys.exit(f"no finished draw under {RUNS} (run benchmarks/ixi_sex.py --stage small first)")
    rows = []
    for r, tables in found.items():
        for model, table in tables.items():
            rows.append({"draw": r, "model": model, "n_test": len(table), **scores(table)})
    result = pd.DataFrame(rows)
    print("| draw | model | test subjects | balanced accuracy | AUC | one-class folds |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in result.itertuples():
        print(
            f"| r{row.draw} | {row.model} | {row.n_test} | {row.balanced_accuracy:.3f} | {row.auc:.3f} "
            f"| {row.one_class_folds} of {args.folds or '?'} |"
        )
    print(f"\nAcross {len(found)} draw(s), mean ± SD:\n")
    print("| model | balanced accuracy | AUC |")
    print("|---|---:|---:|")
    for model, part in result.groupby("model", sort=False):
        ba, auc = part["balanced_accuracy"].to_numpy(), part["auc"].to_numpy()
        print(f"| {model} | {ba.mean():.3f} ± {_sd(ba):.3f} | {auc.mean():.3f} ± {_sd(auc):.3f} |")
    wide = result.pivot(index="draw", columns="model")
    print("\nPaired over draws:\n")
    for other in ("pif_baseline", "svm_voxels"):
        for metric in ("balanced_accuracy", "auc"):
            a, b = wide[(metric, "pif_cnn")].to_numpy(), wide[(metric, other)].to_numpy()
            diff = a - b
            p_value = (
                float(stats.ttest_rel(a, b).pvalue) if len(diff) > 1 and diff.std() > 0 else float("nan")
            )
            print(
                f"- pif_cnn − {other}, {metric}: {diff.mean():+.3f} (per draw "
                f"{', '.join(f'{d:+.3f}' for d in diff)}; paired t-test p = {_p(p_value)})"
            )
    return 0


def _p(value: float) -> str:
    return "–" if value != value else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


if __name__ == "__main__":
    sys.exit(main())
