"""Deconvolving a 3-D volume over MPI ranks with pylops-mpi, checked against serial PyLops.

A 3-D phantom (ellipsoids of different intensities in [0, 1], generated in the script),
128x128x128 voxels, is blurred by a 9x9x9 Gaussian (sigma 1.5 voxels, normalised) with
``'same'`` reflect padding, ``convop.conv3d(kernel, (1, n, n, n), padding="same",
padding_mode="reflect")``, plus Gaussian noise of standard deviation 0.01 (fixed seed).

Every rank builds the same operator and calls ``op.to_pylops_mpi()``: a
``pylops_mpi.MPILinearOperator`` that gives each rank one slab of the volume along a spatial
axis and exchanges the halo the 9x9x9 kernel reads across slab borders (4 planes from each
neighbour; the adjoint sends them back to be added), so no product assembles the volume.
Rank 0 builds the data and scatters it; pylops-mpi's ``cgls`` then solves the Tikhonov
problem ``min ||A x - b||^2 + damp^2 ||x||^2`` for a fixed number of iterations. The same
problem is solved once more as the stacked system ``[A; damp I] x = [b; 0]``
(``pylops_mpi.MPIStackedVStack`` of the convop operator and an ``MPIBlockDiag`` identity),
which is the same CGLS iteration and must give the same volume.

Rank 0 also solves the problem serially (``op.to_pylops()`` and PyLops' ``cgls``, same
iterations and damping) and checks that the distributed restoration equals the serial one to
1e-8 relative, the stacked one equals the damped one to 1e-8, both PSNRs agree to 1e-6 dB,
and the restoration beats the blurred volume's PSNR. It prints the PSNRs, the solve times,
the halo bytes each rank receives per product and each rank's peak memory, and writes
``distributed_deconvolution.png`` to ``--out``: three orthogonal slices through the centre
of the true, blurred and restored volumes. ``--quick`` runs a 48x48x48 volume.

Every rank learns rank 0's verdict, so all of them exit with it (non-zero when a check
fails) and none waits forever. Without ``OMP_NUM_THREADS`` set, each rank runs
``cores // ranks`` torch threads, and the serial reference as many.

Usage, with the ``mpiexec`` and the ``python`` of the environment convop is installed in
(``mpiexec`` starts the ``python`` it is given, or the first one on the ``PATH``), here the
``.venv`` that ``make demo`` creates in a clone::

    .venv/bin/mpiexec -n 2 .venv/bin/python examples/distributed_deconvolution.py [--quick]
    .venv/bin/python examples/distributed_deconvolution.py [--quick]   # one rank

and ``--out DIR`` for the figure's folder (default ``./figures``).
"""

import argparse
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pylops
import pylops_mpi
import torch
from matplotlib.figure import Figure
from mpi4py import MPI
from pylops.optimization.basic import cgls as serial_cgls
from pylops_mpi.optimization.basic import cgls

import convop
from convop.data import gaussian_kernel, psnr

SIZE, QUICK_SIZE = 128, 48  # the volume is SIZE^3 voxels
KERNEL_SIZE, SIGMA = 9, 1.5  # Gaussian blur, in voxels
NOISE, SEED = 0.01, 0  # noise standard deviation (volume range [0, 1]) and its seed
DAMP = 0.15  # Tikhonov weight: min ||A x - b||^2 + DAMP^2 ||x||^2
NITER = 30  # cgls iterations (tol=0: exactly this many)
SAME_TOL = 1e-8  # relative difference allowed between two solutions of the same problem
PSNR_TOL = 1e-6  # dB

# Ellipsoids of the phantom on [-1, 1]^3: intensity added, semi-axes and centre, both in
# (z, y, x) order. Each detail is centred on one of the three central planes (or on all).
ELLIPSOIDS = (
    (0.2, (0.8, 0.7, 0.75), (0.0, 0.0, 0.0)),  # body
    (0.6, (0.22, 0.22, 0.22), (0.0, 0.35, -0.3)),  # bright sphere, z = 0 plane
    (0.3, (0.1, 0.1, 0.1), (0.0, -0.4, 0.3)),  # small sphere, z = 0 plane
    (0.4, (0.15, 0.3, 0.2), (0.3, 0.0, 0.3)),  # ellipsoid, y = 0 plane
    (-0.15, (0.25, 0.12, 0.18), (-0.35, -0.3, 0.0)),  # dark ellipsoid, x = 0 plane
    (0.5, (0.4, 0.06, 0.06), (-0.1, 0.3, 0.0)),  # rod along z, x = 0 plane
    (0.8, (0.08, 0.08, 0.08), (0.0, 0.0, 0.0)),  # small bright sphere, every plane
)


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """``|estimate - reference| / |reference|`` over all values."""
    difference = estimate.ravel() - reference.ravel()
    return float(np.linalg.norm(difference) / np.linalg.norm(reference.ravel()))


