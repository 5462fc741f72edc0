"""Spectral analysis speed (issue 13): ``convop.svdvals`` and ``convop.opnorm`` against anchors.

Usage::

    CONVOP_CALIBRATE=1 python benchmarks/bench_spectral.py            # full run (~1.5 min)
    CONVOP_CALIBRATE=1 python benchmarks/bench_spectral.py --quick    # smaller cases: a smoke test
    python benchmarks/bench_spectral.py --markdown                    # also print the tables
    python benchmarks/bench_spectral.py --write FILE                  # the tables into FILE

``--write`` writes the Markdown section (header, goals, notes, every timing) to FILE, whole,
to be pasted into docs/benchmarks.md. Every result is checked before it is timed (see each
goal); a timing is the median of repeats of a loop of calls (``_timing.timeit``: at least
10 ms a loop, 0.1 s of warm-up; a call slower than its budget is timed once). The operator
is built afresh inside every timed call, so no cache on an operator can flatter a repeat.
Each goal's section runs in a fresh Python process of its own, as in bench_operators.py.

The goals (rows of the goals table; a quick run measures smaller cases, shown as info):

1. ``svdvals`` of a 64->64 3x3 circular (padding=1) layer on 32^2, float32 weight: all
   65,536 singular values in <= 0.5 s. Anchor: LAPACK's dense SVD
   (``np.linalg.svd(op.todense(), compute_uv=False)``), measured on 1024 and 2048 columns,
   where ``svdvals`` is checked against it, and extrapolated by n^3 to 65,536 columns, where
   it is not feasible. Checked on the large case: sum of squares = H*W*||w||_F^2 (Frobenius),
   sorted, float64, largest = ``opnorm``'s bracket.
2. ``opnorm(op, rtol=1e-2)`` of a 64->64 3x3 zero-padded (padding=1) layer on 56^2, float32:
   <= 0.2 s.
3. ``opnorm(op, rtol=1e-2)`` of a 512^2 k=15 Gaussian blur (sigma 2, sum 1, reflect 'same'
   padding, float64) <= 0.1x DeepInverse's ``LinearPhysics.compute_norm`` at its default
   ``tol=1e-3`` (``max_iter=100``), with a certified gap ``upper / lower - 1 <= 1%``.
   DeepInverse is run as ``compute_norm`` runs it: its own ``power_method`` on
   ``A_adjoint(A(x))`` (``Blur``'s ``A`` and ``A_adjoint`` are deepinv's ``conv2d`` and
   ``conv_transpose2d``, or their ``_fft`` forms with ``use_fft=True``: the faster pair is
   the anchor). Where the package does not import (torchvision missing), its two modules
   are loaded alone; where even that fails, a faithful copy of the loop runs on convop's
   torch face. Its estimate certifies nothing: the report shows it against convop's bracket.
4. (info) ``scipy.sparse.linalg.svds(op, k=1)`` (ARPACK through the numpy face) on the
   operators of goals 2 and 3, where it converges within ``--svds-limit`` seconds (60).

A goal not met prints FAIL; a check or a section that breaks prints ERROR and the run goes
on; the exit code is 0 either way (2 for a wrong command line).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _sections  # benchmarks/, the script's own folder
import numpy as np
import scipy.sparse.linalg as spla
import torch
from _sections import Timing, cell, merge, run_fresh, shown, write_section
from _timing import timeit
from bench_operators import cpu_clock, deepinv_functions, machine, others_share

import convop
import convop.data

NAN = float("nan")
# goal -> (what is bounded, bound): "time" bounds convop's seconds, "ratio" its time / anchor
BOUNDS: dict[int, tuple[str, float] | None] = {1: ("time", 0.5), 2: ("time", 0.2),
                                               3: ("ratio", 0.1), 4: None}  # fmt: skip
GAP_BOUND = 0.01  # goal 3: the certified gap upper / lower - 1
RTOL = 1e-2  # the rtol goals 2 and 3 ask opnorm for
DEEPINV_TOL, DEEPINV_MAX_ITER = 1e-3, 100  # LinearPhysics.compute_norm's defaults


# ---------------------------------------------------------------------- the report
@dataclass
class Goal:
    goal: int
    what: str
    seconds: float  # convop's time; NaN if not measured
    anchor: str = ""  # what it is compared with
    anchor_seconds: float = NAN
    detail: str = ""
    gap: float = NAN  # the certified relative gap, where the goal bounds it
    error: str = ""
    info: bool = False  # shown for information (a quick run's smaller cases, goal 4)

    @property
    def ratio(self) -> float:
        return self.seconds / self.anchor_seconds

    @property
    def bound(self) -> tuple[str, float] | None:
        return None if self.info else BOUNDS[self.goal]

    @property
    def bound_text(self) -> str:
        if self.bound is None:
            return "—"
        kind, limit = self.bound
        text = f"time ≤ {shown(limit)}" if kind == "time" else f"ratio ≤ {limit:g}"
        return text + (f", gap ≤ {GAP_BOUND:.0%}" if self.goal == 3 else "")

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.seconds != self.seconds:
            return "skipped"
        if self.bound is None:
            return "info"
        kind, limit = self.bound
        value = self.seconds if kind == "time" else self.ratio
        if value != value:
            return "skipped"
        met = value <= limit and (self.goal != 3 or self.gap <= GAP_BOUND)
        return "pass" if met else "FAIL"


@dataclass
class Report:
    settings: argparse.Namespace
    timings: list[Timing] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, group: str, case: str, method: str, seconds: float, note: str = "") -> float:
        self.timings.append(Timing(group, case, method, seconds, note))
        print(f"  {group:8s} {case:34s} {method:58s} {shown(seconds):>10s}  {note}", flush=True)
        return seconds

    def goal(self, row: Goal) -> None:
        self.goals.append(row)
        ratio = "" if row.ratio != row.ratio else f", {row.ratio:.3g}x {row.anchor}"
        print(f"  -> goal {row.goal}: {row.what}: {shown(row.seconds)}{ratio} [{row.verdict}]"
              f"{'; ' + row.detail if row.detail else ''}", flush=True)  # fmt: skip

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
        report.goals.append(Goal(goal, what, NAN, error=message, info=goal == 4))
        print(f"  -> goal {goal}: {what}: ERROR {message}", flush=True)


def timed(fn: Callable[[], object], repeats: int, budget: float = 10.0) -> tuple[float, object]:
    """``timeit(fn)`` and what the last call returned (checked by the caller)."""
    out: list[object] = [None]

    def call() -> None:
        out[0] = fn()

    return timeit(call, repeats, budget), out[0]


def bracket(op: convop.ConvOperator, rtol: float) -> tuple[convop.OpNorm, str]:
    """``convop.opnorm(op, rtol=rtol)`` and the text of its RuntimeWarning ('' if none)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convop.opnorm(op, rtol=rtol)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return result, " / ".join(said)


