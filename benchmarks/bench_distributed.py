"""Distributed products: convop's slab-split operator over MPI ranks against one rank.

Usage (from a clone, after ``make install``)::

    M=".venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_distributed.py"
    $M                                # 1x256^3, 9^3 kernel (~2 min)
    $M --quick                        # 1x96^3, a few seconds
    $M --markdown                     # tables for docs/benchmarks.md
    $M --bandwidth-gbs 25 --latency-us 2

Case: a float32 volume ``(1, n, n, n)`` and a ``(1, 1, 9, 9, 9)`` kernel, 'same' zero padding,
``op = convop.conv3d(kernel, (1, n, n, n), padding="same")`` (convop's "auto" picks FFT).
Every rank runs torch with one thread (``OMP_NUM_THREADS=1`` unless set, and
``torch.set_num_threads(1)``), so P ranks use P cores.

Measured, in one run:

1. P=1 references, on rank 0 alone (the other ranks wait in a sleeping barrier, not a
   spinning one): the serial operator's numpy face (``op @ x``, ``op.rmatvec(v)``; the
   anchor) and torch face (``op.apply``, ``op.apply_adjoint``), and the distributed operator
   on a one-rank communicator (``op.to_pylops_mpi(comm=MPI.COMM_SELF)``);
2. P=size: ``D @ x`` and ``D.H @ y`` of ``D = op.to_pylops_mpi()`` on ``COMM_WORLD``; the
   halo exchange alone, ``D._core._gather`` (forward) and ``D._core._reduce`` (adjoint),
   as a share of the product; the local convolution of the extended slab alone; the bare
   halo messages (Isend/Irecv of the same bytes between the same ranks, no copies); halo
   bytes per rank (``D.halo_bytes``).

Every result is checked first: the serial operator against a direct evaluation of sampled
output voxels and the dot-product test for its adjoint; torch face, one-rank and P-rank
distributed products against the serial numpy face (max error <= 1e-4 x max |y|).

Timing: a call's time is the slowest rank's (``comm.allreduce(t, MPI.MAX)``), each call
after a ``comm.Barrier()``; rows give the median (and the range) of ``--repeats`` calls after
one warm-up call. The eight products (six P=1, two P=size) are timed in *interleaved
rounds*, one call of each per round, so that P=1 and P=size see the same background load;
their ratios are medians over the rounds of same-round ratios. The parts of the product
(exchange, local convolution, bare messages) are timed afterwards, one after the other.
The share of the CPUs used by *other* processes is measured (``/proc/stat`` minus the
ranks' own CPU time: per call for the interleaved products, whose rows show the largest;
over all calls for the other rows) and shown with each row; on a small
shared machine it decides whether the numbers mean anything (``--wait-quiet`` waits for
a quiet second first).

Goals (for 2 ranks): P=2 product <= 0.6x the P=1 product; halo exchange <= 10% of the
product. A performance model fitted on this run's compute rate then predicts P = 8 ... 64
ranks on 1024^3 and 2048^3 volumes (printed at the end; its assumptions with it).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread per rank

import argparse
import datetime
import math
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import mpi4py
import numpy as np
import torch
from mpi4py import MPI

import convop

torch.set_num_threads(1)

WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()
KERNEL = 9
RTOL = 1e-4  # float32 products against the serial numpy face, relative to max |y|
GOAL_RATIO = 0.6  # P=2 product / P=1 product
GOAL_SHARE = 0.10  # halo exchange / product
QUIET = 0.10  # others' share of the CPUs below which a measurement counts as quiet
BANDWIDTHS = (1.0, 10.0, 25.0)  # GB/s, printed in the model table
MODEL_SIZES = (1024, 2048)
MODEL_RANKS = (8, 16, 32, 64)


@dataclass
class Row:
    group: str
    what: str
    seconds: float
    low: float
    high: float
    runs: int
    other: float  # share of the CPUs other processes used meanwhile
    note: str = ""


ROWS: list[Row] = []


def say(*args: object) -> None:
    if RANK == 0:
        print(*args, flush=True)


def shown(seconds: float) -> str:
    """``'41.2 us'``, ``'3.05 ms'``, ``'1.55 s'``: three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


