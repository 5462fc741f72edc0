"""``convop demo``: deblur the built-in phantom with lsqr and lsmr, print PSNR, write a figure."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import constructors
from ..data import gaussian_kernel, phantom, psnr
from ._parser import (
    concerning,
    non_negative_float,
    output_path,
    positive_float,
    positive_int,
)
from ._solve import solve

NAME = "demo"
HELP = "deblur the built-in phantom with lsqr and lsmr, print PSNR, write a figure"

DESCRIPTION = """\
Deblurring showcase on the built-in Shepp-Logan phantom (no download): blur it with a
Gaussian kernel through convop.conv2d(..., padding="same", padding_mode="reflect"), add
Gaussian noise (fixed seed), solve the Tikhonov-damped least-squares problem with scipy's
lsqr and lsmr on the lazy operator, print a table (PSNR, iterations, time, the operator's
evaluation method) and write a figure (true / blurred + noisy / lsqr / lsmr)."""

EPILOG = """\
examples:
  convop demo                                  256 x 256, figure in ./convop-demo.png
  convop demo --size 128 --iterations 20 --no-figure
  convop demo --sigma 2 --noise 0.02 --out blur.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop demo``'s options."""
    parser.add_argument(
        "--size",
        type=positive_int,
        default=256,
        metavar="N",
        help="image size in pixels, at least 8 (default 256)",
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
        default=None,
        metavar="S",
        help="Gaussian standard deviation in pixels (default K/6)",
    )
    parser.add_argument(
        "--noise",
        type=non_negative_float,
        default=0.01,
        metavar="SIGMA",
        help="noise standard deviation as a fraction of the image's range (default 0.01)",
    )
    parser.add_argument(
        "--damp",
        type=non_negative_float,
        default=None,
        metavar="D",
        help="Tikhonov damping of both solvers (default 10 * SIGMA)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=50,
        metavar="N",
        help="iterations of each solver, run in full (default 50)",
    )
    parser.add_argument(
        "--out",
        default="convop-demo.png",
        metavar="FIG.png",
        help="figure to write (default ./convop-demo.png)",
    )
    parser.add_argument("--no-figure", action="store_true", help="do not write the figure")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _save_panels(path: Path, panels: Sequence[tuple[str, np.ndarray]]) -> bool:
    """Grayscale images side by side in one PNG; ``False`` (and a note) without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError:
        print(
            "note: matplotlib is not installed, so no figure was written "
            "(pip install 'convop[plot]')"
        )
        return False
    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    for ax, (title, image) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    return True


def run(args: argparse.Namespace) -> int:
    out = None if args.no_figure else output_path(args.out, (".png",), "--out")
    n, k = args.size, args.kernel_size
    with concerning("--size"):
        truth = phantom(n)  # (n, n) in [0, 1]
    with concerning("--kernel-size"):
        kernel = gaussian_kernel(k, args.sigma)  # (k, k), sums to 1
    op = constructors.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    rng = np.random.default_rng(0)
    noise = args.noise * float(truth.max() - truth.min())
    b = op @ truth.ravel() + noise * rng.standard_normal(op.shape[0])
    damp = 10 * args.noise if args.damp is None else args.damp
    sigma = k / 6 if args.sigma is None else args.sigma
    print(f"convop demo: deblurring the {n} x {n} Shepp-Logan phantom")
    print(
        f"blur: {k} x {k} Gaussian, sigma {sigma:.3g} px, reflect padding; "
        f"noise: {100 * args.noise:.3g}% of the range (seed 0); damp {damp:.3g}\n"
    )

    rows = [("blurred + noisy", psnr(b, truth), "-", "-", "-")]
    panels = [("true", truth), (f"blurred + noisy, {rows[0][1]:.1f} dB", b.reshape(n, n))]
    for name in ("lsqr", "lsmr"):
        x, _, itn, _, seconds = solve(
            name, op, b, damp=damp, iterations=args.iterations, quiet=args.quiet, exact_count=True
        )
        quality = psnr(x, truth)
        rows.append((f"scipy {name}", quality, str(itn), f"{seconds:.2f}", op.method))
        panels.append((f"{name}, {quality:.1f} dB", x.reshape(n, n)))

    print(f"{'method':<16} {'PSNR (dB)':>9} {'iterations':>10} {'time (s)':>8}  operator")
    for label, quality, itn, seconds, how in rows:
        print(f"{label:<16} {quality:>9.2f} {itn:>10} {seconds:>8}  {how}")
    if out is not None and _save_panels(out, panels):
        print(f"\nfigure: {out}")
    return 0
