"""2D networks applied to 3D volumes (S4's 2D comparisons): slice by slice with a majority vote, or
with the slices as the channels of one 2D image ("channel dimension" model).

S4 fed its 121×145×121 grey-matter maps to 2D AlexNet, VGG19, ResNet-34…200 and DenseNet-121…264
"hierarchically" (one 121×145 slice at a time) and labelled a subject positive when more than half
of its slices were classified positive. Slices are taken along the last spatial axis by default:
for (X, Y, Z) volumes these are the axial X×Y slices, 121×145 at the paper's grid, as in S4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.models.blocks import InputTooSmall, NeuroNet, checkpointed, fmt_shape
from neurocnn.models.classic2d import backbone_2d
from neurocnn.models.registry import register

DEFAULT_SHAPE = (121, 145, 121)
PAPER = "S4 (2D baselines)"
AXES = "XYZ"


def _rephrase_too_small(exc: InputTooSmall, volume: Sequence[int], axis: int, how: str) -> InputTooSmall:
    """The 2D network's complaint about its slices, said about the 3D volumes."""
    need2d = iter(exc.need)
    need = tuple(1 if i == axis else next(need2d) for i in range(3))
    smallest = tuple(max(int(v), n) for v, n in zip(volume, need, strict=True))
    return InputTooSmall(
        exc.model_name,
        tuple(volume),
        need,
        f"{exc.model_name} ({how}) needs {fmt_shape(exc.need)} slices at least, but "
        f"{fmt_shape(volume)} volumes give {fmt_shape(exc.got)}; use input_shape="
        f"{fmt_shape(smallest)} or larger",
    )


@dataclass(frozen=True)
class SliceVote:
    """Subject-level result of a slice-wise model.

    prediction: (B,) class with most slice votes (two classes: positive only with more than half
        of the votes; more classes: ties → higher mean probability);
    probability: (B, K) mean over slices of the softmax probabilities (use it for the AUC);
    votes: (B, K) number of slices voting for each class.
    """

    prediction: Tensor
    probability: Tensor
    votes: Tensor


