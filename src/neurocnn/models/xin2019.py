"""MriNet (S3): the 3D CNN that Kan et al. 2020 reproduced from Xin et al. 2019.

Kan CNE, Gilat N, Migliorini D, et al. "Interpretation of 3D CNNs for brain MRI data
classification." 2020 (arXiv:2006.15969). Architecture after Xin J, et al. "Brain differences
between men and women: evidence from deep learning." Front Neurosci 2019;13:185.

Input 58×70×58 (HCP T1w downsampled).

| block | layer                                                | out          |
|-------|------------------------------------------------------|--------------|
| 1     | Conv 1→32 3³ valid → BN → ReLU → MaxPool 2           | 32×28×34×28  |
| 2     | Conv 32→64 3³ valid → BN → ReLU → MaxPool 2          | 64×13×16×13  |
| 3     | Conv 64→128 3³ valid → BN → ReLU → MaxPool 2         | 128×5×7×5    |
| head  | Flatten 22400 → Dropout 0.5 → Linear 2               | 2            |

322,818 parameters. Initialisation: PyTorch's defaults, as in the authors' PyTorch code.
Grad-CAM target: the output of block 3. Computes channels-last by default (`channels_last=False`
for NCDHW): 1.3–1.6× faster training steps on a 2-core CPU (benchmarks/RESULTS.md,
"Channels-last for MriNet and S1's networks").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from neurocnn.models.blocks import NeuroNet, chain
from neurocnn.models.registry import register

PAPER = "Kan 2020 / Xin 2019"
DEFAULT_SHAPE = (58, 70, 58)


class ConvBlock(nn.Sequential):
    """Conv 3³ valid → BatchNorm → ReLU → MaxPool 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv3d(in_channels, out_channels, 3),
                bn=nn.BatchNorm3d(out_channels),
                relu=nn.ReLU(inplace=False),
                pool=nn.MaxPool3d(2),
            )
        )


class MriNet(NeuroNet):
    """Three conv blocks (32, 64, 128 filters), dropout and one linear layer."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: tuple[int, ...] = DEFAULT_SHAPE,
        widths: tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.5,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        steps = [(3, 1, 0), (2, 2, 0)] * len(widths)
        out = self._set_shape_facts(
            name="mrinet",
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            axis_fn=lambda _axis, n: chain(n, steps),
            fixed_shape=True,
        )
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, width in enumerate(widths):
            blocks[f"block{i + 1}"] = ConvBlock(channels, width)
            channels = width
        self.features = nn.Sequential(blocks)
        self.gradcam_layer = f"features.block{len(widths)}"
        self.feature_dim = channels * out[0] * out[1] * out[2]
        self.head = nn.Sequential(
            OrderedDict(dropout=nn.Dropout(dropout), fc=nn.Linear(self.feature_dim, num_classes))
        )
        self._set_channels_last(channels_last)

    def forward_features(self, x: Tensor) -> Tensor:
        # flatten orders the features logically (C, D, H, W) whatever the memory layout
        return torch.flatten(self.features(self._in_layout(x)), 1)


@register(
    "mrinet",
    family="xin2019",
    paper=PAPER,
    default_input_shape=DEFAULT_SHAPE,
    spatial_dims=3,
    description="3 × (Conv-BN-ReLU-MaxPool) → Dropout → Linear",
)
def mrinet(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: tuple[int, ...],
    widths: tuple[int, ...] = (32, 64, 128),
    dropout: float = 0.5,
    channels_last: bool = True,
) -> MriNet:
    """MriNet of Kan et al. 2020 / Xin et al. 2019."""
    return MriNet(
        in_channels=in_channels,
        num_classes=num_classes,
        input_shape=input_shape,
        widths=tuple(widths),
        dropout=dropout,
        channels_last=channels_last,
    )
