"""Whole blocks of a global sample between ranks: scattered from one rank, gathered to one or all.

What :meth:`convop.distributed.DistributedConv.scatter` and
:meth:`~convop.distributed.DistributedConv.gather` send: each rank's block (``side.slices[r]``
of the global array) in one message, by blocking ``Send`` and ``Recv`` with :data:`HALO_TAG`
(``Bcast`` when every rank gets the whole array). The global array exists only on the ranks
that hold it or asked for it. Collective: every rank of the communicator calls these, with
the same ``root``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .halo import HALO_TAG, Side


def scatter_from(comm: Any, side: Side, rank: int, root: int, read: Callable[[], np.ndarray],
                 name: str = "x") -> np.ndarray:  # fmt: skip
    """The block of this rank, a copy, of the global array ``read()`` gives on ``root``.

    ``read`` runs on ``root`` only and returns an array of ``side.shape``; a ``TypeError`` or
    ``ValueError`` it raises there is raised on every rank (naming ``name`` and ``root``), so
    that no rank waits for a block that never comes.
    """
    arr, problem = None, None
    if rank == root:
        try:
            arr = read()
        except (TypeError, ValueError) as error:  # every rank must learn of it
            problem = (type(error), str(error))
    problem, dtype = comm.bcast((problem, None if arr is None else arr.dtype.str), root=root)
    if problem is not None:
        raise problem[0](f"{problem[1]} ({name} on rank {root})")
    if rank != root:
        block = np.empty(side.slabs[rank], dtype=np.dtype(dtype))
        comm.Recv(block, source=root, tag=HALO_TAG)
        return block
    for r, index in enumerate(side.slices):
        if r != root:
            comm.Send(np.ascontiguousarray(arr[index]), dest=r, tag=HALO_TAG)
    return np.array(arr[side.slices[root]], copy=True)


def gather_to(comm: Any, side: Side, rank: int, local: np.ndarray,
              root: int | None) -> np.ndarray | None:  # fmt: skip
    """The global array of ``side.shape`` from every rank's contiguous ``local`` block.

    On every rank (``root=None``: one ``Bcast`` per block), or on ``root`` only (the other
    ranks send it their block and get ``None``).
    """
    if root is not None and rank != root:
        comm.Send(local, dest=root, tag=HALO_TAG)
        return None
    out = np.empty(side.shape, dtype=local.dtype)
    for q, index in enumerate(side.slices):
        block = local if q == rank else np.empty(side.slabs[q], dtype=local.dtype)
        if root is None:
            comm.Bcast(block, root=q)
        elif q != rank:
            comm.Recv(block, source=q, tag=HALO_TAG)
        out[index] = block
    return out