class SliceModel(NeuroNet):
    """A 2D network applied to every slice of (B, C, X, Y, Z) volumes along `slice_axis`.

    `forward` returns per-subject logits, the mean of the slice logits, so the model trains like
    any other (for per-slice training use `slice_logits` and repeat the labels per slice).
    `vote` gives the subject prediction by majority over slices and the mean probability.
    `slice_batch` bounds how many slices go through the 2D network at once; with
    ``memory_efficient`` each chunk is checkpointed during training. `gradcam_layer` is the 2D
    network's target, so Grad-CAM on it yields one 2D map per slice.
    """

    head_name = "net"

    def __init__(
        self,
        *,
        name: str,
        backbone: str,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: Sequence[int] = DEFAULT_SHAPE,
        slice_axis: int = 2,
        slice_batch: int | None = None,
        memory_efficient: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        if slice_axis not in (0, 1, 2):
            raise NeuroCNNError(f"slice_axis must be 0, 1 or 2 (X, Y or Z), got {slice_axis!r}")
        if slice_batch is not None and slice_batch < 1:
            raise NeuroCNNError(f"slice_batch must be a positive integer, got {slice_batch!r}")
        volume = tuple(input_shape)
        slice_shape = tuple(n for i, n in enumerate(volume) if i != slice_axis)
        try:
            net = backbone_2d(
                backbone,
                in_channels=in_channels,
                num_classes=num_classes,
                input_shape=slice_shape,
                **options,
            )
        except InputTooSmall as exc:
            raise _rephrase_too_small(exc, volume, slice_axis, f"slices along {AXES[slice_axis]}") from None
        net.model_name = name
        self.net = net
        need2d = iter(net.min_input_shape)
        self.model_name = name
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_shape = volume
        self.min_input_shape = tuple(1 if i == slice_axis else next(need2d) for i in range(3))
        self.fixed_shape = False
        self.slice_axis = slice_axis
        self.slice_batch = slice_batch
        self.memory_efficient = memory_efficient
        self.feature_dim = net.feature_dim
        self.gradcam_layer = f"net.{net.gradcam_layer}"

    def slices(self, x: Tensor) -> Tensor:
        """(B, C, X, Y, Z) → (B·S, C, a, b), slices of each subject consecutive."""
        dim = 2 + self.slice_axis
        x = x.movedim(dim, 1)  # (B, S, C, a, b)
        return x.reshape(-1, *x.shape[2:])

    def slice_logits(self, x: Tensor) -> Tensor:
        """Logits of every slice, (B, S, num_classes)."""
        self.check_input(x)
        b, s = x.shape[0], x.shape[2 + self.slice_axis]
        flat = self.slices(x)
        step = self.slice_batch or flat.shape[0]
        outs = []
        for chunk in flat.split(step):
            if self.memory_efficient and self.training and torch.is_grad_enabled():
                outs.append(checkpointed(self.net, self.net, chunk))
            else:
                outs.append(self.net(chunk))
        return torch.cat(outs).reshape(b, s, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.slice_logits(x).mean(dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Mean over slices of the 2D network's embedding, (B, feature_dim)."""
        self.check_input(x)
        b, s = x.shape[0], x.shape[2 + self.slice_axis]
        return self.net.forward_features(self.slices(x)).reshape(b, s, -1).mean(dim=1)

    @torch.no_grad()
    def vote(self, x: Tensor) -> SliceVote:
        """Majority vote over slices per subject, and the mean slice probability."""
        return self.vote_from_logits(self.slice_logits(x))

    @staticmethod
    def vote_from_logits(slice_logits: Tensor) -> SliceVote:
        """The vote of `vote` from slice logits (B, S, K) already computed (validation uses both)."""
        probs = F.softmax(slice_logits.float(), dim=-1)  # (B, S, K)
        votes = F.one_hot(probs.argmax(-1), probs.shape[-1]).sum(dim=1)  # (B, K)
        mean = probs.mean(dim=1)
        if probs.shape[-1] == 2:
            # S4's rule: positive only when more than half of the slices are (a tie is negative)
            prediction = (2 * votes[:, 1] > votes.sum(dim=1)).long()
        else:
            # more classes: ties between the most voted are broken by the mean probability
            prediction = (votes.to(mean.dtype) + 0.5 * mean).argmax(-1)
        return SliceVote(prediction=prediction, probability=mean, votes=votes)

    def reset_head(self, num_classes: int | None) -> nn.Module:
        if num_classes is not None:
            self.num_classes = int(num_classes)
        return self.net.reset_head(num_classes)


class ChannelDimensionNet(NeuroNet):
    """A 2D network whose input channels are the slices of the volume (S4's "channel dimension").

    (B, C, X, Y, Z) → (B, C·S, a, b) with S slices along `slice_axis`; the number of slices is
    fixed at build time by `input_shape`. Backbone: any of `classic2d.BACKBONES_2D`
    (DenseNet-121 by default; S4 does not name the network it used).
    """

    head_name = "net"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        input_shape: Sequence[int] = DEFAULT_SHAPE,
        backbone: str = "densenet121",
        slice_axis: int = 2,
        **options: Any,
    ) -> None:
        super().__init__()
        if slice_axis not in (0, 1, 2):
            raise NeuroCNNError(f"slice_axis must be 0, 1 or 2 (X, Y or Z), got {slice_axis!r}")
        volume = tuple(input_shape)
        slice_shape = tuple(n for i, n in enumerate(volume) if i != slice_axis)
        try:
            self.net = backbone_2d(
                backbone,
                in_channels=in_channels * volume[slice_axis],
                num_classes=num_classes,
                input_shape=slice_shape,
                **options,
            )
        except InputTooSmall as exc:
            raise _rephrase_too_small(exc, volume, slice_axis, "slices as channels") from None
        self.model_name = "channel_dimension"
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_shape = volume
        need2d = iter(self.net.min_input_shape)
        self.min_input_shape = tuple(volume[i] if i == slice_axis else next(need2d) for i in range(3))
        self.fixed_shape = False
        self.slice_axis = slice_axis
        self.feature_dim = self.net.feature_dim
        self.gradcam_layer = f"net.{self.net.gradcam_layer}"

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        dim = 2 + self.slice_axis
        if x.shape[dim] != self.input_shape[self.slice_axis]:
            raise NeuroCNNError(
                f"channel_dimension was built for {self.input_shape[self.slice_axis]} slices along "
                f"{AXES[self.slice_axis]}, got {x.shape[dim]}; build it with the volumes' shape"
            )

    def to_image(self, x: Tensor) -> Tensor:
        """(B, C, X, Y, Z) → (B, C·S, a, b)."""
        x = x.movedim(2 + self.slice_axis, 2)  # (B, C, S, a, b)
        return x.reshape(x.shape[0], -1, *x.shape[3:])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net.forward_features(self.to_image(x))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.net(self.to_image(x))

    def reset_head(self, num_classes: int | None) -> nn.Module:
        if num_classes is not None:
            self.num_classes = int(num_classes)
        return self.net.reset_head(num_classes)


def _register_slice_model(backbone: str, description: str, extra: tuple[str, ...]) -> None:
    name = f"{backbone}_2d"

    def builder(
        *,
        in_channels: int,
        num_classes: int,
        input_shape: tuple[int, ...],
        slice_axis: int = 2,
        slice_batch: int | None = None,
        memory_efficient: bool = False,
        **options: Any,
    ) -> SliceModel:
        return SliceModel(
            name=name,
            backbone=backbone,
            in_channels=in_channels,
            num_classes=num_classes,
            input_shape=input_shape,
            slice_axis=slice_axis,
            slice_batch=slice_batch,
            memory_efficient=memory_efficient,
            **options,
        )

    builder.__doc__ = f"2D {description} applied slice by slice, majority vote per subject."
    register(
        name,
        family="slices2d",
        paper=PAPER,
        default_input_shape=DEFAULT_SHAPE,
        spatial_dims=2,
        description=f"2D {description}, slice by slice (vote)",
        multimodal=False,
        extra_options=extra,
    )(builder)


_register_slice_model("alexnet", "AlexNet", ())
_register_slice_model("vgg19", "VGG19", ("batch_norm",))
for _depth in (34, 50, 101, 152, 200):
    _register_slice_model(f"resnet{_depth}", f"ResNet-{_depth}", ("stem_stride",))
for _depth in (121, 169, 201, 264):
    _register_slice_model(f"densenet{_depth}", f"DenseNet-{_depth}", ("stem_stride",))


@register(
    "channel_dimension",
    family="slices2d",
    paper=PAPER,
    default_input_shape=DEFAULT_SHAPE,
    spatial_dims=2,
    description="2D DenseNet-121 with the slices as input channels",
    multimodal=False,
)
def channel_dimension(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: tuple[int, ...],
    backbone: str = "densenet121",
    slice_axis: int = 2,
    memory_efficient: bool = False,
) -> ChannelDimensionNet:
    """S4's "channel dimension" model: slices as channels of one 2D image."""
    options: dict[str, Any] = {}
    if backbone.startswith(("resnet", "densenet")):
        options["memory_efficient"] = memory_efficient
    return ChannelDimensionNet(
        in_channels=in_channels,
        num_classes=num_classes,
        input_shape=input_shape,
        backbone=backbone,
        slice_axis=slice_axis,
        **options,
    )
