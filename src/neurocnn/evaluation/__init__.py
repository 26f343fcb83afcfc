"""Evaluation: metrics with bootstrap confidence intervals, gathering a run's folds, ensembles of
fold models on independent cohorts, and prediction for new scans."""

from neurocnn.evaluation.metrics import METRICS, bootstrap_ci, classification_metrics

__all__ = ["METRICS", "bootstrap_ci", "classification_metrics"]
