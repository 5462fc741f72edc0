"""The singular values of a conv layer, and how far torch's ``spectral_norm`` is from its norm.

A seeded ``nn.Conv2d(16, 16, 3, padding=1)`` (float64, PyTorch's default initialisation) on a
16x32x32 input is a 16384x16384 matrix. Its operator 2-norm ``||A||_2`` (largest singular
value) is the layer's Lipschitz constant, what spectral normalisation and Lipschitz-bounded
networks try to control. The script computes:

* with circular padding (``padding_mode='circular'``, the same weight), *every* singular value,
  exactly, with ``convop.svdvals``: the operator is block circulant, so its singular values are
  those of the 16x16 matrices of the kernel's 2-D DFT at the 32x32 frequencies (Sedghi, Gupta &
  Long 2019), in a fraction of a second where a dense SVD of the 16384x16384 matrix takes
  minutes. Checked against ``numpy.linalg.svd`` of the dense matrix on an 8x8 input, and at
  32x32 by ``sum sigma_i^2 = H W ||w||_F^2`` (every tap appears once per output pixel);
* with the layer's own zero padding, which is not a circulant, a certified bracket
  ``lower <= ||A||_2 <= upper`` with ``convop.opnorm`` (the lower bound a Rayleigh quotient
  of a Lanczos vector, the upper bound the norm of a circulant that embeds the padded
  convolution), less than 0.1 % wide;
* ``sigma(w.reshape(16, -1))``, the largest singular value of the weight reshaped to a
  16x144 matrix: what ``torch.nn.utils.parametrizations.spectral_norm`` divides the weight by
  (its power iterations, run here on a copy of the layer, converge to it). For a circular
  convolution ``sigma(W) <= ||A||_2 <= sqrt(k_h k_w) sigma(W)`` (the mean over frequencies of
  ``K(f) K(f)^H`` is ``W W^T``; ``A x`` is ``W`` times the 9 shifted copies of ``x``), so a
  "spectrally normalised" 3x3 layer has a norm anywhere from 1 to 3: here about 1.5;
* for comparison, 20 power iterations on the layer itself (``F.conv2d`` and
  ``F.conv_transpose2d``, its adjoint for zero padding): an estimate from below, with no way
  to tell how far below.

The script prints a table and writes ``conv_layer_spectrum.png`` to ``--out``: the 16384
sorted singular values of the circular layer on a log scale, with the zero-padding bracket,
``sigma(W)`` and the bound ``3 sigma(W)`` as horizontal lines, and the largest 32 on a linear
scale next to the zero-padding bracket and the power-iteration estimate. Checks: ``svdvals``
agrees with the dense SVD to 1e-12 (relative to the largest) and with the Frobenius identity;
``opnorm`` of the circular operator equals ``svdvals``'s largest value; the zero-padding
bracket is at most 0.1 % wide and its upper end lies above the power-iteration estimate;
torch's ``spectral_norm`` divides by ``sigma(W)``; and ``sigma(W) <= ||A_circular||_2 <=
3 sigma(W)``, ``||A_zeros||_2 <= 3 sigma(W)``. It all takes a second or two after the
imports, the figure included; ``--quick`` checks against the dense SVD on a 6x6 input instead
of 8x8.

Usage::

    python examples/conv_layer_spectrum.py [--out DIR] [--quick]
"""

import argparse
import copy
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

import convop

CHANNELS, KERNEL, SIZE = 16, 3, 32  # nn.Conv2d(16, 16, 3, padding=1) on 16x32x32
DENSE_SIZE, QUICK_DENSE_SIZE = 8, 6  # input size of the dense-SVD check
SEED = 0
RTOL = 1e-3  # opnorm's target width of the bracket
POWER_STEPS = 20  # power iterations on the layer itself
SPECTRAL_NORM_STEPS = 100  # power iterations of torch's spectral_norm (one per weight access)
TOP = 32  # singular values in the zoomed panel


class Norms(NamedTuple):
    circular: torch.Tensor  # all singular values of the circular layer, descending
    zeros: convop.OpNorm  # certified bracket of the zero-padded layer's norm
    reshaped: float  # sigma_max(w.reshape(C_out, -1))
    torch_sigma: float  # what torch's spectral_norm divides the weight by
    power: float  # POWER_STEPS power iterations on the zero-padded layer


def layer_weight() -> tuple[nn.Conv2d, torch.Tensor]:
    """The seeded layer (zero padding, float64) and its weight (C_out, C_in, k, k)."""
    torch.manual_seed(SEED)
    layer = nn.Conv2d(CHANNELS, CHANNELS, KERNEL, padding=1, dtype=torch.float64)
    return layer, layer.weight.detach()


def circular(weight: torch.Tensor, n: int) -> convop.ConvOperator:
    """The layer's weight with circular padding on a (C, n, n) input: a block circulant."""
    return convop.conv2d(weight, (CHANNELS, n, n), padding=1, padding_mode="circular")


