"""The nested hyper-parameter search refuses what it cannot do correctly, before any training:
several DDP processes, and inner splits that reach outside their outer training fold."""

from __future__ import annotations

import pytest

from neurocnn.data import splits as S
from neurocnn.data.cache import open_cache
from neurocnn.errors import NeuroCNNError
from neurocnn.training import parse_config, run_cv
from neurocnn.training.crossval import make_splits
from training_fixtures import tiny_config, write_cache


def search_config(cache, **sections):
    return parse_config(
        tiny_config(cache, splits={"folds": 2, "nested": 2}, search={"optim.lr": [1e-2, 1e-3]}, **sections)
    )


@pytest.mark.parametrize(
    "train",
    [
        {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp"},
    ],
)
def test_a_search_under_several_processes_is_refused_before_training(tmp_path, train):
    cache = write_cache(tmp_path / "cache", 16)
    out = tmp_path / "run"
    with pytest.raises(NeuroCNNError, match="search.*one process.*2 processes"):
        run_cv(search_config(cache, train=train), out, progress=False)
    assert not out.exists()


def test_a_search_under_torchrun_is_refused(tmp_path, monkeypatch):
    cache = write_cache(tmp_path / "cache", 16)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(NeuroCNNError, match="4 processes"):
        run_cv(search_config(cache), tmp_path / "run", progress=False)


def test_a_search_on_inner_splits_outside_the_outer_training_fold_is_refused(tmp_path):
    cache = write_cache(tmp_path / "cache", 24)
    manifest = open_cache(cache).manifest
    table = S.kfold(manifest, 2, nested=2, val_fraction=0.2)
    outer_train = table[(table.inner == -1) & (table.fold == 1) & (table.role == "train")]
    path = S.save_splits(table.drop(outer_train.index[:3]), tmp_path / "splits.tsv")
    config = search_config(cache).with_overrides({"splits.table": str(path)})
    with pytest.raises(NeuroCNNError, match="r0_f1: inner split .* outside the outer training fold"):
        make_splits(config, manifest)
    # with --subset the inner splits follow the kept training subjects
    subset = search_config(cache).with_overrides({"splits.subset": 0.5})
    table = make_splits(subset, manifest)
    assert (table["inner"] >= 0).any()
