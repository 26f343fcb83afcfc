"""2D networks on 3D volumes (slice voting, channel dimension), deep features and the CLI verb."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from neurocnn import models
from neurocnn.commands import models as models_command
from neurocnn.errors import NeuroCNNError
from neurocnn.models import extract_deep_features
from neurocnn.models.classic2d import backbone_2d


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_are_taken_along_the_requested_axis(axis: int) -> None:
    shape = (32, 33, 34)
    net = models.build("resnet34_2d", input_shape=shape, slice_axis=axis).eval()
    x = torch.randn(2, 1, *shape)
    slices = net.slices(x)
    n = shape[axis]
    assert slices.shape[0] == 2 * n
    torch.testing.assert_close(slices[n + 3], x[1].select(1 + axis, 3))
    logits = net.slice_logits(x)
    assert logits.shape == (2, n, 2)
    torch.testing.assert_close(net(x), logits.mean(dim=1))
    # chunked slices give the same logits
    net.slice_batch = 5
    torch.testing.assert_close(net.slice_logits(x), logits, rtol=1e-4, atol=1e-5)


def test_majority_vote_and_mean_probability() -> None:
    net = models.build("resnet34_2d", input_shape=(16, 16, 4)).eval()
    # subject 0: 3 of 4 slices say class 1; subjects 1 and 2: 2-2 ties, class 0 or class 1 the
    # more confident: S4 calls a subject positive only when more than half of its slices are
    fixed = torch.tensor(
        [
            [[0.0, 1.0], [0.0, 2.0], [0.0, 1.0], [3.0, 0.0]],
            [[5.0, 0.0], [4.0, 0.0], [0.0, 0.5], [0.0, 0.5]],
            [[0.5, 0.0], [0.5, 0.0], [0.0, 5.0], [0.0, 4.0]],
        ]
    )
    net.slice_logits = lambda _x: fixed  # type: ignore[method-assign]
    vote = net.vote(torch.zeros(3, 1, 16, 16, 4))
    assert vote.prediction.tolist() == [1, 0, 0]
    assert vote.votes.tolist() == [[1, 3], [2, 2], [2, 2]]
    torch.testing.assert_close(vote.probability, torch.softmax(fixed, -1).mean(1))


def test_channel_dimension_model_uses_slices_as_channels() -> None:
    net = models.build("channel_dimension", input_shape=(29, 30, 5)).eval()
    assert net.net.in_channels == 5
    x = torch.randn(2, 1, 29, 30, 5)
    image = net.to_image(x)
    assert image.shape == (2, 5, 29, 30)
    torch.testing.assert_close(image[:, 2], x[:, 0, :, :, 2])
    assert net(x).shape == (2, 2)
    with pytest.raises(NeuroCNNError, match="built for 5 slices"):
        net(torch.randn(2, 1, 29, 30, 6))
    assert models.build("channel_dimension", input_shape=(20, 20, 5), backbone="resnet50")


def test_2d_state_dicts_use_torchvision_names() -> None:
    with torch.device("meta"):
        keys = set(backbone_2d("vgg19", in_channels=3, num_classes=10, input_shape=(32, 32))
                   .state_dict())  # fmt: skip
        dense = set(backbone_2d("densenet121", in_channels=3, num_classes=10, input_shape=(32, 32))
                    .state_dict())  # fmt: skip
    assert {"features.0.weight", "features.34.weight", "classifier.6.weight"} <= keys
    assert {"features.denseblock1.denselayer1.conv1.weight", "classifier.bias"} <= dense


def _save_weights(path: Path, backbone: str, channels: int = 3) -> Path:
    torch.manual_seed(0)
    net = backbone_2d(backbone, in_channels=channels, num_classes=1000, input_shape=(64, 64))
    torch.save(net.state_dict(), path)
    return path


def test_deep_features_from_a_weights_file(tmp_path: Path) -> None:
    weights = _save_weights(tmp_path / "resnet34.pt", "resnet34")
    volumes = np.random.default_rng(0).normal(size=(3, 12, 10, 4)).astype(np.float32)
    feats = extract_deep_features(volumes, weights=weights, backbone="resnet34", batch_size=3)
    assert feats.shape == (3, 512)
    assert np.isfinite(feats).all()
    both = extract_deep_features(volumes, weights=weights, backbone="resnet34", pool="meanmax")
    assert both.shape == (3, 1024)
    np.testing.assert_allclose(both[:, :512], feats, rtol=1e-4, atol=1e-5)
    # pooling over slices: a volume repeated along the slice axis keeps its mean feature
    stacked = np.concatenate([volumes, volumes], axis=3)
    again = extract_deep_features(stacked, weights=weights, backbone="resnet34")
    np.testing.assert_allclose(again, feats, rtol=1e-4, atol=1e-5)


def test_deep_features_refuse_to_run_without_weights(tmp_path: Path) -> None:
    volumes = np.zeros((1, 8, 8, 2), dtype=np.float32)
    with pytest.raises(NeuroCNNError, match="need pre-trained weights"):
        extract_deep_features(volumes, weights=None, backbone="resnet34")
    with pytest.raises(NeuroCNNError, match="does not exist"):
        extract_deep_features(volumes, weights=tmp_path / "none.pt", backbone="resnet34")
    wrong = _save_weights(tmp_path / "densenet.pt", "densenet121")
    with pytest.raises(NeuroCNNError, match="does not fit resnet34"):
        extract_deep_features(volumes, weights=wrong, backbone="resnet34")


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    models_command.register(sub)
    args = parser.parse_args(["models", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_models_command_lists_parameters_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_cli(["--no-timing", "--family", "xin2019"], capsys)
    assert "mrinet" in out and "322,818" in out and "1x2" in out


def test_models_command_is_fast_by_default_and_shows_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    """It timed every model by default (about 3 minutes without a word); `cv --help` sends users here
    for the model options."""
    import time

    start = time.perf_counter()
    out = _run_cli(["--family", "xin2019"], capsys)
    assert time.perf_counter() - start < 5
    assert "fwd s/vol" not in out and "--timing" in out
    assert "mrinet: widths=[32, 64, 128], dropout=0.5, channels_last=true" in out
    out = _run_cli(["--family", "slices2d"], capsys)
    assert "vgg19_2d: slice_axis=2, slice_batch=null, memory_efficient=false, batch_norm" in out


def test_models_command_times_and_reports_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--input-shape", "24x24x24", "--name", "mrinet", "--name", "pif_cnn", "--threads", "1"]
    out = _run_cli([*argv, "--timing"], capsys)
    assert "fwd s/vol" in out
    assert "278,274" in out  # mrinet rebuilt for 24x24x24
    assert "too small: needs ≥53x53x53" in out
