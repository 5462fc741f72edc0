"""Distributed products: convop's slab-split operator over MPI ranks against one rank.

Usage (from a clone, after ``make install``)::

    M=".venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_distributed.py"
    $M                                # 1x256^3, 9^3 kernel (~2 min)
    $M --quick                        # 1x96^3, a few seconds
    $M --markdown                     # tables for docs/benchmarks.md
    $M --bandwidth-gbs 25 --latency-us 2

Case: ``op = convop.conv3d(kernel, (1, n, n, n), padding="same")``, float32, a 9^3 kernel;
torch on one thread per rank. Checked first (sampled voxels in float64, the dot-product test;
torch face, one-rank and P-rank products against the serial numpy face), then timed: a
call's time is the slowest rank's, after a barrier. In interleaved rounds (ratios: medians
of same-round ratios): on rank 0 alone, the others asleep in a barrier, the serial numpy face
(the anchor), the torch face and ``op.to_pylops_mpi(comm=MPI.COMM_SELF)``; on every rank,
``D @ x`` and ``D.H @ y`` of ``D = op.to_pylops_mpi()``. Afterwards, one after the other:
the halo exchange alone (``D._core._gather``, ``D._core._reduce``), the local convolution
of the extended slab, the bare halo messages. Every row says the share of the CPUs other
processes used (``--wait-quiet`` waits for a quiet second first). Goals (2 ranks): 1. P=2
product <= 0.6x the P=1 product; 2. halo exchange <= 10% of the product. A model fitted on
the measured compute rate then predicts 8 to 64 ranks on 1024^3 and 2048^3 volumes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread per rank

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import torch
from mpi4py import MPI

import convop

torch.set_num_threads(1)

WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()
KERNEL = 9
RTOL = 1e-4  # float32 products against the serial numpy face, relative to max |y|
GOAL_RATIO, GOAL_SHARE = 0.6, 0.10  # P=2 / P=1 product; halo exchange / product
BANDWIDTHS = (1.0, 10.0, 25.0)  # GB/s, in the model table
MODEL_SIZES, MODEL_RANKS = (1024, 2048), (8, 16, 32, 64)


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def watch(comm) -> h.Watch:
    """Others' CPU share, the ranks of ``comm`` counting as own (collective over ``comm``;
    for rank 0 alone the sleeping ranks count as others and add next to nothing)."""
    return h.Watch(lambda: comm.allreduce(h.own_cpu(), op=MPI.SUM))


def sleeping_barrier(comm) -> None:
    """A barrier whose waiting ranks sleep instead of spinning (MPICH's blocking barrier
    polls at full speed, which would take a core from the rank still working)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


@dataclass
class Product:
    """Calls timed on rank 0 alone (``alone``) or on every rank: the slowest rank's times."""

    group: str
    what: str
    fn: Callable[[], object] | None  # None on ranks that do not take part
    alone: bool = False
    comm: MPI.Comm = field(default_factory=lambda: WORLD)
    times: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)

    def call(self, timed: bool = True) -> None:
        """One call, collective over ``comm``, after a barrier."""
        self.comm.Barrier()
        w, elapsed = watch(self.comm), 0.0
        if self.fn is not None:
            start = time.perf_counter()
            self.fn()
            elapsed = time.perf_counter() - start
        if self.alone:
            sleeping_barrier(self.comm)
        elapsed = self.comm.allreduce(elapsed, op=MPI.MAX)
        other = w.others()
        if timed:
            self.times.append(elapsed)
            self.others.append(other)

    def record(self, report: h.Report, case: str, note: str = "") -> float:
        t = self.times
        return report.record(self.group, case, self.what, statistics.median(t),
                             f"{h.shown(min(t))}-{h.shown(max(t))} (n={len(t)}), others "
                             f"{max(self.others):.0%}" + (f"; {note}" if note else ""),
                             )  # fmt: skip


def alone(group: str, what: str, fn: Callable[[], object], repeats: int, comm=WORLD) -> Product:
    """``fn`` called ``repeats`` times after a warm-up call, collective over ``comm``; others'
    share over all the calls."""
    p = Product(group, what, fn, comm=comm)
    p.call(timed=False)
    w = watch(comm)
    for _ in range(repeats):
        p.call()
    p.others = [w.others()]
    return p


