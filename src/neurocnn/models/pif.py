"""The patch individual filter (PIF) layer of Eitel et al. 2019 (S2); the networks are in `eitel2019`.

Eitel F, Albrecht JP, Paul F, Ritter K. "Harnessing spatial MRI normalization: patch individual
filter layers for CNNs." Medical Imaging meets NeurIPS workshop, 2019 (arXiv:1911.13025).

A PIF layer (i) splits each feature map into a grid of patches (the end of each axis padded with
zeros to a multiple of the patch size), (ii) applies to every patch position its own small stack of
convolutions (weights shared within a patch, not across patches) and (iii) reassembles the patch
outputs in their original order, or returns them flattened. A locally connected layer is the case
patch = kernel.

All patches run as one batched operation (no Python loop over patches; see benchmarks/models.py
for the speed-up over a loop). On the CPU in float32 the first convolution runs in compiled
kernels that read the patches in place (`pif_cpu`); elsewhere, and for the later convolutions of
the stack, the patches are moved into the channel axis and every convolution is a grouped
convolution with one group per patch.

The "overlap" option adds a second grid shifted by half a patch along every axis (its patches
straddle the borders of the first grid), with its own weights. (The authors' option shifted the
extra patches by a whole patch.) With the UKB configuration of the authors' code (182×218×182,
convs 8/16/32/64, PIF 64→6 with 5³ patches, overlap, not reassembled, ELU, no BN, FC100, FC1) the
model has their 1,348,665 parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.models import pif_cpu
from neurocnn.models.blocks import Shape, as_tuple, bn_cls, fmt_shape
from neurocnn.models.blocks import activation as make_activation


def _to_rows(x: Tensor) -> Tensor:
    """(B, C, *spatial) → (B, voxels + 1, C) channel rows; the last row is zero (padding reads it)."""
    b, c = x.shape[:2]
    voxels = math.prod(x.shape[2:])
    rows = x.new_empty(b, voxels + 1, c)
    rows[:, voxels].zero_()
    if x.movedim(1, -1).is_contiguous():
        rows[:, :voxels].view(b, *x.shape[2:], c).copy_(x.movedim(1, -1))
    else:  # ATen's blocked (B, C, V) → (B, V, C) transpose
        rows[:, :voxels].copy_(x.reshape(b, c, -1).transpose(1, 2))
    return rows


class _GatherPatches(torch.autograd.Function):
    """(B, C, *spatial) → (B·positions·P, C): every (sample, position in patch, patch) row.

    Forward: one transposing copy to channel rows (B, voxels + 1, C) whose last row is zero (the
    padding positions read it), then one `index_select` of whole rows. Backward: every voxel is
    in exactly one patch of the main grid, so the input gradient is again a gather (the inverse
    index) instead of a scatter-add, plus one `index_add_` for the shifted grid when there is one.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, index: Tensor, inverse: Tensor, shifted_src: Tensor, shifted_dst: Tensor
    ) -> Tensor:
        b, c = x.shape[:2]
        voxels = math.prod(x.shape[2:])
        rows = _to_rows(x)
        ctx.channels_last = x.movedim(1, -1).is_contiguous()
        per_sample = index.numel()
        ctx.save_for_backward(inverse, shifted_src, shifted_dst)
        ctx.shape = tuple(x.shape)
        ctx.per_sample = per_sample
        flat = (index + (voxels + 1) * torch.arange(b, device=x.device).view(b, 1)).flatten()
        return rows.view(-1, c).index_select(0, flat)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        inverse, shifted_src, shifted_dst = ctx.saved_tensors
        b, c, *spatial = ctx.shape
        voxels = math.prod(spatial)
        grad = grad.contiguous()
        offsets = ctx.per_sample * torch.arange(b, device=grad.device).view(b, 1)
        g = grad.index_select(0, (inverse + offsets).flatten())  # (B·voxels, C)
        if shifted_src.numel():
            dst = (shifted_dst + voxels * torch.arange(b, device=grad.device).view(b, 1)).flatten()
            g.index_add_(0, dst, grad.index_select(0, (shifted_src + offsets).flatten()))
        g = g.view(b, voxels, c)
        if ctx.channels_last:
            gx = g.view(b, *spatial, c).movedim(-1, 1)
        else:
            gx = g.transpose(1, 2).contiguous().view(b, c, *spatial)
        return gx, None, None, None, None


