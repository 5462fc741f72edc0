"""``conv_transpose2d`` is the adjoint of a conv layer only for zero padding.

A common shortcut takes ``F.conv_transpose2d`` with the layer's weight, stride and padding as
the adjoint (the "backward" or "transpose") of ``nn.Conv2d``. That is right for
``padding_mode='zeros'`` only: with ``'reflect'``, ``'replicate'`` or ``'circular'`` padding the
halo samples are *copies* of interior pixels, and the adjoint must add the halo entries back
onto those pixels, where ``conv_transpose2d``'s crop throws them away (docs/conventions.md,
section 5). convop's ``op.H`` does the fold.

For each padding mode, a strided layer ``nn.Conv2d(3, 4, 3, stride=2, padding=1)`` on a
17x16 input (float64, seeded weights) is compared in two ways:

* the dot test ``|<A x, v> - <x, A' v>|`` normalised by its Cauchy-Schwarz scale
  ``|A x| |v| + |x| |A' v|`` (so that a correct adjoint gives round-off, about 1e-17, and the
  scale of ``<A x, v>`` itself does not matter), worst over several random pairs ``(x, v)``
  (``convop.testing.dot_test``, which takes the adjoint under test as a function), for
  ``A' = op.H`` and for the naive ``A' = conv_transpose2d(., weight, stride=2, padding=1,
  output_padding=op.geometry.adjoint_output_padding)`` (the output padding makes the naive
  result the input's shape, 17x16 rather than 17x15);
* the whole vector: ``|A' v - vjp(v)| / |vjp(v)|`` against ``torch.func.vjp`` of the layer,
  PyTorch's own gradient, an oracle independent of both.

A wrong adjoint's single dot test is only about 1e-2 here: its error is a fixed fraction of
the scale, but random signs cancel it down by about the square root of the size. The whole
vector shows the real size of the error, 25-40 %.

The script prints a table, writes a bar chart on a log scale (``transposed_is_adjoint.png`` in
``--out``) and checks: convop's dot test < 1e-12 and its vector agrees with ``vjp`` for every
mode; the naive dot test > 1e-3 (and its vector off by > 10 %) for reflect, replicate and
circular, and round-off for zeros. ``--quick`` uses 8 random pairs instead of 32.

Usage::

    python examples/transposed_is_adjoint.py [--out DIR] [--quick]
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
from convop.testing import dot_test

MODES = ("zeros", "reflect", "replicate", "circular")
INPUT_SHAPE = (3, 17, 16)  # (C_in, H, W): W = 16 needs output_padding 1 for the naive version
C_OUT, KERNEL, STRIDE, PADDING = 4, 3, 2, 1
PAIRS, QUICK_PAIRS = 32, 8  # random (x, v) pairs per dot test
SEED = 0
FLOOR = 1e-19  # exact zeros are drawn at this height on the log scale


class Row(NamedTuple):
    mode: str
    convop_dot: float  # worst normalised dot test of op.H
    naive_dot: float  # worst normalised dot test of the naive conv_transpose2d
    convop_vector: float  # |op.H v - vjp(v)| / |vjp(v)|
    naive_vector: float  # |naive(v) - vjp(v)| / |vjp(v)|


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def compare(mode: str, weight: torch.Tensor, pairs: int, rng: np.random.Generator) -> Row:
    layer = nn.Conv2d(
        INPUT_SHAPE[0], C_OUT, KERNEL, stride=STRIDE, padding=PADDING, padding_mode=mode,
        bias=False, dtype=torch.float64,
    )  # fmt: skip
    with torch.no_grad():
        layer.weight.copy_(weight)
    op = convop.from_module(layer, INPUT_SHAPE)
    r = op.geometry.adjoint_output_padding

    def naive(v: np.ndarray) -> np.ndarray:
        """conv_transpose2d with the layer's padding, shaped like the input."""
        with torch.no_grad():
            y = torch.from_numpy(v).reshape(1, *op.output_shape)  # (1, C_out, H_out, W_out)
            x = F.conv_transpose2d(
                y, layer.weight, stride=STRIDE, padding=PADDING, output_padding=r
            )
        return x.reshape(-1).numpy()  # (C_in*H*W,)

    # the worst of `pairs` random (x, v), the same pairs for both (the same seed)
    convop_dot = dot_test(op, trials=pairs, seed=SEED)  # op's rmatvec: op.H
    naive_dot = dot_test(op, adjoint=naive, trials=pairs, seed=SEED)

    x0 = torch.zeros(1, *INPUT_SHAPE, dtype=torch.float64)
    v = rng.standard_normal(op.shape[0])
    _, pullback = torch.func.vjp(layer, x0)  # linear layer: the pullback is the adjoint
    (oracle,) = pullback(torch.from_numpy(v).reshape(1, *op.output_shape))
    oracle = oracle.reshape(-1).detach().numpy()
    scale = np.linalg.norm(oracle)
    return Row(
        mode,
        convop_dot,
        naive_dot,
        float(np.linalg.norm(op.H @ v - oracle) / scale),
        float(np.linalg.norm(naive(v) - oracle) / scale),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PAIRS} pairs, not {PAIRS}")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(SEED)
    shape = (C_OUT, INPUT_SHAPE[0], KERNEL, KERNEL)  # (C_out, C_in, k, k)
    weight = torch.randn(shape, dtype=torch.float64, generator=generator)
    pairs = QUICK_PAIRS if args.quick else PAIRS  # per dot test
    rng = np.random.default_rng(SEED)
    rows = [compare(mode, weight, pairs, rng) for mode in MODES]

    print(
        f"Conv2d({INPUT_SHAPE[0]}, {C_OUT}, {KERNEL}, stride={STRIDE}, padding={PADDING}) on "
        f"{INPUT_SHAPE}, float64; dot test = worst of {pairs} random pairs, normalised by "
        f"|Ax||v| + |x||A'v|; vector error = |A'v - vjp(v)| / |vjp(v)|"
    )
    print()
    print("  padding_mode |        dot test         |     vector error vs vjp")
    print("               |  convop op.H    naive   |  convop op.H    naive")
    print("  -------------+-------------------------+-------------------------")
    for r in rows:
        print(
            f"  {r.mode:12} |  {r.convop_dot:9.1e}  {r.naive_dot:9.1e}  |"
            f"  {r.convop_vector:9.1e}  {r.naive_vector:9.1e}"
        )
    print()

    for r in rows:
        check(
            r.convop_dot < 1e-12 and r.convop_vector < 1e-12,
            f"{r.mode:9}: op.H passes the dot test ({r.convop_dot:.0e}) and equals vjp "
            f"({r.convop_vector:.0e})",
        )
        if r.mode == "zeros":
            check(
                r.naive_dot < 1e-12 and r.naive_vector < 1e-12,
                f"{r.mode:9}: naive conv_transpose2d is the adjoint too ({r.naive_dot:.0e})",
            )
        else:
            check(
                r.naive_dot > 1e-3 and r.naive_vector > 0.1,
                f"{r.mode:9}: naive conv_transpose2d fails the dot test ({r.naive_dot:.0e}), "
                f"off by {r.naive_vector:.0%}",
            )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "transposed_is_adjoint.png"
    plot(rows, pairs).savefig(path, dpi=110)
    print(f"figure: {path}")
    print("All checks passed.")


