"""Set-up shared by the benchmarks (imported before NumPy).

``reexec_without_openblas_overrides()``: this machine may set OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, which slow NumPy's BLAS; a benchmark re-executes itself once
without them (its own process only; tests and CI keep them).
``median_time(fn, repeats)``: the median of repeated timings after a pause (``settle``)
and a warm-up (``warm_up``: 0.1 s of untimed calls).
``interleaved_medians(ours, theirs, turns, calls)``: the two libraries timed in turns,
which goes first alternating, each turn after a pause and a warm-up; the median over
the turns of each turn's median: a slow phase of this shared machine falls on both.
``settle()``: wait ``SETTLE`` seconds before timing a library right after the other.
Both libraries' idle threads spin for a while after their last call (OpenBLAS's for up
to about 0.1 s; PyTorch's OpenMP and ONNX Runtime's pools too), on the cores that the
other library then needs: timed right after an ONNX Runtime call, cnnkit's MobileNet v1
took 54 ms instead of 26, and ORT's 32 instead of 12-14 right after cnnkit's.
``limit_threads(threads, malloc_tuning)``: the same thread count for PyTorch and for
cnnkit's worker threads (``cnnkit.runtime.set_num_threads``, which keeps NumPy's BLAS
on one thread per worker), and cnnkit's malloc setting; returns whether the latter
was applied.
"""

from __future__ import annotations

import os
import sys

_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# What ``import cnnkit`` does when it comes before NumPy's import (cnnkit/__init__.py:
# OpenBLAS's idle threads do not spin), here for the scripts that import NumPy first.
if "numpy" not in sys.modules and not os.environ.get("CNNKIT_NO_BLAS_TUNING"):
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def blas_thread_timeout_setting() -> str:
    return os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")


def reexec_without_openblas_overrides() -> None:
    if any(k in os.environ for k in _OVERRIDES) and "_CNNKIT_BENCH" not in os.environ:
        env = {k: v for k, v in os.environ.items() if k not in _OVERRIDES}
        env["_CNNKIT_BENCH"] = "1"
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def limit_threads(threads: int, malloc_tuning: bool = True) -> bool:
    from cnnkit.runtime import tune_malloc
    tuned = tune_malloc() if malloc_tuning else False

    import torch
    torch.set_num_threads(threads)
    from cnnkit.runtime import set_num_threads
    set_num_threads(threads)  # cnnkit's workers; NumPy's BLAS then runs one thread per worker
    return tuned


SETTLE = 0.25  # seconds: longer than the libraries' idle threads spin


def settle() -> None:
    import time
    time.sleep(SETTLE)


WARM = 0.1  # seconds of untimed calls after the pause (at least one call)


def warm_up(fn) -> None:
    """Call ``fn`` untimed for ``WARM`` seconds (at least once): allocations, thread start,
    and the idle cores of this virtual machine back at speed. After the pause, LeNet C1's
    forward + backward (3 ms) ran 20% slower for a few calls on two workers (not on one)."""
    import time
    end = time.perf_counter() + WARM
    fn()
    while time.perf_counter() < end:
        fn()


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after a pause (``settle``) and
    a warm-up (``warm_up``)."""
    import statistics
    import time

    settle()
    warm_up(fn)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(ours, theirs, turns: int, calls: int = 1) -> tuple[float, float]:
    """Median seconds of ``ours()`` and ``theirs()``, timed in ``turns`` turns each (which
    goes first alternates), each turn after a pause (``settle``) and 0.1 s of untimed calls
    (``warm_up``), its time the median of ``calls`` calls; returned: the median over the
    turns. Load from other jobs on this shared machine then falls on both alike: timed
    one after the other, the ratio for MobileNet v1 at batch 1 moved between 0.8 and 1.7
    across runs of the same code, and kernel rows by 10-30% between back-to-back runs."""
    import statistics
    times = ([], [])
    for r in range(turns):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            times[i].append(median_time(ours if i == 0 else theirs, calls))  # (a turn)
    return statistics.median(times[0]), statistics.median(times[1])
