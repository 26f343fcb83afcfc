"""Compare runs (CNNs and baselines) on the same subjects: `neurocnn compare RUN...`.

For every run: its metrics on the pooled out-of-fold predictions with 95% bootstrap CIs over
participants, and the mean ± SD across folds. For every pair of runs, on the rows both predicted
(matched by participant, session and repeat):

- the difference A − B with a paired bootstrap 95% CI over participants;
- cross-validation (several folds): the corrected resampled t-test of Nadeau & Bengio over the
  per-fold differences, when both runs used the same folds (a baseline run with ``--splits RUN``
  does), and the permutation test on the pooled out-of-fold predictions;
- one independent test set (one split): McNemar's test of the accuracies, DeLong's test of the
  AUCs (two classes) and the permutation test;
- Holm-adjusted p-values over all pairs, per metric and test.

A run is a run folder with ``predictions.csv`` (CNN runs after `neurocnn cv` / `cv gather`,
baseline runs) or a predictions CSV file itself (e.g. of an independent test cohort). Labels and
predictions may be class names or class indices (`neurocnn.evaluation.run_predictions`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.metrics import METRICS, bootstrap_ci, classification_metrics, fast_metrics
from neurocnn.evaluation.paired_tests import (
    corrected_resampled_ttest,
    delong_test,
    holm,
    mcnemar_test,
    paired_permutation_test,
)
from neurocnn.evaluation.run_predictions import KEY, RunPredictions, load_run

__all__ = ["Comparison", "RunPredictions", "check_output", "compare_pair", "compare_runs", "load_run"]

DEFAULT_METRICS = ("balanced_accuracy", "auc")


@dataclass
class Comparison:
    """The result of `compare_runs`: one table of runs, one of pairs, and notes."""

    runs: pd.DataFrame
    pairs: pd.DataFrame
    metrics: list[str]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [
            "| run | subjects | folds | "
            + " | ".join(_label(m) + " (95% CI)" for m in self.metrics)
            + " | "
            + " | ".join(_label(m) + " folds mean ± SD" for m in self.metrics)
            + " |"
        ]
        lines.append("|" + "---|" * (3 + 2 * len(self.metrics)))
        for _, r in self.runs.iterrows():
            cells = [
                f"{r[f'{m}']:.3f} ({r[f'{m}_ci_low']:.3f}–{r[f'{m}_ci_high']:.3f})" for m in self.metrics
            ]
            folds = [f"{r[f'{m}_fold_mean']:.3f} ± {r[f'{m}_fold_std']:.3f}" for m in self.metrics]
            lines.append(
                f"| {r['run']} | {r['n_subjects']} | {r['n_splits']} | " + " | ".join(cells + folds) + " |"
            )
        if not self.pairs.empty:
            lines += [
                "",
                "| A − B | metric | rows | difference (95% CI) | corrected t-test p | "
                "permutation p | McNemar / DeLong p | Holm p (t / perm.) |",
                "|" + "---|" * 8,
            ]
            for _, p in self.pairs.iterrows():
                single = p["p_mcnemar"] if p["metric"] == "accuracy" else p["p_delong"]
                lines.append(
                    f"| {p['a']} − {p['b']} | {_label(p['metric'])} | {p['n_rows']} | "
                    f"{p['difference']:+.3f} ({p['ci_low']:+.3f} to {p['ci_high']:+.3f}) | "
                    f"{_p(p['p_ttest'])} | {_p(p['p_permutation'])} | {_p(single)} | "
                    f"{_p(p['p_ttest_holm'])} / {_p(p['p_permutation_holm'])} |"
                )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)

    def pair(self, a: str, b: str, metric: str) -> dict[str, Any] | None:
        """The A − B row of one metric whichever way round it was computed (None: not compared).

        Differences, CI bounds and t change sign, and the two values swap, when the stored pair is
        B − A; p-values do not.
        """
        if self.pairs.empty:  # a single run: the table has no columns at all
            return None
        for first, second, sign in ((a, b, 1.0), (b, a, -1.0)):
            rows = self.pairs[
                (self.pairs["a"] == first) & (self.pairs["b"] == second) & (self.pairs["metric"] == metric)
            ]
            if not rows.empty:
                row = rows.iloc[0].to_dict()
                low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
                values = (row["a_value"], row["b_value"])
                return {
                    **row,
                    "a": a,
                    "b": b,
                    "a_value": values[0] if sign > 0 else values[1],
                    "b_value": values[1] if sign > 0 else values[0],
                    "difference": sign * row["difference"],
                    "ci_low": low,
                    "ci_high": high,
                    "t": sign * row["t"],
                }
        return None

    def write(self, out: Path | str, *, overwrite: bool = False) -> Path:
        """runs.csv, pairs.csv and comparison.md in ``out``; an earlier comparison there is
        replaced only with ``overwrite``."""
        out = Path(out)
        check_output(out, overwrite=overwrite)
        out.mkdir(parents=True, exist_ok=True)
        self.runs.to_csv(out / "runs.csv", index=False)
        self.pairs.to_csv(out / "pairs.csv", index=False)
        (out / "comparison.md").write_text(self.to_markdown() + "\n")
        return out


def check_output(out: Path, *, overwrite: bool) -> None:
    """Refuse to replace an earlier comparison's files in ``out`` without ``overwrite``."""
    earlier = [n for n in ("runs.csv", "pairs.csv", "comparison.md") if (out / n).exists()]
    if earlier and not overwrite:
        raise NeuroCNNError(
            f"{out} holds an earlier comparison ({', '.join(earlier)}); --overwrite replaces it, "
            "or choose another --out"
        )