def check_bracket(result, rtol: float, warned: str, what: str) -> None:
    """The invariants opnorm promises: ordered, finite, and the gap reached (or a warning)."""
    estimate, lower, upper = result
    if not (math.isfinite(upper) and 0 < lower <= estimate * (1 + 1e-12)
            and estimate <= upper * (1 + 1e-12)):  # fmt: skip
        raise AssertionError(f"{what}: opnorm returned {tuple(result)}: not lower <= est <= upper")
    if upper > (1 + rtol) * lower and not warned:
        raise AssertionError(f"{what}: gap {upper / lower - 1:.2e} > rtol {rtol:g} and no warning")


def layer_weight(c: int) -> torch.Tensor:
    """The layers' float32 weight: ``torch.manual_seed(0)``, ``randn / (3 * 8)``."""
    torch.manual_seed(0)
    return torch.randn(c, c, 3, 3) / (3 * 8)


# ---------------------------------------------------------------------- 1. svdvals
def goal_svdvals(report: Report) -> None:
    quick, r = report.settings.quick, report.settings.repeats
    c, n = (16, 16) if quick else (64, 32)
    cols = c * n * n
    case = f"{c}->{c}, 3x3, circular, {n}^2, float32"
    weight = layer_weight(c)

    def make(weight=weight, c=c, n=n):
        return convop.conv2d(weight, (c, n, n), padding=1, padding_mode="circular")

    seconds, checked = NAN, False
    with section(report, 1, f"svdvals, {case}"):
        seconds, s = timed(lambda: convop.svdvals(make()), r)
        report.record("svdvals", case, "convop.svdvals(op), all values", seconds,
                      f"{cols} values; operator built in each call")  # fmt: skip
        # Checks: every value, float64, descending; their squares sum to ||A||_F^2, which for
        # a circular stride-1 convolution (n > k) is H * W * ||w||_F^2; the largest lies in
        # opnorm's bracket.
        if tuple(s.shape) != (cols,) or s.dtype != torch.float64:
            raise AssertionError(f"svdvals: shape {tuple(s.shape)}, {s.dtype}; "
                                 f"expected ({cols},), float64")  # fmt: skip
        if bool((s[1:] > s[:-1]).any()) or bool((s < 0).any()):
            raise AssertionError("svdvals: not sorted descending, or negative values")
        frobenius = n * n * float((weight.double() ** 2).sum())
        frob_err = abs(float((s**2).sum()) - frobenius) / frobenius
        if frob_err > 1e-6:
            raise AssertionError(f"svdvals: sum of squares off ||A||_F^2 by {frob_err:.1e}")
        norm, warned = bracket(make(), 1e-6)
        top = float(s[0])
        if not norm.lower * (1 - 1e-7) <= top <= norm.upper * (1 + 1e-7):
            raise AssertionError(f"svdvals: largest {top!r} outside opnorm's bracket "
                                 f"[{norm.lower!r}, {norm.upper!r}] {warned}")  # fmt: skip
        report.note(f"goal 1 checks: sum of squares = H*W*||w||_F^2 to {frob_err:.1e}; "
                    f"largest {top:.6f} in opnorm's bracket [{norm.lower:.6f}, "
                    f"{norm.upper:.6f}]")  # fmt: skip
        checked = True

    # The anchor: LAPACK's dense SVD where it is feasible, checked against svdvals.
    dense_cases = ((8, 8), (16, 8)) if quick else ((16, 8), (32, 8))
    measured: list[tuple[int, float]] = []
    for cd, nd in dense_cases:
        small = f"{cd}->{cd}, 3x3, circular, {nd}^2, float32"
        with section(report, 1, f"svdvals / dense SVD, {small}"):
            w = layer_weight(cd)
            op = convop.conv2d(w, (cd, nd, nd), padding=1, padding_mode="circular")
            columns = op.shape[1]
            dense_s, values = timed(lambda op=op: np.linalg.svd(op.todense(), compute_uv=False),
                                    r, budget=3.0)  # fmt: skip
            report.record("svdvals", small, "dense: np.linalg.svd(op.todense(), compute_uv=False)",
                          dense_s, f"{columns} columns, {op.todense().dtype}")  # fmt: skip
            ours, s = timed(
                lambda w=w, cd=cd, nd=nd: convop.svdvals(
                    convop.conv2d(w, (cd, nd, nd), padding=1, padding_mode="circular")
                ),
                r,
            )
            err32 = float(np.abs(s.numpy() - values).max() / values[0])
            # float64 reference: the same weight, exactly widened
            op64 = convop.conv2d(w.double(), (cd, nd, nd), padding=1, padding_mode="circular")
            exact = np.linalg.svd(op64.todense(), compute_uv=False)
            err64 = float(np.abs(s.numpy() - exact).max() / exact[0])
            if err32 > 1e-4 or err64 > 1e-5:
                raise AssertionError(f"svdvals vs dense SVD: max rel. difference {err32:.1e} "
                                     f"(float32 dense), {err64:.1e} (float64 dense)")  # fmt: skip
            report.record("svdvals", small, "convop.svdvals(op)", ours,
                          f"{ours / dense_s:.2g}x dense; max |diff| / s_max {err32:.1e} vs "
                          f"float32 dense, {err64:.1e} vs float64 dense")  # fmt: skip
            report.goal(Goal(1, f"svdvals / dense SVD, {small} ({columns} values)", ours,
                             "dense SVD", dense_s, f"max |diff| / s_max {err64:.1e} vs float64 "
                             f"dense", info=True))  # fmt: skip
            measured.append((columns, dense_s))

    what = f"svdvals, {case} ({cols} values)" + (" [quick: smaller case]" if quick else "")
    if not checked:
        return  # the section above broke: its ERROR row stands
    base, base_s = measured[-1] if measured else (0, NAN)
    estimate = base_s * (cols / base) ** 3 if measured else NAN
    detail = ""
    if measured:
        gib = cols * cols * 4 / 2**30
        report.record("svdvals", case, f"dense SVD, ESTIMATED by n^3 from {base} columns",
                      estimate, f"not run: ~{estimate / 3600:.3g} h, the float32 matrix alone "
                      f"{gib:.3g} GiB")  # fmt: skip
        detail = (
            f"dense SVD not feasible: n^3 from {base} columns ({shown(base_s)}) gives "
            f"~{estimate / 3600:.3g} h; its float32 matrix is {gib:.3g} GiB"
        )
        report.note(f"goal 1: {detail}")
    report.goal(Goal(1, what, seconds, f"dense SVD (est. by n^3 from {base} cols)", estimate,
                     detail, info=quick))  # fmt: skip


