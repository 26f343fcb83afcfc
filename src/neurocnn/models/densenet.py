"""DenseNet for 2 or 3 spatial dimensions (S4: 3D-DenseNet for major depression).

Huang G, Liu Z, van der Maaten L, Weinberger KQ. "Densely connected convolutional networks."
CVPR 2017. The 3D version and its stem follow the S4 paper (3D-DenseNet with ADNI transfer, MDD vs
HC on SPM 1.5 mm grey-matter maps) and the widely used 3D-ResNets-PyTorch DenseNet:

- stem: Conv 7 (stride (1, 2, 2) in 3D, 2 in 2D), pad 3, no bias → BN → ReLU → MaxPool 3/2 pad 1;
- dense layer: BN → ReLU → Conv 1 (4k) → BN → ReLU → Conv 3 (k), growth k = 32;
- transition: BN → ReLU → Conv 1 (C/2) → AvgPool 2;
- head: BN → ReLU → global average pool → Linear.

| variant | blocks          | 3D params (1 in, 2 out) |
|---------|-----------------|-------------------------|
| 121     | 6, 12, 24, 16   | 11,244,674              |
| 169     | 6, 12, 32, 32   | 18,546,050              |
| 201     | 6, 12, 48, 32   | 25,334,658              |
| 264     | 6, 12, 64, 48   | 40,251,266              |

At 1×121×145×121 the stem gives 64×61×37×31 and the transitions 30×18×15, 15×9×7 and 7×4×3.
Module names follow torchvision's DenseNet, so its 2D state dicts load into the 2D version.
Initialisation: Kaiming-normal convolutions, unit/zero BatchNorm, zero linear bias.

``memory_efficient=True`` checkpoints every dense layer during training: only the layer inputs are
kept and the layer is recomputed in the backward pass (less memory for some speed; see
benchmarks/models.py), and the process's glibc allocator returns freed tensors at once
(`neurocnn.models.allocator`). It has no effect in eval mode, so interpretation hooks fire once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neurocnn.models.blocks import (
    NeuroNet,
    adaptive_avgpool_cls,
    as_tuple,
    avgpool_cls,
    bn_cls,
    chain,
    checkpointed,
    conv_cls,
    kaiming_init,
    keep_format,
    maxpool_cls,
)
from neurocnn.models.fused import avg_pool2_channels_last, bn_relu, has_hooks, pointwise_conv
from neurocnn.models.registry import register

PAPER = "S4; Huang et al. 2017"
DEFAULT_SHAPE = (121, 145, 121)
BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}


class DenseLayer(nn.Module):
    """BN → ReLU → Conv1 (bn_size·k) → BN → ReLU → Conv3 (k) on the concatenated inputs."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool,
    ) -> None:
        super().__init__()
        conv, bn = conv_cls(dims), bn_cls(dims)
        width = bn_size * growth_rate
        self.norm1 = bn(in_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = pointwise_conv(dims, in_channels, width)
        self.norm2 = bn(width)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = conv(width, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def _compute(self, *features: Tensor) -> Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        x = self.conv1(bn_relu(self.norm1, self.relu1, x))
        return self.drop(self.conv2(bn_relu(self.norm2, self.relu2, x)))

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            return checkpointed(self._compute, self, *features)
        return self._compute(*features)


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers; each sees the block input and every earlier layer's output."""

    def __init__(
        self,
        dims: int,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(
                dims,
                in_channels + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient,
            )

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """The block input followed by every layer's new feature maps."""
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return features

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.layer_outputs(x), 1)


class Transition(nn.Sequential):
    """BN → ReLU → Conv1 (halving channels) → AvgPool 2."""

    def __init__(self, dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__(
            OrderedDict(
                norm=bn_cls(dims)(in_channels),
                relu=nn.ReLU(inplace=False),
                conv=pointwise_conv(dims, in_channels, out_channels),
                pool=avgpool_cls(dims)(2, stride=2),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        y = bn_relu(self.norm, self.relu, x)
        if has_hooks(self.conv) or has_hooks(self.pool):
            y = self.pool(self.conv(y))
        else:
            # A 1× convolution and an average pool are both linear and act on different axes, so
            # they commute: pooling first runs the convolution on 2^dims times fewer voxels.
            y = self.conv(avg_pool2_channels_last(y) if self._pool_2x else keep_format(self.pool(y), y))
        # The average pool returns contiguous (N, C, D, H, W) tensors whatever its input; go back
        # to the input's layout, or every convolution of the next block converts on its own.
        return keep_format(y, x)

    @property
    def _pool_2x(self) -> bool:
        """Whether `pool` is still the plain 2× average pool that `avg_pool2_channels_last` is."""
        p = self.pool
        if type(p) not in (nn.AvgPool2d, nn.AvgPool3d):
            return False
        dims = 3 if isinstance(p, nn.AvgPool3d) else 2
        two, zero = (2, (2,) * dims), (0, (0,) * dims)
        return p.kernel_size in two and p.stride in two and p.padding in zero and not p.ceil_mode


class DenseNet(NeuroNet):
    """DenseNet-BC for 2D images or 3D volumes.

    Parameters
    ----------
    dims:
        2 or 3 spatial dimensions.
    block_config:
        Dense layers per block, e.g. (6, 12, 24, 16) for DenseNet-121.
    growth_rate, init_features, bn_size:
        k = 32, 64 stem filters and a 4k bottleneck, as in the paper.
    stem_stride:
        Stride of the 7-voxel stem convolution; (1, 2, 2) in 3D (S4), 2 in 2D.
    memory_efficient:
        Checkpoint the dense layers during training (see the module docstring).
    channels_last:
        Keep weights and activations channels-last (NDHWC/NHWC), the layout oneDNN's CPU
        convolutions run fastest in (see benchmarks/models.py). Results are the same either way.
    """

    head_name = "classifier"

    def __init__(
        self,
        *,
        name: str,
        dims: int,
        block_config: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: Sequence[int] = DEFAULT_SHAPE,
        growth_rate: int = 32,
        init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        stem_stride: int | Sequence[int] | None = None,
        memory_efficient: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        stride = as_tuple(stem_stride if stem_stride is not None else (1, 2, 2)[-dims:], dims)
        transitions = len(block_config) - 1

        def axis_fn(axis: int, n: int) -> int:
            steps = [(7, stride[axis], 3), (3, 2, 1)] + [(2, 2, 0)] * transitions
            return chain(n, steps)

        self._set_shape_facts(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=axis_fn,
            fixed_shape=False,
        )
        conv, bn = conv_cls(dims), bn_cls(dims)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=conv(in_channels, init_features, 7, stride=stride, padding=3, bias=False),
            norm0=bn(init_features),
            relu0=nn.ReLU(inplace=False),
            pool0=maxpool_cls(dims)(3, stride=2, padding=1),
        )
        channels = init_features
        for i, num_layers in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(
                dims, num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient
            )
            channels += num_layers * growth_rate
            if i < transitions:
                layers[f"transition{i + 1}"] = Transition(dims, channels, channels // 2)
                channels //= 2
        layers["norm5"] = bn(channels)
        layers["relu5"] = nn.ReLU(inplace=False)
        self.features = nn.Sequential(layers)
        self.pool = adaptive_avgpool_cls(dims)(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self.gradcam_layer = "features.relu5"
        kaiming_init(self)
        self.memory_efficient = memory_efficient
        self._set_channels_last(channels_last)

    def init_new_layers(self, module: nn.Module) -> None:
        kaiming_init(module)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self._in_layout(x)
        lean = self.memory_efficient and self.training and torch.is_grad_enabled()
        return torch.flatten(self.pool(self._features(x, lean)), 1)

    def _features(self, x: Tensor, lean: bool) -> Tensor:
        """`self.features` (the BN-ReLU pairs fused where unobserved, see `fused.bn_relu`).

        With `lean` (memory-efficient training) little more than the dense layers' outputs is kept
        for backward: besides the checkpointed dense layers, the stem's BN-ReLU-pool, each block's
        concatenation with the transition after it, and the final BN-ReLU are recomputed in the
        backward pass; only the stem convolution keeps its output (recomputing it costs the most).
        """
        f = self.features
        x = f.conv0(x)

        def stem_tail(t: Tensor) -> Tensor:
            return f.pool0(bn_relu(f.norm0, f.relu0, t))

        def head(*fs: Tensor) -> Tensor:
            return bn_relu(f.norm5, f.relu5, torch.cat(fs, 1) if len(fs) > 1 else fs[0])

        x = checkpointed(stem_tail, f.norm0, x) if lean else stem_tail(x)
        pending = [x]
        for module in list(f.children())[4:]:
            if isinstance(module, DenseBlock):
                pending = module.layer_outputs(pending[0])
            elif isinstance(module, Transition):

                def transition(*fs: Tensor, m: Transition = module) -> Tensor:
                    return m(torch.cat(fs, 1))

                x = checkpointed(transition, module, *pending) if lean else transition(*pending)
                pending = [x]
        return checkpointed(head, f.norm5, *pending) if lean else head(*pending)


def densenet(
    depth: int,
    *,
    dims: int = 3,
    in_channels: int = 1,
    num_classes: int = 2,
    input_shape: Sequence[int] = DEFAULT_SHAPE,
    **options: object,
) -> DenseNet:
    """DenseNet-`depth` (121, 169, 201 or 264) in `dims` spatial dimensions."""
    suffix = "" if dims == 3 else "_2d"
    return DenseNet(
        name=f"densenet{depth}{suffix}",
        dims=dims,
        block_config=BLOCKS[depth],
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
        growth_rate: int = 32,
        drop_rate: float = 0.0,
        channels_last: bool = True,
    ) -> DenseNet:
        return densenet(
            depth,
            dims=3,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            memory_efficient=memory_efficient,
            stem_stride=stem_stride,
            growth_rate=growth_rate,
            drop_rate=drop_rate,
            channels_last=channels_last,
        )

    builder.__doc__ = f"3D DenseNet-{depth} (S4)."
    register(
        f"densenet{depth}",
        family="densenet3d",
        paper=PAPER,
        default_input_shape=DEFAULT_SHAPE,
        spatial_dims=3,
        description=f"3D DenseNet-{depth}, blocks {'-'.join(map(str, BLOCKS[depth]))}",
    )(builder)


for _depth in BLOCKS:
    _register_3d(_depth)
