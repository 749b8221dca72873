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
