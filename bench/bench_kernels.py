"""Conv and pooling kernels, forward + backward, cnnkit vs PyTorch in the same process.

Prints (and writes to bench/results_kernels.md) the ratio ours/PyTorch of the
median time over several repeats, both on the same number of threads.

This machine may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (older OpenBLAS builds
need them on some CPUs); they slow NumPy's BLAS, so this script unsets both for
its own process only (it re-executes itself before importing NumPy). Tests and CI
leave them alone.

Usage: python bench/bench_kernels.py [--threads 2] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import interleaved_medians, limit_threads, median_time, reexec_without_openblas_overrides  # noqa: E402

reexec_without_openblas_overrides()

import platform  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# (name, kind, N, C_in, C_out, H, kernel, stride, padding, groups)
CASES = [
    ("LeNet C1 5x5", "conv", 64, 1, 6, 32, 5, 1, 0, 1),
    ("AlexNet conv1 11x11 s4", "conv", 8, 3, 96, 227, 11, 4, 0, 1),
    ("VGG 3x3 64->64 @56", "conv", 8, 64, 64, 56, 3, 1, 1, 1),
    ("ResNet 1x1 256->64 @56", "conv", 8, 256, 64, 56, 1, 1, 0, 1),
    ("3x3 s2 128->128 @28", "conv", 8, 128, 128, 28, 3, 2, 1, 1),
    ("depthwise 3x3 512 @14", "conv", 8, 512, 512, 14, 3, 1, 1, 512),
    ("max pool 3x3 s2 96 @55", "maxpool", 8, 96, 96, 55, 3, 2, 0, 1),
    ("avg pool 2x2 s2 64 @56", "avgpool", 8, 64, 64, 56, 2, 2, 0, 1),
    ("cnn_bn 3x3 32->32 @28", "conv", 128, 32, 32, 28, 3, 1, 1, 1),
    ("cnn_bn 3x3 64->64 @14", "conv", 128, 64, 64, 14, 3, 1, 1, 1),
    ("max pool 2x2 s2 32 @28", "maxpool", 128, 32, 32, 28, 2, 2, 0, 1),
]


def gemm_peak(threads: int, repeats: int = 5) -> float:
    """Single-precision GEMM GFLOP/s of a large square ``np.matmul`` on ``threads`` BLAS
    threads: the machine's practical limit for convolution arithmetic."""
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        t = median_time(lambda: a @ a, repeats)
    return 2 * 2048 ** 3 / t / 1e9


def make_case(case, rng):
    import torch
    import torch.nn.functional as F

    from cnnkit.functional import conv as C
    from cnnkit.functional import pool as P

    name, kind, n, cin, cout, h, k, s, p, g = case
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    if kind == "conv":
        w = (rng.standard_normal((cout, cin // g, k, k)) * 0.1).astype(np.float32)
        b = np.zeros(cout, np.float32)
        wt = torch.from_numpy(w.copy()).requires_grad_(True)
        bt = torch.from_numpy(b.copy()).requires_grad_(True)
        dy = np.ones(C.conv2d(x, w, b, s, p, 1, g).shape, np.float32)
        dyt = torch.from_numpy(dy.copy())

        def ours():
            y, cache = C.conv2d_forward(x, w, b, s, p, 1, g)
            C.conv2d_backward(dy, cache)

        def theirs():
            xt.grad = wt.grad = bt.grad = None
            F.conv2d(xt, wt, bt, s, p, 1, g).backward(dyt)
        macs = dy.size * (cin // g) * k * k
        return ours, theirs, 3 * 2 * macs  # forward + two backward GEMMs, 2 FLOPs per MAC
    fwd, bwd, tf = ((P.max_pool2d_forward, P.max_pool2d_backward, F.max_pool2d) if kind == "maxpool"
                    else (P.avg_pool2d_forward, P.avg_pool2d_backward, F.avg_pool2d))
    dy = np.ones(fwd(x, k, s, p)[0].shape, np.float32)
    dyt = torch.from_numpy(dy.copy())

    def ours():
        y, cache = fwd(x, k, s, p)
        bwd(dy, cache)

    def theirs():
        xt.grad = None
        tf(xt, k, s, p).backward(dyt)
    return ours, theirs, 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=5, help="alternating turns per library and row")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls a turn (their median)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_kernels.md")))
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--only", help="run only the cases whose name contains this text")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc's default mmap threshold (see cnnkit/runtime.py)")
    args = ap.parse_args()
    tuned = limit_threads(args.threads, malloc_tuning=not args.no_malloc_tuning)
    import torch

    peak = gemm_peak(args.threads)
    print(f"GEMM peak (2048x2048 float32 matmul, {args.threads} BLAS threads): {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    rows = []
    for case in CASES:
        if args.only and args.only not in case[0]:
            continue
        ours, theirs, flops = make_case(case, rng)
        t_ours, t_torch = interleaved_medians(ours, theirs, args.turns, args.repeats)
        gflops = f"{flops / t_ours / 1e9:.1f}" if flops else "-"
        share = f"{100 * flops / t_ours / 1e9 / peak:.0f}%" if flops else "-"
        torch_gflops = f"{flops / t_torch / 1e9:.1f}" if flops else "-"
        rows.append((case[0], t_ours * 1e3, t_torch * 1e3, t_ours / t_torch, gflops, share, torch_gflops))
        print(f"{case[0]:28s} ours {t_ours * 1e3:8.2f} ms  torch {t_torch * 1e3:8.2f} ms  "
              f"ratio {t_ours / t_torch:5.2f}  ({gflops} GFLOP/s)", flush=True)

    lines = [f"Forward + backward, float32, {args.threads} threads; the median of {args.turns} turns "
             f"that alternate between the libraries, each turn's time the median of {args.repeats} calls "
             "after a pause and 0.1 s of untimed calls; "
             f"NumPy {np.__version__}, PyTorch {torch.__version__}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores; malloc tuning {'on' if tuned else 'off'} (cnnkit/runtime.py). "
             f"GEMM peak: {peak:.1f} GFLOP/s (2048x2048 float32 `np.matmul`, {args.threads} BLAS threads). "
             "GFLOP/s count the forward GEMM and the two backward ones (2 FLOPs per multiply-add) of "
             "im2col; rows that run as Winograd F(2x2, 3x3) (3x3, stride 1) do 2.25x fewer, so theirs "
             "is an effective rate.", "",
             "| case | cnnkit ms | PyTorch ms | ratio ours/PyTorch | cnnkit GFLOP/s | % of GEMM peak | "
             "PyTorch GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {a:.2f} | {b:.2f} | {r:.2f} | {g} | {p} | {tg} |" for n, a, b, r, g, p, tg in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"gemm_peak_gflops": peak, "rows": [
            dict(case=n, cnnkit_ms=a, pytorch_ms=b, ratio=r, gflops=g, peak_share=p, pytorch_gflops=tg)
            for n, a, b, r, g, p, tg in rows]}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
