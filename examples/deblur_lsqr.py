"""Deblurring an image with scipy's ``lsqr`` and ``lsmr`` on a convop operator.

The Shepp-Logan phantom (``convop.data.phantom``, 256x256) is blurred by a 9x9 Gaussian
(sigma 1.5 pixels) with ``'same'`` reflect padding, and Gaussian noise of standard deviation
0.002 (0.2 % of the image's [0, 1] range, fixed seed) is added. The blur is the operator

    A = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")

whose ``rmatvec`` is the exact adjoint (the reflected halo folded back onto its source
pixels), so scipy's solvers use it as it is. Both solve the Tikhonov problem

    min_x ||A x - b||^2 + damp^2 ||x||^2

for a sweep of ``damp`` values; the script prints a table (damp, PSNR, iterations, time)
and keeps the best reconstruction of each solver.

Residual history: ``lsqr`` and ``lsmr`` take no callback, so the history is recorded by
re-running the solver with ``iter_lim=k`` (``maxiter=k`` for ``lsmr``) for a geometric grid of
``k``. Both solvers are deterministic, so the re-run's last iterate *is* the k-th iterate of the
full run (checked at ``k = iterations``); the residuals are computed exactly from it, not taken
from the solvers' running estimates. This costs about three solves and is done for the best
``damp`` only. (Wrapping the operator to log ``||A x - b||`` from its ``matvec`` calls does
not work: the solvers apply ``A`` to search directions, never to their iterates.) Two
residuals are plotted: the damped residual ``sqrt(||b - A x||^2 + damp^2 ||x||^2)``, which
``lsqr`` minimises over its Krylov subspace, and the normal-equations residual
``||A^H (b - A x) - damp^2 x||``, which ``lsmr`` minimises; each decreases monotonically for
its own solver.

The figure (``deblur_lsqr.png`` in ``--out``) shows the blurred noisy image, the best ``lsqr``
and ``lsmr`` reconstructions, both residual histories and PSNR against ``damp``. Checks: the
best PSNR of each solver beats the blurred image's by more than 3 dB, the two solvers agree
to 0.05 dB (run to scipy's default tolerance ``atol = btol = 1e-6``, both reach the same
Tikhonov solution; ``lsmr`` in fewer iterations), and each minimised residual decreases
monotonically. At the best ``damp``, ``cg`` on the normal equations with
``convop.preconditioner`` (matched to the reflect padding), by ``convop.pcg``, reaches the
same solution in far fewer iterations than either: the script prints how many it saved.
``--quick`` runs the same problem on a 96x96 phantom.

Usage::

    python examples/deblur_lsqr.py [--out DIR] [--quick]
"""

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from scipy.sparse.linalg import LinearOperator, lsmr, lsqr

import convop
from convop.data import gaussian_kernel, phantom, psnr

SIZE, QUICK_SIZE = 256, 96
KERNEL_SIZE, SIGMA = 9, 1.5  # the Gaussian blur: kernel size and sigma, in pixels
NOISE, SEED = 0.002, 0  # noise standard deviation (image range [0, 1]) and its seed
DAMPS = (0.005, 0.01, 0.02, 0.05, 0.1)  # Tikhonov damp sweep
TOL = 1e-6  # atol = btol of both solvers (scipy's default)
HISTORY_POINTS = 14  # re-runs per residual history (a geometric grid of iteration counts)
MARGIN_DB = 3.0  # the deblurred image must beat the blurred one by this much
SOLVERS = {"lsqr": (lsqr, "iter_lim"), "lsmr": (lsmr, "maxiter")}
# lsmr's smaller markers sit inside lsqr's where the two agree
STYLE = {"lsqr": dict(marker="o", ms=7, ls="-"), "lsmr": dict(marker="s", ms=3.5, ls="--")}


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def blur_problem(n: int) -> tuple[convop.ConvOperator, np.ndarray, np.ndarray]:
    """The blur operator, the true image (n, n) and the blurred noisy data (n*n,)."""
    truth = phantom(n)  # (n, n), values in [0, 1]
    kernel = gaussian_kernel(KERNEL_SIZE, SIGMA)  # (9, 9), sums to 1
    A = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    rng = np.random.default_rng(SEED)
    b = A @ truth.ravel() + NOISE * rng.standard_normal(A.shape[0])  # (n*n,)
    return A, truth, b


