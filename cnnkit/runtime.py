"""Process-level settings that make NumPy-based training fast, applied explicitly.

``tune_malloc()``: NumPy allocates every large temporary with glibc's ``malloc``,
which serves blocks above its mmap threshold (128 KiB at start) with fresh
``mmap`` calls, so each forward/backward touches new pages and pays a page fault
per 4 KiB. Measured on the LeNet C1 convolution (N=64): forward+backward 9.0 ms
untuned, 3.4 ms tuned. Raising the mmap and trim thresholds lets freed blocks be
reused instead. The cost: up to ``trim_threshold`` bytes of freed memory stay
with the process instead of going back to the OS.

This changes a process-wide setting, so cnnkit never does it on import; the
``cnnkit`` command, the demo and the benchmarks call it. Set
``CNNKIT_NO_MALLOC_TUNING=1`` to turn it off there.

``set_num_threads(n)``: cnnkit's kernels cut their work into parts (a few images'
conv columns, ranges of channels or of output features) and run them on ``n`` worker
threads of their own, with NumPy's BLAS on one thread each (see the threads section
below). ``Trainer()`` and the ``cnnkit`` command turn this on for every core; without
it, kernels run serially and BLAS keeps its own threads.

``blas_thread_timeout()``: how long OpenBLAS's idle threads spin after a multi-threaded
GEMM (2**value cycles) before they sleep, as this process's OpenBLAS read it from
OPENBLAS_THREAD_TIMEOUT when NumPy loaded it. Spinning threads take the cores that
cnnkit's workers need next, so ``import cnnkit`` sets the variable to 4 (no spin) when it
comes before NumPy's import (see cnnkit/__init__.py); it cannot be changed later.

``set_jit(enabled)``: where Numba is installed, a few kernels that NumPy can only
run as many full passes over memory (the depthwise convolution, batch norm with
batch statistics, the ReLU forward) use loops compiled by Numba instead (``cnnkit.functional._jit``); each has a NumPy twin that runs without
it. On by default; ``CNNKIT_JIT=0`` in the environment turns it off.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap/trim thresholds; returns True if applied (False off glibc or opted out)."""
    if os.environ.get("CNNKIT_NO_MALLOC_TUNING"):
        return False
    import ctypes  # here, not at the top: ctypes.util alone costs ~20 ms of `import cnnkit`
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, Windows, musl): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    return ok


# ---- threads ----------------------------------------------------------------------
# The convolution and linear kernels split their GEMMs into parts (a few images' columns,
# a range of output features) and ``parallel_map`` runs the parts on cnnkit's worker
# threads (NumPy's copies and BLAS release the GIL), each part on one BLAS thread.
# Why not let BLAS thread each GEMM instead: the columns are built between GEMMs, and
# OpenBLAS's idle threads spin for a while after each call, on the cores those copies
# need. Measured on this project's 2-core machine, forward + backward of the 3x3 convs of
# ``cnn_bn`` at batch 128 (32->32 at 28x28, 32->64 and 64->64 at 14x14): whole-batch
# im2col with 2 BLAS threads 65+90, 18+33, 36+69 ms; cached chunks on 2 workers, BLAS on
# one thread, 34+61, 12+28, 24+60 ms.
#
# Pinning: when the workers and the main thread are as many as the CPUs this process may
# use (set_num_threads()'s default), each worker is pinned to a CPU of its own for good and
# the main thread to the remaining one for the length of each parallel_map (its mask is
# restored after). Unpinned, Linux's wake-up placement put a worker woken by the main
# thread on the main thread's CPU after an idle spell, and both then ran on one core until
# something moved them: a 3x3 max pool on 2 workers took 0.26 ms, and 0.41 after a 1 s
# sleep, staying so (the "two speeds" that bench runs showed process by process). Measured
# in one process, alternating pinned and unpinned rounds after 0.25 s pauses, forward +
# backward, 2 threads: depthwise 3x3 512 @14 batch 8 1.57 -> 0.97 ms, 3x3 s2 128->128 @28
# 9.06 -> 8.14, VGG's 64->64 @56 12.77 -> 12.08, cnn_bn's convs even; LeNet-5's training
# step at batch 64 3.52 -> 2.99; ResNet-20's and MobileNet v1's steps and the batch-1
# imports (BLAS threads, not cnnkit's) even. Only the main thread is pinned so (other
# threads calling cnnkit would crowd onto one CPU); CNNKIT_NO_PINNING=1 turns it off.

