"""Cross-validation end to end on a small generated cohort: run folder, determinism, fold jobs and
gather, refusals, failed folds, permuted labels, nested search."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from neurocnn.data.splits import load_splits
from neurocnn.errors import NeuroCNNError
from neurocnn.evaluation.summary import gather
from neurocnn.training import crossval as crossval_module
from neurocnn.training import parse_config, run_cv
from neurocnn.training.runfolder import fold_config, read_config
from training_fixtures import tiny_config, write_cache

SMALL_NET = {"name": "sequential_1", "options": {"filters": 4, "hidden": 8, "dropout": 0.0}}


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    import lightning.pytorch  # noqa: F401  (sets its own level on import)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cv") / "cache", 36, effect=4.0)


def config_for(cohort: Path, **sections):
    base = {
        "model": SMALL_NET,
        "optim": {"lr": 3e-3},
        "train": {"max_epochs": 3, "batch_size": 4},
        "splits": {"folds": 3, "val_fraction": 0.2},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(tiny_config(cohort, **base))


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    result = run_cv(config_for(cohort), out, progress=False)
    assert not result.failed and result.summary is not None
    return out


def test_run_folder_layout(reference, cohort):
    cfg = parse_config(yaml.safe_load((reference / "config.yaml").read_text()))
    assert cfg.model.name == "sequential_1" and cfg.model.modalities == "channels"
    assert cfg.train.deterministic is True  # resolved for the CPU
    assert Path(cfg.cache) == cohort.resolve()
    splits = load_splits(reference / "splits.tsv")
    assert sorted(splits["fold"].unique()) == [0, 1, 2]
    env = json.loads((reference / "environment.json").read_text())
    assert {"torch", "lightning", "git_commit", "cpu_count", "python"} <= set(env)
    data = json.loads((reference / "data.json").read_text())
    assert data["classes"] == ["control", "patient"] and len(data["participants"]) == 36
    for f in range(3):
        d = reference / "folds" / f"r0_f{f}"
        for name in ("best.ckpt", "last.ckpt", "history.csv", "predictions.csv", "metrics.json"):
            assert (d / name).exists(), d / name
        history = pd.read_csv(d / "history.csv")
        assert list(history["epoch"]) == [0, 1, 2]
        assert {"train_loss", "val_loss", "val_balanced_accuracy", "lr"} <= set(history.columns)
        m = json.loads((d / "metrics.json").read_text())
        assert m["selection"] == "best validation balanced_accuracy"
        assert 0 <= m["best_epoch"] <= 2 and m["epochs_run"] == 3
        # the checkpoint the fold reports is the one Lightning kept; last.ckpt is the latest epoch
        ckpt = torch.load(d / "best.ckpt", weights_only=True)
        assert ckpt["epoch"] == m["best_epoch"]
        assert torch.load(d / "last.ckpt", weights_only=True)["epoch"] == 2
    pred = pd.read_csv(reference / "predictions.csv")
    assert list(pred.columns) == [
        "participant_id",
        "session_id",
        "index",
        "repeat",
        "fold",
        "label",
        "prob_control",
        "prob_patient",
        "prediction",
    ]
    assert sorted(pred["index"]) == list(range(36))  # every subject predicted once, out of fold
    assert np.allclose(pred[["prob_control", "prob_patient"]].sum(axis=1), 1, atol=1e-5)
    test_ids = splits[(splits["role"] == "test")].set_index("index")["fold"]
    assert (pred.set_index("index")["fold"] == test_ids.loc[pred["index"]].to_numpy()).all()
    metrics = json.loads((reference / "metrics.json").read_text())
    ba = metrics["balanced_accuracy"]
    assert ba["ci95"][0] <= ba["value"] <= ba["ci95"][1]
    summary = json.loads((reference / "summary.json").read_text())
    assert len(summary["per_fold"]) == 3 and summary["missing"] == []
    assert {"mean", "std"} <= set(summary["mean_std"]["balanced_accuracy"])


def test_planted_effect_is_learned(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["pooled"]["balanced_accuracy"]["ci95"][0] > 0.5


def test_same_command_twice_gives_identical_predictions(reference, cohort, tmp_path):
    run_cv(config_for(cohort), tmp_path / "again", progress=False)
    a = pd.read_csv(reference / "predictions.csv")
    b = pd.read_csv(tmp_path / "again" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for f in range(3):
        sa = torch.load(reference / f"folds/r0_f{f}/best.ckpt", weights_only=True)["state_dict"]
        sb = torch.load(tmp_path / f"again/folds/r0_f{f}/best.ckpt", weights_only=True)["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fold_jobs_then_gather_equal_the_full_run(reference, cohort, tmp_path):
    out = tmp_path / "jobs"
    first = run_cv(config_for(cohort), out, folds=[2], progress=False)
    assert first.trained == ["r0_f2"] and first.summary is None
    with pytest.raises(NeuroCNNError, match="already finished"):
        run_cv(config_for(cohort), out, folds=[2], progress=False)
    second = run_cv(config_for(cohort), out, folds=[0, 1], progress=False)
    assert second.summary is not None  # the last job completes the run and gathers it
    summary = gather(out)
    pd.testing.assert_frame_equal(
        pd.read_csv(reference / "predictions.csv"), pd.read_csv(out / "predictions.csv"), check_exact=True
    )
    ref = json.loads((reference / "summary.json").read_text())
    assert summary["pooled"] == ref["pooled"]


def test_run_folder_is_never_overwritten_silently(reference, cohort, tmp_path):
    with pytest.raises(NeuroCNNError, match="--resume continues it, --overwrite replaces it"):
        run_cv(config_for(cohort), reference, progress=False)
    with pytest.raises(NeuroCNNError, match="different configuration.*optim.lr"):
        run_cv(config_for(cohort, optim={"lr": 1e-3}), reference, resume=True, progress=False)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(NeuroCNNError, match="not a neurocnn run folder"):
        run_cv(config_for(cohort), precious, overwrite=True, progress=False)
    assert (precious / "thesis.tex").exists()
    # resume of a finished run trains nothing and keeps every fold
    result = run_cv(config_for(cohort), reference, resume=True, progress=False)
    assert result.trained == [] and len(result.skipped) == 3


def test_overwrite_replaces_the_run(cohort, tmp_path):
    out = tmp_path / "run"
    run_cv(config_for(cohort, train={"max_epochs": 1}), out, folds=[0, 1], progress=False)
    for f in (0, 1):
        (out / "folds" / f"r0_f{f}" / "marker").write_text("old")
    # a fold job replaces its own fold only
    run_cv(config_for(cohort, train={"max_epochs": 1}), out, folds=[0], overwrite=True, progress=False)
    assert not (out / "folds/r0_f0/marker").exists() and (out / "folds/r0_f1/marker").exists()
    assert (out / "folds" / "r0_f0" / "metrics.json").exists()
    # a full run replaces the whole folder
    run_cv(
        config_for(cohort, train={"max_epochs": 1}, splits={"folds": 2}), out, overwrite=True, progress=False
    )
    assert not (out / "folds/r0_f1/marker").exists() and not (out / "folds/r0_f2").exists()


def test_failed_fold_is_reported_and_the_others_complete(cohort, tmp_path, monkeypatch):
    real = crossval_module.fit_fold

    def flaky(config, cache, plan, fold_dir, **kw):
        if plan.fold == 1:
            raise RuntimeError("out of memory (simulated)")
        return real(config, cache, plan, fold_dir, **kw)

    monkeypatch.setattr(crossval_module, "fit_fold", flaky)
    out = tmp_path / "run"
    result = run_cv(config_for(cohort), out, progress=False)
    assert list(result.failed) == ["r0_f1"] and "out of memory" in result.failed["r0_f1"]
    assert result.trained == ["r0_f0", "r0_f2"] and result.summary is None
    assert "RuntimeError" in (out / "folds/r0_f1/error.txt").read_text()
    summary = gather(out)
    assert summary["missing"] == ["r0_f1"] and summary["failed"] == ["r0_f1"]
    monkeypatch.setattr(crossval_module, "fit_fold", real)
    retry = run_cv(config_for(cohort), out, resume=True, progress=False)
    assert retry.trained == ["r0_f1"] and retry.summary is not None
    assert not (out / "folds/r0_f1/error.txt").exists()


def test_permuted_labels_give_chance(cohort, reference, tmp_path):
    result = run_cv(config_for(cohort, permute_labels=True), tmp_path / "perm", progress=False)
    pooled = result.summary["pooled"]["balanced_accuracy"]
    assert pooled["ci95"][0] < 0.5 < pooled["ci95"][1]
    assert abs(pooled["value"] - 0.5) < 0.2
    assert result.summary["permuted_labels"] is True
    # the labels were shuffled across participants, not within the true classes
    perm = pd.read_csv(tmp_path / "perm" / "predictions.csv").set_index("index")["label"]
    true = pd.read_csv(reference / "predictions.csv").set_index("index")["label"]
    assert (perm.sort_index() != true.sort_index()).mean() > 0.25


def test_nested_search_chooses_on_inner_folds(cohort, tmp_path):
    cfg = config_for(
        cohort,
        splits={"folds": 2, "nested": 2},
        train={"max_epochs": 1},
        search={"optim.lr": [1e-2, 1e-3]},
    )
    out = tmp_path / "nested"
    result = run_cv(cfg, out, folds=[0], progress=False)
    assert result.trained == ["r0_f0"]
    search = json.loads((out / "folds/r0_f0/search.json").read_text())
    assert len(search["candidates"]) == 2 and search["chosen"] in search["candidates"]
    # the fold's models are rebuilt (tta, evaluate, interpret) with what its search chose
    chosen = fold_config(read_config(out), out / "folds/r0_f0")
    assert chosen.optim.lr == search["chosen"]["optim.lr"] and not chosen.search
    assert fold_config(read_config(out), out / "folds/r0_f1") == read_config(out)  # no search there
    # inner test folds lie inside the outer training set
    splits = load_splits(out / "splits.tsv")
    outer_test = set(splits[(splits.inner == -1) & (splits.fold == 0) & (splits.role == "test")]["index"])
    for inner in (0, 1):
        inner_pred = pd.read_csv(out / f"folds/r0_f0/search/c0_i{inner}/predictions.csv")
        assert not set(inner_pred["index"]) & outer_test
    assert not list((out / "folds/r0_f0/search").glob("*/*.ckpt"))


def test_a_run_refuses_to_continue_on_a_cohort_prepared_again_differently(tmp_path):
    cache = write_cache(tmp_path / "cache", 18, effect=4.0)
    out = tmp_path / "run"
    cfg = config_for(cache, train={"max_epochs": 1})
    run_cv(cfg, out, folds=[0], progress=False)
    before = (out / "data.json").read_text()
    # the same path, prepared again with other settings (e.g. another voxel size or normalisation)
    info = json.loads((cache / "cache.json").read_text())
    (cache / "cache.json").write_text(json.dumps({**info, "params_hash": "other settings"}))
    for kwargs in ({"folds": [1]}, {"resume": True}):
        with pytest.raises(NeuroCNNError, match="prepared differently.*params_hash differ"):
            run_cv(cfg, out, progress=False, **kwargs)  # type: ignore[arg-type]
    assert (out / "data.json").read_text() == before and not (out / "folds/r0_f1").exists()
    # the cohort as it was: the run continues
    (cache / "cache.json").write_text(json.dumps(info))
    assert run_cv(cfg, out, folds=[1], progress=False).trained == ["r0_f1"]


def test_a_users_folder_with_a_config_yaml_is_not_a_run_and_a_moved_cache_resumes(tmp_path):
    import shutil

    cache = write_cache(tmp_path / "cache", 18, effect=4.0)
    mine = tmp_path / "exp1"
    mine.mkdir()
    cfg = config_for(cache, train={"max_epochs": 1})
    (mine / "config.yaml").write_text(cfg.to_yaml())
    (mine / "notes.md").write_text("my notes")
    for kwargs in ({"overwrite": True}, {"resume": True}, {}):
        with pytest.raises(NeuroCNNError, match="not a neurocnn run folder; it was left alone"):
            run_cv(cfg, mine, progress=False, **kwargs)  # type: ignore[arg-type]
    assert (mine / "notes.md").read_text() == "my notes"
    # a run whose cache moved resumes from the new place (the cache's content is what is checked)
    out = tmp_path / "run"
    run_cv(cfg, out, folds=[0], progress=False)
    shutil.move(cache, tmp_path / "moved")
    moved = config_for(tmp_path / "moved", train={"max_epochs": 1})
    result = run_cv(moved, out, resume=True, progress=False)
    assert result.trained == ["r0_f1", "r0_f2"] and result.skipped == ["r0_f0"]
    assert yaml.safe_load((out / "config.yaml").read_text())["cache"] == moved.cache
