"""The experiment configuration: defaults, YAML round trip, errors a person can act on, CLI."""

from __future__ import annotations

import argparse

import pytest
import yaml

from neurocnn.commands import cv
from neurocnn.errors import NeuroCNNError
from neurocnn.training.config import ExperimentConfig, load_config, parse_config


def test_defaults_and_yaml_round_trip(tmp_path):
    cfg = parse_config({"cache": "c", "model": {"name": "mrinet"}, "optim": {"optimizer": "adadelta"}})
    assert cfg.optim.lr == 1.0 and cfg.splits.folds == 10 and cfg.splits.val_fraction == 0.1
    assert cfg.train.select == "balanced_accuracy" and cfg.train.deterministic is None
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 1.0


def test_errors_name_every_bad_field():
    with pytest.raises(NeuroCNNError) as err:
        parse_config({"cache": "c", "model": {"name": "m"}, "splits": {"folds": 1}, "optim": {"lr": -1}})
    text = str(err.value)
    assert "splits.folds" in text and "optim.lr" in text
    with pytest.raises(NeuroCNNError, match="nested"):
        parse_config({"cache": "c", "model": {"name": "m"}, "search": {"optim.lr": [1, 2]}})
    with pytest.raises(NeuroCNNError, match="typo"):
        parse_config({"cache": "c", "model": {"name": "m"}, "typo": 1})


def test_overrides_are_validated_again():
    cfg = ExperimentConfig(cache="c", model={"name": "mrinet"})
    assert cfg.with_overrides({"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(NeuroCNNError):
        cfg.with_overrides({"train.batch_size": 0})
    # a search over optimisers: each gets its own default rate unless a rate was chosen
    assert cfg.with_overrides({"optim.optimizer": "sgd"}).optim.lr == 1e-2
    assert cfg.with_overrides({"optim.optimizer": "adadelta"}).optim.lr == 1.0
    assert cfg.with_overrides({"optim.optimizer": "sgd", "optim.lr": 0.3}).optim.lr == 0.3
    chosen = cfg.with_overrides({"optim.lr": 3e-4})
    assert chosen.with_overrides({"optim.optimizer": "sgd"}).optim.lr == 3e-4


def test_augmentation_ranges_without_their_augmentation_are_refused():
    parser = argparse.ArgumentParser()
    cv.add_arguments(parser)
    base = ["cache/x", "--model", "mrinet", "--out", "r"]
    for extra in (["--rotate", "15"], ["--zoom", "0.8,1.2"], ["--augment", "flip", "--shift=-1,2"]):
        with pytest.raises(NeuroCNNError, match="add .* to --augment"):
            cv.build_config(parser.parse_args([*base, *extra]))
    cfg = cv.build_config(
        parser.parse_args([*base, "--augment", "shift,rotate", "--shift=-1,2", "--rotate", "15"])
    )
    assert cfg.augment.shift == (-1, 2) and cfg.augment.rotate == 15.0


def test_command_line_becomes_configuration(tmp_path):
    parser = argparse.ArgumentParser()
    cv.add_arguments(parser)
    args = parser.parse_args(
        [
            "cache/x",
            "--model",
            "mrinet",
            "--model-option",
            "widths=[4,8]",
            "--out",
            str(tmp_path / "run"),
            "--holdout",
            "0.8,0.1,0.1",
            "--subset",
            "0.2",
            "--augment",
            "flip,shift,bias",
            "--schedule",
            "plateau",
            "--early-stopping",
            "0",
            "--transfer-from",
            "runs/src",
            "--search",
            "optim.lr=1e-3,1e-4",
            "--nested",
            "3",
            "--devices",
            "2",
        ]
    )
    cfg = cv.build_config(args)
    assert cfg.model.options == {"widths": [4, 8]}
    assert cfg.splits.scheme == "holdout" and cfg.splits.subset == 0.2
    assert cfg.augment.flip and cfg.augment.shift == (-2, 3) and cfg.augment.artefacts == ["bias"]
    assert cfg.train.early_stopping is None and cfg.train.devices == 2
    assert cfg.search == {"optim.lr": [1e-3, 1e-4]} and cfg.transfer.source == "runs/src"
    bad = parser.parse_args(["c", "--model", "m", "--out", "r", "--augment", "flip,wobble"])
    with pytest.raises(NeuroCNNError, match="wobble"):
        cv.build_config(bad)


def test_process_rank_from_launcher_variables(monkeypatch):
    from neurocnn.training.distributed import process_rank, world_size

    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert process_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process started by Lightning's launcher
    assert process_rank() == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "3")  # torchrun
    assert process_rank() == 3
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "0")  # one task of a job array
    assert process_rank() == 0
    assert world_size(2, 2) == 4 and world_size("auto", 1) == 1
    # GPU indices count as processes (a failing fold must then stop every process)
    assert world_size("0,1", 1, "gpu") == 2 and world_size("1,3,", 2, "gpu") == 4
    assert world_size(-1, 1, "cpu") == 1