class Solve(NamedTuple):
    x: np.ndarray  # (n*n,) reconstruction
    iterations: int
    seconds: float


class History(NamedTuple):
    iterations: np.ndarray  # (k,) iteration counts of the re-runs
    damped: np.ndarray  # (k,) sqrt(||b - A x||^2 + damp^2 ||x||^2) / ||b||
    normal: np.ndarray  # (k,) ||A^H (b - A x) - damp^2 x|| / ||A^H b||


def solve(
    name: str, A: LinearOperator, b: np.ndarray, damp: float, iterations: int | None = None
) -> Solve:
    """Run ``lsqr`` or ``lsmr`` to tolerance TOL, or for at most ``iterations`` steps."""
    function, limit = SOLVERS[name]
    start = time.perf_counter()
    with convop.solver_threads():  # numpy's BLAS on one thread: no fight with torch
        result = function(A, b, damp=damp, atol=TOL, btol=TOL, **{limit: iterations})
    return Solve(result[0], int(result[2]), time.perf_counter() - start)


def normal_cg(A, b: np.ndarray, damp: float, *, precondition: bool) -> Solve:
    """``cg`` on ``(A^H A + damp^2 I) x = A^H b`` (``convop.pcg``), preconditioned or not.

    The preconditioner (``convop.preconditioner``, an approximate inverse matched to the
    reflect padding, by FFTs) is built inside the timing. Stops at a normal-equations
    residual of TOL relative.
    """
    start = time.perf_counter()
    result = convop.pcg(A, b, damp, M="auto" if precondition else None, rtol=TOL)
    return Solve(result.x, result.iterations, time.perf_counter() - start)


def history(name: str, A: LinearOperator, b: np.ndarray, damp: float, final: Solve) -> History:
    """Relative residuals of the iterates, by re-running with growing iteration limits.

    Both are 1 at x = 0, the solvers' starting point.
    """
    steps = np.unique(np.geomspace(1, final.iterations, HISTORY_POINTS).round().astype(int))
    damped, normal = [], []
    for k in steps:
        x = solve(name, A, b, damp, int(k)).x
        r = b - A @ x
        damped.append(np.sqrt(r @ r + damp**2 * (x @ x)))
        normal.append(np.linalg.norm(A.H @ r - damp**2 * x))
    # The last re-run must reproduce the full run: the history is the full run's.
    np.testing.assert_allclose(x, final.x, rtol=1e-12, atol=1e-12)
    scale_damped, scale_normal = np.linalg.norm(b), np.linalg.norm(A.H @ b)
    return History(steps, np.array(damped) / scale_damped, np.array(normal) / scale_normal)


