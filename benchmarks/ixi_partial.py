"""Compare unfinished CNN runs with a baseline on the folds the CNNs have finished.

    .venv/bin/python benchmarks/ixi_partial.py \
        benchmarks/_work/ixi_sex/runs/mrinet_tissue_40ep_cosine_no_val \
        benchmarks/_work/baselines/svm_voxels --folds 2

Pools the first ``--folds`` folds' predictions of each CNN run (``folds/<fold>/predictions.csv``;
several runs may be given, e.g. a run and its `neurocnn tta` re-test) and the baseline's (the last
folder) predictions of the same folds into files under ``benchmarks/_work/ixi_sex/partial``, then
runs `neurocnn.evaluation.compare.compare_runs` on them and prints the table, and each run's
balanced accuracy and AUC per fold (used for RESULTS.md when a run was stopped for time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from neurocnn.evaluation.compare import compare_runs
from neurocnn.evaluation.metrics import classification_metrics
from neurocnn.training.runfolder import fold_name

OUT = Path(__file__).resolve().parent / "_work" / "ixi_sex" / "partial"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="CNN run folders (possibly unfinished)")
    p.add_argument("baseline", type=Path, help="a finished baseline run folder on the same splits")
    p.add_argument("--folds", type=int, required=True, help="the first N folds (all finished)")
    args = p.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    tables = []
    for run in args.runs:
        done = [run / "folds" / fold_name(0, f) / "predictions.csv" for f in range(args.folds)]
        missing = [str(f.parent.name) for f in done if not f.is_file()]
        if missing:
            raise SystemExit(f"{run}: fold(s) {', '.join(missing)} have not finished")
        tables.append((run.name, pd.concat([pd.read_csv(f) for f in done])))
    base = pd.read_csv(args.baseline / "predictions.csv")
    if "repeat" in base:
        base = base[base["repeat"] == 0]  # the CNN runs' folds are repeat 0's
    tables.append((args.baseline.name, base[base["fold"] < args.folds]))
    files = []
    for name, table in tables:
        files.append(OUT / f"{name}_first{args.folds}.csv")
        table.to_csv(files[-1], index=False)
    comparison = compare_runs(files, names=[name for name, _ in tables])
    print(comparison.to_markdown())
    print()
    print(per_fold_table(tables, args.folds))


def per_fold_table(tables: list[tuple[str, pd.DataFrame]], folds: int) -> str:
    """Balanced accuracy / AUC of every run on each fold, as a markdown table."""
    lines = ["| fold | " + " | ".join(name for name, _ in tables) + " |", "|---:|" + "---:|" * len(tables)]
    for f in range(folds):
        cells = []
        for _, table in tables:
            part = table[table["fold"] == f]
            classes = [c.removeprefix("prob_") for c in part.columns if c.startswith("prob_")]
            index = {c: i for i, c in enumerate(classes)}
            m = classification_metrics(
                part["label"].map(index).to_numpy(),
                part[[f"prob_{c}" for c in classes]].to_numpy(),
                part["prediction"].map(index).to_numpy(),
            )
            cells.append(f"{m['balanced_accuracy']:.3f} / {m['auc']:.3f}")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "Per fold, balanced accuracy / AUC:\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
