"""Guided backpropagation (Springenberg et al. 2015), as used in 3D by Kan et al. 2020 (S3).

At every ReLU module the backward pass keeps a gradient only where it is positive and where the
ReLU's forward input was positive (S3 eq. 5): ``G^l = (f^l > 0) · (G^{l+1} > 0) · G^{l+1}``. The map is
the ReLU of the gradient of the class score with respect to the input.

The rule is applied through forward hooks on the model's ``nn.ReLU`` modules that route the ReLU
through a function with the guided backward pass; the hooks are removed before returning, so the
model is unchanged. ReLUs called functionally (``F.relu``) are not seen by hooks; every model of the
zoo uses modules. Other activations (ELU) keep their ordinary gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.attribution import (
    Target,
    as_batch,
    attribution_mode,
    batch_slices,
    model_device,
    resolve_targets,
    speed_copy,
)

__all__ = ["guided_backprop", "guided_relus"]


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward pass lets through positive gradients at positive inputs only."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp_min(0) * (out > 0)


class guided_relus:
    """Context manager: every ``nn.ReLU`` of ``model`` back-propagates the guided way inside it."""

    def __init__(self, model: nn.Module) -> None:
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if not self.relus:
            raise NeuroCNNError(
                f"{type(model).__name__} has no nn.ReLU modules, so guided backpropagation is not "
                "defined for it (it may use ELU or functional ReLUs); use Grad-CAM or integrated "
                "gradients"
            )
        self.handles: list = []

    def __enter__(self) -> guided_relus:
        def hook(_module: nn.Module, args: tuple, _output: Tensor) -> Tensor:
            return _GuidedReLU.apply(args[0])

        self.handles = [m.register_forward_hook(hook) for m in self.relus]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def guided_backprop(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    target: Target = None,
    *,
    batch_size: int = 8,
    channels: str = "sum",
    fuse: bool = True,
) -> Tensor:
    """Guided-backpropagation maps ``ReLU(∂y^c/∂x)`` of a batch of subjects.

    Parameters
    ----------
    model
        A network returning class scores (B, K) with ``nn.ReLU`` modules; left unchanged.
    inputs
        (N, C, X, Y, Z) volumes.
    target
        None: predicted class; an int, or one class per subject.
    batch_size
        Subjects per pass.
    channels
        ``"sum"``: add the maps of the input channels (modalities) into one (N, X, Y, Z) map;
        ``"keep"``: return (N, C, X, Y, Z).
    fuse
        Work on a copy with BatchNorm folded into the convolutions (same map up to float rounding).

    Returns
    -------
    Tensor
        float32 maps on the CPU, non-negative.
    """
    if channels not in ("sum", "keep"):
        raise NeuroCNNError(f"channels must be 'sum' or 'keep', got {channels!r}")
    x = as_batch(inputs)
    targets = resolve_targets(target, len(x), getattr(model, "num_classes", None))
    net = speed_copy(model) if fuse else model
    device = model_device(net)
    maps: list[Tensor] = []
    with attribution_mode(net), guided_relus(net):
        for sl in batch_slices(len(x), batch_size):
            xb = x[sl].to(device).requires_grad_(True)
            with torch.enable_grad():
                logits = net(xb)
                tb = logits.detach().argmax(1) if targets is None else targets[sl].to(logits.device)
                score = logits.gather(1, tb[:, None]).sum()
                (grad,) = torch.autograd.grad(score, xb)
            g = grad.clamp_min(0)
            maps.append((g.sum(1) if channels == "sum" else g).float().cpu())
    if not maps:
        return torch.zeros((0, *x.shape[2:]) if channels == "sum" else x.shape)
    return torch.cat(maps)