def ratio(a: Product, b: Product) -> float:
    """Median over the rounds of ``time(a) / time(b)`` (both timed in the same round)."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def checked(op, x: np.ndarray, v: np.ndarray, kernel: np.ndarray) -> dict:
    """Rank 0 alone: the serial operator (sampled voxels of the 'same' correlation in
    float64: corners, faces, random interior; the dot-product test), its torch face and the
    one-rank distributed operator, checked. Returns the reference products."""
    y = (op @ x.ravel()).reshape(op.output_shape)
    z = op.rmatvec(v.ravel()).reshape(op.input_shape)
    n, half = x.shape[-1], KERNEL // 2
    padded, k = np.pad(x[0], half).astype(np.float64), kernel[0, 0].astype(np.float64)
    points = [(0, 0, 0), (n - 1, n - 1, n - 1), (0, n // 2, n - 1), (half, 1, n - 2)]
    points += [tuple(p) for p in np.random.default_rng(1).integers(0, n, size=(60, 3))]
    direct = [float((padded[a : a + KERNEL, b : b + KERNEL, c : c + KERNEL] * k).sum())
              for a, b, c in points]  # fmt: skip
    h.check([y[0][p] for p in points], direct, "serial operator at sampled voxels", RTOL,
            float(np.abs(y).max()))  # fmt: skip
    dots = [float(np.dot(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))
            for a, b in ((y, v), (x, z))]  # fmt: skip
    h.check(dots[0], dots[1], "dot-product test <op x, v> = <x, op^H v>", RTOL,
            float(np.linalg.norm(y) * np.linalg.norm(v)))  # fmt: skip
    tx, tv = torch.from_numpy(x)[None], torch.from_numpy(v)[None]  # (1, 1, n, n, n)
    D1 = op.to_pylops_mpi(comm=MPI.COMM_SELF)
    for what, got, want in (("torch face op.apply", op.apply(tx)[0], y),
                            ("torch face op.apply_adjoint", op.apply_adjoint(tv)[0], z),
                            ("distributed on one rank, D @ x", D1.gather(D1 @ D1.scatter(x)), y),
                            ("distributed on one rank, D.H @ y",
                             D1.H.gather(D1.H @ D1.H.scatter(v)), z)):  # fmt: skip
        h.check(got, want, what, RTOL)
    return {"y": y, "z": z}


def on_rank0(fn: Callable[[], object]) -> object:
    """``fn()`` on rank 0 while the others sleep; its failure stops every rank."""
    out, problem = None, None
    if RANK == 0:
        try:
            out = fn()
        except AssertionError as exc:
            problem = str(exc)
    sleeping_barrier(WORLD)
    if (problem := WORLD.bcast(problem, root=0)) is not None:
        raise AssertionError(problem)
    return out


def halo_messages(D) -> Callable[[], None]:
    """The bare halo messages of ``D @ x``: the same bytes between the same ranks as
    ``D._core._gather``, from preallocated buffers, no copies."""
    core = D._core
    receives, sends = core.transfers()
    face = math.prod(core.conv_in.shape) // core.conv_in.shape[1 + D.axis]
    incoming = {q: np.empty(len(t) * face, np.float32) for q, t in receives.items() if q != RANK}
    outgoing = {r: np.ones(len(t) * face, np.float32) for r, t in sends.items() if r != RANK}

    def run() -> None:
        requests = [WORLD.Irecv(b, source=q, tag=77) for q, b in incoming.items()]
        requests += [WORLD.Isend(b, dest=r, tag=77) for r, b in outgoing.items()]
        MPI.Request.Waitall(requests)

    return run


def run(report: h.Report) -> None:
    """Checks, the interleaved products, the parts of the product, the goals and the model."""
    n, repeats = (96 if report.quick else 256), report.repeats
    many = max(repeats, 15)
    case = f"1x{n}^3 float32, {KERNEL}^3 kernel, 'same'"
    report.note(f"case: {case}; {SIZE} ranks x {torch.get_num_threads()} torch thread, "
                f"{' '.join(MPI.Get_library_version().split()[:3])}; {repeats} interleaved "
                f"rounds, {many} repeats for the exchange rows")  # fmt: skip
    torch.manual_seed(0)
    kernel = torch.randn(1, 1, KERNEL, KERNEL, KERNEL, dtype=torch.float32)
    op = convop.conv3d(kernel, (1, n, n, n), padding="same")
    x = v = None
    if RANK == 0:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(op.input_shape, dtype=np.float32)
        v = rng.standard_normal(op.output_shape, dtype=np.float32)
    ref = on_rank0(lambda: checked(op, x, v, kernel.numpy()))
    D = op.to_pylops_mpi()
    DH = D.H
    xd, vd = D.scatter(x, root=0), DH.scatter(v, root=0)
    y, z = D.gather(D @ xd, root=0), DH.gather(DH @ vd, root=0)
    on_rank0(lambda: [h.check(y, ref["y"], f"distributed on {SIZE} ranks, D @ x", RTOL),
                      h.check(z, ref["z"], f"distributed on {SIZE} ranks, D.H @ y", RTOL),
                      ])  # fmt: skip
    ref = y = z = None  # free them
    halo, halo_h = WORLD.allgather(D.halo_bytes), WORLD.allgather(DH.halo_bytes)
    slabs = WORLD.allgather(D.local_input_shape[1 + D.axis])
    face = n * n * 4  # C = 1 channel of n x n float32 samples per row of the split axis
    expected = [((r > 0) + (r < SIZE - 1)) * (KERNEL - 1) // 2 * face for r in range(SIZE)]
    agree = "= D.halo_bytes" if halo == expected and halo_h == expected else "DIFFERENT"
    report.note(f"checks passed (serial = direct voxels, dot-product test, torch face = numpy "
                f"face, distributed = serial, to {RTOL:g} x max |y|); P={SIZE}: {D!r}, split "
                f"axis {D.axis}, rows per rank {slabs}, "
                f"local method {D._core.local(conj=False).method}; halo bytes per product and "
                f"rank: D @ x {halo}, D.H @ y {halo_h}; the model's (k-1)/2 rows x face x "
                f"itemsize per neighbour: {expected} ({agree})")  # fmt: skip
    if report.settings.wait_quiet > 0:
        busy = WORLD.bcast(h.wait_for_quiet(report.settings.wait_quiet) if RANK == 0 else 0.0)
        sleeping_barrier(WORLD)
        report.note(f"CPUs {busy:.0%} busy in the last second before the products (waited "
                    f"<= {report.settings.wait_quiet:g} s)")  # fmt: skip

    # products: P=1 (rank 0 alone) and P=size, interleaved round by round
    fns: list = [None] * 6
    if RANK == 0:
        xf, vf, tx, tv = x.ravel(), v.ravel(), torch.from_numpy(x)[None], torch.from_numpy(v)[None]
        D1 = op.to_pylops_mpi(comm=MPI.COMM_SELF)
        D1H = D1.H
        xd1, vd1 = D1.scatter(x), D1H.scatter(v)
        fns = [lambda: op @ xf, lambda: op.rmatvec(vf), lambda: op.apply(tx),
               lambda: op.apply_adjoint(tv), lambda: D1 @ xd1, lambda: D1H @ vd1]  # fmt: skip
    names = ["serial numpy face op @ x (anchor)", "serial numpy face op.rmatvec(v) (anchor)",
             "serial torch face op.apply", "serial torch face op.apply_adjoint",
             "distributed, 1 rank: D @ x", "distributed, 1 rank: D.H @ y"]  # fmt: skip
    products = [Product("P=1", name, fn, alone=True) for name, fn in zip(names, fns)]
    products += [Product(f"P={SIZE}", "distributed D @ x", lambda: D @ xd),
                 Product(f"P={SIZE}", "distributed D.H @ y", lambda: DH @ vd)]  # fmt: skip
    with torch.no_grad():
        for r in range(repeats + 1):
            for product in products:
                product.call(timed=r > 0)
    serial, serial_h, _, _, dist1, dist1_h, fwd, adj = products
    fr, ar, fs, as_ = (
        ratio(fwd, dist1),
        ratio(adj, dist1_h),
        ratio(fwd, serial),
        ratio(adj, serial_h),
    )
    anchors = [None, None, serial, serial_h, serial, serial_h]
    for p, a in zip(products[:6], anchors):
        p.record(report, case, "" if a is None else f"{ratio(p, a):.2f}x anchor")
    t_fwd = fwd.record(report, case, f"{fr:.2f}x P=1 distributed, {fs:.2f}x serial")
    t_adj = adj.record(report, case, f"{ar:.2f}x P=1 distributed, {as_:.2f}x serial")

    # the parts of the product, alone
    if RANK == 0:  # the others sleep
        t1 = torch.from_numpy(D1.to_local(D1.scatter(x)))
        ext1 = D1._core._gather(t1)
        for what, fn, whole, of in (
            ("1 rank: _gather (pad + copy, no messages)", lambda: D1._core._gather(t1),
             statistics.median(dist1.times), "D @ x"),
            ("1 rank: _reduce (copy, no messages)", lambda: D1._core._reduce(ext1),
             statistics.median(dist1_h.times), "D.H @ y"),
        ):  # fmt: skip
            p = alone("P=1", what, fn, many, MPI.COMM_SELF)
            p.record(report, case, f"{statistics.median(p.times) / whole:.1%} of {of}")
    sleeping_barrier(WORLD)
    t = torch.from_numpy(D.to_local(xd))
    ext = D._core._gather(t)
    local = D._core.local(conj=False)
    parts = [("halo exchange: D._core._gather", lambda: D._core._gather(t), many, t_fwd, "D @ x"),
             ("halo exchange: D._core._reduce", lambda: D._core._reduce(ext), many, t_adj,
              "D.H @ y"),
             ("local convolution alone (extended slab)",
              lambda: local._product(ext[None], adjoint=False), repeats, t_fwd, "D @ x"),
             ]  # fmt: skip
    share = {}
    for what, fn, count, whole, of in parts:
        p = alone(f"P={SIZE}", what, fn, count)
        share[what] = p.record(report, case, f"{statistics.median(p.times) / whole:.1%} of "
                               f"{of}") / whole  # fmt: skip
    bare_share = 0.0
    if max(halo):
        p = alone(f"P={SIZE}", "bare halo messages (Isend/Irecv)", halo_messages(D), many)
        seconds = statistics.median(p.times)
        bare_share = seconds / min(t_fwd, t_adj)
        p.record(report, case, f"{mib(max(halo))} max per rank: {max(halo) / seconds / 1e9:.2f} "
                 f"GB/s, {bare_share:.2%}")  # fmt: skip

    # goals and model
    gs, rs = share["halo exchange: D._core._gather"], share["halo exchange: D._core._reduce"]
    ideal = (n / SIZE + KERNEL - 1) / (n + KERNEL - 1)
    two = SIZE == 2  # the goals are stated for 2 ranks
    report.goal(1, f"P={SIZE} product / P=1 product, {case}", max(fr, ar, fs, as_),
                GOAL_RATIO if two else None, anchor="P=1: one-rank distributed, serial numpy",
                detail=f"D @ x {fr:.2f}x, D.H @ y {ar:.2f}x the one-rank distributed; {fs:.2f}x, "
                f"{as_:.2f}x the serial; the halo recompute alone allows {ideal:.3f}x",
                )  # fmt: skip
    report.goal(2, f"halo exchange / product, {case}", max(gs, rs), GOAL_SHARE if two else None,
                unit="%", anchor=f"the P={SIZE} product", detail=f"_gather {gs:.1%} of D @ x, "
                f"_reduce {rs:.1%} of D.H @ y (the bare messages: {bare_share:.2%}); "
                f"{max(halo)} bytes ({mib(max(halo))}) received per rank per product at most",
                )  # fmt: skip
    exchange = (gs * t_fwd + rs * t_adj) / 2
    t1 = (statistics.median(dist1.times) + statistics.median(dist1_h.times)) / 2
    model(report, n, t1, (t_fwd + t_adj) / 2, exchange, op.method, ideal)


def model(report: h.Report, n: int, t1: float, tp: float, exchange: float, method: str,
          ideal: float) -> None:  # fmt: skip
    """Per product on P ranks: compute + latency + halo bytes / bandwidth (no overlap).

    compute = C (N/P + span) N^2 / R: each rank convolves its slab extended by the halo
    rows (span = k - 1 = 8); R = C (n + span) n^2 / T1 is the one-rank distributed
    operator's measured rate (its slab is extended by the 'same' padding rows), the mean of
    D @ x and D.H @ y. halo bytes = span * C * N^2 * itemsize per interior rank and product:
    what D.halo_bytes counts, (k-1)/2 rows from each neighbour.
    """
    c, itemsize, span = 1, 4, KERNEL - 1
    bandwidth, latency = report.settings.bandwidth_gbs, report.settings.latency_us * 1e-6
    rate, predicted = c * (n + span) * n * n / t1, t1 * ideal + exchange
    report.note(
        f"performance model, per product: T_P(N) = C (N/P + {span}) N^2 / R + latency + "
        f"{span} C N^2 * {itemsize} B / bandwidth; R = {rate / 1e6:.1f} M voxels/s per rank "
        f"(one-rank distributed operator, {method}, mean of D @ x and D.H @ y: {h.shown(t1)} "
        f"for 1x{n}^3 + padding rows); latency {latency * 1e6:g} us; check on this run: "
        f"P={SIZE} predicted {h.shown(t1)} x {ideal:.3f} + exchange {h.shown(exchange)} = "
        f"{h.shown(predicted)}, measured {h.shown(tp)} ({tp / predicted:.2f}x the model). "
        "Assumptions: compute proportional to the voxels of the extended slab at the measured "
        "rate (FFT's log factor ignored: per voxel, a 2048^2-face slab costs somewhat more than "
        "the 256^3 measured here, for P=1 as for P ranks); one core per rank; the exchange does "
        "not overlap the compute (convop gathers, then convolves); both neighbours' messages "
        "travel at once on a full-duplex link; host copies of the halo and the page faults of "
        "fresh buffers ignored; T_1 is hypothetical for 2048^3 (32 GiB per vector)"
    )  # fmt: skip
    bws = sorted(set(BANDWIDTHS) | {bandwidth})
    header = (["volume", "P", "rows/rank", "compute/rank", "halo/rank"]
              + [f"comm @{b:g} GB/s" for b in bws] + [f"speed-up @{b:g} GB/s" for b in bws]
              + [f"efficiency @{bandwidth:g} GB/s", f"comm share @{bandwidth:g} GB/s"]
              )  # fmt: skip
    rows = []
    for big in MODEL_SIZES:
        t_one, halo = c * (big + span) * big * big / rate, span * c * big * big * itemsize
        rows.append([f"{big}^3", "1", str(big), h.shown(t_one), "0"] + [""] * (2 * len(bws) + 2))
        for p in MODEL_RANKS:
            compute = c * (big / p + span) * big * big / rate
            comm = {b: latency + halo / (b * 1e9) for b in bws}
            speed = {b: t_one / (compute + comm[b]) for b in bws}
            rows.append([f"{big}^3", str(p), f"{big / p:g} + {span}", h.shown(compute), mib(halo)]
                        + [h.shown(comm[b]) for b in bws] + [f"{speed[b]:.1f}x" for b in bws]
                        + [f"{speed[bandwidth] / p:.0%}",
                           f"{comm[bandwidth] / (compute + comm[bandwidth]):.2%}"])  # fmt: skip
    report.table("performance model (per product, forward and adjoint alike)", header, rows)


def options(parser) -> None:
    parser.add_argument("--bandwidth-gbs", type=float, default=10.0,
                        help="interconnect bandwidth of the model, GB/s (default 10)")  # fmt: skip
    parser.add_argument("--latency-us", type=float, default=10.0,
                        help="message latency of the model, us (default 10)")  # fmt: skip
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                        help="before the products, wait up to this long for a quiet second "
                        "(CPUs <= 10%% busy; 0: don't wait; default 60)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(
        h.main(
            __doc__,
            [h.Section(f"{SIZE} ranks against one", run, (1, 2))],
            options=options,
            repeats=(7, 5),
            fresh=False,
            echo=RANK == 0,
            own=lambda: WORLD.allreduce(h.own_cpu(), op=MPI.SUM),
        )
    )
