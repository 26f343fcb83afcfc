"""The LightningModule: a zoo network, its loss, optimiser and schedule. No loops, no devices.

Loss: cross-entropy with optional class weights ("balanced": n / (K · n_k) from the training fold),
summed over the batch and divided by the batch size. With balanced weights the mean weight over the
training set is 1, so this is an unbiased per-sample loss whose DDP average equals the loss of the
global batch (a weighted mean normalised per process would not).

Slice models (2D networks over the slices of a volume, S4) train on slices: every slice is a sample
with its subject's label. Validation and prediction are per subject (mean slice logits for the loss,
majority vote and mean probability for the decision).

Validation is computed once over the whole validation set at the end of each epoch (loss, accuracy,
balanced accuracy); every DDP process validates on all of it, so all agree on the best checkpoint.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurocnn.models import build, info
from neurocnn.training.config import ExperimentConfig
from neurocnn.training.optim import lightning_optimizers, make_optimizer, parameter_groups, plateau_scheduler
from neurocnn.training.sampling import sample_seed


def resolve_modalities(config: ExperimentConfig, channels: int) -> str:
    """'branches' or 'channels': how several modalities reach the network."""
    mode = config.model.modalities
    if channels == 1:
        return "channels"
    if mode == "auto":
        return "branches" if info(config.model.name).multimodal else "channels"
    return mode


def build_network(config: ExperimentConfig, shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The configured zoo model for cache arrays of ``shape`` (N or 1, C, X, Y, Z)."""
    channels, spatial = int(shape[1]), tuple(int(s) for s in shape[2:])
    kwargs: dict[str, Any] = {"num_classes": n_classes, "input_shape": spatial, **config.model.options}
    if resolve_modalities(config, channels) == "branches":
        return build(config.model.name, in_channels=1, modalities=channels, **kwargs)
    return build(config.model.name, in_channels=channels, **kwargs)


def is_slice_model(net: nn.Module) -> bool:
    return hasattr(net, "slice_logits") and hasattr(net, "vote")


def class_weights(labels: Any, n_classes: int) -> Tensor:
    """scikit-learn's "balanced" weights n / (K · n_k), K counting the classes present in training
    (absent ones get weight 0), so that the mean weight over the training subjects is 1."""
    y = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=n_classes).double()
    present = int((counts > 0).sum())
    w = torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.float()


class Classifier(L.LightningModule):
    """Trains ``net`` (any zoo model returning logits) on (image, label, index) batches."""

    def __init__(
        self,
        net: nn.Module,
        config: ExperimentConfig,
        *,
        weights: Tensor | None = None,
        head_names: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.head_names = head_names or []
        self.seed = seed
        self.slices = is_slice_model(net)
        self.register_buffer("weights", weights, persistent=False)
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None  # from a checkpoint, before it exists
        # the epoch's training loss, summed over subjects (see _log_epoch)
        self._train_sum: Tensor | None = None
        self._train_n = 0
        # a frozen backbone keeps its BatchNorm statistics too
        heads = {n.rsplit(".", 1)[0] for n in self.head_names}
        self._frozen_norms = [
            m
            for name, m in net.named_modules()
            if config.transfer.freeze_backbone
            and heads
            and isinstance(m, nn.modules.batchnorm._BatchNorm)
            and name not in heads
        ]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), y, weight=self.weights, reduction="sum") / max(1, len(y))

    # --- training ----------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # dropout (any use of the global generator): a function of (seed, epoch, step, rank), so a
        # resumed run replays exactly the steps it lost
        torch.manual_seed(sample_seed(self.seed, self.current_epoch, batch_idx, self.global_rank, 0xD0))
        for norm in self._frozen_norms:
            norm.eval()
        x, y, _ = batch
        if self.slices:
            logits = self.net.slice_logits(x)  # (B, S, K): every slice a sample with its subject's label
            s = logits.shape[1]
            per_slice = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                y.repeat_interleave(s),
                weight=self.weights,
                reduction="none",
            )
            loss = per_slice.sum() / (len(y) * s)
        else:
            loss = self.loss(self.net(x), y)
        weighted = loss.detach() * len(y)
        self._train_sum = weighted if self._train_sum is None else self._train_sum + weighted
        self._train_n += len(y)
        return loss

    def _log_epoch(self) -> None:
        """Log the epoch's mean training loss (weighted by batch size) and learning rate, once.

        Logged with the validation metrics when there is a validation set, i.e. before the epoch's
        checkpoints are written: values logged after them (Lightning's own epoch aggregate, the
        train-epoch-end hook) were missing from the history of a run killed in between and resumed.
        The learning rate is the optimiser's at the end of the epoch (after an epoch-wise scheduler
        step), with or without a validation set.
        """
        if self._train_sum is None or not self._train_n:
            return
        mean = self._train_sum / self._train_n
        self._train_sum, self._train_n = None, 0
        self.log("train_loss", mean, on_step=False, on_epoch=True, sync_dist=True)
        opt = self.optimizers()
        optimizer = opt.optimizer if hasattr(opt, "optimizer") else opt
        self.log("lr", float(optimizer.param_groups[0]["lr"]), on_epoch=True, sync_dist=False)

    def on_train_epoch_end(self) -> None:
        self._log_epoch()  # no validation set: not logged yet

    # --- validation --------------------------------------------------------------------------------

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = batch
        if self.slices:
            # a slice model decides by its vote over slices at test time: select checkpoints on the
            # same decision (the loss stays that of the mean slice logits, which training minimises)
            slices = self.net.slice_logits(x).float().detach()
            pred = self.net.vote_from_logits(slices).prediction
            self._val.append((slices.mean(dim=1), y.detach(), pred))
            return
        logits = self.net(x).float().detach()
        self._val.append((logits, y.detach(), logits.argmax(1)))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit":
            self._log_epoch()
        if not self._val:
            return
        logits = torch.cat([v[0] for v in self._val])
        y = torch.cat([v[1] for v in self._val])
        pred = torch.cat([v[2] for v in self._val])
        self._val.clear()
        recalls = [(pred[y == c] == c).float().mean() for c in torch.unique(y)]
        values = {
            "val_loss": self.loss(logits, y),
            "val_accuracy": (pred == y).float().mean(),
            "val_balanced_accuracy": torch.stack(recalls).mean(),
        }
        # every process validated on the whole set: the values agree, no reduction needed
        self.log_dict(values, on_epoch=True, sync_dist=False)
        if self._plateau is not None and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self._plateau.step(float(values["val_loss"]))  # before this epoch's checkpoints

    # --- optimisation ------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = make_optimizer(parameter_groups(self.net, self.config, self.head_names), self.config)
        if self.config.optim.schedule == "plateau":
            self._plateau = plateau_scheduler(optimizer, self.config)
            if self._plateau_state is not None:
                self._plateau.load_state_dict(self._plateau_state)
        return lightning_optimizers(optimizer, self.config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._plateau is not None:
            checkpoint["plateau_scheduler"] = self._plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("plateau_scheduler")
        if state is None:
            return
        if self._plateau is not None:
            self._plateau.load_state_dict(state)
        else:  # Lightning restores the module before it configures the optimisers
            self._plateau_state = state
