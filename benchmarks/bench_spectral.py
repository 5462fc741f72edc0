"""Spectral analysis speed (issue 13): ``convop.svdvals`` and ``convop.opnorm`` against anchors.

Usage::

    CONVOP_CALIBRATE=1 python benchmarks/bench_spectral.py            # full run (~1.5 min)
    CONVOP_CALIBRATE=1 python benchmarks/bench_spectral.py --quick    # smaller cases: a smoke test
    python benchmarks/bench_spectral.py --write FILE                  # the tables into FILE

Every result is checked before it is timed, and the operator is built afresh inside every
timed call, so no cache on an operator can flatter a repeat. The goals (a quick run measures
smaller cases, shown as info):

1. ``svdvals`` of a 64->64 3x3 circular layer on 32^2 (float32): all 65,536 values in <=
   0.5 s. Anchor: LAPACK's dense SVD of ``op.todense()`` on 1024 and 2048 columns (checked
   against ``svdvals`` there), extrapolated by n^3;
2. ``opnorm(op, rtol=1e-2)`` of a 64->64 3x3 zero-padded layer on 56^2 (float32) <= 0.2 s;
3. ``opnorm(op, rtol=1e-2)`` of a 512^2 k=15 Gaussian blur (reflect, float64) <= 0.1x
   DeepInverse's ``compute_norm`` at its default ``tol=1e-3`` (its ``power_method`` on the
   faster of its ``conv2d`` and ``conv2d_fft`` pairs; where deepinv does not import, its
   modules alone; failing that, a faithful copy of the loop on convop's torch face), with a
   certified gap ``upper / lower - 1 <= 1%``;
4. (info) ``scipy.sparse.linalg.svds(op, k=1)`` on the operators of goals 2 and 3, where it
   converges within ``--svds-limit`` seconds.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import scipy.sparse.linalg as spla
import torch
from bench_operators import deepinv_functions, deepinv_module

import convop
import convop.data

GAP = 0.01  # goal 3: the certified gap upper / lower - 1
RTOL = 1e-2  # the rtol goals 2 and 3 ask opnorm for
DEEPINV_TOL, DEEPINV_MAX_ITER = 1e-3, 100  # LinearPhysics.compute_norm's defaults


def bracket(op: convop.ConvOperator, rtol: float) -> tuple[convop.OpNorm, str]:
    """``convop.opnorm(op, rtol=rtol)``, checked: ordered, finite, and the gap reached or a
    RuntimeWarning (whose text is returned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convop.opnorm(op, rtol=rtol)
    warned = " / ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    estimate, lower, upper = result
    if not (math.isfinite(upper) and 0 < lower <= estimate * (1 + 1e-12)
            and estimate <= upper * (1 + 1e-12)):  # fmt: skip
        raise AssertionError(f"opnorm returned {tuple(result)}: not lower <= est <= upper")
    if upper > (1 + rtol) * lower and not warned:
        raise AssertionError(f"opnorm: gap {upper / lower - 1:.2e} > rtol {rtol:g}, no warning")
    return result, warned


def timed_opnorm(make: Callable[[], convop.ConvOperator], repeats: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return h.timeit(lambda: convop.opnorm(make(), rtol=RTOL), repeats)


def layer_weight(c: int) -> torch.Tensor:
    """The layers' float32 weight: ``torch.manual_seed(0)``, ``randn / (3 * 8)``."""
    torch.manual_seed(0)
    return torch.randn(c, c, 3, 3) / (3 * 8)


def circular(c: int, n: int, weight: torch.Tensor | None = None) -> convop.ConvOperator:
    weight = layer_weight(c) if weight is None else weight
    return convop.conv2d(weight, (c, n, n), padding=1, padding_mode="circular")


# ---------------------------------------------------------------------- 1. svdvals
def goal_svdvals(report: h.Report) -> None:
    c, n = (16, 16) if report.quick else (64, 32)
    cols, weight = c * n * n, layer_weight(c)
    case = f"{c}->{c}, 3x3, circular, {n}^2, float32"
    seconds, s = h.timed(lambda: convop.svdvals(circular(c, n)), report.repeats)
    report.record("svdvals", case, "convop.svdvals(op), all values", seconds,
                  f"{cols} values; operator built in each call")  # fmt: skip
    # every value, float64, descending; the squares sum to ||A||_F^2, which for a circular
    # stride-1 convolution (n > k) is H * W * ||w||_F^2; the largest in opnorm's bracket
    if tuple(s.shape) != (cols,) or s.dtype != torch.float64:
        raise AssertionError(f"svdvals: {tuple(s.shape)}, {s.dtype}; expected ({cols},), float64")
    if bool((s[1:] > s[:-1]).any()) or bool((s < 0).any()):
        raise AssertionError("svdvals: not sorted descending, or negative values")
    frobenius = n * n * float((weight.double() ** 2).sum())
    frob_err = abs(float((s**2).sum()) - frobenius) / frobenius
    if frob_err > 1e-6:
        raise AssertionError(f"svdvals: sum of squares off ||A||_F^2 by {frob_err:.1e}")
    norm, warned = bracket(circular(c, n), 1e-6)
    top = float(s[0])
    if not norm.lower * (1 - 1e-7) <= top <= norm.upper * (1 + 1e-7):
        raise AssertionError(f"svdvals: largest {top!r} outside opnorm's bracket "
                             f"[{norm.lower!r}, {norm.upper!r}] {warned}")  # fmt: skip
    report.note(f"goal 1 checks: sum of squares = H*W*||w||_F^2 to {frob_err:.1e}; largest "
                f"{top:.6f} in opnorm's bracket [{norm.lower:.6f}, {norm.upper:.6f}]")  # fmt: skip
    base, base_s = 0, h.NAN  # the anchor: LAPACK's dense SVD where feasible, checked
    for cd, nd in ((8, 8), (16, 8)) if report.quick else ((16, 8), (32, 8)):
        small = f"{cd}->{cd}, 3x3, circular, {nd}^2, float32"
        with report.section(1, f"svdvals / dense SVD, {small}"):
            op = circular(cd, nd)
            dense_s, values = h.timed(lambda op=op: np.linalg.svd(op.todense(), compute_uv=False),
                                      report.repeats, budget=3.0)  # fmt: skip
            report.record("svdvals", small, "dense: np.linalg.svd(op.todense(), compute_uv=False)",
                          dense_s, f"{op.shape[1]} columns, {op.todense().dtype}")  # fmt: skip
            ours, s = h.timed(lambda cd=cd, nd=nd: convop.svdvals(circular(cd, nd)),
                              report.repeats)  # fmt: skip
            err32 = float(np.abs(s.numpy() - values).max() / values[0])
            exact = np.linalg.svd(
                circular(cd, nd, layer_weight(cd).double()).todense(), compute_uv=False
            )  # float64: the same weight, widened
            err64 = float(np.abs(s.numpy() - exact).max() / exact[0])
            if err32 > 1e-4 or err64 > 1e-5:
                raise AssertionError(f"svdvals vs dense SVD: max rel. difference {err32:.1e} "
                                     f"(float32 dense), {err64:.1e} (float64 dense)")  # fmt: skip
            report.record("svdvals", small, "convop.svdvals(op)", ours,
                          f"{ours / dense_s:.2g}x dense; max |diff| / s_max {err32:.1e} vs "
                          f"float32 dense, {err64:.1e} vs float64 dense")  # fmt: skip
            report.goal(1, f"svdvals / dense SVD, {small} ({op.shape[1]} values)",
                        ours / dense_s, anchor=f"dense SVD {h.shown(dense_s)}",
                        detail=f"max |diff| / s_max {err64:.1e} vs float64 dense")  # fmt: skip
            base, base_s = op.shape[1], dense_s
    estimate = base_s * (cols / base) ** 3 if base else h.NAN
    gib = cols * cols * 4 / 2**30
    detail = (f"{seconds / estimate:.3g}x the estimate; dense SVD not feasible: n^3 from "
              f"{base} columns ({h.shown(base_s)}) gives ~{estimate / 3600:.3g} h; its float32 "
              f"matrix is {gib:.3g} GiB")  # fmt: skip
    report.record("svdvals", case, f"dense SVD, ESTIMATED by n^3 from {base} columns",
                  estimate, f"not run: ~{estimate / 3600:.3g} h")  # fmt: skip
    report.goal(1, f"svdvals, {case} ({cols} values)" + (" [quick: smaller case]"
                if report.quick else ""), seconds, None if report.quick else 0.5, unit="s",
                anchor=f"dense SVD, est. {h.shown(estimate)}", detail=detail)  # fmt: skip


# ---------------------------------------------------------------------- 2. and 4. a layer
def arpack(report: h.Report, group: str, case: str, op: convop.ConvOperator,
           result: convop.OpNorm, ours: float, tol: float) -> None:  # fmt: skip
    """Goal 4 (info): ``svds(op, k=1)`` through the numpy face, ARPACK's restarts capped to
    about ``--svds-limit`` seconds, checked against opnorm's bracket."""
    what, limit = f"svds(op, k=1) beside opnorm, {case}", report.settings.svds_limit
    with report.section(4, what):
        x = np.random.default_rng(0).standard_normal(op.shape[1]).astype(op.dtype)
        pair = h.timeit(lambda: op.rmatvec(op.matvec(x)), report.repeats, budget=2.0)
        ncv = 20  # svds' default for k=1: min(n, max(2k + 1, 20))
        maxiter = max(1, int(limit / (pair * ncv)))
        v0 = np.random.default_rng(1).standard_normal(min(op.shape)).astype(op.dtype)
        start = time.perf_counter()
        try:
            seconds, values = h.timed(lambda: spla.svds(op, k=1, v0=v0, ncv=ncv, maxiter=maxiter,
                                                        return_singular_vectors=False),
                                      report.repeats, budget=5.0)  # fmt: skip
        except spla.ArpackNoConvergence:
            spent = time.perf_counter() - start
            report.record(group, case, "scipy svds(op, k=1) [ARPACK]", h.NAN,
                          f"no convergence in {maxiter} restarts ({spent:.0f} s)")  # fmt: skip
            report.goal(4, what, anchor="svds k=1", detail=f"skipped: ARPACK did not converge "
                        f"within ~{limit:g} s ({h.shown(pair)} per A^T A)")  # fmt: skip
            return
        sigma = float(values[0])
        report.record(group, case, "scipy svds(op, k=1) [ARPACK, numpy face]", seconds,
                      f"sigma {sigma:.7g}; {ours / seconds:.3g}x: opnorm / svds")  # fmt: skip
        if not result.lower * (1 - tol) <= sigma <= result.upper * (1 + tol):
            raise AssertionError(f"svds' sigma {sigma!r} outside opnorm's bracket "
                                 f"[{result.lower!r}, {result.upper!r}]")  # fmt: skip
        report.goal(4, what, ours / seconds, anchor=f"svds k=1 {h.shown(seconds)}",
                    detail=f"opnorm {h.shown(ours)}; svds sigma {sigma:.7g} inside opnorm's "
                    f"[{result.lower:.7g}, {result.upper:.7g}]; one A^T A {h.shown(pair)}",
                    )  # fmt: skip


def goal_layer_norm(report: h.Report) -> None:
    c, n = (16, 28) if report.quick else (64, 56)
    case, weight = f"{c}->{c}, 3x3, zeros, {n}^2, float32", layer_weight(c)

    def make():
        return convop.conv2d(weight, (c, n, n), padding=1)

    result, warned = bracket(make(), RTOL)
    seconds = timed_opnorm(make, report.repeats)
    detail = (
        f"lower {result.lower:.6g}, upper {result.upper:.6g}, gap "
        f"{result.upper / result.lower - 1:.2e}" + (f"; WARNING: {warned}" if warned else "")
    )
    report.record("opnorm", case, f"convop.opnorm(op, rtol={RTOL:g})", seconds, detail)
    op, ones = make(), torch.ones(c, n, n)
    pair = h.timeit(lambda: op.apply_adjoint(op.apply(ones)), report.repeats)
    report.record("opnorm", case, "one A^T A, torch face (for scale)", pair,
                  f"opnorm = {seconds / pair:.1f} of them")  # fmt: skip
    report.goal(2, f"opnorm rtol={RTOL:g}, {case}" + (" [quick: smaller case]" if report.quick
                else ""), seconds, None if report.quick else 0.2, unit="s", detail=detail,
                )  # fmt: skip
    arpack(report, "opnorm", case, make(), result, seconds, tol=1e-5)


# ---------------------------------------------------------------------- 3. DeepInverse
def power_method_copy(operator: Callable, x0: torch.Tensor, max_iter: int = 100,
                      tol: float = 1e-6, verbose: bool = False) -> torch.Tensor:  # fmt: skip
    """deepinv 0.5's ``power_method``, line for line (only where it does not load): a
    standard normal start, the Rayleigh quotient ``z`` of ``A^T A``, stop when
    ``|z - z_old| < tol`` (an absolute change, though deepinv calls it relative)."""
    x = torch.randn_like(x0)
    x /= torch.linalg.vector_norm(x)
    zold = torch.zeros_like(x)
    for _ in range(max_iter):
        y = operator(x)
        z = torch.vdot(x.flatten(), y.flatten()) / torch.linalg.vector_norm(x) ** 2
        if torch.linalg.vector_norm(z - zold) < tol:
            break
        zold = z
        x = y / torch.linalg.vector_norm(y)
    else:
        warnings.warn("Power iteration: convergence not reached", stacklevel=2)
    return z.real


def deepinv_pairs(report: h.Report, op: convop.ConvOperator, kernel: np.ndarray) -> tuple:
    """``name -> (A, A_adjoint)`` on (1, 1, n, n) tensors as deepinv's ``Blur(filter,
    padding='reflect', use_fft=...)`` computes them (it convolves: the flipped kernel), each
    checked against convop's torch face; convop's own where deepinv's do not load."""
    functional, how = deepinv_functions()
    if functional is None:
        report.note(f"goal 3: deepinv's convolutions unavailable ({how}); the power method "
                    "runs on convop's torch face op.apply / op.apply_adjoint")  # fmt: skip
        return {"convop torch face": (op.apply, op.apply_adjoint)}, "convop's torch face"
    k = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1]))[None, None]
    pairs = {}
    for fwd, adj in (("conv2d", "conv_transpose2d"), ("conv2d_fft", "conv_transpose2d_fft")):
        f, g = getattr(functional, fwd, None), getattr(functional, adj, None)
        if f is None or g is None:
            report.note(f"deepinv has no {fwd} / {adj}")
            continue
        pairs[fwd] = (lambda x, f=f: f(x, k, padding="reflect"),
                      lambda y, g=g: g(y, k, padding="reflect"))  # fmt: skip
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(op.input_shape))[None]
    for name, (fwd, adj) in pairs.items():
        h.check(fwd(x), op.apply(x), f"deepinv {name} forward", 1e-11)
        h.check(adj(x), op.apply_adjoint(x), f"deepinv {name} adjoint", 1e-11)
    return pairs, how


