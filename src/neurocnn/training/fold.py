"""Train one split (one fold of one repeat) with Lightning and write its part of the run folder.

The model sees the training subjects only; the validation subjects (carved from the training fold by
`neurocnn.data.splits`) choose the best checkpoint and stop training early; the test subjects are
predicted once, by the best checkpoint, after training has ended. Lightning writes ``best.ckpt`` and
``last.ckpt``; ``last.ckpt`` (end of the latest epoch) is where a resumed fold continues.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from neurocnn.data.cache import PreparedCohort
from neurocnn.data.dataset import CachedDataset
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import inference_device, predict_proba
from neurocnn.evaluation.metrics import classification_metrics
from neurocnn.models.allocator import roomy_allocator
from neurocnn.training.augment import SampleTransform, flip_and_shift
from neurocnn.training.checkpoints import FIT_RECORD, config_digest, fit_record
from neurocnn.training.config import ExperimentConfig
from neurocnn.training.distributed import process_rank
from neurocnn.training.module import Classifier, build_network, class_weights
from neurocnn.training.runfolder import write_json
from neurocnn.training.sampling import EpochDataset, EpochSampler, sample_seed
from neurocnn.training.trainer import make_trainer
from neurocnn.training.transfer import load_backbone, load_state

# Lightning's advice that does not apply here: workers are the user's choice, small cohorts have
# few batches, a fold folder holds the checkpoints of that fold by design, and validation runs on
# the whole set in every process, so its values need no reduction.
QUIET = (
    ".*does not have many workers.*",
    ".*The number of training batches.*",
    ".*exists and is not empty.*",
    ".*isinstance.treespec, LeafSpec.*",
    ".*when logging on epoch level in distributed setting.*",
)


@dataclass(frozen=True)
class FoldPlan:
    """One split: cache indices of its roles, and where it sits in the run."""

    repeat: int
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    inner: int = -1
    tag: str = field(default="")

    @property
    def seed_keys(self) -> tuple[int, int, int]:
        return self.repeat, self.fold, self.inner


class FoldData(L.LightningDataModule):
    """Training and validation loaders of one split; the test subjects are not in it."""

    def __init__(self, cache: PreparedCohort, plan: FoldPlan, config: ExperimentConfig, seed: int) -> None:
        super().__init__()
        self.cache, self.plan, self.config, self.seed = cache, plan, config, seed

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        batch = self.config.train.batch_size
        if batch % world:
            raise NeuroCNNError(
                f"--batch-size {batch} (the global batch) is not divisible by the {world} processes"
            )
        per_process = batch // world
        aug = self.config.augment
        dataset = EpochDataset(
            CachedDataset(self.cache, self.plan.train),
            SampleTransform(aug) if aug.per_sample else None,
            self.seed,
        )
        sampler = EpochSampler(
            len(dataset), seed=self.seed, rank=rank, world=world, epoch_fn=lambda: self.trainer.current_epoch
        )
        workers = self.config.train.num_workers
        return DataLoader(
            dataset,
            batch_size=per_process,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            # a last batch of one subject breaks BatchNorm on flat features
            drop_last=len(sampler) % per_process == 1 and len(sampler) > 1,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Flips and shifts of training batches, on the device they were moved to."""
        if self.trainer.training:
            x, y, index = batch
            epoch = self.trainer.current_epoch
            return flip_and_shift(x, index, epoch, self.seed, self.config.augment), y, index
        return batch

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(
            CachedDataset(self.cache, self.plan.val),
            batch_size=self.config.train.batch_size,
            shuffle=False,
            num_workers=self.config.train.num_workers,
        )


def fold_seed(config: ExperimentConfig, plan: FoldPlan) -> int:
    """Each split's seed depends on the run seed and the split only, so a fold trained alone
    (``--fold``) is the fold trained within the full run."""
    return sample_seed(config.seed, *plan.seed_keys) % (2**31)


def make_network(config: ExperimentConfig, cache: PreparedCohort) -> tuple[torch.nn.Module, list[str]]:
    net = build_network(config, cache.shape, len(cache.classes))
    heads: list[str] = []
    if config.transfer.source:
        heads = load_backbone(net, config, cache.shape, len(cache.classes))
    return net, heads


