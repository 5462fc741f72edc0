"""Convolutions spread over MPI ranks, as pylops-mpi operators with exact halo exchange.

Needs mpi4py and pylops-mpi (the ``mpi`` extra: ``python -m pip install '.[mpi]' mpich`` in a
convop clone; the ``mpich`` wheel brings an MPI library and ``mpiexec``). ``import convop`` never
imports this module; :meth:`convop.ConvOperator.to_pylops_mpi` does.

Layout
------
:meth:`ConvOperator.to_pylops_mpi` splits one spatial axis of the sample into contiguous
slabs, one per rank, for the operator's input and its output alike (the remainder of the
division goes to the first ranks, as in pylops-mpi). Rank ``r`` holds the block
``x[D.input_slices[r]]`` of shape ``(C, *local_slab)``, flattened in C order, and the
distributed vector is these blocks one after the other, rank by rank: a 1-D
``pylops_mpi.DistributedArray`` with partition ``SCATTER`` and ``local_shapes`` given by
each rank's block size. This is *not* the C order of the global sample (unless the split
axis is the first and there is one channel): use :meth:`DistributedConv.scatter`,
:meth:`~DistributedConv.gather`, :meth:`~DistributedConv.from_local` and
:meth:`~DistributedConv.to_local` to move between the two.

Which samples each rank owns and reads, and which axis to split, are ``convop._mpi.slabs``'s;
the halo exchange is ``convop._mpi.halo``'s, the messages of a scatter or gather
``convop._mpi.blocks``'. This module is the pylops-mpi face: the operator, its vectors
(global or per-rank blocks) and :func:`block_diag`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

try:
    import pylops_mpi
    from mpi4py import MPI
    from pylops_mpi import DistributedArray, MPILinearOperator, Partition
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "convop.distributed needs mpi4py and pylops-mpi: pip install mpi4py pylops-mpi "
        "mpich (or, in a convop clone, the mpi extra: pip install '.[mpi]' mpich)"
    ) from error

from ._mpi.blocks import gather_to, scatter_from
from ._mpi.halo import Core, Side
from ._mpi.slabs import SlabPlan, choose_axis, conv_form
from ._shared.arrays import NUMPY_TO_TORCH, result_dtype, to_numpy, to_tensor
from ._shared.checks import as_int
from .operator import ConvOperator
from .pylops_bridge import PyLopsConv

__all__ = ["DistributedConv", "block_diag", "local_device"]


def local_device(comm: Any = None) -> torch.device:
    """The device for this rank's weight: ``cuda:{rank % n_gpus}``, or the CPU without CUDA.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.

    Returns
    -------
    torch.device

    See Also
    --------
    DistributedConv : Each rank builds its operator with a weight on this device.

    Examples
    --------
    >>> from convop.distributed import local_device
    >>> local_device().type in ("cpu", "cuda")
    True
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    if torch.cuda.is_available() and torch.cuda.device_count():
        return torch.device(f"cuda:{comm.Get_rank() % torch.cuda.device_count()}")
    return torch.device("cpu")


