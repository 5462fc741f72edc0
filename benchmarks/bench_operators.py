"""Operator speed: convop against the real alternatives, side by side in one run.

Usage::

    python benchmarks/bench_operators.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_operators.py --quick    # smaller cases, fewer repeats
    python benchmarks/bench_operators.py --markdown # tables for docs/benchmarks.md

Every alternative is first checked to compute the same linear map as convop (same array in,
same array out, to round-off), then timed: median of repeats after one warm-up call, all in
this process, so the ratios compare like with like. Ratios are ``time / anchor``.

Groups:

1. deblurring operators (one channel, large kernels, 'same' zero padding): convop (auto)
   vs PyLops ``Convolve2D`` (fft and direct), raw ``torch.nn.functional.conv2d`` and
   ``scipy.signal.fftconvolve``; forward and adjoint; anchor PyLops fft;
2. conv-layer operators: convop ``matvec``/``rmatvec`` vs raw ``F.conv2d`` /
   ``F.conv_transpose2d`` on the same arrays and the explicit CSR matrix's products;
3. an end-to-end ``lsqr`` deblur (512², 15×15 kernel, fixed iterations): convop vs PyLops,
   and ``lsqr`` through a small float64 conv layer: convop vs its explicit CSR matrix; each
   with convop's default thread policy and with torch's threads (``array_threads(None)``),
   and again in a child process with ``OPENBLAS_NUM_THREADS=1``;
4. 3-D: a 128³ volume with a 9³ kernel: convop (auto, direct, fft) vs ``F.conv3d``;
5. "auto" against the faster of direct and FFT on every case above.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pylops
import scipy
import scipy.signal
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

import convop
import convop.data

ROWS: list[tuple[str, str, str, float, str]] = []  # group, case, method, seconds, note


def timeit(fn: Callable[[], object], repeats: int, budget: float = 20.0) -> float:
    """Median over ``repeats`` of the mean time per call of a loop of calls.

    Each loop runs long enough (>= 10 ms) for the clock, so microsecond products are timed
    as reliably as second-long ones; fewer repeats if a call is slow. Warm-up first: calls
    for at least 0.1 s (at least one), so that the first case of a fresh process does not pay
    for growing the heap and starting thread pools.

    Methods are timed one after the other, not interleaved: on this VM, alternating numpy,
    single- and multi-threaded torch work every few milliseconds made identical computations
    differ by up to 3x (allocator and thread-pool churn), far more than sequential drift.
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    while time.perf_counter() - start < 0.1:
        fn()
    number = max(1, int(0.01 / max(first, 1e-9)))
    runs = max(1, min(repeats, int(budget / max(first * number, 1e-9))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def shown(seconds: float) -> str:
    """``'41.2 us'``, ``'3.05 ms'``, ``'1.55 s'``: three significant digits; ``'—'`` for NaN."""
    if seconds != seconds:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def record(group: str, case: str, method: str, seconds: float, note: str = "") -> None:
    ROWS.append((group, case, method, seconds, note))
    print(f"  {group:8s} {case:28s} {method:34s} {shown(seconds):>10s}  {note}")


def check(actual: np.ndarray, expected: np.ndarray, what: str, rtol: float = 1e-9) -> None:
    scale = np.abs(expected).max()
    err = np.abs(np.asarray(actual).reshape(expected.shape) - expected).max()
    if err > rtol * scale:
        raise AssertionError(f"{what}: max error {err:.2e} vs scale {scale:.2e}")


# ---------------------------------------------------------------------- 1. deblurring
def deblurring(n: int, k: int, repeats: int, slow_limit: float) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((k, k))
    image = rng.standard_normal((n, n))
    case = f"{n}x{n}, k={k}"
    # convop computes PyTorch's cross-correlation: flip the kernel to get PyLops' convolution.
    weight = np.ascontiguousarray(kernel[::-1, ::-1])[None, None]
    op = convop.conv2d(weight, (1, n, n), padding="same")
    direct = convop.conv2d(weight, (1, n, n), padding="same", method="direct")
    fourier = convop.conv2d(weight, (1, n, n), padding="same", method="fft")
    x = image.ravel()
    expected = fourier @ x
    v = rng.standard_normal(op.shape[0])
    expected_adjoint = fourier.rmatvec(v)

    pl_fft = pylops.signalprocessing.Convolve2D((n, n), h=kernel, offset=(k // 2, k // 2),
                                                method="fft")  # fmt: skip
    pl_direct = pylops.signalprocessing.Convolve2D((n, n), h=kernel, offset=(k // 2, k // 2),
                                                   method="direct")  # fmt: skip
    check(pl_fft @ x, expected, "pylops fft forward")
    check(pl_fft.H @ v, expected_adjoint, "pylops fft adjoint")
    tx = torch.from_numpy(image)[None, None]
    tw = torch.from_numpy(weight)
    check(F.conv2d(tx, tw, padding="same").numpy().ravel(), expected, "torch conv2d")
    check(scipy.signal.fftconvolve(image, kernel, mode="same").ravel(), expected, "fftconvolve")

    anchor = timeit(lambda: pl_fft @ x, repeats)
    record("deblur", case, "pylops Convolve2D fft (anchor)", anchor)
    for name, operator in (
        ("convop auto", op),
        ("convop direct", direct),
        ("convop fft", fourier),
    ):
        seconds = timeit(lambda operator=operator: operator @ x, repeats)
        record("deblur", case, f"{name} [{operator.method}]", seconds, f"{seconds / anchor:.2f}x")
    seconds = timeit(lambda: op.apply(tx), repeats)
    record("deblur", case, f"convop auto, torch face [{op.method}]", seconds,
           f"{seconds / anchor:.2f}x")  # fmt: skip
    seconds = timeit(lambda: F.conv2d(tx, tw, padding="same"), repeats)
    record("deblur", case, "torch F.conv2d", seconds, f"{seconds / anchor:.2f}x")
    seconds = timeit(lambda: scipy.signal.fftconvolve(image, kernel, mode="same"), repeats)
    record("deblur", case, "scipy fftconvolve", seconds, f"{seconds / anchor:.2f}x")
    if n * n * k * k < slow_limit:
        seconds = timeit(lambda: pl_direct @ x, 1)
        record("deblur", case, "pylops Convolve2D direct", seconds, f"{seconds / anchor:.2f}x")
    else:
        record("deblur", case, "pylops Convolve2D direct", float("nan"), "skipped (slow)")

    anchor = timeit(lambda: pl_fft.H @ v, repeats)
    record("deblur", case, "adjoint: pylops fft (anchor)", anchor)
    for name, operator in (
        ("convop auto", op),
        ("convop direct", direct),
        ("convop fft", fourier),
    ):
        seconds = timeit(lambda operator=operator: operator.rmatvec(v), repeats)
        record("deblur", case, f"adjoint: {name} [{operator.method}]", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip


# ---------------------------------------------------------------------- 2. conv layers
def conv_layer(c_in: int, c_out: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(c_out, c_in, k, k, dtype=dtype)
    op = convop.conv2d(weight, (c_in, n, n), padding=k // 2)
    case = f"{c_in}->{c_out}, {k}x{k}, {n}x{n}, {str(dtype)[6:]}"
    x = np.random.default_rng(0).standard_normal(op.shape[1]).astype(op.dtype)
    v = np.random.default_rng(1).standard_normal(op.shape[0]).astype(op.dtype)
    tx = torch.from_numpy(x).reshape(1, c_in, n, n)
    tv = torch.from_numpy(v).reshape(1, *op.output_shape)
    check(op @ x, F.conv2d(tx, weight, padding=k // 2).numpy().ravel(), "conv layer", 1e-5)

    def raw_forward():
        return F.conv2d(torch.from_numpy(x).reshape(1, c_in, n, n), weight, padding=k // 2)

    def raw_adjoint():
        return F.conv_transpose2d(torch.from_numpy(v).reshape(1, *op.output_shape), weight,
                                  padding=k // 2)  # fmt: skip

    check(op.rmatvec(v), raw_adjoint().numpy().ravel(), "conv layer adjoint", 1e-5)
    anchor = timeit(raw_forward, repeats)
    record("layer", case, "raw F.conv2d (anchor)", anchor)
    seconds = timeit(lambda: raw_forward().numpy().ravel(), repeats)
    record("layer", case, "raw F.conv2d + .numpy() (floor)", seconds, f"{seconds / anchor:.2f}x")
    seconds = timeit(lambda: op @ x, repeats)
    record("layer", case, f"convop auto [{op.method}] matvec", seconds, f"{seconds / anchor:.2f}x")
    for method in ("direct", "fft"):
        other = convop.conv2d(weight, (c_in, n, n), padding=k // 2, method=method)
        seconds = timeit(lambda other=other: other @ x, repeats)
        record("layer", case, f"convop {method} [{method}] matvec", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip
    with convop.array_threads(None):  # torch's threads: no single-thread switch for float64
        seconds = timeit(lambda: op @ x, repeats)
    record("layer", case, "convop matvec, array_threads(None)", seconds,
           f"{seconds / anchor:.2f}x")  # fmt: skip
    seconds = timeit(lambda: op.apply(tx), repeats)
    record("layer", case, f"convop apply, torch face [{op.method}]", seconds,
           f"{seconds / anchor:.2f}x")  # fmt: skip
    # convop overrides scipy's public matvec/rmatvec/dot; without them, scipy's own path:
    base = spla.LinearOperator
    for name, call in (("matvec", base.matvec), ("dot", base.dot)):
        seconds = timeit(lambda call=call: call(op, x), repeats)
        record("layer", case, f"scipy's {name} path (no convop override)", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip
    anchor_t = timeit(raw_adjoint, repeats)
    record("layer", case, "raw F.conv_transpose2d (anchor)", anchor_t)
    seconds = timeit(lambda: op.rmatvec(v), repeats)
    record("layer", case, f"convop auto [{op.method}] rmatvec", seconds,
           f"{seconds / anchor_t:.2f}x")  # fmt: skip
    seconds = timeit(lambda: spla.LinearOperator.rmatvec(op, v), repeats)
    record("layer", case, "scipy's rmatvec path (no convop override)", seconds,
           f"{seconds / anchor_t:.2f}x")  # fmt: skip
    with convop.array_threads(None):
        seconds = timeit(lambda: op.rmatvec(v), repeats)
    record("layer", case, "convop rmatvec, array_threads(None)", seconds,
           f"{seconds / anchor_t:.2f}x")  # fmt: skip
    seconds = timeit(lambda: op.apply_adjoint(tv), repeats)
    record("layer", case, f"convop apply_adjoint, torch face [{op.method}]", seconds,
           f"{seconds / anchor_t:.2f}x")  # fmt: skip
    matrix = op.tosparse()
    seconds = timeit(lambda: matrix @ x, repeats)
    record("layer", case, "explicit CSR @ x", seconds, f"{seconds / anchor:.2f}x")
    seconds = timeit(lambda: matrix.T @ v, repeats)
    record("layer", case, "explicit CSR.T @ v", seconds, f"{seconds / anchor_t:.2f}x")


# ---------------------------------------------------------------------- 3. lsqr deblur
def lsqr_deblur(n: int, k: int, iterations: int, label: str = "") -> None:
    rng = np.random.default_rng(0)
    kernel = convop.data.gaussian_kernel(k, k / 5)
    image = convop.data.phantom(n)
    op = convop.conv2d(kernel[None, None], (1, n, n), padding="same")
    P = pylops.signalprocessing.Convolve2D((n, n), h=kernel[::-1, ::-1],
                                           offset=(k // 2, k // 2), method="fft")  # fmt: skip
    y = op @ image.ravel() + 0.01 * rng.standard_normal(op.shape[0])
    check(P @ image.ravel(), op @ image.ravel(), "lsqr operators agree")
    case = f"{n}x{n}, k={k}, {iterations} it{label}"

    def solve(A):
        return spla.lsqr(A, y, damp=1e-2, iter_lim=iterations, atol=0, btol=0, conlim=0)[0]

    start = time.perf_counter()
    x_pylops = solve(P)
    anchor = time.perf_counter() - start
    record("lsqr", case, "scipy lsqr on PyLops Convolve2D fft (anchor)", anchor)
    # default: float64 products on numpy arrays run torch single-threaded (convop.threads);
    # None: torch's own thread count, which fights numpy's spinning BLAS threads.
    for setting, name in (("auto", "default"), (None, "array_threads(None)")):
        with convop.array_threads(setting):
            start = time.perf_counter()
            x_convop = solve(op)
            seconds = time.perf_counter() - start
        record("lsqr", case, f"scipy lsqr on convop [{op.method}], {name}", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip
        check(x_convop, x_pylops, "lsqr solutions agree", 1e-6)


def lsqr_layer(iterations: int, label: str = "") -> None:
    """A solve through a small float64 conv layer: where the thread policy matters most."""
    torch.manual_seed(0)
    op = convop.conv2d(torch.randn(16, 3, 3, 3, dtype=torch.float64), (3, 32, 32), padding=1)
    y = np.random.default_rng(0).standard_normal(op.shape[0])
    case = f"3->16, 3x3, 32x32, float64, {iterations} it{label}"
    matrix = op.tosparse()

    def solve(A):
        return spla.lsqr(A, y, damp=1e-2, iter_lim=iterations, atol=0, btol=0, conlim=0)[0]

    anchor = timeit(lambda: solve(matrix), 3)
    record("lsqr", case, "scipy lsqr on the explicit CSR (anchor)", anchor)
    for setting, name in (("auto", "default"), (None, "array_threads(None)")):
        with convop.array_threads(setting):
            seconds = timeit(lambda: solve(op), 3)
            check(solve(op), solve(matrix), "lsqr layer solutions agree", 1e-8)
        record("lsqr", case, f"scipy lsqr on convop [{op.method}], {name}", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip


# ---------------------------------------------------------------------- 4. 3-D
def volume(n: int, k: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1, 1, k, k, k))
    x = rng.standard_normal(n**3)
    case = f"{n}^3, k={k}"
    ops = {m: convop.conv3d(weight, (1, n, n, n), padding="same", method=m)
           for m in ("auto", "direct", "fft")}  # fmt: skip
    check(ops["fft"] @ x, ops["direct"] @ x, "3-D fft vs direct")
    tx = torch.from_numpy(x).reshape(1, 1, n, n, n)
    tw = torch.from_numpy(weight)
    anchor = timeit(lambda: F.conv3d(tx, tw, padding="same"), 1)
    record("3-D", case, "torch F.conv3d (anchor)", anchor)
    for name, operator in ops.items():
        seconds = timeit(lambda operator=operator: operator @ x, repeats)
        record("3-D", case, f"convop {name} [{operator.method}]", seconds,
               f"{seconds / anchor:.2f}x")  # fmt: skip


# ---------------------------------------------------------------------- report
def auto_summary() -> list[str]:
    """For every case timed with auto, direct and fft: did auto pick the faster method?

    auto runs exactly the code of the method it picked, so its cost is that method's time:
    ``time(picked) / min(time(direct), time(fft))`` (1.00 when it picked the faster one).
    The separately timed auto row differs from its method's row only by timing noise.
    """
    lines = []
    by_case: dict[tuple[str, str, str], dict[str, tuple[float, str]]] = {}
    for group, case, method, seconds, _ in ROWS:
        prefix = "adjoint: " if method.startswith("adjoint: ") else ""
        name = method.removeprefix("adjoint: ")
        for kind in ("auto", "direct", "fft"):
            if name.startswith(f"convop {kind} ["):
                picked, product = name[name.index("[") + 1 :].split("]")  # "fft", " matvec"
                key = (group, case, (prefix + product).strip())
                by_case.setdefault(key, {})[kind] = (seconds, picked)
    for (group, case, prefix), times in by_case.items():
        if len(times) == 3:
            picked = times["auto"][1]
            best = min(("direct", "fft"), key=lambda kind: times[kind][0])
            ratio = times[picked][0] / times[best][0]
            noise = times["auto"][0] / times[picked][0]
            lines.append(
                f"{group} {case} {f'{prefix} ' if prefix else ''}auto picked {picked}, "
                f"fastest {best}: "
                f"{ratio:.2f}x the best (auto row / {picked} row: {noise:.2f}, noise)"
            )
    return lines


def markdown() -> str:
    out = ["| group | case | method | median | vs anchor |", "|---|---|---|---:|---|"]
    for group, case, method, seconds, note in ROWS:
        out.append(f"| {group} | {case} | {method} | {shown(seconds)} | {note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer repeats")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--lsqr-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lsqr_size = (256, 15, 20) if args.quick else (512, 15, 50)
    if args.lsqr_only:  # the child run below, with one OpenBLAS thread
        label = ", OPENBLAS_NUM_THREADS=1"
        lsqr_deblur(*lsqr_size, label=label)
        lsqr_layer(30, label=label)
        for row in ROWS:
            print("ROW\t" + "\t".join(map(str, row)))
        return
    repeats = 3 if args.quick else 7
    machine = platform.processor() or platform.machine()
    print(f"convop {convop.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, pylops {pylops.__version__}, {machine}, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    sizes = [(256, 5), (512, 9)] if args.quick else [(256, 5), (512, 9), (512, 31), (1024, 15)]
    for n, k in sizes:
        deblurring(n, k, repeats, slow_limit=3e7)
    conv_layer(64, 64, 3, 56, torch.float32, repeats)
    conv_layer(3, 16, 3, 32, torch.float64, repeats)
    lsqr_deblur(*lsqr_size)
    lsqr_layer(30)
    # numpy's OpenBLAS threads spin after each BLAS call of the solver and starve torch's
    # threads; the same solves with one OpenBLAS thread, in a fresh process:
    child = subprocess.run(
        [sys.executable, __file__, "--lsqr-only", *(["--quick"] if args.quick else [])],
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    for line in child.stdout.splitlines():
        if line.startswith("ROW\t"):
            group, case, method, seconds, note = line.split("\t")[1:]
            ROWS.append((group, case, method, float(seconds), note))
        else:
            print(line)
    volume(64 if args.quick else 128, 9, 1 if args.quick else 3)
    print()
    print("auto against the best of direct and fft:")
    for line in auto_summary():
        print("  " + line)
    if args.markdown:
        print()
        print(markdown())


if __name__ == "__main__":
    main()
