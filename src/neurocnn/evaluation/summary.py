"""Gather the folds of a run: pooled out-of-fold predictions, per-fold metrics, mean ± std across
folds and 95% bootstrap confidence intervals over subjects (`neurocnn cv gather`).

Works on whatever folds are finished (folds trained by separate jobs with ``--fold`` included) and
says which are missing or failed. Reads and writes only the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.data.splits import load_splits
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.metrics import METRICS, bootstrap_ci, classification_metrics, summarise_folds
from neurocnn.training.runfolder import SPLITS, RunFolder, fold_name, write_json

FOLD_FACTS = ("best_epoch", "epochs_run", "early_stopping_epoch", "n_train", "n_val", "n_test")


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path, dtype={"participant_id": str, "session_id": str, "label": str, "prediction": str}
    )


def as_arrays(table: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class indices, probabilities (n, K), predicted indices) of a predictions table."""
    lookup = {c: i for i, c in enumerate(classes)}
    y = table["label"].map(lookup).to_numpy(dtype=np.int64)
    prob = table[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(prob).all(axis=1)
    if bad.any():
        first = table.loc[bad, "participant_id"].iloc[0]
        raise NeuroCNNError(
            f"participant {first} has a non-finite probability ({int(bad.sum())} row(s)): the model "
            "diverged (NaN weights?); train the fold again, e.g. with a lower learning rate"
        )
    pred = table["prediction"].map(lookup).to_numpy(dtype=np.int64)
    return y, prob, pred


def pooled_metrics(
    table: pd.DataFrame, classes: list[str], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Metrics of pooled predictions with percentile-bootstrap 95% CIs over participants."""
    y, prob, pred = as_arrays(table, classes)
    values = classification_metrics(y, prob, pred)
    ci = bootstrap_ci(y, prob, table["participant_id"].to_numpy(), y_pred=pred, n_boot=n_boot, seed=seed)
    return {m: {"value": values[m], "ci95": list(ci[m])} for m in METRICS}


def gather(run_dir: Path | str, *, n_boot: int = 2000, seed: int | None = None) -> dict[str, Any]:
    """Write RUN/predictions.csv, RUN/metrics.json and RUN/summary.json from the finished folds.

    The bootstrap's seed is the run's (``config.seed``) unless given, so gathering fold jobs gives
    the CIs the same run trained in one go reports.
    """
    run = RunFolder(Path(run_dir))
    config, data = run.config(), run.data()
    seed = config.seed if seed is None else seed
    classes = list(data["classes"])
    splits = load_splits(run.path / SPLITS)
    outer = splits[splits["inner"] == -1]
    expected = sorted({(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)})
    done = [rf for rf in expected if run.is_done(*rf)]
    failed = [fold_name(*rf) for rf in expected if (run.fold_dir(*rf) / "error.txt").exists()]
    failed = [f for f in failed if f not in {fold_name(*rf) for rf in done}]
    missing = [fold_name(*rf) for rf in expected if rf not in done]

    per_fold, tables = [], []
    for rf in done:
        d = run.fold_dir(*rf)
        m = json.loads((d / "metrics.json").read_text())
        per_fold.append({"fold": fold_name(*rf), **{k: m.get(k) for k in FOLD_FACTS}, **m.get("test", {})})
        p = d / "predictions.csv"
        if p.exists():
            tables.append(read_predictions(p))
    predictions = (
        pd.concat(tables, ignore_index=True).sort_values(["repeat", "fold", "index"], kind="stable")
        if tables
        else pd.DataFrame()
    )
    if not predictions.empty:
        predictions.to_csv(run.path / "predictions.csv", index=False)

    summary: dict[str, Any] = {
        "run": str(run.path),
        "model": config.model.name,
        "classes": classes,
        "permuted_labels": config.permute_labels,
        "folds_expected": len(expected),
        "folds_done": len(done),
        "missing": missing,
        "failed": failed,
        "per_fold": per_fold,
        "mean_std": summarise_folds([{k: v for k, v in f.items() if k != "fold"} for f in per_fold]),
        "bootstrap": {"resamples": n_boot, "level": 0.95, "unit": "participant", "seed": seed},
    }
    if not predictions.empty:
        summary["n_subjects"] = int(predictions["participant_id"].nunique())
        summary["n_predictions"] = len(predictions)
        summary["pooled"] = pooled_metrics(predictions, classes, n_boot=n_boot, seed=seed)
        repeats = sorted(predictions["repeat"].unique())
        if len(repeats) > 1:
            per_repeat = {
                int(r): classification_metrics(*as_arrays(predictions[predictions["repeat"] == r], classes))
                for r in repeats
            }
            summary["per_repeat"] = per_repeat
            summary["repeat_mean_std"] = summarise_folds(list(per_repeat.values()))
        metrics = {
            m: {
                **summary["pooled"][m],
                "fold_mean": summary["mean_std"].get(m, {}).get("mean"),
                "fold_std": summary["mean_std"].get(m, {}).get("std"),
            }
            for m in METRICS
        }
        write_json(run.path / "metrics.json", metrics)
    elif not done:
        raise NeuroCNNError(f"{run.path}: no finished fold to gather yet ({len(expected)} expected)")
    write_json(run.path / "summary.json", summary)
    return summary


def describe(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{summary['model']}: {summary['folds_done']}/{summary['folds_expected']} folds"
        + (" (labels permuted)" if summary.get("permuted_labels") else "")
    ]
    pooled = summary.get("pooled")
    if pooled:
        for m in ("balanced_accuracy", "accuracy", "auc"):
            v, (lo, hi) = pooled[m]["value"], pooled[m]["ci95"]
            ms = summary["mean_std"].get(m, {})
            lines.append(
                f"  {m.replace('_', ' ')}: {v:.3f} (95% CI {lo:.3f}–{hi:.3f}); folds "
                f"{ms.get('mean', float('nan')):.3f} ± {ms.get('std', float('nan')):.3f}"
            )
    if summary["missing"]:
        lines.append(f"  missing: {', '.join(summary['missing'])}")
    if summary["failed"]:
        lines.append(f"  failed (see folds/*/error.txt): {', '.join(summary['failed'])}")
    return "\n".join(lines)
