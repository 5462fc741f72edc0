"""The matrix B of a PyTorch conv layer: ``y = B @ x.flatten() + bias``.

Answers the forum question "is there a function in PyTorch to get the matrix B of my conv
layer?" with convop:

1. ``op = convop.from_module(layer, input_shape)`` wraps the layer's weight in an exact, lazy
   ``scipy.sparse.linalg.LinearOperator`` (nothing is materialised);
2. ``B = op.todense()`` builds the explicit matrix by index arithmetic (``op.tosparse()``
   gives it as a scipy sparse array with only the structural nonzeros);
3. ``B @ x.flatten() + op.bias`` reproduces ``layer(x)`` flattened, and ``B.T`` equals the
   operator's adjoint ``op.H`` (a transposed convolution), built independently of ``B``;
4. ``convop.to_linear(layer, input_shape)`` is the layer as an equivalent ``nn.Linear``.

Two small layers are shown: the forum's set-up (2x2 kernel on a 3x3 input, no padding) and
one the forum answers do not cover, with stride 2, padding 1 and ``padding_mode='reflect'``,
whose adjoint is *not* a plain ``conv_transpose2d`` with the same padding.

Flattening is C order of one sample ``(C, H, W)``, i.e. ``x.reshape(-1)``, so B has
``C_out * H_out * W_out`` rows and ``C_in * H * W`` columns. The script checks everything it
prints and exits non-zero if a check fails.

The figure (``conv_as_matrix.png`` in ``--out``) shows, for each layer, B with its structural
zeros left blank and the channel blocks outlined, and the layer's output against the output
of the ``nn.Linear`` from ``convop.to_linear`` (the points lie on the diagonal).

Usage::

    python examples/conv_as_matrix.py [--out DIR] [--quick]
"""

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

import convop

RTOL, ATOL = 1e-12, 1e-12  # float64 throughout: round-off only


class Shown(NamedTuple):
    """What the figure needs from one layer."""

    title: str
    op: convop.ConvOperator
    B: np.ndarray  # (prod(output_shape), prod(input_shape))
    layer_out: np.ndarray  # (batch, prod(output_shape)), layer(x).flatten(1)
    linear_out: np.ndarray  # (batch, prod(output_shape)), to_linear(layer)(x.flatten(1))


