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
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import convop

RTOL, ATOL = 1e-12, 1e-12  # float64 throughout: round-off only


def show_matrix(layer: nn.Conv2d, input_shape: tuple[int, int, int]) -> None:
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
    batch = torch.randn(4, *input_shape, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(
            linear(batch.flatten(1)).numpy(), layer(batch).flatten(1).numpy(), rtol=RTOL, atol=ATOL
        )
    print(f"ok: convop.to_linear(layer) == {linear} computes layer(x).flatten(1)")


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
    torch.manual_seed(0)  # the layers' initial weights

    print("== 1. The forum's case: 2 -> 2 channels, 2x2 kernel, 3x3 input ==")
    plain = nn.Conv2d(2, 2, kernel_size=2, dtype=torch.float64)
    show_matrix(plain, (2, 3, 3))

    print()
    print("== 2. Beyond the forum answers: stride 2, padding 1, padding_mode='reflect' ==")
    reflect = nn.Conv2d(
        2, 2, kernel_size=2, stride=2, padding=1, padding_mode="reflect", dtype=torch.float64
    )
    show_matrix(reflect, (2, 3, 3))
    error = naive_adjoint_error(reflect, (2, 3, 3))
    if not error > 0.01:
        raise SystemExit(f"expected the naive adjoint to be wrong here, got error {error:.1e}")
    print(
        f"note: conv_transpose2d with the same padding=1 would be off by {error:.0%} here: "
        "the reflected halo must be folded back onto its source pixels"
    )

    print()
    print("All checks passed.")


if __name__ == "__main__":
    main()