def phantom3d(n: int) -> np.ndarray:
    """An ``(n, n, n)`` volume of ellipsoids, values in [0, 1]."""
    t = np.linspace(-1.0, 1.0, n)
    z, y, x = t[:, None, None], t[None, :, None], t[None, None, :]
    volume = np.zeros((n, n, n))
    for value, (a, b, c), (z0, y0, x0) in ELLIPSOIDS:
        volume[((z - z0) / a) ** 2 + ((y - y0) / b) ** 2 + ((x - x0) / c) ** 2 <= 1.0] += value
    return np.clip(volume, 0.0, 1.0)


def blur_operator(n: int) -> convop.ConvOperator:
    """The 9x9x9 Gaussian blur of a (1, n, n, n) volume, 'same' reflect padding."""
    g = gaussian_kernel(KERNEL_SIZE, SIGMA).sum(axis=0)  # (9,) 1-D Gaussian, sums to 1
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]  # (9, 9, 9), sums to 1
    return convop.conv3d(kernel[None, None], (1, n, n, n), padding="same", padding_mode="reflect")


def peak_memory_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def set_threads(ranks: int) -> int:
    """``cores // ranks`` torch threads per rank, unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        cores = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        )
        torch.set_num_threads(max(1, (cores or 1) // ranks))
    return torch.get_num_threads()


def wait_for_all(comm: MPI.Comm) -> None:
    """A barrier that sleeps instead of spinning: waiting ranks leave their cores to rank 0."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.005)


def timed(comm: MPI.Comm, solve):
    """Run a collective ``solve()``; its result and the wall time of the slowest rank."""
    comm.Barrier()
    start = MPI.Wtime()
    result = solve()
    comm.Barrier()
    return result, MPI.Wtime() - start


class Distributed(NamedTuple):
    """What rank 0 learns from the distributed solves."""

    ranks: int
    threads: int  # torch threads per rank
    slabs: list[slice]  # each rank's part of the split axis
    halo_bytes: list[int]  # received per product, per rank
    peak_mib: list[float]  # peak memory per rank
    damped: np.ndarray  # the restoration by damped cgls, (1, n, n, n)
    stacked: np.ndarray  # the restoration by cgls on [A; DAMP I]
    seconds_damped: float
    seconds_stacked: float


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument(
        "--quick", action="store_true", help=f"a {QUICK_SIZE}^3 volume, not {SIZE}^3"
    )
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    threads = set_threads(ranks)
    n = QUICK_SIZE if args.quick else SIZE

    # Every rank: the same operator, distributed. Rank 0: the data.
    op = blur_operator(n)
    D = op.to_pylops_mpi(comm)
    truth = b = None
    if rank == 0:
        print(f"D: {D}")
        print(
            f"{plural(ranks, 'rank')}, {plural(threads, 'torch thread')} each; volume "
            f"1x{n}x{n}x{n} ({n**3:,} voxels, float64), split along spatial axis {D.axis}"
        )
        print(
            f"{KERNEL_SIZE}x{KERNEL_SIZE}x{KERNEL_SIZE} Gaussian blur (sigma {SIGMA}), noise "
            f"sigma {NOISE}; cgls {NITER} iterations, damp {DAMP}",
            flush=True,
        )
        truth = phantom3d(n)[None]  # (1, n, n, n)
        rng = np.random.default_rng(SEED)
        b = (op @ truth.ravel()).reshape(op.output_shape)
        b += NOISE * rng.standard_normal(op.output_shape)
    # b lives in the operator's output space; rank 0 sends each rank its slab of it.
    y = D.scatter(b, root=0, output=True)
    x0 = D.zeros()  # each rank's zero slab: nobody builds a global zero volume

    # Tikhonov by cgls's damping.
    x_damped, t_damped = timed(comm, lambda: cgls(D, y, x0, niter=NITER, damp=DAMP, tol=0)[0])

    # The same problem as the stacked system [A; DAMP I] x = [b; 0].
    identity = pylops_mpi.MPIBlockDiag(
        [pylops.Identity(math.prod(D.local_input_shape), dtype=op.dtype)], base_comm=comm
    )
    stacked = pylops_mpi.MPIStackedVStack([D, DAMP * identity])
    rhs = pylops_mpi.StackedDistributedArray([y, D.zeros()])
    x_stacked, t_stacked = timed(comm, lambda: cgls(stacked, rhs, x0, niter=NITER, tol=0)[0])

    run = Distributed(
        ranks=ranks,
        threads=threads,
        slabs=[s[1 + D.axis] for s in D.input_slices],
        halo_bytes=comm.gather(D.halo_bytes, root=0),
        peak_mib=comm.gather(peak_memory_mib(), root=0),
        damped=D.gather(x_damped, root=0, output=False),  # x lives in the input space
        stacked=D.gather(x_stacked, root=0, output=False),
        seconds_damped=t_damped,
        seconds_stacked=t_stacked,
    )

    verdict = None
    if rank == 0:
        try:
            report(args, op, truth, b, run)
        except SystemExit as failure:
            verdict = str(failure.code)
        except Exception as error:  # tell the other ranks before leaving
            traceback.print_exc()
            verdict = f"FAILED: rank 0 raised {type(error).__name__}: {error}"
    wait_for_all(comm)
    verdict = comm.bcast(verdict, root=0)
    if verdict is not None:
        raise SystemExit(verdict if rank == 0 else 1)