# ---------------------------------------------------------------------- 2. opnorm of a layer
def arpack(report: Report, group: str, case: str, op: convop.ConvOperator,
           result: convop.OpNorm, ours: float, tol: float) -> None:  # fmt: skip
    """Goal 4 (info): ``svds(op, k=1)`` through the numpy face, timed if it converges within
    ``--svds-limit`` seconds (ARPACK's restarts capped to that budget), checked against
    opnorm's bracket."""
    what = f"svds(op, k=1) beside opnorm, {case}"
    limit = report.settings.svds_limit
    with section(report, 4, what):
        x = np.random.default_rng(0).standard_normal(op.shape[1]).astype(op.dtype)
        pair = timeit(lambda: op.rmatvec(op.matvec(x)), report.settings.repeats, budget=2.0)
        ncv = 20  # svds' default for k=1: min(n, max(2k + 1, 20))
        maxiter = max(1, int(limit / (pair * ncv)))
        v0 = np.random.default_rng(1).standard_normal(min(op.shape)).astype(op.dtype)

        def run():
            return spla.svds(op, k=1, v0=v0, ncv=ncv, maxiter=maxiter,
                             return_singular_vectors=False)  # fmt: skip

        start = time.perf_counter()
        try:
            seconds, values = timed(run, report.settings.repeats, budget=5.0)
        except spla.ArpackNoConvergence:
            spent = time.perf_counter() - start
            report.record(group, case, "scipy svds(op, k=1) [ARPACK]", NAN,
                          f"no convergence in {maxiter} restarts ({spent:.0f} s)")  # fmt: skip
            report.goals.append(Goal(4, what, NAN, "svds", NAN, f"skipped: ARPACK did not "
                                     f"converge within ~{limit:g} s", info=True))  # fmt: skip
            report.note(f"goal 4 skipped on {case}: svds did not converge in {maxiter} restarts "
                        f"(~{limit:g} s of products at {shown(pair)} per A^T A)")  # fmt: skip
            return
        sigma = float(values[0])
        inside = result.lower * (1 - tol) <= sigma <= result.upper * (1 + tol)
        report.record(group, case, "scipy svds(op, k=1) [ARPACK, numpy face]", seconds,
                      f"sigma {sigma:.7g}; {ours / seconds:.3g}x: opnorm / svds")  # fmt: skip
        if not inside:
            raise AssertionError(f"svds' sigma {sigma!r} outside opnorm's bracket "
                                 f"[{result.lower!r}, {result.upper!r}]")  # fmt: skip
        report.goal(Goal(4, what, ours, "svds k=1", seconds,
                         f"svds sigma {sigma:.7g} inside opnorm's [{result.lower:.7g}, "
                         f"{result.upper:.7g}]; one A^T A {shown(pair)}", info=True))  # fmt: skip


