"""2D networks that S4 compared slice by slice: AlexNet and VGG19, plus `backbone_2d`, the factory of
every 2D network in the zoo (AlexNet, VGG19, ResNet-18…200, DenseNet-121…264 in 2D).

Krizhevsky A, Sutskever I, Hinton GE. "ImageNet classification with deep convolutional neural
networks." NeurIPS 2012 (the single-GPU variant popularised by torchvision).
Simonyan K, Zisserman A. "Very deep convolutional networks for large-scale image recognition."
ICLR 2015 (configuration E, 19 weight layers).

Our own code, no torchvision; module names match torchvision's so that its 2D state dicts (e.g.
ImageNet weights saved to a file) load unchanged. Both end in an adaptive average pool (6×6 and
7×7), so the classifier size does not depend on the slice size. Grad-CAM target: the last ReLU of
the convolutional part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.models.blocks import NeuroNet, chain
from neurocnn.models.densenet import BLOCKS as DENSENET_BLOCKS
from neurocnn.models.densenet import densenet
from neurocnn.models.resnet import LAYERS as RESNET_LAYERS
from neurocnn.models.resnet import resnet

VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


class AlexNet(NeuroNet):
    """AlexNet: 5 convolutions (64, 192, 384, 256, 256), 3 max-pools, 3 fully connected layers.

    Initialisation: PyTorch's defaults (as torchvision).
    """

    head_name = "classifier"

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_shape: Sequence[int] = (224, 224),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        steps = [(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1)]
        steps.append((3, 2, 0))
        self._set_shape_facts(
            name="alexnet_2d",
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, steps),
            fixed_shape=False,
        )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.feature_dim = 256 * 6 * 6
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(self.feature_dim, 4096),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=False),
            nn.Linear(4096, num_classes),
        )
        self.gradcam_layer = "features.11"

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


class VGG(NeuroNet):
    """VGG: stacks of 3×3 convolutions and 2×2 max-pools, then 3 fully connected layers.

    Initialisation as torchvision: Kaiming-normal (fan-out) convolutions, N(0, 0.01) linear
    weights, zero biases.
    """

    head_name = "classifier"

    def __init__(
        self,
        *,
        name: str = "vgg19_2d",
        config: Sequence[int | str] = VGG19_CONFIG,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_shape: Sequence[int] = (224, 224),
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        pools = sum(1 for c in config if c == "M")
        self._set_shape_facts(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, [(2, 2, 0)] * pools),
            fixed_shape=False,
        )
        layers: list[nn.Module] = []
        channels = in_channels
        for c in config:
            if c == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, int(c), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(c)))
            layers.append(nn.ReLU(inplace=False))
            channels = int(c)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.feature_dim = channels * 7 * 7
        self.classifier = nn.Sequential(
            nn.Linear(self.feature_dim, 4096),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self.gradcam_layer = f"features.{len(layers) - 2}"  # the last ReLU, before the last pool
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


BACKBONES_2D: tuple[str, ...] = (
    "alexnet",
    "vgg19",
    *(f"resnet{d}" for d in RESNET_LAYERS),
    *(f"densenet{d}" for d in DENSENET_BLOCKS),
)


def backbone_2d(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    **options: Any,
) -> NeuroNet:
    """Build the 2D network `name` (one of `BACKBONES_2D`) for images of `input_shape`.

    Options: ``batch_norm`` for VGG19; ``memory_efficient`` and ``stem_stride`` for ResNet and
    DenseNet.
    """
    shape = tuple(input_shape)
    if name == "alexnet":
        return AlexNet(in_channels=in_channels, num_classes=num_classes, input_shape=shape, **options)
    if name == "vgg19":
        return VGG(in_channels=in_channels, num_classes=num_classes, input_shape=shape, **options)
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in RESNET_LAYERS:
        return resnet(
            int(name[6:]),
            dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=shape,
            **options,
        )
    if name.startswith("densenet") and name[8:].isdigit() and int(name[8:]) in DENSENET_BLOCKS:
        return densenet(
            int(name[8:]),
            dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=shape,
            **options,
        )
    raise NeuroCNNError(f"unknown 2D network {name!r}; choose one of {', '.join(BACKBONES_2D)}")
