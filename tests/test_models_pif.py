"""The PIF layer of Eitel et al. 2019 against direct, per-patch computations."""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import threading
from typing import Any

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


needs_numba = pytest.mark.skipif(not pif_cpu.available(), reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize(
    ("shape", "options", "batch", "channels", "filters", "layout"),
    [
        ((10, 7), {"batch_norm": True, "activation": "elu"}, 3, 5, 7, "plain"),  # 2D, padded axis
        ((9, 10, 7), {"patch_size": (4, 5, 3), "kernel_size": (3, 2, 1)}, 3, 5, 7, "plain"),
        ((15, 19, 15), {"overlap": True, "num_blocks": 2}, 3, 5, 7, "channels_last"),
        ((12, 12, 12), {"patch_size": 4, "kernel_size": 4, "reassemble": False}, 3, 5, 7, "plain"),
        ((11, 13, 10), {"overlap": True}, 1, 1, 5, "permuted"),  # one sample, one channel, 3 + 2
        ((11, 13, 10), {}, 2, 4, 8, "sliced"),  # a strided view of a larger tensor; 3 + 3 + 2
        ((11, 13, 10), {}, 0, 4, 2, "plain"),  # an empty batch
    ],
)
def test_compiled_kernels_agree_with_the_grouped_convolution(
    shape: tuple[int, ...], options: dict, batch: int, channels: int, filters: int, layout: str
) -> None:
    """Forward, input, weight and bias gradients of both paths at two threads. The kernels block
    filters by 3 (7 = 3 + 3 + 1 left over), and take any input layout."""
    torch.manual_seed(2)
    torch.set_num_threads(2)
    options = {"patch_size": 5, **options}
    kernels = PIFLayer(channels, filters, shape, impl="kernel", **options)
    grouped = PIFLayer(channels, filters, shape, impl="conv", **options)
    grouped.load_state_dict(kernels.state_dict())
    x = torch.randn(batch, channels, *shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "permuted":  # batch and channel axes swapped in memory
        x = torch.randn(channels, batch, *shape).transpose(0, 1)
    elif layout == "sliced":
        x = torch.randn(batch, 2 * channels, *shape)[:, ::2]
    results = []
    for layer in (kernels, grouped):
        xi = x.clone(memory_format=torch.preserve_format).requires_grad_(True)
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append([y, xi.grad, *(p.grad for p in layer.parameters())])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@needs_numba
def test_auto_runs_the_kernels_and_keeps_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    apply = pif_cpu.PatchConv.apply
    monkeypatch.setattr(pif_cpu.PatchConv, "apply", lambda *a: calls.append(1) or apply(*a))
    layer = PIFLayer(2, 3, (10, 10, 10))
    torch.set_num_threads(1)
    layer(torch.randn(2, 2, 10, 10, 10, requires_grad=True)).sum().backward()
    assert calls == [1]
    assert torch.get_num_threads() == 1  # numba's OpenMP launch must not change torch's setting
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16: the grouped convolution
        layer(torch.randn(2, 2, 10, 10, 10))
    assert calls == [1]


@needs_numba
def test_first_use_from_two_threads_at_once() -> None:
    pif_cpu._kernels.cache_clear()
    start, errors = threading.Barrier(2), []

    def first_use() -> None:
        start.wait()
        try:
            pif_cpu._kernels()
        except Exception as err:  # pragma: no cover - the failure this test is for
            errors.append(err)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    layer = PIFLayer(1, 2, (10, 10, 10), impl="kernel")
    assert layer(torch.randn(1, 1, 10, 10, 10)).shape == (1, 2, 6, 6, 6)


def _child_forward(layer: PIFLayer, queue: Any) -> None:
    queue.put(tuple(layer(torch.ones(1, 1, 10, 10, 10)).shape))


@needs_numba
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_falls_back_to_the_grouped_convolution() -> None:
    """GNU OpenMP does not survive fork(): a child of a process that ran the kernels would be
    killed on its first parallel launch, so it takes the grouped convolution."""
    layer = PIFLayer(1, 2, (10, 10, 10))
    layer(torch.ones(1, 1, 10, 10, 10))  # the kernels run in this process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_forward, args=(layer, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (1, 2, 6, 6, 6)


def test_impl_choice_and_its_errors() -> None:
    with pytest.raises(NeuroCNNError, match="'auto', 'conv' or 'kernel'"):
        PIFLayer(1, 1, (10, 10, 10), impl="fast")
    layer = PIFLayer(1, 2, (10, 10, 10), impl="auto").double()
    # float64 is not the kernels' type: 'auto' takes the grouped convolution, gradients intact
    x = torch.randn(1, 1, 10, 10, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    if pif_cpu.available():
        strict = PIFLayer(1, 2, (10, 10, 10), impl="kernel").double()
        with pytest.raises(NeuroCNNError, match="cannot run here: they run float32 on the CPU only"):
            strict(x)
        strict = strict.float()
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NeuroCNNError, match="autocast"):
            strict(x.float())


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