def goal_layer_norm(report: Report) -> None:
    quick, r = report.settings.quick, report.settings.repeats
    c, n = (16, 28) if quick else (64, 56)
    case = f"{c}->{c}, 3x3, zeros, {n}^2, float32"
    weight = layer_weight(c)

    def make():
        return convop.conv2d(weight, (c, n, n), padding=1)

    what = f"opnorm rtol={RTOL:g}, {case}" + (" [quick: smaller case]" if quick else "")
    result = seconds = None
    with section(report, 2, what):
        result, warned = bracket(make(), RTOL)
        check_bracket(result, RTOL, warned, case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            seconds = timeit(lambda: convop.opnorm(make(), rtol=RTOL), r)
        gap = result.upper / result.lower - 1
        detail = (f"lower {result.lower:.6g}, upper {result.upper:.6g}, gap {gap:.2e}"
                  + (f"; WARNING: {warned}" if warned else ""))  # fmt: skip
        report.record("opnorm", case, f"convop.opnorm(op, rtol={RTOL:g})", seconds, detail)
        op, ones = make(), torch.ones(c, n, n)
        pair = timeit(lambda: op.apply_adjoint(op.apply(ones)), r)
        report.record("opnorm", case, "one A^T A, torch face (for scale)", pair,
                      f"opnorm = {seconds / pair:.1f} of them")  # fmt: skip
        report.goal(Goal(2, what, seconds, "", NAN, detail, gap=gap, info=quick))
    if result is not None and seconds is not None:
        arpack(report, "opnorm", case, make(), result, seconds, tol=1e-5)


# ---------------------------------------------------------------------- 3. DeepInverse
def deepinv_power_method() -> tuple[Callable | None, str]:
    """deepinv's own ``power_method`` (``deepinv/physics/functional/matrix.py``, which needs
    only torch), loaded alone when the package does not import."""
    try:
        from deepinv.physics.functional import power_method

        return power_method, "deepinv's power_method"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    try:
        spec = importlib.util.find_spec("deepinv")
        if spec is None or not spec.submodule_search_locations:
            return None, "deepinv is not installed"
        file = Path(spec.submodule_search_locations[0]) / "physics" / "functional" / "matrix.py"
        spec = importlib.util.spec_from_file_location("_deepinv_matrix", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.power_method, "deepinv's power_method, its module loaded alone"
    except Exception as exc:
        return None, f"deepinv's power_method does not load ({reason}; alone: {exc})"


def power_method_copy(operator: Callable, x0: torch.Tensor, max_iter: int = 100,
                      tol: float = 1e-6, verbose: bool = False) -> torch.Tensor:  # fmt: skip
    """deepinv 0.5's ``power_method``, line for line (used only where it does not load): a
    standard normal start, the Rayleigh quotient ``z`` of ``A^T A``, stop when
    ``|z - z_old| < tol`` (an absolute change, though deepinv calls it relative)."""
    x = torch.randn_like(x0)
    x /= torch.linalg.vector_norm(x)
    zold = torch.zeros_like(x)
    for _ in range(max_iter):
        y = operator(x)
        z = torch.vdot(x.flatten(), y.flatten()) / torch.linalg.vector_norm(x) ** 2
        rel_var = torch.linalg.vector_norm(z - zold)
        if rel_var < tol:
            break
        zold = z
        x = y / torch.linalg.vector_norm(y)
    else:
        warnings.warn("Power iteration: convergence not reached", stacklevel=2)
    return z.real


def deepinv_pairs(report: Report, op: convop.ConvOperator, kernel: np.ndarray,
                  case: str) -> tuple[dict[str, tuple[Callable, Callable]], str]:  # fmt: skip
    """``name -> (A, A_adjoint)`` on (1, 1, n, n) tensors as deepinv's ``Blur(filter,
    padding='reflect', use_fft=...)`` computes them, each checked against convop's torch face;
    convop's own torch face where deepinv's functions do not load."""
    functional, how = deepinv_functions()
    if functional is None:
        report.note(f"goal 3: deepinv's convolutions unavailable ({how}); the power method "
                    "runs on convop's torch face op.apply / op.apply_adjoint")  # fmt: skip
        return {"convop torch face": (op.apply, op.apply_adjoint)}, "convop's torch face"
    # Blur.A convolves (flips the filter): hand it the flipped correlation kernel.
    h = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1]))[None, None]
    pairs = {}
    names = {"conv2d": ("conv2d", "conv_transpose2d"),
             "conv2d_fft": ("conv2d_fft", "conv_transpose2d_fft")}  # fmt: skip
    for name, (fwd, adj) in names.items():
        f, g = getattr(functional, fwd, None), getattr(functional, adj, None)
        if f is None or g is None:
            report.note(f"deepinv has no {fwd} / {adj}")
            continue
        pairs[name] = (lambda x, f=f: f(x, h, padding="reflect"),
                       lambda y, g=g: g(y, h, padding="reflect"))  # fmt: skip
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(op.input_shape))[None]
    for name, (fwd, adj) in pairs.items():
        for label, ours, theirs in (("forward", op.apply(x), fwd(x)),
                                    ("adjoint", op.apply_adjoint(x), adj(x))):  # fmt: skip
            err = float((ours - theirs).abs().max() / ours.abs().max())
            if err > 1e-11:
                raise AssertionError(f"deepinv {name} {label} differs from convop's by {err:.1e}")
    return pairs, how


