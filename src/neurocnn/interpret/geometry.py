"""Where a layer's cells sit on the input grid, and layer maps placed there (Grad-CAM's upsampling).

A cell ``j`` of a convolutional layer's output looks at input voxels centred on
``offset + stride * j`` along each axis. Resizing a layer map to the input grid by plain
interpolation (``align_corners=False``: Captum's ``LayerAttribution.interpolate``, MONAI's and
pytorch-grad-cam's convention) assumes the cells tile the whole input evenly. That holds only for
'same'-padded networks whose input size is a multiple of the stride. MriNet (S3) uses unpadded
convolutions: at 58×70×58 its last block has 5×7×5 cells with stride 8 centred from voxel 10.5,
so they cover voxels 10.5–42.5 of 0–57 along x; stretched over the whole input they would sit at
5.3–51.7 (1.45× too wide) and a map peak up to 9 voxels (27 mm at 3 mm) from its true place.

:func:`layer_geometry` finds stride and offset from the network itself: one forward pass of one
subject with hooks on every convolution and pooling module, composing each module's
``kernel``, ``stride``, ``padding`` and ``dilation`` onto the geometry of its input. Geometry is
tracked per spatial shape, which separates the stages of sequential, residual, inception and dense
networks (their parallel branches agree: a strided 3³ convolution with padding 1 and a strided 1³
shortcut centre their cells alike). If two paths disagree, or a layer changes shape without a
convolution or pooling module (a functional call), the geometry is unknown and
:func:`place_on_input` falls back to the plain stretch, which is then the best available.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LayerGeometry", "layer_geometry", "place_on_input", "stretch_geometry"]

_WINDOWED = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
)


@dataclass(frozen=True)
class LayerGeometry:
    """Per spatial axis: input voxels per cell (``stride``) and the input coordinate (voxel index)
    of the centre of cell 0's receptive field (``offset``)."""

    stride: tuple[float, ...]
    offset: tuple[float, ...]

    def centres(self, axis: int, n_cells: int) -> Tensor:
        return self.offset[axis] + self.stride[axis] * torch.arange(n_cells, dtype=torch.float64)


def stretch_geometry(n_cells: tuple[int, ...], shape: tuple[int, ...]) -> LayerGeometry:
    """The geometry plain interpolation with ``align_corners=False`` assumes: cells tile the input."""
    stride = tuple(n / c for n, c in zip(shape, n_cells, strict=True))
    return LayerGeometry(stride, tuple((s - 1) / 2 for s in stride))


def _window(module: nn.Module, dims: int) -> tuple[tuple[int, ...], ...]:
    def axes(value: int | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, tuple | list) else (int(value),) * dims

    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        if isinstance(module.padding, str):  # 'valid' or 'same' (stride 1 only)
            k, d = axes(module.kernel_size), axes(module.dilation)
            pad = tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d, strict=True))
            padding = pad if module.padding == "same" else (0,) * dims
        else:
            padding = axes(module.padding)  # type: ignore[arg-type]
        return axes(module.kernel_size), axes(module.stride), padding, axes(module.dilation)
    dilation = getattr(module, "dilation", 1)
    stride = module.stride if module.stride is not None else module.kernel_size  # type: ignore[attr-defined]
    return (
        axes(module.kernel_size),  # type: ignore[attr-defined]
        axes(stride),
        axes(module.padding),  # type: ignore[attr-defined]
        axes(dilation),
    )


def layer_geometry(model: nn.Module, layer: nn.Module, example: Tensor) -> LayerGeometry | None:
    """Stride and offset of ``layer``'s output cells on the grid of ``example`` (one input batch,
    (B, C, *spatial)); ``None`` when they cannot be traced (see the module docstring)."""
    dims = example.dim() - 2
    known: dict[tuple[int, ...], LayerGeometry | None] = {
        tuple(example.shape[2:]): LayerGeometry((1.0,) * dims, (0.0,) * dims)
    }
    result: list[tuple[int, ...]] = []

    def on_window(module: nn.Module, args: tuple, output: Tensor) -> None:
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            return
        if args[0].dim() != dims + 2 or output.dim() != dims + 2:
            return
        before = known.get(tuple(args[0].shape[2:]))
        out_shape = tuple(output.shape[2:])
        if before is None:  # input of unknown geometry (e.g. patches cut out inside a layer)
            if out_shape not in known:
                known[out_shape] = None
            return
        k, s, p, d = _window(module, dims)
        after = LayerGeometry(
            tuple(bs * ss for bs, ss in zip(before.stride, s, strict=True)),
            tuple(
                bo + bs * (-pp + dd * (kk - 1) / 2)
                for bo, bs, kk, pp, dd in zip(before.offset, before.stride, k, p, d, strict=True)
            ),
        )
        if out_shape in known and known[out_shape] != after:
            known[out_shape] = None  # two paths to one shape that disagree: unknown
        else:
            known[out_shape] = after

    def on_layer(_module: nn.Module, _args: tuple, output: Tensor) -> None:
        if isinstance(output, Tensor) and output.dim() == dims + 2:
            result.append(tuple(output.shape[2:]))

    handles = [m.register_forward_hook(on_window) for m in model.modules() if isinstance(m, _WINDOWED)]
    handles.append(layer.register_forward_hook(on_layer))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not result:
        return None
    return known.get(result[0])


def place_on_input(maps: Tensor, shape: tuple[int, ...], geometry: LayerGeometry | None) -> Tensor:
    """(B, *cells) layer maps resampled onto the input grid ``shape``: linear interpolation between
    the cells' receptive-field centres, constant beyond the first and the last centre. With
    ``geometry=None``, the plain stretch (:func:`stretch_geometry`)."""
    cells = tuple(maps.shape[1:])
    geometry = geometry or stretch_geometry(cells, shape)
    out = maps.double()
    for axis, (n_in, n_cells) in enumerate(zip(shape, cells, strict=True)):
        weights = _interpolation(n_in, n_cells, geometry.offset[axis], geometry.stride[axis])
        out = torch.movedim(
            torch.tensordot(out, weights.to(out.device), dims=([axis + 1], [1])), -1, axis + 1
        )
    return out.to(maps.dtype if maps.is_floating_point() else torch.float32)


def _interpolation(n_in: int, n_cells: int, offset: float, stride: float) -> Tensor:
    """(n_in, n_cells) linear interpolation weights from cell centres to voxel positions."""
    u = ((torch.arange(n_in, dtype=torch.float64) - offset) / stride).clamp(0, n_cells - 1)
    lo = u.floor().long().clamp(max=n_cells - 1)
    hi = (lo + 1).clamp(max=n_cells - 1)
    frac = u - lo
    w = torch.zeros(n_in, n_cells, dtype=torch.float64)
    rows = torch.arange(n_in)
    w[rows, lo] += 1 - frac
    w[rows, hi] += frac
    return w
