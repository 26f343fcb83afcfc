"""3D CNNs of Hu et al. 2020 (S1): sequential, inception and inception-resnet models.

Hu M, Sim K, Zhou JH, Jiang X, Guan C. "Brain MRI-based 3D convolutional neural networks for
classification of schizophrenia and controls." Annu Int Conf IEEE EMBC 2020:1742-1745.

Input: one map per modality at 61×73×61 (SPM 3 mm MNI grid). All convolutions have 32 filters,
3×3×3, 'same' padding and ReLU; ``conv_pool`` is a convolution followed by max-pool 3, stride 3.

| model              | layers                                                               |
|--------------------|----------------------------------------------------------------------|
| sequential_n       | conv_pool ×n → Flatten → FC128 ReLU → Dropout 0.5 → FC               |
| inception_n        | conv_pool → Inception ×n → 1³ conv 32 ReLU → Dropout 0.5 → Flatten → FC |
| inception_resnet_n | conv_pool → (shortcut + 0.3·Inception) ×n → 1³ conv 32 ReLU → ... FC  |

Departures from the authors' Keras code, on purpose:

- the head is `num_classes` logits for softmax/cross-entropy instead of two sigmoid units with
  binary cross-entropy on one-hot labels (same trunk; one loss for the whole zoo);
- in inception_resnet_2 the head reads the second residual sum, so the second module is live (in
  the original it read the first sum and the second module was dead).

Initialisation: glorot-uniform weights and zero biases (Keras' defaults, as in the original).

Option not in the paper: ``batch_norm=True`` puts BatchNorm between every convolution and its ReLU
(the convolutions then have no bias). Without normalisation these networks are hard to train on
small cohorts: with Adam at 3e-4 or more the ReLUs of the FC128 head and of the second conv_pool
die within a few dozen steps and the logits stop depending on the input (benchmarks/RESULTS.md,
"S1's models do not train here"). BatchNorm keeps the convolutions' outputs at unit scale, but on
the demo cohort it did not make sequential_2 generalise either; it is off by default.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from neurocnn.models.blocks import NeuroNet, chain, glorot_init
from neurocnn.models.registry import register

PAPER = "Hu et al. 2020"
DEFAULT_SHAPE = (61, 73, 61)
FILTERS = 32
RESIDUAL_SCALE = 0.3  # the authors' scaling of the inception branch before the residual sum


def _conv_layers(
    in_channels: int, out_channels: int, kernel: tuple[int, int, int], batch_norm: bool
) -> OrderedDict[str, nn.Module]:
    """Conv 'same' → [BatchNorm] → ReLU; the conv has no bias when BatchNorm follows it."""
    padding = tuple(k // 2 for k in kernel)  # 'same' for odd kernels
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv3d(in_channels, out_channels, kernel, padding=padding, bias=not batch_norm)
    )
    if batch_norm:
        layers["bn"] = nn.BatchNorm3d(out_channels)
    layers["relu"] = nn.ReLU(inplace=False)
    return layers


def _conv_relu(
    in_channels: int, out_channels: int, kernel: tuple[int, int, int], batch_norm: bool = False
) -> nn.Sequential:
    return nn.Sequential(_conv_layers(in_channels, out_channels, kernel, batch_norm))


class ConvPool(nn.Sequential):
    """Conv 3³ 'same' → [BatchNorm] → ReLU → MaxPool 3 stride 3 (valid)."""

    def __init__(self, in_channels: int, filters: int = FILTERS, batch_norm: bool = False) -> None:
        layers = _conv_layers(in_channels, filters, (3, 3, 3), batch_norm)
        layers["pool"] = nn.MaxPool3d(3, stride=3)
        super().__init__(layers)


class Inception(nn.Module):
    """Four towers of 32 filters, concatenated (128 channels out).

    1. 1³; 2. 1³ → (3,1,1) → (1,3,1) → (1,1,3), a factorised 3³; 3. the same with 5, a factorised
    5³; 4. max-pool 3 stride 1 'same' → 1³. Every convolution is followed by ReLU.
    """

    def __init__(self, in_channels: int, filters: int = FILTERS, batch_norm: bool = False) -> None:
        super().__init__()
        self.out_channels = 4 * filters
        self.tower1 = _conv_relu(in_channels, filters, (1, 1, 1), batch_norm)
        self.tower3 = self._factorised(in_channels, filters, 3, batch_norm)
        self.tower5 = self._factorised(in_channels, filters, 5, batch_norm)
        self.tower_pool = nn.Sequential(
            OrderedDict(
                pool=nn.MaxPool3d(3, stride=1, padding=1),
                reduce=_conv_relu(in_channels, filters, (1, 1, 1), batch_norm),
            )
        )

    @staticmethod
    def _factorised(in_channels: int, filters: int, k: int, batch_norm: bool) -> nn.Sequential:
        return nn.Sequential(
            OrderedDict(
                reduce=_conv_relu(in_channels, filters, (1, 1, 1), batch_norm),
                axis0=_conv_relu(filters, filters, (k, 1, 1), batch_norm),
                axis1=_conv_relu(filters, filters, (1, k, 1), batch_norm),
                axis2=_conv_relu(filters, filters, (1, 1, k), batch_norm),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower1(x), self.tower3(x), self.tower5(x), self.tower_pool(x)], dim=1)


class ResidualInception(nn.Module):
    """y = shortcut(x) + 0.3 · Inception(x).

    The shortcut is ReLU(1³ conv to 128 channels) when the input has another width (first module)
    and the identity otherwise (second module), as in the authors' model.
    """

    def __init__(self, in_channels: int, filters: int = FILTERS, batch_norm: bool = False) -> None:
        super().__init__()
        self.inception = Inception(in_channels, filters, batch_norm)
        width = self.inception.out_channels
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == width else _conv_relu(in_channels, width, (1, 1, 1), batch_norm)
        )
        self.out_channels = width

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + RESIDUAL_SCALE * self.inception(x)


class Hu2020Net(NeuroNet):
    """One of the seven single-modality networks of Hu et al. 2020 (see the module docstring).

    Parameters
    ----------
    conv_pools:
        Number of conv_pool blocks (1–3 for the sequential models, 1 for the inception ones).
    inceptions:
        Number of inception modules after the conv_pool blocks (0 for sequential models).
    residual:
        Wrap the inception modules in the residual sum (inception_resnet models).
    batch_norm:
        BatchNorm after every convolution (not in the paper; see the module docstring).
    channels_last:
        Compute channels-last (NDHWC), oneDNN's CPU layout: 1.4–1.7× faster training steps on a
        2-core CPU (benchmarks/RESULTS.md, "Channels-last for MriNet and S1's networks"); the
        same results either way.
    """

    def __init__(
        self,
        *,
        name: str,
        conv_pools: int,
        inceptions: int = 0,
        residual: bool = False,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = DEFAULT_SHAPE,
        filters: int = FILTERS,
        hidden: int = 128,
        dropout: float = 0.5,
        batch_norm: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        pools = [(3, 3, 0)] * conv_pools
        out = self._set_shape_facts(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, pools),
            fixed_shape=True,
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i in range(conv_pools):
            layers[f"conv_pool{i + 1}"] = ConvPool(channels, filters, batch_norm)
            channels = filters
        for i in range(inceptions):
            module = (
                ResidualInception(channels, filters, batch_norm)
                if residual
                else Inception(channels, filters, batch_norm)
            )
            layers[f"{'res_inception' if residual else 'inception'}{i + 1}"] = module
            channels = module.out_channels
        if inceptions:
            layers["reduce"] = _conv_relu(channels, filters, (1, 1, 1), batch_norm)
            channels = filters
        self.features = nn.Sequential(layers)
        self.gradcam_layer = f"features.{next(reversed(layers))}"
        self.feature_dim = channels * out[0] * out[1] * out[2]
        if inceptions:
            self.head = nn.Sequential(
                OrderedDict(dropout=nn.Dropout(dropout), fc=nn.Linear(self.feature_dim, num_classes))
            )
        else:
            self.head = nn.Sequential(
                OrderedDict(
                    fc1=nn.Linear(self.feature_dim, hidden),
                    relu=nn.ReLU(inplace=False),
                    dropout=nn.Dropout(dropout),
                    fc2=nn.Linear(hidden, num_classes),
                )
            )
        glorot_init(self)
        self._set_channels_last(channels_last)

    def init_new_layers(self, module: nn.Module) -> None:
        glorot_init(module)

    def forward_features(self, x: Tensor) -> Tensor:
        # flatten orders the features logically (C, D, H, W) whatever the memory layout
        return torch.flatten(self.features(self._in_layout(x)), 1)


_VARIANTS = {
    "sequential_1": (1, 0, False, "conv_pool → FC128 → FC"),
    "sequential_2": (2, 0, False, "conv_pool ×2 → FC128 → FC"),
    "sequential_3": (3, 0, False, "conv_pool ×3 → FC128 → FC"),
    "inception_1": (1, 1, False, "conv_pool → Inception → 1³ conv 32 → FC"),
    "inception_2": (1, 2, False, "conv_pool → Inception ×2 → 1³ conv 32 → FC"),
    "inception_resnet_1": (1, 1, True, "conv_pool → residual Inception → 1³ conv 32 → FC"),
    "inception_resnet_2": (1, 2, True, "conv_pool → residual Inception ×2 → 1³ conv 32 → FC"),
}


def _make_builder(name: str, conv_pools: int, inceptions: int, residual: bool):
    def builder(
        *,
        in_channels: int,
        num_classes: int,
        input_shape: tuple[int, ...],
        filters: int = FILTERS,
        hidden: int = 128,
        dropout: float = 0.5,
        batch_norm: bool = False,
        channels_last: bool = True,
    ) -> Hu2020Net:
        return Hu2020Net(
            name=name,
            conv_pools=conv_pools,
            inceptions=inceptions,
            residual=residual,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            filters=filters,
            hidden=hidden,
            dropout=dropout,
            batch_norm=batch_norm,
            channels_last=channels_last,
        )

    builder.__name__ = name
    builder.__doc__ = f"{name} of Hu et al. 2020: {_VARIANTS[name][3]}."
    return builder


for _name, (_pools, _inceptions, _residual, _desc) in _VARIANTS.items():
    register(
        _name,
        family="hu2020",
        paper=PAPER,
        default_input_shape=DEFAULT_SHAPE,
        spatial_dims=3,
        description=_desc,
    )(_make_builder(_name, _pools, _inceptions, _residual))
