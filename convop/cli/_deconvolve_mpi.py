"""``convop deconvolve`` under ``mpiexec``: each rank reads, deconvolves and sends its slab.

:func:`world` says whether this process is one of several MPI ranks, importing mpi4py only
where the environment shows an MPI launch (``mpiexec`` sets ``PMI_SIZE`` or
``OMPI_COMM_WORLD_SIZE``). Then every rank settles the same plan, builds the distributed
operator (``op.to_pylops_mpi(axis=0)``: slabs of planes, or of rows for an image), reads
only the planes of its slab of the measured stack (``D.output_slices``), and runs
:func:`convop.richardson_lucy` on it; the background estimate adds up the ranks' block
sums. Rank 0 writes the result, cropped to the stack's frame, plane by plane as the ranks
send their slabs in order: the stack is never whole on one rank.

Every failure is every rank's: a step that can fail on some ranks only (reading a slab, a
refused value in it) ends in an agreement, after which all ranks raise the first failure
(rank 0 says it; the others exit with the same status, silently).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from .._io.stacks import read_stack, write_stack
from ..solvers import richardson_lucy
from . import USAGE_ERRORS
from . import _deconvolve as command
from ._deconvolve_plan import Plan, block_sums, check_cost, darkest_block, make_plan
from ._parser import CommandError, CommandFailure, one_line
from ._solve import timed

#: Variables an MPI launcher sets in each rank's environment (MPICH and Intel MPI, Open
#: MPI, PMIx): only then is mpi4py imported (its import starts MPI).
MPI_ENVIRONMENT = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
#: The tag of the result's planes on their way to rank 0.
TAG = 26

T = TypeVar("T")


def world() -> Any:
    """``MPI.COMM_WORLD`` when this process is one of several MPI ranks, else None."""
    if not any(name in os.environ for name in MPI_ENVIRONMENT):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
        if size.strip() not in ("", "1"):
            raise ImportError(
                f"convop deconvolve under mpiexec with {size} ranks needs mpi4py and "
                f"pylops-mpi: pip install mpi4py pylops-mpi; they come with the mpi extra"
            ) from None
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def _kind(error: BaseException | None) -> tuple[str, str] | None:
    """A failure as every rank can rebuild it: ``(status kind, one-line message)``."""
    if error is None:
        return None
    if isinstance(error, CommandFailure) or not isinstance(error, USAGE_ERRORS):
        text = str(error) if isinstance(error, CommandFailure) else (
            f"{type(error).__name__}: {error}")  # fmt: skip
        return "failure", one_line(text)
    return "usage", one_line(error)


def _raise(kind: str, message: str) -> None:
    raise (CommandFailure if kind == "failure" else CommandError)(message)


def agreed(comm: Any, work: Callable[[], T]) -> T:
    """``work()`` on every rank; if it failed on any, every rank raises the first failure."""
    try:
        result, failure = work(), None
    except Exception as error:
        result, failure = None, _kind(error)
    failures = comm.allgather(failure)
    for rank, found in enumerate(failures):
        if found is not None:
            where = f" (on rank {rank} of {comm.Get_size()})" if rank else ""
            _raise(found[0], found[1] + where)
    return result


def _frame(plan: Plan, slices: tuple[slice, ...]) -> tuple[tuple[slice, ...], int]:
    """Of a rank's block of the object, ``(the part in the stack's frame, its planes)``."""
    planes = slices[1]
    if plan.model is None:
        return (slice(None),) * len(plan.info.shape), planes.stop - planes.start
    offset, shape = plan.model.offset, plan.info.shape
    lo, hi = max(planes.start, offset[0]), min(planes.stop, offset[0] + shape[0])
    kept = slice(lo - planes.start, max(hi, lo) - planes.start)
    others = tuple(slice(o, o + n) for o, n in zip(offset[1:], shape[1:]))
    return (kept, *others), max(hi - lo, 0)


class Incoming:
    """Rank 0's view of the result: its own slab, then each rank's planes as they come."""

    def __init__(self, comm: Any, own: np.ndarray, counts: list[int], plane: tuple[int, ...]):
        self.comm, self.own, self.plane = comm, own, plane
        self.left = list(counts)  # planes still to receive, per rank (rank 0: none)
        self.left[0] = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.own
        for rank in range(1, len(self.left)):
            while self.left[rank]:
                yield self._receive(rank)[None]

    def _receive(self, rank: int) -> np.ndarray:
        buffer = np.empty(self.plane, dtype=np.float32)
        self.comm.Recv(buffer, source=rank, tag=TAG)
        self.left[rank] -= 1
        return buffer

    def drain(self) -> None:
        """Receive what a failed write left unread: no rank is left waiting to send."""
        for rank in range(1, len(self.left)):
            while self.left[rank]:
                self._receive(rank)


def _write(comm: Any, plan: Plan, part: np.ndarray, counts: list[int]) -> None:
    """Rank 0 writes the frame as the ranks' planes arrive, in rank order; all agree."""
    if comm.Get_rank():
        for plane in part:
            comm.Send(np.ascontiguousarray(plane, dtype=np.float32), dest=0, tag=TAG)
        failure = comm.bcast(None, root=0)
    else:
        incoming = Incoming(comm, part, counts, tuple(plan.info.shape[1:]))
        error = None
        try:
            write_stack(plan.output, plan.info.shape, incoming, voxel=plan.voxel,
                        flavour=command.flavour(plan))  # fmt: skip
        except Exception as raised:
            error = raised
        finally:
            incoming.drain()
        failure = comm.bcast(_kind(error), root=0)
        if error is not None:
            raise error
    if failure is not None:
        _raise(*failure)


