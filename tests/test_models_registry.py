"""The registry contract: names, infos, options, input checks and the multimodal wrapper."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neurocnn import models
from neurocnn.errors import NeuroCNNError


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_seed_network_is_registered() -> None:
    names = set(models.available())
    expected = {
        *(f"sequential_{i}" for i in (1, 2, 3)),
        "inception_1",
        "inception_2",
        "inception_resnet_1",
        "inception_resnet_2",
        "pif_cnn",
        "pif_baseline",
        "mrinet",
        *(f"densenet{d}" for d in (121, 169, 201, 264)),
        *(f"resnet{d}" for d in (101, 152, 200)),
        "alexnet_2d",
        "vgg19_2d",
        *(f"resnet{d}_2d" for d in (34, 50, 101, 152, 200)),
        *(f"densenet{d}_2d" for d in (121, 169, 201, 264)),
        "channel_dimension",
    }
    assert names == expected
    assert models.available("hu2020")[0] == "sequential_1"


def test_info_describes_a_model() -> None:
    info = models.info("mrinet")
    assert dataclasses.is_dataclass(info)
    assert (info.name, info.family, info.spatial_dims) == ("mrinet", "xin2019", 3)
    assert info.default_input_shape == (58, 70, 58)
    assert "Kan" in info.paper
    assert models.info("vgg19_2d").spatial_dims == 2
    assert models.info("densenet121").default_input_shape == (121, 145, 121)
    assert models.info("sequential_1").default_input_shape == (61, 73, 61)
    assert "memory_efficient" in models.info("densenet121").options
    assert "batch_norm" in models.info("vgg19_2d").options


def test_unknown_names_and_options_are_explained() -> None:
    with pytest.raises(NeuroCNNError, match="did you mean mrinet"):
        models.build("mrinett")
    with pytest.raises(NeuroCNNError, match="does not take option.*widht"):
        models.build("mrinet", widht=(1, 2, 3))
    with pytest.raises(NeuroCNNError, match="input_shape must be three"):
        models.build("mrinet", input_shape=(58, 70))
    with pytest.raises(NeuroCNNError, match="num_classes"):
        models.build("mrinet", num_classes=0)


def test_too_small_input_names_the_smallest_shape_that_works() -> None:
    with pytest.raises(NeuroCNNError, match=r"at least 22x22x22 .*input_shape=22x30x22"):
        models.build("mrinet", input_shape=(10, 30, 20))
    with pytest.raises(NeuroCNNError, match="at least 15x29x29"):
        models.build("densenet121", input_shape=(14, 40, 40))
    with pytest.raises(NeuroCNNError, match=r"63x63 slices at least.*input_shape=63x63x30"):
        models.build("alexnet_2d", input_shape=(30, 40, 30))
    models.build("mrinet", input_shape=(22, 22, 22))  # the smallest one does work


def test_forward_checks_the_input() -> None:
    net = models.build("mrinet", input_shape=(24, 24, 24))
    with pytest.raises(NeuroCNNError, match="built for input_shape 24x24x24"):
        net(torch.randn(1, 1, 26, 24, 24))
    with pytest.raises(NeuroCNNError, match=r"\(B, 1, \*, \*, \*\)"):
        net(torch.randn(1, 2, 24, 24, 24))
    dense = models.build("densenet121", input_shape=(15, 29, 29)).eval()
    assert dense(torch.randn(1, 1, 20, 33, 40)).shape == (1, 2)  # pooled: any larger input
    with pytest.raises(NeuroCNNError, match="at least 15x29x29"):
        dense(torch.randn(1, 1, 15, 28, 29))


def test_multimodal_model_takes_exactly_its_modalities() -> None:
    torch.manual_seed(0)
    net = models.build("sequential_2", modalities=3, input_shape=(9, 9, 9)).eval()
    gm, wm, fa = (torch.randn(2, 1, 9, 9, 9) for _ in range(3))
    separate = net(gm, wm, fa)
    stacked = net(torch.cat([gm, wm, fa], dim=1))
    assert separate.shape == (2, 2)
    torch.testing.assert_close(separate, stacked)
    with pytest.raises(NeuroCNNError, match="expects 3 inputs"):
        net(gm, wm)
    with pytest.raises(NeuroCNNError, match="one tensor with 2 channels"):
        net(torch.cat([gm, wm], dim=1))
    with pytest.raises(NeuroCNNError, match="expects 3 inputs"):
        net(gm, wm, fa, fa)
    # separate weights per branch, each branch reachable for Grad-CAM
    w0 = net.branches[0].features.conv_pool1.conv.weight
    w1 = net.branches[1].features.conv_pool1.conv.weight
    assert w0.data_ptr() != w1.data_ptr()
    for name in net.gradcam_layers:
        net.get_submodule(name)
    assert net.gradcam_layer == net.gradcam_layers[0]


def test_multimodal_head_takes_the_head_options_and_the_family_init() -> None:
    """S1's joint head: FC(hidden) with the given dropout, glorot-uniform weights and zero biases
    like every other layer of S1 (PyTorch's default would leave biases non-zero and weights within
    1/sqrt(fan_in), well inside glorot's range); a reset head is initialised the same way, and so is
    the new last layer of a transferred DenseNet (zero bias, as S4's family)."""
    torch.manual_seed(0)
    net = models.build("sequential_3", modalities=3, hidden=64, dropout=0.2, input_shape=(27, 27, 27))
    fc1, drop, fc2 = net.head[0], net.head[2], net.head[3]
    assert fc1.out_features == 64 and drop.p == 0.2
    for layer in (fc1, fc2):
        bound = (6 / (layer.in_features + layer.out_features)) ** 0.5
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    net.reset_head(3)
    new = net.head[3]
    assert new.out_features == 3 and net.num_classes == 3 and torch.all(new.bias == 0)
    assert new.weight.abs().max() > 0.9 * (6 / (64 + 3)) ** 0.5
    single = models.build("sequential_3", input_shape=(27, 27, 27))
    single.reset_head(4)
    assert torch.all(single.head.fc2.bias == 0)
    dense = models.build("densenet121", input_shape=(15, 29, 29))
    dense.reset_head(3)
    assert torch.all(dense.classifier.bias == 0)


def test_multimodal_with_several_channels_per_modality() -> None:
    net = models.build("mrinet", modalities=2, in_channels=2, input_shape=(22, 22, 22)).eval()
    assert net(torch.randn(1, 4, 22, 22, 22)).shape == (1, 2)
    assert net(torch.randn(1, 2, 22, 22, 22), torch.randn(1, 2, 22, 22, 22)).shape == (1, 2)


def test_slice_models_have_no_multimodal_version() -> None:
    with pytest.raises(NeuroCNNError, match="in_channels=2"):
        models.build("vgg19_2d", modalities=2)


def test_count_parameters_without_allocating() -> None:
    assert models.count_parameters("resnet200") > 100_000_000  # 3D ResNet-200, on meta
