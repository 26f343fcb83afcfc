"""Grad-CAM for any model and target layer, in 2D or 3D, batched over subjects.

Selvaraju RR, et al. "Grad-CAM: visual explanations from deep networks via gradient-based
localization." ICCV 2017; in 3D as Kan et al. 2020 (S3), equations (6)–(7):

    α_k^c = mean over all spatial positions of ∂y^c/∂F^k         (all three axes, eq. 6)
    map_c = ReLU(Σ_k α_k^c F^k), upsampled trilinearly to the input grid   (eq. 7)

Upsampling places each cell at the centre of its receptive field (`neurocnn.interpret.geometry`):
for MriNet's unpadded convolutions the usual stretch over the whole input is 1.45× too wide.

y^c is the class score (the logit) of the predicted class, or of a class the caller gives. The
seed code always used class 1 and averaged the gradients over two of the three axes; neither is
reproduced here.

``variant="hirescam"`` is HiResCAM (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for
faithful explanations of convolutional neural networks", 2020): ReLU(Σ_k ∂y^c/∂F^k ⊙ F^k), the
gradient multiplied position by position instead of averaged first. For a network whose head is
flatten → one linear layer after the target layer (MriNet), its sum over positions and channels is
exactly the class score minus the bias, so it shows where the score comes from; Grad-CAM's
averaging can move attribution to where activations are merely large.

That is what happens on MriNet. Its last block feeds flatten → linear, so the gradient there is the
linear layer's weights, the same for every input: Grad-CAM's α_k is the mean of channel k's weights
over positions and the map is ReLU(Σ_k ᾱ_k F^k), the activations weighted by a constant. On the
synthetic cohort with three planted regions (benchmarks/RESULTS.md, "Interpretation ground
truth"), Grad-CAM placed 0/3 planted regions in the top 5 at `features.block3`, 1/3 at block2 and
0/3 at block1 (1.1–1.3× enrichment), while HiResCAM at `features.block1` ranked them 1–3 with 3.6×
enrichment and passed the randomisation test. For networks with a flatten head prefer
``variant="hirescam"`` at an early layer (``neurocnn interpret RUN --methods hirescam --layer ...``).

Only the part of the network after the target layer needs a backward pass: a forward hook hands
the rest of the network a detached copy of the layer's output that requires gradients, so no
graph is recorded before the layer and no weight gradient is computed anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurocnn.errors import NeuroCNNError
from neurocnn.interpret.attribution import (
    Target,
    as_batch,
    attribution_mode,
    batch_slices,
    model_device,
    resolve_layer,
    resolve_targets,
    spatial_dims,
    speed_copy,
)
from neurocnn.interpret.geometry import LayerGeometry, layer_geometry, place_on_input

__all__ = ["grad_cam", "upsample_to"]


def grad_cam(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    target: Target = None,
    *,
    layer: str | None = None,
    batch_size: int = 16,
    relu: bool = True,
    upsample: bool = True,
    fuse: bool = True,
    variant: str = "gradcam",
) -> Tensor:
    """Grad-CAM (or HiResCAM) maps of a batch of subjects.

    Parameters
    ----------
    model
        A network returning class scores (B, K). Left unchanged (evaluation mode and frozen
        parameters only while this runs).
    inputs
        (N, C, X, Y, Z) volumes (or (N, C, X, Y) images).
    target
        None: each subject's predicted class; an int: that class for all; a sequence: one per subject.
    layer
        Dotted module name (``model.get_submodule``); default ``model.gradcam_layer``. Its output must
        be a (B, K, *spatial) tensor with as many spatial axes as the input; for a multimodal model
        pass each of ``model.gradcam_layers`` in turn.
    batch_size
        Subjects per forward pass.
    relu
        Apply the ReLU of eq. (7) (turn off to see negative evidence).
    upsample
        Place the map on the input grid: each cell at the centre of its receptive field, traced
        from the network's convolutions and poolings (`neurocnn.interpret.geometry`), linear in
        between; the plain stretch (trilinear, ``align_corners=False``) only when the geometry
        cannot be traced. Otherwise the map stays on the layer's grid.
    fuse
        Work on a copy with BatchNorm folded into the convolutions (same result up to float
        rounding, faster). ``False`` runs the model as given.
    variant
        ``"gradcam"`` (channel weights = gradients averaged over positions) or ``"hirescam"``
        (gradients times activations position by position).

    Returns
    -------
    Tensor
        float32 (N, X, Y, Z) maps on the CPU (the layer's grid without ``upsample``).

    Examples
    --------
    >>> from neurocnn.models import build
    >>> net = build("mrinet", input_shape=(58, 70, 58))
    >>> maps = grad_cam(net, torch.randn(2, 1, 58, 70, 58))   # doctest: +SKIP
    >>> maps.shape                                             # doctest: +SKIP
    torch.Size([2, 58, 70, 58])
    """
    if variant not in ("gradcam", "hirescam"):
        raise NeuroCNNError(f"variant must be 'gradcam' or 'hirescam', got {variant!r}")
    x = as_batch(inputs)
    name, _ = resolve_layer(model, layer)
    targets = resolve_targets(target, len(x), getattr(model, "num_classes", None))
    # (the target layer is kept unfused: folding a following BatchNorm into it would explain
    # the normalised output instead of the layer's own)
    net = speed_copy(model, keep=(name,)) if fuse else model
    module = net.get_submodule(name)
    device = model_device(net)
    maps: list[Tensor] = []
    geometry: LayerGeometry | None = None
    with attribution_mode(net):
        for sl in batch_slices(len(x), batch_size):
            xb = x[sl].to(device)
            if upsample and sl.start == 0:
                geometry = layer_geometry(net, module, xb)
            activations, grads, scores = _layer_gradients(net, module, name, xb, targets, sl)
            dims = spatial_dims(activations)
            if activations.dim() != xb.dim() or activations.shape[0] != xb.shape[0]:
                raise NeuroCNNError(
                    f"Grad-CAM layer {name!r} gives activations shaped {tuple(activations.shape)} "
                    f"for inputs {tuple(xb.shape)}; choose a layer whose output is (B, K, *spatial) "
                    "on the input's axes (slice-wise 2D models have no 3D Grad-CAM layer)"
                )
            if variant == "gradcam":
                weights = grads.mean(dim=dims, keepdim=True)  # eq. (6): all spatial axes
                cam = (weights * activations).sum(dim=1)
            else:
                cam = (grads * activations).sum(dim=1)
            if relu:
                cam = cam.clamp_min(0)
            if upsample:
                cam = place_on_input(cam, tuple(xb.shape[2:]), geometry)
            maps.append(cam.float().cpu())
            del scores
    return torch.cat(maps) if maps else torch.zeros((0, *x.shape[2:]))


def upsample_to(maps: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(B, *s) maps stretched over ``shape`` by (tri/bi)linear interpolation, ``align_corners=False``
    (the convention of Captum's ``LayerAttribution.interpolate``). :func:`grad_cam` places maps by
    the layer's traced geometry instead (`neurocnn.interpret.geometry`)."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(maps[:, None].float(), size=shape, mode=mode, align_corners=False)[:, 0]


def _layer_gradients(
    net: nn.Module,
    module: nn.Module,
    name: str,
    xb: Tensor,
    targets: Tensor | None,
    sl: slice,
) -> tuple[Tensor, Tensor, Tensor]:
    """Activations of ``module``, gradients of the target scores w.r.t. them, and the scores."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise NeuroCNNError(
                f"Grad-CAM layer {name!r} returns {type(output).__name__}, not a tensor; choose another layer"
            )
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = net(xb)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise NeuroCNNError(
            f"Grad-CAM layer {name!r} ran {len(captured)} times in one forward pass; choose a layer "
            "that runs once (for a multimodal model, one of model.gradcam_layers)"
        )
    tb = logits.detach().argmax(1) if targets is None else targets[sl].to(logits.device)
    scores = logits.gather(1, tb[:, None]).sum()
    (grads,) = torch.autograd.grad(scores, captured[0])
    return captured[0].detach(), grads, scores.detach()
