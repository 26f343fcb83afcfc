"""Nested cross-validation of the baselines never lets a test fold reach hyper-parameter selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from neurocnn.baselines import nested_cv
from neurocnn.baselines.nested import check_table_matches, outer_splits
from neurocnn.data import splits as S
from neurocnn.errors import NeuroCNNError

EVENTS: list[tuple[str, frozenset[int]]] = []


class Spy(ClassifierMixin, BaseEstimator):
    """Records the subjects (column 0 holds the cache index) of every fit and every prediction."""

    def __init__(self, c: float = 1.0) -> None:
        self.c = c

    def fit(self, X, y):
        EVENTS.append(("fit", frozenset(np.asarray(X)[:, 0].astype(int).tolist())))
        self.classes_ = np.unique(y)
        self.sign_ = 1.0 if self.c > 0 else -1.0
        return self

    def _score(self, X):
        EVENTS.append(("predict", frozenset(np.asarray(X)[:, 0].astype(int).tolist())))
        return self.sign_ * np.asarray(X)[:, 1]

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-self._score(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self._score(X) > 0).astype(int)


def _cohort(n: int = 36, sessions: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    people = [f"sub-{i:02d}" for i in range(n)]
    labels = np.arange(n) % 2
    rows = [
        {"participant_id": p, "session_id": f"ses-{s}", "label_index": int(k)}
        for p, k in zip(people, labels, strict=True)
        for s in range(sessions)
    ]
    manifest = pd.DataFrame(rows)
    manifest.insert(0, "index", np.arange(len(manifest)))
    y = manifest["label_index"].to_numpy()
    X = np.column_stack([manifest["index"], (2 * y - 1) + rng.normal(0, 1, len(y))]).astype(float)
    return manifest, X


@pytest.mark.parametrize("inner_from_table", [False, True])
def test_test_fold_never_reaches_selection(inner_from_table):
    manifest, X = _cohort(36, sessions=2)
    table = S.kfold(manifest, 4, val_fraction=0.1, seed=3, nested=3 if inner_from_table else 0)
    for repeat, fold in outer_splits(table):
        ids = S.split_indices(table, repeat, fold)
        test = set(ids["test"].tolist())
        training = set(ids["train"].tolist()) | set(ids["val"].tolist())
        EVENTS.clear()
        (result,) = nested_cv(
            X, manifest, table, Spy(), {"c": [-1.0, 1.0]}, inner_folds=3, splits=[(repeat, fold)]
        )
        selection = EVENTS[:-3]
        # every fit and every score of the grid search stays inside the training fold
        assert selection and all(seen <= training for _, seen in selection)
        assert all(not (seen & test) for _, seen in selection)
        assert len([e for e in selection if e[0] == "fit"]) == 2 * 3  # 2 candidates × 3 inner folds
        # the refit uses exactly the training fold (train ∪ val), the test fold is predicted once
        assert EVENTS[-3] == ("fit", frozenset(training))
        assert {e[1] for e in EVENTS[-2:]} == {frozenset(test)}
        assert set(result.test.tolist()) == test
        # sessions of one participant never straddle an inner split
        if not inner_from_table:
            pid = manifest.set_index("index")["participant_id"]
            fits = [seen for kind, seen in selection if kind == "fit"]
            for seen in fits:
                held_out = training - seen
                assert not set(pid[list(seen)]) & set(pid[list(held_out)])
        else:
            inner_sets = set()
            for i in range(3):
                inner = S.split_indices(table, repeat, fold, inner=i)
                inner_sets.add(frozenset(np.concatenate([inner["train"], inner["val"]]).tolist()))
            assert {seen for kind, seen in selection if kind == "fit"} == inner_sets
            assert "split table" in result.inner_source


def test_the_chosen_parameters_come_from_the_inner_scores():
    manifest, X = _cohort(40)
    table = S.kfold(manifest, 4, seed=1)
    results = list(nested_cv(X, manifest, table, Spy(), {"c": [-1.0, 1.0]}, inner_folds=4))
    assert len(results) == 4
    for r in results:
        assert r.best_params == {"c": 1.0}  # the sign that follows the planted effect
        assert r.search.loc[r.search["rank"] == 1, "mean_score"].iloc[0] == pytest.approx(r.best_score)
        assert r.prob.shape == (len(r.test), 2) and np.allclose(r.prob.sum(1), 1)


def test_splits_of_another_cohort_are_refused():
    manifest, _ = _cohort(20)
    table = S.kfold(manifest, 4, seed=0)
    other = manifest.copy()
    other["participant_id"] = other["participant_id"].iloc[::-1].to_numpy()
    with pytest.raises(NeuroCNNError, match="another cohort"):
        check_table_matches(table, other)


def test_svm_decisions_are_the_svms_own_not_the_platt_argmax():
    """The grid search scores SVC(class_weight="balanced").predict; the reported decisions must be
    the same rule, not the arg-max of the sigmoid (fitted without class weights), which moved the
    threshold towards the larger class (minority sensitivity 0.27 instead of 0.67 here)."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    from neurocnn.baselines.estimators import own_decisions, svm_pipeline, with_probabilities

    rng = np.random.default_rng(0)

    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.2).astype(int)
        X = rng.normal(size=(n, 10))
        X[:, :3] += 0.8 * y[:, None]
        return X, y

    (X_tr, y_tr), (X_te, y_te) = data(300), data(1000)
    pipe = svm_pipeline().set_params(clf__C=1.0)
    plain = clone(pipe).fit(X_tr, y_tr)
    calibrated = with_probabilities(clone(pipe), folds=5).fit(X_tr, y_tr)
    ours = own_decisions(calibrated, X_te)
    np.testing.assert_array_equal(ours, plain.predict(X_te))
    platt = calibrated.predict(X_te)
    assert balanced_accuracy_score(y_te, ours) > balanced_accuracy_score(y_te, platt) + 0.05