def _label(metric: str) -> str:
    return {"auc": "AUC", "mcc": "MCC", "f1": "F1"}.get(metric, metric.replace("_", " "))


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def run_row(run: RunPredictions, metrics: Sequence[str], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled metrics with bootstrap CIs over participants, and mean ± SD across folds."""
    t = run.table
    y, prob, pred = t["y"].to_numpy(), run.prob, t["pred"].to_numpy()
    values = classification_metrics(y, prob, pred)
    ci = bootstrap_ci(y, prob, t["participant_id"].to_numpy(), y_pred=pred, n_boot=n_boot, seed=seed)
    per_fold = _fold_metrics(t.groupby(["repeat", "fold"]).indices, y, prob, pred)
    row: dict[str, Any] = {
        "run": run.name,
        "path": str(run.path),
        "n_subjects": int(t["participant_id"].nunique()),
        "n_rows": len(t),
        "n_splits": run.n_splits,
    }
    for m in metrics:
        f = per_fold[m].dropna()
        row.update(
            {
                m: values[m],
                f"{m}_ci_low": ci[m][0],
                f"{m}_ci_high": ci[m][1],
                f"{m}_fold_mean": float(f.mean()) if len(f) else np.nan,
                f"{m}_fold_std": float(f.std(ddof=1)) if len(f) > 1 else np.nan,
            }
        )
    return row


def _fold_metrics(
    positions: dict[Any, np.ndarray], y: np.ndarray, prob: np.ndarray, pred: np.ndarray
) -> pd.DataFrame:
    """Metrics of each fold; ``positions`` maps (repeat, fold) to row positions."""
    return pd.DataFrame(
        [classification_metrics(y[i], prob[i], pred[i]) for _, i in sorted(positions.items())]
    )


def _paired_bootstrap(
    y: np.ndarray,
    pa: np.ndarray,
    da: np.ndarray,
    pb: np.ndarray,
    db: np.ndarray,
    groups: np.ndarray,
    metrics: Sequence[str],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """Percentile CI of metric(A) − metric(B), resampling participants (rows of one stay together)."""
    _, member = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(member == g) for g in range(member.max() + 1)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(n_boot):
        idx = np.concatenate([rows_of[g] for g in rng.integers(0, len(rows_of), len(rows_of))])
        a, b = fast_metrics(y[idx], pa[idx], da[idx]), fast_metrics(y[idx], pb[idx], db[idx])
        for m in metrics:
            draws[m].append(a[m] - b[m])
    out = {}
    for m, v in draws.items():
        arr = np.asarray(v)
        arr = arr[np.isfinite(arr)]
        out[m] = (
            (float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))) if len(arr) else (np.nan, np.nan)
        )
    return out


def compare_pair(
    a: RunPredictions,
    b: RunPredictions,
    metrics: Sequence[str],
    *,
    n_permutations: int = 10000,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the pairs table for A vs B (one per metric) and notes about the pairing."""
    notes: list[str] = []
    if a.classes != b.classes:
        raise NeuroCNNError(
            f"{a.name} and {b.name} predict different classes ({a.classes} vs {b.classes}); "
            "only runs of the same task can be compared"
        )
    both = a.table.merge(b.table, on=KEY, suffixes=("_a", "_b"))
    if both.empty:
        raise NeuroCNNError(
            f"{a.name} and {b.name} share no subject (matched by participant, session and repeat); "
            "run the baseline with --splits of the CNN run"
        )
    if (both["y_a"] != both["y_b"]).any():
        pid = both.loc[both["y_a"] != both["y_b"], "participant_id"].iloc[0]
        raise NeuroCNNError(f"{a.name} and {b.name} disagree on the label of {pid}; are they the same task?")
    left_out = max(len(a.table), len(b.table)) - len(both)
    if left_out:
        notes.append(
            f"{a.name} vs {b.name}: {len(both)} rows in common ({len(a.table)} and {len(b.table)} "
            "predicted); the comparison uses the common rows only"
        )
    y = both["y_a"].to_numpy()
    cols_a = [f"prob_{c}_a" for c in a.classes]
    cols_b = [f"prob_{c}_b" for c in a.classes]
    pa, pb = both[cols_a].to_numpy(dtype=np.float64), both[cols_b].to_numpy(dtype=np.float64)
    da, db = both["pred_a"].to_numpy(), both["pred_b"].to_numpy()
    groups = both["participant_id"].to_numpy()
    va, vb = classification_metrics(y, pa, da), classification_metrics(y, pb, db)
    ci = _paired_bootstrap(y, pa, da, pb, db, groups, metrics, n_boot=n_boot, seed=seed)

    same_folds = bool((both["fold_a"] == both["fold_b"]).all())
    n_splits = len(both[["repeat", "fold_a"]].drop_duplicates())
    design = "test set" if n_splits == 1 else "cross-validation"
    fold_a: pd.DataFrame | None = None
    fold_b: pd.DataFrame | None = None
    ratio = np.nan
    if design == "cross-validation" and same_folds:
        positions = both.groupby(["repeat", "fold_a"], sort=True).indices
        fold_a, fold_b = _fold_metrics(positions, y, pa, da), _fold_metrics(positions, y, pb, db)
        # n_test / n_train of each run's own split table (one may have trained on a --subset): the
        # larger, the conservative correction, so that `compare A B` and `compare B A` agree
        table = both.rename(columns={"fold_a": "fold"})
        ratios = [_test_train_ratio(table, _split_table(run)) for run in (a, b)]
        ratio = float(np.nanmax(ratios)) if np.isfinite(ratios).any() else np.nan
        if not np.isfinite(ratio):
            notes.append(
                f"{a.name} vs {b.name}: no corrected t-test: the training-set size is unknown (each "
                "split predicts only its own test subjects, e.g. a repeated hold-out, and neither "
                "run folder has its splits.tsv)"
            )
    elif design == "cross-validation":
        notes.append(
            f"{a.name} vs {b.name}: the runs used different folds, so no fold-wise t-test; run the "
            "baseline with --splits of the other run to pair them"
        )
    mc = dl = None
    if design == "test set":
        mc = mcnemar_test(da == y, db == y)
        if len(a.classes) == 2:
            dl = delong_test(y == 1, pa[:, 1], pb[:, 1])
        if both["participant_id"].duplicated().any():
            notes.append(
                f"{a.name} vs {b.name}: several sessions per participant; McNemar and DeLong "
                "treat rows as independent"
            )
    rows = []
    for m in metrics:
        tt = (
            corrected_resampled_ttest(fold_a[m].to_numpy() - fold_b[m].to_numpy(), ratio)
            if fold_a is not None and fold_b is not None
            else None
        )
        perm = paired_permutation_test(
            y, pa, pb, pred_a=da, pred_b=db, groups=groups, metric=m, n_permutations=n_permutations, seed=seed
        )
        rows.append(
            {
                "a": a.name,
                "b": b.name,
                "metric": m,
                "design": design,
                "n_rows": len(both),
                "n_subjects": int(both["participant_id"].nunique()),
                "a_value": va[m],
                "b_value": vb[m],
                "difference": va[m] - vb[m],
                "ci_low": ci[m][0],
                "ci_high": ci[m][1],
                "t": tt["t"] if tt else np.nan,
                "df": tt["df"] if tt else np.nan,
                "test_train_ratio": ratio,
                "p_ttest": tt["p_value"] if tt else np.nan,
                "p_permutation": perm["p_value"],
                "n_permutations": perm["n_permutations"],
                "p_mcnemar": mc["p_value"] if mc and m == "accuracy" else np.nan,
                "p_delong": dl["p_value"] if dl and m == "auc" else np.nan,
            }
        )
    if mc and "accuracy" not in metrics:
        notes.append(
            f"{a.name} vs {b.name}: McNemar (accuracy) p = {_p(mc['p_value'])} "
            f"({mc['b']} vs {mc['c']} discordant, {mc['method']})"
        )
    return rows, notes


def _split_table(*runs: RunPredictions) -> pd.DataFrame | None:
    """The outer splits (train, val, test rows) of the first run folder that has its splits.tsv."""
    for run in runs:
        path = run.path / "splits.tsv"
        if run.path.is_dir() and path.is_file():
            return _outer_splits(path, path.stat().st_mtime_ns)
    return None


@functools.lru_cache(maxsize=64)
def _outer_splits(path: Path, mtime_ns: int) -> pd.DataFrame:
    """Read once while unchanged (every pair of a many-run comparison asks; nobody modifies it)."""
    from neurocnn.data.splits import load_splits

    table = load_splits(path)
    return table[table["inner"] == -1]


def _test_train_ratio(table: pd.DataFrame, splits: pd.DataFrame | None = None) -> float:
    """Mean n_test / n_train over the folds of the paired rows. n_train counts every non-test
    participant of the split (training and validation): from the run's split table when there is
    one, else the participants the other folds of the same repeat predicted (which is unknown for a
    repeated hold-out, where each repeat predicts its test subjects only: NaN then)."""
    ratios = []
    for (repeat, fold_id), fold in table.groupby(["repeat", "fold"]):
        n_test = fold["participant_id"].nunique()
        if splits is not None:
            rows = splits[(splits["repeat"] == repeat) & (splits["fold"] == fold_id)]
            n_train = rows.loc[rows["role"] != "test", "participant_id"].nunique()
        else:
            rep = table[table["repeat"] == repeat]
            n_train = rep["participant_id"].nunique() - n_test
        if n_train > 0:
            ratios.append(n_test / n_train)
    return float(np.mean(ratios)) if ratios else np.nan


def compare_runs(
    paths: Sequence[Path | str],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_permutations: int = 10000,
    n_boot: int = 2000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> Comparison:
    """Compare every run with every other (see the module docstring)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise NeuroCNNError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if len(paths) < 1:
        raise NeuroCNNError("give at least one run")
    given = list(names) if names else [None] * len(paths)
    runs = [load_run(p, n) for p, n in zip(paths, given, strict=True)]
    _unique_names(runs)
    table = pd.DataFrame([run_row(r, metrics, n_boot=n_boot, seed=seed) for r in runs])
    rows, notes = [], []
    for a, b in itertools.combinations(runs, 2):
        r, n = compare_pair(a, b, metrics, n_permutations=n_permutations, n_boot=n_boot, seed=seed)
        rows += r
        notes += n
    pairs = pd.DataFrame(rows)
    if not pairs.empty:
        for test in ("p_ttest", "p_permutation", "p_mcnemar", "p_delong"):
            pairs[f"{test}_holm"] = np.nan
            for _, idx in pairs.groupby("metric").groups.items():
                pairs.loc[idx, f"{test}_holm"] = holm(pairs.loc[idx, test].to_numpy())
    return Comparison(table, pairs, list(metrics), notes)


def _unique_names(runs: list[RunPredictions]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = str(r.path)
