"""``convop demo``: deblur a photograph (or the phantom) three ways; a table and a figure."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import constructors
from .._shared.memory import check_memory
from ..data import gaussian_kernel, phantom, psnr
from ..noise import estimate_noise
from ..regularization import choose_damping
from ..solvers import pcg, total_variation
from ..solvers.tv import INNER_LSQR as TV_INNER
from ._deblur import TV_WEIGHT_PER_VARIANCE
from ._parser import (
    MAX_DAMP,
    CommandError,
    concerning,
    damp_value,
    fraction,
    output_path,
    positive_float,
    positive_int,
)
from ._solve import lsqr, timed

#: Bytes per pixel the demo takes at most: the phantom's grids, the solvers' vectors (float64).
DEMO_BYTES_PER_PIXEL = 8 * 32

NAME = "demo"
HELP = (
    "deblur a photo three ways (Tikhonov by lsqr and by preconditioned cg, total variation), "
    "print PSNR, write a figure"
)

DESCRIPTION = """\
Deblurring showcase: scikit-image's camera photo (a centre crop; pip install scikit-image,
else the built-in Shepp-Logan phantom, or --image phantom), blurred by a Gaussian through
convop.conv2d(..., padding="same", padding_mode="reflect"), plus Gaussian noise (seed 0).
It is restored with Tikhonov damping chosen by the discrepancy principle
(convop.choose_damping), solved by scipy's lsqr on the lazy operator and by cg
preconditioned with convop.preconditioner (beside plain cg: the iterations saved), and by
total variation through PyLops' split Bregman with convop's operator inside. It prints a
table (PSNR, SSIM where scikit-image is installed, iterations, time), checks the operator's
adjoint (a dot test) and times one product against PyLops' Convolve2D, and writes a figure
(true / blurred / Tikhonov / TV, with zoomed crops)."""

EPILOG = """\
examples:
  convop demo                                  the photo, 256 x 256; figure ./convop-demo.png
  convop demo --image phantom --size 128 --no-figure
  convop demo --sigma 3 --noise 0.02 --out blur.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop demo``'s options."""
    parser.add_argument(
        "--size",
        type=positive_int,
        default=256,
        metavar="N",
        help="image size in pixels, at least 8; at most 512 for the photo (default 256)",
    )
    parser.add_argument(
        "--image",
        choices=("camera", "phantom"),
        default=None,
        help="camera: scikit-image's photo (the default where scikit-image is installed); "
        "phantom: the built-in Shepp-Logan phantom",
    )
    parser.add_argument(
        "--kernel-size",
        type=positive_int,
        default=9,
        metavar="K",
        help="odd Gaussian kernel size (default 9)",
    )
    parser.add_argument(
        "--sigma",
        type=positive_float,
        default=2.0,
        metavar="S",
        help="Gaussian standard deviation in pixels (default 2)",
    )
    parser.add_argument(
        "--noise",
        type=fraction,
        default=0.01,
        metavar="SIGMA",
        help="noise standard deviation as a fraction of the image's range, 0 to 1 (default 0.01)",
    )
    parser.add_argument(
        "--damp",
        type=damp_value,
        default=None,
        metavar="D",
        help=f"Tikhonov damping, 0 to {MAX_DAMP:g} (default: chosen by the discrepancy principle)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=50,
        metavar="N",
        help="lsqr's iterations, run in full (default 50)",
    )
    parser.add_argument(
        "--out",
        default="convop-demo.png",
        metavar="FIG.png",
        help="figure to write (default ./convop-demo.png)",
    )
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _save_panels(path: Path, panels: Sequence[tuple[str, np.ndarray]], crop: slice) -> bool:
    """The panels side by side, their zoomed ``crop`` below; ``False`` without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
        from matplotlib.patches import Rectangle
    except ImportError:
        print(
            "note: matplotlib is not installed, so no figure was written "
            "(pip install matplotlib; it comes with convop's plot extra)"
        )
        return False
    fig = Figure(figsize=(3.2 * len(panels), 6.6), layout="constrained")
    axes = fig.subplots(2, len(panels))
    for column, (title, image) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        corner, side = crop.start - 0.5, crop.stop - crop.start
        top.add_patch(Rectangle((corner, corner), side, side, fill=False, edgecolor="tab:orange"))
        top.set_title(title, fontsize=10)
        zoomed = image[crop, crop]
        bottom.imshow(zoomed, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        bottom.set_title("zoom", fontsize=9)
        for ax in (top, bottom):
            ax.set_axis_off()
    fig.savefig(path, dpi=100)
    return True


def _truth(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """``(image in [0, 1], its name)``: the camera's centre crop, or the phantom."""
    n = args.size
    name = args.image
    if name in (None, "camera"):
        try:
            from skimage import data
        except ImportError:
            if name == "camera":
                raise CommandError(
                    "--image camera needs scikit-image: pip install scikit-image"
                ) from None
            print("note: scikit-image is not installed: the phantom instead of the photo")
            name = "phantom"
        else:
            photo = data.camera() / 255.0  # (512, 512)
            if not 8 <= n <= photo.shape[0]:
                raise CommandError(f"--size: the photo has 8 to {photo.shape[0]} pixels a "
                                   f"side, got {n}")  # fmt: skip
            start = (photo.shape[0] - n) // 2
            return photo[start : start + n, start : start + n], "camera photo (scikit-image)"
    with concerning("--size"):
        check_memory(DEMO_BYTES_PER_PIXEL * n * n, None, f"the demo on {n} x {n} pixels",
                     hint="pass a smaller --size")  # fmt: skip
        return phantom(n), "Shepp-Logan phantom"


