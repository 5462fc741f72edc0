"""Is ``method="auto"`` ever far wrong? A wide grid of convolutions, direct against FFT.

Usage::

    python benchmarks/bench_auto.py             # full grid (a few minutes on 2 cores)
    python benchmarks/bench_auto.py --quick     # a subset, fewer repeats
    python benchmarks/bench_auto.py --markdown  # the table for docs/benchmarks.md
    python benchmarks/bench_auto.py --threads 1 # torch on one thread

Every case builds one operator with ``method="direct"`` and one with ``method="fft"``,
checks that they compute the same map (forward and adjoint, to round-off), then times the
torch face, ``op.apply(x)`` and ``op.apply_adjoint(y)`` on a batch, each the median of
repeats after warm-up (:func:`timeit`, as in ``bench_operators.py``), in rounds that take
turns so that other processes' load weighs on both methods alike. A case's time for a
method is forward plus adjoint: the pair an iterative solver pays per iteration, and one
choice of method serves both. auto's pick is what ``method="auto"`` resolves to
(``op.method``; with calibration unless ``CONVOP_CALIBRATE=0``) and, for comparison, what
the cost model's built-in constants pick. The ratio is ``time(pick) / time(faster)``:
1.00 when auto picked the faster method.

The grid spans 1-D, 2-D and 3-D; dense layers, grouped and depthwise ones; strides,
dilations, transposed convolutions; float32, float64, complex64 and complex128; kernels of
3 to 31 taps; batches of 1 and (for smaller layers) 64; zeros, reflect, replicate and
circular padding. The goal is a ratio within 1.2 on every case.

:func:`grid` runs the cases and returns :class:`Row` s; :func:`summary` condenses them; both
can be imported by other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
from _timing import timeit  # benchmarks/, the script's own folder

import convop
from convop._auto import calibrate as _calibrate
from convop._auto import cost as _cost
from convop.constructors import CONSTRUCTORS

GOAL = 1.2  # auto within this factor of the faster method


class Case(NamedTuple):
    """One convolution of the grid: PyTorch's arguments, dtype and batch size."""

    name: str
    ndim: int
    transposed: bool
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]  # (C_in, *spatial) of one sample
    dtype: torch.dtype
    batch: int
    options: dict  # stride, padding, dilation, groups, padding_mode, output_padding
    quick: bool  # part of the --quick subset


class Row(NamedTuple):
    """The measurements of one case (seconds for forward + adjoint on the whole batch)."""

    case: str
    direct: float
    fft: float
    auto: str  # what method="auto" ran: "fft", "direct", or "direct/fft" (forward/adjoint)
    builtin: str  # what the cost model picks with its built-in constants
    forward_direct: float
    forward_fft: float

    @property
    def faster(self) -> str:
        """The faster method, measured."""
        return "fft" if self.fft < self.direct else "direct"

    def seconds(self, pick: str | None = None) -> float:
        """Forward + adjoint time of ``pick`` (``'direct/fft'``: one per direction)."""
        pick = self.auto if pick is None else pick
        forward, _, adjoint = pick.partition("/")
        adjoint = adjoint or forward
        ahead = self.forward_fft if forward == "fft" else self.forward_direct
        back = (self.fft - self.forward_fft) if adjoint == "fft" else (
            self.direct - self.forward_direct)  # fmt: skip
        return ahead + back

    def ratio(self, pick: str | None = None) -> float:
        """``seconds(pick) / time(faster)``; ``pick`` defaults to auto's."""
        return self.seconds(pick) / min(self.direct, self.fft)


def _case(name, ndim, weight_shape, input_shape, dtype, batch=1, *, transposed=False,
          quick=False, **options) -> Case:  # fmt: skip
    return Case(name, ndim, transposed, weight_shape, input_shape, dtype, batch, options, quick)


F32, F64, C64, C128 = torch.float32, torch.float64, torch.complex64, torch.complex128

