"""Compiled CPU kernels for the first convolution of a PIF layer: cut patches and convolve in one pass.

The generic path (`pif.PIFLayer` with ``impl="conv"``) gathers every patch into a new tensor and
runs oneDNN's grouped convolution with one group per patch. With a handful of filters per patch
(S2 uses 6) oneDNN pads the filters to a block of 16 and reorders the weights to and from its
blocked layouts on every call, and the gathered copy of all patches is written, read and written
back as a gradient. These kernels (numba, compiled on first use) read the input's channel rows
(a view of a channels-last input, one transposing copy of an NCDHW one): each (sample, patch) task
copies its patch's rows to a private buffer (padding reads zeros), builds one im2col column per
output position in cache, and accumulates the convolution, its input gradient and its weight
gradient directly:

- forward: 3 filters × 4 output positions per pass, 12 products for every 7 loads;
- input gradient: every voxel lies in exactly one patch of the main grid, so each (sample,
  patch) builds its patch's gradient in a private buffer and writes its rows once (no atomics;
  the shifted grid of the overlap option adds its rows in a second pass);
- weight gradient: one patch per task, the filters in blocks of 3 share each column load (a
  patch's whole weight gradient, 41 KB in S2's layer, stays in the L1 cache).

float32 on the CPU only; everything else (CUDA, bfloat16 autocast, float64, the meta device, a
process forked from one that ran the kernels) takes the grouped convolution.
`benchmarks/models.py --only pif` times both against a per-patch loop.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

# The kernels below are plain Python until `_kernels()` compiles them (numba is imported on first
# use: 0.4 s that a run without a PIF layer does not pay); `prange` becomes numba's parallel range.
prange = range


_LOCK = threading.Lock()
_LAUNCHED_IN: int | None = None  # pid of the process whose OpenMP threads ran the kernels


@functools.cache
def available() -> bool:
    """numba is a dependency; where it is missing or does not import (e.g. a NumPy newer than it
    supports) the grouped convolution runs."""
    try:
        import numba  # noqa: F401
    except Exception:  # any failure to import means: no kernels
        return False
    return True


def unsupported(x: Tensor, weight: Tensor) -> str | None:
    """Why the kernels cannot run this call (the caller then takes the grouped convolution), or None."""
    if not available():
        return "numba is not installed or does not import"
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return f"they run float32 on the CPU only, got {x.dtype} on {x.device}"
    if torch.is_autocast_enabled("cpu"):
        return "they do not run under CPU autocast (bfloat16)"
    if _LAUNCHED_IN is not None and os.getpid() != _LAUNCHED_IN:
        # GNU OpenMP does not survive fork(): a child of a process that ran the kernels is killed
        # on its first parallel launch
        return "this process was forked from one that ran them (OpenMP is not fork-safe)"
    return None


def position_table(patch: Sequence[int], kernel: Sequence[int]) -> Tensor:
    """(Q, K): the position inside a patch (row-major over `patch`) that output position q reads
    at kernel offset k, for a valid convolution of `kernel` on one patch."""
    out = [p - k + 1 for p, k in zip(patch, kernel, strict=True)]
    table = [
        [
            sum(
                (qi + ki) * math.prod(patch[axis + 1 :])
                for axis, (qi, ki) in enumerate(zip(q, k, strict=True))
            )
            for k in itertools.product(*(range(n) for n in kernel))
        ]
        for q in itertools.product(*(range(n) for n in out))
    ]
    return torch.tensor(table, dtype=torch.long)


def _load_patch(src, b, index_p, patch):  # type: ignore[no-untyped-def]
    # patch (S, C) ← the voxel rows index_p of sample b of src (B, V, C); index V is padding (zeros)
    voxels, channels = src.shape[1], src.shape[2]
    for s in range(index_p.shape[0]):
        v = index_p[s]
        if v < voxels:
            for c in range(channels):
                patch[s, c] = src[b, v, c]
        else:
            for c in range(channels):
                patch[s, c] = 0


def _store_patch(dst, b, index_p, patch, add):  # type: ignore[no-untyped-def]
    # the voxel rows index_p of sample b of dst (B, V, C) ← (or +=) patch (S, C); padding skipped
    voxels, channels = dst.shape[1], dst.shape[2]
    for s in range(index_p.shape[0]):
        v = index_p[s]
        if v < voxels and add:
            for c in range(channels):
                dst[b, v, c] += patch[s, c]
        elif v < voxels:
            for c in range(channels):
                dst[b, v, c] = patch[s, c]


_PY_HELPERS = (_load_patch, _store_patch)


def _forward(src, index, table, weight, bias, out):  # type: ignore[no-untyped-def]
    # src (B, V, C); index (P, S); table (Q, K); weight (P, F, K·C); bias (P, F);
    # out (B, P, F, Q)
    batch, patches = src.shape[0], index.shape[0]
    positions, offsets = table.shape
    channels, filters = src.shape[2], weight.shape[1]
    width = offsets * channels
    for task in prange(batch * patches):
        b, p = task // patches, task % patches
        patch = np.empty((index.shape[1], channels), np.float32)
        _load_patch(src, b, index[p], patch)
        col = np.empty((4, width), np.float32)
        for q0 in range(0, positions, 4):
            n = min(4, positions - q0)
            for j in range(4):
                q = q0 + min(j, n - 1)
                for k in range(offsets):
                    row = patch[table[q, k]]
                    for c in range(channels):
                        col[j, k * channels + c] = row[c]
            c0, c1, c2, c3 = col[0], col[1], col[2], col[3]
            f = 0
            while f < filters:  # 3 filters × 4 positions: 12 sums share each load
                w0 = weight[p, f]
                w1 = weight[p, min(f + 1, filters - 1)]
                w2 = weight[p, min(f + 2, filters - 1)]
                s00 = s01 = s02 = s03 = np.float32(0)
                s10 = s11 = s12 = s13 = np.float32(0)
                s20 = s21 = s22 = s23 = np.float32(0)
                for i in range(width):
                    x0, x1, x2, x3 = c0[i], c1[i], c2[i], c3[i]
                    v0, v1, v2 = w0[i], w1[i], w2[i]
                    s00 += v0 * x0
                    s01 += v0 * x1
                    s02 += v0 * x2
                    s03 += v0 * x3
                    s10 += v1 * x0
                    s11 += v1 * x1
                    s12 += v1 * x2
                    s13 += v1 * x3
                    s20 += v2 * x0
                    s21 += v2 * x1
                    s22 += v2 * x2
                    s23 += v2 * x3
                sums = ((s00, s01, s02, s03), (s10, s11, s12, s13), (s20, s21, s22, s23))
                for j in range(min(3, filters - f)):
                    o, sj, bj = out[b, p, f + j], sums[j], bias[p, f + j]
                    for m in range(n):
                        o[q0 + m] = bj + sj[m]
                f += 3


def _input_grad(grad_src, index, table, grad, weight, first, last, add):  # type: ignore[no-untyped-def]
    # grad_src (B, V, C): voxels of patches first..last-1 written (add: added);
    # grad (B, P, F, Q)
    batch, positions, offsets = grad_src.shape[0], table.shape[0], table.shape[1]
    channels, filters, size = grad_src.shape[2], weight.shape[1], index.shape[1]
    count = last - first
    for task in prange(batch * count):
        b, p = task // count, first + task % count
        buf = np.zeros((size, channels), np.float32)
        w, g = weight[p], grad[b, p]
        for q in range(positions):
            for k in range(offsets):
                dst = buf[table[q, k]]
                o = k * channels
                f = 0
                while f + 3 <= filters:
                    g0, g1, g2 = g[f, q], g[f + 1, q], g[f + 2, q]
                    w0, w1, w2 = w[f], w[f + 1], w[f + 2]
                    for c in range(channels):
                        dst[c] += g0 * w0[o + c] + g1 * w1[o + c] + g2 * w2[o + c]
                    f += 3
                while f < filters:
                    g0, w0 = g[f, q], w[f]
                    for c in range(channels):
                        dst[c] += g0 * w0[o + c]
                    f += 1
        _store_patch(grad_src, b, index[p], buf, add)


def _weight_grad(src, index, table, grad, grad_weight):  # type: ignore[no-untyped-def]
    # src (B, V, C); grad_weight (P, F, K·C), overwritten
    batch, patches = src.shape[0], index.shape[0]
    positions, offsets = table.shape
    channels, filters = src.shape[2], grad.shape[2]
    width = offsets * channels
    for p in prange(patches):
        patch = np.empty((index.shape[1], channels), np.float32)
        col = np.empty(width, np.float32)
        acc = grad_weight[p]
        acc[:] = 0
        for b in range(batch):
            _load_patch(src, b, index[p], patch)
            g = grad[b, p]
            for q in range(positions):
                for k in range(offsets):
                    row = patch[table[q, k]]
                    for c in range(channels):
                        col[k * channels + c] = row[c]
                f = 0
                while f + 3 <= filters:
                    g0, g1, g2 = g[f, q], g[f + 1, q], g[f + 2, q]
                    a0, a1, a2 = acc[f], acc[f + 1], acc[f + 2]
                    for i in range(width):
                        xi = col[i]
                        a0[i] += g0 * xi
                        a1[i] += g1 * xi
                        a2[i] += g2 * xi
                    f += 3
                while f < filters:
                    g0, a0 = g[f, q], acc[f]
                    for i in range(width):
                        a0[i] += g0 * col[i]
                    f += 1


@functools.cache
def _kernels() -> SimpleNamespace:
    """The kernels compiled by numba (cached on disk where numba finds a writable directory)."""
    global prange, _load_patch, _store_patch
    import numba

    def jit(fn: Any, **options: Any) -> Any:
        try:
            return numba.njit(fastmath=True, cache=True, **options)(fn)
        except RuntimeError:  # no writable cache directory: compile in every process instead
            return numba.njit(fastmath=True, **options)(fn)

    with _LOCK:  # two threads' first calls must not both rebind the globals
        # read from this module's globals when numba compiles the kernels: the parallel range and
        # the helpers, compiled and inlined (always from the Python originals, so a failed first
        # call can be retried)
        prange = numba.prange
        _load_patch = jit(_PY_HELPERS[0], inline="always")
        _store_patch = jit(_PY_HELPERS[1], inline="always")
        forward, input_grad, weight_grad = (
            jit(f, parallel=True) for f in (_forward, _input_grad, _weight_grad)
        )
    return SimpleNamespace(forward=forward, input_grad=input_grad, weight_grad=weight_grad)


@contextlib.contextmanager
def _torch_threads() -> Iterator[None]:
    """Run numba's parallel loops on torch's thread count, and leave torch's setting as it was
    (launching numba's OpenMP threading layer reset torch's thread count to numba's in our runs)."""
    import numba

    global _LAUNCHED_IN
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    _LAUNCHED_IN = os.getpid()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _channel_rows(x: Tensor) -> Tensor:
    """(B, C, *spatial) → (B, voxels, C) rows: a view of a channels-last x, else a transposed copy."""
    b, c = x.shape[:2]
    return x.movedim(1, -1).reshape(b, math.prod(x.shape[2:]), c)


class PatchConv(torch.autograd.Function):
    """x (B, C, *spatial), weight (P, F, C, *kernel) stored in-channel-last, bias (P, F) →
    (B, P·F, *q): every patch's own valid convolution, as the grouped convolution computes it.
    Differentiable once (a second backward through the gradient, ``create_graph=True``, raises;
    the grouped convolution supports it: ``PIFLayer(..., impl="conv")``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        index: Tensor,
        table: Tensor,
        main: int,
        out_shape: tuple[int, ...],
    ) -> Tensor:
        channels_last = x.movedim(1, -1).is_contiguous()
        rows = _channel_rows(x.detach())
        patches, filters = weight.shape[:2]
        w = weight.detach().movedim(2, -1).reshape(patches, filters, -1)  # a view: (P, F, K·C)
        out = x.new_empty(x.shape[0], patches, filters, table.shape[0])
        with _torch_threads():
            _kernels().forward(
                rows.numpy(), index.numpy(), table.numpy(), w.contiguous().numpy(),
                bias.detach().contiguous().numpy(), out.numpy(),
            )  # fmt: skip
        ctx.save_for_backward(rows, weight, index, table)
        ctx.main, ctx.x_shape, ctx.channels_last = main, tuple(x.shape), channels_last
        return out.view(x.shape[0], patches * filters, *out_shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        rows, weight, index, table = ctx.saved_tensors
        patches, filters = weight.shape[:2]
        b, c, *spatial = ctx.x_shape
        g = grad.contiguous().view(b, patches, filters, table.shape[0])
        gn, idx, tab = g.numpy(), index.numpy(), table.numpy()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            w = weight.detach().movedim(2, -1).reshape(patches, filters, -1).contiguous().numpy()
            grad_rows = torch.empty_like(rows)  # every voxel lies in exactly one main-grid patch
            with _torch_threads():
                _kernels().input_grad(grad_rows.numpy(), idx, tab, gn, w, 0, ctx.main, False)
                if ctx.main < patches:  # the shifted grid of the overlap option
                    _kernels().input_grad(grad_rows.numpy(), idx, tab, gn, w, ctx.main, patches, True)
            grad_x = grad_rows.view(b, *spatial, c).movedim(-1, 1)
            if not ctx.channels_last:  # the input's own layout
                grad_x = grad_x.contiguous()
        if ctx.needs_input_grad[1]:
            kernel = weight.shape[3:]
            flat = rows.new_empty(patches, filters, *kernel, c)  # (P, F, K·C) = in-channel-last
            with _torch_threads():
                _kernels().weight_grad(rows.numpy(), idx, tab, gn, flat.view(patches, filters, -1).numpy())
            grad_w = flat.movedim(-1, 2)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum((0, 3))
        return grad_x, grad_w, grad_b, None, None, None, None
