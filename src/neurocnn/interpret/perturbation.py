"""Meaningful Perturbation in 3D (Fong & Vedaldi 2017; Kan et al. 2020, S3 equations (1)–(3)).

For one subject x0 and class c, a mask m at 1/s of the input resolution is optimised so that the
perturbed input

    P(x; M) = x ⊙ M + (g_σ0 * x) ⊙ (1 − M),      M = g_σm * Up(m, s)              (1)

loses the class while as little as possible is perturbed:

    loss = mean over K jitters of relu(f_c(P(x^K; M)) − 0.05)
           + r(t) · (λ1 · mean|1 − m| + λ2 · Σ_axes mean |∇M|^β)                      (3)

x^K is x shifted by K ∈ [0, j) voxels along each axis (zero-filled, eq. 2), drawn afresh for each
of the ``jitters`` draws at every step. Defaults are the paper's: σ0 = σm = 10 voxels, λ1 = 3,
λ2 = 1, β = 7, s = 4, j = 5, 10 draws, Adam(lr 0.3, betas (0.9, 0.99)). From the authors' code:
at most 300 iterations, the probability term relu(p − 0.05), the regulariser weight r(t) ramping
from 0 to 1 over the first 60 iterations, Adam with amsgrad and the learning rate ×0.1 every 30
iterations, the mask clamped to [0, 1] after each step, the best mask = lowest loss after
iteration 50, and saliency = 1 − Up(m_best).

What differs from the seed code, on purpose:

- The blurs are real Gaussians (the seed's was a 5³ box filter with zero padding): separable,
  truncated at 4σ like ``scipy.ndimage.gaussian_filter``, zero outside the volume for the image
  (MRI background is 0) and edge-replicating for the mask (zero padding would pull the mask
  towards "perturbed" along the volume's faces, where the optimiser chose nothing).
- The network runs on a private copy with BatchNorm folded into its convolutions; no weight
  gradient is computed; only the mask is optimised. The perturbed volumes enter the network
  channels-last (one volume at a time: 71 ms per MriNet pass against 73 ms; under bfloat16, 44
  against 56 ms).
- Optimisation stops once the full objective has converged: when, after the regulariser ramp
  (and after the start of the best-mask search), ``patience`` steps have not lowered the lowest
  loss seen since the ramp ended. Losses of the ramp are left out of this test: with a lighter
  regulariser they are lower, and a test against them stopped as soon as the ramp ended, while
  the mask still moved. The saliency is the best-loss mask after step ``best_after``, as in the
  authors' code; with their learning-rate schedule (0.003 from step 60, 0.0003 from step 90) the
  mask barely moves after the stop, and ``benchmarks/interpret.py`` compares stopped and
  full-length runs. ``patience=0`` runs all ``max_iter`` steps.
- The jittered volumes of a step go through the network ``jitter_batch`` at a time. By default
  all 10 as one batch on a GPU; on a CPU as many as keep a pass within 600,000 voxels of the
  spatial grid, channels not counted (``CPU_JITTER_VOXELS``; at least one volume, however large):
  a 58×70×58 volume already fills the cores and the activations of ten overflow the caches,
  while small volumes leave the cores idle one at a time. MriNet on the 2-core Intel
  development machine (2026-12-07, ms per step of 10 jitters): 31×37×31 × 3 channels 363 one at
  a time, 146 all ten at once; 46×55×46 about 930 against 660 (3–10 at once alike); 58×70×58
  1,270–1,520 one at a time, 1,220–1,260 two at a time, 1,560–1,630 ten at once. Results are the
  same up to rounding.
- ``precision="bfloat16"`` runs the network under autocast (CPUs with AVX-512 BF16 or AMX, recent
  GPUs): 1.6× faster per MriNet pass on the development machine; the mask, the blurs and the loss
  stay float32. ``benchmarks/interpret.py`` compares its maps with float32's.
- When the first j − 1 slices along every axis are background (zero), the image is blurred once
  per subject and each jittered blur is a crop of it (exact in that case); otherwise each step
  blurs its jittered batch.

Cost on MriNet at 58×70×58: one step is a forward and an input-gradient pass of 10 volumes
(1.3–1.8 CPU-seconds on the 2-core development machine; see ``benchmarks/interpret.py``).

Upsampling and smoothing are linear and separable, so they are applied as one small matrix per
axis (``M = m ×_1 A_x ×_2 A_y ×_3 A_z``; `neurocnn.interpret.separable`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from neurocnn.interpret.attribution import (
    Target,
    as_batch,
    attribution_mode,
    model_device,
    predicted_classes,
    resolve_targets,
    speed_copy,
)
from neurocnn.interpret.separable import apply_separable, gaussian_matrix, upsample_matrix

__all__ = [
    "CPU_JITTER_VOXELS",
    "PerturbationConfig",
    "PerturbationResult",
    "meaningful_perturbation",
]

#: On a CPU, the jittered volumes of a step go through the network in passes of at most this many
#: grid voxels in all, channels not counted, and at least one volume (timings in the module notes).
CPU_JITTER_VOXELS = 600_000


class PerturbationConfig(BaseModel):
    """Hyper-parameters of Meaningful Perturbation; defaults are S3's (paper and authors' code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma_image: float = Field(default=10.0, ge=0.0, description="σ0, voxels (blur of the image)")
    sigma_mask: float = Field(default=10.0, ge=0.0, description="σm, voxels (blur of the mask)")
    l1: float = Field(default=3.0, ge=0.0, description="λ1")
    tv: float = Field(default=1.0, ge=0.0, description="λ2")
    tv_beta: float = Field(default=7.0, gt=0.0, description="β")
    scale: int = Field(default=4, ge=1, description="s: the mask has 1/s of the input resolution")
    jitter: int = Field(default=5, ge=1, description="j: shifts of 0..j-1 voxels per axis")
    jitters: int = Field(default=10, ge=1, description="draws of the shift per step")
    lr: float = Field(default=0.3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.99)
    amsgrad: bool = True
    lr_step: int = Field(default=30, ge=0, description="lr × lr_gamma every lr_step steps (0: never)")
    lr_gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    max_iter: int = Field(default=300, ge=1)
    ramp: int = Field(default=60, ge=0, description="steps over which the regulariser weight rises")
    best_after: int = Field(default=50, ge=0, description="the best mask is searched after this step")
    floor: float = Field(default=0.05, ge=0.0, description="relu(p - floor) in the probability term")
    patience: int = Field(
        default=30,
        ge=0,
        description="stop after this many steps without a lower loss of the full objective (0: never; "
        "30: one period of the learning-rate schedule)",
    )
    jitter_batch: int | None = Field(
        default=None,
        ge=1,
        description="jittered volumes per network pass; None: all at once on a GPU, on a CPU as many as "
        "fit CPU_JITTER_VOXELS voxels",
    )
    precision: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="the network's arithmetic (bfloat16: autocast; mask, blur and loss stay float32)",
    )
    truncate: float = Field(default=4.0, gt=0.0, description="Gaussian kernels end at truncate·σ")


