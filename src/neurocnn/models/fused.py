"""Faster CPU execution of patterns that dominate DenseNet, with unchanged modules and results.

- `PointwiseConv3d` / `PointwiseConv2d`: a 1×1(×1) convolution that, on channels-last input, is one
  matrix product over the channel axis (no im2col, no layout conversion inside oneDNN). Same
  parameters and state-dict keys as `nn.Conv3d` / `nn.Conv2d`; other inputs take the usual path.
- `bn_relu`: BatchNorm followed by ReLU computed as one autograd node whose ReLU runs in place on
  the BatchNorm output: one activation tensor written instead of two. The two modules stay in the
  model and are used as usual whenever anything could observe them: when either has hooks
  (Grad-CAM, guided backpropagation, Captum), when global module hooks are set, or when they are
  not exactly `BatchNorm` and `ReLU`. So interpretation sees every ReLU module, called once.
- `avg_pool2_channels_last`: the transitions' 2× average pool without PyTorch's round trip through
  the contiguous layout, forward or backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module


class _PointwiseMixin:
    """1×1 convolution as a matrix product over channels for channels-last inputs."""

    weight: Tensor
    bias: Tensor | None

    def forward(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        if x.is_contiguous(memory_format=fmt) and not x.is_contiguous():
            # (B, C, *S) stored as (B, *S, C): a contiguous view for F.linear, and back.
            y = nn.functional.linear(x.movedim(1, -1), self.weight.flatten(1), self.bias)
            return y.movedim(-1, 1)
        return super().forward(x)  # type: ignore[misc]


class PointwiseConv3d(_PointwiseMixin, nn.Conv3d):
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)


class PointwiseConv2d(_PointwiseMixin, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)


def pointwise_conv(dims: int, in_channels: int, out_channels: int, bias: bool = False) -> nn.Module:
    return (PointwiseConv3d if dims == 3 else PointwiseConv2d)(in_channels, out_channels, bias)


def has_hooks(m: nn.Module) -> bool:
    """Whether anything (hooks on the module, or global module hooks) observes `m`."""
    return bool(
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or m._backward_pre_hooks
        or _global_hooks()
    )


def _global_hooks() -> bool:
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
    ) -> Tensor:
        out, save_mean, save_invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, training, momentum, eps
        )
        out.relu_()
        ctx.save_for_backward(x, out, weight, running_mean, running_var, save_mean, save_invstd)
        ctx.training, ctx.eps = training, eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, out, weight, running_mean, running_var, save_mean, save_invstd = ctx.saved_tensors
        # `out` is needed by nothing after this node (the convolution that read it ran its backward
        # first), so the ReLU's gradient is written over it: one large allocation fewer per layer.
        # A second backward through the graph fails on the saved tensor's version, never silently.
        grad = torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=out)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=_format_of(x)),
            x,
            weight,
            running_mean,
            running_var,
            save_mean,
            save_invstd,
            ctx.training,
            ctx.eps,
            mask,
        )
        return gx, gw, gb, None, None, None, None, None


def _format_of(x: Tensor) -> torch.memory_format:
    if x.dim() in (4, 5):
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        if x.is_contiguous(memory_format=fmt) and not x.is_contiguous():
            return fmt
    return torch.contiguous_format


def bn_relu(norm: nn.Module, relu: nn.Module, x: Tensor) -> Tensor:
    """``relu(norm(x))``, fused when nothing can observe the two modules (module docstring)."""
    plain = (
        type(norm) not in (nn.BatchNorm2d, nn.BatchNorm3d)
        or type(relu) is not nn.ReLU
        or not norm.affine
        or has_hooks(norm)
        or has_hooks(relu)
        or x.device.type != "cpu"
        or (norm.training and x.numel() == x.shape[1])  # let BatchNorm raise its own error
    )
    if plain:
        return relu(norm(x))
    assert isinstance(norm, nn.modules.batchnorm._BatchNorm)
    training = norm.training or not norm.track_running_stats
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    use_running = not norm.training or norm.track_running_stats
    return _BatchNormReLU.apply(
        x,
        norm.weight,
        norm.bias,
        norm.running_mean if use_running else None,
        norm.running_var if use_running else None,
        training,
        momentum,
        norm.eps,
    )


class _AvgPool2ChannelsLast(torch.autograd.Function):
    """2× average pool (kernel = stride = 2, floor) of a channels-last tensor, kept channels-last.

    PyTorch's `avg_pool3d` converts a channels-last input to contiguous, and returns contiguous
    results and gradients: two extra passes over DenseNet's largest tensors. Here the forward is
    pairwise sums over channel vectors and the gradient is written once, straight into the
    channels-last layout: each output gradient / 2^d, repeated over its 2^d voxels.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.input_shape = x.shape
        # Pairwise sums along each axis of the (N, *spatial, C) view: elementwise adds over whole
        # channel vectors, 1.75 passes over the input, and the result is channels-last already.
        v = x.movedim(1, -1)
        for axis in range(1, x.dim() - 1):
            n = v.shape[axis] // 2
            v = v.narrow(axis, 0, 2 * n).unflatten(axis, (n, 2))
            v = v.select(axis + 1, 0) + v.select(axis + 1, 1)
        return v.mul_(1.0 / 2 ** (x.dim() - 2)).movedim(-1, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        shape = ctx.input_shape
        dims = len(shape) - 2
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        gx = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        pooled = grad.shape[2:]
        # (N, *spatial, C) views: the covered block split into (n, 2) pairs per axis
        g_in = gx.movedim(1, -1)[(slice(None), *(slice(0, 2 * n) for n in pooled))]
        for axis, n in enumerate(pooled):
            g_in = g_in.unflatten(1 + 2 * axis, (n, 2))
        src = (grad * (1.0 / 2**dims)).movedim(1, -1)  # scaled at the pooled size: 2^d× cheaper
        for axis in range(dims):
            src = src.unsqueeze(2 + 2 * axis)
        g_in.copy_(src.expand(g_in.shape))
        # voxels the floor-mode pool never read (an odd last row/column/slice) get zero
        full = gx.movedim(1, -1)
        for axis, n in enumerate(pooled):
            if shape[2 + axis] > 2 * n:
                full.narrow(1 + axis, 2 * n, shape[2 + axis] - 2 * n).zero_()
        return gx


def avg_pool2_channels_last(x: Tensor) -> Tensor:
    """``avg_pool{2,3}d(x, 2, 2)`` in `x`'s layout; the fast path for channels-last CPU tensors."""
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    channels_last = x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
    if x.dim() in (4, 5) and x.device.type == "cpu" and channels_last:
        return _AvgPool2ChannelsLast.apply(x)
    pool = nn.functional.avg_pool3d if x.dim() == 5 else nn.functional.avg_pool2d
    return pool(x, 2, 2)
