"""Operator speed: every goal of convop's products as a ratio against its anchor, in one run.

Usage::

    python benchmarks/bench_operators.py                # full run (~2 min + bench_auto's grid)
    python benchmarks/bench_operators.py --quick        # fewer repeats, smaller grids (< 2 min)
    python benchmarks/bench_operators.py --markdown     # also print the tables as Markdown
    python benchmarks/bench_operators.py --write docs/benchmarks.md  # regenerate its tables
    python benchmarks/bench_operators.py --goals 1,5    # some goals only (not with --write)

Every alternative is first checked to compute the same linear map as convop (same array in,
same array out, to round-off), then timed: the median of repeats of a loop of calls at
least 10 ms long, after 0.1 s of warm-up, with torch's default threads. Each goal's section
runs in a fresh Python process of its own (:func:`in_fresh_process`), so that no ratio
depends on what ran before it.
The torch computations that a ratio compares run in interleaved rounds (:func:`interleaved`);
numpy-based anchors run one after the other (:func:`timeit`). Ratios are ``time / anchor``
(< 1: convop is faster).

The goals (each a row of the goals table; a goal measured on several cases has one row per
case, whose ratio is the worst of its products):

1. numpy face (``op.matvec(x)``, ``op.rmatvec(y)`` on contiguous numpy vectors) <= 1.25x the
   torch face (``op.apply(t)``, ``op.apply_adjoint(t)`` on tensors of ``input_shape``) of the
   same operator: blur 512^2 k=31, blur 1024^2 k=15, 3-D 128^3 k=9, 'same' zero padding, one
   channel, float32 and float64;
2. a small layer (3->16, 3x3, 32^2, padding=1, float64): numpy face <= 1.2x raw ``F.conv2d``
   on tensors, and its adjoint <= 1.2x raw ``F.conv_transpose2d``;
3. 30 ``lsqr`` iterations of a 512^2 k=15 float64 deblur: convop <= 0.6x PyLops
   ``Convolve2D(method='fft')``, both inside ``convop.solver_threads()``; shown beside it:
   convop inside ``solver_threads()`` against plain PyLops, and ``lsqr`` through the small
   layer against its explicit CSR matrix;
4. deblurring (256^2 k=5, 512^2 k=15, 512^2 k=31, 1024^2 k=15, float64): convop's numpy face
   <= 0.7x the better of PyLops ``Convolve2D`` fft and direct, forward and adjoint;
5. torch face <= 1.1x the FFT floor on the blurs of goal 1, forward and adjoint, float32,
   float64 and complex128. The floor is one ``rfftn`` + ``irfftn`` pair (``fftn`` + ``ifftn``
   for complex data) on the operator's FFT grid with one pointwise product by a precomputed
   spectrum: no padding, cropping or checks; not the same map, so not checked against it;
6. ``method="auto"`` within 1.2x of the faster of direct and FFT on every case of the wide
   grid of ``benchmarks/bench_auto.py`` (its quick grid with ``--quick``; skipped if absent);
7. DeepInverse: convop's torch face <= 0.4x the better of ``deepinv.physics.functional``'s
   ``conv2d`` and ``conv2d_fft`` (adjoints: ``conv_transpose2d``, ``conv_transpose2d_fft``)
   on the 512^2 and 1024^2 blurs, zero padding on both sides (skipped if not installed).

A goal that is not met prints FAIL; a check or a section that breaks prints ERROR and the run
goes on; the exit code is 0 either way (2 for a wrong command line).

One file on purpose, longer than most modules: one run, one script (its sections each in a
process of their own), so that every ratio compares like with like, and the report that
docs/benchmarks.md shows is built from it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import _sections  # benchmarks/, the script's own folder
import numpy as np
import pylops
import scipy
import scipy.fft
import scipy.signal
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from _sections import Timing, cell, merge, run_fresh, shown, write_section
from _timing import timeit

import convop
import convop.data

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- bench_operators:begin -->", "<!-- bench_operators:end -->"
BOUNDS = {1: 1.25, 2: 1.2, 3: 0.6, 4: 0.7, 5: 1.1, 6: 1.2, 7: 0.4}
BLURS = ((2, 512, 31), (2, 1024, 15), (3, 128, 9))  # goals 1 and 5: (ndim, n, k)
DEBLURS = ((256, 5), (512, 15), (512, 31), (1024, 15))  # goal 4
DTYPES = {"float32": np.float32, "float64": np.float64, "complex128": np.complex128}


# ---------------------------------------------------------------------- the report
@dataclass
class Goal:
    goal: int
    what: str
    ratio: float  # the worst of the products the row covers; NaN if not measured
    detail: str
    bound: float | None = None  # None: shown for information
    error: str = ""

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.ratio != self.ratio:
            return "skipped"
        if self.bound is None:
            return "info"
        return "pass" if self.ratio <= self.bound else "FAIL"


@dataclass
class Report:
    settings: argparse.Namespace
    timings: list[Timing] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    others: dict[str, float] = field(default_factory=dict)  # section -> others' CPU share

    def record(self, group: str, case: str, method: str, seconds: float, note: str = "") -> float:
        self.timings.append(Timing(group, case, method, seconds, note))
        print(f"  {group:7s} {case:30s} {method:48s} {shown(seconds):>10s}  {note}", flush=True)
        return seconds

    def goal(self, goal: int, what: str, ratios: dict[str, float], *, info: bool = False,
             extra: str = "") -> None:  # fmt: skip
        """One row: its ratio is the worst of ``ratios`` (product name -> ratio)."""
        worst = max(ratios.values()) if ratios else float("nan")
        detail = ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
        row = Goal(goal, what, worst, f"{detail}{'; ' if extra and detail else ''}{extra}",
                   None if info else BOUNDS[goal])  # fmt: skip
        self.goals.append(row)
        print(f"  -> goal {goal}: {what}: {detail} [{row.verdict}]", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                budget: float = 20.0) -> dict[str, float]:  # fmt: skip
    """Like :func:`timeit` for several torch computations at once, in interleaved rounds.

    Each round runs one timed loop (>= 10 ms) of every function, so slow drift of the
    machine (seconds to minutes on this VM) falls alike on the products a ratio compares.
    Only for torch work: alternating torch's spinning OpenMP workers with numpy's threads
    every few milliseconds makes both slower (see :func:`timeit`), so numpy-based anchors
    are timed by :func:`timeit`, one after the other.
    """
    numbers, first = {}, {}
    for name, fn in fns.items():  # warm-up, as in timeit
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
        while time.perf_counter() - start < 0.1:
            fn()
        numbers[name] = max(1, int(0.01 / max(first[name], 1e-9)))
    per_round = sum(first[name] * numbers[name] for name in fns)
    runs = max(1, min(repeats, int(budget / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            times[name].append((time.perf_counter() - start) / numbers[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def check(actual, expected, what: str, rtol: float, scale: float | None = None) -> None:
    """``max|actual - expected| <= rtol * scale`` (scale: ``max|expected|`` by default)."""
    actual = np.asarray(actual.numpy() if isinstance(actual, torch.Tensor) else actual)
    expected = np.asarray(expected.numpy() if isinstance(expected, torch.Tensor) else expected)
    scale = float(np.abs(expected).max()) if scale is None else scale
    err = float(np.abs(actual.reshape(expected.shape) - expected).max())
    if not err <= rtol * scale:
        raise AssertionError(f"{what}: max error {err:.2e} > {rtol:.0e} x scale {scale:.2e}")


@contextlib.contextmanager
def section(report: Report, goal: int, what: str) -> Iterator[None]:
    """Run one part of the benchmark; an exception becomes an ERROR row, and the run goes on."""
    try:
        yield
    except Exception as exc:  # the run must report every other goal
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        report.goals.append(Goal(goal, what, float("nan"), "", BOUNDS[goal], message))
        print(f"  -> goal {goal}: {what}: ERROR {message}", flush=True)


def rng_array(shape, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return np.ascontiguousarray(a.astype(dtype))


# ---------------------------------------------------------------------- blurs (goals 1, 4, 5, 7)
@dataclass
class Blur:
    """One single-channel 'same' zero-padded blur: operator, data, and checked references."""

    ndim: int
    n: int
    k: int
    dtype: type
    op: convop.ConvOperator
    weight: np.ndarray  # (1, 1, *k): convop's correlation kernel
    x: np.ndarray  # flattened input
    y: np.ndarray  # flattened output-space vector for the adjoint
    tx: torch.Tensor  # x as a tensor of input_shape (shares memory)
    ty: torch.Tensor

    @property
    def case(self) -> str:
        size = f"{self.n}^2" if self.ndim == 2 else f"{self.n}^{self.ndim}"
        return f"{size}, k={self.k}, {np.dtype(self.dtype).name}"


def blur(report: Report, ndim: int, n: int, k: int, dtype_name: str) -> Blur:
    """The blur of these sizes, built and checked once per run (cached on the report)."""
    key = ("blur", ndim, n, k, dtype_name)
    if key in report.cache:
        return report.cache[key]
    dtype = DTYPES[dtype_name]
    weight = rng_array((1, 1) + (k,) * ndim, dtype, seed=k)
    make = convop.conv2d if ndim == 2 else convop.conv3d
    op = make(weight, (1,) + (n,) * ndim, padding="same")
    x = rng_array(op.shape[1], dtype, seed=1)
    y = rng_array(op.shape[0], dtype, seed=2)
    b = Blur(ndim, n, k, dtype, op, weight, x, y,
             torch.from_numpy(x).reshape(op.input_shape),
             torch.from_numpy(y).reshape(op.output_shape))  # fmt: skip
    # The oracle: scipy's FFT convolution in float64 (complex128), an independent
    # implementation. torch correlates: the forward map convolves with the flipped kernel,
    # the adjoint with the conjugated kernel (odd k: 'same' is centred alike).
    w = weight[0, 0].astype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)
    image, outside = x.reshape((n,) * ndim), y.reshape((n,) * ndim)
    forward = scipy.signal.fftconvolve(image.astype(w.dtype), np.flip(w), mode="same")
    adjoint = scipy.signal.fftconvolve(outside.astype(w.dtype), w.conj(), mode="same")
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    norm1 = float(np.abs(w).sum())
    check(op.matvec(x), forward, f"{b.case} matvec", rtol, norm1 * np.abs(x).max())
    check(op.rmatvec(y), adjoint, f"{b.case} rmatvec", rtol, norm1 * np.abs(y).max())
    check(op.apply(b.tx), forward, f"{b.case} apply", rtol, norm1 * np.abs(x).max())
    check(op.apply_adjoint(b.ty), adjoint, f"{b.case} apply_adjoint", rtol,
          norm1 * np.abs(y).max())  # fmt: skip
    report.cache[key] = b
    return b


def timed_checked(report: Report, group: str, case: str, method: str,
                  fn: Callable[[], object], expected, what: str, rtol: float,
                  scale: float | None = None, slow: float = 1.0) -> float:  # fmt: skip
    """Check ``fn()`` against ``expected``, then time it (:func:`timeit`) and record it.

    A call slower than ``slow`` seconds (a direct convolution 30-300x slower than the FFT)
    is timed by that one checked call.
    """
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    check(out, expected, what, rtol, scale)
    if first > slow:
        return report.record(group, case, method, first, "one cold call")
    return report.record(group, case, method, timeit(fn, report.settings.repeats))


def fft_grid(op: convop.ConvOperator) -> tuple[tuple[int, ...], str]:
    """The operator's FFT grid, and where it came from."""
    try:
        from convop import _fft

        return tuple(_fft.frame(op.geometry).sizes), "convop._fft.frame"
    except Exception:  # an internal module others may reshape: the same rule, restated
        geom = op.geometry
        sizes = tuple(
            int(scipy.fft.next_fast_len(n + lo + hi, real=True))
            for n, (lo, hi) in zip(geom.input_size, geom.padding)
        )
        return sizes, "next_fast_len of the padded size"