class DistributedConv(MPILinearOperator):
    """A convop operator over MPI ranks: one slab of a spatial axis per rank.

    Made by :meth:`convop.ConvOperator.to_pylops_mpi`. ``D @ x`` and ``D.H @ y`` take and
    return 1-D ``pylops_mpi.DistributedArray`` vectors in the layout of
    :mod:`convop.distributed` and equal the serial operator's products (``op @ x``,
    ``op.H @ y``) up to round-off. Each rank gathers the samples its output slab reads
    from other ranks (halo exchange; any padding mode, stride, dilation, groups,
    transposed or not, halos reaching past the neighbours included); the adjoint sends
    those contributions back to their owners, who add them (halo reduce). No product
    ever assembles the global array. Products are collective: every rank of the
    communicator calls them, in the same order. Before the first halo message, the ranks
    check that they agree on the operator, the slabs and the messages (one ``allgather``):
    a rank that disagrees makes every rank raise, instead of leaving some waiting forever.

    Parameters
    ----------
    op : ConvOperator
        The operator to distribute. Every rank builds it (with the same geometry and
        weight values; the weight may live on a per-rank device, see :func:`local_device`).
        The distributed operator reads the weight at every product, as ``op`` does.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    axis : int, optional
        Spatial axis of the sample to split (0 for the first spatial axis, negative counts
        from the end). Default: the axis with the most samples on both sides.

    Attributes
    ----------
    operator : ConvOperator
        The serial operator this one distributes (``op.H`` for ``D.H``).
    axis : int
        The split spatial axis.
    input_slices, output_slices : tuple of tuple of slice
        Per rank, the index of its block in a global sample:
        ``x[D.input_slices[r]]`` is rank ``r``'s part of the input ``x``.
    local_input_shape, local_output_shape : tuple of int
        This rank's blocks, ``(C, *local_slab)``.
    halo_bytes : int
        Bytes this rank receives from other ranks per product, for data of the operator's
        dtype (the adjoint sends as many back).

    Raises
    ------
    ValueError
        If the split axis has fewer samples (input or output) than there are ranks; the
        message names the largest rank count that works. At the first product, on every
        rank, if the ranks built different convolutions or split different axes.
    RuntimeError
        At the first product, on every rank and before any halo message, if the ranks
        agree on the convolution but not on the slabs or the messages (e.g. ranks running
        different versions of convop).

    See Also
    --------
    block_diag : Independent samples spread over ranks, with no halo exchange.
    local_device : The device for each rank's weight.

    Examples
    --------
    Run under ``mpiexec -n 2 python script.py``; on one process it is a one-rank split.

    >>> import numpy as np, torch, convop
    >>> w = torch.rand(4, 1, 5, 5, dtype=torch.float64)
    >>> op = convop.conv2d(w, (1, 64, 48), padding="same", padding_mode="reflect")
    >>> D = op.to_pylops_mpi()
    >>> x = np.random.default_rng(0).standard_normal(op.input_shape)
    >>> y = D.gather(D @ D.scatter(x))  # every rank gets the whole output
    >>> bool(np.allclose(y, (op @ x.ravel()).reshape(op.output_shape)))
    True
    >>> v = D.scatter(x)
    >>> D.to_local(v).shape == D.local_input_shape
    True
    """

    def __init__(self, op: ConvOperator, comm: Any = None, axis: int | None = None) -> None:
        if not isinstance(op, ConvOperator):
            raise TypeError(f"op must be a ConvOperator, got {type(op).__name__}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm, got {type(comm).__name__}")
        conv, keep, flip = conv_form(op.geometry)
        ranks = comm.Get_size()
        axis = choose_axis(conv, keep, ranks, axis, what=op.name)
        core = Core(op, SlabPlan(conv, keep, axis, ranks), comm)
        forward = op.is_adjoint == flip  # D's matvec is crop o C (else its adjoint)
        self._setup(op, core, forward=forward, conj=op._conj != flip)

    def _setup(self, op: ConvOperator, core: Core, *, forward: bool, conj: bool) -> None:
        self.operator = op
        self._core = core
        self._forward = forward
        self._conj = conj
        self.axis = core.plan.axis
        self._in, self._out = (
            (core.conv_in, core.conv_out) if forward else (core.conv_out, core.conv_in)
        )
        rank = core.rank
        super().__init__(
            shape=(math.prod(self._out.shape), math.prod(self._in.shape)),
            dtype=None,  # a property: it follows the weight
            base_comm=core.comm,
        )
        self.input_slices = self._in.slices
        self.output_slices = self._out.slices
        self.local_input_shape = self._in.slabs[rank]
        self.local_output_shape = self._out.slabs[rank]

    @classmethod
    def _derived(cls, D: DistributedConv, op: ConvOperator, *, forward: bool, conj: bool):
        new = cls.__new__(cls)
        new._setup(op, D._core, forward=forward, conj=conj)
        return new

    # ------------------------------------------------------------------ description
    @property
    def dtype(self) -> np.dtype:
        """The operator's dtype now (it follows the weight)."""
        return self.operator.dtype

    @dtype.setter
    def dtype(self, value) -> None:
        if value is not None:  # pylops-mpi's helpers copy attributes onto derived operators
            raise AttributeError("DistributedConv.dtype follows the weight and cannot be set")

    @property
    def halo_bytes(self) -> int:
        """Bytes this rank receives from other ranks per product (``op.dtype`` data)."""
        core = self._core
        side = core.conv_in  # halos are always samples of the convolution's input
        per_sample = math.prod(side.shape) // side.shape[1 + self.axis]
        if self._forward:  # gathered from the owners
            samples = core.plan.halo_samples(core.rank)
        else:  # the halo reduce: what this rank sent forward comes back
            samples = sum(len(t) for t in core.transfers()[1].values())
        return samples * per_sample * self.dtype.itemsize

    def __repr__(self) -> str:
        return (
            f"DistributedConv({self.operator.name}, ranks={self.size}, axis={self.axis}, "
            f"input_shape={self._in.shape}, output_shape={self._out.shape}, "
            f"local_input_shape={self.local_input_shape}, "
            f"local_output_shape={self.local_output_shape})"
        )

    # ------------------------------------------------------------------ products
    def _matvec(self, x: DistributedArray) -> DistributedArray:
        return self._product(x, forward=self._forward, side_in=self._in, side_out=self._out)

    def _rmatvec(self, x: DistributedArray) -> DistributedArray:
        return self._product(x, forward=not self._forward, side_in=self._out, side_out=self._in)

    def _product(self, x: DistributedArray, *, forward: bool, side_in, side_out):
        self._check_vector(x, side_in)
        core, rank = self._core, self._core.rank
        weight = self.operator.weight
        dtype = result_dtype(self.operator.dtype, np.dtype(x.dtype), "x")
        t = _local_tensor(x, dtype, weight.device).reshape(side_in.slabs[rank])
        y = core.forward(t, conj=self._conj) if forward else core.adjoint(t, conj=self._conj)
        flat = y.reshape(-1)
        if x.engine == "numpy":
            return self._distributed(to_numpy(flat), side_out)
        import cupy  # the cupy engine: a DLPack view on the same GPU

        return self._distributed(cupy.from_dlpack(flat.contiguous()), side_out)

    def _check_vector(self, x: Any, side: Side, name: str = "x") -> None:
        if not isinstance(x, DistributedArray):
            raise TypeError(
                f"{name} must be a pylops_mpi.DistributedArray (see D.scatter), "
                f"got {type(x).__name__}"
            )
        expected = (side.counts[self._core.rank],)
        if x.partition is not Partition.SCATTER or tuple(x.local_shape) != expected:
            raise ValueError(
                f"{name} must be a SCATTER DistributedArray holding this rank's block "
                f"{side.slabs[self._core.rank]} ({expected[0]} values), got partition "
                f"{x.partition.name} and local shape {tuple(x.local_shape)}; build it with "
                f"D.scatter() or D.from_local()"
            )

    # ------------------------------------------------------------------ adjoint, transpose
    def _adjoint(self) -> DistributedConv:
        return DistributedConv._derived(self, self.operator.H, forward=not self._forward,
                                        conj=self._conj)  # fmt: skip

    def _transpose(self) -> DistributedConv:
        return DistributedConv._derived(self, self.operator.T, forward=not self._forward,
                                        conj=not self._conj)  # fmt: skip

    # ------------------------------------------------------------------ global <-> distributed
    def scatter(
        self, x: Any = None, *, root: int | None = None, output: bool = False
    ) -> DistributedArray:
        """A global input sample as a distributed vector.

        Parameters
        ----------
        x : array_like or torch.Tensor
            Of shape ``input_shape`` (or flattened), on every rank (``root=None``) or only
            on ``root`` (ignored elsewhere; pass ``None``).
        root : int, optional
            The rank holding ``x``; it sends every other rank its block.
        output : bool, default False
            ``x`` is in the output space (shape ``output_shape``), e.g. the data of a
            least-squares problem; the same as ``D.H.scatter(x)``.

        Returns
        -------
        pylops_mpi.DistributedArray
            dtype ``np.result_type(op.dtype, x.dtype)``; a copy, never a view of ``x``.

        See Also
        --------
        gather : The way back, to a global array.
        from_local : A distributed vector from each rank's own block, with no messages.
        """
        side, rank = self._side(output), self._core.rank
        if root is None:
            block = np.array(self._global(x, side, "x")[side.slices[rank]], copy=True)
        else:
            root = _check_root(root, self.size)
            read = functools.partial(self._global, x, side, "x")  # runs on root only
            block = scatter_from(self._core.comm, side, rank, root, read)
        return self._distributed(block, side)

    def gather(
        self, y: DistributedArray, root: int | None = None, *, output: bool = True
    ) -> np.ndarray | None:
        """A distributed output vector as the global array of shape ``output_shape``.

        Parameters
        ----------
        y : pylops_mpi.DistributedArray
            In this operator's output layout (what ``D @ x`` returns).
        root : int, optional
            Only this rank gets the array (the others get ``None``). Default: every rank.
        output : bool, default True
            ``False`` for a vector in the input space (what ``D.H @ y`` and solvers
            return), of shape ``input_shape``; the same as ``D.H.gather(y)``.

        Returns
        -------
        numpy.ndarray or None

        See Also
        --------
        scatter : The way there, from a global array.
        to_local : This rank's block alone, with no messages.
        """
        side, rank = self._side(output), self._core.rank
        self._check_vector(y, side, "y")
        local = np.ascontiguousarray(_host_array(y.local_array)).reshape(side.slabs[rank])
        root = None if root is None else _check_root(root, self.size)
        return gather_to(self._core.comm, side, rank, local, root)

    def apply_local(self, block: torch.Tensor, *, adjoint: bool = False) -> torch.Tensor:
        """``D @ x`` (``adjoint=True``: ``D.H @ y``) of this rank's block, tensor to tensor.

        Collective: each rank passes its block (a tensor on the weight's device, any shape
        of its size) and gets its output block, with no ``DistributedArray`` to wrap or copy.
        """
        forward, side_in = self._forward != adjoint, self._out if adjoint else self._in
        slab = side_in.slabs[self._core.rank]
        if not isinstance(block, torch.Tensor) or block.numel() != math.prod(slab):
            raise ValueError(f"block must be a tensor of this rank's block {slab}")
        core, t = self._core, block.reshape(slab)
        return core.forward(t, conj=self._conj) if forward else core.adjoint(t, conj=self._conj)

    def from_local(self, block: Any, *, output: bool = False) -> DistributedArray:
        """A distributed vector (a copy) from the block ``(C, *local_slab)`` of this rank.

        Each rank passes its own part, e.g. read from disk at ``input_slices[rank]``.
        ``output=True`` for a block of the output space (``output_slices[rank]``).
        """
        side = self._side(output)
        arr = _as_numpy(block, "block")
        expected = side.slabs[self._core.rank]
        if arr.shape != expected and arr.shape != (math.prod(expected),):
            raise ValueError(
                f"block must have this rank's input block shape {expected}, got {arr.shape}"
            )
        dtype = result_dtype(self.dtype, arr.dtype, "block")
        return self._distributed(np.array(arr, dtype=dtype, copy=True).reshape(expected), side)

    def zeros(self, *, output: bool = False) -> DistributedArray:
        """A zero vector in the input layout (``output=True``: the output layout).

        Made on each rank without any global array: e.g. a solver's starting point.
        """
        side = self._side(output)
        return self._distributed(np.zeros(side.slabs[self._core.rank], dtype=self.dtype), side)

    def to_local(self, y: DistributedArray, *, output: bool = False) -> Any:
        """The block of this rank in a distributed vector, as ``(C, *local_slab)`` (a view).

        ``output=True`` for vectors in the output layout (what ``D @ x`` returns).
        """
        side = self._side(output)
        self._check_vector(y, side, "y")
        return y.local_array.reshape(side.slabs[self._core.rank])

    def _side(self, output: bool) -> Side:
        if not isinstance(output, bool):
            raise TypeError(f"output must be a bool, got {output!r}")
        return self._out if output else self._in

    def _global(self, x: Any, side: Side, name: str) -> np.ndarray:
        arr = _as_numpy(x, name)
        if arr.shape != side.shape and arr.shape != (math.prod(side.shape),):
            raise ValueError(
                f"{name} must have shape {side.shape} (or flattened), got {arr.shape}"
            )
        dtype = result_dtype(self.dtype, arr.dtype, name)
        return arr.reshape(side.shape).astype(dtype, copy=False)

    def _distributed(self, block: Any, side: Side) -> DistributedArray:
        """A vector of ``side``'s layout holding ``block`` (numpy or CuPy) on this rank."""
        return DistributedArray(
            global_shape=math.prod(side.shape),
            base_comm=self._core.comm,
            partition=Partition.SCATTER,
            local_shapes=[(c,) for c in side.counts],
            local_array=block.reshape(-1),
        )


