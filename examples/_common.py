"""What the example scripts share: their options, their checks, the blur problem of the two
deblurring examples, the dot test and the relative error.

Not an example itself: the leading underscore keeps it out of the test suite's list of
examples. The scripts import it as a sibling module (``from _common import check``), which
works because Python puts a script's own directory first on ``sys.path``, under
``mpiexec`` too. PSNR is the library's :func:`convop.data.psnr`, whose peak is the range of
the true image: 1 for the [0, 1] phantoms of these examples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import convop
from convop.data import gaussian_kernel, phantom

#: Where the figures go without ``--out``.
FIGURES = Path(__file__).resolve().parent / "figures"
#: The blur of deblur_lsqr.py and deblur_pylops.py: a Gaussian kernel and its sigma in pixels.
KERNEL_SIZE, SIGMA = 9, 1.5
#: Their noise: standard deviation (image range [0, 1]) and seed.
NOISE, SEED = 0.002, 0


def parse_args(argv: list[str] | None, doc: str, quick: str) -> argparse.Namespace:
    """``--out DIR`` (where the figure goes) and ``--quick`` (``quick``: what it changes).

    ``doc`` is the script's docstring; its first line describes the script in ``--help``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=FIGURES, help="directory for the figure (examples/figures/)"
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser.parse_args(argv)


def check(condition: bool, message: str) -> None:
    """Print ``ok: message`` or exit non-zero with ``FAILED: message``."""
    if not condition:
        raise SystemExit(f"FAILED: {message}")
    print(f"ok: {message}")


def blur_problem(n: int) -> tuple[convop.ConvOperator, np.ndarray, np.ndarray]:
    """The blur operator, the true image (n, n) and the blurred noisy data (n*n,).

    The phantom blurred by a KERNEL_SIZE x KERNEL_SIZE Gaussian (SIGMA pixels) with 'same'
    reflect padding, plus Gaussian noise of standard deviation NOISE (seed SEED).
    """
    truth = phantom(n)  # (n, n), values in [0, 1]
    kernel = gaussian_kernel(KERNEL_SIZE, SIGMA)  # (9, 9), sums to 1
    A = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    rng = np.random.default_rng(SEED)
    b = A @ truth.ravel() + NOISE * rng.standard_normal(A.shape[0])  # (n*n,)
    return A, truth, b


def dot_test(A, adjoint, x: np.ndarray, v: np.ndarray) -> float:
    """|<A x, v> - <x, adjoint(v)>| over its Cauchy-Schwarz scale (conventions.md, sect. 8)."""
    Ax, Av = A @ x, adjoint(v)
    scale = np.linalg.norm(Ax) * np.linalg.norm(v) + np.linalg.norm(x) * np.linalg.norm(Av)
    return float(abs(np.vdot(v, Ax) - np.vdot(Av, x)) / scale)


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """``|estimate - reference| / |reference|`` over all values."""
    difference = estimate.ravel() - reference.ravel()
    return float(np.linalg.norm(difference) / np.linalg.norm(reference.ravel()))