def goal_blur_norm(report: Report) -> None:
    quick, r = report.settings.quick, report.settings.repeats
    n, k, sigma = (128 if quick else 512), 15, 2.0
    case = f"blur {n}^2, k={k}, sigma={sigma:g}, reflect, float64"
    kernel = convop.data.gaussian_kernel(k, sigma)  # sums to 1

    def make():
        return convop.conv2d(kernel[None, None], (1, n, n), padding="same",
                             padding_mode="reflect")  # fmt: skip

    what = (f"opnorm rtol={RTOL:g} / DeepInverse compute_norm tol={DEEPINV_TOL:g}, {case}"
            + (" [quick: smaller case]" if quick else ""))  # fmt: skip
    result = ours = None
    with section(report, 3, what):
        op = make()
        result, warned = bracket(op, RTOL)
        check_bracket(result, RTOL, warned, case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ours = timeit(lambda: convop.opnorm(make(), rtol=RTOL), r)
        gap = result.upper / result.lower - 1
        report.record("blur", case, f"convop.opnorm(op, rtol={RTOL:g}) [{op.method}]", ours,
                      f"lower {result.lower:.7g}, upper {result.upper:.7g}, gap {gap:.2e}"
                      + (f"; WARNING: {warned}" if warned else ""))  # fmt: skip
        # DeepInverse: the faster of its two A^T A products, in its own power method.
        pairs, how = deepinv_pairs(report, op, kernel, case)
        x = torch.from_numpy(np.random.default_rng(4).standard_normal(op.input_shape))[None]
        per_pair = {}
        for name, (fwd, adj) in pairs.items():
            per_pair[name] = timeit(lambda fwd=fwd, adj=adj: adj(fwd(x)), r, budget=3.0)
            report.record("blur", case, f"one A^T A: deepinv {name} + transpose",
                          per_pair[name])  # fmt: skip
        best = min(per_pair, key=per_pair.get)
        fwd, adj = pairs[best]
        power, power_how = deepinv_power_method()
        if power is None:
            power, power_how = power_method_copy, f"a copy of deepinv's power_method ({power_how})"
        report.note(f"goal 3: DeepInverse's anchor is {power_how} on {best} ({how})")
        calls = [0]

        def adjoint_a(v):
            calls[0] += 1
            return adj(fwd(v))

        x0 = torch.zeros(1, *op.input_shape, dtype=torch.float64)  # its values are ignored

        def compute_norm():
            torch.manual_seed(0)  # the same start vector every repeat
            return power(adjoint_a, x0, max_iter=DEEPINV_MAX_ITER, tol=DEEPINV_TOL,
                         verbose=False)  # fmt: skip

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calls[0] = 0
            z = float(compute_norm())
            iterations = calls[0]
            theirs = timeit(compute_norm, r, budget=10.0)
        unconverged = any("convergence not reached" in str(w.message) for w in caught)
        estimate = math.sqrt(z)  # compute_norm returns ||A^T A|| (squared=True, its default)
        if estimate > result.upper * (1 + 1e-9):  # a Rayleigh quotient: below the norm
            raise AssertionError(f"DeepInverse's sqrt(z) {estimate!r} > convop's upper bound "
                                 f"{result.upper!r}: that bound is wrong")  # fmt: skip
        below = 1 - estimate / result.lower
        side = (f"{below:.2%} below convop's certified lower bound, so at least that far "
                f"below the norm" if below > 0 else
                f"inside convop's bracket, {-below:.2%} above its lower bound")  # fmt: skip
        report.record("blur", case, f"DeepInverse compute_norm, tol={DEEPINV_TOL:g} [{best}]",
                      theirs, f"{iterations} A^T A products"
                      + (" (max_iter reached)" if unconverged else "")
                      + f"; sqrt(z) {estimate:.7g}: {side}")  # fmt: skip
        for name, seconds in per_pair.items():
            if name != best:
                report.record("blur", case, f"DeepInverse compute_norm [{name}] (ESTIMATED)",
                              seconds * iterations,
                              f"not run: {iterations} x its A^T A")  # fmt: skip
        detail = (f"convop [{result.lower:.7g}, {result.upper:.7g}], gap {gap:.2e}; "
                  f"DeepInverse ({best}, {iterations} it.) sqrt(z) = {estimate:.7g}, certifies "
                  f"nothing: {side}")  # fmt: skip
        report.goal(Goal(3, what, ours, f"deepinv compute_norm [{best}]", theirs, detail,
                         gap=gap, info=quick))  # fmt: skip
        for name, seconds in per_pair.items():  # Blur's default use_fft=False: conv2d
            if name != best:
                report.goal(Goal(3, f"{what}, against deepinv's {name} pair (estimated)", ours,
                                 f"deepinv compute_norm [{name}], est. {iterations} x its A^T A",
                                 seconds * iterations, "not run (too slow for this script): "
                                 "the anchor of the row above is the faster pair", gap=gap,
                                 info=True))  # fmt: skip
    if result is not None and ours is not None:
        arpack(report, "blur", case, make(), result, ours, tol=1e-9)


# ---------------------------------------------------------------------- output
def goals_table(report: Report) -> str:
    lines = ["| goal | case | convop | anchor | ratio | bound | verdict | detail |",
             "|---|---|---:|---|---:|---|---|---|"]  # fmt: skip
    for g in sorted(report.goals, key=lambda g: g.goal):
        ratio = "—" if g.ratio != g.ratio else f"{g.ratio:.3g}"
        anchor = f"{g.anchor} {shown(g.anchor_seconds)}" if g.anchor else "—"
        verdict = {"FAIL": "**FAIL**", "ERROR": "**ERROR**"}.get(g.verdict, g.verdict)
        cells = (str(g.goal), cell(g.what), shown(g.seconds), cell(anchor), ratio,
                 g.bound_text, verdict, cell(g.error or g.detail))  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def markdown(report: Report, header: list[str]) -> str:
    return _sections.markdown(report, header, goals_table(report), note="note")


SECTIONS = {1: goal_svdvals, 2: goal_layer_norm, 3: goal_blur_norm}  # goal 4 runs in 2 and 3


def in_fresh_process(report: Report, number: int) -> None:
    """Run section ``number`` in a fresh Python process and add what it measured (see
    bench_operators.in_fresh_process: no ratio depends on what ran before it)."""
    extra = ["--svds-limit", str(report.settings.svds_limit)]
    found = run_fresh(__file__, number, extra + (["--quick"] if report.settings.quick else []))
    if isinstance(found, str):
        report.goals.append(Goal(number, f"section of goal {number}", NAN, error=found))
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
                        help="fewer repeats, smaller cases: a smoke test")  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help="write the Markdown tables to FILE (overwritten)")  # fmt: skip
    parser.add_argument("--svds-limit", type=float, default=60.0, metavar="SECONDS",
                        help="goal 4: skip svds beyond about this long (default 60)")  # fmt: skip
    parser.add_argument("--section", type=int, choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = 3 if args.quick else 7
    if args.section is not None:
        return run_section(args)

    started = time.perf_counter()
    calibrate = os.environ.get("CONVOP_CALIBRATE", "unset")
    header = [*machine(), f"CONVOP_CALIBRATE={calibrate}"]
    for line in header:
        print(line)
    report = Report(args)
    shares: dict[str, float] = {}
    whole = cpu_clock()
    for number in SECTIONS:
        name = {1: "goal 1", 2: "goals 2 and 4", 3: "goals 3 and 4"}[number]
        print(f"\n== {name}", flush=True)
        before = cpu_clock()
        in_fresh_process(report, number)
        shares[name] = others_share(before)
        print(f"  other processes used {shares[name]:.0%} of the CPUs", flush=True)
    shares["whole run"] = others_share(whole)
    shown_shares = ", ".join(f"{name} {share:.0%}" for name, share in shares.items()
                             if share == share)  # fmt: skip
    worst = max((share for share in shares.values() if share == share), default=0.0)
    quiet = "quiet" if worst <= 0.1 else "NOT quiet: the timings are unreliable"
    elapsed = time.perf_counter() - started
    command = "python benchmarks/bench_spectral.py" + (" --quick" if args.quick else "")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    share_line = f"other processes' share of the CPUs: {shown_shares} ({quiet})"
    header = [f"`CONVOP_CALIBRATE={calibrate} {command}`, {stamp}, {elapsed:.0f} s in all",
              *header[:-1], share_line]  # fmt: skip

    print(f"\n{share_line}")
    print(f"Goals ({elapsed:.0f} s):")
    for g in sorted(report.goals, key=lambda g: g.goal):
        ratio = "" if g.ratio != g.ratio else f"  {g.ratio:.3g}x {g.anchor}"
        bound = "" if g.bound is None else f"  [{g.bound_text}]"
        print(f"  {g.verdict:7s} goal {g.goal}  {shown(g.seconds):>9s}{ratio}{bound}  "
              f"{g.what}: {g.error or g.detail}")  # fmt: skip
    failed = [g for g in report.goals if g.verdict in ("FAIL", "ERROR")]
    print(f"{len(failed)} goal rows not met or broken" if failed else "every goal row met")
    block = markdown(report, header)
    if args.markdown:
        print("\n" + block)
    if args.write is not None:
        args.write.write_text(block + "\n")
        print(f"wrote the tables to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
