"""Whether bfloat16 pays: read from the CPU's instruction-set flags."""

from __future__ import annotations

from neurocnn.hardware import cpu_flags, fast_bfloat16

ICE_LAKE = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_bfloat16_is_fast_only_with_native_instructions() -> None:
    assert "avx512f" in cpu_flags(ICE_LAKE)
    assert not fast_bfloat16("cpu", cpuinfo=ICE_LAKE)
    assert fast_bfloat16("cpu", cpuinfo=SAPPHIRE)
    assert not fast_bfloat16("cpu", cpuinfo="")  # no /proc/cpuinfo (macOS, Windows): say no
    assert cpu_flags("no flags here") == set()


def test_bfloat16_on_a_gpu_needs_compute_capability_8(monkeypatch) -> None:
    import torch

    asked: list[object] = []
    capability = {"value": (7, 5)}  # a T4: bfloat16 only emulated

    def get_capability(index=None):
        asked.append(index)
        return capability["value"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    assert not fast_bfloat16("cuda")
    capability["value"] = (8, 0)  # an A100
    assert fast_bfloat16("cuda:1") and fast_bfloat16("gpu")
    assert asked == [None, 1, None]  # the named device is the one asked about
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not fast_bfloat16("cuda")
