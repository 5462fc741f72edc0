"""Recovering the input of a strided multi-channel conv layer from its output, with ``lsqr``.

A conv layer ``nn.Conv2d(3, 16, 3, stride=2, padding=1)`` halves the image size but has more
output channels than it needs to keep all information: its output has 16 * 24 * 24 = 9216
numbers for an input of 3 * 48 * 48 = 6912, so the linear system ``B x = y - bias`` is
overdetermined, and for these (seeded, randomly initialised) weights it has full column rank
and is well conditioned. ``convop.from_module`` wraps the layer as a ``LinearOperator``
whose ``rmatvec`` is the adjoint, a transposed convolution (``op.H``), so scipy's ``lsqr``
recovers the input without ever forming B:

* from the exact output, to lsqr's tolerance (the layer is injective on 48x48 inputs);
* from the output plus noise of 0.1 % of its RMS, with an error of the same order.

The input is a stack of three variants of ``convop.data.phantom`` (no download). The script
prints the operator and its adjoint (``repr(op.H)``: the adjoint of the conv, a transposed
convolution), checks ``op.H`` against ``torch.nn.functional.conv_transpose2d`` with the
layer's weight, stride, padding and ``output_padding = op.geometry.adjoint_output_padding``
(without it the shape would be 47x47), passes a dot test (``convop.testing.dot_test``), and
prints the relative errors and ``lsqr``'s iterations and condition estimate. The figure
(``multichannel_deconvolution.png`` in ``--out``) shows the three channels: true, recovered
from the noisy output, and the error.
``--quick`` uses 24x24 inputs (16 * 12 * 12 = 2304 >= 3 * 24 * 24 = 1728).

Usage::

    python examples/multichannel_deconvolution.py [--out DIR] [--quick]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy.sparse.linalg import lsqr
from torch import nn

import convop
from convop.data import phantom
from convop.testing import dot_test

SIZE, QUICK_SIZE = 48, 24  # input height and width
C_IN, C_OUT = 3, 16
NOISE = 1e-3  # noise standard deviation relative to the RMS of the layer's output
SEED = 0
TOL = 1e-10  # lsqr's atol = btol


def test_images(n: int) -> np.ndarray:
    """Three phantom variants as one (3, n, n) input with values in [0, 1]."""
    image = phantom(n)  # (n, n)
    ramp = np.linspace(0.0, 1.0, n)[None, :]  # (1, n)
    return np.stack([image, np.rot90(image), 0.5 * np.fliplr(image) + 0.5 * ramp])


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def show_adjoint(layer: nn.Conv2d, op: convop.ConvOperator, rng: np.random.Generator) -> None:
    """op.H is conv_transpose2d with the layer's weight and output_padding; dot test."""
    print(f"op.H: {op.H!r}")
    r = op.geometry.adjoint_output_padding
    v = rng.standard_normal(op.shape[0])
    with torch.no_grad():
        transposed = F.conv_transpose2d(  # (1, C_in, H, W)
            torch.from_numpy(v).reshape(1, *op.output_shape),
            layer.weight,
            stride=layer.stride,
            padding=layer.padding,
            output_padding=r,
        )
    np.testing.assert_allclose(op.H @ v, transposed.reshape(-1).numpy(), rtol=1e-12, atol=1e-12)
    print(
        f"ok: op.H @ v == F.conv_transpose2d(v, layer.weight, stride={layer.stride}, "
        f"padding={layer.padding}, output_padding={r})"
    )
    error = dot_test(op, seed=rng)  # random x and v from rng; the adjoint is op.rmatvec
    check(error < 1e-13, f"dot test |<Ax, v> - <x, A^H v>| / (Cauchy-Schwarz scale) = {error:.1e}")


def recover(op: convop.ConvOperator, data: np.ndarray) -> tuple[np.ndarray, int, float, float]:
    """lsqr on ``op x = data``: (x, iterations, condition estimate, seconds)."""
    start = time.perf_counter()
    with convop.solver_threads():  # numpy's BLAS on one thread: no fight with torch
        x, _, itn, _, _, _, acond, *_ = lsqr(op, data, atol=TOL, btol=TOL)
    return x, int(itn), float(acond), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE}x{QUICK_SIZE} inputs")
    args = parser.parse_args()
    torch.manual_seed(SEED)  # the layer's initial weights
    layer = nn.Conv2d(C_IN, C_OUT, 3, stride=2, padding=1, dtype=torch.float64)
    n = QUICK_SIZE if args.quick else SIZE  # its input: (C_IN, n, n)
    op = convop.from_module(layer, (C_IN, n, n))
    rng = np.random.default_rng(SEED)
    print(f"layer: {layer}")
    print(f"op:   {op!r}")
    rows, cols = op.shape
    check(
        rows >= cols,
        f"overdetermined: {rows} outputs ({' x '.join(map(str, op.output_shape))}) >= "
        f"{cols} unknowns ({' x '.join(map(str, op.input_shape))})",
    )
    show_adjoint(layer, op, rng)
    print()

    truth = test_images(n)  # (3, n, n)

    def relative_error(x: np.ndarray) -> float:  # x flat, like truth.ravel()
        return float(np.linalg.norm(x - truth.ravel()) / np.linalg.norm(truth))

    with torch.no_grad():
        y = layer(torch.from_numpy(truth)[None])[0].reshape(-1).numpy()  # (rows,)
    noisy = y + NOISE * np.sqrt(np.mean(y**2)) * rng.standard_normal(y.shape)

    exact, itn, acond, seconds = recover(op, y - op.bias)  # the bias is not part of op
    error_exact = relative_error(exact)
    print(
        f"exact output:         relative error {error_exact:.1e}, {itn} lsqr iterations, "
        f"{seconds:.2f} s (lsqr's condition estimate {acond:.0f})"
    )
    x, itn, _, seconds = recover(op, noisy - op.bias)
    error_noisy = relative_error(x)
    print(
        f"output + {NOISE:.1%} noise: relative error {error_noisy:.1e}, {itn} lsqr iterations, "
        f"{seconds:.2f} s"
    )
    check(error_exact < 1e-6, f"exact output: input recovered to {error_exact:.1e} < 1e-6")
    check(error_noisy < 10 * NOISE, f"noisy output: error {error_noisy:.1e} < {10 * NOISE:g}")

    title = (
        f"input of Conv2d({C_IN}, {C_OUT}, 3, stride=2, padding=1) recovered by lsqr from its "
        f"output + {NOISE:.1%} noise\nrelative error {error_noisy:.1e}, {itn} iterations"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "multichannel_deconvolution.png"
    plot(truth, x.reshape(truth.shape), title).savefig(path, dpi=100)
    print(f"figure: {path}")
    print("All checks passed.")


def plot(truth: np.ndarray, recovered: np.ndarray, title: str) -> Figure:
    fig = Figure(figsize=(3.3 * C_IN + 1, 10), layout="constrained")
    axes = fig.subplots(3, C_IN)
    error = recovered - truth
    limit = np.abs(error).max()
    for c in range(C_IN):
        axes[0, c].imshow(truth[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, c].set_title(f"channel {c}: true")
        axes[1, c].imshow(recovered[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, c].set_title(f"channel {c}: recovered")
        shown = axes[2, c].imshow(
            error[c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
        )
        axes[2, c].set_title(f"channel {c}: error, max {np.abs(error[c]).max():.1e}")
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[2, :], shrink=0.8, label="recovered - true")
    fig.suptitle(title)
    return fig


if __name__ == "__main__":
    main()
