"""Two CPU processes with DDP (gloo) give the results of one process with the same global batch.

Tolerance: probabilities within 1e-5 (the gradients are averaged across processes in another order
of floating-point additions). The model has no BatchNorm (SyncBatchNorm exists on GPUs only; on CPU
each process would normalise its half-batch) and no dropout (each process draws its own masks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurocnn.commands import cv
from training_fixtures import write_cache

ARGS = [
    "--model",
    "sequential_1",
    "--model-option",
    "filters=4",
    "--model-option",
    "hidden=8",
    "--model-option",
    "dropout=0",
    "--folds",
    "2",
    "--val",
    "0.25",
    "--epochs",
    "3",
    "--batch-size",
    "8",
    "--lr",
    "0.01",
    "--augment",
    "flip,shift",
    "--no-progress",
    "--accelerator",
    "cpu",
]


DDP = ["--devices", "2", "--strategy", "ddp"]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path):
    cache = write_cache(tmp_path / "cache", 32, effect=3.0)
    one, two = tmp_path / "one", tmp_path / "two"
    assert cv.main([str(cache), *ARGS, "--out", str(one)]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(cv.__file__).parents[2])}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "neurocnn.commands.cv", str(cache), *ARGS, "--out", str(two), *DDP],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = pd.read_csv(one / "predictions.csv"), pd.read_csv(two / "predictions.csv")
    pd.testing.assert_frame_equal(
        a.drop(columns=["prob_control", "prob_patient"]), b.drop(columns=["prob_control", "prob_patient"])
    )
    assert np.allclose(a["prob_patient"], b["prob_patient"], atol=1e-5)
    for fold in ("r0_f0", "r0_f1"):
        ha = pd.read_csv(one / "folds" / fold / "history.csv")
        hb = pd.read_csv(two / "folds" / fold / "history.csv")
        assert np.allclose(ha["val_loss"], hb["val_loss"], atol=1e-5)
        assert np.allclose(ha["train_loss"], hb["train_loss"], atol=1e-5)
    # only rank 0 wrote: one environment, one set of fold files
    assert sorted(p.name for p in (two / "folds").iterdir()) == ["r0_f0", "r0_f1"]