def floor(b: Blur) -> tuple[str, Callable[[], torch.Tensor]]:
    """One FFT pair with one pointwise product on the operator's grid: the least any FFT
    evaluation of the operator does. The input is zero-padded onto the grid beforehand, so
    the floor holds the transforms and the product alone (no padding, no cropping)."""
    sizes, source = fft_grid(b.op)
    dims = tuple(range(-b.ndim, 0))
    pad = [p for n, size in zip(reversed(b.tx.shape[1:]), reversed(sizes)) for p in (0, size - n)]
    grid = F.pad(b.tx, pad)  # (1, *L): the input on the grid
    w = torch.from_numpy(b.weight[0])  # (1, *k)
    if np.dtype(b.dtype).kind == "c":
        spectrum = torch.fft.fftn(w, s=sizes, dim=dims)  # (1, *L)

        def product():
            return torch.fft.ifftn(torch.fft.fftn(grid, dim=dims) * spectrum, dim=dims)

        what = "fftn + ifftn"
    else:
        spectrum = torch.fft.rfftn(w, s=sizes, dim=dims)  # (1, *L[:-1], L[-1]//2+1)

        def product():
            return torch.fft.irfftn(torch.fft.rfftn(grid, dim=dims) * spectrum, s=sizes, dim=dims)

        what = "rfftn + irfftn"
    return f"FFT floor: {what} on {'x'.join(map(str, sizes))} (grid: {source})", product