# ---------------------------------------------------------------------- CPU load of others
def system_busy() -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # idle, iowait excluded


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """Share of the machine's CPUs that processes other than the ranks of ``comm`` used
    between :meth:`start` and :meth:`stop` (collective over ``comm``; rank 0 of ``comm``
    reads ``/proc/stat``). For rank 0 alone (``COMM_SELF``) the waiting ranks count as
    others; they sleep, so they add next to nothing."""

    def __init__(self, comm) -> None:
        self.comm = comm

    def start(self) -> None:
        self.cpu = own_cpu()
        self.busy, self.total = system_busy()

    def stop(self) -> float:
        ours = self.comm.allreduce(own_cpu() - self.cpu, op=MPI.SUM)
        busy, total = system_busy()
        return max(0.0, busy - self.busy - ours) / max(1e-9, total - self.total)


def wait_for_quiet(longest: float) -> float:
    """On every rank: wait (at most ``longest`` seconds) for a second in which other
    processes leave the CPUs idle enough (<= 10% busy); rank 0 watches, the others sleep.
    Returns the busy share of the last second watched."""
    busy = 0.0
    if RANK == 0:
        deadline = time.monotonic() + longest
        while True:
            busy0, total0 = system_busy()
            time.sleep(1.0)
            busy1, total1 = system_busy()
            busy = (busy1 - busy0) / max(1e-9, total1 - total0)
            if busy <= QUIET or time.monotonic() >= deadline:
                break
    sleeping_barrier(WORLD)
    return WORLD.bcast(busy, root=0)


