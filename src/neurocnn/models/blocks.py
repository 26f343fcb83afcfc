"""Pieces shared by every model family.

- layer factories that pick the 2D or 3D class, so DenseNet and ResNet are written once;
- shape arithmetic: the output size of convolutions and pools along one axis, and the search for the
  smallest input that a network accepts (so a too-small input is refused at build time with the
  smallest shape that works, instead of a cryptic error deep inside a convolution);
- `NeuroNet`, the base class of every single-input network: it records the shape facts, checks its
  inputs and has a swappable classification head (`reset_head`, used by transfer learning);
- `MultiBranch`, the multimodal wrapper of Hu et al. 2020: one trunk per modality, separate weights,
  embeddings concatenated, FC128, output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from neurocnn.errors import NeuroCNNError
from neurocnn.models.allocator import lean_allocator

Shape = tuple[int, ...]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _pick(table: dict[int, type], dims: int) -> type:
    if dims not in table:
        raise ValueError(f"spatial dims must be 2 or 3, got {dims}")
    return table[dims]


def conv_cls(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return _pick(_CONV, dims)


def bn_cls(dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return _pick(_BN, dims)


def maxpool_cls(dims: int) -> type[nn.MaxPool2d] | type[nn.MaxPool3d]:
    return _pick(_MAXPOOL, dims)


def avgpool_cls(dims: int) -> type[nn.AvgPool2d] | type[nn.AvgPool3d]:
    return _pick(_AVGPOOL, dims)


def adaptive_avgpool_cls(dims: int) -> type[nn.AdaptiveAvgPool2d] | type[nn.AdaptiveAvgPool3d]:
    return _pick(_ADAPTIVE_AVG, dims)


def dropout_cls(dims: int) -> type[nn.Dropout2d] | type[nn.Dropout3d]:
    return _pick(_DROPOUT, dims)


def activation(name: str) -> nn.Module:
    """A fresh, not in-place activation module (guided backprop hooks need to see every one)."""
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "elu":
        return nn.ELU(inplace=False)
    raise NeuroCNNError(f"unknown activation {name!r}; use 'relu' or 'elu'")


def as_tuple(value: int | Sequence[int], dims: int) -> Shape:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise NeuroCNNError(f"expected {dims} values, got {len(value)}: {value}")
    return value


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format for tensors of `ndim` dimensions (4 or 5)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def keep_format(y: Tensor, like: Tensor) -> Tensor:
    """`y` in the memory layout of `like` when `like` is channels-last (a no-op otherwise)."""
    fmt = channels_last_format(like.dim())
    if like.dim() in (4, 5) and like.is_contiguous(memory_format=fmt) and not like.is_contiguous():
        return y.contiguous(memory_format=fmt)
    return y


# --- shape arithmetic ---------------------------------------------------------------------------


def out_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution or pool along one axis (floor mode, PyTorch's formula)."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


Step = tuple[int, int, int]  # (kernel, stride, padding)


def chain(n: int, steps: Sequence[Step]) -> int:
    """Length after a chain of convolutions/pools; 0 when any step would be empty."""
    for kernel, stride, padding in steps:
        if n + 2 * padding < kernel:
            return 0
        n = out_size(n, kernel, stride, padding)
    return n


AxisFn = Callable[[int, int], int]
"""(axis index, input length) -> output length along that axis; < 1 means the input is too small."""


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def smallest_input(axis_fn: AxisFn, ndim: int, limit: int = 4096) -> Shape:
    """Smallest length per axis for which `axis_fn` gives a non-empty output (axes are independent)."""
    out = []
    for axis in range(ndim):
        n = next((n for n in range(1, limit + 1) if axis_fn(axis, n) >= 1), limit)
        out.append(n)
    return tuple(out)


class InputTooSmall(NeuroCNNError):
    """An input shape below a network's minimum; carries the shapes for callers that rephrase."""

    def __init__(self, model_name: str, got: Shape, need: Shape, message: str | None = None) -> None:
        self.model_name, self.got, self.need = model_name, got, need
        smallest = tuple(max(n, m) for n, m in zip(got, need, strict=True))
        super().__init__(
            message
            or f"{model_name} needs an input of at least {fmt_shape(need)} voxels per axis, got "
            f"{fmt_shape(got)}; use input_shape={fmt_shape(smallest)} or larger (pad or resample "
            "the volumes), or pick a model for smaller inputs"
        )