def blur_times(report: Report, b: Blur) -> dict[str, float]:
    """numpy face, torch face and FFT floor of a blur, interleaved; measured once per run."""
    key = ("times", b.case)
    if key in report.cache:
        return report.cache[key]
    op, method = b.op, b.op.method
    fns = {
        "matvec": (f"numpy face op.matvec [{method}]", lambda: op.matvec(b.x)),
        "rmatvec": (f"numpy face op.rmatvec [{method}]", lambda: op.rmatvec(b.y)),
        "apply": (f"torch face op.apply [{method}]", lambda: op.apply(b.tx)),
        "apply_adjoint": (
            f"torch face op.apply_adjoint [{method}]",
            lambda: op.apply_adjoint(b.ty),
        ),
        "floor": floor(b),
    }
    if np.dtype(b.dtype).kind == "c":  # goal 1 is about real data
        del fns["matvec"], fns["rmatvec"]
    times = interleaved({name: fn for name, (_, fn) in fns.items()}, report.settings.repeats)
    anchors = {"matvec": "apply", "rmatvec": "apply_adjoint", "apply": "floor",
               "apply_adjoint": "floor"}  # fmt: skip
    for name, (label, _) in fns.items():
        anchor = anchors.get(name)
        note = f"{times[name] / times[anchor]:.2f}x {anchor}" if anchor else ""
        report.record("blur", b.case, label, times[name], note)
    report.cache[key] = times
    return times


def goal_faces(report: Report) -> None:
    """Goals 1 and 5: numpy face against torch face, torch face against the FFT floor."""
    for ndim, n, k in BLURS:
        for dtype in ("float32", "float64", "complex128"):
            case = f"{n}^{ndim}, k={k}, {dtype}"
            if dtype != "complex128":
                with section(report, 1, f"numpy face / torch face, {case}"):
                    t = blur_times(report, blur(report, ndim, n, k, dtype))
                    report.goal(1, f"numpy face / torch face, {case}", {
                        "matvec": t["matvec"] / t["apply"],
                        "rmatvec": t["rmatvec"] / t["apply_adjoint"],
                    })  # fmt: skip
            with section(report, 5, f"torch face / FFT floor, {case}"):
                t = blur_times(report, blur(report, ndim, n, k, dtype))
                report.goal(5, f"torch face / FFT floor, {case}", {
                    "apply": t["apply"] / t["floor"],
                    "apply_adjoint": t["apply_adjoint"] / t["floor"],
                })  # fmt: skip