class PIFLayer(nn.Module):
    """Patch individual filter layer for 2D or 3D feature maps (dims = len(input_shape)).

    Parameters
    ----------
    in_channels, out_channels:
        Feature maps in and filters per patch out.
    input_shape:
        Spatial shape of the incoming feature maps (fixes the patch grid).
    patch_size:
        Patch edge (int or per axis). Default 5.
    kernel_size:
        Kernel of the convolutions inside each patch (valid, stride 1). Default 3.
    num_blocks:
        Convolution blocks between split and reassembly (conv [→ BN] [→ activation]).
    reassemble:
        True: return (B, C', *grid·q) with the patch outputs in place (q = output edge of one
        patch). False: return the patch outputs flattened, (B, P·out_channels·q^dims), patch-major.
    overlap:
        Add a second grid shifted by half a patch per axis (one patch fewer per axis), with its own
        weights. Reassembled, its maps are placed at the matching offset on a zero canvas and
        concatenated along channels (C' = 2·out_channels).
    batch_norm:
        BatchNorm after each convolution (statistics per patch and channel).
    activation:
        'relu', 'elu' or None (a pure linear layer) after each convolution.
    impl:
        'auto' (the compiled CPU kernels where they apply: float32 on the CPU), 'conv' (always the
        grouped convolution) or 'kernel' (the CPU kernels; an error where they cannot run).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_shape: Sequence[int],
        *,
        patch_size: int | Sequence[int] = 5,
        kernel_size: int | Sequence[int] = 3,
        num_blocks: int = 1,
        reassemble: bool = True,
        overlap: bool = False,
        batch_norm: bool = False,
        activation: str | None = "relu",
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if impl not in ("auto", "conv", "kernel"):
            raise NeuroCNNError(f"PIF impl must be 'auto', 'conv' or 'kernel', not {impl!r}")
        if impl == "kernel" and not pif_cpu.available():
            raise NeuroCNNError("PIF impl='kernel' needs numba, which is not installed")
        self.impl = impl
        dims = len(input_shape)
        self.dims = dims
        self.input_shape = tuple(int(s) for s in input_shape)
        self.patch = as_tuple(patch_size, dims)
        self.kernel = as_tuple(kernel_size, dims)
        self.out_channels = out_channels
        self.reassemble = reassemble
        self.overlap = overlap
        self.patch_out: Shape = tuple(
            p - num_blocks * (k - 1) for p, k in zip(self.patch, self.kernel, strict=True)
        )
        if num_blocks < 1 or any(q < 1 for q in self.patch_out):
            raise NeuroCNNError(
                f"PIF patches of {fmt_shape(self.patch)} are too small for {num_blocks} valid "
                f"convolution(s) of {fmt_shape(self.kernel)}; use larger patches or fewer blocks"
            )
        self.grid: Shape = tuple(math.ceil(n / p) for n, p in zip(self.input_shape, self.patch, strict=True))
        self.padding: Shape = tuple(
            g * p - n for g, p, n in zip(self.grid, self.patch, self.input_shape, strict=True)
        )
        self.shift: Shape = tuple(p // 2 for p in self.patch)
        self.shifted_grid: Shape = tuple(g - 1 for g in self.grid) if overlap else (0,) * dims
        if overlap and min(self.shifted_grid) < 1:
            raise NeuroCNNError(
                f"PIF overlap needs at least 2 patches per axis; {fmt_shape(self.input_shape)} "
                f"gives a grid of {fmt_shape(self.grid)} patches of {fmt_shape(self.patch)}"
            )
        self.num_patches = math.prod(self.grid) + (math.prod(self.shifted_grid) if overlap else 0)
        n = self.num_patches
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        channels = in_channels
        for _ in range(num_blocks):
            # (n, out, in, *kernel) stored in-channel-last, so that the flattened (n·out, in,
            # *kernel) view is already in the channels-last format the grouped convolution reads
            # (no weight reorder per call).
            w = torch.empty(n, out_channels, *self.kernel, channels).movedim(-1, 2)
            b = torch.empty(n, out_channels)
            self._reset(w, b, channels)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
            self.norms.append(bn_cls(dims)(n * out_channels) if batch_norm else nn.Identity())
            self.acts.append(nn.Identity() if activation is None else make_activation(activation))
            channels = out_channels
        self._conv = getattr(F, f"conv{dims}d")
        # Computed on the CPU even when the layer is built on the meta device (for shapes only).
        device = self.weights[0].device
        index = self._gather_index()
        inverse, shifted_src, shifted_dst = self._inverse_index(index)
        patch_index = index.view(-1, n).t().contiguous()  # (P, positions in a patch), for pif_cpu
        table = pif_cpu.position_table(self.patch, self.kernel)
        self._first_out = tuple(p - k + 1 for p, k in zip(self.patch, self.kernel, strict=True))
        for name, t in (
            ("_index", index), ("_inverse", inverse), ("_shifted_src", shifted_src),
            ("_shifted_dst", shifted_dst), ("_patch_index", patch_index), ("_table", table),
        ):  # fmt: skip
            self.register_buffer(name, t.to(device), persistent=False)

    def reset_parameters(self) -> None:
        """Every patch's filters drawn again (model-randomisation tests call this); the
        BatchNorms inside reset themselves."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                self._reset(w, b, w.shape[2])

    def _reset(self, weight: Tensor, bias: Tensor, fan_in_channels: int) -> None:
        # PyTorch's Conv default (kaiming-uniform with a=√5), per patch, as in the authors' layer.
        fan_in = fan_in_channels * math.prod(self.kernel)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(weight, -bound, bound)
        nn.init.uniform_(bias, -bound, bound)

    @property
    def output_shape(self) -> Shape:
        """Shape of one sample's output (without batch)."""
        q = self.patch_out
        if not self.reassemble:
            return (self.num_patches * self.out_channels * math.prod(q),)
        channels = self.out_channels * (2 if self.overlap else 1)
        return (channels, *(g * s for g, s in zip(self.grid, q, strict=True)))

    # Patches are cut with one gather in the channels-last layout (B, voxels + 1, C): each index
    # moves a whole channel vector, the shifted grid comes for free, padding voxels read the extra
    # zero row, and the grouped convolution then runs channels-last, which oneDNN does fastest.
    # (Pad-then-permute in (B, C, *spatial) order made several slow copies and was 3-4× slower
    # overall; zeroing the padding with `index_fill` afterwards cost two copies of all patches.)

    def _gather_index(self) -> Tensor:
        """Source row of every (position in patch, patch) pair; padding reads row `voxels`."""
        grids = [(self.grid, (0,) * self.dims)]
        if self.overlap:
            grids.append((self.shifted_grid, self.shift))
        coords = []  # per axis: (patch-position, patch) → source coordinate
        for axis in range(self.dims):
            per_patch = []
            for grid, shift in grids:
                starts = [shift[axis] + g * self.patch[axis] for g in range(grid[axis])]
                shape = [1] * self.dims
                shape[axis] = grid[axis]
                start = torch.tensor(starts, device="cpu").view(shape).expand(*grid).reshape(-1)
                per_patch.append(start)
            patch_start = torch.cat(per_patch)  # (P,)
            offset = torch.arange(self.patch[axis], device="cpu")
            shape = [1] * self.dims
            shape[axis] = self.patch[axis]
            offset = offset.view(shape).expand(*self.patch).reshape(-1, 1)  # (p^d, 1)
            coords.append(offset + patch_start)  # (p^d, P)
        inside = torch.ones_like(coords[0], dtype=torch.bool)
        flat = torch.zeros_like(coords[0])
        for axis, c in enumerate(coords):
            inside &= c < self.input_shape[axis]
            flat = flat * self.input_shape[axis] + c.clamp(max=self.input_shape[axis] - 1)
        return flat.masked_fill(~inside, math.prod(self.input_shape)).reshape(-1)

    def _inverse_index(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For the backward gather: each voxel's row in the main grid's patches, and the
        (row, voxel) pairs of the shifted grid's patches (padding rows left out)."""
        voxels = math.prod(self.input_shape)
        position = torch.arange(index.numel(), device="cpu")
        main = (position % self.num_patches) < math.prod(self.grid)
        inside = index < voxels
        inverse = torch.empty(voxels, dtype=torch.long, device="cpu")
        inverse[index[main & inside]] = position[main & inside]
        shifted = ~main & inside
        return inverse, position[shifted], index[shifted]

    def _assemble(self, y: Tensor, grid: Shape) -> Tensor:
        """(B, P·F, *q) → channels-last (B, *grid·q, F): the inverse of `_split` on the outputs."""
        b, d, q = y.shape[0], self.dims, self.patch_out
        yl = y.movedim(1, -1).reshape(b, *q, *grid, self.out_channels)
        # (B, q0, q1, ..., g0, g1, ..., F) → (B, g0, q0, g1, q1, ..., F)
        order = [0]
        for i in range(d):
            order += [1 + d + i, 1 + i]
        order.append(1 + 2 * d)
        size = [g * s for g, s in zip(grid, q, strict=True)]
        return yl.permute(order).reshape(b, *size, self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) != self.input_shape:
            raise NeuroCNNError(
                f"PIF layer built for {fmt_shape(self.input_shape)} feature maps, got "
                f"{fmt_shape(tuple(x.shape[2:]))}"
            )
        b, c = x.shape[:2]
        blocks = zip(self.weights, self.biases, self.norms, self.acts, strict=True)
        why_not = "impl='conv'" if self.impl == "conv" else pif_cpu.unsupported(x, self.weights[0])
        if why_not is None:
            w, bias, norm, act = next(blocks)
            y = pif_cpu.PatchConv.apply(
                x, w, bias, self._patch_index, self._table, math.prod(self.grid), self._first_out
            )
            y = act(norm(y))
        else:
            if self.impl == "kernel":
                raise NeuroCNNError(f"PIF impl='kernel' cannot run here: {why_not}")
            patches = _GatherPatches.apply(
                x, self._index, self._inverse, self._shifted_src, self._shifted_dst
            )
            y = patches.view(b, *self.patch, self.num_patches * c).movedim(-1, 1)
        for w, bias, norm, act in blocks:
            y = self._conv(y, w.flatten(0, 1), bias.flatten(), groups=self.num_patches)
            y = act(norm(y))
        if not self.reassemble:
            return y.flatten(1)
        n_main = math.prod(self.grid) * self.out_channels
        out = self._assemble(y[:, :n_main], self.grid)
        if self.overlap:
            shifted_out = self._assemble(y[:, n_main:], self.shifted_grid)
            # The shifted grid starts half a patch in, i.e. about half a patch *output* in.
            offset = [
                round(s * q / p) for s, q, p in zip(self.shift, self.patch_out, self.patch, strict=True)
            ]
            pad = [0, 0]
            for o, full, part in reversed(
                list(zip(offset, out.shape[1:-1], shifted_out.shape[1:-1], strict=True))
            ):
                pad += [o, full - part - o]
            out = torch.cat([out, F.pad(shifted_out, pad)], dim=-1)
        return out.movedim(-1, 1)