def _ssim(x: np.ndarray, truth: np.ndarray) -> str:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return "-"
    return f"{structural_similarity(x, truth, data_range=1.0):.3f}"


def _product_seconds(apply, x: np.ndarray, repeats: int = 7) -> float:
    apply(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        apply(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(args: argparse.Namespace) -> int:
    out = None if args.no_figure else output_path(args.out, (".png",), "--out")
    k = args.kernel_size
    truth, described = _truth(args)
    n = truth.shape[0]
    if k // 2 >= n:  # before the kernel is made: reflect padding needs half of it < n
        raise CommandError(
            f"--kernel-size {k} is too large for {n} x {n} pixels: reflect padding needs "
            f"half the kernel, {k // 2}, below the image's size (at most {2 * n - 1})"
        )
    with concerning("--kernel-size"):
        kernel = gaussian_kernel(k, args.sigma)  # (k, k), sums to 1
    op = constructors.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    rng = np.random.default_rng(0)
    noise = args.noise * float(truth.max() - truth.min())
    b = op @ truth.ravel() + noise * rng.standard_normal(op.shape[0])
    damp = choose_damping(op, b, method="discrepancy") if args.damp is None else args.damp
    how = "chosen by the discrepancy principle" if args.damp is None else "given"
    print(f"convop demo: deblurring the {n} x {n} {described}")
    print(
        f"blur: {k} x {k} Gaussian, sigma {args.sigma:.3g} px, reflect padding; noise: "
        f"{100 * args.noise:.3g}% of the range (seed 0); Tikhonov damp {damp:.3g} ({how})\n"
    )
    image = b.reshape(n, n)
    rows = [("blurred + noisy", psnr(b, truth), _ssim(image, truth), "-", "-")]
    panels = [("true", truth), (f"blurred + noisy, {rows[0][1]:.1f} dB", image)]

    x, _, itn, _, seconds = lsqr(
        op, b, damp=damp, iterations=args.iterations, quiet=args.quiet, exact_count=True
    )
    rows.append(("Tikhonov, lsqr", psnr(x, truth), _ssim(x.reshape(n, n), truth), str(itn),
                 f"{seconds:.2f}"))  # fmt: skip
    solved, seconds = timed(1000, "pcg", args.quiet, pcg, op, b, damp, maxiter=1000)
    plain, plain_seconds = timed(5000, "cg", args.quiet, pcg, op, b, damp, M=None, maxiter=5000)
    x = solved.x
    rows.append(("Tikhonov, pcg", psnr(x, truth), _ssim(x.reshape(n, n), truth),
                 f"{solved.iterations} (cg: {plain.iterations})",
                 f"{seconds:.2f} (cg: {plain_seconds:.2f})"))  # fmt: skip
    panels.append((f"Tikhonov (pcg), {rows[-1][1]:.1f} dB", x.reshape(n, n)))
    weight = TV_WEIGHT_PER_VARIANCE * max(estimate_noise(image), 1e-6) ** 2  # as deblur's
    # PyLops' split Bregman with convop's operator inside, started from the image
    tv, seconds = timed(30, "tv", args.quiet, total_variation, op, b, weight, method="pylops",
                         x0=b, maxiter=30, inner=TV_INNER)  # fmt: skip
    x = tv.x
    rows.append(("TV, PyLops", psnr(x, truth), _ssim(x.reshape(n, n), truth),
                 f"{tv.iterations} x {TV_INNER} lsqr", f"{seconds:.2f}"))  # fmt: skip
    panels.append((f"total variation, {rows[-1][1]:.1f} dB", x.reshape(n, n)))

    print(f"{'method':<16} {'PSNR (dB)':>9} {'SSIM':>6} {'iterations':>15} {'time (s)':>16}")
    for label, quality, ssim, itn, secs in rows:
        print(f"{label:<16} {quality:>9.2f} {ssim:>6} {itn:>15} {secs:>16}")

    u, v = rng.standard_normal(op.shape[1]), rng.standard_normal(op.shape[0])
    left, right = float(np.dot(op @ u, v)), float(np.dot(u, op.rmatvec(v)))
    error = abs(left - right) / (np.linalg.norm(op @ u) * np.linalg.norm(v))
    print(f"\nexact: <A u, v> = <u, A^T v> to {error:.1e} (reflect padding's adjoint)")
    try:
        from pylops.signalprocessing import Convolve2D
    except ImportError:  # pragma: no cover - pylops is a dependency
        Convolve2D = None
    ours = _product_seconds(op.matvec, b)
    if Convolve2D is not None:
        theirs_op = Convolve2D((n, n), h=kernel, offset=(k // 2, k // 2), dtype="float64")
        theirs = _product_seconds(theirs_op.matvec, b)
        print(
            f"speed: one product {1e3 * ours:.2f} ms (convop, {op.method}, reflect padding); "
            f"PyLops' Convolve2D {1e3 * theirs:.2f} ms (scipy.signal, zero boundary only)"
        )
    crop = slice(n * 3 // 8, n * 3 // 8 + max(n // 4, 4))
    if out is not None and _save_panels(out, panels, crop):
        print(f"\nfigure: {out}")
    return 0
