"""Optimisers and learning-rate schedules named in the configuration (PyTorch's, not our own).

- Adam, AdamW, SGD (momentum), Adadelta (S1's choice), all with weight decay;
- reduce-on-plateau: lr × ``plateau_factor`` after ``plateau_patience`` epochs without a lower
  validation loss (S4: ÷10 after 10 epochs); multi-step: lr × ``gamma`` at each milestone epoch
  (S3: epochs 5 and 15); cosine annealing over ``max_epochs``; none.
- Transfer learning (S4): the new classification layer learns at ``lr``, the backbone at
  ``lr × backbone_lr_factor`` (0.001 in S4), or not at all when it is frozen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from neurocnn.training.config import ExperimentConfig


def parameter_groups(
    net: nn.Module, config: ExperimentConfig, head_names: Iterable[str] | None
) -> list[dict[str, Any]]:
    """One group of every trainable parameter, or (transfer learning) a head and a backbone group."""
    lr = float(config.optim.lr or 0)
    if not head_names:
        return [{"params": [p for p in net.parameters() if p.requires_grad], "lr": lr}]
    heads = set(head_names)
    head = [p for n, p in net.named_parameters() if n in heads]
    backbone = [p for n, p in net.named_parameters() if n not in heads and p.requires_grad]
    groups = [{"params": head, "lr": lr, "name": "head"}]
    factor = config.transfer.backbone_lr_factor
    if backbone and not config.transfer.freeze_backbone and factor > 0:
        groups.append({"params": backbone, "lr": lr * factor, "name": "backbone"})
    return groups


def make_optimizer(groups: list[dict[str, Any]], config: ExperimentConfig) -> torch.optim.Optimizer:
    o = config.optim
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adadelta(groups, lr=o.lr, weight_decay=o.weight_decay)


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, config: ExperimentConfig
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The plateau schedule, which `neurocnn.training.module.Classifier` steps on the validation loss
    before the epoch's checkpoint is written and saves in it: stepped by Lightning, the step came
    after the checkpoint and a resumed run skipped it (one reduction lost, another learning-rate
    path than the uninterrupted run's)."""
    o = config.optim
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=o.plateau_factor, patience=o.plateau_patience
    )


def lightning_optimizers(optimizer: torch.optim.Optimizer, config: ExperimentConfig) -> Any:
    """What `LightningModule.configure_optimizers` returns for the configured schedule."""
    o = config.optim
    if o.schedule == "none":
        return optimizer
    if o.schedule == "plateau":
        return optimizer  # stepped by the Classifier itself (plateau_scheduler)
    scheduler: Any
    if o.schedule == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=o.milestones, gamma=o.gamma)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train.max_epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
