"""Classical baselines on the same subjects and folds as the CNNs, with nested cross-validation.

- ``svm``: SVM-RBF on flattened (brain-masked, standardised) voxels (Kan et al. 2020, S3).
- ``lbp``: local binary patterns per slice, histograms per subject or region, SVM-RBF (S4).
- ``regional``: regional features (a table or an atlas) → logistic regression, KNN, XGBoost, SVM,
  or the choice among them (S3; S1's handcrafted features with SVM).
- ``deep2d``: deep features of a pre-trained 2D CNN → SVM-RBF (Hu et al. 2020, S1).

Every baseline is a scikit-learn pipeline tuned by `GridSearchCV` inside each outer training fold
(`nested_cv`) and writes a run folder like a CNN run's, so that `neurocnn compare` pairs them.
"""

from neurocnn.baselines.estimators import RBF, REGIONAL_MODELS, VoxelMask, regional_model, svm_pipeline
from neurocnn.baselines.features import atlas_features, deep2d_features, table_features, voxel_features
from neurocnn.baselines.lbp import lbp_features, lbp_histograms
from neurocnn.baselines.nested import FoldResult, nested_cv
from neurocnn.baselines.runs import (
    KINDS,
    CVOptions,
    run_baseline,
    run_deep2d,
    run_lbp,
    run_regional,
    run_svm,
)

__all__ = [
    "KINDS",
    "RBF",
    "REGIONAL_MODELS",
    "CVOptions",
    "FoldResult",
    "VoxelMask",
    "atlas_features",
    "deep2d_features",
    "lbp_features",
    "lbp_histograms",
    "nested_cv",
    "regional_model",
    "run_baseline",
    "run_deep2d",
    "run_lbp",
    "run_regional",
    "run_svm",
    "svm_pipeline",
    "table_features",
    "voxel_features",
]
