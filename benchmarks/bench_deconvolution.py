"""Deconvolution (issue 14): ``convop.deconvolution.preconditioner`` and ``solve_tikhonov``.

Usage::

    python benchmarks/bench_deconvolution.py            # full run (~7 min on a quiet machine)
    python benchmarks/bench_deconvolution.py --quick    # smaller cases: a smoke test (~1 min)
    python benchmarks/bench_deconvolution.py --markdown # also print the tables
    python benchmarks/bench_deconvolution.py --write FILE  # the Markdown section into FILE

Every solve is ``scipy.sparse.linalg.cg`` on the normal equations
``N x = A^T y`` with ``N = A^T A + damp^2 I`` (a ``LinearOperator`` whose matvec is
``A.rmatvec(A.matvec(v)) + damp**2 v``), ``rtol=1e-6``, iterations counted by cg's callback,
with ``M=preconditioner(A, damp=damp)`` and without ``M``; ``y = A x_true + noise`` (standard
deviation 1e-2, fixed seed). The preconditioned time includes building the preconditioner
(its spectrum is computed on first use), so the ratio is what a user's solve gains. Inside
every solve numpy's BLAS is on one thread (``convop.solver_threads()``, as the CLI's solves
do); torch keeps its default thread count. A solve longer than 5 s (1 s with ``--quick``)
is timed once; shorter ones are the median of repeats (``_timing.timeit``). Each section
(goal 1: one per padding mode) runs in a fresh Python process, as in bench_operators.py.

The goals (rows of the goals table; a quick run measures smaller cases, goals 1 and 3 then
shown as info):

1. 512^2, 15x15 Gaussian blur (sigma 2.5, sum 1, ``padding="same"``, float64, ``conv2d``),
   ``x_true = convop.data.phantom(512)``, damp 1e-3, per padding mode: reflect >= 5x fewer
   iterations and >= 3x less time; zeros and replicate >= 2x fewer iterations and >= 2x
   less time; circular <= 3 iterations. Unpreconditioned runs are capped at ``--cap`` (20000)
   iterations: a capped run is shown as ``> cap`` and its ratios as lower bounds. Shown, not
   part of the verdict: the two solutions' relative difference (flagged above 1e-4; cg's
   ``rtol`` bounds the residual, and at damp 1e-3 the normal matrix's condition number is
   ~1e6, so a 1e-6 residual allows a much larger error) and, for circular, each solution's
   distance to the exact ``solve_tikhonov``, which shows which of the two is off.
2. "Never worse" (one pass/FAIL row per case and mode: preconditioned iterations and time
   <= unpreconditioned), damp 1e-2, for all four padding modes: a 3->3 cross-talk blur
   (``weight[o, c] = (0.7 delta_oc + 0.1) * gaussian 9x9 sigma 2``, 256^2) and a 3-D blur
   (9x9x9 Gaussian, sigma 1.5, ``conv3d``, 128^3; ``--n3d`` changes it). Damp 1e-2 rather
   than 1e-3 to keep the run short: ~340 unpreconditioned iterations instead of ~3000.
3. ``solve_tikhonov(op, y, damp=1e-2)`` of a 1024^2 circular blur (15x15 Gaussian, sigma
   2.5, padding 7 circular, float64), numpy in and out: <= 2x one ``op.matvec(x)``, and
   exact: ``||A^T (A x - y) + damp^2 x|| / ||A^T y|| <= 1e-10``. Shown beside it (info): one
   ``A^T A`` product, and the torch face (``solve_tikhonov`` on a tensor against
   ``op.apply``).

A goal not met prints FAIL; a check or a section that breaks prints ERROR and the run goes
on; the exit code is 0 either way (2 for a wrong command line).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _sections  # benchmarks/, the script's own folder
import numpy as np
import scipy.sparse.linalg as spla
import torch
from _sections import Timing, cell, merge, run_fresh, shown, write_section
from _timing import timeit

import convop
import convop.data
from convop import preconditioner, solve_tikhonov

MODES = ("circular", "reflect", "zeros", "replicate")
RTOL = 1e-6  # cg's tolerance, every solve
NOISE = 1e-2  # the noise's standard deviation
AGREE = 1e-4  # goal 1: the two solutions' relative difference, at most
EXACT = 1e-10  # goal 3: the normal equations' relative residual, at most
# goal 1: mode -> (fewer iterations by at least, less time by at least); circular: at most 3
GOAL1 = {"reflect": (5.0, 3.0), "zeros": (2.0, 2.0), "replicate": (2.0, 2.0)}
CIRCULAR_MAX = 3
TIKHONOV_BOUND = 2.0  # goal 3: solve_tikhonov / one matvec


# ---------------------------------------------------------------------- the report
@dataclass
class Goal:
    """One row of the goals table; its numbers already formatted."""

    goal: int
    what: str
    verdict: str  # pass, FAIL, info, ERROR or skipped
    bound: str = "—"
    iterations: str = "—"  # "with M / without"
    iter_ratio: str = "—"
    seconds: str = "—"  # "with M / without"
    time_ratio: str = "—"
    detail: str = ""


@dataclass
class Report:
    settings: argparse.Namespace
    timings: list[Timing] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, group: str, case: str, method: str, seconds: float, note: str = "") -> float:
        self.timings.append(Timing(group, case, method, seconds, note))
        print(f"  {group:8s} {case:40s} {method:44s} {shown(seconds):>10s}  {note}", flush=True)
        return seconds

    def goal(self, row: Goal) -> None:
        self.goals.append(row)
        print(f"  -> goal {row.goal} [{row.verdict}] {row.what}: iterations {row.iterations} "
              f"({row.iter_ratio}), time {row.seconds} ({row.time_ratio}); {row.detail}",
              flush=True)  # fmt: skip

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


@contextlib.contextmanager
def section(report: Report, goal: int, what: str) -> Iterator[None]:
    """Run one part of the benchmark; an exception becomes an ERROR row, and the run goes on."""
    try:
        yield
    except Exception as exc:  # the run must report every other goal
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        report.goals.append(Goal(goal, what, "ERROR", detail=message))
        print(f"  -> goal {goal}: {what}: ERROR {message}", flush=True)


def timed(fn: Callable[[], object], repeats: int, budget: float) -> tuple[float, object]:
    """``timeit(fn)`` and what the last call returned."""
    out: list[object] = [None]

    def call() -> None:
        out[0] = fn()

    return timeit(call, repeats, budget), out[0]


# ---------------------------------------------------------------------- problems and solves
def gaussian(size: int, sigma: float, ndim: int) -> np.ndarray:
    """A separable Gaussian kernel of ``ndim`` axes, summing to 1."""
    g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    g /= g.sum()
    out = g
    for _ in range(ndim - 1):
        out = np.multiply.outer(out, g)
    return out


def blob3d(n: int) -> np.ndarray:
    """A 3-D test object: a few ellipsoids of different values on ``n^3``."""
    z, y, x = np.meshgrid(*([np.linspace(-1, 1, n)] * 3), indexing="ij")
    out = 1.0 * ((x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.9) ** 2 < 1)
    out -= 0.6 * ((x - 0.2) ** 2 + y**2 + (z / 0.5) ** 2 < 0.1)
    out += 0.5 * ((x + 0.3) ** 2 + (y + 0.2) ** 2 + (z - 0.3) ** 2 < 0.03)
    return out


@dataclass
class Problem:
    case: str
    A: convop.ConvOperator
    damp: float
    y: np.ndarray  # A x_true + noise
    b: np.ndarray  # A^T y
    N: spla.LinearOperator  # A^T A + damp^2 I

    def residual(self, x: np.ndarray) -> float:
        """``||N x - b|| / ||b||``."""
        return float(np.linalg.norm(self.N.matvec(x) - self.b) / np.linalg.norm(self.b))


def problem(case: str, A: convop.ConvOperator, x_true: np.ndarray, damp: float,
            seed: int = 0) -> Problem:  # fmt: skip
    rng = np.random.default_rng(seed)
    y = A.matvec(x_true.ravel()) + NOISE * rng.standard_normal(A.shape[0])

    def normal(v: np.ndarray) -> np.ndarray:
        return A.rmatvec(A.matvec(v)) + damp**2 * v

    n = A.shape[1]
    N = spla.LinearOperator((n, n), matvec=normal, rmatvec=normal, dtype=np.float64)
    return Problem(case, A, damp, y, A.rmatvec(y), N)


def cg(p: Problem, M, cap: int) -> tuple[np.ndarray, int, bool]:
    """``(x, iterations, converged)`` of cg on the normal equations, BLAS on one thread."""
    count = [0]

    def tick(_):
        count[0] += 1

    with convop.solver_threads():
        x, info = spla.cg(p.N, p.b, rtol=RTOL, maxiter=cap, M=M, callback=tick)
    return x, count[0], info == 0


@dataclass
class Compared:
    """Both solves of one problem."""

    it_p: int
    ok_p: bool
    it_0: int
    ok_0: bool
    t_p: float  # with M, building the preconditioner included
    t_0: float
    setup: float  # building it and its first application
    beta: float
    boundaries: tuple[str, ...]
    exact: bool
    agree: float  # ||x_P - x_0|| / ||x_0||
    res_p: float  # ||N x - b|| / ||b||
    res_0: float
    x_p: np.ndarray
    x_0: np.ndarray

    def iterations(self) -> str:
        ours = f"{self.it_p}" if self.ok_p else f"> {self.it_p} (cap)"
        theirs = f"{self.it_0}" if self.ok_0 else f"> {self.it_0} (cap)"
        return f"{ours} / {theirs}"

    def iter_ratio(self) -> float:
        return self.it_0 / max(self.it_p, 1)

    def time_ratio(self) -> float:
        return self.t_0 / self.t_p

    def bound_prefix(self) -> str:
        """``'≥ '`` when the unpreconditioned run was capped (its ratios are lower bounds)."""
        return "" if self.ok_0 else "≥ "


def compare(report: Report, group: str, p: Problem, cap: int) -> Compared:
    """Solve ``p`` with and without the preconditioner, record the timings, check agreement."""
    r = report.settings.repeats
    budget = 1.0 if report.settings.quick else 5.0  # a solve longer than this: timed once
    A, damp, b = p.A, p.damp, p.b
    P = preconditioner(A, damp=damp)
    setup = timeit(lambda: preconditioner(A, damp=damp).matvec(b), r, budget=2.0)
    P.matvec(b)  # the attributes chosen on first use
    report.record(group, p.case, "preconditioner: build + first apply", setup,
                  f"beta {P.beta:.3g}, boundaries {P.boundaries}, exact {P.exact}, "
                  f"grid {P.grid}")  # fmt: skip
    v = np.random.default_rng(5).standard_normal(A.shape[1])
    with convop.solver_threads():
        per_n = timeit(lambda: p.N.matvec(v), r, budget=1.0)
        per_p = timeit(lambda: P.matvec(v), r, budget=1.0)
    report.record(group, p.case, "one N = A^T A + damp^2 I product", per_n, "numpy face")
    report.record(group, p.case, "one application of the preconditioner", per_p,
                  f"{per_p / per_n:.2g}x one N product")  # fmt: skip
    t_p, (x_p, it_p, ok_p) = timed(lambda: cg(p, preconditioner(A, damp=damp), cap), r, budget)
    report.record(group, p.case, "cg, M=preconditioner(A, damp) (built in the call)", t_p,
                  f"{it_p} iterations" + ("" if ok_p else f": CAP {cap} REACHED"))  # fmt: skip
    t_0, (x_0, it_0, ok_0) = timed(lambda: cg(p, None, cap), r, budget)
    report.record(group, p.case, "cg, no preconditioner", t_0,
                  f"{it_0} iterations" + ("" if ok_0 else f": CAP {cap} REACHED"))  # fmt: skip
    agree = float(np.linalg.norm(x_p - x_0) / np.linalg.norm(x_0))
    return Compared(it_p, ok_p, it_0, ok_0, t_p, t_0, setup, float(P.beta),
                    tuple(P.boundaries), bool(P.exact), agree, p.residual(x_p),
                    p.residual(x_0), x_p, x_0)  # fmt: skip


# ---------------------------------------------------------------------- 1. the 512^2 blur
def goal_blur(report: Report, mode: str) -> None:
    quick = report.settings.quick
    n = 64 if quick else 512
    damp = 1e-3
    case = f"blur {n}^2, k=15, sigma=2.5, {mode}, damp {damp:g}"
    what = case + (" [quick: smaller case]" if quick else "")
    with section(report, 1, what):
        kernel = convop.data.gaussian_kernel(15, 2.5)
        A = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode=mode)
        p = problem(case, A, convop.data.phantom(n), damp)
        c = compare(report, "blur", p, report.settings.cap)
        extra = ""
        if mode == "circular":  # the exact solution is known
            exact = solve_tikhonov(A, p.y, damp=damp)
            e_p = np.linalg.norm(c.x_p - exact) / np.linalg.norm(exact)
            e_0 = np.linalg.norm(c.x_0 - exact) / np.linalg.norm(exact)
            extra = f"; vs the exact solve_tikhonov: {e_p:.1e} (with M), {e_0:.1e} (without)"
        sign = c.bound_prefix()
        it_ratio, t_ratio = c.iter_ratio(), c.time_ratio()
        if mode == "circular":
            bound = f"≤ {CIRCULAR_MAX} iterations"
            met = c.ok_p and c.it_p <= CIRCULAR_MAX
        else:
            fewer, faster = GOAL1[mode]
            bound = f"≥ {fewer:g}x fewer iterations" + (f", ≥ {faster:g}x less time"
                                                        if faster else "")  # fmt: skip
            met = c.ok_p and it_ratio >= fewer and (faster is None or t_ratio >= faster)
        agrees = c.agree <= AGREE
        verdict = "info" if quick else ("pass" if met else "FAIL")
        detail = (f"beta {c.beta:.3g}, boundaries {'/'.join(c.boundaries)}, exact {c.exact}, "
                  f"setup {shown(c.setup)}; solutions differ by {c.agree:.1e}"
                  + ("" if agrees else f" (> {AGREE:g})")
                  + f"; residuals {c.res_p:.1e} / {c.res_0:.1e}{extra}")  # fmt: skip
        report.goal(Goal(1, what, verdict, bound, c.iterations(), f"{sign}{it_ratio:.3g}x",
                         f"{shown(c.t_p)} / {shown(c.t_0)}", f"{sign}{t_ratio:.3g}x",
                         detail))  # fmt: skip


# ---------------------------------------------------------------------- 2. never worse
def never_worse(report: Report, group: str, label: str, make: Callable,
                x_true: np.ndarray, damp: float, cap: int) -> None:  # fmt: skip
    for mode in MODES:
        case = f"{label}, {mode}, damp {damp:g}"
        with section(report, 2, case):
            p = problem(case, make(mode), x_true, damp)
            c = compare(report, group, p, cap)
            sign = c.bound_prefix()
            met = c.ok_p and c.it_p <= c.it_0 and c.t_p <= c.t_0
            detail = (f"beta {c.beta:.3g}, boundaries {'/'.join(c.boundaries)}, exact "
                      f"{c.exact}, setup {shown(c.setup)}; solutions differ by {c.agree:.1e}; "
                      f"residuals {c.res_p:.1e} / {c.res_0:.1e}")  # fmt: skip
            report.goal(Goal(2, case, "pass" if met else "FAIL", "iterations and time ≤ without",
                             c.iterations(), f"{sign}{c.iter_ratio():.3g}x",
                             f"{shown(c.t_p)} / {shown(c.t_0)}",
                             f"{sign}{c.time_ratio():.3g}x", detail))  # fmt: skip


def goal_channels(report: Report) -> None:
    n = 64 if report.settings.quick else report.settings.n_rgb
    g = gaussian(9, 2.0, 2)
    weight = (0.7 * np.eye(3) + 0.1)[:, :, None, None] * g
    image = convop.data.phantom(n)
    x_true = np.stack([image, image.T, image[::-1]])
    label = f"3->3 cross-talk blur {n}^2, 9x9, sigma=2"

    def make(mode):
        return convop.conv2d(weight, (3, n, n), padding="same", padding_mode=mode)

    never_worse(report, "channels", label, make, x_true, 1e-2, report.settings.cap)


def goal_volume(report: Report) -> None:
    n = 32 if report.settings.quick else report.settings.n3d
    kernel = gaussian(9, 1.5, 3)[None, None]
    label = f"3-D blur {n}^3, 9x9x9, sigma=1.5"

    def make(mode):
        return convop.conv3d(kernel, (1, n, n, n), padding="same", padding_mode=mode)

    never_worse(report, "3-D", label, make, blob3d(n), 1e-2, report.settings.cap3d)


# ---------------------------------------------------------------------- 3. solve_tikhonov
def goal_tikhonov(report: Report) -> None:
    quick, r = report.settings.quick, report.settings.repeats
    n, damp = (256 if quick else 1024), 1e-2
    case = f"circular blur {n}^2, k=15, sigma=2.5, damp {damp:g}"
    what = f"solve_tikhonov / one matvec, {case}" + (" [quick: smaller case]" if quick else "")
    with section(report, 3, what):
        kernel = convop.data.gaussian_kernel(15, 2.5)
        A = convop.conv2d(kernel[None, None], (1, n, n), padding=7, padding_mode="circular")
        x_true = convop.data.phantom(n).ravel()
        y = A.matvec(x_true) + NOISE * np.random.default_rng(0).standard_normal(A.shape[0])
        solve, x = timed(lambda: solve_tikhonov(A, y, damp=damp), r, 5.0)
        b = A.rmatvec(y)
        res = float(np.linalg.norm(A.rmatvec(A.matvec(x) - y) + damp**2 * x) / np.linalg.norm(b))
        if x.shape != x_true.shape or x.dtype != np.float64:
            raise AssertionError(f"solve_tikhonov returned {x.shape} {x.dtype}")
        report.record("tikhonov", case, "solve_tikhonov(op, y, damp) [numpy]", solve,
                      f"normal-equations residual {res:.1e}")  # fmt: skip
        matvec = report.record("tikhonov", case, "one op.matvec(x) [numpy]",
                               timeit(lambda: A.matvec(x_true), r))  # fmt: skip
        normal = report.record("tikhonov", case, "one op.rmatvec(op.matvec(x)) [numpy]",
                               timeit(lambda: A.rmatvec(A.matvec(x_true)), r))  # fmt: skip
        t = torch.from_numpy(x_true.reshape(A.input_shape))
        ty = torch.from_numpy(y.reshape(A.output_shape))
        torch_solve, tx = timed(lambda: solve_tikhonov(A, ty, damp=damp), r, 5.0)
        torch_diff = float(np.abs(tx.numpy().ravel() - x).max() / np.abs(x).max())
        report.record("tikhonov", case, "solve_tikhonov(op, y, damp) [torch]", torch_solve,
                      f"equals the numpy face's to {torch_diff:.1e}")  # fmt: skip
        apply = report.record("tikhonov", case, "one op.apply(x) [torch]",
                              timeit(lambda: A.apply(t), r))  # fmt: skip
        exact = res <= EXACT and torch_diff <= 1e-12
        ratio = solve / matvec
        verdict = "info" if quick else ("pass" if ratio <= TIKHONOV_BOUND and exact else "FAIL")
        detail = (f"normal-equations residual {res:.1e} (≤ {EXACT:g}"
                  + ("" if res <= EXACT else ": NOT EXACT") + ")")  # fmt: skip
        report.goal(Goal(3, what, verdict, f"≤ {TIKHONOV_BOUND:g}x one matvec, residual ≤ "
                         f"{EXACT:g}", seconds=f"{shown(solve)} / {shown(matvec)}",
                         time_ratio=f"{ratio:.3g}x", detail=detail))  # fmt: skip
        report.goal(Goal(3, f"solve_tikhonov / one A^T A, {case}", "info",
                         seconds=f"{shown(solve)} / {shown(normal)}",
                         time_ratio=f"{solve / normal:.3g}x", detail="numpy face"))  # fmt: skip
        report.goal(Goal(3, f"solve_tikhonov / one op.apply, torch face, {case}", "info",
                         seconds=f"{shown(torch_solve)} / {shown(apply)}",
                         time_ratio=f"{torch_solve / apply:.3g}x",
                         detail=f"equals the numpy face's to {torch_diff:.1e}"))  # fmt: skip


# ---------------------------------------------------------------------- output
def goals_table(report: Report) -> str:
    lines = ["| goal | case | iterations (M / none) | fewer | time (M / none) | faster | bound "
             "| verdict | detail |", "|---|---|---:|---:|---:|---:|---|---|---|"]  # fmt: skip
    for g in sorted(report.goals, key=lambda g: g.goal):
        verdict = {"FAIL": "**FAIL**", "ERROR": "**ERROR**"}.get(g.verdict, g.verdict)
        cells = (str(g.goal), cell(g.what), cell(g.iterations), cell(g.iter_ratio),
                 cell(g.seconds), cell(g.time_ratio), cell(g.bound), verdict,
                 cell(g.detail))  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


SECTIONS: dict[int, tuple[str, Callable[[Report], None]]] = {
    1: ("goal 1, circular", lambda report: goal_blur(report, "circular")),
    2: ("goal 1, reflect", lambda report: goal_blur(report, "reflect")),
    3: ("goal 1, zeros", lambda report: goal_blur(report, "zeros")),
    4: ("goal 1, replicate", lambda report: goal_blur(report, "replicate")),
    5: ("goal 2, 3 channels", goal_channels),
    6: ("goal 2, 3-D", goal_volume),
    7: ("goal 3", goal_tikhonov),
}


def forwarded(args: argparse.Namespace) -> list[str]:
    """The options a section's process needs."""
    extra = ["--cap", str(args.cap), "--cap3d", str(args.cap3d), "--n3d", str(args.n3d),
             "--n-rgb", str(args.n_rgb)]  # fmt: skip
    return extra + (["--quick"] if args.quick else [])


