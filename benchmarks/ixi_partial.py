"""Compare an unfinished CNN run with a baseline on the folds the CNN has finished.

    .venv/bin/python benchmarks/ixi_partial.py \
        benchmarks/_work/ixi_sex/runs/mrinet_tissue_40ep_cosine_no_val \
        benchmarks/_work/baselines/svm_voxels --folds 2

Pools the first ``--folds`` folds' predictions of the CNN run (``folds/<fold>/predictions.csv``) and
the baseline's predictions of the same folds into two files under
``benchmarks/_work/ixi_sex/partial``, then runs `neurocnn.evaluation.compare.compare_runs` on them
and prints the table (used for RESULTS.md when a run was stopped for time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from neurocnn.evaluation.compare import compare_runs
from neurocnn.training.runfolder import fold_name

OUT = Path(__file__).resolve().parent / "_work" / "ixi_sex" / "partial"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cnn", type=Path, help="a CNN run folder (possibly unfinished)")
    p.add_argument("baseline", type=Path, help="a finished baseline run folder on the same splits")
    p.add_argument("--folds", type=int, required=True, help="the first N folds (all finished)")
    args = p.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    done = [args.cnn / "folds" / fold_name(0, f) / "predictions.csv" for f in range(args.folds)]
    missing = [str(f.parent.name) for f in done if not f.is_file()]
    if missing:
        raise SystemExit(f"{args.cnn}: fold(s) {', '.join(missing)} have not finished")
    cnn = pd.concat([pd.read_csv(f) for f in done])
    base = pd.read_csv(args.baseline / "predictions.csv")
    base = base[base["fold"] < args.folds]
    files = []
    for name, table in ((args.cnn.name, cnn), (args.baseline.name, base)):
        files.append(OUT / f"{name}_first{args.folds}.csv")
        table.to_csv(files[-1], index=False)
    comparison = compare_runs(files, names=[args.cnn.name, args.baseline.name])
    print(comparison.to_markdown())


if __name__ == "__main__":
    main()