def show_matrix(title: str, layer: nn.Conv2d, input_shape: tuple[int, int, int]) -> Shown:
    """Build B for ``layer``, print it and check it against the layer and the adjoint."""
    op = convop.from_module(layer, input_shape)
    B = op.todense()  # (prod(output_shape), prod(input_shape))
    np.testing.assert_array_equal(op.tosparse().toarray(), B)
    probe = op @ np.eye(op.shape[1])  # the same matrix from one batched convolution
    np.testing.assert_allclose(B, probe, rtol=RTOL, atol=ATOL)
    rows, cols = ("*".join(map(str, shape)) for shape in (op.output_shape, op.input_shape))
    print(f"layer:  {layer}")
    print(f"op:     {op}")
    print(f"B:      shape {B.shape}, rows C_out*H_out*W_out = {rows}, columns C_in*H*W = {cols}")
    # Exact zeros print as "." so the (block-)Toeplitz structure shows.
    with np.printoptions(
        linewidth=140, formatter={"float": lambda v: f"{v:5.2f}" if v else "    ."}
    ):
        print(B)

    # 1. B reproduces the layer, bias included.
    x = torch.randn(input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = layer(x[None])[0].reshape(-1).numpy()  # (C_out*H_out*W_out,)
    np.testing.assert_allclose(B @ x.reshape(-1).numpy() + op.bias, expected, rtol=RTOL, atol=ATOL)
    print("ok: B @ x.flatten() + op.bias == layer(x).flatten()")

    # 2. B.T is the adjoint, computed as a transposed convolution (not from B).
    adjoint = op.H @ np.eye(op.shape[0])  # (prod(input_shape), prod(output_shape))
    np.testing.assert_allclose(B.T, adjoint, rtol=RTOL, atol=ATOL)
    print("ok: B.T == op.H @ eye (the exact adjoint, a transposed convolution; B not used)")

    # 3. The layer as a fully-connected layer: nn.Linear with weight B.
    linear = convop.to_linear(layer, input_shape)
    batch = torch.randn(4, *input_shape, dtype=torch.float64)  # (4, C_in, H, W)
    with torch.no_grad():
        layer_out = layer(batch).flatten(1).numpy()  # (4, C_out*H_out*W_out)
        linear_out = linear(batch.flatten(1)).numpy()
    np.testing.assert_allclose(linear_out, layer_out, rtol=RTOL, atol=ATOL)
    print(f"ok: convop.to_linear(layer) == {linear} computes layer(x).flatten(1)")
    return Shown(title, op, B, layer_out, linear_out)


def naive_adjoint_error(layer: nn.Conv2d, input_shape: tuple[int, int, int]) -> float:
    """Relative error of ``conv_transpose2d`` with the layer's own padding as an adjoint."""
    op = convop.from_module(layer, input_shape)
    eye = torch.eye(op.shape[0], dtype=torch.float64).reshape(-1, *op.output_shape)
    with torch.no_grad():
        naive = F.conv_transpose2d(  # (m, C_in, H, W) with output_padding fitted to the shape
            eye,
            layer.weight,
            stride=layer.stride,
            padding=layer.padding,
            output_padding=op.geometry.adjoint_output_padding,
        )
    naive = naive.reshape(op.shape[0], -1).numpy().T  # (n, m), what B.T would be
    exact = op.H @ np.eye(op.shape[0])
    return float(np.linalg.norm(naive - exact) / np.linalg.norm(exact))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument("--quick", action="store_true", help="accepted; the run is always small")
    args = parser.parse_args()
    torch.manual_seed(0)  # the layers' initial weights

    print("== 1. The forum's case: 2 -> 2 channels, 2x2 kernel, 3x3 input ==")
    plain = nn.Conv2d(2, 2, kernel_size=2, dtype=torch.float64)
    shown = [show_matrix("2x2 kernel, 3x3 input", plain, (2, 3, 3))]

    print()
    print("== 2. Beyond the forum answers: stride 2, padding 1, padding_mode='reflect' ==")
    reflect = nn.Conv2d(
        2, 2, kernel_size=2, stride=2, padding=1, padding_mode="reflect", dtype=torch.float64
    )
    shown.append(show_matrix("stride 2, padding 1, reflect", reflect, (2, 3, 3)))
    error = naive_adjoint_error(reflect, (2, 3, 3))
    if not error > 0.01:
        raise SystemExit(f"expected the naive adjoint to be wrong here, got error {error:.1e}")
    print(
        f"note: conv_transpose2d with the same padding=1 would be off by {error:.0%} here: "
        "the reflected halo must be folded back onto its source pixels"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "conv_as_matrix.png"
    plot(shown).savefig(path, dpi=120)
    print()
    print(f"figure: {path}")
    print("All checks passed.")


def plot(shown: list[Shown]) -> Figure:
    """B of each layer (zeros blank, channel blocks outlined) and layer vs nn.Linear."""
    fig = Figure(figsize=(11, 3.6 * len(shown)), layout="tight")
    axes = fig.subplots(len(shown), 2, width_ratios=(2.2, 1))
    for (ax_b, ax_out), item in zip(axes, shown):
        op, B = item.op, item.B
        limit = np.abs(B).max()
        image = ax_b.imshow(
            np.ma.masked_equal(B, 0.0),  # structural zeros stay blank
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
        )
        per_out, per_in = np.prod(op.output_shape[1:]), np.prod(op.input_shape[1:])
        for row in range(1, op.output_shape[0]):
            ax_b.axhline(row * per_out - 0.5, color="0.3", lw=0.8)
        for col in range(1, op.input_shape[0]):
            ax_b.axvline(col * per_in - 0.5, color="0.3", lw=0.8)
        nnz = np.count_nonzero(B)
        ax_b.set_title(f"{item.title}\nB: {B.shape[0]} x {B.shape[1]}, {nnz} nonzeros")
        ax_b.set_xlabel("column = (c_in, i, j) of x.flatten()")
        ax_b.set_ylabel("row = (c_out, p, q) of y.flatten()")
        fig.colorbar(image, ax=ax_b, shrink=0.8)

        ax_out.plot(item.layer_out.ravel(), item.linear_out.ravel(), "o", ms=4, alpha=0.7)
        lo, hi = item.layer_out.min(), item.layer_out.max()
        ax_out.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
        error = np.abs(item.linear_out - item.layer_out).max()
        ax_out.set_title(f"layer(x) vs convop.to_linear(layer)(x)\nmax |difference| = {error:.1e}")
        ax_out.set_xlabel("layer(x).flatten(1)")
        ax_out.set_ylabel("nn.Linear output")
        ax_out.legend(loc="upper left")
    return fig


if __name__ == "__main__":
    main()
