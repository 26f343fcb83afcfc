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
    """True where bfloat16 autocast is faster than float32: a CUDA device with native bfloat16
    (compute capability 8 or more), or a CPU with native bfloat16 instructions."""
    if device.startswith("cuda") or device == "gpu":
        if not torch.cuda.is_available():
            return False
        # native bfloat16 from Ampere (compute capability 8) on; `is_bf16_supported()` also says
        # yes where it is only emulated (T4, V100), where it is slower than float32
        index = torch.device(device).index if device.startswith("cuda") else None
        return torch.cuda.get_device_capability(index)[0] >= 8
    return any(flag in cpu_flags(cpuinfo) for flag in CPU_BF16_FLAGS)
