"""Training engine: the Lightning module, one fold, the cross-validation driver and the run folder.

>>> from neurocnn.training import ExperimentConfig, run_cv          # doctest: +SKIP
>>> config = ExperimentConfig(cache="cache/ixi_3mm", model={"name": "mrinet"})  # doctest: +SKIP
>>> result = run_cv(config, "runs/mrinet")                          # doctest: +SKIP
>>> result.summary["pooled"]["balanced_accuracy"]                    # doctest: +SKIP
{'value': 0.81, 'ci95': [0.75, 0.86]}
"""

from neurocnn.training.config import ExperimentConfig, load_config, parse_config
from neurocnn.training.crossval import CVResult, run_cv
from neurocnn.training.fold import FoldPlan, fit_fold
from neurocnn.training.runfolder import RunFolder, read_config

__all__ = [
    "CVResult",
    "ExperimentConfig",
    "FoldPlan",
    "RunFolder",
    "fit_fold",
    "load_config",
    "parse_config",
    "read_config",
    "run_cv",
]
