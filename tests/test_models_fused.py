"""The fused CPU paths of DenseNet/ResNet (`neurocnn.models.fused`) against PyTorch's own ops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurocnn.models.fused import avg_pool2_channels_last, bn_relu


@pytest.mark.parametrize("shape", [(2, 5, 7, 9, 6), (1, 3, 8, 8, 8), (3, 4, 9, 7), (2, 2, 6, 5)])
def test_channels_last_average_pool_equals_avg_pool(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    fmt = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
    pool = nn.functional.avg_pool3d if len(shape) == 5 else nn.functional.avg_pool2d
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    y = avg_pool2_channels_last(x)
    ref = pool(x, 2, 2)
    assert y.is_contiguous(memory_format=fmt) and y.shape == ref.shape
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad(y, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert gx.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(gx, gref)  # odd last rows/slices included: their gradient is 0
    assert torch.autograd.gradcheck(avg_pool2_channels_last, (x,))


def test_average_pool_of_a_contiguous_tensor_is_the_plain_op() -> None:
    x = torch.randn(1, 2, 5, 6, 7)
    torch.testing.assert_close(avg_pool2_channels_last(x), nn.functional.avg_pool3d(x, 2, 2))


def test_fused_bn_relu_gradient_and_a_second_backward_raises() -> None:
    torch.manual_seed(0)
    norm, relu = nn.BatchNorm3d(4), nn.ReLU()
    x = torch.randn(2, 4, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    g = torch.randn(2, 4, 3, 4, 5)
    (fused,) = torch.autograd.grad(bn_relu(norm, relu, x), x, g)
    (plain,) = torch.autograd.grad(relu(norm(x)), x, g)
    torch.testing.assert_close(fused, plain)
    # The ReLU's gradient overwrites the saved activation; a second pass must fail loudly.
    y = bn_relu(norm, relu, x)
    y.backward(g, retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        y.backward(g)


def test_lean_allocator_runs_once_and_respects_the_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from neurocnn.models import allocator

    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.lean_allocator() is False  # the user's own setting wins
    assert allocator.lean_allocator() is False  # and stays reported as not in effect
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda _name: FakeLibc())
    assert allocator.lean_allocator() is True
    assert allocator.lean_allocator() is True
    assert calls == [(allocator.M_MMAP_THRESHOLD, 256 * 1024)]  # once per process
