"""What the machine offers: whether bfloat16 arithmetic is fast here.

bfloat16 autocast pays on GPUs that support it and on CPUs with native bfloat16 instructions
(AVX-512 BF16, AMX). Elsewhere PyTorch emulates it and it is slower than float32: MriNet's training
step took 2.12 s in bf16 against 1.88 s in fp32 on an Ice Lake Xeon without them
(benchmarks/RESULTS.md, "neurocnn demo: wall time").
"""

from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def fast_bfloat16(device: str = "cpu", *, cpuinfo: str | None = None) -> bool:
    """True where bfloat16 autocast is faster than float32: a CUDA device that supports it, or a
    CPU with native bfloat16 instructions."""
    if device.startswith("cuda") or device == "gpu":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags(cpuinfo) for flag in CPU_BF16_FLAGS)
