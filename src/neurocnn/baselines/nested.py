"""Nested cross-validation of a scikit-learn pipeline over saved subject-level splits.

The outer loop walks the outer splits of a split table (`neurocnn.data.splits`), the same table a
CNN run used, so that both are tested on the same subjects fold by fold. Inside each outer fold:

1. the training fold is ``train ∪ val`` of the split (a scikit-learn model needs no validation set
   for early stopping; the CNN's carve stays training data);
2. `GridSearchCV` chooses the hyper-parameters by inner cross-validation on the training fold only:
   the table's own inner splits when it has them for this fold (``neurocnn splits --nested K``: the
   CNN's search used the same ones), otherwise stratified K-fold by participant
   (`StratifiedGroupKFold`, so sessions of one person stay together);
3. the pipeline with the chosen parameters is refitted on the whole training fold (SVMs get Platt
   probabilities, `with_probabilities`, their sigmoid fitted on a split of the training fold by
   participant too) and predicts the test fold, once.

The test fold reaches neither the search nor the refit; ``tests/test_baselines_nested.py`` checks
it with an estimator that records every row it is fitted on or asked to predict.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from neurocnn.baselines.estimators import (
    calibration_splits,
    describe_params,
    own_decisions,
    with_probabilities,
)
from neurocnn.data import splits as S
from neurocnn.errors import NeuroCNNError

SCORINGS = ("balanced_accuracy", "roc_auc", "accuracy")


@dataclass
class FoldResult:
    """What one outer fold produced. Index arrays hold cache indices (manifest ``index``)."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    prob: np.ndarray
    pred: np.ndarray
    best_params: dict[str, Any]
    best_score: float
    search: pd.DataFrame
    model: Any
    inner_source: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def outer_splits(table: pd.DataFrame) -> list[tuple[int, int]]:
    """(repeat, fold) of every outer split of a table, sorted."""
    outer = table[table["inner"] == -1]
    return sorted({(int(r), int(f)) for r, f in zip(outer["repeat"], outer["fold"], strict=True)})


def check_table_matches(table: pd.DataFrame, manifest: pd.DataFrame, *, source: str = "the splits") -> None:
    """Refuse a split table whose cache indices point at other participants in this cohort."""
    by_index = manifest.set_index("index")["participant_id"].astype(str)
    rows = table.drop_duplicates("index")
    unknown = sorted(set(rows["index"]) - set(by_index.index))
    if unknown:
        raise NeuroCNNError(
            f"{source} refer to cache indices {unknown[:5]} that this cohort does not have; "
            "use the cohort the splits were made on"
        )
    found = by_index.loc[rows["index"].to_numpy()].to_numpy()
    wrong = rows["participant_id"].astype(str).to_numpy() != found
    if wrong.any():
        bad = rows[wrong].head(3)
        detail = ", ".join(
            f"index {i}: {p} in the splits, {by_index[i]} in the cohort"
            for i, p in zip(bad["index"], bad["participant_id"], strict=True)
        )
        raise NeuroCNNError(
            f"{source} were made on another cohort ({int(wrong.sum())} rows differ: {detail}); "
            "use the cohort the splits were made on, or make new splits"
        )


