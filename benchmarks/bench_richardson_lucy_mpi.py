"""Richardson–Lucy over MPI ranks, per iteration: goal 7 of ``bench_richardson_lucy.py``.

Usage (from a clone, after ``make install``)::

    M=".venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_richardson_lucy_mpi.py"
    $M             # 1x256^3 (~3 min)
    $M --quick     # 1x96^3, a few seconds

``bench_richardson_lucy.py`` runs it under ``mpiexec -n 2`` as its goal 7 section (with
``--json FILE``, where rank 0 leaves its rows), so its ratio sits in that run's table.

Case: ``op = convop.conv3d(flipped psf, (1, n, n, n), padding="same")``, float32, the 15x9x9
Gaussian PSF of the other goals, Poisson counts of mean 50 to 150; torch on one thread per
rank. In interleaved rounds (one untimed, then ``--repeats``) of ``convop.richardson_lucy``:
on rank 0 alone, the others asleep in a barrier, the serial operator (torch face) and
``op.to_pylops_mpi(comm=MPI.COMM_SELF)``; on every rank ``op.to_pylops_mpi()`` with ``y``
from ``D.scatter(y, output=True)``. Each takes, per round, a call of one iteration and one
of ``--iterations`` ``k`` (the slowest rank's times, no callback): per iteration ``(T(k) -
T(1)) / (k - 1)``, the set-up (``A^T 1``, the first product, the checks) left out; ratios
are medians of same-round ratios. The untimed round's results are checked: distributed
(gathered) = serial. Goal 7: P=2 <= 0.6x P=1, against both P=1 rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread per rank

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import torch
from bench_distributed import on_rank0, sleeping_barrier, watch  # sets one torch thread
from bench_richardson_lucy import PSF_SHAPE, PSF_SIGMAS, flipped, gaussian_psf
from mpi4py import MPI

import convop

WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()
GOAL_RATIO = 0.6  # P=2 / P=1, per iteration
RTOL = 1e-4  # distributed RL against serial RL, relative to max |x|


@dataclass
class Solve:
    """Calls of ``fn(iterations)`` (None on ranks that do not take part): per round one
    iteration, then ``k``; the slowest rank's times."""

    group: str
    what: str
    fn: Callable[[int], object] | None
    alone: bool = False
    steps: list[float] = field(default_factory=list)  # (T(k) - T(1)) / (k - 1)
    calls: list[float] = field(default_factory=list)  # T(k)
    others: list[float] = field(default_factory=list)

    def timed_call(self, iterations: int) -> tuple[float, object]:
        """One call, collective: ``(the slowest rank's seconds, what fn returned)``."""
        WORLD.Barrier()
        elapsed, out = 0.0, None
        if self.fn is not None:
            start = time.perf_counter()
            out = self.fn(iterations)
            elapsed = time.perf_counter() - start
        if self.alone:
            sleeping_barrier(WORLD)
        return WORLD.allreduce(elapsed, op=MPI.MAX), out

    def call(self, k: int, timed: bool = True) -> object:
        """A round: ``T(1)`` and ``T(k)``; returns the ``k``-iteration result."""
        w = watch(WORLD)
        one, _ = self.timed_call(1)
        many, out = self.timed_call(k)
        other = w.others()
        if timed:
            self.steps.append((many - one) / (k - 1))
            self.calls.append(many)
            self.others.append(other)
        return out

    def record(self, report: h.Report, case: str, note: str) -> float:
        s = self.steps
        return report.record(self.group, case, self.what, statistics.median(s),
                             f"per iteration, {h.shown(min(s))}-{h.shown(max(s))} (n={len(s)}); "
                             f"per call {h.shown(statistics.median(self.calls))}; others "
                             f"{max(self.others):.0%}" + (f"; {note}" if note else ""),
                             )  # fmt: skip


def ratio(a: Solve, b: Solve) -> float:
    return statistics.median(x / y for x, y in zip(a.steps, b.steps))


