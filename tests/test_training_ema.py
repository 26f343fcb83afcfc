"""The weights' exponential moving average (`train.ema`): validation, checkpoints and test
predictions use the average, and a resumed run continues the average where it was."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from neurocnn.data.cache import open_cache
from neurocnn.data.splits import kfold, split_indices
from neurocnn.evaluation.inference import predict_proba
from neurocnn.training import parse_config
from neurocnn.training.fold import FoldPlan, fit_fold
from neurocnn.training.module import build_network, class_weights
from neurocnn.training.transfer import load_state
from training_fixtures import tiny_config, write_cache


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    path = write_cache(tmp_path_factory.mktemp("ema") / "cache", 30, effect=3.0)
    cache = open_cache(path)
    ids = split_indices(kfold(cache.manifest, 3, val_fraction=0.2), 0, 0)
    return path, cache, FoldPlan(0, 0, ids["train"], ids["val"], ids["test"])


def _config(path, epochs: int, ema: float | None = 0.6):
    train = {"max_epochs": epochs, "batch_size": 4, "early_stopping": None, "ema": ema, "select": "loss"}
    return parse_config(tiny_config(path, train=train))


def _val_loss(state, config, cache, plan) -> float:
    net = build_network(config, cache.shape, len(cache.classes))
    net.load_state_dict(state)
    probs, _ = predict_proba(net, cache, plan.val)
    y = torch.as_tensor(cache.labels()[plan.val])
    # the module's loss: balanced class weights of the training fold, mean over subjects
    weights = class_weights(cache.labels()[plan.train], len(cache.classes))
    return float(F.nll_loss(torch.log(torch.as_tensor(probs)), y, weight=weights, reduction="sum") / len(y))


def test_validation_checkpoint_and_predictions_use_the_average(cohort, tmp_path):
    path, cache, plan = cohort
    config = _config(path, 3)
    result = fit_fold(config, cache, plan, tmp_path / "fold", progress=False)
    ckpt = torch.load(tmp_path / "fold/best.ckpt", weights_only=True)
    average = load_state(tmp_path / "fold/best.ckpt")
    current = {k.removeprefix("net."): v for k, v in ckpt["current_model_state"].items()}
    assert any(not torch.equal(average[k], current[k]) for k in average)
    # the validation loss in the history is that of the averaged weights, not the raw ones
    logged = result["best_validation"]["val_loss"]
    assert _val_loss(average, config, cache, plan) == pytest.approx(logged, rel=1e-4, abs=1e-5)
    assert _val_loss(current, config, cache, plan) != pytest.approx(logged, rel=1e-3)


def test_without_ema_the_checkpoint_holds_the_trained_weights(cohort, tmp_path):
    path, cache, plan = cohort
    result = fit_fold(_config(path, 2, ema=None), cache, plan, tmp_path / "fold", progress=False)
    ckpt = torch.load(tmp_path / "fold/best.ckpt", weights_only=True)
    assert "current_model_state" not in ckpt
    state = load_state(tmp_path / "fold/best.ckpt")
    assert _val_loss(state, _config(path, 2, None), cache, plan) == pytest.approx(
        result["best_validation"]["val_loss"], rel=1e-4, abs=1e-5
    )


def test_resumed_run_continues_the_average(cohort, tmp_path):
    path, cache, plan = cohort
    fit_fold(_config(path, 4), cache, plan, tmp_path / "straight", progress=False)
    fit_fold(_config(path, 2), cache, plan, tmp_path / "resumed", progress=False)
    fit_fold(_config(path, 4), cache, plan, tmp_path / "resumed", resume=True, progress=False)
    a = torch.load(tmp_path / "straight/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed/last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key in ("state_dict", "current_model_state"):
        assert all(torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-6) for k in a[key]), key
