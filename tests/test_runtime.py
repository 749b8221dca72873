import os
import subprocess
import sys

import numpy as np

from cnnkit.functional import conv2d_backward, conv2d_forward


def test_tune_malloc_applies_and_can_be_opted_out():
    code = "from cnnkit.runtime import tune_malloc; print(tune_malloc())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"CNNKIT_NO_MALLOC_TUNING": "1", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": ":".join(sys.path)})
    assert on.stdout.strip() in ("True", "False")  # False only off glibc
    assert off.stdout.strip() == "False"


def test_results_do_not_depend_on_malloc_tuning():
    code = ("import numpy as np, sys; from cnnkit.runtime import tune_malloc; tune_malloc();"
            "from cnnkit.functional import conv2d_forward as f;"
            "r=np.random.default_rng(0); x=r.standard_normal((2,3,9,9)); w=r.standard_normal((4,3,3,3));"
            "sys.stdout.write(f(x,w,None,1,1)[0].tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    r = np.random.default_rng(0)
    x, w = r.standard_normal((2, 3, 9, 9)), r.standard_normal((4, 3, 3, 3))
    y, cache = conv2d_forward(x, w, None, 1, 1)
    assert bytes.fromhex(out) == np.ascontiguousarray(y).tobytes()
    conv2d_backward(np.ones_like(y), cache)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    import os
    import stat
    from cnnkit._atomic import atomic_write_bytes
    old = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "f.bin"), b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644


def test_set_num_threads_gives_blas_one_thread_and_back():
    # In a fresh process: other tests' Trainers have already set this one's threads.
    code = """
import numpy as np
from threadpoolctl import threadpool_info
from cnnkit import runtime
blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
before = blas()
assert runtime.get_num_threads() == 1 and not runtime.configured()
assert runtime.set_num_threads(2) == 2 and runtime.get_num_threads() == 2
assert set(blas()) == {1}, blas()
assert runtime.set_num_threads(1) == 1
assert blas() == before, (blas(), before)
try:
    runtime.set_num_threads(0)
except ValueError as e:
    assert "positive int" in str(e)
else:
    raise AssertionError("no error")
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_parallel_map_runs_parts_on_two_threads_and_nests_serially():
    import threading
    from cnnkit import runtime
    seen = []

    def part(items):
        inner = runtime.parallel_map(lambda xs: len(xs), range(4))  # inside a worker: serial
        seen.append((threading.get_ident(), tuple(items), inner))
        return sum(items)

    runtime.set_num_threads(2)
    try:
        results = runtime.parallel_map(part, range(7))
    finally:
        runtime.set_num_threads(1)
    assert results == [0 + 2 + 4 + 6, 1 + 3 + 5]  # round-robin parts, in part order
    assert len({ident for ident, _, _ in seen}) == 2
    assert all(inner == [4] for _, _, inner in seen)
    assert runtime.parallel_map(lambda xs: list(xs), range(3)) == [[0, 1, 2]]  # one thread: serial


def test_workers_and_the_main_thread_are_pinned_one_cpu_each_when_they_fill_the_cpus(monkeypatch):
    """With as many threads as CPUs, each worker runs on one CPU of its own and the main
    thread, during a parallel_map, on the remaining one; its own mask comes back after
    (threads it starts later must not inherit a single CPU). With fewer threads than CPUs,
    or CNNKIT_NO_PINNING=1, nobody is pinned. Simulated on a 2-CPU mask where the host has
    more (skipped on one CPU)."""
    import threading
    from cnnkit import runtime
    mask = os.sched_getaffinity(0)
    if len(mask) < 2:
        import pytest
        pytest.skip("one CPU: nothing to pin")
    two = set(sorted(mask)[:2])

    def seen(_):
        return [(threading.current_thread().name, os.sched_getaffinity(0))]
    os.sched_setaffinity(0, two)
    try:
        runtime.set_num_threads(2)
        during = runtime.parallel_map(seen, range(2))
        after = os.sched_getaffinity(0)
        assert during[0] == [("MainThread", {min(two)})]
        assert during[1][0][0].startswith("cnnkit_") and during[1][0][1] == {max(two)}
        assert after == two
        assert runtime.parallel_map(seen, range(2))[1][0][1] == {max(two)}  # the worker stays
        monkeypatch.setenv("CNNKIT_NO_PINNING", "1")
        runtime.set_num_threads(2)  # a fresh pool reads the switch
        during = runtime.parallel_map(seen, range(2))
        assert during[0][0][1] == two and during[1][0][1] == two
        monkeypatch.delenv("CNNKIT_NO_PINNING")
        if len(mask) > 2:  # fewer threads than the process's CPUs: no pinning
            os.sched_setaffinity(0, mask)
            runtime.set_num_threads(2)
            during = runtime.parallel_map(seen, range(2))
            assert during[0][0][1] == mask and during[1][0][1] == mask
    finally:
        runtime.set_num_threads(1)
        os.sched_setaffinity(0, mask)


def test_parallel_map_raises_a_parts_error_after_every_part_is_done():
    """A part that fails does not leave another one writing after parallel_map returns;
    the first failure (in part order) is raised, and the workers keep serving."""
    import time
    from cnnkit import runtime
    finished = []

    def part(items):
        if 0 in items:
            raise ValueError("part 0")
        time.sleep(0.05)  # the worker's part outlives the caller's failure
        finished.append(tuple(items))
        if 1 in items:
            raise KeyError("part 1")

    runtime.set_num_threads(2)
    try:
        try:
            runtime.parallel_map(part, range(4))
        except ValueError as e:
            assert str(e) == "part 0"
        else:
            raise AssertionError("no error raised")
        assert finished == [(1, 3)]  # done before the call returned
        try:
            runtime.parallel_map(lambda xs: 1 / 0 if 1 in xs else 0, range(2))  # only a worker fails
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("a worker's error was lost")
        assert runtime.parallel_map(lambda xs: sum(xs), range(4)) == [2, 4]
    finally:
        runtime.set_num_threads(1)


def test_parallel_map_from_two_threads_at_once_keeps_results_apart():
    import threading
    from cnnkit import runtime
    runtime.set_num_threads(2)
    out, errors = {}, []

    def caller(k):
        try:
            for _ in range(200):
                got = runtime.parallel_map(lambda xs: [k * 1000 + x for x in xs], range(4))
                assert got == [[k * 1000, k * 1000 + 2], [k * 1000 + 1, k * 1000 + 3]], got
            out[k] = True
        except BaseException as e:  # (reported below)
            errors.append(e)
    try:
        threads = [threading.Thread(target=caller, args=(k,)) for k in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and out == {1: True, 2: True, 3: True}, errors
        pool = runtime._state["pool"]
        runtime.set_num_threads(2)  # a new pool; the old one's threads are gone
        assert all(not t.is_alive() for t in pool.threads)
    finally:
        runtime.set_num_threads(1)


def test_split_range_covers_everything_once():
    from cnnkit.runtime import split_range
    assert split_range(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split_range(2, 5) == [(0, 1), (1, 2)]


def test_parallel_map_works_in_a_forked_child():
    import os
    from cnnkit import runtime
    runtime.set_num_threads(2)
    try:
        assert runtime.parallel_map(lambda xs: sum(xs), range(4)) == [2, 4]  # the parent's pool exists
        pid = os.fork()
        if pid == 0:  # child: the pool's threads did not survive the fork
            ok = runtime.parallel_map(lambda xs: sum(xs), range(4)) == [2, 4]
            os._exit(0 if ok else 1)
        import signal
        import time
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:  # hung: waiting on threads that do not exist in the child
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("parallel_map hung in a forked child")
        assert os.WEXITSTATUS(done[1]) == 0
    finally:
        runtime.set_num_threads(1)


def test_blas_threaded_runs_kernels_inline_with_blas_on_every_worker_core():
    # In a fresh process, as above: BLAS's thread count is what is checked.
    code = """