def plot(volumes: list[tuple[str, np.ndarray]], suptitle: str) -> Figure:
    """Rows: the volumes; columns: the central z, y and x planes."""
    n = volumes[0][1].shape[0]
    c = n // 2
    planes = (
        (f"z = {c} (y down, x right)", lambda v: v[c, :, :]),
        (f"y = {c} (z down, x right)", lambda v: v[:, c, :]),
        (f"x = {c} (z down, y right)", lambda v: v[:, :, c]),
    )
    fig = Figure(figsize=(10.5, 3.6 * len(volumes)), layout="tight")
    axes = fig.subplots(len(volumes), 3)
    for row, (title, volume) in zip(axes, volumes):
        for ax, (plane, cut) in zip(row, planes):
            ax.imshow(cut(volume), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}\n{plane}", fontsize=9)
            ax.axis("off")
    fig.suptitle(suptitle, fontsize=11)
    return fig


def check(passed: bool, claim: str) -> None:
    """Rank 0: print ``ok: claim``, or stop with ``FAILED: claim``, which main tells all ranks."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def report(
    args: argparse.Namespace,
    op: convop.ConvOperator,
    truth: np.ndarray,
    b: np.ndarray,
    run: Distributed,
) -> None:
    """Rank 0: the serial reference, the printout, the checks and the figure."""
    n = op.input_shape[1]
    P = op.to_pylops()  # dims = dimsd = (1, n, n, n)
    start = time.perf_counter()
    # Same torch threads as each rank (set_threads); numpy's BLAS on one thread, as in
    # any solve through numpy arrays (convop.solver_threads).
    with convop.solver_threads():
        x0 = np.zeros(P.shape[1])
        serial = serial_cgls(P, b.ravel(), x0=x0, niter=NITER, damp=DAMP, tol=0)[0]
    t_serial = time.perf_counter() - start
    serial = serial.reshape(op.input_shape)

    print()
    print("  rank  slab        halo received/product  peak memory")
    print("  ----  ----------  ---------------------  -----------")
    for r, (slab, halo, peak) in enumerate(zip(run.slabs, run.halo_bytes, run.peak_mib)):
        where = f"{slab.start}:{slab.stop}"
        print(f"  {r:>4}  {where:<10}  {halo:>15,} bytes  {peak:7.0f} MiB")
    print()
    blurred = psnr(b, truth)
    distributed, stacked, reference = (psnr(x, truth) for x in (run.damped, run.stacked, serial))
    ranks = plural(run.ranks, "rank")
    rows = [
        ("blurred + noise", blurred, None),
        (f"restored, {ranks}, damped cgls", distributed, run.seconds_damped),
        (f"restored, {ranks}, cgls on [A; damp I]", stacked, run.seconds_stacked),
        ("restored, serial PyLops cgls", reference, t_serial),
    ]
    width = max(len(label) for label, _, _ in rows)
    print(f"  {'':{width}}  {'PSNR':>6}   {'time':>10}")
    for label, value, seconds in rows:
        timing = "" if seconds is None else f"  {seconds:6.2f} s"
        print(f"  {label:{width}}  {value:6.2f} dB{timing}")
    print()

    gap = relative_error(run.damped, serial)
    check(gap <= SAME_TOL, f"distributed restoration equals the serial one: {gap:.1e} relative")
    gap = relative_error(run.stacked, run.damped)
    check(gap <= SAME_TOL, f"cgls on [A; damp I] equals damped cgls: {gap:.1e} relative")
    check(
        abs(distributed - reference) <= PSNR_TOL,
        f"distributed and serial PSNRs agree: {abs(distributed - reference):.1e} dB",
    )
    check(
        distributed > blurred,
        f"the restoration beats the blurred volume: {distributed:.2f} > {blurred:.2f} dB",
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "distributed_deconvolution.png"
    volumes = [
        ("true", truth[0]),
        (f"blurred + noise, PSNR {blurred:.2f} dB", b[0]),
        (f"restored ({ranks}), PSNR {distributed:.2f} dB", run.damped[0]),
    ]
    suptitle = (
        f"{n}^3 volume, {KERNEL_SIZE}^3 Gaussian blur; cgls {NITER} iterations, damp {DAMP}, "
        f"{ranks}: {run.seconds_damped:.1f} s (serial {t_serial:.1f} s)"
    )
    plot(volumes, suptitle).savefig(path, dpi=100)
    print(f"figure: {path}")
    print("All checks passed.")


if __name__ == "__main__":
    main()
