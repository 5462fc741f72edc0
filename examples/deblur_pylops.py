"""Deblurring with PyLops solvers on ``op.to_pylops()``: Laplacian Tikhonov, TV and FISTA.

The problem of ``deblur_lsqr.py``: the Shepp-Logan phantom (256x256) blurred by a 9x9
Gaussian (sigma 1.5 pixels) with ``'same'`` reflect padding, plus Gaussian noise of standard
deviation 0.002 (fixed seed). ``op.to_pylops()`` turns the convop operator into a
``pylops.LinearOperator`` with ``dims = dimsd = (1, n, n)``, so it composes with PyLops'
regularisers, which act on the same N-d model:

* smooth (L2) regularisation: ``pylops.optimization.leastsquares.regularized_inversion``
  with a ``pylops.Laplacian`` on the image axes, i.e. ``min ||A x - b||^2 + eps^2 ||L x||^2``
  solved by scipy's ``lsqr`` on the stacked operator;
* sparsity-promoting (L1) regularisation: anisotropic total variation with
  ``pylops.optimization.sparsity.splitbregman`` with ``pylops.FirstDerivative`` along each
  image axis. PyLops documents its model as ``mu/2 ||A x - b||^2 + eps (||D_y x||_1 +
  ||D_x x||_1)``; its steps (penalty ``eps``, threshold ``eps``) converge to the minimiser of
  ``mu/2 ||A x - b||^2 + eps^2 (||D_y x||_1 + ||D_x x||_1)`` (convop's test suite checks the
  same for ``mu = 1``), so ``eps`` here is the square root of the TV weight. TV
  suits the piecewise-constant phantom: it keeps the edges sharp where the Laplacian smears
  them and leaves ringing;
* an L1 penalty on the image itself, ``min ||A x - b||^2 + eps ||x||_1`` (the phantom is zero
  on more than half of its pixels, outside the head), by
  ``pylops.optimization.sparsity.fista`` in 100 iterations (the L1 term does not tame the
  noise inside the head, so the iteration count regularises too, as for any Landweber-type
  method). Its step is ``alpha = 1 / L`` with ``L = upper**2`` from ``convop.opnorm(A)``, a
  certified upper bound on ``||A||_2^2``, the Lipschitz constant of the data term's gradient;
  without ``alpha`` PyLops estimates ``lambda_max(A^T A)`` itself (ARPACK on numpy arrays),
  from below and with no guarantee. The script prints the bracket
  ``lower <= ||A||_2 <= upper`` and ARPACK's estimate.

Each method runs for a small sweep of its regularisation weight ``eps`` (the best value is
picked against the true image, an oracle a real problem does not have). The script prints a
table (method, eps, PSNR, iterations, time) and writes ``deblur_pylops.png`` to ``--out``: the
true, blurred and best reconstructed images side by side with PSNRs and times, a line profile
through all of them and the PSNRs as bars. Checks: every method beats the blurred image's
PSNR, TV beats the Laplacian, and opnorm's bracket is at most 0.1 % wide and lies above
ARPACK's estimate. ``--quick`` runs a 96x96 phantom with fewer TV iterations.

Usage::

    python examples/deblur_pylops.py [--out DIR] [--quick]
"""

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pylops
from matplotlib.figure import Figure
from pylops.optimization.leastsquares import regularized_inversion
from pylops.optimization.sparsity import fista, splitbregman

import convop
from convop.data import gaussian_kernel, phantom, psnr

# the problem of deblur_lsqr.py: the phantom (256x256, 96x96 with --quick), a 9x9 Gaussian
# blur of sigma 1.5 pixels, noise of standard deviation 0.002 (image range [0, 1]), seed 0
SIZE, QUICK_SIZE = 256, 96
SIGMA = 1.5
BLUR = gaussian_kernel(9, SIGMA)  # (9, 9), sums to 1
NOISE = 0.002
SEED = 0
LAPLACIAN_EPS = (0.003, 0.01, 0.03)  # weight of ||L x||_2
TOL = 1e-6  # lsqr's atol = btol for the Laplacian
TV_EPS = (0.1, 0.2, 0.4)  # weight of the TV term
TV_MU = 100.0  # weight of the data term
TV_OUTER, QUICK_TV_OUTER = 100, 50  # split-Bregman iterations
TV_INNER_LSQR = 5  # lsqr iterations per split-Bregman step
FISTA_EPS = (0.001, 0.003, 0.01)  # weight of ||x||_1
FISTA_ITER = 100  # FISTA iterations
NORM_RTOL = 1e-3  # opnorm's relative width of the bracket on ||A||_2


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