# Sizes keep the slower method of every case under about half a second per product.
# fmt: off
CASES: list[Case] = [
    # ---- 1-D
    _case("1d 1->1 k3 n16384", 1, (1, 1, 3), (1, 16384), F64, padding=1, quick=True),
    _case("1d 1->1 k31 n16384", 1, (1, 1, 31), (1, 16384), F32, padding="same"),
    _case("1d 1->1 k31 n4096", 1, (1, 1, 31), (1, 4096), F64, padding=15),
    _case("1d 1->1 k31 n4096 b64", 1, (1, 1, 31), (1, 4096), F64, 64, padding=15),
    _case("1d 16->16 k15 n1024", 1, (16, 16, 15), (16, 1024), F32, padding=7, quick=True),
    _case("1d 16->16 k3 n1024 b64", 1, (16, 16, 3), (16, 1024), F32, 64, padding=1),
    _case("1d 8->8 k31 d2 reflect", 1, (8, 8, 31), (8, 2048), F64, padding="same",
          dilation=2, padding_mode="reflect"),
    _case("1d dw 32 k15 n2048", 1, (32, 1, 15), (32, 2048), F32, padding=7, groups=32),
    _case("1d T 8->4 k4 s2 n1024", 1, (8, 4, 4), (8, 1024), F64, transposed=True, stride=2,
          padding=1),
    # ---- 2-D, one channel
    _case("1->1 3x3 512 f64", 2, (1, 1, 3, 3), (1, 512, 512), F64, padding=1, quick=True),
    _case("1->1 3x3 512 f32", 2, (1, 1, 3, 3), (1, 512, 512), F32, padding=1),
    _case("1->1 7x7 64 b64", 2, (1, 1, 7, 7), (1, 64, 64), F32, 64, padding=3),
    _case("1->1 15x15 256 f32", 2, (1, 1, 15, 15), (1, 256, 256), F32, padding="same",
          quick=True),
    _case("1->1 31x31 256 f64 reflect", 2, (1, 1, 31, 31), (1, 256, 256), F64,
          padding="same", padding_mode="reflect"),
    _case("1->1 31x31 128 c64 circular", 2, (1, 1, 31, 31), (1, 128, 128), C64,
          padding="same", padding_mode="circular"),
    _case("1->1 9x9 128 c128", 2, (1, 1, 9, 9), (1, 128, 128), C128, padding=4),
    _case("1->1 15x15 s2 256 f64", 2, (1, 1, 15, 15), (1, 256, 256), F64, stride=2,
          padding=7),
    _case("1->1 5x5 d3 256 f32", 2, (1, 1, 5, 5), (1, 256, 256), F32, dilation=3,
          padding=6),
    # ---- 2-D, dense layers
    _case("3->16 3x3 32 f64", 2, (16, 3, 3, 3), (3, 32, 32), F64, padding=1, quick=True),
    _case("3->16 3x3 32 f64 b64", 2, (16, 3, 3, 3), (3, 32, 32), F64, 64, padding=1),
    _case("3->16 15x15 64 f32", 2, (16, 3, 15, 15), (3, 64, 64), F32, padding=7),
    _case("3->16 15x15 32 f32 b64", 2, (16, 3, 15, 15), (3, 32, 32), F32, 64,
          padding="same"),
    _case("64->64 3x3 56 f32", 2, (64, 64, 3, 3), (64, 56, 56), F32, padding=1, quick=True),
    _case("64->64 3x3 56 f64", 2, (64, 64, 3, 3), (64, 56, 56), F64, padding=1),
    _case("32->32 3x3 16 f32 b64", 2, (32, 32, 3, 3), (32, 16, 16), F32, 64, padding=1),
    _case("16->32 3x3 s2 64 f32", 2, (32, 16, 3, 3), (16, 64, 64), F32, stride=2, padding=1),
    _case("8->8 3x3 d4 64 f64", 2, (8, 8, 3, 3), (8, 64, 64), F64, dilation=4, padding=4),
    _case("4->4 3x3 64 c64", 2, (4, 4, 3, 3), (4, 64, 64), C64, padding=1),
    _case("3->3 7x7 128 replicate", 2, (3, 3, 7, 7), (3, 128, 128), F32, padding=3,
          padding_mode="replicate"),
    _case("8->8 15x15 64 f64", 2, (8, 8, 15, 15), (8, 64, 64), F64, padding=7),
    # ---- 2-D, grouped and depthwise
    _case("grouped 3->3 g3 15x15 256 f32", 2, (3, 1, 15, 15), (3, 256, 256), F32,
          padding=7, groups=3, quick=True),
    _case("grouped 16->16 g4 5x5 64 f64", 2, (16, 4, 5, 5), (16, 64, 64), F64, padding=2,
          groups=4),
    _case("grouped 32->64 g8 3x3 32 f32", 2, (64, 4, 3, 3), (32, 32, 32), F32, padding=1,
          groups=8),
    _case("dw 32 3x3 112 f64", 2, (32, 1, 3, 3), (32, 112, 112), F64, padding=1, groups=32,
          quick=True),
    _case("dw 32 3x3 112 f32", 2, (32, 1, 3, 3), (32, 112, 112), F32, padding=1, groups=32),
    _case("dw 32 15x15 64 f32", 2, (32, 1, 15, 15), (32, 64, 64), F32, padding=7, groups=32),
    _case("dw 8 7x7 32 f32 b64", 2, (8, 1, 7, 7), (8, 32, 32), F32, 64, padding=3, groups=8),
    _case("dw 16 31x31 64 f64 circular", 2, (16, 1, 31, 31), (16, 64, 64), F64,
          padding="same", groups=16, padding_mode="circular"),
    _case("dw x2 8->16 5x5 s2 64 f32", 2, (16, 1, 5, 5), (8, 64, 64), F32, stride=2,
          padding=2, groups=8),
    # ---- 2-D, transposed
    _case("T 16->8 4x4 s2 32 f32", 2, (16, 8, 4, 4), (16, 32, 32), F32, transposed=True,
          stride=2, padding=1, quick=True),
    _case("T 16->8 4x4 s2 32 f32 b64", 2, (16, 8, 4, 4), (16, 32, 32), F32, 64,
          transposed=True, stride=2, padding=1),
    _case("T 1->1 15x15 128 f64", 2, (1, 1, 15, 15), (1, 128, 128), F64, transposed=True,
          padding=7),
    _case("T 4->4 g4 9x9 s2 64 f32", 2, (4, 1, 9, 9), (4, 64, 64), F32, transposed=True,
          stride=2, padding=4, output_padding=1, groups=4),
    _case("T 2->2 3x3 c128 d2", 2, (2, 2, 3, 3), (2, 64, 64), C128, transposed=True,
          dilation=2),
    # ---- 3-D
    _case("3d 1->1 3^3 64 f32", 3, (1, 1, 3, 3, 3), (1, 64, 64, 64), F32, padding=1,
          quick=True),
    _case("3d 1->1 9^3 48 f64", 3, (1, 1, 9, 9, 9), (1, 48, 48, 48), F64, padding=4),
    _case("3d 4->4 3^3 32 f64", 3, (4, 4, 3, 3, 3), (4, 32, 32, 32), F64, padding=1),
    _case("3d 4->4 3^3 16 f32 b64", 3, (4, 4, 3, 3, 3), (4, 16, 16, 16), F32, 64,
          padding=1),
    _case("3d dw 8 5^3 32 f32", 3, (8, 1, 5, 5, 5), (8, 32, 32, 32), F32, padding=2,
          groups=8),
    _case("3d 1->1 7^3 s2 48 c64", 3, (1, 1, 7, 7, 7), (1, 48, 48, 48), C64, stride=2,
          padding=3),
    _case("3d T 4->2 2^3 s2 16 f32", 3, (4, 2, 2, 2, 2), (4, 16, 16, 16), F32,
          transposed=True, stride=2),
]
# fmt: on


