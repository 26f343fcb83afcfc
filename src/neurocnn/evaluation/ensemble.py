"""The fold models of a run as an ensemble (S1): mean probability and majority vote.

`evaluate_cohort` applies every finished fold's best checkpoint to a prepared cohort (an independent
test cohort, typically) and reports, with 95% bootstrap CIs over participants, the metrics of the
mean-probability decision and of the majority vote over models, and the spread of the single models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from neurocnn.data.cache import PreparedCohort
from neurocnn.data.cohort_checks import mm
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import predict_proba
from neurocnn.evaluation.metrics import METRICS, bootstrap_ci, classification_metrics, summarise_folds
from neurocnn.evaluation.predict import training_voxel_sizes
from neurocnn.training.module import build_network
from neurocnn.training.runfolder import RunFolder, fold_config, write_json
from neurocnn.training.transfer import load_state


@dataclass(frozen=True)
class FoldModel:
    name: str
    net: nn.Module


def load_fold_models(run_dir: Path | str, which: str = "best") -> list[FoldModel]:
    """Every finished fold's network with its ``best`` (or ``last``) weights, in eval mode."""
    run = RunFolder(Path(run_dir))
    config, data = run.config(), run.data()
    shape, n_classes = tuple(data["shape"]), len(data["classes"])
    models = []
    for d in sorted(run.folds.glob("r*_f*")):
        ckpt = d / f"{which}.ckpt"
        if not (d / "metrics.json").exists() or not ckpt.exists():
            continue
        net = build_network(fold_config(config, d), shape, n_classes)
        net.load_state_dict(load_state(ckpt))
        models.append(FoldModel(d.name, net.eval()))
    if not models:
        raise NeuroCNNError(
            f"{run.path} has no finished fold with a {which}.ckpt; train it with `neurocnn cv`"
        )
    return models


def check_compatible(data: dict[str, Any], cache: PreparedCohort) -> None:
    """The cohort must have been prepared onto the training grid with the same modalities."""
    if list(cache.modalities) != list(data["modalities"]):
        raise NeuroCNNError(
            f"{cache.path} has modalities {cache.modalities}, the run was trained on {data['modalities']}; "
            "give the same image columns in the same order"
        )
    if tuple(cache.shape[1:]) != tuple(data["shape"][1:]):
        raise NeuroCNNError(
            f"{cache.path} holds arrays {tuple(cache.shape[1:])}, the run was trained on "
            f"{tuple(data['shape'][1:])}; give its table (--cohort TABLE) instead of a prepared "
            "cohort, and the scans are prepared like the run's"
        )
    trained = training_voxel_sizes(data)
    sizes = cache.subject_voxel_sizes()
    if trained is not None and sizes is not None:
        off = np.flatnonzero(~np.isclose(sizes, trained, atol=1e-3).all(axis=1))
        if len(off):
            ids = cache.manifest["participant_id"].astype(str).tolist()
            who = f"{len(off)} subject(s), e.g. {ids[off[0]]}" if len(sizes) == len(ids) else "every subject"
            raise NeuroCNNError(
                f"{cache.path} holds voxels of {mm(sizes[off[0]])} mm ({who}), the run was trained on "
                f"{mm(trained)} mm; give its table (--cohort TABLE) instead of a prepared cohort, "
                "and the scans are prepared like the run's"
            )


def majority_vote(preds: np.ndarray, mean_prob: np.ndarray) -> np.ndarray:
    """Class with most model votes per subject; ties go to the higher mean probability."""
    k = mean_prob.shape[1]
    votes = np.stack([(preds == c).sum(axis=0) for c in range(k)], axis=1).astype(np.float64)
    return (votes + 0.5 * mean_prob).argmax(axis=1)


