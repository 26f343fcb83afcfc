"""ResNet for 2 or 3 spatial dimensions (S4's 3D-ResNet comparison and 2D slice networks).

He K, Zhang X, Ren S, Sun J. "Deep residual learning for image recognition." CVPR 2016; the 3D
variants as in Hara K, Kataoka H, Satoh Y. "Can spatiotemporal 3D CNNs retrace the history of 2D
CNNs and ImageNet?" CVPR 2018 (3D-ResNets-PyTorch), used by S4 and by Med3D (Chen et al. 2019).

- stem: Conv 7 (stride (1, 2, 2) in 3D as S4's DenseNet, 2 in 2D), pad 3, no bias → BN → ReLU →
  MaxPool 3/2 pad 1;
- stages of 64, 128, 256, 512 planes (strides 1, 2, 2, 2), basic blocks (ResNet-18/34) or
  bottlenecks ×4 expansion (ResNet-50 and deeper), projection shortcuts (1× conv + BN) where the
  shape changes;
- head: global average pool → Linear.

| variant | blocks        | block      |
|---------|---------------|------------|
| 34      | 3, 4, 6, 3    | basic      |
| 50      | 3, 4, 6, 3    | bottleneck |
| 101     | 3, 4, 23, 3   | bottleneck |
| 152     | 3, 8, 36, 3   | bottleneck |
| 200     | 3, 24, 36, 3  | bottleneck |

Module names follow torchvision's ResNet (except that every ReLU is its own module, used once,
which changes no state-dict key), so its 2D state dicts load into the 2D version.
Initialisation: Kaiming-normal convolutions, unit/zero BatchNorm, zero linear bias.
``memory_efficient=True`` checkpoints every residual block during training. Weights and activations
are channels-last by default, with 1× convolutions as matrix products and BN-ReLU pairs fused when
nothing observes them (`fused`), as for DenseNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neurocnn.models.blocks import (
    NeuroNet,
    adaptive_avgpool_cls,
    as_tuple,
    bn_cls,
    chain,
    checkpointed,
    conv_cls,
    kaiming_init,
    maxpool_cls,
)
from neurocnn.models.fused import bn_relu, pointwise_conv
from neurocnn.models.registry import register

PAPER = "S4; Hara et al. 2018"
DEFAULT_SHAPE = (121, 145, 121)
LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


class BasicBlock(nn.Module):
    """3 → 3 convolutions with a residual sum (ResNet-18/34)."""

    expansion = 1

    def __init__(self, dims: int, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        conv, bn = conv_cls(dims), bn_cls(dims)
        self.conv1 = conv(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.downsample = _shortcut(dims, inplanes, planes * self.expansion, stride)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(bn_relu(self.bn1, self.relu1, self.conv1(x))))
        return self.relu2(out + self.downsample(x))


class Bottleneck(nn.Module):
    """1 → 3 (strided) → 1 convolutions, 4× expansion, residual sum (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, dims: int, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        conv, bn = conv_cls(dims), bn_cls(dims)
        self.conv1 = pointwise_conv(dims, inplanes, planes)
        self.bn1 = bn(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3 = pointwise_conv(dims, planes, planes * self.expansion)
        self.bn3 = bn(planes * self.expansion)
        self.downsample = _shortcut(dims, inplanes, planes * self.expansion, stride)
        self.relu3 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = bn_relu(self.bn1, self.relu1, self.conv1(x))
        out = bn_relu(self.bn2, self.relu2, self.conv2(out))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.downsample(x))


def _shortcut(dims: int, inplanes: int, outplanes: int, stride: int) -> nn.Module:
    if stride == 1 and inplanes == outplanes:
        return nn.Identity()
    conv = (
        pointwise_conv(dims, inplanes, outplanes)
        if stride == 1
        else conv_cls(dims)(inplanes, outplanes, 1, stride=stride, bias=False)
    )
    return nn.Sequential(conv, bn_cls(dims)(outplanes))


class Stage(nn.Sequential):
    """Residual blocks of one resolution; checkpointed one by one when memory-efficient."""

    memory_efficient: bool = False

    def forward(self, x: Tensor) -> Tensor:
        for block in self:
            if self.memory_efficient and self.training and torch.is_grad_enabled():
                x = checkpointed(block, block, x)
            else:
                x = block(x)
        return x


class ResNet(NeuroNet):
    """ResNet for 2D images or 3D volumes (see the module docstring for the variants)."""

    head_name = "fc"

    def __init__(
        self,
        *,
        name: str,
        dims: int,
        block: str,
        layers: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: Sequence[int] = DEFAULT_SHAPE,
        stem_stride: int | Sequence[int] | None = None,
        memory_efficient: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        default_stride = (1, 2, 2) if dims == 3 else (2, 2)
        stride = as_tuple(stem_stride if stem_stride is not None else default_stride, dims)

        def axis_fn(axis: int, n: int) -> int:
            return chain(n, [(7, stride[axis], 3), (3, 2, 1)] + [(3, 2, 1)] * 3)

        self._set_shape_facts(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=axis_fn,
            fixed_shape=False,
        )
        block_cls = Bottleneck if block == "bottleneck" else BasicBlock
        self.conv1 = conv_cls(dims)(in_channels, 64, 7, stride=stride, padding=3, bias=False)
        self.bn1 = bn_cls(dims)(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = maxpool_cls(dims)(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stage = Stage()
            stage.memory_efficient = memory_efficient
            for j in range(count):
                stage.add_module(str(j), block_cls(dims, inplanes, planes, 2 if (i > 0 and j == 0) else 1))
                inplanes = planes * block_cls.expansion
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = adaptive_avgpool_cls(dims)(1)
        self.fc = nn.Linear(inplanes, num_classes)
        self.feature_dim = inplanes
        self.gradcam_layer = "layer4"
        kaiming_init(self)
        self._set_channels_last(channels_last)

    def init_new_layers(self, module: nn.Module) -> None:
        kaiming_init(module)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self._in_layout(x)
        x = self.maxpool(bn_relu(self.bn1, self.relu, self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet(
    depth: int,
    *,
    dims: int = 3,
    in_channels: int = 1,
    num_classes: int = 2,
    input_shape: Sequence[int] = DEFAULT_SHAPE,
    **options: object,
) -> ResNet:
    """ResNet-`depth` (18, 34, 50, 101, 152 or 200) in `dims` spatial dimensions."""
    block, layers = LAYERS[depth]
    suffix = "" if dims == 3 else "_2d"
    return ResNet(
        name=f"resnet{depth}{suffix}",
        dims=dims,
        block=block,
        layers=layers,
        in_channels=in_channels,
        num_classes=num_classes,
        input_shape=input_shape,
        **options,  # type: ignore[arg-type]
    )


def _register_3d(depth: int) -> None:
    def builder(
        *,
        in_channels: int,
        num_classes: int,
        input_shape: tuple[int, ...],
        memory_efficient: bool = False,
        stem_stride: int | Sequence[int] = (1, 2, 2),
        channels_last: bool = True,
    ) -> ResNet:
        return resnet(
            depth,
            dims=3,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            memory_efficient=memory_efficient,
            stem_stride=stem_stride,
            channels_last=channels_last,
        )

    builder.__doc__ = f"3D ResNet-{depth} (S4 comparison)."
    register(
        f"resnet{depth}",
        family="resnet3d",
        paper=PAPER,
        default_input_shape=DEFAULT_SHAPE,
        spatial_dims=3,
        description=f"3D ResNet-{depth}, bottleneck blocks {'-'.join(map(str, LAYERS[depth][1]))}",
    )(builder)


for _depth in (101, 152, 200):
    _register_3d(_depth)
