"""A run killed with SIGKILL continues with --resume and ends with the predictions of an
uninterrupted run of the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from neurocnn.commands import cv
from training_fixtures import write_cache

ARGS = [
    "--model",
    "mrinet",
    "--model-option",
    "widths=[4,8]",
    "--folds",
    "2",
    "--val",
    "0.2",
    "--epochs",
    "12",
    "--batch-size",
    "4",
    "--lr",
    "0.01",
    "--schedule",
    "multistep",
    "--milestones",
    "4,8",
    "--early-stopping",
    "6",
    "--augment",
    "flip,shift",
    "--no-progress",
]


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    cache = write_cache(tmp_path / "cache", 20, effect=3.0)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(cv.__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocnn.commands.cv", str(cache), *ARGS, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "folds" / "r0_f0" / "last.ckpt"
    deadline = time.monotonic() + 180
    try:
        while not last.exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.01)
        # Killed as soon as the first checkpoint shows: on an idle machine an epoch of this tiny
        # run takes ~10 ms, and a further 0.1 s wait once let all 12 epochs finish first.
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    epoch_at_kill = torch.load(last, weights_only=True)["epoch"] if last.exists() else -1
    if (killed / "folds" / "r0_f0" / "metrics.json").exists() or epoch_at_kill >= 11:
        pytest.skip("the machine was too fast: fold 0 trained every epoch before the kill")

    assert cv.main([str(cache), *ARGS, "--out", str(killed), "--resume"]) == 0
    if epoch_at_kill >= 0:  # the resumed fold continued after the latest finished epoch
        after = pd.read_csv(killed / "folds" / "r0_f0" / "logs" / "metrics.csv")
        assert after["epoch"].min() == epoch_at_kill + 1
    straight = tmp_path / "straight"
    assert cv.main([str(cache), *ARGS, "--out", str(straight)]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(killed / "predictions.csv"), pd.read_csv(straight / "predictions.csv"), check_exact=True
    )
    for fold in ("r0_f0", "r0_f1"):
        a = pd.read_csv(killed / "folds" / fold / "history.csv")
        b = pd.read_csv(straight / "folds" / fold / "history.csv")
        pd.testing.assert_frame_equal(a, b)


def _interrupted_then_resumed(tmp_path: Path, name: str, sections: dict, kill_at: int | None):
    """(uninterrupted, resumed) fold results and histories: the resumed fold was stopped by an
    exception at the end of epoch ``kill_at`` (None: after training, while predicting its test
    subjects, e.g. at a job's time limit)."""
    import lightning as L

    from neurocnn.data.cache import open_cache
    from neurocnn.data.splits import kfold, split_indices
    from neurocnn.training import fold as fold_module
    from neurocnn.training import parse_config
    from neurocnn.training.fold import FoldPlan, fit_fold
    from training_fixtures import tiny_config

    cache = open_cache(write_cache(tmp_path / f"{name}_cache", 30, effect=1.0))
    ids = split_indices(kfold(cache.manifest, 3, val_fraction=0.2), 0, 0)
    plan = FoldPlan(0, 0, ids["train"], ids["val"], ids["test"])
    cfg = parse_config(tiny_config(cache.path, **sections))

    class Kill(L.Callback):
        def on_train_epoch_end(self, trainer, module):  # type: ignore[no-untyped-def]
            if kill_at is not None and trainer.current_epoch == kill_at:
                raise RuntimeError("killed")

    straight = fit_fold(cfg, cache, plan, tmp_path / f"{name}_straight", progress=False)
    original = fold_module.make_trainer

    def with_kill(*args, **kwargs):  # type: ignore[no-untyped-def]
        trainer, checkpoint, stopper = original(*args, **kwargs)
        trainer.callbacks.append(Kill())
        return trainer, checkpoint, stopper

    def killed_while_predicting(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("killed while predicting")

    predict = fold_module.predict_proba
    fold_module.make_trainer = with_kill
    if kill_at is None:
        fold_module.predict_proba = killed_while_predicting
    try:
        with pytest.raises(RuntimeError, match="killed"):
            fit_fold(cfg, cache, plan, tmp_path / f"{name}_resumed", progress=False)
    finally:
        fold_module.make_trainer = original
        fold_module.predict_proba = predict
    resumed = fit_fold(cfg, cache, plan, tmp_path / f"{name}_resumed", resume=True, progress=False)
    histories = [pd.read_csv(tmp_path / f"{name}_{k}" / "history.csv") for k in ("straight", "resumed")]
    return straight, resumed, histories


def test_plateau_schedule_resumes_on_the_same_learning_rate_path(tmp_path):
    sections = {
        "optim": {"lr": 0.1, "schedule": "plateau", "plateau_patience": 0, "plateau_factor": 0.5},
        "train": {"max_epochs": 7, "batch_size": 4, "early_stopping": None},
    }
    straight, resumed, (a, b) = _interrupted_then_resumed(tmp_path, "plateau", sections, kill_at=3)
    assert a["lr"].nunique() > 1, "the schedule must reduce the rate for the test to mean anything"
    pd.testing.assert_series_equal(a["lr"], b["lr"])
    pd.testing.assert_series_equal(a["val_loss"], b["val_loss"], rtol=1e-5)
    assert straight["test"] == pytest.approx(resumed["test"], rel=1e-5, nan_ok=True)


def test_a_fold_killed_after_early_stopping_resumes_without_training_more(tmp_path):
    sections = {"optim": {"lr": 0.1}, "train": {"max_epochs": 12, "batch_size": 4, "early_stopping": 2}}
    straight, resumed, (a, b) = _interrupted_then_resumed(tmp_path, "stopped", sections, kill_at=None)
    assert straight["early_stopping_epoch"] is not None, (
        "the run must stop early for the test to mean anything"
    )
    for key in ("epochs_run", "early_stopping_epoch", "best_epoch"):
        assert resumed[key] == straight[key], key
    assert len(a) == len(b)


def test_a_finished_training_is_recognised_after_the_cache_moved(tmp_path):
    """fit.json marks a fold whose training ended; a moved cache (a supported case) must not make a
    resumed fold train again from last.ckpt. Records written with the cache path in the digest
    (before) are still recognised."""
    import hashlib

    from neurocnn.training import parse_config
    from neurocnn.training.checkpoints import FIT_RECORD, config_digest, fit_record
    from neurocnn.training.runfolder import write_json
    from training_fixtures import tiny_config

    config = parse_config(tiny_config(tmp_path / "cache"))
    fold = tmp_path / "fold"
    fold.mkdir()
    (fold / "best.ckpt").write_bytes(b"")
    record = {"best": "best.ckpt", "epochs_run": 2, "stopped": None, "config": config_digest(config)}
    write_json(fold / FIT_RECORD, record)
    moved = config.with_overrides({"cache": str(tmp_path / "elsewhere")})
    assert fit_record(fold, moved) == record
    assert fit_record(fold, config.with_overrides({"train.max_epochs": 5})) is None
    old = {**record, "config": hashlib.sha256(config.model_dump_json().encode()).hexdigest()}
    write_json(fold / FIT_RECORD, old)
    assert fit_record(fold, config) == old
    assert fit_record(fold, config.with_overrides({"train.max_epochs": 5})) is None
