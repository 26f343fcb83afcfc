"""How models meet the trainer: multimodal branches, slice-wise 2D models, class weights, loggers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurocnn.data.cache import open_cache
from neurocnn.evaluation.inference import predict_proba
from neurocnn.models import MultiBranch
from neurocnn.training import parse_config, run_cv
from neurocnn.training.module import Classifier, build_network, class_weights
from training_fixtures import tiny_config, write_cache


@pytest.fixture(autouse=True)
def _quiet():
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def test_balanced_class_weights_average_one():
    y = np.array([0, 0, 0, 1])
    w = class_weights(y, 3)
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 0.0]))
    assert float(w[torch.as_tensor(y)].mean()) == pytest.approx(1.0)


def test_multimodal_cohort_feeds_one_branch_per_modality(tmp_path):
    cache = write_cache(tmp_path / "cache", 16, modalities=("gm", "wm"), effect=3.0)
    cfg = parse_config(
        tiny_config(
            cache,
            splits={"scheme": "holdout", "fractions": [0.6, 0.2, 0.2]},
            train={"max_epochs": 1, "batch_size": 4},
            logging={"tensorboard": True, "mlflow": f"file:{tmp_path / 'mlruns'}"},
        )
    )
    result = run_cv(cfg, tmp_path / "run", progress=False)
    assert result.trained == ["r0_f0"] and not result.failed
    resolved = open_cache(cache)
    run_cfg = parse_config(__import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert run_cfg.model.modalities == "branches"
    net = build_network(run_cfg, resolved.shape, 2)
    assert isinstance(net, MultiBranch) and net.modalities == 2
    assert list((tmp_path / "run" / "tensorboard" / "r0_f0").glob("events.out.tfevents*"))
    assert list((tmp_path / "mlruns").rglob("metrics/val_loss"))
    channels = parse_config(
        {**cfg.model_dump(), "model": {**cfg.model.model_dump(), "modalities": "channels"}}
    )
    assert build_network(channels, resolved.shape, 2).in_channels == 2


def test_slice_models_train_on_slices_and_vote_per_subject(tmp_path):
    cache = open_cache(write_cache(tmp_path / "cache", 4, effect=3.0))
    cfg = parse_config(tiny_config(cache.path, model={"name": "resnet34_2d"}))
    net = build_network(cfg, cache.shape, 2)
    module = Classifier(net, cfg, weights=None)
    module.log = lambda *a, **k: None  # outside a Trainer
    x = torch.from_numpy(np.array(cache.array()[:4]))
    y = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    loss = module.training_step((x, y, torch.arange(4)), 0)
    net.train()
    torch.manual_seed(0)
    from neurocnn.training.sampling import sample_seed

    torch.manual_seed(sample_seed(0, 0, 0, 0, 0xD0))
    logits = net.slice_logits(x)  # (B, S, K)
    expected = F.cross_entropy(logits.reshape(-1, 2), y.repeat_interleave(logits.shape[1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    net.eval()
    probs, preds = predict_proba(net, cache, np.arange(4))
    vote = net.vote(x)
    assert np.allclose(probs, vote.probability.numpy(), atol=1e-6)
    assert preds.tolist() == vote.prediction.tolist()


def test_slice_models_are_validated_on_their_vote(tmp_path):
    """Checkpoints are chosen on validation balanced accuracy: for a slice model that must be the
    decision it makes at test time (the vote over slices), not the arg-max of its mean slice logits."""
    cache = open_cache(write_cache(tmp_path / "cache", 4, effect=3.0))
    cfg = parse_config(tiny_config(cache.path, model={"name": "resnet34_2d"}))
    net = build_network(cfg, cache.shape, 2).eval()
    x = torch.from_numpy(np.array(cache.array()[:2]))
    s = net.slice_logits(x).shape[1]
    # subject 0: most slices weakly say class 1, two say class 0 strongly; subject 1 the reverse
    fixed = torch.zeros(2, s, 2)
    fixed[0, :, 1], fixed[0, :2] = 0.2, torch.tensor([9.0, 0.0])
    fixed[1, :, 0], fixed[1, :2] = 0.2, torch.tensor([0.0, 9.0])
    net.slice_logits = lambda _x: fixed  # type: ignore[method-assign]
    assert net(x).argmax(1).tolist() == [0, 1] and net.vote(x).prediction.tolist() == [1, 0]
    module = Classifier(net, cfg, weights=None)
    logged: dict[str, float] = {}
    module.log_dict = lambda values, **k: logged.update({n: float(v) for n, v in values.items()})
    module._log_epoch = lambda: None  # outside a Trainer
    module._trainer = type(
        "T", (), {"state": type("S", (), {"fn": "validate"})(), "sanity_checking": False}
    )()
    module.validation_step((x, torch.tensor([1, 0]), torch.arange(2)), 0)
    module.on_validation_epoch_end()
    assert logged["val_balanced_accuracy"] == 1.0 and logged["val_accuracy"] == 1.0
