"""glibc's malloc settings for training: keep freed tensors for reuse, or give them back at once.

PyTorch on a CPU takes every tensor from the C library's malloc. glibc serves blocks above its mmap
threshold from fresh mappings and returns them on free, and trims the heap's free top back to the
system; each reuse of such memory then costs a page fault and the zeroing of every 4 KiB page.
With the defaults, a MriNet training step at 58×70×58 (batch 8) takes over 500,000 page faults,
and a step is about 1.5× slower than when freed memory is kept (benchmarks/allocator.py).

- `roomy_allocator()` (training and interpretation, the default): mmap threshold and trim
  threshold 1 GiB, so freed activations stay in the heap and the next step reuses them without
  faults; the peak resident memory stays resident.
- `lean_allocator()` (memory-efficient training, i.e. gradient checkpointing): mmap threshold
  256 KiB, so every large tensor has its own mapping, returned when freed and checkpointing's
  savings show in RSS. With glibc's default the dynamic threshold rises to the size of the first
  large blocks freed, after which fragmentation keeps freed pages resident: DenseNet-121's peak RSS
  at 1×121×145×121 is then cut by about a third instead of more than half (benchmarks/models.py).
  Lean wins over roomy: the first checkpointed layer switches a roomy process to lean.

Neither touches a process whose user set ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
or ``NEUROCNN_KEEP_ALLOCATOR=1``; on other C libraries they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Literal

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 256 * 1024  # lean: mmap threshold
GLIBC_TRIM_BYTES = 128 * 1024  # glibc's default trim threshold, restored when lean follows roomy
ROOMY_BYTES = 1 << 30  # roomy: mmap and trim thresholds

Mode = Literal["lean", "roomy"]
_state: Mode | Literal["off"] | None = None  # None: untouched yet; "off": user's setting or no glibc


def lean_allocator() -> bool:
    """Serve large tensors from their own mappings (once per process); whether that is in effect."""
    return _switch("lean")


def roomy_allocator() -> bool:
    """Keep freed memory for reuse, unless lean is in effect; whether roomy is now in effect."""
    return _switch("roomy")


def _switch(mode: Mode) -> bool:
    global _state
    if _state in (mode, "lean", "off"):
        return _state == mode
    if _user_setting():
        _state = "off"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        _state = "off"
        return False
    if mode == "lean":
        ok = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
        if ok and _state == "roomy":
            mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_BYTES)
    else:
        ok = bool(mallopt(M_MMAP_THRESHOLD, ROOMY_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, ROOMY_BYTES))
    if ok:
        log.debug("glibc malloc set to %s", mode)
        _state = mode
    else:
        _state = "off"
    return ok


def _user_setting() -> bool:
    return (
        "MALLOC_MMAP_THRESHOLD_" in os.environ
        or "MALLOC_TRIM_THRESHOLD_" in os.environ
        or os.environ.get("NEUROCNN_KEEP_ALLOCATOR") == "1"
    )