def nested_cv(
    X: np.ndarray,
    manifest: pd.DataFrame,
    table: pd.DataFrame,
    estimator: Any,
    param_grid: Any,
    *,
    inner_folds: int = 5,
    scoring: str = "balanced_accuracy",
    n_jobs: int = 1,
    seed: int = 0,
    splits: Sequence[tuple[int, int]] | None = None,
    use_table_inner: bool = True,
    threads: int | None = 1,
    n_classes: int | None = None,
) -> Iterator[FoldResult]:
    """Nested cross-validation of ``estimator`` over the outer splits of ``table``, one fold at a time.

    Parameters
    ----------
    X
        Features, one row per manifest row (row ``i`` is the subject of ``manifest.iloc[i]``).
    manifest
        The cohort manifest (``index, participant_id, label_index``).
    table
        A split table (`neurocnn.data.splits`); its indices must be the manifest's.
    estimator, param_grid
        A scikit-learn classifier (usually a `Pipeline`) and its `GridSearchCV` grid.
    inner_folds
        K of the inner stratified K-fold when the table has no inner splits for a fold (refused
        when a class of the training fold has fewer participants; see `check_inner_folds`).
    scoring
        Selection criterion: a scikit-learn scorer name (default balanced accuracy, as the CNN
        search).
    splits
        Only these (repeat, fold) outer splits (default: all).
    use_table_inner
        Use the table's inner splits when it has them; False always uses StratifiedGroupKFold.
    threads
        BLAS/OpenMP threads while fitting (None: the libraries' default). One is the default:
        the matrices of a few hundred subjects are small, on a shared machine extra threads mostly
        wait for each other (5× slower on the 2-core development machine), and ``n_jobs`` gives
        parallelism across grid points instead.
    n_classes
        Columns of the probabilities (the cohort's classes; default: the largest label + 1).

    Yields
    ------
    FoldResult
        One per outer split, in (repeat, fold) order.
    """
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    if len(X) != len(manifest):
        raise NeuroCNNError(f"features have {len(X)} rows but the cohort {len(manifest)} subjects")
    check_table_matches(table, manifest)
    row_of = pd.Series(np.arange(len(manifest)), index=manifest["index"].to_numpy())
    y_all = manifest["label_index"].to_numpy(dtype=np.int64)
    groups_all = manifest["participant_id"].astype(str).to_numpy()
    n_classes = n_classes or int(y_all.max()) + 1
    chosen = outer_splits(table) if splits is None else list(splits)
    for repeat, fold in chosen:
        start = time.perf_counter()
        ids = S.split_indices(table, repeat, fold)
        train = np.concatenate([ids["train"], ids["val"]])
        test = ids["test"]
        if np.intersect1d(train, test).size:
            raise NeuroCNNError(f"split r{repeat}_f{fold}: subjects in both training and test")
        tr_rows = row_of.loc[train].to_numpy()
        te_rows = row_of.loc[test].to_numpy()
        X_tr, y_tr = _take(X, tr_rows), y_all[tr_rows]
        cv, source = _inner_cv(
            table,
            repeat,
            fold,
            train,
            y_tr,
            groups_all[tr_rows],
            inner_folds,
            seed + 1000 * repeat + fold,
            use_table_inner=use_table_inner,
        )
        search = GridSearchCV(
            clone(estimator),
            param_grid,
            # scikit-learn's "roc_auc" fails on 3+ classes and its "roc_auc_ovr" needs predict_proba,
            # which an SVC lacks (every grid point NaN): one-vs-rest from the decision values there
            scoring=ovr_auc if scoring == "roc_auc" and n_classes > 2 else scoring,
            cv=cv,
            refit=False,
            n_jobs=n_jobs,
            error_score=np.nan,  # e.g. KNN with more neighbours than inner training subjects
        )
        with warnings.catch_warnings(), threadpool_limits(limits=threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FitFailedWarning)
            warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
            warnings.filterwarnings("ignore", message="Scoring failed")
            try:
                search.fit(X_tr, y_tr)
            except ValueError as exc:
                if "fits failed" not in str(exc):
                    raise
                raise NeuroCNNError(
                    f"split r{repeat}_f{fold}: every grid point failed to fit; {str(exc).strip()[-300:]}"
                ) from exc
            if not np.isfinite(search.cv_results_["mean_test_score"]).any():
                raise NeuroCNNError(
                    f"split r{repeat}_f{fold}: no grid point could be scored by {scoring!r} on the "
                    "inner folds; choose another --scoring"
                )
            final = with_probabilities(
                clone(estimator).set_params(**search.best_params_),
                cv=calibration_splits(y_tr, groups_all[tr_rows], seed=seed),
            )
            final.fit(X_tr, y_tr)
            X_te = _take(X, te_rows)
            prob = _full_proba(final, X_te, n_classes)
            pred = np.asarray(own_decisions(final, X_te), dtype=np.int64)
        yield FoldResult(
            repeat=repeat,
            fold=fold,
            train=train,
            test=test,
            prob=prob,
            pred=pred,
            best_params=describe_params(search.best_params_),
            best_score=float(search.best_score_),
            search=_search_table(search),
            model=final,
            inner_source=source,
            seconds=round(time.perf_counter() - start, 2),
        )


def ovr_auc(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC of a fitted classifier, a `GridSearchCV` scorer: from its
    probabilities, or from its decision function's columns when it has no ``predict_proba`` (an
    SVC without Platt scaling). Only the order of each class's scores matters, so both give the AUC
    of the classifier's own ranking; a class absent from ``y`` makes the score an error (NaN).
    """
    from sklearn.metrics import roc_auc_score

    classes = np.asarray(estimator.classes_)
    if hasattr(estimator, "predict_proba"):
        scores = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    else:
        scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
    y = np.asarray(y)
    if scores.ndim == 1 or len(classes) == 2:  # binary: the decision function as is
        positive = scores if scores.ndim == 1 else scores[:, -1]
        return float(roc_auc_score(y == classes[-1], positive))
    if scores.shape[1] != len(classes):
        raise ValueError(f"{scores.shape[1]} score columns for {len(classes)} classes")
    return float(np.mean([roc_auc_score(y == c, scores[:, k]) for k, c in enumerate(classes)]))


def _take(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of X in memory (a memory-mapped array reads only these rows)."""
    return np.asarray(X[rows])