def build(case: Case, method: str) -> convop.ConvOperator:
    """The operator of ``case`` evaluated by ``method``."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(case.weight_shape, dtype=case.dtype, generator=generator)
    make = CONSTRUCTORS[case.ndim, case.transposed]
    return make(weight, case.input_shape, method=method, **case.options)


def _check(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = float(b.abs().max())
    tol = 1e-3 if b.real.dtype == torch.float32 else 1e-9
    error = float((a - b).abs().max())
    if error > tol * max(scale, 1e-30):
        raise AssertionError(f"{what}: direct and FFT differ by {error:.2e} (scale {scale:.2e})")


def measure(case: Case, repeats: int, rounds: int) -> Row:
    """Time ``case`` with both methods and record auto's picks.

    The four timings (direct and FFT, forward and adjoint) take turns for ``rounds`` rounds
    and each keeps the median of its rounds: load from other processes, which comes and
    goes over seconds, then weighs on both methods alike instead of on whichever ran during
    a burst.
    """
    direct, fourier = build(case, "direct"), build(case, "fft")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(case.batch, *direct.input_shape, dtype=case.dtype, generator=generator)
    y = torch.randn(case.batch, *direct.output_shape, dtype=case.dtype, generator=generator)
    _check(fourier.apply(x), direct.apply(x), f"{case.name} forward")
    _check(fourier.apply_adjoint(y), direct.apply_adjoint(y), f"{case.name} adjoint")
    products = {
        ("direct", 0): lambda: direct.apply(x),
        ("direct", 1): lambda: direct.apply_adjoint(y),
        ("fft", 0): lambda: fourier.apply(x),
        ("fft", 1): lambda: fourier.apply_adjoint(y),
    }
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in products}
    for _ in range(rounds):
        for key, product in products.items():
            samples[key].append(timeit(product, repeats, budget=1.0))
    t = {key: statistics.median(values) for key, values in samples.items()}
    auto = build(case, "auto")
    device = torch.device("cpu")
    picks = auto_picks(auto, x, y)
    builtin = _cost.estimate(auto.geometry, case.dtype, device,
                             speed=_cost.builtin(case.dtype, device))  # fmt: skip
    return Row(case.name, t["direct", 0] + t["direct", 1], t["fft", 0] + t["fft", 1],
               picks, builtin.method, t["direct", 0], t["fft", 0])  # fmt: skip


def auto_picks(auto: convop.ConvOperator, x: torch.Tensor, y: torch.Tensor) -> str:
    """What ``auto`` runs on the batches ``x`` and ``y``: ``'fft'``, ``'direct'`` or
    ``'direct/fft'`` (forward/adjoint).

    One product each way first: where the cost model cannot tell, that product times both
    methods (convop._auto.trial) and keeps the faster for the batch size. The kept methods are
    read from the operator's record of them, else the model's pick stands.
    """
    auto.apply(x)
    auto.apply_adjoint(y)
    raced = getattr(auto, "_raced", {})
    size = 1 << max(x.shape[0] - 1, 0).bit_length()  # convop._auto.trial.size_class
    forward, adjoint = (raced.get((x.dtype, x.device, size, side), auto.method)
                        for side in (False, True))  # fmt: skip
    return forward if forward == adjoint else f"{forward}/{adjoint}"


def grid(quick: bool = False, *, echo: bool = False) -> list[Row]:
    """Measure every case (the ``--quick`` subset if ``quick``); print rows if ``echo``."""
    repeats, rounds = (3, 2) if quick else (3, 3)
    rows = []
    for case in CASES:
        if quick and not case.quick:
            continue
        row = measure(case, repeats, rounds)
        rows.append(row)
        if echo:
            print(_line(row), flush=True)
    return rows


class Summary(NamedTuple):
    """The grid in three numbers, for auto's picks and for the built-in constants' picks."""

    cases: int
    worst: float  # largest time(pick) / time(faster)
    beyond: int  # cases with a ratio above GOAL
    worst_builtin: float
    beyond_builtin: int


def summary(rows: Sequence[Row]) -> Summary:
    """Worst ratio and number of cases beyond :data:`GOAL`, for auto and the built-ins."""
    ratios = [row.ratio() for row in rows]
    builtin = [row.ratio(row.builtin) for row in rows]
    return Summary(len(rows), max(ratios, default=1.0), sum(r > GOAL for r in ratios),
                   max(builtin, default=1.0), sum(r > GOAL for r in builtin))  # fmt: skip


def shown(seconds: float) -> str:
    """``'41.2 us'``, ``'3.05 ms'``, ``'1.55 s'``: three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def _line(row: Row) -> str:
    flag = "  <-- beyond 1.2" if row.ratio() > GOAL else ""
    return (
        f"{row.case:32s} direct {shown(row.direct):>9s}  fft {shown(row.fft):>9s}  "
        f"auto {row.auto:6s} {row.ratio():5.2f}x   built-in {row.builtin:6s} "
        f"{row.ratio(row.builtin):5.2f}x{flag}"
    )