def check_input_shape(model_name: str, input_shape: Sequence[int], axis_fn: AxisFn) -> Shape:
    """Return the output spatial shape, or raise naming the smallest input shape that works."""
    shape = tuple(int(s) for s in input_shape)
    out = tuple(axis_fn(axis, n) for axis, n in enumerate(shape))
    if any(o < 1 for o in out):
        raise InputTooSmall(model_name, shape, smallest_input(axis_fn, len(shape)))
    return out


# --- memory-efficient (checkpointed) execution ----------------------------------------------------


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged while a checkpointed segment is recomputed.

    Recomputation runs the forward pass a second time; without this the running mean, variance and
    batch counter would take the same batch into account twice. Momentum 0 leaves the statistics
    as they are while the layers compute (and save for backward) exactly what they did before.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked) for m in norms]
    counts = [None if n is None else n.clone() for _, n in saved]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked), count in zip(norms, saved, counts, strict=True):
            m.momentum = momentum
            if tracked is not None and count is not None:
                tracked.copy_(count)


def checkpointed(fn: Callable[..., Tensor], module: nn.Module, *inputs: Tensor) -> Tensor:
    """Run `fn(*inputs)` keeping only its inputs for backward; recompute the rest then.

    `module` owns the layers `fn` uses; its BatchNorm statistics are left alone on recomputation.
    The first call in a process also makes glibc return freed tensors at once (`allocator`).
    """
    lean_allocator()

    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), _frozen_bn_stats(module)

    return checkpoint(fn, *inputs, use_reentrant=False, context_fn=contexts)


# --- the base class --------------------------------------------------------------------------------