import threading
from threadpoolctl import threadpool_info
from cnnkit import runtime
blas = lambda: {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
runtime.set_num_threads(2)
assert blas() == {1}
me = threading.get_ident()
threads = lambda: set(runtime.parallel_map(lambda xs: threading.get_ident(), range(4)))


def _nested():
    with runtime.workers_again():
        return sorted(threads())
assert len(threads()) == 2
with runtime.blas_threaded():
    assert blas() == {2}, blas()
    assert threads() == {me}
    with runtime.blas_threaded():  # nested: a no-op
        assert blas() == {2} and threads() == {me}
    assert blas() == {2} and threads() == {me}
    with runtime.workers_again():  # parts on the workers again, BLAS on one thread
        assert blas() == {1} and len(threads()) == 2
        # on a worker, workers_again changes nothing: its parts stay inline
        inner = runtime.parallel_map(lambda xs: [_nested() for _ in xs], range(2))
        assert all(t == [threading.get_ident()] or len(t) == 1 for part in inner for t in part)
    assert blas() == {2} and threads() == {me}
assert blas() == {1} and len(threads()) == 2
try:
    with runtime.blas_threaded():
        raise KeyError("boom")
except KeyError:
    pass
assert blas() == {1} and len(threads()) == 2
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_one_image_forward_in_eval_mode_runs_in_one_threading_mode():
    """Layer.__call__ enters blas_threaded for one image in evaluation mode only, and the
    output is the one the batched forward gives that image."""
    from cnnkit import models, runtime
    from cnnkit.nn import Layer

    seen = []

    class Probe(Layer):
        def forward(self, x):
            seen.append(bool(getattr(runtime._local, "busy", False)))
            return x

        def backward(self, dy):
            return dy

    net = models.get("cnn_bn", rng=np.random.default_rng(0)).eval()
    probe = Probe()
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    runtime.set_num_threads(2)
    try:
        batch = net(x)
        one = net(x[:1])
        probe.eval()(x[:1]), probe(x), probe.train()(x[:1])
    finally:
        runtime.set_num_threads(1)
    assert seen == [True, False, False]
    np.testing.assert_allclose(one, batch[:1], rtol=1e-5, atol=1e-6)
    assert not getattr(runtime._local, "busy", False)


def _python(code, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "CNNKIT_NO_BLAS_TUNING")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(base, **env)).stdout.split()


def test_import_cnnkit_before_numpy_stops_openblas_idle_threads_spinning():
    code = ("import os, cnnkit; from cnnkit.runtime import blas_thread_timeout;"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), blas_thread_timeout())")
    env_value, seen = _python(code)
    assert env_value == "4"
    assert seen in ("4", "None")  # None: a BLAS other than OpenBLAS
    assert _python(code, OPENBLAS_THREAD_TIMEOUT="12")[0] == "12"  # the user's value wins
    assert _python(code, CNNKIT_NO_BLAS_TUNING="1")[0] == "None"  # opted out
    # NumPy first: its OpenBLAS has read the environment already; cnnkit leaves it alone
    code_after = ("import numpy, os, cnnkit; from cnnkit.runtime import blas_thread_timeout;"
                  "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), blas_thread_timeout())")
    env_value, seen = _python(code_after)
    assert env_value == "None" and seen in ("0", "None")
