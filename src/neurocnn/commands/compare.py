"""`neurocnn compare RUN...`: metrics of several runs with CIs, and paired tests for every pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurocnn.commands._help import add_command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub,
        "compare",
        help="compare runs (CNNs, baselines) with paired tests",
        description="A table of every run's metrics on its pooled out-of-fold predictions with 95% "
        "bootstrap CIs over participants, and for each pair the difference (paired bootstrap CI) "
        "with the corrected resampled t-test of Nadeau & Bengio over folds (when both runs used "
        "the same folds) and a permutation test on the pooled predictions; for one independent "
        "test set, McNemar's test (accuracy) and DeLong's test (AUC). Holm-adjusted p-values over "
        "the pairs. A RUN is a run folder or a predictions CSV.",
        example="neurocnn compare runs/mrinet runs/svm runs/regional/lr --out runs/comparison\n"
        "neurocnn compare runs/mrinet/evaluations/site_b/predictions.csv runs/svm_site_b.csv "
        "--metrics accuracy,auc",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders or prediction files")
    p.add_argument(
        "--metrics",
        default="balanced_accuracy,auc",
        help="comma-separated, or `all` (accuracy, balanced_accuracy, sensitivity, specificity, "
        "precision, f1, auc, mcc); default balanced_accuracy,auc",
    )
    p.add_argument("--names", help="comma-separated names of the runs (default: folder names)")
    p.add_argument("--permutations", type=int, default=10000, help="permutation-test draws (default 10000)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for runs.csv, pairs.csv and comparison.md")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neurocnn.errors import NeuroCNNError
    from neurocnn.evaluation.compare import check_output, compare_runs
    from neurocnn.evaluation.metrics import METRICS

    metrics = (
        list(METRICS) if args.metrics == "all" else [m.strip() for m in args.metrics.split(",") if m.strip()]
    )
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names and len(names) != len(args.runs):
        raise NeuroCNNError(f"--names gives {len(names)} names for {len(args.runs)} runs")
    if args.out:  # refused before the (minutes of) permutation tests, not after
        check_output(Path(args.out), overwrite=args.overwrite)
    result = compare_runs(
        args.runs,
        metrics=metrics,
        n_permutations=args.permutations,
        n_boot=args.bootstrap,
        seed=args.seed,
        names=names,
    )
    print(result.to_markdown())
    if args.out:
        print(f"\nwritten to {result.write(Path(args.out), overwrite=args.overwrite)}")
    return 0
