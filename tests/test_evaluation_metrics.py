"""Metrics against scikit-learn, the fast bootstrap path, subject-level bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from neurocnn.evaluation.metrics import (
    METRICS,
    bootstrap_ci,
    classification_metrics,
    fast_metrics,
    summarise_folds,
)


def test_binary_metrics_match_definitions():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    prob = np.stack([1 - pred * 0.8 - 0.1, pred * 0.8 + 0.1], axis=1)
    m = classification_metrics(y, prob)
    assert m["sensitivity"] == pytest.approx(3 / 5)  # recall of class 1
    assert m["specificity"] == pytest.approx(2 / 3)  # recall of class 0
    assert m["balanced_accuracy"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, prob[:, 1]))


def test_explicit_decision_overrides_argmax():
    y = np.array([0, 1])
    prob = np.array([[0.4, 0.6], [0.4, 0.6]])
    assert classification_metrics(y, prob)["accuracy"] == 0.5
    assert classification_metrics(y, prob, np.array([0, 1]))["accuracy"] == 1.0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_fast_metrics_equal_scikit_learn(k):
    rng = np.random.default_rng(k)
    for trial in range(40):
        n = int(rng.integers(4, 50))
        y = rng.integers(0, k, n)
        prob = rng.dirichlet(np.ones(k), n)
        if trial % 4 == 0:
            prob = np.round(prob, 1)  # ties in the scores
        a = classification_metrics(y, prob)
        b = fast_metrics(y, prob, prob.argmax(1))
        for name in METRICS:
            assert a[name] == pytest.approx(b[name], nan_ok=True), (name, trial)


def test_a_class_absent_from_the_test_set_does_not_count_as_a_miss():
    """An external cohort without one of the trained classes: macro averages run over the classes
    that occur (as scikit-learn's default), and a binary sensitivity without positives is undefined."""
    y = np.array([0, 0, 2, 2])
    perfect = np.eye(3)[y]
    for m in (classification_metrics(y, perfect), fast_metrics(y, perfect, y)):
        assert m["balanced_accuracy"] == 1.0
        assert m["sensitivity"] == m["precision"] == m["f1"] == 1.0
    wrong = np.eye(3)[[0, 1, 2, 2]]  # one subject predicted as the absent class 1
    a, b = classification_metrics(y, wrong), fast_metrics(y, wrong, wrong.argmax(1))
    # the recall of the absent class 1 is undefined (0 / 0), not 0: sensitivity = balanced accuracy
    assert a["sensitivity"] == pytest.approx(b["sensitivity"]) == pytest.approx((0.5 + 1) / 2)
    assert a["sensitivity"] == pytest.approx(a["balanced_accuracy"])
    # precision and F1 keep scikit-learn's default: the predicted class 1 has precision 0
    assert a["precision"] == pytest.approx(b["precision"]) == pytest.approx((1 + 0 + 1) / 3)
    controls = np.zeros(5, dtype=int)
    for m in (
        classification_metrics(controls, np.eye(2)[controls]),
        fast_metrics(controls, np.eye(2)[controls], controls),
    ):
        assert np.isnan(m["sensitivity"]) and m["specificity"] == 1.0
    # specificity too runs over the occurring classes: class 2 is neither a label nor a prediction
    y3, guess = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 1, 0, 0, 1])  # 2 of 6 right
    for m in (classification_metrics(y3, np.eye(3)[guess], guess), fast_metrics(y3, np.eye(3)[guess], guess)):
        assert m["specificity"] == pytest.approx(1 / 3) == pytest.approx(m["sensitivity"])


def test_non_finite_probabilities_are_refused():
    """A NaN row would be dropped or corrupt every bootstrap resample silently."""
    y = np.array([0, 1, 0, 1])
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan], [0.4, 0.6]])
    with pytest.raises(ValueError, match="1 rows with NaN"):
        classification_metrics(y, prob)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(y, prob, n_boot=10)


def test_auc_undefined_with_one_class():
    m = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8]] * 3))
    assert np.isnan(m["auc"])
    assert m["accuracy"] == 1.0


def test_bootstrap_ci_covers_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    prob = np.clip(0.5 + 0.3 * (2 * y - 1) + 0.3 * rng.standard_normal(120), 0, 1)
    prob = np.stack([1 - prob, prob], 1)
    m = classification_metrics(y, prob)
    ci = bootstrap_ci(y, prob, n_boot=500, seed=1)
    assert ci == bootstrap_ci(y, prob, n_boot=500, seed=1)
    for name in METRICS:
        lo, hi = ci[name]
        assert lo <= m[name] <= hi, name
    assert 0 < ci["balanced_accuracy"][1] - ci["balanced_accuracy"][0] < 0.3


def test_bootstrap_resamples_subjects_not_rows():
    # every subject appears 5 times (repeats): a row bootstrap would give a too-narrow interval
    rng = np.random.default_rng(3)
    y1 = rng.integers(0, 2, 30)
    p1 = rng.random(30)
    y, p = np.tile(y1, 5), np.tile(p1, 5)
    prob = np.stack([1 - p, p], 1)
    groups = np.tile(np.arange(30), 5)
    by_subject = bootstrap_ci(y, prob, groups, n_boot=400)["accuracy"]
    by_row = bootstrap_ci(y, prob, n_boot=400)["accuracy"]
    assert by_subject[1] - by_subject[0] > 1.6 * (by_row[1] - by_row[0])


def test_summarise_folds_mean_and_sample_std():
    out = summarise_folds([{"accuracy": 0.5, "best_epoch": 3}, {"accuracy": 0.7, "best_epoch": None}])
    assert out["accuracy"]["mean"] == pytest.approx(0.6)
    assert out["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert out["best_epoch"]["n"] == 1