def _inner_cv(
    table: pd.DataFrame,
    repeat: int,
    fold: int,
    train: np.ndarray,
    y_tr: np.ndarray,
    groups_tr: np.ndarray,
    inner_folds: int,
    seed: int,
    *,
    use_table_inner: bool,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Inner (fit, score) position pairs within the training fold, and where they came from."""
    mine = table[(table["repeat"] == repeat) & (table["fold"] == fold) & (table["inner"] >= 0)]
    if use_table_inner and not mine.empty:
        position = pd.Series(np.arange(len(train)), index=train)
        pairs = []
        for inner in sorted(mine["inner"].unique()):
            ids = S.split_indices(table, repeat, fold, inner=int(inner))
            fit_ids = np.concatenate([ids["train"], ids["val"]])
            outside = np.setdiff1d(np.concatenate([fit_ids, ids["test"]]), train)
            if outside.size:
                raise NeuroCNNError(
                    f"split r{repeat}_f{fold}: inner split {inner} uses subjects outside the outer "
                    f"training fold (indices {outside[:5].tolist()}); the split table is inconsistent"
                )
            pairs.append((position.loc[fit_ids].to_numpy(), position.loc[ids["test"]].to_numpy()))
        return pairs, f"split table (inner folds {len(pairs)})"
    per_class = pd.Series(groups_tr).groupby(y_tr).nunique()
    if len(per_class) < 2 or per_class.min() < 2:
        raise NeuroCNNError(
            f"split r{repeat}_f{fold}: the training fold has too few participants of some class "
            f"({dict(per_class)}) for an inner cross-validation; use fewer folds or more subjects"
        )
    _check_inner(inner_folds, per_class, f"r{repeat}_f{fold}")
    k = inner_folds
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    pairs = [(a, b) for a, b in splitter.split(np.zeros(len(y_tr)), y_tr, groups_tr)]
    return pairs, f"StratifiedGroupKFold (k={k}) on the training fold"


def check_inner_folds(
    table: pd.DataFrame, manifest: pd.DataFrame, inner_folds: int, classes: Sequence[str] | None = None
) -> None:
    """Refuse, before any fold is fitted, ``inner_folds`` that a training fold (one without inner
    splits in the table) cannot give: a class with fewer participants than inner folds. The number
    is never lowered behind the user's back: the run records the inner folds it was asked for."""
    inner = table[table["inner"] >= 0]
    labelled = manifest[manifest["label_index"] >= 0]
    for r, f in outer_splits(table):
        if ((inner["repeat"] == r) & (inner["fold"] == f)).any():
            continue
        ids = S.split_indices(table, r, f)
        rows = labelled[labelled["index"].isin(np.concatenate([ids["train"], ids["val"]]))]
        per_class = rows.groupby("label_index")["participant_id"].nunique()
        _check_inner(inner_folds, per_class, f"r{r}_f{f}", classes)


def _check_inner(
    inner_folds: int, per_class: pd.Series, split: str, classes: Sequence[str] | None = None
) -> None:
    if not len(per_class) or per_class.min() >= inner_folds:
        return
    c = per_class.idxmin()
    name = repr(classes[int(c)]) if classes is not None and 0 <= int(c) < len(classes) else f"index {c}"
    raise NeuroCNNError(
        f"inner folds = {inner_folds} (--inner): the training fold {split} has only {per_class.min()} "
        f"participant(s) of class {name}; give --inner {per_class.min()} or fewer (or fewer outer folds)"
    )


def _full_proba(model: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with one column per class of the cohort (a class absent from training gets 0)."""
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    classes = np.asarray(model.classes_, dtype=np.int64)
    out = np.zeros((len(X), n_classes))
    out[:, classes] = p
    return out


def _search_table(search: GridSearchCV) -> pd.DataFrame:
    res = search.cv_results_
    table = pd.DataFrame(
        {
            "params": [str(describe_params(p)) for p in res["params"]],
            "mean_score": res["mean_test_score"],
            "std_score": res["std_test_score"],
            "rank": res["rank_test_score"],
        }
    )
    for i in range(search.n_splits_):
        table[f"inner{i}"] = res[f"split{i}_test_score"]
    return table
