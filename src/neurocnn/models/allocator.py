"""Let glibc give freed activation memory back at once, so checkpointing's savings show in RSS.

Memory-efficient training (gradient checkpointing) frees and re-allocates many mid-sized tensors.
With glibc's default, its dynamic mmap threshold rises to the size of the first large blocks freed,
after which blocks of up to 32 MB come from the heap, where fragmentation keeps freed pages
resident: DenseNet-121's peak RSS at 1×121×145×121 is cut by about a third instead of more than
half (benchmarks/models.py). Setting ``M_MMAP_THRESHOLD`` to 256 KiB (what the environment variable
``MALLOC_MMAP_THRESHOLD_=262144`` does) serves every large tensor from its own mapping, returned
to the system when freed.

`lean_allocator()` does that once per process, the first time a checkpointed layer runs, unless
the user set ``MALLOC_MMAP_THRESHOLD_`` themselves or ``NEUROCNN_KEEP_ALLOCATOR=1``; on other C
libraries it does nothing. Plain (non-checkpointed) training is not touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD_BYTES = 256 * 1024

_state: bool | None = None  # None: not tried yet; else whether the threshold is in effect


def lean_allocator() -> bool:
    """Set glibc's mmap threshold to 256 KiB (once per process); whether it is now in effect."""
    global _state
    if _state is None:
        _state = _set_threshold()
    return _state


def _set_threshold() -> bool:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or os.environ.get("NEUROCNN_KEEP_ALLOCATOR") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    if ok:
        log.debug("memory-efficient training: glibc M_MMAP_THRESHOLD set to %d bytes", THRESHOLD_BYTES)
    return ok