def torch_spectral_norm_sigma(layer: nn.Conv2d) -> float:
    """The sigma torch's spectral_norm divides a copy of ``layer``'s weight by, after
    SPECTRAL_NORM_STEPS power iterations (one each time the weight is read in training mode)."""
    normalised = nn.utils.parametrizations.spectral_norm(copy.deepcopy(layer))
    with torch.no_grad():
        for _ in range(SPECTRAL_NORM_STEPS):
            weight = normalised.weight
    original = normalised.parametrizations.weight.original.detach()
    return float(torch.linalg.vector_norm(original) / torch.linalg.vector_norm(weight))


def power_iteration(weight: torch.Tensor, steps: int) -> float:
    """``||A x|| / ||x||`` after ``steps`` power iterations of A^T A, for the zero-padded layer
    as torch computes it (conv_transpose2d is its adjoint: zero padding, stride 1)."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, CHANNELS, SIZE, SIZE, dtype=weight.dtype, generator=generator)
    with torch.no_grad():
        for _ in range(steps):
            x = F.conv_transpose2d(F.conv2d(x, weight, padding=1), weight, padding=1)
            x /= torch.linalg.vector_norm(x)
        return float(torch.linalg.vector_norm(F.conv2d(x, weight, padding=1)))


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument(
        "--quick", action="store_true", help="a smaller dense SVD to check against"
    )
    args = parser.parse_args()
    layer, weight = layer_weight()
    n_taps = KERNEL * KERNEL

    # exact spectrum of the circular layer, and a dense SVD on a small input
    A_circ = circular(weight, SIZE)
    start = time.perf_counter()
    s = convop.svdvals(A_circ)  # (16384,) float64, descending
    t_svdvals = time.perf_counter() - start
    dense_size = QUICK_DENSE_SIZE if args.quick else DENSE_SIZE
    small = circular(weight, dense_size)
    start = time.perf_counter()
    dense = np.linalg.svd(small.todense(), compute_uv=False)
    t_dense = time.perf_counter() - start
    dense_error = float(np.abs(convop.svdvals(small).numpy() - dense).max() / dense[0])
    frobenius = SIZE * SIZE * float(torch.sum(weight**2))  # every tap once per output pixel
    frobenius_error = abs(float(torch.sum(s**2)) - frobenius) / frobenius
    circ_norm = convop.opnorm(A_circ)  # a circulant: svdvals' largest value, exactly

    # certified bracket of the layer as it is, with zero padding
    A_zeros = convop.from_module(layer, (CHANNELS, SIZE, SIZE))  # the weight, bias aside
    start = time.perf_counter()
    zeros = convop.opnorm(A_zeros, rtol=RTOL)
    t_opnorm = time.perf_counter() - start

    reshaped = float(torch.linalg.matrix_norm(weight.reshape(CHANNELS, -1), ord=2))
    norms = Norms(
        s, zeros, reshaped, torch_spectral_norm_sigma(layer), power_iteration(weight, POWER_STEPS)
    )
    sigma_max = float(s[0])

    print(
        f"Conv2d({CHANNELS}, {CHANNELS}, {KERNEL}, padding=1), float64, seed {SEED}, on a "
        f"{CHANNELS}x{SIZE}x{SIZE} input: a {A_circ.shape[0]}x{A_circ.shape[1]} matrix"
    )
    print(
        f"svdvals (circular): {len(s)} singular values in {t_svdvals:.3f} s; dense SVD of the "
        f"{small.shape[0]}x{small.shape[1]} matrix ({dense_size}x{dense_size} input): "
        f"{t_dense:.3f} s"
    )
    print()
    print("  quantity                                              value     / opnorm est.")
    print("  ----------------------------------------------------  --------  ------------")
    rows = (
        ("circular: sigma_max (svdvals, exact)", sigma_max),
        ("circular: sigma_min (svdvals, exact)", float(s[-1])),
        (f"zero padding: certified lower (opnorm, {t_opnorm:.2f} s)", zeros.lower),
        ("zero padding: certified upper (opnorm)", zeros.upper),
        (f"zero padding: {POWER_STEPS} power iterations on the layer", norms.power),
        ("sigma(w.reshape(16, -1))", reshaped),
        (f"torch spectral_norm's sigma ({SPECTRAL_NORM_STEPS} power its)", norms.torch_sigma),
        (f"sqrt(k_h k_w) sigma(w.reshape): the bound, k = {KERNEL}", KERNEL * reshaped),
    )
    for name, value in rows:
        print(f"  {name:52}  {value:8.6f}  {value / zeros.estimate:12.4f}")
    print()
    after = (zeros.lower / norms.torch_sigma, zeros.upper / norms.torch_sigma)
    print(
        f"sigma(w.reshape) is {1 - reshaped / zeros.lower:.1%} to "
        f"{1 - reshaped / zeros.upper:.1%} below the layer's norm (zero padding), "
        f"{1 - reshaped / sigma_max:.1%} below it (circular);"
    )
    print(
        f"after torch's spectral_norm the layer's norm is in [{after[0]:.4f}, {after[1]:.4f}] "
        f"(zero padding), {sigma_max / norms.torch_sigma:.4f} (circular), not 1."
    )
    print()

    check(
        dense_error < 1e-12,
        f"svdvals equals the dense SVD on {dense_size}x{dense_size} (max error "
        f"{dense_error:.1e} of sigma_max)",
    )
    check(
        len(s) == min(A_circ.shape) and frobenius_error < 1e-12,
        f"sum of sigma_i^2 = H W ||w||_F^2 at {SIZE}x{SIZE} (relative error "
        f"{frobenius_error:.1e})",
    )
    check(
        circ_norm.lower <= sigma_max <= circ_norm.upper,
        f"opnorm of the circular layer is svdvals' largest value: {circ_norm.estimate:.9f}",
    )
    check(
        zeros.gap <= RTOL,
        f"zero padding: opnorm's bracket is {zeros.gap:.2e} wide (<= {RTOL:g})",
    )
    check(
        norms.power <= zeros.upper,
        f"the power-iteration estimate {norms.power:.6f} is below the certified upper bound "
        f"{zeros.upper:.6f} ({1 - norms.power / zeros.lower:.1%} below the lower one)",
    )
    check(
        math.isclose(norms.torch_sigma, reshaped, rel_tol=1e-8),
        f"torch's spectral_norm divides by sigma(w.reshape(16, -1)) = {reshaped:.6f}",
    )
    check(
        reshaped <= sigma_max <= math.sqrt(n_taps) * reshaped
        and zeros.lower <= math.sqrt(n_taps) * reshaped,
        f"sigma(W) <= ||A_circular|| <= {KERNEL} sigma(W) and ||A_zeros|| <= {KERNEL} sigma(W)",
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "conv_layer_spectrum.png"
    plot(norms).savefig(path, dpi=110)
    print(f"figure: {path}")
    print("All checks passed.")


def plot(norms: Norms) -> Figure:
    s = norms.circular.numpy()
    lower, upper = norms.zeros.lower, norms.zeros.upper
    # one style per quantity, the same in both panels
    circ = dict(color="tab:blue", lw=1.0)
    bracket = dict(color="tab:red", lw=1.0, ls="--")
    sigma_w = dict(color="tab:green", lw=1.2, ls="-.")
    bound = dict(color="tab:green", lw=1.0, ls=":")
    power = dict(color="tab:purple", lw=1.0, ls=":")
    fig = Figure(figsize=(13, 5), layout="tight")
    ax_all, ax_top = fig.subplots(1, 2, width_ratios=(1.4, 1))

    index = np.arange(1, len(s) + 1)
    ax_all.plot(index, s, color="k", lw=1.2, label="circular: all $\\sigma_i$")
    ax_all.axhline(s[0], **circ, label=f"circular: $\\sigma_{{max}}$ = {s[0]:.4f}")
    ax_all.axhline(
        upper, **bracket, label=f"zero padding: $\\|A\\|_2 \\in$ [{lower:.4f}, {upper:.4f}]"
    )
    w = norms.reshaped
    ax_all.axhline(w, **sigma_w, label=f"$\\sigma$(w.reshape(16, -1)) = {w:.4f}: spectral_norm")
    ax_all.axhline(KERNEL * w, **bound, label=f"{KERNEL} $\\sigma$(w) = {KERNEL * w:.4f}: bound")
    ax_all.set_yscale("log")
    ax_all.set_xlim(0, len(s) + 1)
    ax_all.set_xlabel("index i")
    ax_all.set_ylabel("singular value $\\sigma_i$")
    ax_all.set_title(
        f"All {len(s)} singular values of Conv2d({CHANNELS}, {CHANNELS}, {KERNEL}, padding=1),"
        f" circular, on {CHANNELS}x{SIZE}x{SIZE}\n(convop.svdvals, exact)",
        fontsize=10,
    )
    ax_all.legend(fontsize=8, loc="lower left")

    index = np.arange(1, TOP + 1)
    ax_top.plot(index, s[:TOP], color="k", lw=0.8, marker=".", label="circular: $\\sigma_i$")
    ax_top.axhline(s[0], **circ, label="circular: $\\sigma_{max}$ (svdvals)")
    ax_top.axhspan(lower, upper, color="tab:red", alpha=0.2, lw=0)
    ax_top.axhline(lower, **bracket, label="zero padding: certified [lower, upper] (opnorm)")
    ax_top.axhline(upper, **bracket)
    ax_top.axhline(norms.power, **power, label=f"zero padding: {POWER_STEPS} power iterations")
    ax_top.set_xlim(0, TOP + 1)
    span = s[0] - norms.power
    ax_top.set_ylim(norms.power - 0.5 * span, s[0] + 0.5 * span)
    ax_top.set_xlabel("index i")
    ax_top.set_title(f"the largest {TOP}, linear scale", fontsize=10)
    ax_top.legend(fontsize=8, loc="lower left")
    return fig


if __name__ == "__main__":
    main()
