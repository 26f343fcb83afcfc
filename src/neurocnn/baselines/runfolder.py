"""Run folders of the baselines, in the layout of a CNN run (`neurocnn.training.runfolder`), so that
`neurocnn compare` and the report read both alike::

    RUN/
      config.yaml          kind of baseline, features, classifier, grid, splits, seed (yaml.safe_dump)
      data.json            the cohort (as for a CNN run)
      splits.tsv           the split table (the CNN run's when given with --splits RUN)
      environment.json     versions, git commit, hardware, command line
      folds/r{R}_f{F}/     predictions.csv, search.csv (every grid point's inner scores),
                           model.joblib, importance.csv (when the classifier has one), metrics.json
                           (chosen hyper-parameters, test metrics; written last: marks a finished fold)
      predictions.csv      out-of-fold predictions of every fold (label and prediction: class names)
      metrics.json         pooled out-of-fold metrics with 95% bootstrap CIs over participants
      summary.json         per-fold metrics, mean ± std, pooled metrics and CIs (CNN runs' keys)
      feature_importance.csv/.png   mean ± std over folds (logistic regression, XGBoost)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from neurocnn.baselines.nested import FoldResult, outer_splits
from neurocnn.data import splits as S
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.metrics import METRICS, classification_metrics, summarise_folds
from neurocnn.training.runfolder import fold_name, write_json, write_text

CONFIG, DATA, SPLITS, ENVIRONMENT = "config.yaml", "data.json", "splits.tsv", "environment.json"
COEFFICIENT = "logistic-regression coefficient (standardised features)"
GAIN = "XGBoost gain"


def open_baseline_run(
    path: Path | str, config: dict[str, Any], *, overwrite: bool = False, resume: bool = False
) -> Path:
    """Create the run folder (or continue one made with the same configuration)."""
    path = Path(path)
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    if path.exists() and any(path.iterdir()):
        if not (path / CONFIG).exists():
            raise NeuroCNNError(f"{path} exists and is not a neurocnn run folder; choose another --out")
        if overwrite:
            shutil.rmtree(path)
        else:
            old = yaml.safe_load((path / CONFIG).read_text())
            if old != yaml.safe_load(text):
                changed = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
                raise NeuroCNNError(
                    f"{path} holds a run with a different configuration ({', '.join(changed)}); "
                    "use another --out, or --overwrite to replace it"
                )
            if not resume:
                raise NeuroCNNError(
                    f"{path} already holds this run; --resume continues it, --overwrite replaces it"
                )
            return path
    path.mkdir(parents=True, exist_ok=True)
    write_text(path / CONFIG, text)
    return path


def save_splits(table: pd.DataFrame, path: Path) -> None:
    """`save_splits`, accepting an identical existing table (compared as TSV text: a column of
    missing session ids comes back from TSV as NaN, which `save_splits` would call different)."""
    if path.exists():
        order = ["repeat", "inner", "fold", "role", "index"]

        def text(t: pd.DataFrame) -> str:
            return t[S.COLUMNS].sort_values(order, kind="stable").to_csv(sep="\t", index=False)

        if text(S.load_splits(path)) == text(table):
            return
    S.save_splits(table, path)


def is_done(run: Path, repeat: int, fold: int) -> bool:
    return (run / "folds" / fold_name(repeat, fold) / "metrics.json").exists()


def predictions_table(result: FoldResult, manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The fold's test predictions in the CNN runs' format (labels as class names)."""
    m = manifest.set_index("index").loc[result.test]
    labels = m["label_index"].to_numpy(dtype=np.int64)
    table = pd.DataFrame(
        {
            "participant_id": m["participant_id"].to_numpy(),
            "session_id": m["session_id"].to_numpy() if "session_id" in m else None,
            "index": result.test,
            "repeat": result.repeat,
            "fold": result.fold,
            "label": [classes[i] for i in labels],
        }
    )
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = result.prob[:, k]
    table["prediction"] = [classes[i] for i in result.pred]
    return table


def write_fold(
    run: Path,
    result: FoldResult,
    manifest: pd.DataFrame,
    classes: list[str],
    *,
    feature_names: list[str] | None = None,
    save_model: bool = True,
) -> dict[str, Any]:
    """Write one finished outer fold; returns its metrics.json content."""
    import joblib

    d = run / "folds" / fold_name(result.repeat, result.fold)
    d.mkdir(parents=True, exist_ok=True)
    table = predictions_table(result, manifest, classes)
    table.to_csv(d / "predictions.csv", index=False)
    result.search.to_csv(d / "search.csv", index=False)
    if save_model:
        joblib.dump(result.model, d / "model.joblib")
    found = model_importance(result.model)
    if found is not None and feature_names is not None and len(found[0]) == len(feature_names):
        pd.DataFrame({"feature": feature_names, "importance": found[0], "kind": found[1]}).to_csv(
            d / "importance.csv", index=False
        )
    y = manifest.set_index("index").loc[result.test, "label_index"].to_numpy(dtype=np.int64)
    metrics = {
        "repeat": result.repeat,
        "fold": result.fold,
        "inner": -1,
        "n_train": len(result.train),
        "n_val": 0,
        "n_test": len(result.test),
        "selection": f"GridSearchCV on the training fold; inner folds: {result.inner_source}",
        "best_params": result.best_params,
        "best_inner_score": result.best_score,
        "test": classification_metrics(y, result.prob, result.pred),
        "seconds": result.seconds,
        **result.extra,
    }
    write_json(d / "metrics.json", metrics)
    return metrics


