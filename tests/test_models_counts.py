"""Parameter counts and shapes against the oracles in SPECS.md, MONAI and torchvision.

Big models are built on the meta device: no memory is allocated and nothing is computed.
"""

from __future__ import annotations

import pytest
import torch

from neurocnn import models
from neurocnn.models.classic2d import backbone_2d

SPECS_COUNTS = {
    "sequential_1": 39_322_882,
    "sequential_2": 1_208_610,
    "sequential_3": 89_410,
    "inception_1": 648_418,
    "inception_2": 689_698,
    "inception_resnet_1": 652_642,
    "inception_resnet_2": 693_922,
    "mrinet": 322_818,
    "densenet121": 11_244_674,
    "densenet169": 18_546_050,
    "densenet201": 25_334_658,
    "densenet264": 40_251_266,
}


@pytest.mark.parametrize(("name", "expected"), SPECS_COUNTS.items())
def test_parameter_count_matches_specs(name: str, expected: int) -> None:
    assert models.count_parameters(name) == expected


def test_pif_cnn_in_the_authors_ukb_configuration_has_their_count() -> None:
    # UKB ModelAPIF: ELU, no BN, PIF 64→6 on 15×19×15 with 5³ patches, overlap, not reassembled,
    # FC100, FC1 (SPECS: 1,348,665). Our half-patch overlap has as many patches as theirs.
    count = models.count_parameters(
        "pif_cnn",
        num_classes=1,
        activation="elu",
        batch_norm=False,
        overlap=True,
        reassemble=False,
    )
    assert count == 1_348_665


def test_our_densenet121_has_monai_densenet121_count() -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    with torch.device("meta"):
        theirs = monai_nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    assert models.count_parameters(theirs) == models.count_parameters("densenet121") == 11_244_674


# Counts of torchvision's ImageNet models (3 channels, 1000 classes), from its documentation.
TORCHVISION_COUNTS = {
    "alexnet": 61_100_840,
    "vgg19": 143_667_240,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}


@pytest.mark.parametrize(("name", "expected"), TORCHVISION_COUNTS.items())
def test_2d_networks_match_torchvision_counts(name: str, expected: int) -> None:
    with torch.device("meta"):
        net = backbone_2d(name, in_channels=3, num_classes=1000, input_shape=(224, 224))
    assert models.count_parameters(net) == expected


def test_densenet121_stage_shapes_at_the_s4_input() -> None:
    with torch.device("meta"):
        net = models.build("densenet121")
        shapes: dict[str, tuple[int, ...]] = {}
        for name in ("pool0", "transition1", "transition2", "transition3", "relu5"):
            net.features.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
            )
        logits = net(torch.empty(1, 1, 121, 145, 121))
    assert shapes == {
        "pool0": (1, 64, 61, 37, 31),
        "transition1": (1, 128, 30, 18, 15),
        "transition2": (1, 256, 15, 9, 7),
        "transition3": (1, 512, 7, 4, 3),
        "relu5": (1, 1024, 7, 4, 3),
    }
    assert tuple(logits.shape) == (1, 2)


@pytest.mark.parametrize(
    ("name", "channels"),
    [("densenet121", 1024), ("densenet169", 1664), ("densenet201", 1920), ("densenet264", 2688)],
)
def test_densenet_final_channels(name: str, channels: int) -> None:
    with torch.device("meta"):
        assert models.build(name).feature_dim == channels


def test_mrinet_block_shapes() -> None:
    with torch.device("meta"):
        net = models.build("mrinet")
        x = torch.empty(1, 1, 58, 70, 58)
        shapes = []
        for block in net.features:
            x = block(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 28, 34, 28), (64, 13, 16, 13), (128, 5, 7, 5)]
    assert net.feature_dim == 22_400


def test_hu2020_conv_pool_shapes() -> None:
    with torch.device("meta"):
        net = models.build("sequential_3")
        out = net.features(torch.empty(1, 1, 61, 73, 61))
    assert tuple(out.shape) == (1, 32, 2, 2, 2)


def test_multimodal_count_is_branches_plus_fusion_head() -> None:
    with torch.device("meta"):
        single = models.build("sequential_3")
    branch = models.count_parameters(single.features)
    fused = models.count_parameters("sequential_3", modalities=3)
    assert fused == 3 * branch + (3 * single.feature_dim * 128 + 128) + (128 * 2 + 2)


@pytest.mark.parametrize("name", ["sequential_2", "inception_resnet_2"])
def test_hu2020_batch_norm_option(name: str) -> None:
    """BatchNorm after every convolution (not the paper's default): conv biases go, γ/β come."""
    with torch.device("meta"):
        plain = models.build(name)
        normed = models.build(name, batch_norm=True)
    convs = [m for m in plain.modules() if isinstance(m, torch.nn.Conv3d)]
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(norms) == len(convs) > 0
    assert all(m.bias is None for m in normed.modules() if isinstance(m, torch.nn.Conv3d))
    # each conv loses its bias (out channels) and its BatchNorm adds γ and β (2 × out channels)
    assert models.count_parameters(normed) == models.count_parameters(plain) + sum(
        c.out_channels for c in convs
    )
    net = models.build(name, batch_norm=True, input_shape=(27, 27, 27))
    net(torch.randn(2, 1, 27, 27, 27)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
