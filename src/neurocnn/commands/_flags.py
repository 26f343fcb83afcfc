"""Settings errors in the words of the command line: '--folds must be at least 2' rather than
pydantic's 'splits.folds: Input should be greater than or equal to 2'."""

from __future__ import annotations

from typing import Any

from neurocnn.errors import NeuroCNNError, flag_problems

# `neurocnn cv`: configuration fields set by an option
CV_FLAGS = {
    "seed": "--seed",
    "splits.folds": "--folds",
    "splits.repeats": "--repeats",
    "splits.val_fraction": "--val",
    "splits.nested": "--nested",
    "splits.subset": "--subset",
    "optim.lr": "--lr",
    "optim.weight_decay": "--weight-decay",
    "optim.momentum": "--momentum",
    "optim.gamma": "--gamma",
    "optim.plateau_patience": "--plateau-patience",
    "train.max_epochs": "--epochs",
    "train.batch_size": "--batch-size",
    "train.early_stopping": "--early-stopping",
    "train.min_epochs": "--min-epochs",
    "train.ema": "--ema",
    "train.num_workers": "--workers",
    "train.num_nodes": "--num-nodes",
    "augment.rotate": "--rotate",
    "augment.probability": "--augment-probability",
    "transfer.backbone_lr_factor": "--backbone-lr-factor",
}

# `neurocnn synth`: spec fields set by an option
SYNTH_FLAGS = {
    "n_subjects": "--subjects",
    "voxel_size": "--voxel-size",
    "seed": "--seed",
    "noise": "--noise",
    "smoothing_fwhm": "--smoothing",
    "deformation": "--deformation",
}


def check_flags(data: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise one line per bad value when every bad value of the `cv` configuration ``data`` came from
    an option (``given``: the sections the command line set); otherwise leave the error to
    `parse_config`, which names the fields (of a --config file, say)."""
    from pydantic import ValidationError

    from neurocnn.training.config import ExperimentConfig

    try:
        ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        lines = flag_problems(exc, {k: f for k, f in CV_FLAGS.items() if _given(given, k)})
        if lines:
            raise NeuroCNNError("; ".join(lines)) from None


def _given(given: dict[str, Any], path: str) -> bool:
    node: Any = given
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
