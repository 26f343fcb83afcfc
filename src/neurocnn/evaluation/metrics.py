"""Classification metrics and bootstrap confidence intervals, on top of scikit-learn.

Every function takes class indices ``y_true`` (n,) and class probabilities ``prob`` (n, K) whose
columns follow the cohort's class order. For two classes the positive class is index 1 (the second
class of the cohort's ``classes``): sensitivity is its recall, specificity the recall of class 0 and
the AUC is computed on its probability. For more classes, sensitivity, specificity, precision and F1
are macro averages over classes (specificity of class k = recall of "not k") and the AUC is the
one-vs-rest macro AUC.

Confidence intervals come from a bootstrap over subjects (participants): each resample draws
participants with replacement and keeps all of their rows (sessions, repeats), so repeated rows of
one person never count as independent evidence.

>>> import numpy as np
>>> m = classification_metrics(np.array([0, 1, 1, 0]), np.array([[.8, .2], [.3, .7], [.6, .4], [.1, .9]]))
>>> round(m["balanced_accuracy"], 2)
0.5
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

METRICS = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "auc",
    "mcc",
)
"""Metric names in the order they are reported."""


def _check(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"prob must be (n, K) with n = {len(y)} rows, got {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]}), got {sorted(set(y))}")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).any(axis=1).sum())
        raise ValueError(f"prob has {bad} rows with NaN or infinite values")
    return y, p


def specificity(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Recall of the negative class (binary) or macro one-vs-rest specificity."""
    cm = skm.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    return specificity_from_cm(cm.astype(np.float64))


def auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC (binary: of class 1; more classes: one-vs-rest macro); NaN when one class is absent."""
    y, p = _check(y_true, prob)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if p.shape[1] == 2:
        return float(skm.roc_auc_score(y, p[:, 1]))
    if len(present) < p.shape[1]:
        return float("nan")
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))


def classification_metrics(
    y_true: np.ndarray,
    prob: np.ndarray,
    y_pred: np.ndarray | None = None,
) -> dict[str, float]:
    """All of `METRICS` for one set of predictions.

    Parameters
    ----------
    y_true
        True class indices (n,).
    prob
        Class probabilities (n, K).
    y_pred
        Predicted classes; by default the most probable class. Give it when the decision is not the
        arg-max of ``prob`` (a majority vote over slices or over fold models).
    """
    y, p = _check(y_true, prob)
    k = p.shape[1]
    pred = p.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    if len(y) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    # Precision and F1 average over the classes that occur (true or predicted), as scikit-learn's
    # default; sensitivity (recall) over the true classes only: a class absent from a test set must
    # not count as a recall of 0 (more than two classes: sensitivity = balanced accuracy).
    labels = np.arange(k) if k == 2 else np.union1d(np.unique(y), np.unique(pred))
    average = "binary" if k == 2 else "macro"
    balanced = float(np.mean(_recalls(y, pred, k)))
    with warnings.catch_warnings():
        # a class that is never predicted has an undefined precision: reported as 0 (zero_division)
        warnings.simplefilter("ignore")
        out = {
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": balanced,
            "sensitivity": _sensitivity(y, pred, k, balanced),
            "specificity": specificity(y, pred, k),
            "precision": float(skm.precision_score(y, pred, labels=labels, average=average, zero_division=0)),
            "f1": float(skm.f1_score(y, pred, labels=labels, average=average, zero_division=0)),
            "auc": auc(y, p),
            "mcc": float(skm.matthews_corrcoef(y, pred)),
        }
    return out


def _sensitivity(y: np.ndarray, pred: np.ndarray, k: int, balanced: float) -> float:
    """Recall of class 1 (binary; NaN without a positive subject, not 0); more classes: the mean
    recall over the true classes, which is the balanced accuracy."""
    if k > 2:
        return balanced
    return float(np.mean(pred[y == 1] == 1)) if np.any(y == 1) else float("nan")


def _recalls(y: np.ndarray, pred: np.ndarray, k: int) -> list[float]:
    """Recall of every class present in ``y`` (balanced accuracy is their mean, as scikit-learn's)."""
    return [float(np.mean(pred[y == c] == c)) for c in range(k) if np.any(y == c)]


def bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    groups: Sequence[object] | np.ndarray | None = None,
    *,
    y_pred: np.ndarray | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    metrics: Callable[..., dict[str, float]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric, resampling subjects with replacement.

    Parameters
    ----------
    groups
        The subject (participant) of each row; rows of one subject are drawn together. Default:
        every row is its own subject.
    n_boot
        Number of resamples; resamples in which a metric is undefined (e.g. one class only for the
        AUC) are left out of that metric's interval.
    level
        Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).

    Returns
    -------
    dict
        metric name -> (low, high).
    """
    y, p = _check(y_true, prob)
    pred = p.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    metrics = metrics or fast_metrics
    keys = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq, member = np.unique(keys, return_inverse=True)
    rows_of = [np.flatnonzero(member == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        chosen = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([rows_of[g] for g in chosen]) if len(chosen) else np.array([], int)
        for name, value in metrics(y[idx], p[idx], pred[idx]).items():
            draws.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    out = {}
    for name, values in draws.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        out[name] = (
            (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (np.nan, np.nan)
        )
    return out


def fast_metrics(y: np.ndarray, prob: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """`classification_metrics` computed from the confusion matrix and ranks, without scikit-learn's
    input validation: the same numbers (a test checks it) about 50 times faster, for the bootstrap."""
    k = prob.shape[1]
    if len(y) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    n = cm.sum()
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    prec = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = prec + recall
    f1 = np.divide(2 * prec * recall, denom, out=np.zeros(k), where=denom > 0)
    spec = specificity_from_cm(cm)
    cov = tp.sum() * n - (support * predicted).sum()
    var = np.sqrt((n * n - (predicted**2).sum()) * (n * n - (support**2).sum()))
    if k == 2:
        sens, precision, f1_value = (recall[1] if present[1] else np.nan), prec[1], f1[1]
    else:
        used = present | (predicted > 0)
        sens, precision, f1_value = recall[present].mean(), prec[used].mean(), f1[used].mean()
    return {
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(recall[present].mean()),
        "sensitivity": float(sens),
        "specificity": spec,
        "precision": float(precision),
        "f1": float(f1_value),
        "auc": _rank_auc(y, prob),
        "mcc": float(cov / var) if var > 0 else 0.0,
    }


def specificity_from_cm(cm: np.ndarray) -> float:
    k = len(cm)
    if k == 2:
        neg = cm[0].sum()
        return float(cm[0, 0] / neg) if neg else float("nan")
    total = cm.sum()
    fp = cm.sum(0) - np.diag(cm)
    tn = total - cm.sum(1) - cm.sum(0) + np.diag(cm)
    # over the classes that occur (as a label or a prediction), like sensitivity and precision: a
    # class absent from a fold would otherwise add a perfect 1.0 to the mean
    ok = (tn + fp > 0) & (cm.sum(0) + cm.sum(1) > 0)
    return float(np.mean(tn[ok] / (tn[ok] + fp[ok]))) if ok.any() else float("nan")


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _rank_auc(y: np.ndarray, prob: np.ndarray) -> float:
    k = prob.shape[1]
    if k == 2:
        return _binary_auc(y == 1, prob[:, 1])
    if len(np.unique(y)) < k:
        return float("nan")
    p = prob / np.clip(prob.sum(axis=1, keepdims=True), 1e-12, None)
    return float(np.mean([_binary_auc(y == c, p[:, c]) for c in range(k)]))


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan


def summarise_folds(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof = 1) of each metric across folds, NaNs left out."""
    out: dict[str, dict[str, float]] = {}
    names = list(dict.fromkeys(n for f in per_fold for n, v in f.items() if isinstance(v, int | float)))
    for name in names:
        v = np.array([_number(f.get(name)) for f in per_fold], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[name] = {
            "mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "n": len(v),
        }
    return out