def sleeping_barrier(comm) -> None:
    """A barrier whose waiting ranks sleep instead of spinning (MPICH's blocking barrier
    polls at full speed, which would take a core from the rank still working)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


# ---------------------------------------------------------------------- timing
def measure(
    group: str, what: str, fn: Callable[[], object], comm, repeats: int, note: str = ""
) -> Row:
    """Median over ``repeats`` calls of the slowest rank's time, after one warm-up call.

    Collective over ``comm``: every rank of it calls ``fn`` at the same time (a barrier
    before each call). Recorded and printed on rank 0 of ``comm``.
    """
    comm.Barrier()
    fn()
    load = OtherLoad(comm)
    load.start()
    times = []
    for _ in range(repeats):
        comm.Barrier()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(comm.allreduce(elapsed, op=MPI.MAX))
    other = load.stop()
    row = Row(group, what, statistics.median(times), min(times), max(times), repeats, other, note)
    if comm.Get_rank() == 0:
        ROWS.append(row)
    return row


def print_row(row: Row) -> None:
    spread = f"({shown(row.low)}-{shown(row.high)}, n={row.runs})"
    say(
        f"  {row.group:9s} {row.what:44s} {shown(row.seconds):>9s} {spread:28s} "
        f"others {row.other:4.0%}  {row.note}"
    )


# ---------------------------------------------------------------------- checks
def check(actual: np.ndarray, expected: np.ndarray, what: str) -> str | None:
    """``None`` if ``actual`` equals ``expected`` to ``RTOL`` x max |expected|, else why not."""
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max())
    err = float(np.abs(np.asarray(actual).reshape(expected.shape) - expected).max())
    if not err <= RTOL * scale:
        return f"{what}: max error {err:.2e} vs {RTOL:g} x max |y| = {RTOL * scale:.2e}"
    return None


def stop_on(problem: str | None, comm=WORLD) -> None:
    """Rank 0 found ``problem`` (or not): every rank of ``comm`` stops if it did."""
    problem = comm.bcast(problem, root=0)
    if problem is not None:
        raise AssertionError(problem)


def direct_voxels(x: np.ndarray, kernel: np.ndarray, y: np.ndarray, count: int = 64) -> str | None:
    """The serial operator against a float64 evaluation of sampled output voxels of the
    'same' cross-correlation (corners, faces and random interior voxels)."""
    n = x.shape[-1]
    half = KERNEL // 2
    padded = np.pad(x[0], half)
    rng = np.random.default_rng(1)
    points = [(0, 0, 0), (n - 1, n - 1, n - 1), (0, n // 2, n - 1), (half, 1, n - 2)]
    points += [tuple(p) for p in rng.integers(0, n, size=(count - len(points), 3))]
    k = kernel[0, 0].astype(np.float64)
    scale = float(np.abs(y).max())
    for a, b, c in points:
        window = padded[a : a + KERNEL, b : b + KERNEL, c : c + KERNEL].astype(np.float64)
        want = float((window * k).sum())
        got = float(y[0, a, b, c])
        if abs(got - want) > RTOL * scale:
            return f"serial operator at voxel {(a, b, c)}: {got!r} vs direct {want!r}"
    return None


def dot_test(x: np.ndarray, y: np.ndarray, v: np.ndarray, z: np.ndarray) -> str | None:
    """``<op x, v> = <x, op^H v>`` (``y = op x``, ``z = op^H v``), in float64."""
    left = float(np.dot(y.ravel().astype(np.float64), v.ravel().astype(np.float64)))
    right = float(np.dot(x.ravel().astype(np.float64), z.ravel().astype(np.float64)))
    scale = float(np.linalg.norm(y) * np.linalg.norm(v))
    if abs(left - right) > RTOL * scale:
        return f"dot-product test: <op x, v> = {left!r}, <x, op^H v> = {right!r}"
    return None


# ---------------------------------------------------------------------- the benchmark
@dataclass
class Product:
    """A product timed in the interleaved rounds: on rank 0 alone or on every rank."""

    group: str
    what: str
    fn: Callable[[], object] | None  # None on ranks that do not take part
    alone: bool
    times: list[float]
    others: list[float]

    def row(self, note: str = "") -> Row:
        t, o = self.times, self.others
        return Row(self.group, self.what, statistics.median(t), min(t), max(t), len(t),
                   max(o), note)  # fmt: skip


def timed_once(product: Product, timed: bool) -> None:
    """One call, collective over ``WORLD``: its time is the slowest taking part rank's; for
    a product on rank 0 alone the other ranks sleep in a barrier meanwhile."""
    WORLD.Barrier()
    load = OtherLoad(WORLD)
    load.start()
    elapsed = 0.0
    if product.fn is not None:
        start = time.perf_counter()
        product.fn()
        elapsed = time.perf_counter() - start
    if product.alone:
        sleeping_barrier(WORLD)
    elapsed = WORLD.allreduce(elapsed, op=MPI.MAX)
    other = load.stop()
    if timed:
        product.times.append(elapsed)
        product.others.append(other)


def interleaved(products: list[Product], repeats: int) -> None:
    """One untimed round (warm-up), then ``repeats`` rounds of one call of each product.

    Interleaved so that every product, P=1 and P=size alike, sees the same background
    load: on this shared 2-core machine the load of other processes changes over seconds,
    and the ratios below come from calls made seconds apart, not minutes."""
    for r in range(repeats + 1):
        for product in products:
            timed_once(product, timed=r > 0)


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


def check_one_rank(op, x: np.ndarray, v: np.ndarray, kernel: np.ndarray) -> dict:
    """Rank 0 alone: the serial operator, its torch face and the one-rank distributed
    operator, checked. Returns the reference products (and the first problem found)."""
    tx, tv = torch.from_numpy(x)[None], torch.from_numpy(v)[None]  # (1, 1, n, n, n)
    y = (op @ x.ravel()).reshape(op.output_shape)
    z = op.rmatvec(v.ravel()).reshape(op.input_shape)
    D1 = op.to_pylops_mpi(comm=MPI.COMM_SELF)
    problems = [
        direct_voxels(x, kernel, y),
        dot_test(x, y, v, z),
        check(op.apply(tx)[0].numpy(), y, "torch face op.apply"),
        check(op.apply_adjoint(tv)[0].numpy(), z, "torch face op.apply_adjoint"),
        check(D1.gather(D1 @ D1.scatter(x)), y, "distributed on one rank, D @ x"),
        check(D1.H.gather(D1.H @ D1.H.scatter(v)), z, "distributed on one rank, D.H @ y"),
    ]
    return {"problem": next((p for p in problems if p is not None), None), "y": y, "z": z}


def one_rank_products(op, x: np.ndarray | None, v: np.ndarray | None) -> list[Product]:
    """The P=1 products (functions on rank 0 only) and the one-rank distributed operator."""
    names = [
        "serial numpy face op @ x (anchor)",
        "serial numpy face op.rmatvec(v) (anchor)",
        "serial torch face op.apply",
        "serial torch face op.apply_adjoint",
        "distributed, 1 rank: D @ x",
        "distributed, 1 rank: D.H @ y",
    ]
    fns: list = [None] * len(names)
    if RANK == 0:
        xf, vf = x.ravel(), v.ravel()
        tx, tv = torch.from_numpy(x)[None], torch.from_numpy(v)[None]
        D1 = op.to_pylops_mpi(comm=MPI.COMM_SELF)
        D1H = D1.H
        xd, vd = D1.scatter(x), D1H.scatter(v)
        fns = [
            lambda: op @ xf,
            lambda: op.rmatvec(vf),
            lambda: op.apply(tx),
            lambda: op.apply_adjoint(tv),
            lambda: D1 @ xd,
            lambda: D1H @ vd,
        ]
    return [Product("P=1", name, fn, True, [], []) for name, fn in zip(names, fns)]


def one_rank_exchange(op, x: np.ndarray, repeats: int, d1: float, d1h: float) -> None:
    """Rank 0 alone (the others sleep): ``_gather`` / ``_reduce`` of the one-rank operator,
    the padding and copies of the exchange without any message."""
    D1 = op.to_pylops_mpi(comm=MPI.COMM_SELF)
    t = torch.from_numpy(D1.to_local(D1.scatter(x)))
    ext = D1._core._gather(t)
    g1 = measure("P=1", "1 rank: _gather (pad + copy, no messages)",
                 lambda: D1._core._gather(t), MPI.COMM_SELF, repeats)  # fmt: skip
    g1.note = f"{g1.seconds / d1:.1%} of D @ x"
    r1 = measure("P=1", "1 rank: _reduce (copy, no messages)",
                 lambda: D1._core._reduce(ext), MPI.COMM_SELF, repeats)  # fmt: skip
    r1.note = f"{r1.seconds / d1h:.1%} of D.H @ y"


def ratio(a: Product, b: Product) -> float:
    """Median over the rounds of ``time(a) / time(b)`` (both timed in the same round)."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def run(
    n: int, repeats: int, bandwidth: float, latency: float, markdown: bool, wait: float
) -> None:
    case = f"1x{n}^3 float32, {KERNEL}^3 kernel, 'same'"
    many = max(repeats, 15)
    say(
        f"convop {convop.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"mpi4py {mpi4py.__version__} ({' '.join(MPI.Get_library_version().split()[:3])}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{SIZE} ranks x {torch.get_num_threads()} torch thread, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}"
    )
    say(f"case: {case}; {repeats} interleaved rounds, {many} repeats for the exchange rows")
    torch.manual_seed(0)
    kernel_t = torch.randn(1, 1, KERNEL, KERNEL, KERNEL, dtype=torch.float32)
    op = convop.conv3d(kernel_t, (1, n, n, n), padding="same")
    x = v = None
    if RANK == 0:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(op.input_shape, dtype=np.float32)
        v = rng.standard_normal(op.output_shape, dtype=np.float32)

    # checks: P=1 on rank 0 alone (the others asleep in a barrier), then P=size
    ref = check_one_rank(op, x, v, kernel_t.numpy()) if RANK == 0 else {"problem": None}
    sleeping_barrier(WORLD)
    stop_on(ref["problem"])
    D = op.to_pylops_mpi()
    DH = D.H
    local_method = D._core.local(conj=False).method
    xd = D.scatter(x, root=0)
    vd = DH.scatter(v, root=0)
    y = D.gather(D @ xd, root=0)
    z = DH.gather(DH @ vd, root=0)
    problem = None
    if RANK == 0:
        problem = check(y, ref["y"], f"distributed on {SIZE} ranks, D @ x") or check(
            z, ref["z"], f"distributed on {SIZE} ranks, D.H @ y"
        )
    stop_on(problem)
    del ref, y, z
    ranks = "1 rank" if SIZE == 1 else f"1 and {SIZE} ranks"
    say("checks passed: serial = direct voxels, dot-product test, torch face = numpy face, "
        f"distributed ({ranks}) = serial, max error <= {RTOL:g} x max |y|")  # fmt: skip
    slabs = WORLD.gather(D.local_input_shape[1 + D.axis], root=0)
    halo = WORLD.allgather(D.halo_bytes)
    halo_h = WORLD.allgather(DH.halo_bytes)
    say(f"\nP={SIZE}: {D!r}")
    say(f"  split axis {D.axis}; rows per rank {slabs}; local method {local_method}")
    say(f"  halo bytes received per product, per rank: D @ x {halo}, D.H @ y {halo_h}")
    face = n * n * 4  # C = 1 channel of n x n float32 samples per row of the split axis
    expected = [((r > 0) + (r < SIZE - 1)) * (KERNEL - 1) // 2 * face for r in range(SIZE)]
    agree = halo == expected and halo_h == expected
    say(f"  the model's halo bytes, (k-1)/2 rows x face x itemsize per neighbour: {expected}"
        f" ({'= D.halo_bytes' if agree else 'DIFFERENT from D.halo_bytes'})")  # fmt: skip

    # products: P=1 (rank 0 alone) and P=size, interleaved round by round
    if wait > 0:
        busy = wait_for_quiet(wait)
        say(f"\nCPUs {busy:.0%} busy in the last second before the products (waited <= "
            f"{wait:g} s)")  # fmt: skip
    products = one_rank_products(op, x, v)
    group = f"P={SIZE}"
    products += [
        Product(group, "distributed D @ x", lambda: D @ xd, False, [], []),
        Product(group, "distributed D.H @ y", lambda: DH @ vd, False, [], []),
    ]
    with torch.no_grad():
        interleaved(products, repeats)
    serial, serial_h, _, _, dist1, dist1_h, fwd_p, adj_p = products
    say(f"\nproducts ({repeats} interleaved rounds; ratios: median over the rounds):")
    anchors = [None, None, serial, serial_h, serial, serial_h, None, None]
    rows = [
        p.row("" if a is None else f"{ratio(p, a):.2f}x anchor") for p, a in zip(products, anchors)
    ]
    fr, ar = ratio(fwd_p, dist1), ratio(adj_p, dist1_h)
    fs, as_ = ratio(fwd_p, serial), ratio(adj_p, serial_h)
    rows[-2].note = f"{fr:.2f}x P=1 distributed, {fs:.2f}x serial"
    rows[-1].note = f"{ar:.2f}x P=1 distributed, {as_:.2f}x serial"
    if RANK == 0:
        ROWS.extend(rows)
    for row in rows:
        print_row(row)
    fwd, adj = rows[-2], rows[-1]

    # the exchange alone
    say("\nparts of the product, alone:")
    if RANK == 0:
        one_rank_exchange(op, x, many, rows[4].seconds, rows[5].seconds)
    sleeping_barrier(WORLD)
    for row in ROWS[-2:] if RANK == 0 else []:
        print_row(row)
    t = torch.from_numpy(D.to_local(xd))
    ext = D._core._gather(t)
    gather = measure(group, "halo exchange: D._core._gather", lambda: D._core._gather(t),
                     WORLD, many)  # fmt: skip
    gather.note = f"{gather.seconds / fwd.seconds:.1%} of D @ x"
    print_row(gather)
    reduce = measure(group, "halo exchange: D._core._reduce", lambda: D._core._reduce(ext),
                     WORLD, many)  # fmt: skip
    reduce.note = f"{reduce.seconds / adj.seconds:.1%} of D.H @ y"
    print_row(reduce)
    local = D._core.local(conj=False)
    conv = measure(group, "local convolution alone (extended slab)",
                   lambda: local._product(ext[None], adjoint=False), WORLD, repeats)  # fmt: skip
    conv.note = f"{conv.seconds / fwd.seconds:.1%} of D @ x"
    print_row(conv)
    bare_share = 0.0
    if max(halo):
        bare = measure(group, "bare halo messages (Isend/Irecv)", halo_messages(D), WORLD, many)
        rate = max(halo) / bare.seconds
        bare_share = bare.seconds / min(fwd.seconds, adj.seconds)
        bare.note = f"{mib(max(halo))} max per rank: {rate / 1e9:.2f} GB/s, {bare_share:.2%}"
        print_row(bare)
    load = max(row.other for row in ROWS) if ROWS else 0.0

    # goals and model
    if RANK != 0:
        return
    gs, rs = gather.seconds / fwd.seconds, reduce.seconds / adj.seconds
    span = KERNEL - 1  # dilation 1
    ideal = (n / SIZE + span) / (n + span)
    lines = [
        f"case {case}, {SIZE} ranks on {os.cpu_count()} CPUs; other processes used up to "
        f"{load:.0%} of the CPUs during a row ({'quiet' if load <= QUIET else 'NOT quiet'})",
        f"P={SIZE} / P=1 distributed: D @ x {fr:.2f}x, D.H @ y {ar:.2f}x; / P=1 serial "
        f"(numpy face): {fs:.2f}x, {as_:.2f}x; the halo recompute alone allows {ideal:.3f}x",
        f"halo exchange: _gather {gs:.1%} of D @ x, _reduce {rs:.1%} of D.H @ y (the bare "
        f"messages: {bare_share:.2%}); {max(halo)} bytes ({mib(max(halo))}) received per rank "
        f"per product at most",
    ]
    if SIZE == 2:
        worst = max(fr, ar, fs, as_)
        met = worst <= GOAL_RATIO
        lines.append(
            f"goal P=2 <= {GOAL_RATIO}x P=1 (against both P=1 references, both products): "
            f"worst {worst:.2f}x: {'MET' if met else 'NOT MET'}"
        )
        met = max(gs, rs) <= GOAL_SHARE
        lines.append(
            f"goal halo exchange <= {GOAL_SHARE:.0%} of the product: worst {max(gs, rs):.1%}: "
            f"{'MET' if met else 'NOT MET'}"
        )
    else:
        lines.append(f"the goals are stated for 2 ranks; this run has {SIZE}: no verdict")
    print("\nsummary:")
    for line in lines:
        print("  " + line)
    if markdown:
        print()
        print(rows_markdown(case))
    t1 = (dist1.row().seconds + dist1_h.row().seconds) / 2
    tp = (fwd.seconds + adj.seconds) / 2
    exchange = (gather.seconds + reduce.seconds) / 2
    model(n, t1, tp, exchange, op.method, bandwidth, latency, ideal, markdown)


# ---------------------------------------------------------------------- performance model
def model(n, t1, tp, exchange, method, bandwidth, latency, ideal, markdown) -> None:
    """Per product on P ranks: compute + latency + halo bytes / bandwidth (no overlap).

    compute = C (N/P + span) N^2 / R: each rank convolves its slab extended by the halo
    rows (span = k - 1 = 8); R = C (n + span) n^2 / T1 is the one-rank distributed
    operator's measured rate (its one slab is extended by the 'same' padding rows), the
    mean of D @ x and D.H @ y. halo bytes = span * C * N^2 * itemsize per interior rank
    and product: what D.halo_bytes counts, (k-1)/2 rows from each neighbour.
    """
    c, itemsize, span = 1, 4, KERNEL - 1
    rate = c * (n + span) * n * n / t1
    predicted = t1 * ideal + exchange
    bws = sorted(set(BANDWIDTHS) | {bandwidth})
    print("\nperformance model (per product, forward and adjoint alike):")
    print(
        f"  T_P(N) = C (N/P + {span}) N^2 / R + latency + {span} C N^2 * {itemsize} B / bandwidth"
    )
    print(
        f"  R = {rate / 1e6:.1f} M voxels/s per rank (one-rank distributed operator, "
        f"{method}, mean of D @ x and D.H @ y: {shown(t1)} for 1x{n}^3 + padding rows); "
        f"latency {latency * 1e6:g} us"
    )
    print(
        f"  check on this run: P={SIZE} predicted {shown(t1)} x {ideal:.3f} + exchange "
        f"{shown(exchange)} = {shown(predicted)}, measured {shown(tp)} "
        f"({tp / predicted:.2f}x the model)"
    )
    print(
        "  assumptions: compute time proportional to the voxels of the extended slab at the "
        "measured rate (FFT's log factor ignored: per voxel, a 2048^2-face slab costs somewhat "
        "more than the 256^3 measured here, for P=1 as for P ranks); one core per rank; "
        "the exchange does not overlap the compute (convop gathers, then convolves); both "
        "neighbours' messages travel at once on a full-duplex link; host copies of the halo "
        "and the page faults of fresh buffers ignored; T_1 is hypothetical for 2048^3 "
        "(32 GiB per vector)"
    )
    header = (
        ["volume", "P", "rows/rank", "compute/rank", "halo/rank"]
        + [f"comm @{b:g} GB/s" for b in bws]
        + [f"speed-up @{b:g} GB/s" for b in bws]
        + [f"efficiency @{bandwidth:g} GB/s", f"comm share @{bandwidth:g} GB/s"]
    )
    table = []
    for big in MODEL_SIZES:
        t_one = c * (big + span) * big * big / rate
        halo = span * c * big * big * itemsize
        table.append([f"{big}^3", "1", str(big), shown(t_one), "0"] + [""] * (2 * len(bws) + 2))
        for p in MODEL_RANKS:
            compute = c * (big / p + span) * big * big / rate
            comm = {b: latency + halo / (b * 1e9) for b in bws}
            speed = {b: t_one / (compute + comm[b]) for b in bws}
            table.append(
                [f"{big}^3", str(p), f"{big / p:g} + {span}", shown(compute), mib(halo)]
                + [shown(comm[b]) for b in bws]
                + [f"{speed[b]:.1f}x" for b in bws]
                + [
                    f"{speed[bandwidth] / p:.0%}",
                    f"{comm[bandwidth] / (compute + comm[bandwidth]):.2%}",
                ]
            )
    if markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
        print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for line in table:
            print("  " + "  ".join(cell.rjust(w) for cell, w in zip(line, widths)))


def rows_markdown(case: str) -> str:
    out = [
        f"| group | {case} | median | range (n) | others' CPU | note |",
        "|---|---|---:|---|---:|---|",
    ]
    for row in ROWS:
        out.append(
            f"| {row.group} | {row.what} | {shown(row.seconds)} | {shown(row.low)} - "
            f"{shown(row.high)} ({row.runs}) | {row.other:.0%} | {row.note} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1x96^3 instead of 1x256^3")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (5)")
    parser.add_argument("--bandwidth-gbs", type=float, default=10.0,
                        help="interconnect bandwidth of the model, GB/s (default 10)")  # fmt: skip
    parser.add_argument("--latency-us", type=float, default=10.0,
                        help="message latency of the model, us (default 10)")  # fmt: skip
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                        help="before each group, wait up to this long for a quiet second "
                        "(CPUs <= 10%% busy; 0: don't wait; default 60)")  # fmt: skip
    args = parser.parse_args(argv)
    repeats = args.repeats or (7 if args.quick else 5)
    n = 96 if args.quick else 256
    run(n, repeats, args.bandwidth_gbs, args.latency_us * 1e-6, args.markdown, args.wait_quiet)


if __name__ == "__main__":
    main()
