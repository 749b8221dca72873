"""Process-level settings that make NumPy-based training fast, applied explicitly.

``tune_malloc()``: NumPy allocates every large temporary with glibc's ``malloc``,
which serves blocks above its mmap threshold (128 KiB at start) with fresh
``mmap`` calls, so each forward/backward touches new pages and pays a page fault
per 4 KiB. Measured on the LeNet C1 convolution (N=64): forward+backward 9.0 ms
untuned, 3.4 ms tuned. Raising the mmap and trim thresholds lets freed blocks be
reused instead. The cost: up to ``trim_threshold`` bytes of freed memory stay
with the process instead of going back to the OS.

This changes a process-wide setting, so cnnkit never does it on import; the
``cnnkit`` command, the demo, the trainer and the benchmarks call it. Set
``CNNKIT_NO_MALLOC_TUNING=1`` to turn it off there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap/trim thresholds; returns True if applied (False off glibc or opted out)."""
    if os.environ.get("CNNKIT_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, Windows, musl): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    return ok
