"""Faster CPU execution of two patterns that dominate DenseNet, with unchanged modules and results.

- `PointwiseConv3d` / `PointwiseConv2d`: a 1×1(×1) convolution that, on channels-last input, is one
  matrix product over the channel axis (no im2col, no layout conversion inside oneDNN). Same
  parameters and state-dict keys as `nn.Conv3d` / `nn.Conv2d`; other inputs take the usual path.
- `bn_relu`: BatchNorm followed by ReLU computed as one autograd node whose ReLU runs in place on
  the BatchNorm output: one activation tensor written instead of two. The two modules stay in the
  model and are used as usual whenever anything could observe them: when either has hooks
  (Grad-CAM, guided backpropagation, Captum), when global module hooks are set, or when they are
  not exactly `BatchNorm` and `ReLU`. So interpretation sees every ReLU module, called once.
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
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
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