def block_diag(
    ops: ConvOperator | Sequence[ConvOperator], comm: Any = None, *, frames: int | None = None
) -> pylops_mpi.MPIBlockDiag:
    """Independent samples (frames) spread over ranks: a ``pylops_mpi.MPIBlockDiag``.

    Parameters
    ----------
    ops : ConvOperator or sequence of ConvOperator
        This rank's operators, one per local frame; or one operator applied to ``frames``
        local frames as one batched convolution per product.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    frames : int, optional
        Number of frames on this rank for a single ``ops`` (default 1).

    Returns
    -------
    pylops_mpi.MPIBlockDiag
        Its vectors hold each rank's frames, flattened and concatenated, rank by rank.

    See Also
    --------
    DistributedConv : One sample split over ranks, with halo exchange.

    Examples
    --------
    >>> import numpy as np, torch, pylops_mpi, convop
    >>> from convop.distributed import block_diag
    >>> op = convop.conv1d(torch.ones(1, 1, 3, dtype=torch.float64), (1, 8), padding=1)
    >>> B = block_diag(op, frames=4)  # 4 frames on every rank
    >>> x = pylops_mpi.DistributedArray(B.shape[1])
    >>> x[:] = 1.0
    >>> (B @ x).local_array[:8]
    array([2., 3., 3., 3., 3., 3., 3., 2.])
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    if isinstance(ops, ConvOperator):
        count = 1 if frames is None else as_int(frames, "frames", minimum=1)
        local = [PyLopsConv(ops, frames=count)]
    else:
        if frames is not None:
            raise ValueError(
                "frames is for a single operator; pass one operator per frame instead"
            )
        if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence) or not len(ops):
            raise TypeError(
                f"ops must be a ConvOperator or a non-empty sequence of them, got {ops!r}"
            )
        for i, op in enumerate(ops):
            if not isinstance(op, ConvOperator):
                raise TypeError(f"ops[{i}] must be a ConvOperator, got {type(op).__name__}")
        local = [op.to_pylops() for op in ops]
    return pylops_mpi.MPIBlockDiag(local, base_comm=comm)


# ---------------------------------------------------------------------- helpers
def _check_root(root: Any, size: int) -> int:
    root = as_int(root, "root", minimum=0)
    if root >= size:
        raise ValueError(f"root must be a rank below {size}, got root={root}")
    return root


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is None; pass the array on every rank, or give root=")
    if isinstance(x, torch.Tensor):
        return to_numpy(x)
    return _host_array(x)


def _host_array(x: Any) -> np.ndarray:
    """``x`` as a numpy array: CuPy arrays are copied to the host, the rest as ``asarray``."""
    if not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__"):
        return x.get()  # CuPy
    return np.asarray(x)


def _local_tensor(x: DistributedArray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    local = x.local_array
    if isinstance(local, np.ndarray):
        return to_tensor(local, dtype, device)
    t = torch.from_dlpack(local)  # CuPy: a view on the same GPU
    if t.device != device:
        raise ValueError(
            f"x lives on {t.device} but this rank's weight is on {device}; build each rank's "
            f"operator on its own GPU (convop.distributed.local_device)"
        )
    return t.to(NUMPY_TO_TORCH[dtype])
