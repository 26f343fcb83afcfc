"""A tiny run folder to interpret (shared by the interpret test modules)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from training_fixtures import write_cache

SHAPE = (20, 22, 20)
MODEL = {"name": "mrinet", "options": {"widths": [4, 8], "dropout": 0.0}}


def build_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-fold run of a tiny MriNet (trained here in a few plain steps) and a cohort record whose
    planted region is the corner block that carries the class effect."""
    from neurocnn.data import splits as S
    from neurocnn.data.cache import open_cache
    from neurocnn.training.config import parse_config
    from neurocnn.training.module import build_network

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("interpret")
    cache_path = write_cache(root / "cache", 24, shape=SHAPE, effect=2.0, noise=0.5)
    cache = open_cache(cache_path)
    config = parse_config({"cache": str(cache_path), "model": MODEL, "splits": {"folds": 2}})
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config.to_yaml())
    table = S.kfold(cache.manifest, 2, seed=0, val_fraction=0.0)
    S.save_splits(table, run / "splits.tsv")
    x_all = torch.from_numpy(np.array(cache.array()))
    y_all = torch.from_numpy(np.array(cache.labels()))
    for fold in (0, 1):
        torch.manual_seed(fold)
        net = build_network(config, cache.shape, 2)
        train = torch.as_tensor(np.array(S.split_indices(table, 0, fold)["train"]))
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(12):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(x_all[train]), y_all[train]).backward()
            optimiser.step()
        state = {f"net.{k}": v for k, v in net.state_dict().items()}
        (run / "folds" / f"r0_f{fold}").mkdir(parents=True)
        torch.save({"state_dict": state, "epoch": 1}, run / "folds" / f"r0_f{fold}" / "best.ckpt")
        (run / "folds" / f"r0_f{fold}" / "metrics.json").write_text("{}")  # marks a finished fold
    # a label map on the cache grid: 1 = the effect's corner block, 2 = the rest of the volume
    labels = np.full(SHAPE, 2, np.uint8)
    sx, sy, sz = (s // 3 for s in SHAPE)
    labels[1 : 1 + sx, 1 : 1 + sy, 1 : 1 + sz] = 1
    atlas = root / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, cache.affine), str(atlas))
    (root / "atlas.csv").write_text("index,name\n1,Corner\n2,Elsewhere\n")
    cohort = root / "cohort"
    cohort.mkdir()
    effect = {
        "name": "corner",
        "kind": "atlas",
        "atlas": str(atlas),
        "atlas_labels": str(root / "atlas.csv"),
        "regions": [{"label": 1, "name": "Corner"}],
    }
    (cohort / "cohort.json").write_text(json.dumps({"effects": [effect]}))
    torch.set_num_threads(threads)
    return run, root


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor operations: one thread avoids OpenMP hand-offs on a busy shared machine.
    (Autouse in every module that imports it.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny_run(tmp_path_factory)
