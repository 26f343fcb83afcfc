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