def ensemble_predictions(
    run_dir: Path | str,
    cache: PreparedCohort,
    *,
    batch_size: int = 8,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ensemble table, per-model table) for every subject of ``cache``.

    The ensemble table has participant_id, session_id, index, label (when labelled), prob_<class>
    (mean over models), prediction (arg-max of the mean) and vote (majority over models).
    """
    run = RunFolder(Path(run_dir))
    data = run.data()
    check_compatible(data, cache)
    classes = list(data["classes"])
    models = load_fold_models(run.path)
    idx = cache.manifest["index"].to_numpy(dtype=np.int64)
    probs, preds, rows = [], [], []
    for m in models:
        p, d = predict_proba(m.net, cache, idx, batch_size=batch_size, device=device)
        probs.append(p)
        preds.append(d)
        per = _frame(cache, idx)
        per.insert(3, "model", m.name)
        for k, c in enumerate(classes):
            per[f"prob_{c}"] = p[:, k]
        per["prediction"] = [classes[i] for i in d]
        rows.append(per)
    mean = np.mean(probs, axis=0)
    table = _frame(cache, idx)
    if "label" in cache.manifest and cache.manifest["label"].notna().any():
        table["label"] = cache.manifest.set_index("index").loc[idx, "label"].to_numpy()
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = mean[:, k]
    table["prediction"] = [classes[i] for i in mean.argmax(axis=1)]
    table["vote"] = [classes[i] for i in majority_vote(np.stack(preds), mean)]
    table["n_models"] = len(models)
    return table, pd.concat(rows, ignore_index=True)


def _frame(cache: PreparedCohort, idx: np.ndarray) -> pd.DataFrame:
    m = cache.manifest.set_index("index").loc[idx]
    return pd.DataFrame(
        {
            "participant_id": m["participant_id"].astype(str).to_numpy(),
            "session_id": m["session_id"].to_numpy() if "session_id" in m else None,
            "index": idx,
        }
    )


def evaluate_cohort(
    run_dir: Path | str,
    cache: PreparedCohort,
    out_dir: Path | str,
    *,
    batch_size: int = 8,
    device: str = "cpu",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Ensemble predictions and metrics on a labelled cohort, written to ``out_dir``."""
    run = RunFolder(Path(run_dir))
    classes = list(run.data()["classes"])
    table, per_model = ensemble_predictions(run.path, cache, batch_size=batch_size, device=device)
    if "label" not in table:
        raise NeuroCNNError(f"{cache.path} has no labels; use `neurocnn predict` for unlabelled scans")
    labelled = table[table["label"].notna()].copy()
    unknown = sorted(set(labelled["label"]) - set(classes))
    if unknown:
        raise NeuroCNNError(
            f"labels {unknown} of {cache.path} are not among the run's classes {classes}; "
            "map them to the training classes (e.g. with --classes) first"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    y = labelled["label"].map(lookup).to_numpy(dtype=np.int64)
    prob = labelled[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    groups = labelled["participant_id"].to_numpy()
    result: dict[str, Any] = {"run": str(run.path), "cohort": str(cache.path), "classes": classes}
    result["n_subjects"] = int(labelled["participant_id"].nunique())
    # subjects of a prepared cohort (--cache) without a label are left out of the metrics
    result["n_unlabelled"] = int(len(table) - len(labelled))
    result["n_models"] = int(table["n_models"].iloc[0])
    for name, column in (("mean_probability", "prediction"), ("majority_vote", "vote")):
        pred = labelled[column].map(lookup).to_numpy(dtype=np.int64)
        values = classification_metrics(y, prob, pred)
        ci = bootstrap_ci(y, prob, groups, y_pred=pred, n_boot=n_boot, seed=seed)
        result[name] = {m: {"value": values[m], "ci95": list(ci[m])} for m in METRICS}
    singles = []
    for _, group in per_model.groupby("model", sort=True):
        g = group[group["index"].isin(labelled["index"])]
        yy = g["index"].map(dict(zip(labelled["index"], y, strict=True))).to_numpy(dtype=np.int64)
        # each model's own decision (a slice model's is its vote over slices, not the arg-max of
        # its mean probability)
        own = g["prediction"].map(lookup).to_numpy(dtype=np.int64)
        singles.append(classification_metrics(yy, g[[f"prob_{c}" for c in classes]].to_numpy(), own))
    result["single_models"] = summarise_folds(singles)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "predictions.csv", index=False)
    per_model.to_csv(out / "predictions_per_model.csv", index=False)
    write_json(out / "metrics.json", result)
    return result