_state = {"threads": None, "pool": None, "blas": None, "blas_threads": None,
          "jit": os.environ.get("CNNKIT_JIT", "1").strip().lower() not in ("0", "off", "false", "no"),
          "jit_module": None}
_local = threading.local()
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A forked child has none of the parent's worker threads: start a fresh pool there.
    global _lock
    _state["pool"] = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(threads: int | None = None) -> int:
    """Run cnnkit's kernels on ``threads`` worker threads (``None``: one per core this
    process may use) and NumPy's BLAS on one thread meanwhile: BLAS's own pool would
    compete with the workers for the cores. A lone GEMM part (a batch of one image,
    say) still gets every core's BLAS thread. ``set_num_threads(1)`` gives BLAS its
    threads back and runs the kernels serially. Returns the number of workers.

    With as many threads as CPUs, each worker is pinned to a CPU of its own, and the
    main thread to the remaining one while it runs its part (see the threads section
    of this module; ``CNNKIT_NO_PINNING=1`` turns that off).

    ``Trainer()`` and the ``cnnkit`` command call this once, unless it was called before;
    without it kernels run serially with BLAS as it is (this process-wide setting is
    never changed on import).
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"set_num_threads: threads must be a positive int or None (got {threads!r})")
    with _lock:
        n = threads or _cores()
        if _state["pool"] is not None:
            _state["pool"].shutdown()
            _state["pool"] = None
        blas = _blas_controller()
        if blas:
            if _state["blas_threads"] is None:  # remember BLAS's own setting once
                _state["blas_threads"] = max((c.num_threads for c in blas.lib_controllers), default=1)
            blas_n = 1 if n > 1 else _state["blas_threads"]
            for c in blas.lib_controllers:
                c.set_num_threads(blas_n)
        _state["threads"] = n if blas else 1  # no way to limit BLAS: stay serial
        return _state["threads"]


def get_num_threads() -> int:
    """cnnkit's worker threads: 1 until :func:`set_num_threads` is called."""
    return _state["threads"] or 1


def blas_thread_timeout() -> int | None:
    """OPENBLAS_THREAD_TIMEOUT as NumPy's OpenBLAS read it (0: unset, OpenBLAS's default
    spin of 2**28 cycles), or None when that cannot be known (another BLAS, no threadpoolctl)."""
    import ctypes
    blas = _blas_controller()
    for c in (blas.lib_controllers if blas else ()):
        fn = getattr(getattr(c, "dynlib", None), "openblas_thread_timeout", None)
        if fn is not None:
            fn.restype = ctypes.c_int
            return int(fn())
    return None


def set_jit(enabled: bool) -> bool:
    """Use the Numba-compiled kernels (where Numba is installed) or the NumPy ones.
    Returns the previous setting."""
    if not isinstance(enabled, bool):
        raise ValueError(f"set_jit: enabled must be True or False (got {enabled!r})")
    previous, _state["jit"] = _state["jit"], enabled
    return previous


def jit_kernels():
    """The module of compiled kernels (``cnnkit.functional._jit``), imported on first
    use; None when the JIT is off or Numba is not installed (the NumPy kernels run)."""
    if not _state["jit"]:
        return None
    if _state["jit_module"] is None:
        try:
            from .functional import _jit
            _state["jit_module"] = _jit
        except ImportError:  # no Numba (or one that cannot load): NumPy it is
            _state["jit_module"] = False
    return _state["jit_module"] or None


