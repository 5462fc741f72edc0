"""The halo exchange of :mod:`convop.distributed`: one rank's part of a slab product.

:class:`Core` holds what one rank keeps for a distributed convolution (the slab plan of
:mod:`convop._slabs`, its transfers, its local operators) and runs the two collective
halves of a product: the gather of an extended slab (forward) and the halo reduce
(adjoint), with non-blocking point-to-point messages of the halo planes only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from mpi4py import MPI

from ._arrays import TORCH_TO_NUMPY
from ._slabs import SlabPlan, Transfer
from .operator import ConvOperator

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
        receives, sends = self.transfers()
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
        MPI.Request.Waitall(requests)
        for q, buffer in buffers.items():
            _put(ext, a, receives[q].ext, torch.from_numpy(buffer).to(x.device), add=False)
        return ext

    def _reduce(self, ext: torch.Tensor) -> torch.Tensor:
        a = 1 + self.plan.axis
        receives, sends = self.transfers()
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
        MPI.Request.Waitall(requests)
        for r, buffer in buffers.items():
            _put(out, a, sends[r].local, torch.from_numpy(buffer).to(ext.device), add=True)
        return out


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
