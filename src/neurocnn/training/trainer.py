"""The Lightning Trainer of one split: checkpoints (best by the validation metric, and the latest
epoch for a resume), early stopping, the weights' moving average, and the loggers (CSV always;
TensorBoard and MLflow on request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import inference_device
from neurocnn.training.checkpoints import FoldCheckpoint
from neurocnn.training.config import ExperimentConfig
from neurocnn.training.distributed import world_size


def loggers(config: ExperimentConfig, fold_dir: Path, run_dir: Path | None, name: str) -> list[Logger]:
    # flushed at every log call, so that a killed run keeps the history of its finished epochs
    out: list[Logger] = [CSVLogger(fold_dir, name="logs", version="", flush_logs_every_n_steps=1)]
    if config.logging.tensorboard and run_dir is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        out.append(TensorBoardLogger(run_dir, name="tensorboard", version=name, default_hp_metric=False))
    if config.logging.mlflow and run_dir is not None:
        from lightning.pytorch.loggers import MLFlowLogger

        check_mlflow_uri(config.logging.mlflow)
        out.append(
            MLFlowLogger(experiment_name=run_dir.name, run_name=name, tracking_uri=config.logging.mlflow)
        )
    return out


def deterministic_mode(value: bool | str | None, accelerator: str) -> bool | str:
    """True on CPU, "warn" on GPU unless configured: some CUDA kernels (max-pool backward) have no
    deterministic version and would raise."""
    if value is not None:
        return value
    return "warn" if inference_device(accelerator).type == "cuda" else True


def check_mlflow_uri(uri: str) -> None:
    """A local store needs no server: a ``file:`` folder (MLflow 3 keeps it behind an opt-in, which
    we give) or SQLite (needs SQLAlchemy, which mlflow-skinny leaves out)."""
    import os

    if uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise NeuroCNNError(
                f"the MLflow store {uri} needs SQLAlchemy and Alembic (`pip install sqlalchemy alembic`); "
                "or use a folder store, e.g. --mlflow file:runs/mlruns"
            ) from None
    elif uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def make_trainer(
    config: ExperimentConfig,
    fold_dir: Path,
    run_dir: Path | None,
    name: str,
    *,
    has_val: bool,
    progress: bool,
) -> tuple[L.Trainer, ModelCheckpoint, EarlyStopping | None]:
    """The Trainer of one split: best checkpoint by the validation metric, last checkpoint, early
    stopping on the validation loss, the weights' moving average if asked, loggers; the split's own
    sampler (no distributed sampler)."""
    by_accuracy = config.train.select == "balanced_accuracy"
    checkpoint = FoldCheckpoint(
        dirpath=fold_dir,
        filename="best",
        monitor=("val_balanced_accuracy" if by_accuracy else "val_loss") if has_val else None,
        mode="max" if by_accuracy else "min",
        save_top_k=1,
        # without a validation set "best" is the latest epoch, saved every epoch: last.ckpt with it
        save_last=not has_val,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    callbacks: list[Any] = [checkpoint]
    if has_val:
        # Lightning's save_last writes last.ckpt only when a best checkpoint is saved; a resume
        # needs the latest epoch, so a second callback keeps it (written after the best one,
        # holding its state). Without a validation set both would be monitor-less callbacks with
        # the same state key, which Lightning refuses.
        callbacks.append(
            FoldCheckpoint(
                dirpath=fold_dir,
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
    if config.train.ema is not None:
        # Lightning's EMA: validated with the averaged weights; checkpoints hold the average as
        # their state_dict (the raw weights under current_model_state, restored on resume)
        callbacks.insert(0, EMAWeightAveraging(decay=config.train.ema, use_buffers=True))
    stopper = None
    if has_val and config.train.early_stopping:
        stopper = EarlyStopping(monitor="val_loss", mode="min", patience=config.train.early_stopping)
        callbacks.append(stopper)
    t = config.train
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        min_epochs=min(t.min_epochs, t.max_epochs) or None,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,  # type: ignore[arg-type]
        deterministic=deterministic_mode(t.deterministic, t.accelerator),
        logger=loggers(config, fold_dir, run_dir, name),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if has_val else 0,
        use_distributed_sampler=False,
        # SyncBatchNorm exists for GPUs only; CPU processes keep per-process statistics
        sync_batchnorm=_distributed(t.strategy, t.devices, t.num_nodes, t.accelerator)
        and inference_device(t.accelerator).type == "cuda",
        log_every_n_steps=1,
        default_root_dir=fold_dir,
    )
    return trainer, checkpoint, stopper


def _distributed(strategy: str, devices: int | str, nodes: int, accelerator: str = "cpu") -> bool:
    """True when training runs in several processes (BatchNorm statistics are then synchronised)."""
    return world_size(devices, nodes, accelerator) > 1 or (str(devices) == "auto" and "ddp" in strategy)