# ---------------------------------------------------------------------- 2. conv layers
def conv_layer(report: Report, c_in: int, c_out: int, k: int, n: int, dtype: torch.dtype,
               goal: bool) -> None:  # fmt: skip
    torch.manual_seed(0)
    weight = torch.randn(c_out, c_in, k, k, dtype=dtype)
    op = convop.conv2d(weight, (c_in, n, n), padding=k // 2)  # 'same'
    case = f"{c_in}->{c_out}, {k}x{k}, {n}^2, {str(dtype)[6:]}"
    x = rng_array(op.shape[1], op.dtype, seed=0)
    v = rng_array(op.shape[0], op.dtype, seed=1)
    tx = torch.from_numpy(x).reshape(1, c_in, n, n)
    tv = torch.from_numpy(v).reshape(1, *op.output_shape)
    padding, r = k // 2, report.settings.repeats
    rtol = 1e-4 if dtype == torch.float32 else 1e-12
    check(op.matvec(x), F.conv2d(tx, weight, padding=padding), f"{case} matvec", rtol)
    expected = F.conv_transpose2d(tv, weight, padding=padding)
    check(op.rmatvec(v), expected, f"{case} rmatvec", rtol)
    fns = {  # name: (label, anchor, product)
        "raw": ("raw F.conv2d on tensors (anchor)", "",
                lambda: F.conv2d(tx, weight, padding=padding)),
        "floor": ("raw F.conv2d, from and to numpy (floor)", "raw",
                  lambda: F.conv2d(torch.from_numpy(x).view(1, c_in, n, n), weight,
                                   padding=padding).numpy()),
        "matvec": (f"numpy face op.matvec [{op.method}]", "raw", lambda: op.matvec(x)),
        "apply": (f"torch face op.apply [{op.method}]", "raw", lambda: op.apply(tx)),
        "raw_t": ("raw F.conv_transpose2d on tensors (anchor)", "",
                  lambda: F.conv_transpose2d(tv, weight, padding=padding)),
        "rmatvec": (f"numpy face op.rmatvec [{op.method}]", "raw_t", lambda: op.rmatvec(v)),
        "apply_adjoint": (f"torch face op.apply_adjoint [{op.method}]", "raw_t",
                          lambda: op.apply_adjoint(tv)),
    }  # fmt: skip
    t = interleaved({name: fn for name, (_, _, fn) in fns.items()}, r)
    for name, (label, anchor, _) in fns.items():
        report.record("layer", case, label, t[name],
                      f"{t[name] / t[anchor]:.2f}x" if anchor else "")  # fmt: skip
    raw, raw_t, fwd, adj = t["raw"], t["raw_t"], t["matvec"], t["rmatvec"]
    if goal:
        matrix = op.tosparse()
        check(matrix @ x, op.matvec(x), f"{case} CSR", 1e-12)
        seconds = timeit(lambda: matrix @ x, r)
        report.record("layer", case, "explicit CSR @ x", seconds, f"{seconds / raw:.2f}x")
        seconds = timeit(lambda: matrix.T @ v, r)
        report.record("layer", case, "explicit CSR.T @ v", seconds, f"{seconds / raw_t:.2f}x")
        report.goal(2, f"numpy face / raw torch, small layer {case}",
                    {"matvec": fwd / raw, "rmatvec": adj / raw_t})  # fmt: skip


def goal_layers(report: Report) -> None:
    with section(report, 2, "numpy face / raw torch, small layer"):
        conv_layer(report, 3, 16, 3, 32, torch.float64, goal=True)
    with section(report, 2, "layer 64->64 float32 (shown)"):
        conv_layer(report, 64, 64, 3, 56, torch.float32, goal=False)


# ---------------------------------------------------------------------- 3. lsqr
def lsqr(A, y, iterations: int) -> np.ndarray:
    return spla.lsqr(A, y, damp=1e-2, iter_lim=iterations, atol=0, btol=0, conlim=0)[0]


def solves(configs: dict[str, Callable[[], np.ndarray]], rounds: int) -> dict[str, float]:
    """Median time of each solve, in interleaved rounds (one call of each per round).

    Whole solves take a second or so: interleaving them shares slow drift of the machine
    fairly among the configurations without the churn of fine-grained interleaving.
    """
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, solve in configs.items():
            start = time.perf_counter()
            solve()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def goal_lsqr(report: Report) -> None:
    iterations, rounds = 30, report.settings.rounds
    with section(report, 3, "lsqr deblur, convop / PyLops"):
        n, k = 512, 15
        rng = np.random.default_rng(0)
        kernel = convop.data.gaussian_kernel(k, k / 5)
        image = convop.data.phantom(n)
        op = convop.conv2d(kernel[None, None], (1, n, n), padding="same")
        P = pylops.signalprocessing.Convolve2D((n, n), h=kernel[::-1, ::-1],
                                               offset=(k // 2, k // 2), method="fft")  # fmt: skip
        y = op @ image.ravel() + 0.01 * rng.standard_normal(op.shape[0])
        check(P @ image.ravel(), op @ image.ravel(), "lsqr operators", 1e-12)
        reference = lsqr(P, y, iterations)
        with convop.solver_threads():
            check(lsqr(op, y, iterations), reference, "lsqr solutions", 1e-8)
        case = f"{n}^2, k={k}, float64, {iterations} it"

        def inside(A):
            def solve():
                with convop.solver_threads():
                    return lsqr(A, y, iterations)

            return solve

        # The goal's two solves take turns on their own; the plain ones (threads fighting,
        # shown for information) run apart, so that their aftermath (spinning pools, a
        # grown heap) does not fall on one side of the goal's ratio.
        t = solves({"pylops_st": inside(P), "convop_st": inside(op)}, rounds + 2)
        t.update(solves({"pylops": lambda: lsqr(P, y, iterations),
                         "convop": lambda: lsqr(op, y, iterations)}, rounds))  # fmt: skip
        anchor = t["pylops_st"]
        for name, label in (
            ("pylops", "lsqr on PyLops Convolve2D fft, plain"),
            ("pylops_st", "lsqr on PyLops Convolve2D fft, in solver_threads() (anchor)"),
            ("convop", f"lsqr on convop [{op.method}], plain"),
            ("convop_st", f"lsqr on convop [{op.method}], in solver_threads()"),
        ):
            report.record("lsqr", case, label, t[name],
                          "" if name == "pylops_st" else f"{t[name] / anchor:.2f}x")  # fmt: skip
        report.goal(3, f"lsqr deblur {case}, convop / PyLops, both in solver_threads()",
                    {"ratio": t["convop_st"] / t["pylops_st"]})  # fmt: skip
        report.goal(
            3,
            f"lsqr deblur {case}, convop in solver_threads() / plain PyLops",
            {"ratio": t["convop_st"] / t["pylops"]},
            info=True,
            extra=f"convop plain / plain PyLops {t['convop'] / t['pylops']:.2f}",
        )
    with section(report, 3, "lsqr small layer, convop / CSR"):
        torch.manual_seed(0)
        op = convop.conv2d(torch.randn(16, 3, 3, 3, dtype=torch.float64), (3, 32, 32), padding=1)
        y = rng_array(op.shape[0], np.float64, seed=0)
        matrix = op.tosparse()
        case = f"3->16, 3x3, 32^2, float64, {iterations} it"
        check(lsqr(op, y, iterations), lsqr(matrix, y, iterations), "lsqr layer", 1e-8)
        r = report.settings.repeats
        t = {}
        for name, A in (("csr", matrix), ("convop", op)):
            t[name] = timeit(lambda A=A: lsqr(A, y, iterations), r)
            with convop.solver_threads():
                t[f"{name}_st"] = timeit(lambda A=A: lsqr(A, y, iterations), r)
        anchor = t["csr_st"]
        for name, label in (
            ("csr", "lsqr on the explicit CSR, plain"),
            ("csr_st", "lsqr on the explicit CSR, in solver_threads() (anchor)"),
            ("convop", f"lsqr on convop [{op.method}], plain"),
            ("convop_st", f"lsqr on convop [{op.method}], in solver_threads()"),
        ):
            report.record("lsqr", case, label, t[name],
                          "" if name == "csr_st" else f"{t[name] / anchor:.2f}x")  # fmt: skip
        report.goal(3, f"lsqr small layer {case}, convop / CSR, both in solver_threads()",
                    {"ratio": t["convop_st"] / t["csr_st"]}, info=True,
                    extra=f"both plain {t['convop'] / t['csr']:.2f}")  # fmt: skip


# ---------------------------------------------------------------------- 4. deblurring
def goal_deblur(report: Report) -> None:
    """convop's numpy face against PyLops Convolve2D (fft and direct) and scipy."""
    for n, k in DEBLURS[:2] if report.settings.quick else DEBLURS:
        with section(report, 4, f"deblur {n}^2, k={k}, convop / PyLops"):
            deblur_case(report, blur(report, 2, n, k, "float64"))


def deblur_case(report: Report, b: Blur) -> None:
    """Forward, then adjoint: convop's numpy face, then each PyLops method, back to back.

    PyLops runs numpy: timed one after the other (:func:`timeit`), and convop's products
    are timed afresh right beside them rather than taken from goal 1's measurement minutes
    earlier, so that drift of the machine does not enter the ratio.
    """
    n, k = b.n, b.k
    kernel = np.ascontiguousarray(b.weight[0, 0, ::-1, ::-1])  # PyLops and scipy convolve
    image, outside = b.x.reshape(n, n), b.y.reshape(n, n)
    expected, expected_adjoint = b.op.matvec(b.x), b.op.rmatvec(b.y)
    P = {method: pylops.signalprocessing.Convolve2D((n, n), h=kernel, offset=(k // 2, k // 2),
                                                    method=method)
         for method in ("fft", "direct")}  # fmt: skip
    r = report.settings.repeats
    convop_times, pylops_times = {}, {}
    for product, name, expected_y in (("forward", "matvec", expected),
                                      ("adjoint", "rmatvec", expected_adjoint)):  # fmt: skip
        apply = getattr(b.op, name)
        data = b.x if product == "forward" else b.y
        convop_times[product] = report.record(
            "deblur", b.case, f"convop numpy face op.{name} [{b.op.method}]",
            timeit(lambda apply=apply, data=data: apply(data), r),
        )  # fmt: skip
        for method, op in P.items():
            call = (lambda op=op: op @ b.x) if product == "forward" else (lambda op=op: op.H @ b.y)
            pylops_times[product, method] = timed_checked(
                report, "deblur", b.case, f"PyLops Convolve2D {method} {product}", call,
                expected_y, f"{b.case} pylops {method} {product}", 1e-11,
            )  # fmt: skip
    timed_checked(report, "deblur", b.case, "scipy.signal.fftconvolve forward",
                  lambda: scipy.signal.fftconvolve(image, kernel, mode="same"),
                  expected.reshape(n, n), f"{b.case} fftconvolve", 1e-11)  # fmt: skip
    timed_checked(report, "deblur", b.case, "scipy.signal.fftconvolve adjoint",
                  lambda: scipy.signal.fftconvolve(outside, b.weight[0, 0], mode="same"),
                  expected_adjoint.reshape(n, n), f"{b.case} fftconvolve adjoint",
                  1e-11)  # fmt: skip
    ratios, anchors = {}, []
    for product, name in (("forward", "matvec"), ("adjoint", "rmatvec")):
        best = min(P, key=lambda method: pylops_times[product, method])
        ratios[name] = convop_times[product] / pylops_times[product, best]
        anchors.append(f"{best} ({product})")
    report.goal(4, f"deblur {b.case}, numpy face / PyLops", ratios,
                extra=f"anchor PyLops {', '.join(anchors)}")  # fmt: skip


# ---------------------------------------------------------------------- 6. auto
def goal_auto(report: Report) -> None:
    path = HERE / "bench_auto.py"
    what = f"auto / faster method, {'quick' if report.settings.quick else 'full'} grid"
    if not path.exists():
        report.goals.append(Goal(6, what, float("nan"), "benchmarks/bench_auto.py not present",
                                 BOUNDS[6]))  # fmt: skip
        report.note("goal 6 skipped: benchmarks/bench_auto.py is not in this checkout")
        return
    with section(report, 6, what):
        spec = importlib.util.spec_from_file_location("bench_auto", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_auto"] = module  # dataclasses and NamedTuples look themselves up
        spec.loader.exec_module(module)
        start = time.perf_counter()
        rows = module.grid(report.settings.quick)
        elapsed = time.perf_counter() - start
        result = module.summary(rows)
        ratios = [row.ratio() for row in rows]
        worst = getattr(result, "worst", max(ratios, default=float("nan")))
        beyond = getattr(result, "beyond", sum(r > BOUNDS[6] for r in ratios))
        cases = getattr(result, "cases", len(rows))
        for row in rows:
            pick = getattr(row, "auto", "?")
            direct, fft = getattr(row, "direct", float("nan")), getattr(row, "fft", float("nan"))
            report.record("auto", getattr(row, "case", "?"),
                          f"auto picks {pick} (direct {shown(direct)}, fft {shown(fft)})",
                          row.seconds() if hasattr(row, "seconds") else float("nan"),
                          f"{row.ratio():.2f}x the faster")  # fmt: skip
        report.goals.append(Goal(6, what, worst,
                                 f"{cases} cases, {beyond} beyond {BOUNDS[6]} "
                                 f"(grid timed in {elapsed:.0f} s)", BOUNDS[6]))  # fmt: skip
        print(f"  -> goal 6: {what}: worst {worst:.2f}, {beyond} of {cases} beyond", flush=True)


# ---------------------------------------------------------------------- 7. DeepInverse
def deepinv_functions() -> tuple[types.ModuleType | None, str]:
    """``deepinv.physics.functional`` (or its convolution module alone), and how it came.

    deepinv 0.5 imports torchvision first thing in ``deepinv/__init__.py``. Where torchvision
    cannot be imported (the only wheel for this torch may be a CUDA build whose operators do
    not load beside the CPU torch), the convolution module is loaded alone: it needs only
    torch and one decorator module, so the code timed is deepinv's own.
    """
    try:
        version = metadata.version("deepinv")
    except metadata.PackageNotFoundError:
        return None, "deepinv is not installed (pip install deepinv)"
    try:
        import deepinv.physics.functional as functional

        return functional, f"deepinv {version}"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    spec = importlib.util.find_spec("deepinv")
    root = Path(spec.submodule_search_locations[0])
    saved = {name: sys.modules.get(name) for name in ("deepinv", "deepinv.utils")}
    try:  # empty parent packages, so that only these two files run
        for name, folder in (("deepinv", root), ("deepinv.utils", root / "utils")):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        for name, file in (("deepinv.utils.decorators", root / "utils" / "decorators.py"),
                           ("_deepinv_convolution",
                            root / "physics" / "functional" / "convolution.py")):  # fmt: skip
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
    except Exception as exc:
        return None, f"deepinv {version} does not import ({reason}; alone: {exc})"
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        sys.modules.pop("deepinv.utils.decorators", None)
    return module, (f"deepinv {version}, its convolution module loaded alone "
                    f"(the package does not import here: {reason})")  # fmt: skip


def goal_deepinv(report: Report) -> None:
    functional, how = deepinv_functions()
    if functional is None:
        report.goals.append(Goal(7, "torch face / DeepInverse", float("nan"), how, BOUNDS[7]))
        report.note(f"goal 7 skipped: {how}")
        return
    report.note(f"goal 7 uses {how}")
    dtypes = ("float32",) if report.settings.quick else ("float32", "float64")
    cases = [(n, k) for ndim, n, k in BLURS if ndim == 2]
    for n, k in cases[:1] if report.settings.quick else cases:
        for dtype in dtypes:
            with section(report, 7, f"torch face / DeepInverse, {n}^2, k={k}, {dtype}"):
                deepinv_case(report, functional, blur(report, 2, n, k, dtype))


def deepinv_case(report: Report, functional: types.ModuleType, b: Blur) -> None:
    """deepinv's four functions checked, then timed with convop's torch face interleaved
    (all torch); a function slower than a second (the direct transpose) by its one call."""
    # deepinv convolves: hand it the flipped kernel. Its 'constant' padding pads k//2 zeros
    # on each side for odd k: the same map as padding='same', compared on the whole image.
    h = torch.from_numpy(np.ascontiguousarray(b.weight[..., ::-1, ::-1]))  # (1, 1, k, k)
    x, y = b.tx[None], b.ty[None]  # (1, 1, n, n)
    expected = {"forward": b.op.apply(b.tx), "adjoint": b.op.apply_adjoint(b.ty)}
    rtol = 1e-5 if b.dtype == np.float32 else 1e-11
    norm1 = float(np.abs(b.weight).sum())
    names = {"conv2d": "forward", "conv_transpose2d": "adjoint", "conv2d_fft": "forward",
             "conv_transpose2d_fft": "adjoint"}  # fmt: skip
    fast, slow = {}, {}
    for name, product in names.items():
        f = getattr(functional, name, None)
        if f is None:
            report.note(f"deepinv has no {name}")
            continue
        data = x if product == "forward" else y

        def call(f=f, data=data):
            return f(data, h, padding="constant")

        start = time.perf_counter()
        out = call()
        first = time.perf_counter() - start
        check(out, expected[product], f"{b.case} deepinv {name}", rtol,
              norm1 * float(np.abs(data.numpy()).max()))  # fmt: skip
        if first > 1.0:
            slow[name] = report.record("deepinv", b.case, f"deepinv {name}", first,
                                       "one cold call")  # fmt: skip
        else:
            fast[name] = call
    fast["apply"] = lambda: b.op.apply(b.tx)
    fast["apply_adjoint"] = lambda: b.op.apply_adjoint(b.ty)
    times = interleaved(fast, report.settings.repeats)
    for name, seconds in times.items():
        label = f"convop torch face op.{name} [{b.op.method}]" if name.startswith("apply") else (
            f"deepinv {name}")  # fmt: skip
        report.record("deepinv", b.case, label, seconds)
    times.update(slow)
    ratios, anchors = {}, []
    for face, product in (("apply", "forward"), ("apply_adjoint", "adjoint")):
        theirs = {name: times[name] for name in names if names[name] == product and name in times}
        if theirs:
            best = min(theirs, key=theirs.get)
            ratios[face] = times[face] / theirs[best]
            anchors.append(f"{best} ({product})")
    report.goal(7, f"torch face / DeepInverse, {b.case}", ratios,
                extra=f"anchor deepinv {', '.join(anchors)}")  # fmt: skip


# ---------------------------------------------------------------------- machine and output
def cpu_clock() -> tuple[float, float, float]:
    """(CPU seconds the whole machine was busy, this process's and its finished children's
    CPU seconds, wall seconds).

    Busy includes steal (a VM's CPU taken by the host). NaN where /proc/stat is missing.
    """
    busy = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait
    own = os.times()  # with the sections' processes, once they ended (waited for)
    return (
        busy,
        own.user + own.system + own.children_user + own.children_system,
        time.perf_counter(),
    )


def others_share(before: tuple[float, float, float]) -> float:
    """The share of the machine's CPUs that other processes used since ``before``."""
    busy, own, wall = cpu_clock()
    cpus = os.cpu_count() or 1
    if wall - before[2] < 1.0:  # /proc/stat counts in ticks of 10 ms
        return float("nan")
    share = (busy - before[0] - (own - before[1])) / ((wall - before[2]) * cpus)
    return max(0.0, share) if share == share else share


def machine() -> list[str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f", {kb / 2**20:.0f} GiB RAM"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = ""
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        blas = "; BLAS: " + ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"
        )  # fmt: skip
    versions = [f"Python {platform.python_version()}", f"convop {convop.__version__}",
                f"torch {torch.__version__}", f"numpy {np.__version__}",
                f"scipy {scipy.__version__}", f"pylops {pylops.__version__}"]  # fmt: skip
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions.append(f"deepinv {metadata.version('deepinv')}")
    return [
        f"CPU: {cpu}, {cores} cores available (os.cpu_count() {os.cpu_count()}){memory}; "
        f"{platform.system()} {platform.release()}",
        f"{', '.join(versions)}",
        f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})"
        f"{blas}",
    ]


def goals_table(report: Report) -> str:
    lines = ["| goal | case | ratio | bound | verdict | detail |", "|---|---|---:|---:|---|---|"]
    for g in sorted(report.goals, key=lambda g: g.goal):
        ratio = "—" if g.ratio != g.ratio else f"{g.ratio:.2f}"
        bound = "—" if g.bound is None else f"≤ {g.bound:g}"
        verdict = {"pass": "pass", "FAIL": "**FAIL**", "ERROR": "**ERROR**"}.get(
            g.verdict, g.verdict
        )
        detail = g.error or g.detail
        lines.append(
            f"| {g.goal} | {cell(g.what)} | {ratio} | {bound} | {verdict} | {cell(detail)} |"
        )
    return "\n".join(lines)


def markdown(report: Report, header: list[str]) -> str:
    return _sections.markdown(report, header, goals_table(report), note="vs anchor")


def write_block(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path``: a temporary file, then a rename."""
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{block}\n{END}{tail}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    if tmp.read_text() != new:
        raise OSError(f"{tmp} did not read back as written")
    tmp.replace(path)


SECTIONS = {  # goal number -> the function measuring it, in the order they run
    1: goal_faces,  # goals 1 and 5 share their measurements
    2: goal_layers,
    3: goal_lsqr,
    4: goal_deblur,
    7: goal_deepinv,
    6: goal_auto,  # the longest: last
}


def in_fresh_process(report: Report, goal: int) -> None:
    """Run the section of ``goal`` in a fresh Python process and add what it measured.

    A section's ratios must not depend on which sections ran before it: the heap that
    earlier products grew (and whether glibc gave it back), torch's and numpy's thread
    pools and the caches all carry over within a process. Measured here: 30 ``lsqr``
    iterations took 831 ms through PyLops and 397 ms through convop in a fresh process,
    660 ms and 452 ms after the other sections in one process. A fresh process is also how
    a user's script meets a solve.
    """
    found = run_fresh(__file__, goal, ["--quick"] if report.settings.quick else [])
    if isinstance(found, str):
        for number in (1, 5) if goal == 1 else (goal,):
            report.goals.append(Goal(number, f"section of goal {goal}", float("nan"), "",
                                     BOUNDS[number], found))  # fmt: skip
        return
    merge(report, found, Timing, Goal)


def run_section(args: argparse.Namespace) -> int:
    """``--section N --dump FILE``: run one section here and write its report as JSON."""
    report = Report(args)
    SECTIONS[args.section](report)
    write_section(args.dump, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and cases, bench_auto's quick grid")  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="PAGE",
        help=f"replace the text between {BEGIN} and {END} in PAGE",
    )
    parser.add_argument(
        "--goals",
        default="1,2,3,4,5,6,7",
        help="comma-separated goal numbers to run (default: all)",
    )
    parser.add_argument("--section", type=int, help=argparse.SUPPRESS)  # run one, in this process
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # ... and write it here
    args = parser.parse_args(argv)
    try:
        wanted = {int(g) for g in args.goals.split(",")}
    except ValueError:
        parser.error(f"--goals expects numbers like 1,5, got {args.goals!r}")
    if not wanted <= set(BOUNDS):
        parser.error(f"--goals: goals are 1 to 7, got {sorted(wanted)}")
    if args.write is not None:
        if wanted != set(BOUNDS):
            parser.error("--write needs every goal (leave out --goals)")
        text = args.write.read_text() if args.write.is_file() else ""
        if text.count(BEGIN) != 1 or text.count(END) != 1 or text.find(BEGIN) > text.find(END):
            parser.error(f"{args.write} must hold {BEGIN} once, then {END} once")
    args.repeats = 3 if args.quick else 7
    args.rounds = 1 if args.quick else 3
    if args.section is not None:
        return run_section(args)

    started = time.perf_counter()
    header = machine()
    for line in header:
        print(line)
    report = Report(args)
    whole = cpu_clock()
    for goal in SECTIONS:
        if goal in wanted or (goal == 1 and 5 in wanted):
            name = "goals 1 and 5" if goal == 1 else f"goal {goal}"
            print(f"\n== {name}", flush=True)
            before = cpu_clock()
            in_fresh_process(report, goal)
            report.others[name] = others_share(before)
            print(f"  other processes used {report.others[name]:.0%} of the CPUs", flush=True)
    report.others["whole run"] = others_share(whole)
    shares = ", ".join(f"{name} {share:.0%}" for name, share in report.others.items()
                       if share == share)  # fmt: skip
    worst = max((share for share in report.others.values() if share == share), default=0.0)
    quiet = "quiet" if worst <= 0.1 else "NOT quiet: ratios of the busy sections are unreliable"
    if 1 not in wanted or 5 not in wanted:
        report.goals = [g for g in report.goals if g.goal in wanted]
    elapsed = time.perf_counter() - started
    command = "python benchmarks/bench_operators.py" + (" --quick" if args.quick else "")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"`{command}`, {stamp}, {elapsed:.0f} s in all", *header,
              f"other processes' share of the CPUs: {shares} ({quiet})"]  # fmt: skip

    print(f"\nother processes' share of the CPUs: {shares} ({quiet})")
    print(f"Goals ({elapsed:.0f} s):")
    for g in sorted(report.goals, key=lambda g: g.goal):
        ratio = "  —  " if g.ratio != g.ratio else f"{g.ratio:5.2f}"
        bound = "     " if g.bound is None else f"<= {g.bound:<4g}"
        print(f"  {g.verdict:7s} goal {g.goal}  {ratio}  {bound}  {g.what}: {g.error or g.detail}")
    failed = [g for g in report.goals if g.verdict in ("FAIL", "ERROR")]
    print(f"{len(failed)} goal rows not met or broken" if failed else "every goal row met")
    block = markdown(report, header)
    if args.markdown:
        print("\n" + block)
    if args.write is not None:
        write_block(args.write, block)
        print(f"wrote the tables into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
