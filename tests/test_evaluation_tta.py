"""`neurocnn tta`: a run's fold models re-tested on their own test folds with the mirrored scan."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from neurocnn.commands import tta as tta_command
from neurocnn.data.cache import open_cache
from neurocnn.data.dataset import CachedDataset
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.inference import predict_proba
from neurocnn.evaluation.tta import tta_run
from neurocnn.training import parse_config, run_cv
from neurocnn.training.module import build_network
from neurocnn.training.transfer import load_state
from training_fixtures import tiny_config, write_cache


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("tta")
    cache = write_cache(root / "cache", n=24)  # the effect sits in one corner: lateralised
    cfg = tiny_config(cache, splits={"folds": 2, "val_fraction": 0.25}, train={"max_epochs": 2})
    run_cv(parse_config(cfg), root / "run", progress=False)
    return root / "run"


def test_tta_averages_each_test_scan_with_its_mirror(run, capsys):
    args = tta_command_args(["tta", str(run)])
    assert args.func(args) == 0
    assert "written to" in capsys.readouterr().out
    out = run / "run_tta_flip"
    plain = pd.read_csv(run / "predictions.csv")
    tta = pd.read_csv(out / "predictions.csv")
    assert tta[["participant_id", "fold", "label"]].equals(plain[["participant_id", "fold", "label"]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds_done"] == 2 and not summary["missing"]

    # the probabilities are the mean over the scan and its left-right mirror, with the fold's own model
    config, data = parse_config(_yaml(run)), json.loads((run / "data.json").read_text())
    cache = open_cache(config.cache)
    for fold_dir in sorted((run / "folds").glob("r*_f*")):
        net = build_network(config, tuple(data["shape"]), len(data["classes"])).eval()
        best = json.loads((fold_dir / "fit.json").read_text())["best"]
        net.load_state_dict(load_state(fold_dir / best))
        rows = tta[tta["fold"] == int(fold_dir.name.split("_f")[1])]
        data_set = CachedDataset(cache, rows["index"].to_numpy())
        x = torch.stack([data_set[k][0] for k in range(len(rows))])
        with torch.no_grad():
            expected = (torch.softmax(net(x), 1) + torch.softmax(net(x.flip(2)), 1)) / 2
        got = rows[[f"prob_{c}" for c in data["classes"]]].to_numpy()
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
        # and the run's own predictions are those of the scan alone
        own = plain[plain["fold"] == int(fold_dir.name.split("_f")[1])]
        with torch.no_grad():
            alone = torch.softmax(net(x), 1).numpy()
        np.testing.assert_allclose(own[[f"prob_{c}" for c in data["classes"]]].to_numpy(), alone, atol=1e-5)


def test_tta_keeps_earlier_results_and_other_folders(run, tmp_path):
    tta_run(run, progress=False, overwrite=True)
    before = (run / "run_tta_flip" / "predictions.csv").read_bytes()
    with pytest.raises(NeuroCNNError, match="earlier test-time augmentation; --overwrite"):
        tta_run(run, progress=False)
    assert (run / "run_tta_flip" / "predictions.csv").read_bytes() == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(NeuroCNNError, match="not a test-time augmentation folder"):
        tta_run(run, mine, progress=False, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(NeuroCNNError, match="itself a test-time augmentation result"):
        tta_run(run / "run_tta_flip", tmp_path / "y", progress=False)
    with pytest.raises(NeuroCNNError, match="transforms must be among flip"):
        tta_run(run, tmp_path / "x", transforms=("rotate",), progress=False)


def test_tta_of_a_run_still_training_takes_the_finished_folds(run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run, partial, ignore=shutil.ignore_patterns("*_tta_*"))
    (partial / "folds" / "r0_f1" / "metrics.json").unlink()  # as if still training
    summary = tta_run(partial, progress=False)
    assert summary["folds_done"] == 1 and summary["missing"] == ["r0_f1"] and not summary["failed"]
    assert set(pd.read_csv(partial / "partial_tta_flip" / "predictions.csv")["fold"]) == {0}
    (partial / "folds" / "r0_f1" / "error.txt").write_text("Traceback: out of memory")
    summary = tta_run(partial, progress=False, overwrite=True)
    assert summary["failed"] == ["r0_f1"]  # a failed fold stays failed, not just missing


def test_tta_finds_a_moved_cache_and_refuses_another_cohort(run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("*_tta_*"))
    cache = Path(parse_config(_yaml(run)).cache)
    shutil.copytree(cache, tmp_path / "cache_now")
    config = _yaml(moved)
    config["cache"] = str(tmp_path / "nowhere")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(NeuroCNNError, match="is not at .*nowhere; give --cache"):
        tta_run(moved, progress=False)
    summary = tta_run(moved, cache=tmp_path / "cache_now", progress=False)
    assert summary["folds_done"] == 2
    other = write_cache(tmp_path / "other", n=24, seed=5, prefix="other-")
    with pytest.raises(NeuroCNNError, match="prepared differently .* give --cache the run's own"):
        tta_run(moved, tmp_path / "o", cache=other, progress=False)
    assert not (tmp_path / "o").exists()


def test_a_failed_tta_keeps_the_earlier_result(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*_tta_*"))
    tta_run(copy, progress=False)
    before = (copy / "copy_tta_flip" / "predictions.csv").read_bytes()
    fit = json.loads((copy / "folds" / "r0_f1" / "fit.json").read_text())
    (copy / "folds" / "r0_f1" / fit["best"]).unlink()
    with pytest.raises(NeuroCNNError, match="r0_f1: its checkpoint .* is missing"):
        tta_run(copy, progress=False, overwrite=True)
    assert (copy / "copy_tta_flip" / "predictions.csv").read_bytes() == before
    assert not list(copy.glob(".copy_tta_flip*"))
    # a checkpoint that exists but is corrupt fails inside the loop, after the work has started
    (copy / "folds" / "r0_f1" / fit["best"]).write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.load raises
        tta_run(copy, progress=False, overwrite=True)
    assert (copy / "copy_tta_flip" / "predictions.csv").read_bytes() == before
    assert not list(copy.glob(".copy_tta_flip*"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NeuroCNNError, match="is a file; give --out a folder"):
        tta_run(copy, tmp_path / "a_file", progress=False)


def test_what_a_killed_tta_left_is_cleaned_or_restored(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*_tta_*"))
    tta_run(copy, progress=False)
    out = copy / "copy_tta_flip"
    before = (out / "predictions.csv").read_bytes()
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    # killed after moving the earlier result aside: it comes back, the half-written one goes
    out.rename(copy / f"copy_tta_flip.old-{dead}")
    (copy / f".copy_tta_flip.{dead}.tmp").mkdir()
    with pytest.raises(NeuroCNNError, match="earlier test-time augmentation"):
        tta_run(copy, progress=False)
    assert (out / "predictions.csv").read_bytes() == before
    assert not list(copy.glob(".copy_tta_flip*"))
    assert not list(copy.glob("copy_tta_flip.old-*"))


def test_a_run_without_test_subjects_is_refused(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*_tta_*"))
    splits = pd.read_csv(copy / "splits.tsv", sep="\t")
    splits.loc[splits["role"] == "test", "role"] = "train"
    splits.to_csv(copy / "splits.tsv", sep="\t", index=False)
    with pytest.raises(NeuroCNNError, match="no test subjects"):
        tta_run(copy, progress=False)
    assert not (copy / "copy_tta_flip").exists()


def test_slice_vote_models_refuse_mirrored_tta(run):
    class Voter(nn.Module):
        num_classes = 2

        def forward(self, x):
            return x.flatten(1)[:, :2]

        def vote(self, x):  # pragma: no cover - never reached
            raise AssertionError

    cache = open_cache(parse_config(_yaml(run)).cache)
    voter = Voter().train()
    with pytest.raises(NeuroCNNError, match="vote over slices"):
        predict_proba(voter, cache, [0, 1], flip=True)
    assert voter.training  # refused before anything was changed


def _yaml(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def tta_command_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    tta_command.register(parser.add_subparsers())
    return parser.parse_args(argv)
