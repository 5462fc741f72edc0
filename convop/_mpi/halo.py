"""The halo exchange of :mod:`convop.distributed`: one rank's part of a slab product.

:class:`Core` holds what one rank keeps for a distributed convolution (the slab plan of
:mod:`convop._mpi.slabs`, its transfers, its local operators) and runs the two collective
halves of a product: the gather of an extended slab (forward) and the halo reduce
(adjoint), with non-blocking point-to-point messages of the halo planes only.

Before its first exchange, a core checks that every rank holds the same plan and that each
message one rank waits for is one another rank sends (:func:`check_agreement`, one
``allgather``): a disagreement raises on every rank instead of leaving some waiting forever.

The communicator is used through ``Get_rank``, ``Get_size``, ``allgather``, ``Isend`` and
``Irecv`` (of contiguous numpy buffers) and the requests' ``Wait``: an ``mpi4py``
communicator, or an in-process stand-in (the serial tests of this module use one).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .._shared.arrays import TORCH_TO_NUMPY
from ..operator import ConvOperator
from .slabs import SlabPlan, Transfer

#: MPI tag of convop's halo messages (products are collective over the communicator).
HALO_TAG = 0x6307


class Side:
    """One side (input or output) of the decomposition: sample shape and slab bounds."""

    def __init__(self, channels: int, sizes: tuple, bounds: tuple, axis: int) -> None:
        self.shape = (channels, *sizes)
        self.bounds = bounds
        self.axis = axis
        self.slabs = tuple(self._slab(lo, hi) for lo, hi in bounds)
        self.slices = tuple(
            (slice(None),) * (1 + axis)
            + (slice(lo, hi),)
            + (slice(None),) * (len(sizes) - axis - 1)
            for lo, hi in bounds
        )
        self.counts = [math.prod(s) for s in self.slabs]

    def _slab(self, lo: int, hi: int) -> tuple:
        shape = list(self.shape)
        shape[1 + self.axis] = hi - lo
        return tuple(shape)


class Core:
    """What one rank keeps for a distributed convolution and its adjoint.

    The plan, the transfers of this rank, and the local operators (built on first use).
    """

    def __init__(self, op: ConvOperator, plan: SlabPlan, comm: Any) -> None:
        conv, keep, axis = plan.conv, plan.keep, plan.axis
        self.weight, self.method = op.weight, op._method
        self.comm = comm
        self.rank = comm.Get_rank()
        self.plan = plan
        self.conv_in = Side(conv.in_channels, conv.input_size, self.plan.input_bounds, axis)
        self.conv_out = Side(conv.out_channels, keep, self.plan.output_bounds, axis)
        self._local: dict[bool, ConvOperator] = {}
        self._transfers: tuple[dict, dict] | None = None
        self._agreed = False  # every rank's plan checked against this one's

    # ------------------------------------------------------------------ built on first use
    def local(self, *, conj: bool) -> ConvOperator:
        """The convolution of this rank's extended slab (weight conjugated if ``conj``)."""
        if conj not in self._local:
            if False not in self._local:
                geometry = self.plan.local_geometry(self.rank)
                self._local[False] = ConvOperator(self.weight, geometry, method=self.method)
            base = self._local[False]
            self._local[conj] = (
                ConvOperator._derived(base, adjoint=False, conj=True) if conj else base
            )
        return self._local[conj]

    def transfers(self) -> tuple[dict[int, Transfer], dict[int, Transfer]]:
        """``(receives, sends)`` of this rank, by the other rank (own samples in receives)."""
        if self._transfers is None:
            source = self.plan.extended_source(self.rank)
            self._extended = (len(source), np.flatnonzero(source < 0))
            self._transfers = (self.plan.receives(self.rank), self.plan.sends(self.rank))
        return self._transfers

    def _exchange_plan(self) -> tuple[dict[int, Transfer], dict[int, Transfer]]:
        """:meth:`transfers`, checked against every rank's plan before the first exchange.

        Collective (one ``allgather`` on first use): called by the products only, which
        every rank calls in the same order, never by :meth:`transfers` (which a property
        such as ``halo_bytes`` may call on one rank alone).
        """
        receives, sends = self.transfers()
        if not self._agreed:
            check_agreement(self.comm, self.plan, self.rank, receives, sends)
            self._agreed = True
        return receives, sends

    # ------------------------------------------------------------------ products
    def forward(self, x: torch.Tensor, *, conj: bool) -> torch.Tensor:
        """``crop o C`` on this rank: ``x`` is the local input slab (C_in, *slab)."""
        ext = self._gather(x)  # (C_in, *extended slab)
        y = self.local(conj=conj)._product(ext[None], adjoint=False)[
            0
        ]  # (C_out, *out slab, uncropped)
        return _crop(y, self.conv_out.slabs[self.rank])

    def adjoint(self, y: torch.Tensor, *, conj: bool) -> torch.Tensor:
        """Adjoint of :meth:`forward`: local adjoint, then the halo reduce."""
        local = self.local(conj=conj)
        full = list(local.geometry.output_shape)
        y = _zero_extend(y, full)  # undo the crop
        ext = local._product(y[None], adjoint=True)[0]  # (C_in, *extended slab)
        return self._reduce(ext)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        a = 1 + self.plan.axis
        receives, sends = self._exchange_plan()
        length, zero = self._extended  # extended-slab length, samples zero padding supplies
        shape = list(x.shape)
        shape[a] = length
        ext = torch.empty(shape, dtype=x.dtype, device=x.device)
        requests, buffers, keep = [], {}, []
        for q, t in receives.items():
            if q != self.rank:
                buffers[q] = np.empty(_with_len(shape, a, len(t)), dtype=_np_dtype(x))
                requests.append(self.comm.Irecv(buffers[q], source=q, tag=HALO_TAG))
        for r, t in sends.items():
            piece = _host(_select(x, a, t.local))
            keep.append(piece)
            requests.append(self.comm.Isend(piece, dest=r, tag=HALO_TAG))
        if len(zero):
            ext.index_fill_(a, _index(zero, x.device), 0)
        own = receives.get(self.rank)
        if own is not None:
            _copy_into(ext, a, x, own)
        _wait_all(requests)
        for q, buffer in buffers.items():
            _put(ext, a, receives[q].ext, torch.from_numpy(buffer).to(x.device), add=False)
        return ext

    def _reduce(self, ext: torch.Tensor) -> torch.Tensor:
        a = 1 + self.plan.axis
        receives, sends = self._exchange_plan()
        shape = self.conv_in.slabs[self.rank]
        requests, buffers, keep = [], {}, []
        for r, t in sends.items():  # what this rank sent forward comes back, summed
            buffers[r] = np.empty(_with_len(shape, a, len(t)), dtype=_np_dtype(ext))
            requests.append(self.comm.Irecv(buffers[r], source=r, tag=HALO_TAG))
        for q, t in receives.items():
            if q != self.rank:
                piece = _host(_select(ext, a, t.ext))
                keep.append(piece)
                requests.append(self.comm.Isend(piece, dest=q, tag=HALO_TAG))
        own = receives.get(self.rank)
        window = None if own is None else own.window(shape[a])
        if window is not None:
            # The usual case: the extended slab holds the whole own slab, in order. That
            # window *is* the result (no copy); only the folds and the halo are added.
            start, rest = window
            out = ext.narrow(a, start, shape[a])
            if rest.any():
                out.index_add_(a, _index(own.local[rest], ext.device),
                               _select(ext, a, own.ext[rest]))  # fmt: skip
        else:
            out = torch.zeros(shape, dtype=ext.dtype, device=ext.device)
            if own is not None:
                out.index_add_(a, _index(own.local, ext.device), _select(ext, a, own.ext))
        _wait_all(requests)
        for r, buffer in buffers.items():
            _put(out, a, sends[r].local, torch.from_numpy(buffer).to(ext.device), add=True)
        return out


