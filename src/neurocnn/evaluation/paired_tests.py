"""Paired tests of two classifiers evaluated on the same subjects.

- `corrected_resampled_ttest`: Nadeau & Bengio's corrected resampled t-test over the folds of
  (repeated) k-fold cross-validation. Folds share most of their training subjects, so their scores
  are correlated and the plain paired t-test is far too liberal; the correction inflates the
  variance by n_test/n_train (Nadeau C, Bengio Y. "Inference for the generalization error."
  Machine Learning 52:239–281, 2003; for r × k-fold, Bouckaert RR, Frank E. PAKDD 2004).
- `paired_permutation_test`: a permutation test on pooled out-of-fold predictions: under the null
  hypothesis that the two classifiers are exchangeable, swapping their predictions for any subject
  leaves the distribution of the metric difference unchanged. Subjects (all their rows: sessions,
  repeats) are swapped together.
- `mcnemar_test`: McNemar's test of two accuracies on one test set (exact binomial below 25
  discordant subjects, continuity-corrected chi-square above).
- `delong_test`: DeLong's test of two correlated ROC AUCs on one test set (DeLong ER, DeLong DM,
  Clarke-Pearson DL. Biometrics 44:837–845, 1988), with the fast algorithm of Sun X, Xu W. IEEE
  Signal Processing Letters 21:1389–1393, 2014.
- `holm`: Holm's step-down adjustment for several comparisons.

All p-values are two-sided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from neurocnn.evaluation.metrics import METRICS, fast_metrics

VECTORISED = ("accuracy", "balanced_accuracy", "auc")


def corrected_resampled_ttest(
    differences: Sequence[float] | np.ndarray, test_train_ratio: float
) -> dict[str, float]:
    """Nadeau–Bengio corrected resampled t-test of per-fold score differences.

    Parameters
    ----------
    differences
        Score of A minus score of B in each of the J folds (all repeats together).
    test_train_ratio
        n_test / n_train of a fold (mean over folds when they differ slightly); 1/(k−1) for k-fold.

    Returns
    -------
    dict
        ``mean`` difference, ``t``, ``df`` = J − 1, two-sided ``p_value``, the folds used ``n``.

    >>> r = corrected_resampled_ttest([0.05, 0.02, 0.04, 0.06, 0.03], 1 / 4)
    >>> round(r["t"], 2), round(r["p_value"], 3)
    (3.77, 0.02)
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    j = len(d)
    if j < 2:
        return {"mean": float(d.mean()) if j else float("nan"), "t": float("nan"), "df": 0,
                "p_value": float("nan"), "n": j}  # fmt: skip
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if not np.isfinite(test_train_ratio) or test_train_ratio < 0:  # unknown: no test, never p = 0
        return {"mean": mean, "t": float("nan"), "df": j - 1, "p_value": float("nan"), "n": j}
    scale = (1.0 / j + float(test_train_ratio)) * var
    if np.ptp(d) == 0 and mean != 0:  # the same non-zero difference in every fold: no p, never p = 0
        t_inf = float(np.sign(mean) * np.inf)
        return {"mean": mean, "t": t_inf, "df": j - 1, "p_value": float("nan"), "n": j}
    t = _ratio(mean, scale)
    p = float(2 * stats.t.sf(abs(t), j - 1))
    return {"mean": mean, "t": float(t), "df": j - 1, "p_value": p, "n": j}


def _ratio(value: float, variance: float) -> float:
    """value / sqrt(variance); ±inf for a non-zero value without variance, 0 for zero."""
    if variance > 0:
        return float(value / np.sqrt(variance))
    return 0.0 if value == 0 else float(np.sign(value) * np.inf)


