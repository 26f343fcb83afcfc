"""The PIF layer of Eitel et al. 2019 against direct, per-patch computations."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from neurocnn import models
from neurocnn.errors import NeuroCNNError
from neurocnn.models import PIFLayer, pif_cpu


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_patch_equal_to_kernel_is_a_locally_connected_layer() -> None:
    torch.manual_seed(0)
    layer = PIFLayer(3, 4, (6, 9, 6), patch_size=3, kernel_size=3, activation=None)
    x = torch.randn(2, 3, 6, 9, 6)
    out = layer(x)
    assert out.shape == (2, 4, 2, 3, 2)
    w, b = layer.weights[0], layer.biases[0]  # (P, F, C, 3, 3, 3), (P, F)
    expected = torch.empty_like(out)
    for n, (i, j, k) in enumerate(itertools.product(range(2), range(3), range(2))):
        window = x[:, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3, 3 * k : 3 * k + 3]
        # a locally connected unit: its own weights times its own window, plus its own bias
        expected[:, :, i, j, k] = torch.einsum("bcxyz,fcxyz->bf", window, w[n]) + b[n]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _reference(layer: PIFLayer, x: torch.Tensor) -> torch.Tensor:
    """Per-patch loop: pad, cut every patch (then the half-shifted ones), run its own stack."""
    p = layer.patch[0]
    pad = []
    for extra in reversed(layer.padding):
        pad += [0, extra]
    xp = F.pad(x, pad)
    starts = [(0, tuple(p * g for g in idx)) for idx in itertools.product(*(range(g) for g in layer.grid))]
    if layer.overlap:
        starts += [
            (1, tuple(p // 2 + p * g for g in idx))
            for idx in itertools.product(*(range(g) for g in layer.shifted_grid))
        ]
    outs = []
    for n, (_, (i, j, k)) in enumerate(starts):
        y = xp[:, :, i : i + p, j : j + p, k : k + p]
        for w, b, act in zip(layer.weights, layer.biases, layer.acts, strict=True):
            y = act(F.conv3d(y, w[n], b[n]))
        outs.append(y)
    return torch.stack(outs, 1)  # (B, P, F, q, q, q)


IMPLS = ["auto", "conv"]  # auto: the compiled CPU kernels (float32 on the CPU); conv: grouped conv


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("blocks", [1, 2])
def test_batched_layer_equals_a_loop_over_patches(overlap: bool, blocks: int, impl: str) -> None:
    torch.manual_seed(0)
    layer = PIFLayer(
        3, 4, (11, 13, 10), patch_size=5, num_blocks=blocks, overlap=overlap, reassemble=False, impl=impl
    )
    x = torch.randn(2, 3, 11, 13, 10)
    expected = _reference(layer, x)
    torch.testing.assert_close(layer(x), expected.flatten(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_gradients_equal_the_loop_gradients(channels_last: bool, impl: str) -> None:
    """Input, weight and bias gradients, with padded axes and the shifted grid."""
    torch.manual_seed(1)
    layer = PIFLayer(3, 4, (11, 13, 10), patch_size=5, overlap=True, reassemble=False, impl=impl)
    x = torch.randn(2, 3, 11, 13, 10)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    upstream = torch.randn(2, layer.output_shape[0])
    grads = []
    for forward in (lambda t: layer(t), lambda t: _reference(layer, t).flatten(1)):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        (forward(xi) * upstream).sum().backward()
        grads.append([xi.grad, layer.weights[0].grad.clone(), layer.biases[0].grad.clone()])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not pif_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((10, 7), {"batch_norm": True, "activation": "elu"}),  # 2D, a padded axis
        ((9, 10, 7), {"patch_size": (4, 5, 3), "kernel_size": (3, 2, 1)}),  # anisotropic
        ((15, 19, 15), {"overlap": True, "num_blocks": 2}),  # shifted grid, a second block
        ((12, 12, 12), {"patch_size": 4, "kernel_size": 4, "reassemble": False}),  # locally connected
    ],
)
def test_compiled_kernels_agree_with_the_grouped_convolution(shape: tuple[int, ...], options: dict) -> None:
    """Forward, input, weight and bias gradients of both paths, with 7 filters per patch (the
    kernels block filters by 3: a block of 3, another, and one left over) and two threads."""
    torch.manual_seed(2)
    torch.set_num_threads(2)
    options = {"patch_size": 5, **options}
    kernels = PIFLayer(5, 7, shape, impl="kernel", **options)
    grouped = PIFLayer(5, 7, shape, impl="conv", **options)
    grouped.load_state_dict(kernels.state_dict())
    x = torch.randn(3, 5, *shape)
    results = []
    for layer in (kernels, grouped):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append([y, xi.grad, *(p.grad for p in layer.parameters())])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_impl_choice_and_its_errors() -> None:
    with pytest.raises(NeuroCNNError, match="'auto', 'conv' or 'kernel'"):
        PIFLayer(1, 1, (10, 10, 10), impl="fast")
    layer = PIFLayer(1, 2, (10, 10, 10), impl="auto").double()
    # float64 is not the kernels' type: 'auto' takes the grouped convolution, gradients intact
    x = torch.randn(1, 1, 10, 10, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    if pif_cpu.available():
        strict = PIFLayer(1, 2, (10, 10, 10), impl="kernel").double()
        with pytest.raises(NeuroCNNError, match="float32 on the CPU only"):
            strict(x)


def test_reassembly_puts_each_patch_back_in_place() -> None:
    torch.manual_seed(0)
    layer = PIFLayer(2, 3, (10, 15, 5), patch_size=5, kernel_size=3)
    x = torch.randn(1, 2, 10, 15, 5)
    per_patch = _reference(layer, x)  # (1, 6, 3, 3, 3, 3)
    out = layer(x)
    assert out.shape == (1, 3, 6, 9, 3)
    for n, (i, j, k) in enumerate(itertools.product(range(2), range(3), range(1))):
        block = out[:, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3, 3 * k : 3 * k + 3]
        torch.testing.assert_close(block, per_patch[:, n])


def test_each_patch_weights_affect_only_their_own_outputs() -> None:
    torch.manual_seed(0)
    layer = PIFLayer(2, 3, (10, 10, 10), patch_size=5, kernel_size=3, num_blocks=1)
    x = torch.randn(2, 2, 10, 10, 10)
    out = layer(x)  # (2, 3, 6, 6, 6): patch (i, j, k) owns out[..., 3i:3i+3, 3j:3j+3, 3k:3k+3]
    for n, (i, j, k) in enumerate(itertools.product(range(2), repeat=3)):
        region = (..., slice(3 * i, 3 * i + 3), slice(3 * j, 3 * j + 3), slice(3 * k, 3 * k + 3))
        grads = torch.autograd.grad(out[region].sum(), [layer.weights[0], layer.biases[0]],
                                    retain_graph=True)  # fmt: skip
        for g in grads:
            others = torch.cat([g[:n], g[n + 1 :]])
            assert torch.count_nonzero(others) == 0
            assert torch.count_nonzero(g[n]) > 0


def test_overlap_is_a_half_patch_shift_with_its_own_weights() -> None:
    layer = PIFLayer(1, 1, (15, 19, 15), patch_size=5, overlap=True, reassemble=False)
    assert layer.grid == (3, 4, 3)
    assert layer.shifted_grid == (2, 3, 2)
    assert layer.shift == (2, 2, 2)
    assert layer.num_patches == 36 + 12
    reassembled = PIFLayer(1, 2, (15, 19, 15), patch_size=5, overlap=True)
    assert reassembled(torch.randn(1, 1, 15, 19, 15)).shape == (1, 4, 9, 12, 9)


def test_two_dimensional_feature_maps() -> None:
    layer = PIFLayer(2, 3, (10, 7), patch_size=5, kernel_size=3)
    assert layer(torch.randn(2, 2, 10, 7)).shape == (2, 3, 6, 6)


def test_errors_name_the_problem() -> None:
    with pytest.raises(NeuroCNNError, match="too small"):
        PIFLayer(1, 1, (10, 10, 10), patch_size=3, kernel_size=3, num_blocks=2)
    with pytest.raises(NeuroCNNError, match="at least 2 patches"):
        PIFLayer(1, 1, (5, 10, 10), patch_size=5, overlap=True)
    layer = PIFLayer(1, 1, (10, 10, 10))
    with pytest.raises(NeuroCNNError, match="10x10x10"):
        layer(torch.randn(1, 1, 10, 10, 9))


def test_pif_cnn_grad_cam_layer_follows_reassembly() -> None:
    with torch.device("meta"):
        assert models.build("pif_cnn").gradcam_layer == "features.pif"
        assert models.build("pif_cnn", reassemble=False).gradcam_layer == "features.block4"
        assert models.build("pif_cnn").features.pif.input_shape == (15, 19, 15)