@dataclass
class PerturbationResult:
    """Meaningful Perturbation maps of N subjects and how each optimisation went."""

    saliency: Tensor  # (N, *spatial): 1 − Up(m_best), in [0, 1]
    perturbation: Tensor  # (N, *spatial): 1 − M_best, the smoothed mask the network saw
    masks: Tensor  # (N, 1, *low-res): m_best
    targets: Tensor  # (N,) class explained
    probability: Tensor  # (N,) f_c(x0)
    perturbed_probability: Tensor  # (N,) f_c(P(x0; M_best)), without jitter
    iterations: list[int] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def meaningful_perturbation(
    model: nn.Module,
    inputs: Tensor | np.ndarray,
    target: Target = None,
    *,
    config: PerturbationConfig | None = None,
    seed: int = 0,
    fuse: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> PerturbationResult:
    """Meaningful Perturbation masks of each subject (one optimisation per subject).

    Parameters
    ----------
    model
        A network returning class scores (B, K); left unchanged.
    inputs
        (N, C, X, Y, Z) volumes; the mask is shared by the channels.
    target
        None: the predicted class (as S3); an int, or one class per subject.
    config
        Hyper-parameters (default: S3's).
    seed
        Seed of the jitter draws; subject i uses ``seed + i``, so results do not depend on batching.
    fuse
        Run the network as a copy with BatchNorm folded into its convolutions (faster, same values
        up to float rounding).
    progress
        Called with (subjects done, total) after each subject.

    Returns
    -------
    PerturbationResult
    """
    cfg = config or PerturbationConfig()
    x = as_batch(inputs)
    n = len(x)
    num_classes = getattr(model, "num_classes", None)
    targets = resolve_targets(target, n, num_classes)
    if targets is None:
        targets = predicted_classes(model, x)
    spatial = tuple(int(s) for s in x.shape[2:])
    low = tuple(max(1, s // cfg.scale) for s in spatial)
    net = speed_copy(model) if fuse else model
    device = model_device(net)
    mask_ops = [
        (
            gaussian_matrix(s, cfg.sigma_mask, mode="nearest", truncate=cfg.truncate) @ upsample_matrix(s, d)
        ).to(device)
        for s, d in zip(spatial, low, strict=True)
    ]
    up_ops = [upsample_matrix(s, d).to(device) for s, d in zip(spatial, low, strict=True)]
    blur_ops = [gaussian_matrix(s, cfg.sigma_image, truncate=cfg.truncate).to(device) for s in spatial]
    result = PerturbationResult(
        saliency=torch.zeros((n, *spatial)),
        perturbation=torch.zeros((n, *spatial)),
        masks=torch.zeros((n, 1, *low)),
        targets=targets.clone(),
        probability=torch.zeros(n),
        perturbed_probability=torch.zeros(n),
    )
    with attribution_mode(net):
        for i in range(n):
            start = time.perf_counter()
            best, it, best_it = _optimise(
                net, x[i].to(device), int(targets[i]), cfg, mask_ops, blur_ops, seed + i
            )
            with torch.inference_mode():
                m_full = apply_separable(best, mask_ops)
                xi = x[i : i + 1].to(device)
                blurred = apply_separable(xi, blur_ops)
                probs = torch.softmax(net(torch.cat([xi, xi * m_full + blurred * (1 - m_full)])), 1)
                result.probability[i] = probs[0, targets[i]].cpu()
                result.perturbed_probability[i] = probs[1, targets[i]].cpu()
                result.saliency[i] = (1 - apply_separable(best, up_ops))[0, 0].clamp(0, 1).cpu()
                result.perturbation[i] = (1 - m_full)[0, 0].clamp(0, 1).cpu()
                result.masks[i] = best[0].cpu()
            result.iterations.append(it)
            result.best_iteration.append(best_it)
            result.seconds.append(round(time.perf_counter() - start, 3))
            if progress is not None:
                progress(i + 1, n)
    return result


def default_jitter_batch(jitters: int, spatial: Sequence[int], device_type: str) -> int:
    """Jittered volumes per network pass when ``jitter_batch`` is None (see the module notes)."""
    if device_type != "cpu":
        return jitters
    voxels = int(np.prod(spatial))
    return max(1, min(jitters, CPU_JITTER_VOXELS // max(voxels, 1)))


def _tv(mask: Tensor, beta: float) -> Tensor:
    """Σ over axes of the mean |finite difference|^β (the authors' TV term)."""
    total = mask.new_zeros(())
    for dim in range(2, mask.dim()):
        diff = torch.diff(mask, dim=dim).abs()
        total = total + diff.pow(beta).mean()
    return total


def _pad_end(x: Tensor, j: int) -> Tensor:
    """(C, *s) volume with j zeros appended along every spatial axis."""
    return F.pad(x, [p for _ in x.shape[1:] for p in (0, j)])


def _crops(padded: Tensor, shifts: np.ndarray, spatial: tuple[int, ...]) -> Tensor:
    """The volumes shifted by each row of ``shifts``: crops [k, k + s) of the end-padded volume."""
    crops = []
    for shift in shifts:
        index = (slice(None), *(slice(int(k), int(k) + s) for k, s in zip(shift, spatial, strict=True)))
        crops.append(padded[index])
    return torch.stack(crops)


def _jitter_batch(x: Tensor, shifts: np.ndarray, j: int) -> Tensor:
    """The volume x (C, *s) shifted by each row of ``shifts`` (zero-filled at the far end)."""
    return _crops(_pad_end(x, j), shifts, tuple(x.shape[1:]))


def _leading_zero(x: Tensor, n: int) -> bool:
    """True when the first ``n`` slices along every spatial axis of (C, *s) are all zero."""
    return n == 0 or all(not bool(x.narrow(1 + a, 0, n).any()) for a in range(x.dim() - 1))


def _optimise(
    net: nn.Module,
    x: Tensor,
    target: int,
    cfg: PerturbationConfig,
    mask_ops: list[Tensor],
    blur_ops: list[Tensor],
    seed: int,
) -> tuple[Tensor, int, int]:
    """Optimise one subject's mask; return (best mask (1, 1, *low), steps run, best step)."""
    spatial = tuple(x.shape[1:])
    low = tuple(int(op.shape[1]) for op in mask_ops)
    rng = np.random.default_rng(seed)
    mask = torch.ones((1, 1, *low), device=x.device, requires_grad=True)
    optimiser = torch.optim.Adam([mask], lr=cfg.lr, betas=cfg.betas, amsgrad=cfg.amsgrad)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimiser, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        if cfg.lr_step
        else None
    )
    # Shifting crops off the first k < j slices of each axis. When those are zero (background, as
    # in brain images), the blur of every jittered image is the same crop of the blurred padded
    # image, exactly: one blur per subject instead of one per jitter and step.
    padded = _pad_end(x, cfg.jitter)
    blurred = None
    if _leading_zero(x, cfg.jitter - 1):
        ops = [gaussian_matrix(n, cfg.sigma_image, truncate=cfg.truncate).to(x) for n in padded.shape[1:]]
        blurred = apply_separable(padded[None], ops)[0]
    chunk = cfg.jitter_batch or default_jitter_batch(cfg.jitters, spatial, x.device.type)
    bf16 = cfg.precision == "bfloat16"
    best_loss, best_mask, best_it = float("inf"), mask.detach().clone(), 0
    # Convergence is judged on the full objective only (steps after the ramp): a loss of the ramp,
    # where the regulariser weighs less, is no target that later steps have to beat to continue.
    full_loss, full_it = float("inf"), 0
    it = 0
    for it in range(cfg.max_iter):
        shifts = rng.integers(0, cfg.jitter, size=(cfg.jitters, len(spatial)))
        with torch.enable_grad():
            m_full = apply_separable(mask, mask_ops)  # (1, 1, *spatial)
            reg = cfg.l1 * (1 - mask).abs().mean() + cfg.tv * _tv(m_full, cfg.tv_beta)
        # The probability term, a mean over the jitters, is evaluated in chunks of jitter_batch
        # volumes; its gradient with respect to the full-size mask is accumulated, then passed
        # back through the upsampling together with the regulariser's: the same gradient as one
        # pass over all jitters, with the memory of one chunk.
        m_leaf = m_full.detach().requires_grad_(True)
        grad_m, pred_loss = torch.zeros_like(m_leaf), 0.0
        for part in np.array_split(shifts, -(-len(shifts) // chunk)):
            with torch.no_grad():
                xj = _crops(padded, part, spatial)
                bj = apply_separable(xj, blur_ops) if blurred is None else _crops(blurred, part, spatial)
            with torch.enable_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
                perturbed = bj + (xj - bj) * m_leaf
                if perturbed.dim() == 5:  # oneDNN's fastest 3D layout (a no-op copy for one channel)
                    perturbed = perturbed.contiguous(memory_format=torch.channels_last_3d)
                prob = torch.softmax(net(perturbed).float(), dim=1)[:, target]
                term = F.relu(prob - cfg.floor).sum() / cfg.jitters
                (g,) = torch.autograd.grad(term, m_leaf)
            grad_m += g
            pred_loss += float(term.detach())
        weight = 1.0 if it > cfg.ramp or cfg.ramp == 0 else it / cfg.ramp
        loss = pred_loss + weight * float(reg.detach())
        if it > cfg.best_after and loss <= best_loss:
            best_loss, best_mask, best_it = loss, mask.detach().clone(), it
        if it > cfg.ramp and loss < full_loss:
            full_loss, full_it = loss, it
        elif cfg.patience and it > max(cfg.ramp, cfg.best_after) and it - full_it >= cfg.patience:
            break  # converged: no lower loss of the full objective for `patience` steps
        optimiser.zero_grad(set_to_none=True)
        torch.autograd.backward([m_full, weight * reg], [grad_m, None])
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            mask.clamp_(0, 1)
    if best_it == 0:  # max_iter too small to reach the best-mask search: keep the last mask
        best_mask = mask.detach().clone()
        best_it = it
    return best_mask, it + 1, best_it
