"""The JIT switch for kernel tests: a test module names which of its tests run twice,
with the Numba-compiled kernels (where Numba is installed) and with the NumPy ones:

    def pytest_generate_tests(metafunc):
        jit_both_ways(metafunc, "batch_norm" in metafunc.function.__name__)
"""

from __future__ import annotations

import pytest

from cnnkit import runtime


def jit_both_ways(metafunc, wanted: bool) -> None:
    if wanted:
        metafunc.fixturenames.append("jit_mode")
        metafunc.parametrize("jit_mode", [True, False], ids=["jit", "numpy"])


@pytest.fixture(autouse=True)
def _jit_switch(request):
    callspec = getattr(request.node, "callspec", None)
    mode = callspec.params.get("jit_mode") if callspec is not None else None
    if mode is None:
        yield
        return
    previous = runtime.set_jit(mode)
    assert (runtime.jit_kernels() is not None) == (mode and runtime._state["jit_module"] is not False)
    yield
    runtime.set_jit(previous)
