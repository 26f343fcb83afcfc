"""Model selection never looks at the test fold: perturbing only the test subjects changes nothing
in training, the chosen checkpoint or the validation history; only the test predictions change."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from neurocnn.data.cache import open_cache
from neurocnn.data.splits import kfold, split_indices
from neurocnn.training import parse_config
from neurocnn.training.fold import FoldPlan, fit_fold
from training_fixtures import tiny_config, write_cache


def test_test_fold_perturbation_does_not_change_the_chosen_checkpoint(tmp_path):
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    clean = write_cache(tmp_path / "clean", 30, effect=3.0)
    cache = open_cache(clean)
    ids = split_indices(kfold(cache.manifest, 3, val_fraction=0.2), 0, 0)
    plan = FoldPlan(0, 0, ids["train"], ids["val"], ids["test"])

    # the same cohort with the test subjects' images replaced by noise and their labels flipped
    perturbed = write_cache(tmp_path / "perturbed", 30, effect=3.0)
    data = np.load(perturbed / "data.npy")
    data[ids["test"]] = np.random.default_rng(9).standard_normal(data[ids["test"]].shape) * 5
    np.save(perturbed / "data.npy", data)
    manifest = pd.read_csv(perturbed / "manifest.tsv", sep="\t")
    manifest.loc[ids["test"], "label_index"] = 1 - manifest.loc[ids["test"], "label_index"]
    manifest.to_csv(perturbed / "manifest.tsv", sep="\t", index=False)

    config = parse_config(tiny_config(clean, train={"max_epochs": 4, "batch_size": 4, "early_stopping": 2}))
    a = fit_fold(config, cache, plan, tmp_path / "fold_a", progress=False)
    b = fit_fold(
        config.with_overrides({"cache": str(perturbed)}),
        open_cache(perturbed),
        plan,
        tmp_path / "fold_b",
        progress=False,
    )
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
    assert a["best_validation"] == b["best_validation"]
    sa = torch.load(tmp_path / "fold_a/best.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "fold_b/best.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "fold_a/history.csv"), pd.read_csv(tmp_path / "fold_b/history.csv")
    )
    # ...while the test predictions did see the perturbation
    pa = pd.read_csv(tmp_path / "fold_a/predictions.csv")
    pb = pd.read_csv(tmp_path / "fold_b/predictions.csv")
    assert not np.allclose(pa["prob_patient"], pb["prob_patient"])


def _frozen_fold(tmp_path):
    """A 24-subject cache, fold 0 of 3 with validation, and model/optimiser sections whose
    weights cannot move (lr 1e-30, no BatchNorm): every epoch validates the same."""
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    path = write_cache(tmp_path / "cache", 24, effect=3.0)
    cache = open_cache(path)
    ids = split_indices(kfold(cache.manifest, 3, val_fraction=0.2), 0, 0)
    plan = FoldPlan(0, 0, ids["train"], ids["val"], ids["test"])
    frozen = {
        "model": {"name": "sequential_1", "options": {"filters": 2, "hidden": 4, "dropout": 0.0}},
        "optim": {"optimizer": "adam", "lr": 1e-30},
    }
    return path, cache, plan, frozen


def test_min_epochs_keeps_early_stopping_from_ending_training_sooner(tmp_path):
    """Weights that cannot move (lr 1e-30, no BatchNorm) give a flat validation loss: patience 1
    stops at epoch 1, unless min_epochs holds training to the end."""
    path, cache, plan, frozen = _frozen_fold(tmp_path)
    runs = {}
    for min_epochs in (0, 5):
        train = {"max_epochs": 5, "batch_size": 8, "early_stopping": 1, "min_epochs": min_epochs}
        config = parse_config(tiny_config(path, train=train, **frozen))
        runs[min_epochs] = fit_fold(config, cache, plan, tmp_path / f"fold_{min_epochs}", progress=False)
    assert runs[0]["epochs_run"] == 2 and runs[0]["early_stopping_epoch"] is not None
    assert runs[5]["epochs_run"] == 5 and runs[5]["early_stopping_epoch"] is None


@pytest.mark.parametrize("select", ["loss", "balanced_accuracy"])
def test_without_a_validation_set_the_last_epoch_is_kept_and_resumable(tmp_path, select):
    """val_fraction 0: no selection; best.ckpt and last.ckpt are the final epoch, and a run
    resumed from last.ckpt ends with the same weights as an uninterrupted one. (With
    select=loss, two monitor-less checkpoint callbacks once had the same state key and Lightning
    refused to start.)"""
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    path = write_cache(tmp_path / "cache", 24, effect=3.0)
    cache = open_cache(path)
    ids = split_indices(kfold(cache.manifest, 3, val_fraction=0.0), 0, 0)
    assert len(ids["val"]) == 0
    plan = FoldPlan(0, 0, ids["train"], ids["val"], ids["test"])

    def config(epochs: int):
        train = {"max_epochs": epochs, "batch_size": 8, "select": select}
        return parse_config(tiny_config(path, train=train))

    straight = fit_fold(config(3), cache, plan, tmp_path / "straight", progress=False)
    assert straight["selection"] == "last epoch (no validation set)"
    assert straight["best_epoch"] == 2 and straight["epochs_run"] == 3
    best = torch.load(tmp_path / "straight/best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "straight/last.ckpt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in best["state_dict"])
    fit_fold(config(2), cache, plan, tmp_path / "resumed", progress=False)
    fit_fold(config(3), cache, plan, tmp_path / "resumed", resume=True, progress=False)
    again = torch.load(tmp_path / "resumed/best.ckpt", weights_only=True)
    assert again["epoch"] == 2
    assert all(torch.allclose(again["state_dict"][k], best["state_dict"][k]) for k in best["state_dict"])
    pa = pd.read_csv(tmp_path / "straight/predictions.csv")
    pb = pd.read_csv(tmp_path / "resumed/predictions.csv")
    assert np.allclose(pa["prob_patient"], pb["prob_patient"], atol=1e-6)


def test_a_moved_run_folder_resumes_with_its_own_best_checkpoint(tmp_path):
    """last.ckpt records the best checkpoint's absolute path; after the run folder was moved, a
    resumed fold must predict with the best.ckpt beside it, not look for the old path. (Frozen
    weights and selection by balanced accuracy, so no later epoch improves on epoch 0 and
    replaces the recorded path.)"""
    import shutil

    path, cache, plan, frozen = _frozen_fold(tmp_path)

    def config(epochs: int):
        train = {"max_epochs": epochs, "batch_size": 8, "select": "balanced_accuracy"}
        return parse_config(tiny_config(path, train=train, **frozen))

    fit_fold(config(2), cache, plan, tmp_path / "old", progress=False)
    shutil.move(tmp_path / "old", tmp_path / "new")
    result = fit_fold(config(3), cache, plan, tmp_path / "new", resume=True, progress=False)
    assert result["epochs_run"] == 3 and result["best_epoch"] == 0
    assert (tmp_path / "new" / "predictions.csv").exists() and not (tmp_path / "old").exists()


def test_fold_checkpoint_keeps_lightnings_state_key():
    """Runs written with Lightning's own ModelCheckpoint resume into FoldCheckpoint: same key."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from neurocnn.training.checkpoints import FoldCheckpoint

    for monitor in ("val_loss", None):
        kw = {"dirpath": "/tmp/fold", "filename": "best", "monitor": monitor}
        assert FoldCheckpoint(**kw).state_key == ModelCheckpoint(**kw).state_key


def test_a_split_table_made_on_another_cohort_order_is_refused(tmp_path):
    """`cv --splits TABLE` names cache indices: after the cohort was prepared again in another
    order the same indices are other participants, and training would silently use them."""
    from neurocnn.data.splits import save_splits
    from neurocnn.errors import NeuroCNNError
    from neurocnn.training.crossval import make_splits

    path = write_cache(tmp_path / "cache", 24, effect=3.0)
    manifest = open_cache(path).manifest
    table = save_splits(kfold(manifest, 3, val_fraction=0.2), tmp_path / "splits.tsv")
    config = parse_config(tiny_config(path, splits={"table": str(table)}))
    assert len(make_splits(config, manifest)) == 3 * len(manifest)
    reordered = manifest.copy()
    reordered["participant_id"] = np.roll(reordered["participant_id"].to_numpy(), 1)
    with pytest.raises(NeuroCNNError, match="made on another cohort"):
        make_splits(config, reordered)