def _group_rows(groups: Sequence[Any] | np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    _, member = np.unique(np.asarray(groups), return_inverse=True)
    return member.ravel(), int(member.max()) + 1 if n else 0


def _batched_metric(
    name: str, y: np.ndarray, prob: np.ndarray | None, correct: np.ndarray | None
) -> np.ndarray:
    """A metric for a batch of prediction sets: ``correct`` (P, n) or ``prob`` (P, n, K)."""
    if name == "accuracy":
        return correct.mean(axis=1)  # type: ignore[union-attr]
    if name == "balanced_accuracy":
        recalls = [correct[:, y == c].mean(axis=1) for c in np.unique(y)]  # type: ignore[index]
        return np.mean(recalls, axis=0)
    if name == "auc":
        k = prob.shape[2]  # type: ignore[union-attr]
        if k == 2:
            return _batched_auc(y == 1, prob[:, :, 1])  # type: ignore[index]
        if len(np.unique(y)) < k:
            return np.full(prob.shape[0], np.nan)  # type: ignore[union-attr]
        p = prob / np.clip(prob.sum(axis=2, keepdims=True), 1e-12, None)  # type: ignore[union-attr]
        return np.mean([_batched_auc(y == c, p[:, :, c]) for c in range(k)], axis=0)
    raise ValueError(f"no vectorised {name}")


def _batched_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[0], np.nan)
    ranks = stats.rankdata(scores, axis=1)
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_permutation_test(
    y: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    *,
    pred_a: np.ndarray | None = None,
    pred_b: np.ndarray | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    metric: str = "balanced_accuracy",
    n_permutations: int = 10000,
    seed: int = 0,
    chunk: int = 250,
) -> dict[str, float]:
    """Permutation test of metric(A) − metric(B) on paired predictions of the same rows.

    Each permutation swaps the predictions (probabilities and decisions) of A and B for a random
    half of the subjects (``groups``: the subject of each row, all of whose rows swap together).

    Returns
    -------
    dict
        ``difference`` (observed A − B), ``p_value`` = (1 + #{|d*| ≥ |d|}) / (1 + permutations),
        ``n_permutations``.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    y = np.asarray(y, dtype=np.int64)
    pa, pb = np.asarray(prob_a, dtype=np.float64), np.asarray(prob_b, dtype=np.float64)
    da = pa.argmax(axis=1) if pred_a is None else np.asarray(pred_a, dtype=np.int64)
    db = pb.argmax(axis=1) if pred_b is None else np.asarray(pred_b, dtype=np.int64)
    observed = fast_metrics(y, pa, da)[metric] - fast_metrics(y, pb, db)[metric]
    if not np.isfinite(observed):
        return {"difference": float(observed), "p_value": float("nan"), "n_permutations": 0}
    member, n_groups = _group_rows(groups, len(y))
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    tolerance = 1e-12
    while done < n_permutations:
        p = min(chunk, n_permutations - done)
        swap = rng.random((p, n_groups)) < 0.5
        rows = swap[:, member]  # (p, n)
        if metric in VECTORISED:
            if metric == "auc":
                a = np.where(rows[:, :, None], pb[None], pa[None])
                b = np.where(rows[:, :, None], pa[None], pb[None])
                diff = _batched_metric(metric, y, a, None) - _batched_metric(metric, y, b, None)
            else:
                ca, cb = da == y, db == y
                a = np.where(rows, cb[None], ca[None])
                b = np.where(rows, ca[None], cb[None])
                diff = _batched_metric(metric, y, None, a) - _batched_metric(metric, y, None, b)
        else:
            diff = np.empty(p)
            for i in range(p):
                s = rows[i]
                a_p, b_p = np.where(s[:, None], pb, pa), np.where(s[:, None], pa, pb)
                a_d, b_d = np.where(s, db, da), np.where(s, da, db)
                diff[i] = fast_metrics(y, a_p, a_d)[metric] - fast_metrics(y, b_p, b_d)[metric]
        exceed += int(np.sum(np.abs(diff) >= abs(observed) - tolerance))
        done += p
    return {
        "difference": float(observed),
        "p_value": (1 + exceed) / (1 + n_permutations),
        "n_permutations": int(n_permutations),
    }


def mcnemar_test(
    correct_a: np.ndarray, correct_b: np.ndarray, *, exact: bool | None = None
) -> dict[str, Any]:
    """McNemar's test that two classifiers have the same accuracy on one test set.

    ``exact`` None chooses the exact binomial test when fewer than 25 subjects are discordant.

    >>> r = mcnemar_test(np.array([1] * 10 + [0] * 2, bool), np.array([0] * 8 + [1] * 4, bool))
    >>> r["b"], r["c"], round(r["p_value"], 3)
    (8, 2, 0.109)
    """
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    n = b + c
    use_exact = n < 25 if exact is None else exact
    if n == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "no discordant subject"}
    if use_exact:
        p = float(stats.binomtest(b, n, 0.5).pvalue)
        return {"b": b, "c": c, "statistic": float(b), "p_value": min(1.0, p), "method": "exact binomial"}
    chi2 = max(abs(b - c) - 1, 0) ** 2 / n  # b = c: no evidence (statistic 0), not 1/n
    return {"b": b, "c": c, "statistic": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1)),
            "method": "chi-square with continuity correction"}  # fmt: skip


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated AUCs (two classes; ``y`` 1 = positive) on the same subjects.

    Returns ``auc_a``, ``auc_b``, ``difference``, its ``se``, ``z`` and the two-sided ``p_value``.
    """
    y = np.asarray(y).astype(bool)
    scores = np.vstack([np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return {"auc_a": nan, "auc_b": nan, "difference": nan, "se": nan, "z": nan, "p_value": nan}
    pos, neg = scores[:, y], scores[:, ~y]
    tx = np.vstack([_midrank(r) for r in pos])
    ty = np.vstack([_midrank(r) for r in neg])
    tz = np.vstack([_midrank(r) for r in np.hstack([pos, neg])])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v01 = (tz[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # and of the negatives
    cov = np.cov(v01) / m + np.cov(v10) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    z = _ratio(diff, var)
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "se": float(np.sqrt(max(var, 0.0))),
        "z": float(z),
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count).

    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out