class _View(NamedTuple):
    """What one rank holds of a distributed convolution, for :func:`check_agreement`."""

    convolution: str  # digest of the convolution and the output samples kept
    axis: int
    table: str  # digest of every rank's input and output bounds
    own: tuple  # this rank's ((input lo, hi), (output lo, hi))
    receives: dict  # samples this rank receives from each other rank
    sends: dict  # samples this rank sends to each other rank


def check_agreement(
    comm: Any, plan: SlabPlan, rank: int, receives: dict[int, Transfer], sends: dict[int, Transfer]
) -> None:
    """Raise on every rank unless all ranks agree on ``plan`` and on the messages.

    One ``allgather`` of a few values per rank: digests of the convolution and of the slab
    table (every rank's bounds), the split axis, this rank's own slabs, and the number of
    samples it receives from and sends to each other rank. Every rank compares the same
    gathered values, so either all of them raise the same error or none does.

    Parameters
    ----------
    comm : communicator
        Every rank of the decomposition calls this with it (a collective).
    plan : SlabPlan
        This rank's plan.
    rank : int
        This rank.
    receives, sends : dict of int to Transfer
        This rank's transfers (:meth:`Core.transfers`).

    Raises
    ------
    ValueError
        If the ranks built different convolutions or split different axes (every rank must
        build the operator from the same geometry, with the same ``axis``).
    RuntimeError
        If the ranks agree on those but not on the slab tables or the messages (an
        inconsistency inside convop, e.g. ranks running different versions of it).
    """
    mine = _View(
        convolution=_digest(plan.conv, plan.keep),
        axis=plan.axis,
        table=_digest(plan.input_bounds, plan.output_bounds),
        own=(plan.input_bounds[rank], plan.output_bounds[rank]),
        receives={q: len(t) for q, t in receives.items() if q != rank},
        sends={q: len(t) for q, t in sends.items()},
    )
    views = [_View(*view) for view in comm.allgather(tuple(mine))]
    size = len(views)
    prefix = "the ranks disagree on the distributed convolution"

    def differ(field: str) -> list[int]:
        return [
            r for r, view in enumerate(views) if getattr(view, field) != getattr(views[0], field)
        ]

    if differ("convolution"):
        raise ValueError(
            f"{prefix}: ranks {differ('convolution')} built a different convolution (geometry "
            f"or input shape) from rank 0's; every rank must build the operator from the same "
            f"geometry and input shape"
        )
    if differ("axis"):
        axes = ", ".join(f"rank {r}: {views[r].axis}" for r in [0, *differ("axis")][:8])
        raise ValueError(
            f"{prefix}: the split axis differs between ranks ({axes}); every rank must pass "
            f"the same axis"
        )
    if differ("table"):
        owned = "; ".join(
            f"rank {r}: input {i0}:{i1}, output {o0}:{o1}"
            for r, ((i0, i1), (o0, o1)) in enumerate(view.own for view in views[:8])
        )
        raise RuntimeError(
            f"{prefix}: ranks {differ('table')} hold a different slab table from rank 0's for "
            f"the same convolution (the samples each rank owns along axis {plan.axis}: "
            f"{owned}); no message was exchanged"
        )
    # Every message as both ends count it: (this end's counts, the other end's, the words).
    ends = (("receives", "sends", "expects {} from", "which sends it"),
            ("sends", "receives", "sends {} to", "which expects"))  # fmt: skip
    for r, view in enumerate(views):
        for mine, theirs, says, answer in ends:
            for q, n in getattr(view, mine).items():
                other = getattr(views[q], theirs).get(r, 0) if 0 <= q < size else None
                if other != n:
                    raise RuntimeError(
                        f"{prefix}: rank {r} {says.format(_samples(n))} rank {q}, {answer} "
                        f"{other}; no message was exchanged"
                    )