def model_importance(model: Any) -> tuple[np.ndarray, str] | None:
    """(importances, kind) of a fitted model: logistic-regression coefficients on standardised
    features (binary: towards the second class; more classes: their L2 norm across classes) or
    XGBoost gains; None for classifiers without one (KNN, RBF SVM)."""
    clf = model.steps[-1][1] if hasattr(model, "steps") else model
    if type(clf).__name__ == "LogisticRegression":
        coef = np.asarray(clf.coef_)
        return (coef[0] if coef.shape[0] == 1 else np.linalg.norm(coef, axis=0)), COEFFICIENT
    if type(clf).__name__ == "XGBClassifier":
        return np.asarray(clf.feature_importances_, dtype=np.float64), GAIN
    return None


def gather_baseline(run: Path | str, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Pool the finished folds into predictions.csv, metrics.json, summary.json (and importances)."""
    from neurocnn.evaluation.summary import as_arrays, pooled_metrics, read_predictions

    run = Path(run)
    config = yaml.safe_load((run / CONFIG).read_text())
    classes = list(json.loads((run / DATA).read_text())["classes"])
    table = S.load_splits(run / SPLITS)
    expected = outer_splits(table)
    done = [rf for rf in expected if is_done(run, *rf)]
    missing = [fold_name(*rf) for rf in expected if rf not in done]
    per_fold, tables = [], []
    for rf in done:
        d = run / "folds" / fold_name(*rf)
        m = json.loads((d / "metrics.json").read_text())
        facts = {k: m.get(k) for k in ("n_train", "n_val", "n_test", "best_params", "best_inner_score")}
        per_fold.append({"fold": fold_name(*rf), **facts, **m.get("test", {})})
        tables.append(read_predictions(d / "predictions.csv"))
    if not tables:
        raise NeuroCNNError(f"{run}: no finished fold to gather yet ({len(expected)} expected)")
    predictions = pd.concat(tables, ignore_index=True).sort_values(["repeat", "fold", "index"], kind="stable")
    predictions.to_csv(run / "predictions.csv", index=False)
    numeric = [{k: v for k, v in f.items() if k in METRICS} for f in per_fold]
    summary: dict[str, Any] = {
        "run": str(run),
        "model": config["model"]["name"],
        "kind": "baseline",
        "baseline": config.get("baseline"),
        "classes": classes,
        "permuted_labels": False,
        "folds_expected": len(expected),
        "folds_done": len(done),
        "missing": missing,
        "failed": [],
        "per_fold": per_fold,
        "mean_std": summarise_folds(numeric),
        "bootstrap": {"resamples": n_boot, "level": 0.95, "unit": "participant", "seed": seed},
        "n_subjects": int(predictions["participant_id"].nunique()),
        "n_predictions": len(predictions),
        "pooled": pooled_metrics(predictions, classes, n_boot=n_boot, seed=seed),
    }
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
    write_json(run / "metrics.json", metrics)
    importance = gather_importance(run, done)
    if importance is not None:
        summary["feature_importance"] = {
            "file": "feature_importance.csv",
            "kind": importance.attrs.get("kind"),
            "top": importance.head(10)[["feature", "mean", "std"]].to_dict("records"),
        }
    write_json(run / "summary.json", summary)
    return summary


def gather_importance(run: Path, done: list[tuple[int, int]]) -> pd.DataFrame | None:
    """feature_importance.csv (mean, std over folds, one column per fold) and its plot, when every
    fold's model has the same kind of importance (not for `select` choosing different families)."""
    per, kinds, features = {}, set(), None
    for rf in done:
        f = run / "folds" / fold_name(*rf) / "importance.csv"
        if f.exists():
            table = pd.read_csv(f)
            if features is not None and list(table["feature"]) != features:
                return None  # folds of different feature sets: nothing to average
            features = list(table["feature"])
            per[fold_name(*rf)] = table["importance"].to_numpy()
            kinds |= set(table["kind"])
    if not per or len(kinds) != 1 or len(per) != len(done):
        return None
    kind = kinds.pop()
    wide = pd.DataFrame(per)  # rows in feature order (names need not be unique)
    table = pd.DataFrame(
        {"feature": features, "mean": wide.mean(axis=1).to_numpy(), "std": wide.std(axis=1).to_numpy()}
    )
    table = pd.concat([table, wide], axis=1)
    table = table.iloc[np.argsort(-table["mean"].abs().to_numpy(), kind="stable")].reset_index(drop=True)
    table.attrs["kind"] = kind
    table.to_csv(run / "feature_importance.csv", index=False)
    from neurocnn.baselines.plots import plot_importance

    name = yaml.safe_load((run / CONFIG).read_text())["model"]["name"]
    title = f"{name}: {kind}"
    classes = json.loads((run / DATA).read_text()).get("classes", []) if (run / DATA).exists() else []
    if kind == COEFFICIENT and len(classes) == 2:
        title += f"; > 0 favours {classes[1]}"
    plot_importance(table, run / "feature_importance.png", title=title)
    return table