def fit_fold(
    config: ExperimentConfig,
    cache: PreparedCohort,
    plan: FoldPlan,
    fold_dir: Path,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Train one split and write best/last checkpoints, history, test predictions and metrics.

    Returns the fold's metrics (also in ``metrics.json``), or None in DDP processes other than rank 0.
    """
    start = time.perf_counter()
    roomy_allocator()  # freed activations reused without page faults (models.allocator)
    fold_dir.mkdir(parents=True, exist_ok=True)
    seed = fold_seed(config, plan)
    L.seed_everything(seed, workers=True, verbose=False)
    net, heads = make_network(config, cache)
    n_classes = len(cache.classes)
    labels = cache.labels()
    weights = (
        class_weights(labels[plan.train], n_classes) if config.train.class_weights == "balanced" else None
    )
    module = Classifier(net, config, weights=weights, head_names=heads, seed=seed)
    has_val = len(plan.val) > 0
    if not has_val and config.optim.schedule == "plateau":
        raise NeuroCNNError(
            "the reduce-on-plateau schedule follows the validation loss, but this split has no "
            "validation subjects; give a validation share (--val) or another --schedule"
        )
    t = config.train
    trainer, checkpoint, stopper = make_trainer(
        config,
        fold_dir,
        run_dir,
        plan.tag or f"r{plan.repeat}_f{plan.fold}",
        has_val=has_val,
        progress=progress,
    )
    last = fold_dir / "last.ckpt"
    # Training ended (all epochs, or early stopping) but the fold was killed before its metrics
    # were written: a resumed fold only predicts. (Lightning does not checkpoint the decision to
    # stop, so fitting again from last.ckpt would train one epoch more than the uninterrupted run.)
    trained = fit_record(fold_dir, config) if resume and _readable(last) else None
    if trained is not None:
        if process_rank() != 0:
            return None
    else:
        ckpt_path = None
        if process_rank() == 0:  # only one process touches the fold's files
            (fold_dir / FIT_RECORD).unlink(missing_ok=True)
            ckpt_path = str(last) if resume and _readable(last) else None
            _keep_earlier_logs(fold_dir / "logs", resumed=ckpt_path is not None)
        elif resume and last.exists():
            ckpt_path = str(last)
        with warnings.catch_warnings():
            for message in QUIET:
                warnings.filterwarnings("ignore", message=message)
            try:
                trainer.fit(module, datamodule=FoldData(cache, plan, config, seed), ckpt_path=ckpt_path)
            except SystemExit:
                if trainer.interrupted:  # Lightning turns Ctrl-C into a graceful shutdown and exit(1)
                    raise KeyboardInterrupt from None
                raise
        if not trainer.is_global_zero:
            return None
        stopped = stopper.stopped_epoch if stopper is not None and stopper.stopped_epoch else None
        if stopped is not None and trainer.current_epoch >= t.max_epochs:
            stopped = None  # the stopper asked, but min_epochs kept training to the end
        best_name = Path(checkpoint.best_model_path).name if checkpoint.best_model_path else last.name
        trained = {
            "best": best_name,
            "epochs_run": int(trainer.current_epoch),
            "stopped": stopped,
            "config": config_digest(config),
        }
        write_json(fold_dir / FIT_RECORD, trained)

    best = fold_dir / trained["best"]
    best_ckpt = torch.load(best, map_location="cpu", weights_only=True)
    fresh = build_network(config, cache.shape, n_classes)
    fresh.load_state_dict(load_state(best))
    probs, preds = predict_proba(
        fresh, cache, plan.test, batch_size=t.batch_size, device=inference_device(t.accelerator)
    )
    write_predictions(fold_dir / "predictions.csv", cache, plan, probs, preds)
    history = write_history(fold_dir)
    y_test = labels[plan.test]
    result = {
        "repeat": plan.repeat,
        "fold": plan.fold,
        "inner": plan.inner,
        "n_train": len(plan.train),
        "n_val": len(plan.val),
        "n_test": len(plan.test),
        "selection": (
            f"best validation {config.train.select}" if has_val else "last epoch (no validation set)"
        ),
        "best_epoch": int(best_ckpt["epoch"]),
        "epochs_run": int(trained["epochs_run"]),
        "early_stopping_epoch": trained["stopped"],
        "best_validation": _row(history, int(best_ckpt["epoch"])),
        "test": classification_metrics(y_test, probs, preds) if len(plan.test) else {},
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(fold_dir / "metrics.json", result)
    return result


def _readable(path: Path) -> bool:
    """True for a checkpoint that loads; a file cut short by a kill is removed (the fold restarts)."""
    if not path.exists():
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        warnings.warn(f"{path} is damaged (killed while writing?); the fold restarts", stacklevel=2)
        path.unlink()
        return False


def write_predictions(
    path: Path, cache: PreparedCohort, plan: FoldPlan, probs: np.ndarray, preds: np.ndarray
) -> pd.DataFrame:
    m = cache.manifest.set_index("index").loc[plan.test]
    classes = cache.classes
    table = pd.DataFrame(
        {
            "participant_id": m["participant_id"].to_numpy(),
            "session_id": m["session_id"].to_numpy() if "session_id" in m else None,
            "index": plan.test,
            "repeat": plan.repeat,
            "fold": plan.fold,
            "label": [classes[i] for i in cache.labels()[plan.test]],
        }
    )
    for k, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, k] if len(probs) else []
    table["prediction"] = [classes[i] for i in preds]
    table.to_csv(path, index=False)
    return table


def _keep_earlier_logs(logs: Path, *, resumed: bool) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv; keep it as a numbered part when the
    fold resumes (its epochs before the checkpoint are history), drop old parts when it restarts."""
    parts = sorted(logs.glob("metrics.part*.csv"))
    if not resumed:
        for p in [*parts, logs / "metrics.csv"]:
            p.unlink(missing_ok=True)
    elif (logs / "metrics.csv").exists():
        (logs / "metrics.csv").rename(logs / f"metrics.part{len(parts):03d}.csv")


def write_history(fold_dir: Path) -> pd.DataFrame:
    """One row per epoch from Lightning's CSV logs (the last value wins after a resume)."""
    logs = fold_dir / "logs"
    files = [*sorted(logs.glob("metrics.part*.csv")), logs / "metrics.csv"]
    frames = [pd.read_csv(f) for f in files if f.exists() and f.stat().st_size]
    if not frames:
        return pd.DataFrame()
    log = pd.concat(frames, ignore_index=True)
    cols = [c for c in ("train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr") if c in log]
    history = log.groupby("epoch")[cols].last().reset_index()
    history.to_csv(fold_dir / "history.csv", index=False)
    return history


def _row(history: pd.DataFrame, epoch: int) -> dict[str, float]:
    if history.empty or epoch not in set(history["epoch"]):
        return {}
    row = history[history["epoch"] == epoch].iloc[0]
    return {k: float(row[k]) for k in row.index if k.startswith("val_")}
