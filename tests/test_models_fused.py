"""The fused CPU paths of DenseNet/ResNet (`neurocnn.models.fused`) against PyTorch's own ops."""

from __future__ import annotations

import os
import platform

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
    assert allocator.roomy_allocator() is False
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
    assert allocator.roomy_allocator() is False  # lean (memory-efficient training) wins
    assert len(calls) == 1


def test_roomy_allocator_keeps_freed_memory_until_lean_takes_over(monkeypatch: pytest.MonkeyPatch) -> None:
    from neurocnn.models import allocator

    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("NEUROCNN_KEEP_ALLOCATOR", raising=False)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda _name: FakeLibc())
    assert allocator.roomy_allocator() is True
    assert allocator.roomy_allocator() is True
    assert calls == [(allocator.M_MMAP_THRESHOLD, 1 << 30), (allocator.M_TRIM_THRESHOLD, 1 << 30)]
    # A checkpointed layer later in the same process: every large tensor in its own mapping again,
    # and glibc's trim threshold back.
    assert allocator.lean_allocator() is True
    assert calls[2:] == [(allocator.M_MMAP_THRESHOLD, 256 * 1024), (allocator.M_TRIM_THRESHOLD, 128 * 1024)]
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("NEUROCNN_KEEP_ALLOCATOR", "1")
    assert allocator.roomy_allocator() is False
    assert len(calls) == 4


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_roomy_allocator_is_real_on_glibc() -> None:
    """In a fresh process on glibc, the setting is accepted and freed blocks are reused."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from neurocnn.models.allocator import roomy_allocator\n"
        "assert roomy_allocator()\n"
        "def faults():\n"
        "    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "r = [faults() for _ in range(6)]\n"
        "print(sum(b - a < 1000 for a, b in zip(r, r[1:])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NEUROCNN_KEEP"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    # With glibc's default every round maps 64 MiB afresh and faults its 16,384 pages; kept in the
    # heap, most rounds reuse it (now and then glibc still maps one afresh).
    assert int(out.stdout) >= 3