def configured() -> bool:
    return _state["threads"] is not None


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _blas_controller():
    """threadpoolctl's handle on the loaded BLAS libraries, or False without it."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _state["blas"] = ThreadpoolController().select(user_api="blas")
        except Exception:  # threadpoolctl missing or unable to inspect this platform
            _state["blas"] = False
    return _state["blas"]


def parallel_map(fn: Callable[[list], T], items: Sequence, small: bool = False) -> list[T]:
    """``[fn(part) for part in parts]``, the parts dealt round-robin from ``items`` to
    the worker threads and run at once (the calling thread takes the first part).
    ``fn`` must write only memory that its part owns.

    Runs ``[fn(list(items))]`` in the calling thread with one worker, when called from
    inside another ``parallel_map``, for ``small`` work (BLAS as it is), or with a
    single item, which then gets every worker's core as a BLAS thread.
    """
    items = list(items)
    workers = min(get_num_threads(), len(items))
    if small or getattr(_local, "busy", False) or get_num_threads() < 2:
        return [fn(items)]
    if workers < 2:  # one part: let BLAS thread it
        with _BlasThreads(get_num_threads()):
            return [fn(items)]
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = _Pool(get_num_threads() - 1)
        pool = _state["pool"]
    parts = [items[i::workers] for i in range(workers)]
    done = queue.SimpleQueue()
    for i, part in enumerate(parts[1:]):
        pool.inboxes[i].put((fn, part, i + 1, done))
    _local.busy = True
    saved = _pin_calling_thread(pool.cpus[0]) if pool.cpus and threading.current_thread() is _MAIN else None
    try:
        results, error = [None] * workers, None
        try:
            results[0] = fn(parts[0])
        except BaseException as e:  # (after the other parts are done: they may write into shared buffers)
            error = e
        for _ in parts[1:]:
            k, ok, value = done.get()
            if ok:
                results[k] = value
            elif error is None:
                error = value
        if error is not None:
            raise error
        return results
    finally:
        _local.busy = False
        if saved is not None:
            try:
                os.sched_setaffinity(0, saved)
            except OSError:
                pass


_MAIN = threading.main_thread()


def _pin_calling_thread(cpu: int):
    """Pin the calling thread to ``cpu`` (for one ``parallel_map``); returns the mask to
    restore after it (None: it was so already)."""
    try:
        saved = os.sched_getaffinity(0)
        if saved == {cpu}:
            return None
        os.sched_setaffinity(0, {cpu})
    except OSError:  # (a cpuset changed under the process, say): run unpinned
        return None
    return saved


def _thread_cpus(n: int):
    """One CPU each for the main thread (first) and the n - 1 workers: the CPUs this
    process may use, when there are exactly n of them (``set_num_threads()``'s default).
    None (no pinning) otherwise, where affinity cannot be set, or with CNNKIT_NO_PINNING=1:
    fewer threads than CPUs would all crowd onto the first ones, and other processes'
    threads may be on them."""
    if os.environ.get("CNNKIT_NO_PINNING") or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus if len(cpus) == n else None


class _Pool:
    """cnnkit's worker threads, each fed through its own queue; a part's result (or its
    exception) comes back through the queue its caller passed along. A ``parallel_map``
    round trip with a trivial part costs about 25 us back to back on this project's 2-core
    VM (55 after the worker went idle), where concurrent.futures' ThreadPoolExecutor (a
    Future, a Condition and a work item per part) took about 55 (108)."""

    def __init__(self, n: int):
        self.inboxes = [queue.SimpleQueue() for _ in range(n)]
        self.cpus = _thread_cpus(n + 1)
        self.threads = [threading.Thread(target=self._work, args=(q, self.cpus[i + 1] if self.cpus else None),
                                         name=f"cnnkit_{i}", daemon=True)
                        for i, q in enumerate(self.inboxes)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _work(inbox, cpu) -> None:
        _local.busy = True  # a kernel called from a worker runs serially
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
        while True:
            task = inbox.get()
            if task is None:
                return
            fn, part, k, done = task
            try:
                done.put((k, True, fn(part)))
            except BaseException as e:
                done.put((k, False, e))

    def shutdown(self) -> None:
        for q in self.inboxes:
            q.put(None)
        for t in self.threads:
            t.join()


def inline() -> bool:
    """True on a worker thread and inside :class:`blas_threaded`: kernels run inline."""
    return getattr(_local, "busy", False)


class blas_threaded:
    """``with blas_threaded():`` runs cnnkit's kernels on the calling thread (every
    ``parallel_map`` and ``parallel_ranges`` inline) and gives NumPy's BLAS one thread per
    worker meanwhile: one threading mode for a whole forward pass instead of a choice per
    kernel. A no-op without workers or inside another such region (or a worker).

    ``Layer.__call__`` enters it for a forward of one image in evaluation mode (batch-1
    inference, where each kernel is small): with both modes mixed, OpenBLAS's threads spin
    after each GEMM on the cores that the next element-wise kernel's workers need.
    Measured (ONNX imports with optimize=True, batch 1, 2 threads, 8 alternating rounds in
    one process): MobileNet v1 37.8 -> 36.1 ms, ResNet-50 157.0 -> 149.8 ms."""

    __slots__ = ("_blas",)

    def __enter__(self):
        self._blas = None
        if get_num_threads() < 2 or getattr(_local, "busy", False):
            return self
        self._blas = _BlasThreads(get_num_threads())
        self._blas.__enter__()
        _local.busy = _local.region = True
        return self

    def __exit__(self, *exc):
        if self._blas is not None:
            _local.busy = _local.region = False
            self._blas.__exit__(*exc)
        return False


class workers_again:
    """``with workers_again():`` inside :class:`blas_threaded` (on its thread), hands this
    kernel's parts to the worker threads again, with BLAS on one thread meanwhile; a no-op
    elsewhere. For kernels whose parts are many small GEMMs and compiled loops rather than
    one large GEMM: Winograd at batch 1 (64->64 at 56x56: 3.85 ms inline, 2.47 on workers)."""

    __slots__ = ("_blas",)

    def __enter__(self):
        self._blas = None
        if getattr(_local, "region", False) and _local.busy:
            self._blas = _BlasThreads(1)
            self._blas.__enter__()
            _local.busy = _local.region = False  # (not again inside the parts it hands out)
        return self

    def __exit__(self, *exc):
        if self._blas is not None:
            _local.busy = _local.region = True
            self._blas.__exit__(*exc)
        return False


class _BlasThreads:
    """``with _BlasThreads(n):`` NumPy's BLAS on ``n`` threads, then back. What
    threadpoolctl's ``limit()`` does, in 2-4 us instead of about 21 (it inspects every
    library each time): it runs around every lone GEMM part and every batch-1 forward."""

    __slots__ = ("_n", "_saved")

    def __init__(self, n: int):
        self._n = n

    def __enter__(self):
        self._saved = [(c, c.num_threads) for c in _blas_controller().lib_controllers]
        for c, _ in self._saved:
            c.set_num_threads(self._n)
        return self

    def __exit__(self, *exc):
        for c, n in self._saved:
            c.set_num_threads(n)
        return False


def parallel_ranges(fn: Callable[[int, int], None], n: int, work: int) -> None:
    """``fn(lo, hi)`` over ``[0, n)`` cut into one range per worker thread, for memory-bound
    element-wise kernels (split by channel); serial when ``work`` (elements touched) is
    under about a megabyte's worth, where handing over to threads costs more than it saves."""
    workers = get_num_threads() if work >= _PARALLEL_ELEMENTS else 1
    ranges = split_range(n, workers)
    if len(ranges) < 2:
        fn(0, n)
        return
    parallel_map(lambda parts: [fn(lo, hi) for lo, hi in parts], ranges)


_PARALLEL_ELEMENTS = 1 << 18


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``parts`` nearly equal ranges (fewer if ``n < parts``)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]
