"""Deconvolution (issue 14): ``convop.deconvolution.preconditioner`` and ``solve_tikhonov``.

Usage::

    python benchmarks/bench_deconvolution.py            # full run (~7 min on a quiet machine)
    python benchmarks/bench_deconvolution.py --quick    # smaller cases: a smoke test (~1 min)
    python benchmarks/bench_deconvolution.py --write FILE  # the Markdown section into FILE

Every solve is scipy's ``cg`` on the normal equations ``(A^T A + damp^2 I) x = A^T y``
(``rtol=1e-6``, BLAS on one thread), with ``M=preconditioner(A, damp=damp)`` built inside the
timed call and without it; ``y = A x_true + noise`` (1e-2, fixed seed). The goals (a quick
run measures smaller cases; goals 1 and 3 are then info):

1. 512^2 phantom, 15x15 Gaussian blur (sigma 2.5, 'same'), damp 1e-3: reflect >= 5x fewer
   iterations and >= 3x less time; zeros, replicate >= 2x and >= 2x; circular <= 3
   iterations (unpreconditioned runs capped at ``--cap``: ratios then lower bounds, ``≥``);
2. never worse (iterations and time), damp 1e-2, every padding mode: a 3->3 cross-talk blur
   on 256^2 and a 9x9x9 Gaussian blur on 128^3 (``--n3d``);
3. ``solve_tikhonov`` of a 1024^2 circular blur, numpy in and out: <= 2x one ``op.matvec``,
   normal-equations residual <= 1e-10 (shown: against ``A^T A``; the torch face).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import scipy.sparse.linalg as spla
import torch

import convop
import convop.data
from convop import preconditioner, solve_tikhonov

MODES = ("circular", "reflect", "zeros", "replicate")
RTOL, NOISE = 1e-6, 1e-2  # cg's tolerance; the noise's standard deviation
AGREE, EXACT = 1e-4, 1e-10  # goal 1: solutions' difference shown; goal 3: residual bound
GOAL1 = {"reflect": (5.0, 3.0), "zeros": (2.0, 2.0), "replicate": (2.0, 2.0)}  # fewer, faster
CIRCULAR_MAX, TIKHONOV_BOUND = 3, 2.0  # goal 1, circular: iterations; goal 3: / one matvec


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


def cg(N, b, M, cap: int) -> tuple[np.ndarray, int, bool]:
    """``(x, iterations, converged)`` of cg on ``N x = b``, BLAS on one thread."""
    count = [0]

    def tick(_):
        count[0] += 1

    with convop.solver_threads():
        x, info = spla.cg(N, b, rtol=RTOL, maxiter=cap, M=M, callback=tick)
    return x, count[0], info == 0


def compare(report: h.Report, group: str, case: str, A: convop.ConvOperator, x_true: np.ndarray,
            damp: float, cap: int) -> dict:  # fmt: skip
    """Solve ``A^T A + damp^2 I`` with and without the preconditioner; record the timings."""
    y = A.matvec(x_true.ravel()) + NOISE * np.random.default_rng(0).standard_normal(A.shape[0])

    def normal(v: np.ndarray) -> np.ndarray:
        return A.rmatvec(A.matvec(v)) + damp**2 * v

    n, b, r = A.shape[1], A.rmatvec(y), report.repeats
    N = spla.LinearOperator((n, n), matvec=normal, rmatvec=normal, dtype=np.float64)
    budget = 1.0 if report.quick else 5.0  # a solve longer than this: timed once
    P = preconditioner(A, damp=damp)
    setup = h.timeit(lambda: preconditioner(A, damp=damp).matvec(b), r, budget=2.0)
    P.matvec(b)  # the attributes chosen on first use
    report.record(
        group,
        case,
        "preconditioner: build + first apply",
        setup,
        f"beta {P.beta:.3g}, boundaries {P.boundaries}, exact {P.exact}, grid {P.grid}",
    )
    v = np.random.default_rng(5).standard_normal(n)
    with convop.solver_threads():
        per_n = report.record(
            group,
            case,
            "one N = A^T A + damp^2 I product",
            h.timeit(lambda: N.matvec(v), r, budget=1.0),
            "numpy face",
        )
        per_p = h.timeit(lambda: P.matvec(v), r, budget=1.0)
    report.record(group, case, "one application of the preconditioner", per_p,
                  f"{per_p / per_n:.2g}x one N product")  # fmt: skip
    c = {
        "y": y,
        "beta": P.beta,
        "setup": setup,
        "boundaries": "/".join(P.boundaries),
        "exact": P.exact,
        "residual": lambda x: np.linalg.norm(N.matvec(x) - b) / np.linalg.norm(b),
    }
    for key, label, make in (("p", "cg, M=preconditioner(A, damp) (built in the call)",
                              lambda: preconditioner(A, damp=damp)),
                             ("0", "cg, no preconditioner", lambda: None)):  # fmt: skip
        t, (x, it, ok) = h.timed(lambda make=make: cg(N, b, make(), cap), r, budget)
        report.record(group, case, label, t, f"{it} iterations" + (
            "" if ok else f": CAP {cap} REACHED"))  # fmt: skip
        c.update({f"t_{key}": t, f"x_{key}": x, f"it_{key}": it, f"ok_{key}": ok})
    c["agree"] = float(np.linalg.norm(c["x_p"] - c["x_0"]) / np.linalg.norm(c["x_0"]))
    c["sign"] = "" if c["ok_0"] else "≥ "  # a capped run's ratios are lower bounds
    c["fewer"], c["faster"] = c["it_0"] / max(c["it_p"], 1), c["t_0"] / c["t_p"]
    its = [f"{c[f'it_{k}']}" + ("" if c[f"ok_{k}"] else " (cap)") for k in "p0"]
    c["detail"] = (f"iterations {' / '.join(its)} ({c['sign']}{c['fewer']:.3g}x fewer), time "
                   f"{h.shown(c['t_p'])} / {h.shown(c['t_0'])} ({c['sign']}{c['faster']:.3g}x "
                   f"less); beta {c['beta']:.3g}, boundaries {c['boundaries']}, exact "
                   f"{c['exact']}, setup {h.shown(setup)}; solutions differ by {c['agree']:.1e}"
                   + ("" if c["agree"] <= AGREE or group != "blur" else f" (> {AGREE:g})")
                   + f"; residuals {c['residual'](c['x_p']):.1e} / "
                   f"{c['residual'](c['x_0']):.1e}")  # fmt: skip
    return c


# ---------------------------------------------------------------------- 1. the 512^2 blur
def goal_blur(report: h.Report, mode: str) -> None:
    n, damp = (64 if report.quick else 512), 1e-3
    case = f"blur {n}^2, k=15, sigma=2.5, {mode}, damp {damp:g}"
    kernel = convop.data.gaussian_kernel(15, 2.5)
    A = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode=mode)
    c = compare(report, "blur", case, A, convop.data.phantom(n), damp, report.settings.cap)
    what = case + (" [quick: smaller case]" if report.quick else "")
    if mode == "circular":  # the exact solution is known
        exact = solve_tikhonov(A, c["y"], damp=damp)
        e_p, e_0 = (np.linalg.norm(c[x] - exact) / np.linalg.norm(exact) for x in ("x_p", "x_0"))
        report.goal(1, what, c["it_p"], None if report.quick else CIRCULAR_MAX, unit=" it.",
                    anchor="cg without M", also=c["ok_p"], detail=f"{c['detail']}; vs the "
                    f"exact solve_tikhonov: {e_p:.1e} (with M), {e_0:.1e} (without)")  # fmt: skip
        return
    fewer, faster = GOAL1[mode]
    report.goal(1, what, c["fewer"], None if report.quick else fewer, at_least=True,
                anchor="cg without M: iterations", also=c["ok_p"] and c["faster"] >= faster,
                detail=f"and ≥ {faster:g}x less time; {c['detail']}")  # fmt: skip


# ---------------------------------------------------------------------- 2. never worse
def never_worse(report: h.Report, group: str, label: str, make: Callable, x_true: np.ndarray,
                cap: int) -> None:  # fmt: skip
    for mode in MODES:
        case = f"{label}, {mode}, damp 0.01"
        with report.section(2, case):
            c = compare(report, group, case, make(mode), x_true, 1e-2, cap)
            report.goal(2, case, c["faster"], 1.0, at_least=True, anchor="cg without M: time",
                        also=c["ok_p"] and c["it_p"] <= c["it_0"],
                        detail=f"and iterations ≤ without; {c['detail']}")  # fmt: skip


def goal_channels(report: h.Report) -> None:
    n = 64 if report.quick else report.settings.n_rgb
    weight = (0.7 * np.eye(3) + 0.1)[:, :, None, None] * gaussian(9, 2.0, 2)
    image = convop.data.phantom(n)
    never_worse(report, "channels", f"3->3 cross-talk blur {n}^2, 9x9, sigma=2",
                lambda mode: convop.conv2d(weight, (3, n, n), padding="same", padding_mode=mode),
                np.stack([image, image.T, image[::-1]]), report.settings.cap)  # fmt: skip


def goal_volume(report: h.Report) -> None:
    n = 32 if report.quick else report.settings.n3d
    kernel = gaussian(9, 1.5, 3)[None, None]
    never_worse(report, "3-D", f"3-D blur {n}^3, 9x9x9, sigma=1.5",
                lambda mode: convop.conv3d(kernel, (1, n, n, n), padding="same",
                                           padding_mode=mode),
                blob3d(n), report.settings.cap3d)  # fmt: skip


# ---------------------------------------------------------------------- 3. solve_tikhonov
def goal_tikhonov(report: h.Report) -> None:
    r, n, damp = report.repeats, (256 if report.quick else 1024), 1e-2
    case = f"circular blur {n}^2, k=15, sigma=2.5, damp {damp:g}"
    kernel = convop.data.gaussian_kernel(15, 2.5)
    A = convop.conv2d(kernel[None, None], (1, n, n), padding=7, padding_mode="circular")
    x_true = convop.data.phantom(n).ravel()
    y = A.matvec(x_true) + NOISE * np.random.default_rng(0).standard_normal(A.shape[0])
    solve, x = h.timed(lambda: solve_tikhonov(A, y, damp=damp), r, 5.0)
    if x.shape != x_true.shape or x.dtype != np.float64:
        raise AssertionError(f"solve_tikhonov returned {x.shape} {x.dtype}")
    res = float(np.linalg.norm(A.rmatvec(A.matvec(x) - y) + damp**2 * x)
                / np.linalg.norm(A.rmatvec(y)))  # fmt: skip
    report.record("tikhonov", case, "solve_tikhonov(op, y, damp) [numpy]", solve,
                  f"normal-equations residual {res:.1e}")  # fmt: skip
    matvec = report.record("tikhonov", case, "one op.matvec(x) [numpy]",
                           h.timeit(lambda: A.matvec(x_true), r))  # fmt: skip
    normal = report.record("tikhonov", case, "one op.rmatvec(op.matvec(x)) [numpy]",
                           h.timeit(lambda: A.rmatvec(A.matvec(x_true)), r))  # fmt: skip
    t, ty = torch.from_numpy(x_true.reshape(A.input_shape)), torch.from_numpy(y)
    torch_solve, tx = h.timed(lambda: solve_tikhonov(A, ty.reshape(A.output_shape), damp=damp),
                              r, 5.0)  # fmt: skip
    torch_diff = float(np.abs(tx.numpy().ravel() - x).max() / np.abs(x).max())
    report.record("tikhonov", case, "solve_tikhonov(op, y, damp) [torch]", torch_solve,
                  f"equals the numpy face's to {torch_diff:.1e}")  # fmt: skip
    apply = report.record("tikhonov", case, "one op.apply(x) [torch]",
                          h.timeit(lambda: A.apply(t), r))  # fmt: skip
    report.goal(3, f"solve_tikhonov / one matvec, {case}" + (" [quick: smaller case]"
                if report.quick else ""), solve / matvec, None if report.quick else
                TIKHONOV_BOUND, anchor=f"one op.matvec {h.shown(matvec)}",
                also=res <= EXACT and torch_diff <= 1e-12, detail=f"and exact: "
                f"normal-equations residual {res:.1e} (≤ {EXACT:g}" + ("" if res <= EXACT else
                ": NOT EXACT") + f"); solve {h.shown(solve)}")  # fmt: skip
    report.goal(3, f"solve_tikhonov / one A^T A, {case}", solve / normal,
                anchor=f"one A^T A {h.shown(normal)}", detail="numpy face")  # fmt: skip
    report.goal(3, f"solve_tikhonov / one op.apply, torch face, {case}", torch_solve / apply,
                anchor=f"one op.apply {h.shown(apply)}",
                detail=f"equals the numpy face's to {torch_diff:.1e}")  # fmt: skip


def options(parser) -> None:
    parser.add_argument("--cap", type=int, default=20000,
                        help="cg's maxiter, goals 1 and 2 (default 20000)")  # fmt: skip
    parser.add_argument("--cap3d", type=int, default=20000,
                        help="cg's maxiter, goal 2's 3-D case (default 20000)")  # fmt: skip
    parser.add_argument("--n3d", type=int, default=128, help="goal 2's 3-D size (default 128)")
    parser.add_argument("--n-rgb", type=int, default=256,
                        help="goal 2's 3-channel size (default 256)")  # fmt: skip


SECTIONS = [*(h.Section(f"goal 1, {mode}", lambda report, mode=mode: goal_blur(report, mode),
                        (1,)) for mode in MODES),
            h.Section("goal 2, 3 channels", goal_channels, (2,)),
            h.Section("goal 2, 3-D", goal_volume, (2,)),
            h.Section("goal 3", goal_tikhonov, (3,))]  # fmt: skip

if __name__ == "__main__":
    sys.exit(h.main(__doc__, SECTIONS, options=options, repeats=(3, 5)))
