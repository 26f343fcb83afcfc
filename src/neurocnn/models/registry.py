"""Name → builder registry of the model zoo: `build`, `available`, `info`, `count_parameters`.

Each family module registers its named constructors with `@register(...)`. A builder takes
keyword arguments only: ``in_channels``, ``num_classes``, ``input_shape`` and its own options, and
returns a `NeuroNet`. `build` validates everything a user can get wrong and wraps the builder in
`MultiBranch` when several modalities are asked for.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neurocnn.errors import NeuroCNNError
from neurocnn.models.blocks import MultiBranch, NeuroNet, Shape, fmt_shape

Builder = Callable[..., NeuroNet]
_RESERVED = ("in_channels", "num_classes", "input_shape")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model before it is built.

    `spatial_dims` is the dimensionality of the convolutions: 3 for volumetric networks, 2 for
    slice-wise and channel-dimension networks (which still consume 3D volumes (B, C, X, Y, Z)).
    `default_input_shape` is the input of the paper, (X, Y, Z) voxels.
    """

    name: str
    family: str
    paper: str
    default_input_shape: Shape
    spatial_dims: int
    description: str
    multimodal: bool = True
    options: tuple[str, ...] = field(default=())
    # default of each option the builder declares (options it passes on to a 2D backbone have the
    # backbone's default and are left out)
    option_defaults: tuple[tuple[str, Any], ...] = field(default=())


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    *,
    family: str,
    paper: str,
    default_input_shape: Sequence[int],
    spatial_dims: int,
    description: str,
    multimodal: bool = True,
    extra_options: Sequence[str] = (),
) -> Callable[[Builder], Builder]:
    """Decorator adding a builder to the registry under `name`.

    The model's options are the builder's keyword parameters besides the reserved ones, plus
    `extra_options` for builders that pass ``**options`` on.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        params = inspect.signature(builder).parameters.values()
        own = [p for p in params if p.name not in _RESERVED and p.kind is not p.VAR_KEYWORD]
        options = tuple(p.name for p in own) + tuple(extra_options)
        defaults = tuple((p.name, p.default) for p in own if p.default is not p.empty)
        _REGISTRY[name] = _Entry(
            ModelInfo(
                name=name,
                family=family,
                paper=paper,
                default_input_shape=tuple(default_input_shape),
                spatial_dims=spatial_dims,
                description=description,
                multimodal=multimodal,
                options=options,
                option_defaults=defaults,
            ),
            builder,
        )
        return builder

    return decorate


# Families in the order of the seed systems (S1–S4), for listings.
FAMILIES = ("hu2020", "eitel2019", "xin2019", "densenet3d", "resnet3d", "slices2d")


def available(family: str | None = None) -> list[str]:
    """Registered model names, grouped by family in seed order (S1–S4), or those of one family."""
    rank = {f: i for i, f in enumerate(FAMILIES)}
    names = sorted(_REGISTRY, key=lambda n: rank.get(_REGISTRY[n].info.family, len(rank)))
    return [n for n in names if family is None or _REGISTRY[n].info.family == family]


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NeuroCNNError(
            f"unknown model {name!r}; {hint}run `neurocnn models` to list the "
            f"{len(_REGISTRY)} available models"
        )
    return _REGISTRY[name]


def info(name: str) -> ModelInfo:
    """The `ModelInfo` of a registered model."""
    return _entry(name).info


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeuroCNNError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def build(
    name: str,
    *,
    in_channels: int = 1,
    modalities: int | None = None,
    num_classes: int = 2,
    input_shape: Sequence[int] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model; it returns logits (B, num_classes).

    Parameters
    ----------
    name:
        A name from `available()`.
    in_channels:
        Channels of each input volume (per modality when `modalities` is given).
    modalities:
        None or 1 builds the single-input network. k ≥ 2 builds the multimodal version of Hu et al.
        2020 (`MultiBranch`): k branches with separate weights; call it with k tensors or with one
        tensor whose channels are the k modalities one after another.
    num_classes:
        Number of output logits.
    input_shape:
        Spatial shape (X, Y, Z) of the input volumes; the paper's shape when None. Flatten sizes
        follow from it; a shape that is too small raises `NeuroCNNError` naming the smallest one
        that works.
    **options:
        Model-specific options, listed in `info(name).options`.

    Examples
    --------
    >>> model = build("mrinet")                        # doctest: +SKIP
    >>> model = build("sequential_3", modalities=3)    # doctest: +SKIP
    >>> logits = model(gm, wm, fa)                     # doctest: +SKIP
    """
    entry = _entry(name)
    meta = entry.info
    in_channels = _positive_int(in_channels, "in_channels")
    num_classes = _positive_int(num_classes, "num_classes")
    shape = meta.default_input_shape if input_shape is None else tuple(input_shape)
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise NeuroCNNError(
            f"input_shape must be three positive integers (X, Y, Z), got {input_shape!r}; "
            f"{name} was designed for {fmt_shape(meta.default_input_shape)}"
        )
    unknown = sorted(set(options) - set(meta.options))
    if unknown:
        accepted = ", ".join(meta.options) or "none"
        raise NeuroCNNError(
            f"{name} does not take option(s) {', '.join(unknown)}; its options are: {accepted}"
        )
    k = 1 if modalities is None else _positive_int(modalities, "modalities")

    def one() -> NeuroNet:
        return entry.builder(in_channels=in_channels, num_classes=num_classes, input_shape=shape, **options)

    if k == 1:
        return one()
    if not meta.multimodal:
        raise NeuroCNNError(
            f"{name} has no multimodal version; stack the modalities as channels instead "
            f"(in_channels={k * in_channels}, modalities=None)"
        )
    # the joint head takes the head's options (the branches' own heads are dropped)
    head = {key: options[key] for key in ("hidden", "dropout") if key in options}
    return MultiBranch([one() for _ in range(k)], num_classes, **head)


def count_parameters(model: nn.Module | str, **build_kwargs: Any) -> int:
    """Number of parameters of a model, or of a registered name built on the meta device.

    Building on the meta device allocates no memory, so the 40M-parameter models count instantly.
    """
    if isinstance(model, str):
        with torch.device("meta"):
            model = build(model, **build_kwargs)
    return sum(p.numel() for p in model.parameters())