def goal_blur_norm(report: h.Report) -> None:
    n, k, sigma = (128 if report.quick else 512), 15, 2.0
    case, r = f"blur {n}^2, k={k}, sigma={sigma:g}, reflect, float64", report.repeats
    kernel = convop.data.gaussian_kernel(k, sigma)  # sums to 1

    def make():
        return convop.conv2d(kernel[None, None], (1, n, n), padding="same",
                             padding_mode="reflect")  # fmt: skip

    what = (f"opnorm rtol={RTOL:g} / DeepInverse compute_norm tol={DEEPINV_TOL:g}, {case}"
            + (" [quick: smaller case]" if report.quick else ""))  # fmt: skip
    op = make()
    result, warned = bracket(op, RTOL)
    ours, gap = timed_opnorm(make, r), result.upper / result.lower - 1
    report.record("blur", case, f"convop.opnorm(op, rtol={RTOL:g}) [{op.method}]", ours,
                  f"lower {result.lower:.7g}, upper {result.upper:.7g}, gap {gap:.2e}"
                  + (f"; WARNING: {warned}" if warned else ""))  # fmt: skip
    with report.section(3, what):  # DeepInverse: the faster A^T A in its own power method
        pairs, how = deepinv_pairs(report, op, kernel)
        x = torch.from_numpy(np.random.default_rng(4).standard_normal(op.input_shape))[None]
        per_pair = {name: report.record("blur", case, f"one A^T A: deepinv {name} + transpose",
                                        h.timeit(lambda f=f, g=g: g(f(x)), r, budget=3.0))
                    for name, (f, g) in pairs.items()}  # fmt: skip
        best = min(per_pair, key=per_pair.get)
        fwd, adj = pairs[best]
        matrix, power_how = deepinv_module("physics.functional", ("physics/functional/matrix.py",))
        power = getattr(matrix, "power_method", None)
        power_how = f"{'' if power else 'a copy of '}deepinv's power_method ({power_how})"
        report.note(f"goal 3: DeepInverse's anchor is {power_how} on {best} ({how})")
        power = power or power_method_copy
        calls = [0]

        def normal(v):
            calls[0] += 1
            return adj(fwd(v))

        x0 = torch.zeros(1, *op.input_shape, dtype=torch.float64)  # its values are ignored

        def compute_norm():
            torch.manual_seed(0)  # the same start vector every repeat
            return power(normal, x0, max_iter=DEEPINV_MAX_ITER, tol=DEEPINV_TOL, verbose=False)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            z, iterations = float(compute_norm()), calls[0]
            theirs = h.timeit(compute_norm, r, budget=10.0)
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
                      theirs, f"{iterations} A^T A products" + (" (max_iter reached)"
                      if unconverged else "") + f"; sqrt(z) {estimate:.7g}: {side}")  # fmt: skip
        report.goal(3, what, ours / theirs, None if report.quick else 0.1,
                    anchor=f"deepinv compute_norm [{best}] {h.shown(theirs)}",
                    also=gap <= GAP, detail=f"gap ≤ {GAP:.0%} too; convop {h.shown(ours)}, "
                    f"[{result.lower:.7g}, {result.upper:.7g}], gap {gap:.2e}; DeepInverse "
                    f"({iterations} it.) sqrt(z) = {estimate:.7g}, certifies nothing: {side}",
                    )  # fmt: skip
        for name, seconds in per_pair.items():  # Blur's default use_fft=False: conv2d
            if name != best:
                report.record("blur", case, f"DeepInverse compute_norm [{name}] (ESTIMATED)",
                              seconds * iterations, f"not run: {iterations} x its A^T A",
                              )  # fmt: skip
                report.goal(3, f"{what}, against deepinv's {name} pair (estimated)",
                            ours / (seconds * iterations), anchor=f"deepinv compute_norm "
                            f"[{name}], est. {iterations} x its A^T A", detail="not run (too "
                            "slow here): the anchor of the row above is the faster pair",
                            )  # fmt: skip
    arpack(report, "blur", case, make(), result, ours, tol=1e-9)


def options(parser) -> None:
    parser.add_argument("--svds-limit", type=float, default=60.0, metavar="SECONDS",
                        help="goal 4: skip svds beyond about this long (default 60)")  # fmt: skip


SECTIONS = [h.Section("goal 1", goal_svdvals, (1,)),
            h.Section("goals 2 and 4", goal_layer_norm, (2, 4)),
            h.Section("goals 3 and 4", goal_blur_norm, (3, 4))]  # fmt: skip

if __name__ == "__main__":
    sys.exit(h.main(__doc__, SECTIONS, options=options))
