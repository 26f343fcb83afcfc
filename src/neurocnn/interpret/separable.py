"""Separable linear operators on 3D volumes: Gaussian blur and linear upsampling as one small
matrix per axis (``M = m ×_1 A_x ×_2 A_y ×_3 A_z``), used by Meaningful Perturbation.

The Gaussian is scipy's (``scipy.ndimage.gaussian_filter``: sampled, normalised, truncated at
``truncate·σ``); the upsampling is PyTorch's ``interpolate(mode="linear", align_corners=False)``
written out as a matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neurocnn.errors import NeuroCNNError

__all__ = ["apply_separable", "gaussian_blur", "gaussian_matrix", "upsample_matrix"]


def gaussian_matrix(
    n: int, sigma: float, *, mode: str = "constant", truncate: float = 4.0, dtype=torch.float32
) -> Tensor:
    """(n, n) matrix G with ``G @ v`` the 1D Gaussian smoothing of a length-n signal ``v``.

    The kernel is the sampled Gaussian normalised to sum 1 over its ``2·int(truncate·σ + 0.5) + 1``
    taps (``scipy.ndimage.gaussian_filter1d``). ``mode="constant"`` treats values outside as 0,
    ``"nearest"`` repeats the edge value. ``sigma = 0`` gives the identity.
    """
    if sigma <= 0:
        return torch.eye(n, dtype=dtype)
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    g = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for offset, w in zip(offsets, kernel, strict=True):
        cols = rows + offset
        if mode == "nearest":
            np.add.at(g, (rows, np.clip(cols, 0, n - 1)), w)
        elif mode == "constant":
            ok = (cols >= 0) & (cols < n)
            g[rows[ok], cols[ok]] += w
        else:
            raise NeuroCNNError(f"gaussian_matrix: mode must be 'constant' or 'nearest', got {mode!r}")
    return torch.as_tensor(g, dtype=dtype)


def upsample_matrix(n_out: int, n_in: int, dtype=torch.float32) -> Tensor:
    """(n_out, n_in) matrix of 1D linear interpolation as ``F.interpolate(align_corners=False)``."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]  # (1, C=n_in, L=n_in)
    up = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]  # (n_in, n_out)
    return up.T.contiguous().to(dtype)


def apply_separable(volume: Tensor, mats: Sequence[Tensor]) -> Tensor:
    """Apply one matrix per spatial axis: (B, C, *s_in) -> (B, C, *s_out)."""
    ndim = volume.dim() - 2
    if len(mats) != ndim:
        raise ValueError(f"expected {ndim} matrices, got {len(mats)}")
    out = volume
    for axis, mat in enumerate(mats):
        # one plain (rows, n_in) @ (n_in, n_out) product per axis; a broadcast matmul on a
        # non-contiguous view falls back to thousands of tiny batched products
        moved = torch.movedim(out, 2 + axis, -1).contiguous()
        flat = moved.reshape(-1, moved.shape[-1]) @ mat.T
        out = torch.movedim(flat.reshape(*moved.shape[:-1], mat.shape[0]), -1, 2 + axis)
    return out.contiguous()


def gaussian_blur(volume: Tensor, sigma: float, *, mode: str = "constant", truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur of (B, C, *spatial) with σ in voxels (scipy's definition)."""
    mats = [
        gaussian_matrix(n, sigma, mode=mode, truncate=truncate, dtype=volume.dtype).to(volume.device)
        for n in volume.shape[2:]
    ]
    return apply_separable(volume, mats)
