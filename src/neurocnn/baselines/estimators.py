"""The scikit-learn pipelines of the baselines and their default search grids.

Every baseline is a `Pipeline` whose last step is named ``clf``; its grid uses scikit-learn's
``step__parameter`` names (``clf__C``). Nothing here fits anything: the nested cross-validation in
`neurocnn.baselines.nested` does.

Two small pieces are our own because scikit-learn has no equivalent:

- `RBF`, an RBF kernel passed to ``SVC(kernel=RBF(scale))``. libsvm evaluates its built-in kernel one
  pair of subjects at a time; with a callable kernel scikit-learn computes the Gram matrix with BLAS
  (`rbf_kernel`) and hands it to libsvm precomputed. The SVM is the same; on 76,000 brain voxels of
  IXI at 3 mm a fit takes 0.3 s instead of 3.6 s. ``scale`` is relative: gamma = scale / n_features,
  so on standardised features ``scale = 1`` is scikit-learn's ``gamma="scale"`` and one grid fits
  inputs of any size.
- `VoxelMask`, a transformer that keeps the voxels inside a brain mask: a mask given by the user, or
  the voxels that are non-zero in at least ``min_fraction`` of the *training* subjects (the prepared
  cohorts are brain-masked, so zero means outside the brain). Being a pipeline step, the data-derived
  mask is learnt from the training subjects of each fit only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from neurocnn.errors import NeuroCNNError

REGIONAL_MODELS = ("lr", "knn", "xgb", "svm")
"""Classifiers of the regional baseline (S3: XGBoost, KNN, logistic regression; S1: SVM)."""

SELECT = "select"
"""The regional model that chooses among `REGIONAL_MODELS` inside each training fold (S3)."""

SVM_SCALES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
SVM_CS = (0.1, 1.0, 10.0, 100.0, 1000.0)
"""Default SVM grid: RBF widths relative to gamma="scale" and C. Small widths with large C approach a
linear SVM; on IXI voxels 8 of 10 folds chose the smallest width of a grid that stopped at 0.1."""


@dataclass(frozen=True)
class RBF:
    """RBF kernel exp(-gamma‖x − y‖²) with gamma = ``scale`` / n_features, for ``SVC(kernel=RBF())``.

    >>> import numpy as np
    >>> k = RBF(1.0)(np.zeros((1, 4)), np.ones((1, 4)))
    >>> float(np.round(k[0, 0], 4))  # exp(-1/4 · 4)
    0.3679
    """

    scale: float = 1.0

    def __call__(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        return rbf_kernel(X, Y, gamma=self.scale / max(1, X.shape[1]))

    def __repr__(self) -> str:
        return f"RBF(scale={self.scale:g})"


class VoxelMask(TransformerMixin, BaseEstimator):
    """Keep the columns (voxels) inside a brain mask.

    Parameters
    ----------
    mask
        Boolean (n_features,) mask to apply as given; None: learn it from the training data.
    min_fraction
        With ``mask=None``, keep the voxels that are non-zero in at least this share of the
        training subjects; 0 keeps those non-zero in at least one training subject.
    """

    def __init__(self, mask: np.ndarray | None = None, min_fraction: float = 0.5) -> None:
        self.mask = mask
        self.min_fraction = min_fraction

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> VoxelMask:
        X = np.asarray(X)
        if self.mask is not None:
            keep = np.asarray(self.mask, dtype=bool).ravel()
            if keep.shape[0] != X.shape[1]:
                raise NeuroCNNError(
                    f"the brain mask has {keep.shape[0]} voxels but the data {X.shape[1]}; give a mask "
                    "on the prepared grid (it is resampled through its affine when read from a file)"
                )
        else:
            share = (X != 0).mean(axis=0)
            keep = share > 0 if self.min_fraction <= 0 else share >= self.min_fraction
        if not keep.any():
            raise NeuroCNNError(
                "the brain mask keeps no voxel; lower --mask-fraction or give a mask that overlaps the data"
            )
        self.support_ = keep
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "support_")
        return np.asarray(X)[:, self.support_]


def svm_pipeline(*, mask: VoxelMask | None = None, seed: int = 0) -> Pipeline:
    """[brain mask →] standardisation → SVM with an RBF kernel (S3's voxel baseline; S4's LBP SVM)."""
    steps: list[tuple[str, Any]] = []
    if mask is not None:
        steps.append(("mask", mask))
    steps += [
        ("scale", StandardScaler()),
        ("clf", SVC(kernel=RBF(1.0), C=1.0, class_weight="balanced", random_state=seed)),
    ]
    return Pipeline(steps)


def svm_grid(scales: Sequence[float] = SVM_SCALES, cs: Sequence[float] = SVM_CS) -> dict[str, list[Any]]:
    return {"clf__C": [float(c) for c in cs], "clf__kernel": [RBF(float(s)) for s in scales]}


def regional_model(name: str, *, seed: int = 0, n_jobs: int = 1) -> tuple[Pipeline, Any]:
    """(pipeline, grid) of one regional classifier: ``lr``, ``knn``, ``xgb``, ``svm`` or ``select``.

    Every pipeline imputes missing values with the training median and standardises; the grid is a
    dict, or for ``select`` a list of dicts, one per classifier family (scikit-learn replaces the
    ``clf`` step).
    """
    if name == SELECT:
        grids = []
        for family in REGIONAL_MODELS:
            pipe, grid = regional_model(family, seed=seed, n_jobs=n_jobs)
            grids.append({"clf": [pipe.named_steps["clf"]], **grid})
        return _regional_pipe(LogisticRegression()), grids
    if name == "lr":
        clf: Any = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed)
        grid: dict[str, list[Any]] = {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]}
    elif name == "knn":
        clf = KNeighborsClassifier()
        grid = {"clf__n_neighbors": [3, 5, 9, 15, 21], "clf__weights": ["uniform", "distance"]}
    elif name == "xgb":
        clf = xgb_classifier(seed=seed, n_jobs=n_jobs)
        grid = {
            "clf__max_depth": [2, 4],
            "clf__n_estimators": [100, 300],
            "clf__learning_rate": [0.05, 0.2],
        }
    elif name == "svm":
        clf = SVC(kernel=RBF(1.0), C=1.0, class_weight="balanced", random_state=seed)
        grid = svm_grid()
    else:
        raise NeuroCNNError(
            f"unknown regional model {name!r}; choose from {', '.join((*REGIONAL_MODELS, SELECT))}"
        )
    return _regional_pipe(clf), grid


def _regional_pipe(clf: Any) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("clf", clf),
        ]
    )


def xgb_classifier(*, seed: int = 0, n_jobs: int = 1) -> Any:
    try:
        from xgboost import XGBClassifier
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise NeuroCNNError("the xgb model needs XGBoost: `pip install xgboost-cpu` (or `xgboost`)") from exc
    return XGBClassifier(
        subsample=0.8,
        colsample_bytree=0.5,
        importance_type="gain",
        tree_method="hist",
        n_jobs=n_jobs,
        random_state=seed,
        verbosity=0,
    )


def with_probabilities(
    model: Any, *, seed: int = 0, folds: int = 5, cv: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
) -> Any:
    """The model with its SVC (the model itself or a pipeline's last step) wrapped in Platt scaling,
    so that it gives probabilities.

    The SVM is fitted once on all the training data; the sigmoid is fitted on decision values of
    a cross-validation within the same training data (``CalibratedClassifierCV`` with
    ``ensemble=False``, scikit-learn's replacement for ``SVC(probability=True)``): ``cv``, (fit,
    held-out) position pairs such as :func:`calibration_splits` makes (sessions of one participant
    kept together), or else a stratified ``folds``-fold split of the rows. Other classifiers are
    returned unchanged. The sigmoid is monotone, so the AUC is that of the decision values.
    """
    steps = getattr(model, "steps", None)
    clf = steps[-1][1] if steps else model
    if not isinstance(clf, SVC):
        return model
    calibrated = CalibratedClassifierCV(
        clone(clf),
        method="sigmoid",
        cv=list(cv) if cv is not None else StratifiedKFold(folds, shuffle=True, random_state=seed),
        ensemble=False,
    )
    if not steps:
        return calibrated
    model = clone(model)
    model.steps[-1] = (model.steps[-1][0], calibrated)
    return model


def calibration_splits(
    y: np.ndarray, groups: np.ndarray, *, seed: int = 0, folds: int = 5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) position pairs for the Platt sigmoid of :func:`with_probabilities`: a
    stratified split by participant (``groups``), so that no participant's sessions are on both
    sides, with at most ``folds`` folds and no more than the participants of the smallest class."""
    per_class = pd.Series(groups).groupby(np.asarray(y)).nunique()
    k = int(min(folds, per_class.min()))
    if k < 2 or len(per_class) < 2:
        raise NeuroCNNError(
            f"too few participants per class ({dict(per_class)}) to calibrate the SVM's probabilities"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(a, b) for a, b in splitter.split(np.zeros(len(y)), y, groups)]


def own_decisions(model: Any, X: Any) -> np.ndarray:
    """The classifier's own decisions: for an SVM wrapped by :func:`with_probabilities`, the SVM's
    (the rule the grid search scored; with ``class_weight="balanced"`` its threshold suits
    imbalanced classes), not the arg-max of the Platt sigmoid, which is fitted without class weights
    and moves the threshold back towards the larger class. Other models: ``predict``."""
    steps = getattr(model, "steps", None)
    last = steps[-1][1] if steps else model
    if isinstance(last, CalibratedClassifierCV) and not last.ensemble:
        svm = last.calibrated_classifiers_[0].estimator  # fitted on all the training data
        features = model[:-1].transform(X) if steps else X
        return np.asarray(svm.predict(features))
    return np.asarray(model.predict(X))


def parse_grid(
    items: Sequence[str],
    base: Mapping[str, list[Any]] | Sequence[Mapping[str, list[Any]]],
    estimator: Any = None,
) -> Any:
    """Override grid entries from ``KEY=V1,V2`` strings.

    ``KEY`` is a pipeline parameter (``clf__C``) or a classifier parameter (``C``, prefixed with
    ``clf__``); ``gamma`` sets the relative RBF scales (``clf__kernel``). Values are read as numbers,
    ``true``/``false``/``none``, or kept as text. With ``estimator``, keys that are not among its
    parameters are refused.
    """
    if not items:
        return base
    if not isinstance(base, Mapping):
        raise NeuroCNNError("--grid is not available for the `select` model; tune one model at a time")
    grid = {k: list(v) for k, v in base.items()}
    for item in items:
        if "=" not in item:
            raise NeuroCNNError(f"--grid {item!r} must look like KEY=V1,V2 (e.g. C=0.1,1,10)")
        key, text = (s.strip() for s in item.split("=", 1))
        values = [_value(v) for v in text.split(",") if v.strip()]
        if not values:
            raise NeuroCNNError(f"--grid {item!r} gives no value")
        if key in ("gamma", "clf__gamma", "scale"):
            key, values = "clf__kernel", [RBF(float(v)) for v in values]
        elif "__" not in key:
            key = f"clf__{key}"
        if estimator is not None and key not in estimator.get_params():
            clf = estimator.get_params().get("clf", estimator)
            known = sorted(k for k in clf.get_params() if not k.startswith("_"))
            raise NeuroCNNError(
                f"--grid {item!r}: {type(clf).__name__} has no parameter {key.removeprefix('clf__')!r} "
                f"(it has {', '.join(known[:12])}…); give --grid for one model at a time"
            )
        grid[key] = values
    return grid


def _value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def describe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Chosen hyper-parameters as plain JSON values (estimators and kernels by their repr)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, RBF):
            out[key] = repr(value)
        else:
            out[key] = type(value).__name__
    return out