def plot(rows: list[Row], pairs: int) -> Figure:
    fig = Figure(figsize=(9, 5), layout="tight")
    ax = fig.subplots()
    positions = np.arange(len(rows))
    width = 0.38
    series = (
        ("convop op.H", [r.convop_dot for r in rows], "tab:blue", -width / 2),
        ("naive conv_transpose2d", [r.naive_dot for r in rows], "tab:red", width / 2),
    )
    for label, values, color, offset in series:
        heights = np.maximum(values, FLOOR)
        bars = ax.bar(positions + offset, heights, width, color=color, label=label)
        ax.bar_label(bars, labels=[f"{v:.0e}" if v else "0" for v in values], fontsize=8)
    ax.axhline(1e-12, color="tab:blue", ls=":", lw=1, label="check: convop < 1e-12")
    ax.axhline(1e-3, color="tab:red", ls=":", lw=1, label="check: naive > 1e-3 (non-zero modes)")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 3, 1)
    ax.set_xticks(positions, [f"padding_mode=\n'{r.mode}'" for r in rows])
    ax.set_ylabel("|<Ax, v> - <x, A'v>| / (|Ax||v| + |x||A'v|)")
    shape = "x".join(map(str, INPUT_SHAPE[1:]))
    ax.set_title(
        f"Dot test of the adjoint A' of Conv2d({INPUT_SHAPE[0]}, {C_OUT}, {KERNEL}, "
        f"stride={STRIDE}, padding={PADDING}) on {shape}, float64\n"
        f"worst of {pairs} random pairs; exact zeros drawn at {FLOOR:g}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
    return fig


if __name__ == "__main__":
    main()