def test_platt_calibration_keeps_each_participants_sessions_together():
    """The SVM's sigmoid is fitted on held-out decision values: a second session of a held-out
    participant in the fitting part would make them look better than they are on new people."""
    from sklearn.calibration import CalibratedClassifierCV

    from neurocnn.baselines.estimators import svm_pipeline

    manifest, X = _cohort(40, sessions=3)
    table = S.kfold(manifest, 4, seed=1)
    (result,) = nested_cv(X, manifest, table, svm_pipeline(), {"clf__C": [1.0]}, splits=[(0, 0)])
    calibrated = result.model[-1]
    assert isinstance(calibrated, CalibratedClassifierCV)
    pid = manifest.set_index("index")["participant_id"].loc[result.train].to_numpy()
    assert len(calibrated.cv) == 5
    for fit, held_out in calibrated.cv:
        assert not set(pid[fit]) & set(pid[held_out])
        assert len(fit) + len(held_out) == len(result.train)


def three_classes(n: int = 60, effect: float = 1.0) -> tuple[np.ndarray, pd.DataFrame]:
    """Five features, the first shifted by ``effect`` × the class (0, 1, 2)."""
    rng = np.random.default_rng(0)
    manifest = pd.DataFrame(
        {
            "index": np.arange(n),
            "participant_id": [f"s{i}" for i in range(n)],
            "session_id": None,
            "label_index": np.arange(n) % 3,
        }
    )
    X = rng.normal(size=(n, 5))
    X[:, 0] += effect * manifest["label_index"]
    return X, manifest


def test_roc_auc_selection_works_with_three_classes():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, manifest = three_classes()
    table = S.kfold(manifest, 3, seed=0)
    est = Pipeline([("s", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    for result in nested_cv(X, manifest, table, est, {"clf__C": [1e-4, 1e-2, 1, 100]}, scoring="roc_auc"):
        assert np.isfinite(result.search["mean_score"]).all() and np.isfinite(result.best_score)


def test_roc_auc_selection_of_an_svm_works_with_three_classes():
    """An SVC has no predict_proba, so scikit-learn's one-vs-rest AUC scored every grid point NaN;
    the AUC comes from its decision function then (and equals scikit-learn's with probabilities)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import get_scorer

    from neurocnn.baselines.estimators import svm_pipeline

    X, manifest = three_classes(effect=2.0)
    table = S.kfold(manifest, 3, seed=0)
    grid = {"clf__C": [0.1, 10.0]}
    for result in nested_cv(X, manifest, table, svm_pipeline(), grid, scoring="roc_auc", inner_folds=3):
        assert np.isfinite(result.search["mean_score"]).all() and result.best_score > 0.65
    from neurocnn.baselines.nested import ovr_auc

    y = manifest["label_index"].to_numpy()
    lr = LogisticRegression(max_iter=1000).fit(X[:40], y[:40])
    assert ovr_auc(lr, X[40:], y[40:]) == pytest.approx(get_scorer("roc_auc_ovr")(lr, X[40:], y[40:]))
    binary = svm_pipeline().fit(X[:40], y[:40] > 0)
    assert ovr_auc(binary, X[40:], y[40:] > 0) == pytest.approx(
        get_scorer("roc_auc")(binary, X[40:], y[40:] > 0)
    )