def _samples(n: int) -> str:
    return f"{n} halo sample{'' if n == 1 else 's'}"


def _digest(*values: Any) -> str:
    """A short digest of the ``repr`` of ``values`` (plain data: tuples, ints, geometries)."""
    return hashlib.blake2b(repr(values).encode(), digest_size=8).hexdigest()


def _wait_all(requests: list) -> None:
    """Wait for every request (all were posted before: any order completes them all)."""
    for request in requests:
        request.Wait()


def _np_dtype(t: torch.Tensor) -> np.dtype:
    return TORCH_TO_NUMPY[t.dtype]


def _index(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.int64, device=device)


def _run(index: np.ndarray) -> int | None:
    """The first index when ``index`` is one unit-step run (a slice), else ``None``."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return int(index[0])
    return None


def _select(t: torch.Tensor, a: int, index: np.ndarray) -> torch.Tensor:
    """``t.index_select(a, index)``, as a view when ``index`` is one slice.

    No gather then: on the strided windows FFT products return, ``index_select`` would copy
    the whole tensor first.
    """
    start = _run(index)
    if start is not None:
        return t.narrow(a, start, len(index))
    return t.index_select(a, _index(index, t.device))


def _put(t: torch.Tensor, a: int, index: np.ndarray, values: torch.Tensor, *, add: bool) -> None:
    """``t[..., index, ...] = values`` (``+=`` if ``add``) along ``a``, sliced when possible."""
    start = _run(index)
    if start is not None:
        window = t.narrow(a, start, len(index))
        window.add_(values) if add else window.copy_(values)
    elif add:
        t.index_add_(a, _index(index, t.device), values)
    else:
        t.index_copy_(a, _index(index, t.device), values)


def _host(t: torch.Tensor) -> np.ndarray:
    """A contiguous host copy of a tensor, as an MPI buffer."""
    return np.ascontiguousarray(t.detach().resolve_conj().cpu().numpy())


def _with_len(shape: list, axis: int, n: int) -> tuple:
    shape = list(shape)
    shape[axis] = n
    return tuple(shape)


def _copy_into(ext: torch.Tensor, a: int, x: torch.Tensor, t: Transfer) -> None:
    """Copy ``x``'s samples of transfer ``t`` (own samples) into the extended slab."""
    window = t.window(x.shape[a])
    if window is not None:  # the whole slab in one slice, then the folded samples
        start, rest = window
        ext.narrow(a, start, x.shape[a]).copy_(x)
    else:
        rest = np.ones(len(t), dtype=bool)
    if rest.any():
        ext.index_copy_(a, _index(t.ext[rest], x.device), _select(x, a, t.local[rest]))


def _crop(y: torch.Tensor, shape: tuple) -> torch.Tensor:
    for i, n in enumerate(shape):
        if y.shape[i] != n:
            y = y.narrow(i, 0, n)
    return y


def _zero_extend(y: torch.Tensor, shape: list) -> torch.Tensor:
    pads = []
    for have, want in zip(reversed(y.shape), reversed(shape)):
        pads += [0, want - have]
    return torch.nn.functional.pad(y, pads) if any(pads) else y
