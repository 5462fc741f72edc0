"""convop._mpi.halo in one process: the halo gather and reduce over simulated ranks.

The MPI tests (tests/mpi) run only under ``mpiexec``; here every rank of a P-rank split runs
the real :class:`convop._mpi.halo.Core` on its own thread, with an in-process communicator
(:class:`FakeWorld`), over the geometries of tests/test_slabs.py. Each rank's gathered
extended slab must be the samples the plan names (bit for bit), each rank's reduced slab
the sum of every extended sample sent back to its source, and the products the serial
operator's slab by slab. The agreement check before the first exchange must stop a rank
that disagrees on every rank, with no message sent.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop
from convop._mpi.halo import HALO_TAG, Core
from convop._mpi.slabs import SlabPlan, Transfer, conv_form

from .checks import assert_close
from .strategies import COMBO_IDS, COMBOS, conv_cases


# ---------------------------------------------------------------------- the stand-in for MPI
class FakeWorld:
    """``size`` simulated ranks in one process: the communicator ``convop._mpi.halo`` uses.

    ``comm(rank)`` is rank ``rank``'s communicator (``Get_rank``, ``Get_size``,
    ``allgather``, ``Isend`` and ``Irecv`` of contiguous numpy buffers, requests with
    ``Wait``); :meth:`run` runs one function per rank, each on its own thread. Messages
    match by (source, destination, tag) in the order posted, as in MPI. Stricter than MPI:
    a send completes only once its receive has copied it, and the data is read from the
    send buffer only then (a buffer changed before ``Wait`` shows); the receive buffer must
    have the message's dtype and size exactly. A wait longer than ``timeout`` seconds, or
    one that can no longer complete because another rank failed, raises instead of hanging.
    """

    def __init__(self, size: int, timeout: float = 20.0) -> None:
        self.size = size
        self.timeout = timeout
        self.sent = 0  # messages posted so far
        self._cond = threading.Condition()
        self._messages: dict[tuple, dict[int, _Send]] = defaultdict(dict)
        self._posted = {"send": defaultdict(int), "recv": defaultdict(int)}
        self._gathers: dict[int, dict[int, Any]] = defaultdict(dict)
        self._collectives = [0] * size
        self._failed: list[tuple[float, int, BaseException]] = []

    def comm(self, rank: int) -> FakeComm:
        return FakeComm(self, rank)

    def outcomes(self, work: Callable[[int], Any]) -> list:
        """``work(rank)`` on one thread per rank: each rank's result or the exception it raised."""
        out: list = [None] * self.size

        def target(rank: int) -> None:
            try:
                out[rank] = work(rank)
            except BaseException as error:  # every rank's outcome is reported
                out[rank] = error
                with self._cond:
                    self._failed.append((time.monotonic(), rank, error))
                    self._cond.notify_all()

        threads = [
            threading.Thread(target=target, args=(r,), daemon=True) for r in range(self.size)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(2 * self.timeout)
        assert not any(t.is_alive() for t in threads), "a simulated rank never returned"
        return out

    def run(self, work: Callable[[int], Any]) -> list:
        """``[work(0), ..., work(size - 1)]``, raising the first error any rank raised."""
        out = self.outcomes(work)
        if self._failed:
            raise min(self._failed, key=lambda f: f[0])[2]
        return out

    # ------------------------------------------------------------------ used by FakeComm
    def wait(self, ready: Callable[[], bool], who: str) -> None:
        """Block (holding the condition) until ``ready()``; raise on a timeout or a failure."""
        deadline = time.monotonic() + self.timeout
        while not ready():
            if self._failed:
                raise RuntimeError(f"{who}: given up, another rank failed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{who}: still waiting after {self.timeout} s")
            self._cond.wait(left)


class FakeComm:
    """One rank's view of a :class:`FakeWorld`."""

    def __init__(self, world: FakeWorld, rank: int) -> None:
        self.world, self.rank = world, rank

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.world.size

    def allgather(self, value: Any) -> list:
        world = self.world
        with world._cond:
            step = world._collectives[self.rank]
            world._collectives[self.rank] += 1
            slot = world._gathers[step]
            slot[self.rank] = value
            world._cond.notify_all()
            world.wait(lambda: len(slot) == world.size, f"rank {self.rank} in allgather #{step}")
            return [slot[r] for r in range(world.size)]

    def Isend(self, buf: np.ndarray, dest: int, tag: int) -> _Send:
        _check_buffer(buf, "Isend")
        assert 0 <= dest < self.world.size, f"Isend to rank {dest}"
        assert dest != self.rank, "Isend to itself"
        world, channel = self.world, (self.rank, dest, tag)
        send = _Send(world, channel, buf)
        with world._cond:
            world._messages[channel][world._posted["send"][channel]] = send
            world._posted["send"][channel] += 1
            world.sent += 1
            world._cond.notify_all()
        return send

    def Irecv(self, buf: np.ndarray, source: int, tag: int) -> _Recv:
        _check_buffer(buf, "Irecv")
        assert buf.flags.writeable, "Irecv into a read-only buffer"
        assert 0 <= source < self.world.size, f"Irecv from rank {source}"
        assert source != self.rank, "Irecv from itself"
        world, channel = self.world, (source, self.rank, tag)
        with world._cond:
            index = world._posted["recv"][channel]
            world._posted["recv"][channel] += 1
        return _Recv(world, channel, index, buf)


def _check_buffer(buf: Any, call: str) -> None:
    assert isinstance(buf, np.ndarray), f"{call} of a {type(buf).__name__}, not a numpy array"
    assert buf.flags.c_contiguous, f"{call} of a non-contiguous array"


class _Send:
    def __init__(self, world: FakeWorld, channel: tuple, buf: np.ndarray) -> None:
        self.world, self.channel, self.buf = world, channel, buf
        self.delivered = False

    def Wait(self) -> None:
        source, dest, _ = self.channel
        with self.world._cond:
            self.world.wait(lambda: self.delivered, f"rank {source}'s send to rank {dest}")


class _Recv:
    def __init__(self, world: FakeWorld, channel: tuple, index: int, buf: np.ndarray) -> None:
        self.world, self.channel, self.index, self.buf = world, channel, index, buf
        self.done = False

    def Wait(self) -> None:
        source, dest, _ = self.channel
        world = self.world
        with world._cond:
            if self.done:
                return
            waiting = world._messages[self.channel]
            world.wait(lambda: self.index in waiting, f"rank {dest}'s receive from rank {source}")
            send = waiting.pop(self.index)
            got, want = send.buf, self.buf
            if got.dtype != want.dtype or got.size != want.size:
                raise AssertionError(
                    f"rank {source} sent {got.size} {got.dtype} values, rank {dest} receives "
                    f"{want.size} {want.dtype}"
                )
            np.copyto(want, got.reshape(want.shape))  # the send buffer is read only now
            send.delivered = self.done = True
            world._cond.notify_all()


# ---------------------------------------------------------------------- simulated ranks
def _cores(op: convop.ConvOperator, axis: int, ranks: int):
    """``(plan, world, cores)``: the slab plan of ``op``, a world, one :class:`Core` per rank."""
    conv, keep, _ = conv_form(op.geometry)
    plan = SlabPlan(conv, keep, axis, ranks)
    world = FakeWorld(ranks)
    return plan, world, [Core(op, plan, world.comm(r)) for r in range(ranks)]


def _extended(plan: SlabPlan, x: torch.Tensor, rank: int) -> torch.Tensor:
    """Rank ``rank``'s extended slab read straight from the global ``x`` (C, *spatial)."""
    source = torch.from_numpy(plan.extended_source(rank))
    ext = x.index_select(1 + plan.axis, source.clamp(min=0))
    ext[(slice(None),) * (1 + plan.axis) + (source < 0,)] = 0  # zero padding
    return ext


def _draw(data, combo):
    case = data.draw(conv_cases(*combo), label="case")
    dtype = data.draw(st.sampled_from([torch.float64, torch.complex128]), label="dtype")
    op = case.operator(case.weight(dtype))
    conv, keep, _ = conv_form(op.geometry)
    axis = data.draw(st.integers(0, conv.ndim - 1), label="axis")
    ranks = data.draw(st.integers(1, SlabPlan.max_ranks(conv, keep, axis)), label="ranks")
    return case, dtype, op, axis, ranks


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_gather_and_reduce_move_exactly_the_planned_samples(ndim, transposed, mode, data):
    case, dtype, op, axis, ranks = _draw(data, (ndim, transposed, mode))
    plan, world, cores = _cores(op, axis, ranks)
    x = case.random(plan.conv.input_shape, dtype, 1)  # (C_in, *spatial), the global input
    own = cores[0].conv_in.slices
    gathered = world.run(lambda r: cores[r]._gather(x[own[r]].clone()))
    for rank in range(ranks):
        assert torch.equal(gathered[rank], _extended(plan, x, rank))  # copies, bit for bit
    ext = [case.random(tuple(g.shape), dtype, 2 + r) for r, g in enumerate(gathered)]
    reduced = world.run(lambda r: cores[r]._reduce(ext[r].clone()))
    total = torch.zeros_like(x)  # every extended sample added back onto its source
    magnitude = torch.zeros(x.shape, dtype=torch.float64)  # the same sums of |terms|
    for rank in range(ranks):
        source = torch.from_numpy(plan.extended_source(rank))
        valid = source >= 0
        terms = ext[rank][(slice(None),) * (1 + axis) + (valid,)]
        total.index_add_(1 + axis, source[valid], terms)
        magnitude.index_add_(1 + axis, source[valid], terms.abs())
    for rank in range(ranks):
        assert_close(reduced[rank], total[own[rank]], dtype=torch.float64, terms=case.terms,
                     scale=float(magnitude.max()))  # fmt: skip


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_products_over_simulated_ranks_equal_the_serial_operator(ndim, transposed, mode, data):
    case, dtype, op, axis, ranks = _draw(data, (ndim, transposed, mode))
    _, world, cores = _cores(op, axis, ranks)
    flip = conv_form(op.geometry)[2]
    base = op.T if flip else op  # the serial operator of Core.forward(conj=False)
    serial = {  # (forward, conj) -> the serial operator that product is
        (True, False): base,
        (False, False): base.H,
        (True, True): base.T.H,
        (False, True): base.T,
    }
    absolute = case.operator(op.weight.abs())  # |w| @ |x|: the sum of every sample's |terms|
    absolute = absolute.T if flip else absolute
    magnitude = {True: absolute, False: absolute.H}
    conv_in, conv_out = cores[0].conv_in, cores[0].conv_out
    for (forward, conj), which in serial.items():
        side_in, side_out = (conv_in, conv_out) if forward else (conv_out, conv_in)
        x = case.random(side_in.shape, dtype, 3)
        got = world.run(
            lambda r, f=forward, c=conj, x=x, s=side_in: _product(cores[r], f, c, x, s)
        )
        want = which.apply(x)
        scale = float(magnitude[forward].apply(x.abs()).max())
        for rank in range(ranks):
            assert_close(got[rank], want[side_out.slices[rank]], dtype=torch.float64,
                         terms=case.terms, scale=scale)  # fmt: skip


def _product(core: Core, forward: bool, conj: bool, x: torch.Tensor, side) -> torch.Tensor:
    """This rank's part of a distributed product of the global ``x`` (its slab in ``side``,
    a copy)."""
    run = core.forward if forward else core.adjoint
    return run(x[side.slices[core.rank]].clone(), conj=conj)


def test_halos_reaching_past_the_neighbour_and_around_the_circle():
    """2-sample slabs under a 13-sample dilated kernel: halos from three ranks away and, for
    circular padding, from the far end (tests/mpi's case, on 6 simulated ranks)."""
    weight = torch.randn(2, 1, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    op = convop.conv1d(weight, (1, 12), padding=6, dilation=2, padding_mode="circular")
    plan, world, cores = _cores(op, 0, 6)
    assert sorted(plan.receives(0)) == [0, 1, 2, 3, 4, 5]  # every rank, around the circle
    x = torch.randn(1, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = world.run(lambda r: _product(cores[r], True, False, x, cores[r].conv_in))
    assert_close(torch.cat(got, dim=1), op.apply(x), dtype=torch.float64, terms=7)


# ---------------------------------------------------------------------- ranks that disagree
def _blur(n: int = 12) -> convop.ConvOperator:
    weight = torch.ones(1, 1, 5, dtype=torch.float64) / 5
    return convop.conv1d(weight, (1, n), padding=2, padding_mode="reflect")


def _blur2d() -> convop.ConvOperator:
    weight = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9
    return convop.conv2d(weight, (1, 12, 12), padding=1)


def _plan(op: convop.ConvOperator, axis: int = 0, kind: type = SlabPlan) -> SlabPlan:
    return kind(*conv_form(op.geometry)[:2], axis, 3)


def _remainder_last(op: convop.ConvOperator) -> SlabPlan:
    """A slab-ownership bug: the remainder of the split goes to the last rank."""
    plan = _plan(op)
    object.__setattr__(plan, "input_bounds", ((0, 3), (3, 7), (7, 12)))
    return plan


class _ShortSends(SlabPlan):
    """A transfer bug: the last sample of each send is left out."""

    def sends(self, rank: int) -> dict[int, Transfer]:
        return {q: Transfer(t.local[:-1], t.ext[:-1]) for q, t in super().sends(rank).items()}


class _ExtraSend(SlabPlan):
    """A transfer bug: rank 0 also sends a sample to rank 2, which needs none of its samples."""

    def sends(self, rank: int) -> dict[int, Transfer]:
        extra = {2: Transfer(np.array([0]), np.array([0]))} if rank == 0 else {}
        return {**super().sends(rank), **extra}


class Disagreement(NamedTuple):
    """Three ranks, each with its operator and plan, and the error every rank must raise."""

    ranks: Callable[[], list[tuple[convop.ConvOperator, SlabPlan]]]
    error: type
    message: str


DISAGREEMENTS = {
    "input-shape": Disagreement(
        lambda: [(op, _plan(op)) for op in (_blur(12), _blur(12), _blur(13))],
        ValueError,
        r"ranks \[2\] built a different convolution \(geometry or input shape\) from rank 0's",
    ),
    "axis": Disagreement(
        lambda: [(_blur2d(), _plan(_blur2d(), axis)) for axis in (0, 0, 1)],
        ValueError,
        r"the split axis differs between ranks \(rank 0: 0, rank 2: 1\)",
    ),
    "slab-table": Disagreement(
        lambda: [
            (_blur(), _plan(_blur())),
            (_blur(), _plan(_blur())),
            (_blur(), _remainder_last(_blur())),
        ],
        RuntimeError,
        r"ranks \[2\] hold a different slab table from rank 0's .* rank 0: input 0:4, output "
        r"0:4; rank 1: input 4:8, output 4:8; rank 2: input 7:12, output 8:12\); no message",
    ),
    "short-send": Disagreement(
        lambda: [(_blur(), _plan(_blur(), kind=k)) for k in (SlabPlan, _ShortSends, SlabPlan)],
        RuntimeError,
        r"rank 0 expects 2 halo samples from rank 1, which sends it 1; no message was exchanged",
    ),
    "extra-send": Disagreement(
        lambda: [(_blur(), _plan(_blur(), kind=_ExtraSend))] * 3,
        RuntimeError,
        r"rank 0 sends 1 halo sample to rank 2, which expects 0; no message was exchanged",
    ),
}


@pytest.mark.parametrize("case", DISAGREEMENTS.values(), ids=DISAGREEMENTS.keys())
def test_ranks_that_disagree_all_raise_the_same_error_before_any_message(case):
    world = FakeWorld(3)
    cores = [Core(op, plan, world.comm(r)) for r, (op, plan) in enumerate(case.ranks())]
    x = torch.ones(cores[0].conv_in.shape, dtype=torch.float64)
    outcomes = world.outcomes(lambda r: _product(cores[r], True, False, x, cores[0].conv_in))
    assert [type(outcome) for outcome in outcomes] == [case.error] * 3
    assert [str(outcome) for outcome in outcomes] == [str(outcomes[0])] * 3
    assert re.match("the ranks disagree on the distributed convolution: " + case.message,
                    str(outcomes[0]))  # fmt: skip
    assert world.sent == 0


def test_agreement_is_checked_once_and_only_by_products():
    """A property read on one rank alone (``halo_bytes``) must not start a collective."""
    op = _blur()
    _, world, cores = _cores(op, 0, 3)
    cores[1].transfers()  # what D.H.halo_bytes does, on one rank
    assert world._collectives == [0, 0, 0]
    x = torch.ones(op.input_shape, dtype=torch.float64)

    def round_trip(rank: int) -> torch.Tensor:
        y = _product(cores[rank], True, False, x, cores[rank].conv_in)
        return cores[rank].adjoint(y, conj=False)

    world.run(round_trip)
    world.run(round_trip)
    assert world._collectives == [1, 1, 1]


def test_the_fake_world_fails_instead_of_hanging():
    """The stand-in itself: a receive no rank sends to raises after its timeout."""
    world = FakeWorld(2, timeout=0.2)
    comm = world.comm(0)
    work = [lambda: comm.Irecv(np.empty(3), source=1, tag=HALO_TAG).Wait(), lambda: None]
    outcomes = world.outcomes(lambda r: work[r]())
    assert isinstance(outcomes[0], TimeoutError)
    assert "rank 0's receive from rank 1: still waiting after 0.2 s" in str(outcomes[0])
    assert outcomes[1] is None