class Result(NamedTuple):
    method: str
    eps: float
    x: np.ndarray  # (n*n,) reconstruction
    iterations: str  # how many, in the method's own terms
    seconds: float


def laplacian(P: pylops.LinearOperator, b: np.ndarray, eps: float) -> Result:
    """Tikhonov with a Laplacian: regularized_inversion (lsqr on [A; eps L])."""
    L = pylops.Laplacian(P.dims, axes=(-2, -1), dtype=P.dtype)  # on the (1, n, n) model
    start = time.perf_counter()
    with convop.solver_threads():  # numpy's BLAS on one thread: no fight with torch
        x, _, itn, _, _ = regularized_inversion(P, b, [L], epsRs=[eps], atol=TOL, btol=TOL)
    return Result("Laplacian", eps, x, f"{itn} lsqr", time.perf_counter() - start)


def total_variation(P: pylops.LinearOperator, b: np.ndarray, eps: float, outer: int) -> Result:
    """Anisotropic TV by split Bregman, one FirstDerivative per image axis."""
    D = [
        pylops.FirstDerivative(P.dims, axis=axis, kind="forward", dtype=P.dtype)
        for axis in (-2, -1)
    ]
    start = time.perf_counter()
    with convop.solver_threads():
        x, itn, _ = splitbregman(
            P,
            b,
            D,
            niter_outer=outer,
            niter_inner=1,
            mu=TV_MU,
            epsRL1s=[eps, eps],
            tol=1e-4,
            tau=1.0,
            iter_lim=TV_INNER_LSQR,  # passed on to lsqr
            damp=1e-4,
        )
    return Result("TV", eps, x, f"{itn}x{TV_INNER_LSQR} lsqr", time.perf_counter() - start)