def markdown(rows: Sequence[Row]) -> str:
    """The grid as a markdown table."""
    lines = [
        "| case | direct | fft | auto | auto / faster | built-in | built-in / faster |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.case} | {shown(row.direct)} | {shown(row.fft)} | {row.auto} | "
            f"{row.ratio():.2f} | {row.builtin} | {row.ratio(row.builtin):.2f} |"
        )
    return "\n".join(lines)


def calibrate() -> str:
    """Resolve the constants "auto" uses for both precisions now (a probe or the cache file),
    so that no case's timing includes it; say where they came from and how long it took.
    """
    parts = []
    for dtype in (torch.float32, torch.float64):
        start = time.perf_counter()
        _, source = _calibrate.throughput(dtype, torch.device("cpu"))
        parts.append(f"{str(dtype)[6:]} {source} ({time.perf_counter() - start:.2f} s)")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid and print it, then the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset, fewer repeats")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--threads", type=int, help="torch's thread count (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"constants for auto: {calibrate()}")
    start = time.perf_counter()
    rows = grid(args.quick, echo=not args.markdown)
    if args.markdown:
        print(markdown(rows))
    result = summary(rows)
    print(
        f"\n{result.cases} cases in {time.perf_counter() - start:.0f} s: auto worst "
        f"{result.worst:.2f}x the faster method, {result.beyond} beyond {GOAL}; built-in "
        f"constants worst {result.worst_builtin:.2f}x, {result.beyond_builtin} beyond {GOAL}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