def is_decreasing(values: np.ndarray) -> bool:
    """Non-increasing up to round-off."""
    return bool(np.all(np.diff(values) <= 1e-9 * values[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SIZE}x{QUICK_SIZE} image")
    args = parser.parse_args()
    A, truth, b = blur_problem(QUICK_SIZE if args.quick else SIZE)
    n = truth.shape[0]
    blurred = psnr(b, truth)
    print(f"A: {A}")
    print(
        f"phantom {n}x{n}, {KERNEL_SIZE}x{KERNEL_SIZE} Gaussian blur (sigma {SIGMA}), "
        f"noise sigma {NOISE}: blurred PSNR {blurred:.2f} dB"
    )
    print()
    print("  damp   |    lsqr: PSNR   iters   time  |    lsmr: PSNR   iters   time")
    print("  -------+-------------------------------+------------------------------")
    table: dict[str, list[Solve]] = {name: [] for name in SOLVERS}
    for damp in DAMPS:
        row = f"  {damp:<6g} |"
        for name in SOLVERS:
            result = solve(name, A, b, damp)
            table[name].append(result)
            quality = psnr(result.x, truth)
            row += f"  {quality:10.2f} dB {result.iterations:5d} {result.seconds:5.2f} s |"
        print(row.rstrip(" |"))
    print()

    best: dict[str, tuple[float, Solve]] = {}
    for name, results in table.items():
        i = int(np.argmax([psnr(r.x, truth) for r in results]))
        best[name] = (DAMPS[i], results[i])
    histories = {name: history(name, A, b, damp, result) for name, (damp, result) in best.items()}
    for name, (damp, result) in best.items():
        hist = histories[name]
        print(
            f"{name}: best damp {damp:g} (PSNR {psnr(result.x, truth):.2f} dB); history from "
            f"{len(hist.iterations)} re-runs, iterations 1..{hist.iterations[-1]}: relative "
            f"damped residual {hist.damped[0]:.1e} -> {hist.damped[-1]:.1e}, normal "
            f"{hist.normal[0]:.1e} -> {hist.normal[-1]:.1e}"
        )

    damp, reference = best["lsqr"]
    plain, preconditioned = (normal_cg(A, b, damp, precondition=p) for p in (False, True))
    saved = best["lsmr"][1].iterations - preconditioned.iterations
    print(
        f"cg on the normal equations at damp {damp:g}: {plain.iterations} iterations "
        f"({plain.seconds:.2f} s) plain, {preconditioned.iterations} "
        f"({preconditioned.seconds:.2f} s) with convop.preconditioner: {saved} fewer than lsmr, "
        f"{reference.iterations - preconditioned.iterations} fewer than lsqr"
    )
    gap = abs(psnr(preconditioned.x, truth) - psnr(reference.x, truth))
    check(gap < 0.05, f"preconditioned cg reaches lsqr's Tikhonov solution ({gap:.3f} dB apart)")
    check(saved > 0, f"the preconditioner saves iterations: {preconditioned.iterations} < lsmr's")

    for name, (_, result) in best.items():
        gain = psnr(result.x, truth) - blurred
        check(
            gain > MARGIN_DB,
            f"best {name} beats the blurred image by {gain:.2f} dB > {MARGIN_DB} dB",
        )
    gap = abs(psnr(best["lsqr"][1].x, truth) - psnr(best["lsmr"][1].x, truth))
    check(
        gap < 0.05, f"lsqr and lsmr reach the same Tikhonov solution: PSNRs differ by {gap:.3f} dB"
    )
    check(
        is_decreasing(histories["lsqr"].damped), "lsqr's damped residual decreases monotonically"
    )
    check(
        is_decreasing(histories["lsmr"].normal), "lsmr's normal residual decreases monotonically"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "deblur_lsqr.png"
    plot(truth, b, best, histories, table).savefig(path, dpi=110)
    print(f"figure: {path}")
    print("All checks passed.")


def plot(
    truth: np.ndarray,
    b: np.ndarray,
    best: dict[str, tuple[float, Solve]],
    histories: dict[str, History],
    table: dict[str, list[Solve]],
) -> Figure:
    n = truth.shape[0]
    fig = Figure(figsize=(14, 7.5), layout="tight")
    axes = fig.subplot_mosaic(
        [["truth"] * 3 + ["blurred"] * 3 + ["lsqr"] * 3 + ["lsmr"] * 3,
         ["damped"] * 4 + ["normal"] * 4 + ["psnr"] * 4],
        height_ratios=(1.1, 1),
    )  # fmt: skip
    images = {"truth": (truth, "true image"), "blurred": (b, "blurred + noise")}
    for name, (damp, result) in best.items():
        images[name] = (result.x, f"best {name}, damp={damp:g}, {result.iterations} iterations")
    for key, (image, title) in images.items():
        axes[key].imshow(image.reshape(n, n), cmap="gray", vmin=0, vmax=1)
        quality = "" if key == "truth" else f"\nPSNR {psnr(image, truth):.2f} dB"
        axes[key].set_title(title + quality, fontsize=10)
        axes[key].axis("off")

    for key, title in (
        ("damped", "damped residual  sqrt(|b - Ax|² + damp²|x|²) / |b|"),
        ("normal", "normal-equations residual  |Aᴴ(b - Ax) - damp² x| / |Aᴴb|"),
    ):
        ax = axes[key]
        for name, hist in histories.items():
            label = f"{name} (damp={best[name][0]:g})"
            ax.loglog(hist.iterations, getattr(hist, key), **STYLE[name], label=label)
        ax.set_xlabel("iteration (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()

    ax = axes["psnr"]
    for name, results in table.items():
        ax.semilogx(DAMPS, [psnr(r.x, truth) for r in results], **STYLE[name], label=name)
    ax.axhline(psnr(b, truth), color="0.4", ls="--", label="blurred + noise")
    ax.set_xlabel("damp")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("PSNR against Tikhonov damp", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


if __name__ == "__main__":
    main()
