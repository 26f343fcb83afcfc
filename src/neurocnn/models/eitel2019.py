"""The PIF-CNN of Eitel et al. 2019 (S2) and the paper's plain 5-convolution baseline.

Eitel F, Albrecht JP, Paul F, Ritter K. "Harnessing spatial MRI normalization: patch individual
filter layers for CNNs." Medical Imaging meets NeurIPS workshop, 2019 (arXiv:1911.13025).

The paper's model: 4 convolutional blocks (Conv-BN-ReLU), a PIF layer (`pif.PIFLayer`) with one
convolution block between split and reassembly, then the classifier. The authors' later code uses
ELU without BatchNorm (``activation='elu', batch_norm=False``). Trunk as in their UK Biobank code:
conv 8 → pool 3/3 → conv 16 → pool 3/3 → conv 32 → conv 64, all 3³ valid, which turns
182×218×182 into 64×15×19×15 feature maps. With overlap, no reassembly, ELU, no BN and one output
the PIF-CNN has the 1,348,665 parameters of the authors' ModelAPIF.
Initialisation: PyTorch's defaults (as the authors').
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.models.blocks import NeuroNet, chain
from neurocnn.models.blocks import activation as make_activation
from neurocnn.models.pif import PIFLayer
from neurocnn.models.registry import register

PAPER = "Eitel et al. 2019"
DEFAULT_SHAPE = (182, 218, 182)  # UK Biobank T1w at 1 mm MNI, as in the authors' code


class _EitelNet(NeuroNet):
    """Shared trunk of the PIF-CNN and its baseline: conv blocks with two 3/3 max-pools."""

    def _conv_block(self, cin: int, cout: int, *, batch_norm: bool, act: str) -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv3d(cin, cout, 3))
        if batch_norm:
            layers["bn"] = nn.BatchNorm3d(cout)
        layers["act"] = make_activation(act)
        return nn.Sequential(layers)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.features(x), 1)


@register(
    "pif_cnn",
    family="eitel2019",
    paper=PAPER,
    default_input_shape=DEFAULT_SHAPE,
    spatial_dims=3,
    description="4 conv blocks → PIF layer (5³ patches) → FC100 → FC",
)
class PIFNet(_EitelNet):
    """The PIF-CNN: 4 conv blocks, a PIF layer with one conv block, then the classifier.

    Conv 8 → pool 3/3 → conv 16 → pool 3/3 → conv 32 → conv 64 (all 3³ valid; Conv-BN-ReLU in the
    paper, Conv-ELU without BN in the authors' later code) → PIF(64 → 6, patches 5³, kernel 3³) →
    Flatten → FC100 → activation → FC. Dropout3d after each pool as in the authors' code.
    Initialisation: PyTorch's defaults.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = DEFAULT_SHAPE,
        widths: Sequence[int] = (8, 16, 32, 64),
        pif_filters: int = 6,
        patch_size: int | Sequence[int] = 5,
        kernel_size: int | Sequence[int] = 3,
        pif_blocks: int = 1,
        reassemble: bool = True,
        overlap: bool = False,
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.3,
        hidden: int = 100,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4:
            raise NeuroCNNError(f"pif_cnn takes 4 conv widths, got {widths}")
        steps = [(3, 1, 0), (3, 3, 0), (3, 1, 0), (3, 3, 0), (3, 1, 0), (3, 1, 0)]
        trunk_out = self._set_shape_facts(
            name="pif_cnn",
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, steps),
            fixed_shape=True,
        )
        bn = batch_norm
        self.features = nn.Sequential(
            OrderedDict(
                block1=self._conv_block(in_channels, widths[0], batch_norm=bn, act=activation),
                pool1=nn.MaxPool3d(3, stride=3),
                drop1=nn.Dropout3d(dropout),
                block2=self._conv_block(widths[0], widths[1], batch_norm=bn, act=activation),
                pool2=nn.MaxPool3d(3, stride=3),
                drop2=nn.Dropout3d(dropout),
                block3=self._conv_block(widths[1], widths[2], batch_norm=bn, act=activation),
                block4=self._conv_block(widths[2], widths[3], batch_norm=bn, act=activation),
                pif=PIFLayer(
                    widths[3],
                    pif_filters,
                    trunk_out,
                    patch_size=patch_size,
                    kernel_size=kernel_size,
                    num_blocks=pif_blocks,
                    reassemble=reassemble,
                    overlap=overlap,
                    batch_norm=batch_norm,
                    activation=activation,
                ),
            )
        )
        self.gradcam_layer = "features.pif" if reassemble else "features.block4"
        self.feature_dim = math.prod(self.features.pif.output_shape)
        self.head = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(self.feature_dim, hidden),
                act=make_activation(activation),
                fc2=nn.Linear(hidden, num_classes),
            )
        )


@register(
    "pif_baseline",
    family="eitel2019",
    paper=PAPER,
    default_input_shape=DEFAULT_SHAPE,
    spatial_dims=3,
    description="plain 5-convolution CNN, the PIF paper's baseline",
)
class EitelBaseline(_EitelNet):
    """The plain 5-convolution baseline ("Model A" of the authors' UKB code).

    Conv 8 → pool 3/3 → conv 16 → pool 3/3 → conv 32 → conv 64 → conv 64 → pool 4/2 (all 3³
    valid) → Flatten → FC100 → activation → FC. Initialisation: PyTorch's defaults.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = DEFAULT_SHAPE,
        widths: Sequence[int] = (8, 16, 32, 64, 64),
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.3,
        hidden: int = 100,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 5:
            raise NeuroCNNError(f"pif_baseline takes 5 conv widths, got {widths}")
        steps = [(3, 1, 0), (3, 3, 0), (3, 1, 0), (3, 3, 0)] + [(3, 1, 0)] * 3 + [(4, 2, 0)]
        out = self._set_shape_facts(
            name="pif_baseline",
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, steps),
            fixed_shape=True,
        )
        bn, act = batch_norm, activation
        self.features = nn.Sequential(
            OrderedDict(
                block1=self._conv_block(in_channels, widths[0], batch_norm=bn, act=act),
                pool1=nn.MaxPool3d(3, stride=3),
                drop1=nn.Dropout3d(dropout),
                block2=self._conv_block(widths[0], widths[1], batch_norm=bn, act=act),
                pool2=nn.MaxPool3d(3, stride=3),
                drop2=nn.Dropout3d(dropout),
                block3=self._conv_block(widths[1], widths[2], batch_norm=bn, act=act),
                block4=self._conv_block(widths[2], widths[3], batch_norm=bn, act=act),
                block5=self._conv_block(widths[3], widths[4], batch_norm=bn, act=act),
                pool5=nn.MaxPool3d(4, stride=2),
                drop5=nn.Dropout3d(dropout),
            )
        )
        self.gradcam_layer = "features.block5"
        self.feature_dim = widths[4] * math.prod(out)
        self.head = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(self.feature_dim, hidden),
                act=make_activation(activation),
                fc2=nn.Linear(hidden, num_classes),
            )
        )