def l1_fista(P: pylops.LinearOperator, b: np.ndarray, eps: float, alpha: float) -> Result:
    """An L1 penalty on the image by FISTA, with the step ``alpha`` (1 / L)."""
    start = time.perf_counter()
    with convop.solver_threads():
        x, itn, _ = fista(P, b, niter=FISTA_ITER, eps=eps, alpha=alpha, tol=0.0)
    return Result("FISTA", eps, x, f"{itn} fista", time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument("--quick", action="store_true", help="a smaller image, fewer TV steps")
    args = parser.parse_args()
    n = QUICK_SIZE if args.quick else SIZE
    A = convop.conv2d(BLUR[None, None], (1, n, n), padding="same", padding_mode="reflect")
    P = A.to_pylops()  # dims = dimsd = (1, n, n): PyLops takes and gives images
    truth = phantom(n)  # (n, n), values in [0, 1]
    noise = np.random.default_rng(SEED).normal(scale=NOISE, size=P.dimsd)  # (1, n, n)
    b = (P @ truth[None] + noise).ravel()  # (n*n,): the solvers take flat data
    blurred = psnr(b, truth)
    print(f"P: {P}")
    print(
        f"phantom {n}x{n}, {BLUR.shape[0]}x{BLUR.shape[1]} Gaussian blur (sigma {SIGMA}), "
        f"noise sigma {NOISE}: blurred PSNR {blurred:.2f} dB"
    )
    # FISTA's step: alpha = 1 / L, L the Lipschitz constant of the gradient A^T (A x - b),
    # i.e. ||A||_2^2. Too small an L (a step too long) can make FISTA diverge; too large an L
    # crawls. opnorm's upper bound is certified (the norm is at most it, round-off included);
    # PyLops, given no alpha, would estimate lambda_max(A^T A) by ARPACK (power iterations on
    # GPU arrays), which approaches it from below and never says how close it is.
    start = time.perf_counter()
    norm = convop.opnorm(A, rtol=NORM_RTOL)
    t_norm = time.perf_counter() - start
    start = time.perf_counter()
    with convop.solver_threads():
        arpack = float(np.sqrt(abs((P.H @ P).eigs(neigs=1, symmetric=True)[0])))
    t_arpack = time.perf_counter() - start
    alpha = 1.0 / norm.upper**2
    print(
        f"||A||_2 in [{norm.lower:.6f}, {norm.upper:.6f}] (convop.opnorm, {t_norm:.2f} s); "
        f"ARPACK's estimate {arpack:.6f} ({t_arpack:.2f} s); FISTA step 1/upper^2 = {alpha:.6f}"
    )
    print()
    outer = QUICK_TV_OUTER if args.quick else TV_OUTER  # split-Bregman steps
    sweeps = {
        "Laplacian": [laplacian(P, b, eps) for eps in LAPLACIAN_EPS],
        "TV": [total_variation(P, b, eps, outer) for eps in TV_EPS],
        "FISTA": [l1_fista(P, b, eps, alpha) for eps in FISTA_EPS],
    }
    best = [max(results, key=lambda r: psnr(r.x, truth)) for results in sweeps.values()]
    print("  method     eps      PSNR       iterations     time")
    print("  ---------  -------  ---------  -------------  -------")
    print(f"  {'blurred':9}  {'':7}  {blurred:6.2f} dB")
    for results in sweeps.values():
        for r in results:
            mark = "  <- best" if any(r is chosen for chosen in best) else ""
            print(
                f"  {r.method:9}  {r.eps:<7g}  {psnr(r.x, truth):6.2f} dB  {r.iterations:>13}"
                f"  {r.seconds:5.2f} s{mark}"
            )
    print()

    lap, tv, l1 = (psnr(r.x, truth) for r in best)
    check(
        lap > blurred, f"Laplacian Tikhonov beats the blurred image: {lap:.2f} > {blurred:.2f} dB"
    )
    check(tv > blurred, f"TV beats the blurred image: {tv:.2f} > {blurred:.2f} dB")
    check(l1 > blurred, f"L1 by FISTA beats the blurred image: {l1:.2f} > {blurred:.2f} dB")
    check(
        tv > lap,
        f"TV beats Laplacian Tikhonov on the piecewise-constant phantom by {tv - lap:.2f} dB",
    )
    check(
        norm.gap <= NORM_RTOL and arpack <= norm.upper,
        f"opnorm's bracket on ||A||_2 is {norm.gap:.1e} wide and its upper end is above "
        f"ARPACK's estimate (by {norm.upper / arpack - 1:.1e})",
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "deblur_pylops.png"
    plot(truth, b, best).savefig(path, dpi=110)
    print(f"figure: {path}")
    print("All checks passed.")


def plot(truth: np.ndarray, b: np.ndarray, best: list[Result]) -> Figure:
    n = truth.shape[0]
    row = round(0.45 * (n - 1))  # through the dark ellipses and a small bright one
    images = ("truth", "blurred", "Laplacian", "TV", "FISTA")
    fig = Figure(figsize=(17, 7.5), layout="tight")
    axes = fig.subplot_mosaic(
        [list(images), ["profile", "profile", "profile", "bars", "bars"]], height_ratios=(1.15, 1)
    )
    curves = [("true image", truth.ravel(), None), ("blurred + noise", b, None)]
    curves += [(f"{r.method}, eps={r.eps:g}", r.x, r) for r in best]
    for key, (title, image, result) in zip(images, curves):
        ax = axes[key]
        ax.imshow(image.reshape(n, n), cmap="gray", vmin=0, vmax=1)
        ax.axhline(row, color="tab:red", lw=0.6, alpha=0.6)
        if key != "truth":
            title += f"\nPSNR {psnr(image, truth):.2f} dB"
        if result is not None:
            title += f", {result.seconds:.1f} s"
        ax.set_title(title, fontsize=10)
        ax.axis("off")

    ax = axes["profile"]
    styles = (
        dict(color="k", ls="--", lw=1.0, zorder=5),  # the truth on top, dashed
        dict(color="0.6", lw=1.2),
        dict(color="tab:blue", lw=1.2),
        dict(color="tab:orange", lw=1.2),
        dict(color="tab:green", lw=1.2),
    )
    for (title, image, _), style in zip(curves, styles):
        ax.plot(image.reshape(n, n)[row], **style, label=title)
    ax.set_xlim(0, n - 1)
    ax.set_xlabel("column")
    ax.set_ylabel("intensity")
    ax.set_title(f"profile along row {row} (red line)", fontsize=10)
    ax.legend(fontsize=9, ncol=2, loc="upper center")

    ax = axes["bars"]
    labels = ["blurred", *(r.method for r in best)]
    values = [psnr(b, truth), *(psnr(r.x, truth) for r in best)]
    bars = ax.bar(labels, values, color=["0.6", "tab:blue", "tab:orange", "tab:green"])
    ax.bar_label(bars, fmt="%.1f dB")
    ax.set_ylabel("PSNR (dB)")
    ax.set_ylim(0, max(values) * 1.15)
    ax.set_title("PSNR", fontsize=10)
    return fig


if __name__ == "__main__":
    main()
