"""Meaningful Perturbation: a real Gaussian, exact upsampling, and the mask lands where the model looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from interpret_fixtures import one_thread  # noqa: F401  (fixture)
from neurocnn.interpret import PerturbationConfig, gaussian_blur, meaningful_perturbation
from neurocnn.interpret.perturbation import (
    _crops,
    _jitter_batch,
    _leading_zero,
    _pad_end,
    _tv,
    default_jitter_batch,
)
from neurocnn.interpret.separable import apply_separable, gaussian_matrix, upsample_matrix


@pytest.mark.parametrize(("sigma", "mode"), [(1.5, "constant"), (10.0, "constant"), (3.0, "nearest")])
def test_gaussian_matrix_equals_scipy(sigma: float, mode: str) -> None:
    v = np.random.default_rng(0).standard_normal(23)
    ours = gaussian_matrix(23, sigma, mode=mode, dtype=torch.float64).numpy() @ v
    np.testing.assert_allclose(ours, ndimage.gaussian_filter1d(v, sigma, mode=mode, truncate=4.0), atol=1e-12)


def test_gaussian_blur_equals_scipy_in_3d_and_is_not_a_box_filter() -> None:
    x = np.zeros((1, 1, 15, 17, 13))
    x[0, 0, 7, 8, 6] = 1.0
    ours = gaussian_blur(torch.as_tensor(x), 2.0).numpy()[0, 0]
    np.testing.assert_allclose(ours, ndimage.gaussian_filter(x[0, 0], 2.0, mode="constant"), atol=1e-12)
    profile = ours[7, 8, :]
    assert np.all(np.diff(profile[:7]) > 0) and np.all(np.diff(profile[6:]) < 0)  # strictly peaked


def test_upsample_matrices_equal_trilinear_interpolation() -> None:
    m = torch.rand(2, 1, 4, 5, 3, dtype=torch.float64)
    mats = [upsample_matrix(n, d, dtype=torch.float64) for n, d in zip((17, 21, 13), (4, 5, 3), strict=True)]
    ref = F.interpolate(m, size=(17, 21, 13), mode="trilinear", align_corners=False)
    torch.testing.assert_close(apply_separable(m, mats), ref)


def test_jitter_shifts_along_each_axis_with_zero_fill() -> None:
    x = torch.arange(4 * 5 * 3, dtype=torch.float32).reshape(1, 4, 5, 3)
    out = _jitter_batch(x, np.array([[0, 0, 0], [1, 2, 0]]), 3)
    torch.testing.assert_close(out[0], x)
    torch.testing.assert_close(out[1, :, :3, :3, :], x[:, 1:, 2:, :])
    assert float(out[1, :, 3:].abs().sum()) == 0 and float(out[1, :, :, 3:].abs().sum()) == 0


def test_one_blur_per_subject_equals_blurring_every_jitter_when_the_edges_are_background() -> None:
    x = torch.zeros(1, 14, 16, 12, dtype=torch.float64)
    x[:, 4:, 4:, 4:] = torch.rand(1, 10, 12, 8, dtype=torch.float64)  # first j - 1 = 4 slices zero
    assert _leading_zero(x, 4) and not _leading_zero(x, 5)
    shifts = np.array([[0, 0, 0], [4, 1, 3], [2, 4, 0]])
    padded = _pad_end(x, 5)
    ops = [gaussian_matrix(n, 3.0, dtype=torch.float64) for n in padded.shape[1:]]
    once = _crops(apply_separable(padded[None], ops)[0], shifts, (14, 16, 12))
    each = gaussian_blur(_jitter_batch(x, shifts, 5), 3.0)
    torch.testing.assert_close(once, each)


def test_tv_term_is_the_mean_power_of_differences_per_axis() -> None:
    m = torch.zeros(1, 1, 3, 3, 3)
    m[..., 1, :, :] = 1.0
    # along the first axis 2 of 2 difference planes change by 1 → mean 1; others 0
    assert float(_tv(m, 7.0)) == pytest.approx(1.0)


class RegionModel(nn.Module):
    """Class 0 when the mean inside one cube is high: the decision depends on that region only."""

    num_classes = 2

    def __init__(self, region: tuple[slice, ...]) -> None:
        super().__init__()
        self.region = region
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[(slice(None), slice(None), *self.region)].mean((1, 2, 3, 4))
        z = self.scale * (s - 0.85)
        return torch.stack([z, -z], 1)


def test_perturbation_mask_covers_the_region_the_model_uses() -> None:
    shape = (24, 24, 24)
    region = (slice(4, 10), slice(12, 18), slice(8, 14))
    # the evidence reaches j - 1 = 4 voxels past the region, so every jitter of the image still
    # fills the model's region with it (jitters move the image towards lower indices)
    evidence = (slice(4, 14), slice(12, 22), slice(8, 18))
    x = torch.zeros(1, 1, *shape)
    x[:, :, 2:22, 2:22, 2:22] = 0.3  # a "brain"
    x[(slice(None), slice(None), *evidence)] = 1.0
    net = RegionModel(region)
    cfg = PerturbationConfig(sigma_image=3.0, sigma_mask=1.0)
    result = meaningful_perturbation(net, x, config=cfg)
    sal = result.saliency[0].numpy()
    inside, used = np.zeros(shape, bool), np.zeros(shape, bool)
    inside[region], used[evidence] = True, True
    assert result.targets.tolist() == [0]
    assert result.probability[0] > 0.99 and result.perturbed_probability[0] < 0.1
    assert sal[inside].mean() > 0.6 and sal[~used].mean() < 0.05
    assert inside[np.unravel_index(np.argmax(sal), shape)]
    assert result.iterations[0] < cfg.max_iter  # converged before max_iter
    for batch in (1, 3):  # the default here is all 10 jitters in one pass: same maps in any chunks
        chunked = meaningful_perturbation(net, x, config=cfg.model_copy(update={"jitter_batch": batch}))
        torch.testing.assert_close(chunked.saliency, result.saliency, atol=1e-4, rtol=0)
    assert net.scale.requires_grad and net.scale.grad is None


def test_perturbation_in_bfloat16_finds_the_same_region() -> None:
    shape = (24, 24, 24)
    region = (slice(4, 10), slice(12, 18), slice(8, 14))
    x = torch.zeros(1, 1, *shape)
    x[:, :, 2:22, 2:22, 2:22] = 0.3
    x[:, :, 4:14, 12:22, 8:18] = 1.0
    net = nn.Sequential(nn.Conv3d(1, 1, 3, padding=1, bias=False), RegionModel(region))  # conv: bf16
    nn.init.constant_(net[0].weight, 1 / 27)
    cfg = PerturbationConfig(sigma_image=3.0, sigma_mask=1.0, max_iter=150)
    full = meaningful_perturbation(net, x, config=cfg).saliency[0].numpy()
    half = meaningful_perturbation(net, x, config=cfg.model_copy(update={"precision": "bfloat16"}))
    sal = half.saliency[0].numpy()
    inside = np.zeros(shape, bool)
    inside[region] = True
    assert sal[inside].mean() > 0.6 and sal[~inside].mean() < 0.2
    assert np.corrcoef(sal.ravel(), full.ravel())[0, 1] > 0.95


def test_perturbation_runs_on_mrinet_without_touching_it() -> None:
    from neurocnn.models import build

    torch.manual_seed(0)
    net = build("mrinet", input_shape=(16, 16, 16), widths=(4, 8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = PerturbationConfig(max_iter=3, jitters=4, sigma_image=2.0, sigma_mask=2.0)
    result = meaningful_perturbation(net, torch.rand(2, 1, 16, 16, 16), 1, config=cfg)
    assert result.saliency.shape == (2, 16, 16, 16) and result.masks.shape == (2, 1, 4, 4, 4)
    assert float(result.saliency.min()) >= 0 and float(result.saliency.max()) <= 1
    assert result.iterations == [3, 3]
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_the_default_jitter_batch_fits_the_volume_on_a_cpu() -> None:
    assert default_jitter_batch(10, (31, 37, 31), "cuda") == 10
    assert default_jitter_batch(10, (31, 37, 31), "cpu") == 10  # small volumes: all at once
    assert default_jitter_batch(10, (46, 55, 46), "cpu") == 5
    assert default_jitter_batch(10, (58, 70, 58), "cpu") == 2
    assert default_jitter_batch(10, (121, 145, 121), "cpu") == 1  # never less than one
    assert default_jitter_batch(3, (8, 8, 8), "cpu") == 3  # never more than there are


def test_stopping_at_convergence_keeps_the_mask_of_the_full_300_steps() -> None:
    """The default stop must not end the optimisation while the mask still moves: losses of the
    regulariser ramp (a lighter objective, hence lower) are no bar for the steps after it. Here the
    post-ramp objective only passes the ramp's best near step 100; a test against the ramp's losses
    stopped at step ~69, with saliency up to 0.14 away from the full run's."""

    class Linear(nn.Module):
        num_classes = 2

        def __init__(self, region: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("region", region)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = 4 * ((x[:, 0] * self.region).sum((1, 2, 3)) / self.region.sum() - 2.0)
            return torch.stack([torch.zeros_like(z), z], 1)

    shape = (32, 32, 32)
    region = torch.zeros(shape)
    region[20:26, 6:12, 13:19] = 1
    x = torch.zeros(1, 1, *shape)
    x[0, 0, 3:29, 3:29, 3:29] = 1.0
    x[0, 0][region > 0] = 3.0
    stopped = meaningful_perturbation(Linear(region), x, 1)
    full = meaningful_perturbation(Linear(region), x, 1, config=PerturbationConfig(patience=0))
    assert full.iterations == [300] and stopped.iterations[0] < 200
    assert stopped.best_iteration[0] > PerturbationConfig().ramp
    assert float((stopped.saliency - full.saliency).abs().max()) < 0.02
