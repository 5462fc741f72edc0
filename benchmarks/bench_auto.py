"""Is ``method="auto"`` ever far wrong? A wide grid of convolutions, direct against FFT.

Usage::

    python benchmarks/bench_auto.py             # full grid (a few minutes on 2 cores)
    python benchmarks/bench_auto.py --quick     # a subset, fewer repeats
    python benchmarks/bench_auto.py --threads 1 # torch on one thread

Every case is built with ``method="direct"`` and ``method="fft"``, checked to be the same map
(forward and adjoint), and the torch face timed on a batch, the four products interleaved;
a method's time is forward plus adjoint, what a solver pays per iteration. auto's pick is
what ``method="auto"`` runs (with calibration unless ``CONVOP_CALIBRATE=0``, and the method
a trial kept where the cost model could not tell); the built-in constants' pick is shown.
The grid spans 1-D to 3-D; dense, grouped and depthwise layers; strides, dilations,
transposed convolutions; four dtypes; kernels of 3 to 31 taps; batches of 1 and 64; four
padding modes. The goal (also goal 6 of ``bench_operators.py``): ``time(pick) /
time(faster)`` within 1.2 on every case.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import _harness as h  # benchmarks/, the script's own folder
import torch

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
    """The measurements of one case: seconds of each product on the whole batch."""

    case: str
    times: dict  # (method, adjoint) -> seconds
    auto: str  # what method="auto" ran: "fft", "direct", or "direct/fft" (forward/adjoint)
    builtin: str  # what the cost model picks with its built-in constants

    def seconds(self, pick: str) -> float:
        """Forward + adjoint time of ``pick`` (``'direct/fft'``: one per direction)."""
        forward, _, adjoint = pick.partition("/")
        return self.times[forward, False] + self.times[adjoint or forward, True]

    def ratio(self, pick: str | None = None) -> float:
        """``seconds(pick) / time(faster)``; ``pick`` defaults to auto's."""
        faster = min(self.seconds("direct"), self.seconds("fft"))
        return self.seconds(self.auto if pick is None else pick) / faster


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
    weight = torch.randn(case.weight_shape, dtype=case.dtype,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    make = CONSTRUCTORS[case.ndim, case.transposed]
    return make(weight, case.input_shape, method=method, **case.options)


def measure(case: Case, repeats: int) -> Row:
    """Check direct against FFT, time both ways in interleaved rounds, record auto's picks."""
    ops = {method: build(case, method) for method in ("direct", "fft", "auto")}
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(case.batch, *ops["direct"].input_shape, dtype=case.dtype, generator=generator)
    y = torch.randn(case.batch, *ops["direct"].output_shape, dtype=case.dtype, generator=generator)
    rtol = 1e-3 if case.dtype in (F32, C64) else 1e-9
    for adjoint, data in ((False, x), (True, y)):
        run = [op.apply_adjoint if adjoint else op.apply for op in (ops["fft"], ops["direct"])]
        h.check(run[0](data), run[1](data), f"{case.name} {'adjoint' if adjoint else 'forward'}"
                ": direct and FFT", rtol)  # fmt: skip
    products = {(method, adjoint): (lambda op=ops[method], a=adjoint:
                                    op.apply_adjoint(y) if a else op.apply(x))
                for method in ("direct", "fft") for adjoint in (False, True)}  # fmt: skip
    times = h.interleaved(products, repeats, budget=4.0 * repeats)
    device = torch.device("cpu")
    builtin = _cost.estimate(ops["auto"].geometry, case.dtype, device,
                             speed=_cost.builtin(case.dtype, device))  # fmt: skip
    return Row(case.name, times, auto_picks(ops["auto"], x, y), builtin.method)


def auto_picks(auto: convop.ConvOperator, x: torch.Tensor, y: torch.Tensor) -> str:
    """What ``auto`` runs on the batches ``x`` and ``y``: one product each way first (where
    the cost model cannot tell, it times both methods and keeps the faster for the batch
    size), then the kept methods from the operator's record of them, else its pick."""
    auto.apply(x)
    auto.apply_adjoint(y)
    raced = getattr(auto, "_raced", {})
    size = 1 << max(x.shape[0] - 1, 0).bit_length()  # convop._auto.trial.size_class
    forward, adjoint = (raced.get((x.dtype, x.device, size, side), auto.method)
                        for side in (False, True))  # fmt: skip
    return forward if forward == adjoint else f"{forward}/{adjoint}"


def calibrate() -> str:
    """Resolve the constants "auto" uses for both precisions now (a probe or the cache file),
    so that no case's timing includes it; say where they came from and how long it took."""
    parts = []
    for dtype in (torch.float32, torch.float64):
        start = time.perf_counter()
        _, source = _calibrate.throughput(dtype, torch.device("cpu"))
        parts.append(f"{str(dtype)[6:]} {source} ({time.perf_counter() - start:.2f} s)")
    return ", ".join(parts)


def goal_grid(report: h.Report, goal: int = 1) -> None:
    """Every case (the quick subset with ``--quick``): a table, auto's goal row and the
    built-in constants' row (information)."""
    if getattr(report.settings, "threads", None):
        torch.set_num_threads(report.settings.threads)
    report.note(f"constants for auto: {calibrate()}; torch threads {torch.get_num_threads()}")
    start, rows, lines = time.perf_counter(), [], []
    for case in CASES:
        if case.quick or not report.quick:
            with report.section(goal, f"auto / faster method, {case.name}"):
                row = measure(case, 6 if report.quick else 9)
                rows.append(row)
                lines.append([row.case, h.shown(row.seconds("direct")), h.shown(
                    row.seconds("fft")), row.auto, f"{row.ratio():.2f}", row.builtin,
                    f"{row.ratio(row.builtin):.2f}"])  # fmt: skip
                report.say(f"  {row.case:32s}" + "".join(f"{c:>12s}" for c in lines[-1][1:]))
    elapsed = time.perf_counter() - start
    report.table("auto's picks (time: forward + adjoint)", ["case", "direct", "fft", "auto",
                 "auto / faster", "built-in", "built-in / faster"], lines)  # fmt: skip
    grid = "quick" if report.quick else "full"
    for who, picks, bound in (
        ("auto", [r.ratio() for r in rows], GOAL),
        ("built-in constants", [r.ratio(r.builtin) for r in rows], None),
    ):
        report.goal(goal, f"{who} / faster method, {grid} grid", max(picks, default=h.NAN),
                    bound, anchor="the faster of direct and FFT",
                    detail=f"{len(picks)} cases, {sum(p > GOAL for p in picks)} beyond {GOAL} "
                    f"(grid timed in {elapsed:.0f} s)")  # fmt: skip


def options(parser) -> None:
    parser.add_argument("--threads", type=int, help="torch's thread count (default: torch's)")


if __name__ == "__main__":
    sys.exit(h.main(__doc__, [h.Section("the grid", goal_grid, (1,))], options=options))