def run(args: argparse.Namespace, comm: Any) -> int:
    """``convop deconvolve`` on this rank of ``comm``."""
    rank, ranks = comm.Get_rank(), comm.Get_size()
    args.silent = rank != 0  # convop.cli.main: rank 0 alone reports a failure

    def prepare():
        plan = make_plan(args, command.ITERATIONS)
        if plan.method != "rl":
            raise CommandError(
                f"--method {plan.method} does not run under mpiexec ({ranks} ranks): only rl "
                f"(with or without --accelerate) runs over MPI ranks; run {plan.method} on "
                f"one process"
            )
        D = plan.op.to_pylops_mpi(comm, axis=0)
        estimate = check_cost(plan, args, ranks)
        planes = D.output_slices[rank][1]
        y = read_stack(plan.path, plan.info, plan.what, planes=planes, dtype=args.dtype,
                       max_bytes=args.max_bytes)  # fmt: skip
        return plan, D, estimate, planes, y

    plan, D, estimate, planes, y = agreed(comm, prepare)
    shape = plan.info.shape
    if args.background == "auto":
        b, how = darkest_block(comm.allreduce(block_sums(y, planes.start, shape)), shape)
    else:
        b, how = args.background, ""
    solved, seconds = timed(plan.iterations, command.label(plan, estimate.seconds),
                            args.quiet or rank != 0, richardson_lucy, D,
                            D.from_local(y[None], output=True), plan.iterations,
                            background=b, accelerate=args.accelerate)  # fmt: skip
    block = D.to_local(solved.x)[0]  # this rank's planes of the object
    frames = [_frame(plan, slices) for slices in D.input_slices]
    part = block[frames[rank][0]]
    if not all(comm.allgather(bool(np.isfinite(part).all()))):
        raise CommandFailure("rl gave non-finite values: nothing was written")
    _write(comm, plan, part, [count for _, count in frames])
    norm = comm.allreduce(float(np.sum(np.square(y, dtype=np.float64)))) ** 0.5
    if rank == 0:
        print(command.summary(plan, b, how, args))
        print(
            f"rl: {solved.iterations} iterations{' (accelerated)' * args.accelerate}, "
            f"{seconds:.2f} s on {ranks} MPI ranks, residual |y - (A x + b)| / |y| = "
            f"{command.relative(solved.residual, norm):.3g}"
        )
        print(command.written(plan))
    return 0
