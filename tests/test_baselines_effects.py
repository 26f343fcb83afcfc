"""Planted effects on generated data: what each baseline should and should not find."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurocnn.baselines import CVOptions, atlas_features, run_regional, run_svm
from neurocnn.data.cache import open_cache
from neurocnn.errors import NeuroCNNError
from training_fixtures import write_cache

FAST = CVOptions(folds=4, inner_folds=3, n_boot=200, progress=False, save_models=False)


def _bal(summary):
    return summary["pooled"]["balanced_accuracy"]["value"]


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """40 subjects whose class-1 members are brighter in one corner block (a linear effect)."""
    return open_cache(
        write_cache(tmp_path_factory.mktemp("lin") / "cache", n=40, shape=(8, 10, 8), effect=1.0)
    )


def test_voxel_svm_finds_a_planted_linear_effect(linear, tmp_path):
    summary = run_svm(linear, tmp_path / "svm", FAST)
    assert _bal(summary) >= 0.8
    assert summary["pooled"]["auc"]["value"] >= 0.85


def test_regional_logistic_regression_finds_it_and_ranks_the_region_first(linear, tmp_path):
    m = linear.manifest
    y = m["label_index"].to_numpy()
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"participant_id": m["participant_id"], "roi_signal": y + rng.normal(0, 0.5, len(y))}
    )
    for i in range(6):
        table[f"roi_noise{i}"] = rng.normal(size=len(y))
    table["site"] = "A"  # non-numeric: ignored
    table.to_csv(tmp_path / "regions.csv", index=False)
    summary = run_regional(linear, tmp_path / "lr", FAST, models=["lr"], table=tmp_path / "regions.csv")["lr"]
    assert _bal(summary) >= 0.8
    importance = pd.read_csv(tmp_path / "lr" / "feature_importance.csv")
    assert importance.loc[0, "feature"] == "roi_signal" and importance.loc[0, "mean"] > 0
    assert {"r0_f0", "r0_f3"} <= set(importance.columns)
    assert (tmp_path / "lr" / "feature_importance.png").stat().st_size > 1000
    assert summary["feature_importance"]["top"][0]["feature"] == "roi_signal"


def test_atlas_regions_of_a_user_label_map(linear, tmp_path):
    shape = linear.shape[2:]
    labels = np.zeros(shape, dtype=np.int16)
    sx, sy, sz = (s // 3 for s in shape)
    labels[1 : 1 + sx, 1 : 1 + sy, 1 : 1 + sz] = 1  # where the effect was planted
    labels[5:, 5:, 4:] = 2
    nib.save(nib.Nifti1Image(labels, linear.affine), tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.json").write_text(json.dumps({"1": "effect block", "2": "elsewhere"}))
    X, names = atlas_features(linear, tmp_path / "atlas.nii.gz", tmp_path / "atlas.json")
    assert names == ["gm:effect block", "gm:elsewhere"]
    data = linear.array()[:, 0]
    assert np.allclose(X[:, 0], data[:, labels == 1].mean(axis=1), atol=1e-5)
    assert np.allclose(X[:, 1], data[:, labels == 2].mean(axis=1), atol=1e-5)
    summary = run_regional(
        linear, tmp_path / "atlas_lr", FAST, models=["lr"], atlas=tmp_path / "atlas.nii.gz",
        labels=tmp_path / "atlas.json",
    )["lr"]  # fmt: skip
    assert _bal(summary) >= 0.9


def test_an_interaction_defeats_the_linear_model_but_not_the_rbf_svm(tmp_path):
    """label = sign(x1 · x2): no linear function of the features separates the classes."""
    cache = open_cache(write_cache(tmp_path / "cache", n=80, shape=(4, 4, 4)))
    m = cache.manifest
    y = m["label_index"].to_numpy()
    rng = np.random.default_rng(1)
    x1 = rng.uniform(-1, 1, len(y))
    x2 = np.where(y == 1, np.sign(x1), -np.sign(x1)) * rng.uniform(0.1, 1, len(y))
    table = pd.DataFrame({"participant_id": m["participant_id"], "x1": x1, "x2": x2})
    for i in range(3):
        table[f"noise{i}"] = rng.normal(size=len(y))
    table.to_csv(tmp_path / "xor.csv", index=False)
    options = CVOptions(folds=5, inner_folds=3, n_boot=200, progress=False, save_models=False)
    lr = run_regional(cache, tmp_path / "lr", options, models=["lr"], table=tmp_path / "xor.csv")["lr"]
    options.grid = ("C=1,10", "gamma=0.3,1,3")
    svm = run_regional(cache, tmp_path / "svm", options, models=["svm"], table=tmp_path / "xor.csv")["svm"]
    assert _bal(lr) <= 0.65
    assert _bal(svm) >= 0.8
    assert svm["pooled"]["auc"]["value"] >= 0.85
    with pytest.raises(NeuroCNNError, match="LogisticRegression has no parameter 'kernel'"):
        run_regional(cache, tmp_path / "both", options, models=["svm", "lr"], table=tmp_path / "xor.csv")
    assert not (tmp_path / "both").exists()  # refused before any model ran