def in_fresh_process(report: Report, number: int) -> None:
    found = run_fresh(__file__, number, forwarded(report.settings))
    if isinstance(found, str):
        goal = {5: 2, 6: 2, 7: 3}.get(number, 1)
        report.goals.append(Goal(goal, SECTIONS[number][0], "ERROR", detail=found))
        return
    merge(report, found, Timing, Goal)


def run_section(args: argparse.Namespace) -> int:
    """``--section N --dump FILE``: run one section here and write its report as JSON."""
    report = Report(args)
    SECTIONS[args.section][1](report)
    write_section(args.dump, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, smaller cases: a smoke test")  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help="write the Markdown section to FILE (overwritten)")  # fmt: skip
    parser.add_argument("--cap", type=int, default=20000,
                        help="cg's maxiter, goals 1 and 2 (default 20000)")  # fmt: skip
    parser.add_argument("--cap3d", type=int, default=20000,
                        help="cg's maxiter, goal 2's 3-D case (default 20000)")  # fmt: skip
    parser.add_argument("--n3d", type=int, default=128, help="goal 2's 3-D size (default 128)")
    parser.add_argument("--n-rgb", type=int, default=256,
                        help="goal 2's 3-channel size (default 256)")  # fmt: skip
    parser.add_argument("--section", type=int, choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = 3 if args.quick else 5
    if args.section is not None:
        return run_section(args)

    # bench_operators imports pylops and more (~5 s): only here, not in every section
    from bench_operators import cpu_clock, machine, others_share

    started = time.perf_counter()
    header = machine()
    for line in header:
        print(line)
    report = Report(args)
    shares: dict[str, float] = {}
    whole = cpu_clock()
    for number, (name, _) in SECTIONS.items():
        print(f"\n== {name}", flush=True)
        before = cpu_clock()
        begun = time.perf_counter()
        in_fresh_process(report, number)
        shares[name] = others_share(before)
        print(f"  {time.perf_counter() - begun:.0f} s; other processes used "
              f"{shares[name]:.0%} of the CPUs", flush=True)  # fmt: skip
    shares["whole run"] = others_share(whole)
    shown_shares = ", ".join(f"{name} {share:.0%}" for name, share in shares.items()
                             if share == share)  # fmt: skip
    worst = max((share for share in shares.values() if share == share), default=0.0)
    quiet = "quiet" if worst <= 0.1 else "NOT quiet: the timings are unreliable"
    elapsed = time.perf_counter() - started
    options = " --quick" if args.quick else ""
    defaults = {"cap": 20000, "cap3d": 20000, "n3d": 128, "n_rgb": 256}
    for name, default in defaults.items():
        if getattr(args, name) != default:
            options += f" --{name.replace('_', '-')} {getattr(args, name)}"
    command = "python benchmarks/bench_deconvolution.py" + options
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    share_line = f"other processes' share of the CPUs: {shown_shares} ({quiet})"
    header = [f"`{command}`, {stamp}, {elapsed:.0f} s in all", *header, share_line]

    print(f"\n{share_line}")
    print(f"Goals ({elapsed:.0f} s):")
    for g in sorted(report.goals, key=lambda g: g.goal):
        print(
            f"  {g.verdict:7s} goal {g.goal}  {g.what}: iterations {g.iterations} "
            f"({g.iter_ratio}), time {g.seconds} ({g.time_ratio}) [{g.bound}]; {g.detail}"
        )
    failed = [g for g in report.goals if g.verdict in ("FAIL", "ERROR")]
    print(f"{len(failed)} goal rows not met or broken" if failed else "every goal row met")
    block = _sections.markdown(report, header, goals_table(report), note="note")
    if args.markdown:
        print("\n" + block)
    if args.write is not None:
        args.write.write_text(block + "\n")
        print(f"wrote the tables to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
