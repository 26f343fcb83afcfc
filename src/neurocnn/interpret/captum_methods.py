"""Occlusion and integrated gradients through Captum, as extra attribution methods.

- Occlusion (Zeiler & Fergus 2014): the drop of the class score when a cube of the input is replaced
  by a baseline, spread over the cube's voxels and averaged over overlapping cubes. Captum's
  ``Occlusion``; its cost is one forward pass per cube position (window 10, stride 5 on 58×70×58:
  ~1,500 passes per subject), batched ``per_eval`` at a time.
- Integrated gradients (Sundararajan et al. 2017): (x − x') times the mean gradient along the straight
  path from the baseline x' (zeros by default) to x, with ``steps`` points. Captum's
  ``IntegratedGradients``.

Both explain the class score (the logit) of the predicted class unless a target is given, run on the
model in evaluation mode with frozen parameters (no weight gradients), and sum the signed
attributions over input channels.
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
    predicted_classes,
    resolve_targets,
)

__all__ = ["integrated_gradients", "occlusion"]


def _captum():  # type: ignore[no-untyped-def]
    try:
        import captum.attr
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise NeuroCNNError("occlusion and integrated gradients need Captum: pip install captum") from exc
    return captum.attr


def _targets(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    t = resolve_targets(target, len(x), getattr(model, "num_classes", None))
    return predicted_classes(model, x) if t is None else t


def occlusion(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    target: Target = None,
    *,
    window: int | tuple[int, ...] = 10,
    stride: int | tuple[int, ...] = 5,
    baseline: float = 0.0,
    per_eval: int = 16,
) -> Tensor:
    """Occlusion maps (N, *spatial): class-score drop when a ``window`` cube is set to ``baseline``.

    Parameters
    ----------
    window, stride
        Cube edge and step in voxels (one value for every axis, or one per axis).
    baseline
        Value of occluded voxels (0 = background of skull-stripped, masked images).
    per_eval
        Occluded copies evaluated per forward pass.
    """
    attr = _captum()
    x = as_batch(inputs)
    ndim = x.dim() - 2
    win = (window,) * ndim if isinstance(window, int) else tuple(window)
    step = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    if len(win) != ndim or len(step) != ndim:
        raise NeuroCNNError(f"occlusion: window and stride need {ndim} values each")
    targets = _targets(model, x, target)
    device = model_device(model)
    out = []
    with attribution_mode(model):
        method = attr.Occlusion(model)
        for sl in batch_slices(len(x), 1):
            a = method.attribute(
                x[sl].to(device),
                sliding_window_shapes=(x.shape[1], *win),
                strides=(x.shape[1], *step),
                baselines=baseline,
                target=targets[sl].to(device),
                perturbations_per_eval=per_eval,
            )
            out.append(a.detach().sum(1).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, *x.shape[2:]))


def integrated_gradients(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    target: Target = None,
    *,
    baseline: Tensor | float = 0.0,
    steps: int = 32,
    batch_size: int = 8,
) -> Tensor:
    """Integrated-gradients maps (N, *spatial), signed, summed over input channels.

    Parameters
    ----------
    baseline
        The reference input x' (a number, or a tensor broadcastable to one subject).
    steps
        Points of the Riemann sum (Gauss–Legendre, Captum's default rule).
    batch_size
        Path points evaluated per pass (Captum's ``internal_batch_size``).
    """
    attr = _captum()
    x = as_batch(inputs)
    targets = _targets(model, x, target)
    device = model_device(model)
    out = []
    with attribution_mode(model):
        method = attr.IntegratedGradients(model)
        for sl in batch_slices(len(x), 1):
            xb = x[sl].to(device)
            base = baseline if isinstance(baseline, float | int) else torch.as_tensor(baseline).to(xb)
            a = method.attribute(
                xb,
                baselines=base,
                target=targets[sl].to(device),
                n_steps=steps,
                internal_batch_size=batch_size,
            )
            out.append(a.detach().sum(1).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, *x.shape[2:]))
