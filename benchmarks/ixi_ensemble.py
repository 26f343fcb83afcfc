"""IXI sex: the mean of two CNNs' out-of-fold probabilities, against the best baseline (issue 7).

Declared before the second run finished (2026-12-06, sixth session): the ensemble is MriNet (S3)
and S1's inception_1, both trained with the same recipe (Adam 3e-4, cosine over 40 epochs, the
validation subjects in training, last epoch) on the same 10 folds; each subject's probability is
the mean of the two models' out-of-fold probabilities, its prediction the arg-max. No weight or
member is tuned on the test folds, so the ensemble is scored on the same footing as its members.
(Averaging the fold models of one run is `neurocnn evaluate`; this averages two architectures.)

    .venv/bin/python benchmarks/ixi_ensemble.py
    .venv/bin/python benchmarks/ixi_ensemble.py --runs RUN_A,RUN_B     # run folders under runs/

Writes ``benchmarks/_work/ixi_sex/runs/ensemble_<members>/`` (predictions.csv, and the members'
splits.tsv for the corrected t-test) and ``benchmarks/_work/ixi_sex/comparison_ensemble``; prints the
comparison with the voxel SVM and the members.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "_work" / "ixi_sex" / "runs"
BASELINE = ROOT / "benchmarks" / "_work" / "baselines" / "svm_voxels"
KEY = ["participant_id", "repeat", "fold"]


def mean_of(runs: list[Path]) -> pd.DataFrame:
    """Mean probabilities of runs that predicted the same subjects in the same folds."""
    from neurocnn.evaluation.summary import read_predictions

    tables = [read_predictions(r / "predictions.csv").sort_values(KEY).reset_index(drop=True) for r in runs]
    first = tables[0]
    probs = [c for c in first.columns if c.startswith("prob_")]
    for run, t in zip(runs[1:], tables[1:], strict=True):
        if (
            not t[[*KEY, "label"]].equals(first[[*KEY, "label"]])
            or [c for c in t.columns if c.startswith("prob_")] != probs
        ):
            sys.exit(f"{run}: other subjects, folds, labels or classes than {runs[0]}; no ensemble")
    out = first.drop(columns=[*probs, "prediction"]).copy()
    for c in probs:
        out[c] = sum(t[c] for t in tables) / len(tables)
    out["prediction"] = out[probs].to_numpy().argmax(axis=1)
    out["prediction"] = [probs[i].removeprefix("prob_") for i in out["prediction"]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="mrinet_40ep_cosine_no_val,inception_1_40ep_cosine_no_val")
    args = p.parse_args(argv)
    members = [RUNS / n.strip() for n in args.runs.split(",") if n.strip()]
    for r in members:
        if not (r / "predictions.csv").exists():
            sys.exit(f"{r}: no predictions.csv; train it first (benchmarks/ixi_sex.py --stage cnn)")
    names = [m.name.removesuffix("_40ep_cosine_no_val") for m in members]
    folder = RUNS / f"ensemble_{'+'.join(names)}"
    folder.mkdir(parents=True, exist_ok=True)
    mean_of(members).to_csv(folder / "predictions.csv", index=False)
    shutil.copy(members[0] / "splits.tsv", folder / "splits.tsv")

    from neurocnn.evaluation.compare import compare_runs

    comparison = compare_runs([folder, *members, BASELINE])
    out = ROOT / "benchmarks" / "_work" / "ixi_sex" / "comparison_ensemble"
    comparison.write(out, overwrite=True)
    print(comparison.to_markdown())
    print(f"written: {folder}/predictions.csv, {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