class NeuroNet(nn.Module):
    """Base of every single-input network in the zoo.

    Subclasses build their layers, call `_set_shape_facts`, implement `forward_features` (input to
    a flat embedding of `feature_dim` values) and keep their final classifier in the attribute
    named by `head_name`. `gradcam_layer` names the default Grad-CAM target (resolvable with
    `get_submodule`).
    """

    head_name: str = "head"
    gradcam_layer: str = ""
    channels_last: bool = False

    def _set_channels_last(self, flag: bool) -> None:
        """Keep weights, and (through `_in_layout`) activations, channels-last (NDHWC/NHWC).

        That is the layout oneDNN's CPU convolutions run in; contiguous (NCDHW) tensors are
        reordered around every convolution. Results are the same either way (up to rounding), and
        checkpoints load into either layout. Call after the layers are built.
        """
        self.channels_last = bool(flag)
        if self.channels_last:
            self.to(memory_format=channels_last_format(len(self.input_shape) + 2))

    def _in_layout(self, x: Tensor) -> Tensor:
        """`x` in the layout the network computes in (see `_set_channels_last`)."""
        return x.contiguous(memory_format=channels_last_format(x.dim())) if self.channels_last else x

    def _set_shape_facts(
        self,
        *,
        name: str,
        in_channels: int,
        num_classes: int,
        input_shape: Sequence[int],
        axis_fn: AxisFn,
        fixed_shape: bool,
    ) -> Shape:
        self.model_name = name
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_spatial_shape = check_input_shape(name, self.input_shape, axis_fn)
        self.min_input_shape = smallest_input(axis_fn, len(self.input_shape))
        # Flattening models fix their input shape at build time; pooled ones take any large enough.
        self.fixed_shape = fixed_shape
        return self.output_spatial_shape

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return getattr(self, self.head_name)(self.forward_features(x))

    def check_input(self, x: Tensor) -> None:
        ndim = len(self.input_shape)
        if x.dim() != ndim + 2 or x.shape[1] != self.in_channels:
            raise NeuroCNNError(
                f"{self.model_name} expects a batch shaped (B, {self.in_channels}, "
                f"{', '.join('*' * ndim)}), got {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if self.fixed_shape and spatial != self.input_shape:
            raise NeuroCNNError(
                f"{self.model_name} was built for input_shape {fmt_shape(self.input_shape)}, got "
                f"{fmt_shape(spatial)}; build it with input_shape={fmt_shape(spatial)}"
            )
        if any(s < m for s, m in zip(spatial, self.min_input_shape, strict=True)):
            raise NeuroCNNError(
                f"{self.model_name} needs inputs of at least {fmt_shape(self.min_input_shape)} "
                f"voxels, got {fmt_shape(spatial)}; pad or resample the volumes"
            )

    def init_new_layers(self, module: nn.Module) -> None:
        """Initialise layers made after construction (a new or multimodal head) as this family
        initialises its own; PyTorch's defaults unless a subclass says otherwise."""

    def reset_head(self, num_classes: int | None) -> nn.Module:
        """Replace the final classification layer (a fresh Linear), or drop it with None.

        Transfer learning (S4) moves a trained backbone to a new task with a new last layer, which
        is initialised as the family initialises its own (`init_new_layers`).
        Returns the new module. With None the model returns its `feature_dim` embedding.
        """
        old = getattr(self, self.head_name)
        if num_classes is None:
            new: nn.Module = nn.Identity()
        else:
            new, fresh = _replace_last_linear(old, int(num_classes))
            self.init_new_layers(fresh)
            self.num_classes = int(num_classes)
        setattr(self, self.head_name, new)
        return new


def _replace_last_linear(head: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    """The head with its last Linear replaced by a fresh one, and that fresh layer."""
    if isinstance(head, nn.Linear):
        fresh = nn.Linear(head.in_features, num_classes)
        return fresh, fresh
    if isinstance(head, nn.Sequential):
        layers = list(head.named_children())
        for idx in range(len(layers) - 1, -1, -1):
            key, layer = layers[idx]
            if isinstance(layer, nn.Linear):
                fresh = nn.Linear(layer.in_features, num_classes)
                new = nn.Sequential()
                for k, m in layers:
                    new.add_module(k, fresh if k == key else m)
                return new, fresh
    raise TypeError(f"cannot find the last Linear layer in {type(head).__name__}")


# --- multimodal wrapper ------------------------------------------------------------------------


class MultiBranch(nn.Module):
    """One branch per modality, separate weights, joined by a small classifier (Hu et al. 2020).

    Each branch is a single-modality network of the same architecture without its head; its
    flattened embedding (`forward_features`) is concatenated with the others and passed to
    FC(`hidden`) → ReLU → Dropout → FC(num_classes), initialised as the branches' family
    initialises its layers (S1: glorot-uniform weights, zero biases).

    Inputs: either one tensor per modality, ``model(x1, x2, x3)``, each (B, C, *spatial), or one
    tensor (B, k·C, *spatial) holding the modalities one after another along the channel axis,
    which is split into k chunks of C channels. Anything else raises `NeuroCNNError`.

    `gradcam_layer` targets branch 0; `gradcam_layers` lists the target of every branch.
    """

    def __init__(
        self,
        branches: Sequence[NeuroNet],
        num_classes: int,
        *,
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(branches) < 2:
            raise NeuroCNNError("a multimodal model needs at least 2 modalities")
        first = branches[0]
        for branch in branches:
            branch.reset_head(None)
        self.branches = nn.ModuleList(branches)
        self.modalities = len(branches)
        self.model_name = f"{first.model_name} ({self.modalities} modalities)"
        self.in_channels = first.in_channels
        self.num_classes = int(num_classes)
        self.input_shape = first.input_shape
        self.min_input_shape = first.min_input_shape
        self.feature_dim = sum(int(b.feature_dim) for b in branches)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        first.init_new_layers(self.head)
        self.gradcam_layers = [f"branches.{i}.{b.gradcam_layer}" for i, b in enumerate(branches)]
        self.gradcam_layer = self.gradcam_layers[0]

    def split_inputs(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        k, c = self.modalities, self.in_channels
        if len(inputs) == k:
            return list(inputs)
        if len(inputs) == 1 and inputs[0].dim() >= 2 and inputs[0].shape[1] == k * c:
            return list(torch.split(inputs[0], c, dim=1))
        got = (
            f"one tensor with {inputs[0].shape[1]} channels"
            if len(inputs) == 1 and inputs[0].dim() >= 2
            else f"{len(inputs)} inputs"
        )
        raise NeuroCNNError(
            f"{self.model_name} expects {k} inputs of {c} channel(s) each, or one tensor with "
            f"{k * c} channels (the modalities stacked along channels); got {got}"
        )

    def forward_features(self, *inputs: Tensor) -> Tensor:
        parts = self.split_inputs(inputs)
        return torch.cat([branch(x) for branch, x in zip(self.branches, parts, strict=True)], dim=1)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.head(self.forward_features(*inputs))

    def reset_head(self, num_classes: int | None) -> nn.Module:
        if num_classes is None:
            self.head = nn.Identity()
        else:
            self.head, fresh = _replace_last_linear(self.head, int(num_classes))
            self.branches[0].init_new_layers(fresh)  # type: ignore[operator]
            self.num_classes = int(num_classes)
        return self.head


def glorot_init(module: nn.Module) -> None:
    """Keras' defaults: glorot-uniform weights and zero biases on every conv and linear layer."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def kaiming_init(module: nn.Module) -> None:
    """He et al. 2015 normal init (fan-out) for convs, unit/zero BatchNorm, zero linear bias.

    The initialisation of torchvision's ResNet/DenseNet and of 3D-ResNets-PyTorch (S4).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