def run(report: h.Report) -> None:
    n, k = (96 if report.quick else 256), report.settings.iterations
    if k < 2:
        raise ValueError(f"--iterations must be >= 2, got {k}")
    case = f"1x{n}^3 float32, {'x'.join(map(str, PSF_SHAPE))} PSF, {k} RL its"
    psf = gaussian_psf(PSF_SHAPE, PSF_SIGMAS).astype(np.float32)
    op = convop.conv3d(flipped(psf), (1, n, n, n), padding="same")
    y = None
    if RANK == 0:
        rng = np.random.default_rng(0)
        y = rng.poisson(50 + 100 * rng.random(op.output_shape)).astype(np.float32)
    D = op.to_pylops_mpi()
    yd = D.scatter(y, root=0, output=True)
    fns: list = [None, None]
    if RANK == 0:
        ty, D1 = torch.from_numpy(y), op.to_pylops_mpi(comm=MPI.COMM_SELF)
        yd1 = D1.scatter(y, output=True)
        fns = [
            lambda its: convop.richardson_lucy(op, ty, its).x,
            lambda its: D1.gather(convop.richardson_lucy(D1, yd1, its).x, output=False),
        ]
    solves = [Solve("P=1", "serial convop.richardson_lucy(op, y), torch face (anchor)", fns[0],
                    alone=True),
              Solve("P=1", "distributed, 1 rank (COMM_SELF)", fns[1], alone=True),
              Solve(f"P={SIZE}", f"distributed, {SIZE} ranks",
                    lambda its: convop.richardson_lucy(D, yd, its).x)]  # fmt: skip
    with torch.no_grad():
        first = [s.call(k, timed=False) for s in solves]
        x = D.gather(first[2], root=0, output=False)
        on_rank0(lambda: [h.check(got, first[0], what, RTOL) for got, what in (
            (first[1], "distributed on 1 rank = serial RL"),
            (x, f"distributed on {SIZE} ranks = serial RL"))])  # fmt: skip
        first = x = None
        for _ in range(report.repeats):
            for s in solves:
                s.call(k)
    serial, one, many = solves
    span = PSF_SHAPE[D.axis] - 1
    ideal = (n / SIZE + span) / (n + span)
    rows = WORLD.allgather(D.local_input_shape[1 + D.axis])
    report.note(f"goal 7, {case}: {SIZE} ranks x {torch.get_num_threads()} torch thread, "
                f"{' '.join(MPI.Get_library_version().split()[:3])}; {D!r}, split axis "
                f"{D.axis}, rows per rank {rows}; checked: distributed RL (1 and {SIZE} ranks, "
                f"gathered) = serial RL to {RTOL:g} x max |x|; {report.repeats} interleaved "
                f"rounds")  # fmt: skip
    serial.record(report, case, "")
    one.record(report, case, f"{ratio(one, serial):.2f}x serial")
    a, b = ratio(many, one), ratio(many, serial)
    many.record(report, case, f"{a:.2f}x P=1 distributed, {b:.2f}x serial")
    report.goal(7, f"RL over MPI, P={SIZE} / P=1 per iteration, {case}", max(a, b),
                GOAL_RATIO if SIZE == 2 and not report.quick else None,
                anchor="P=1: one-rank distributed, serial",
                detail=f"{a:.2f}x the one-rank distributed RL, {b:.2f}x the serial RL; per "
                f"iteration {h.shown(statistics.median(many.steps))} against "
                f"{h.shown(statistics.median(one.steps))} and "
                f"{h.shown(statistics.median(serial.steps))}; the halo recompute alone "
                f"allows {ideal:.3f}x")  # fmt: skip


def options(parser) -> None:
    parser.add_argument("--iterations", type=int, default=5,
                        help="RL iterations of the longer call (>= 2; default 5)")  # fmt: skip
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="rank 0 writes the rows there (for bench_richardson_lucy.py)",
    )


def finish(report: h.Report) -> None:
    if RANK == 0 and report.settings.json:
        with open(report.settings.json, "w") as out:
            out.write(json.dumps(report.dump()))


if __name__ == "__main__":
    sys.exit(
        h.main(
            __doc__,
            [h.Section(f"{SIZE} ranks against one", run, (7,))],
            options=options,
            repeats=(2, 3),
            fresh=False,
            finish=finish,
            echo=RANK == 0,
            own=lambda: WORLD.allreduce(h.own_cpu(), op=MPI.SUM),
        )
    )
