"""Richardson–Lucy over MPI ranks: a ``DistributedConv`` and ``DistributedArray`` data.

Each rank iterates on its own slab; the products are the ``DistributedConv``'s (exact halo
exchange), the sums are allreduced scalars. Nothing is gathered in the loop. Imported only
when :func:`convop.richardson_lucy` gets an operator that is no ``ConvOperator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._shared.arrays import TORCH_TO_NUMPY, to_numpy
from .._shared.checks import as_float
from .._shared.memory import check_memory
from ._common import SolverResult
from .poisson import (
    INPUT_VECTORS,
    OUTPUT_VECTORS,
    Problem,
    Space,
    _iterate,
    check_nonneg,
    check_weight,
    flat_start,
)


class Ranks(Space):
    """A ``DistributedConv`` on this rank's blocks, ``(1, n_local)`` tensors."""

    def __init__(self, D, dtype: torch.dtype, device: torch.device) -> None:
        self.D, self.comm = D, D.base_comm
        self.dtype, self.device = dtype, device

    def _apply(self, x: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        return self.D.apply_local(x[0], adjoint=adjoint).reshape(1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``D @ x`` of this rank's input block."""
        return self._apply(x, adjoint=False)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``D.H @ r`` of this rank's output block."""
        return self._apply(r, adjoint=True)

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over all ranks (one allreduced float per call)."""
        local = float(t.sum(dtype=torch.float64))
        return torch.tensor([self.comm.allreduce(local)], dtype=torch.float64)

    def tensor(self, local) -> torch.Tensor:
        """A rank's local values as a ``(1, n)`` tensor of the solve (a copy)."""
        array = np.array(local, dtype=TORCH_TO_NUMPY[self.dtype], copy=True).reshape(1, -1)
        return torch.from_numpy(array).to(self.device)


def distributed(D, y, iterations: int, *, background, x0, accelerate: bool, tv: float,
                callback) -> SolverResult | None:  # fmt: skip
    """:func:`convop.richardson_lucy` of a ``DistributedConv``; None for other operators."""
    try:
        from pylops_mpi import DistributedArray

        from ..distributed import DistributedConv
    except ImportError:  # without the mpi extra there is no DistributedConv to get
        return None
    if not isinstance(D, DistributedConv):
        return None
    if tv:
        raise ValueError(
            "tv > 0 is not available over MPI ranks (its gradient would need a halo of its "
            "own): run RL-TV serially, or plain or accelerated RL distributed"
        )
    op = D.operator
    weight = op._weight_now().detach()
    check_weight(weight, op.name)
    for value, name in ((y, "y"), (x0, "x0"), (background, "background")):
        if isinstance(value, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"{name} must be a pylops_mpi.DistributedArray with a DistributedConv (see "
                f"D.scatter and D.from_local), got {type(value).__name__}"
            )
    if not isinstance(y, DistributedArray):
        raise TypeError(f"y must be a pylops_mpi.DistributedArray, got {type(y).__name__}")
    D.to_local(y, output=True)  # checks the layout
    dtype = torch.promote_types(weight.dtype, torch.from_numpy(np.zeros(0, y.dtype)).dtype)
    space = Ranks(D, dtype, weight.device)
    data = space.tensor(y.local_array)
    _check_all(space, data, "y")
    n_in, n_out = math.prod(D.local_input_shape), math.prod(D.local_output_shape)
    needed = data.element_size() * (INPUT_VECTORS * n_in + OUTPUT_VECTORS * n_out)
    what = f"Richardson-Lucy on this rank's slab {D.local_input_shape}"
    _agree(space, lambda: check_memory(needed, None, what, weight.device))
    if isinstance(background, DistributedArray):
        D.to_local(background, output=True)
        b = space.tensor(background.local_array)
        _check_all(space, b, "background")
    else:
        b = torch.tensor(as_float(background, "background", minimum=0.0), dtype=dtype)
    with torch.no_grad():
        sensitivity = space.adjoint(torch.ones_like(data)).clamp(min=0)
        if x0 is None:
            start = flat_start(space, data, b.expand_as(data), sensitivity)
        elif isinstance(x0, DistributedArray):
            D.to_local(x0)
            start = space.tensor(x0.local_array)
            _check_all(space, start, "x0")
        else:
            raise TypeError(f"x0 must be a pylops_mpi.DistributedArray, got {type(x0).__name__}")
        problem = Problem(data, b, start, sensitivity, 0.0, accelerate)
        seen = None
        if callback is not None:
            seen = lambda k, x: callback(k, D.from_local(to_numpy(x[0])))  # noqa: E731
        x, blurred, k, stop = _iterate(space, problem, iterations, seen)
        squares = space.total((data - blurred - b) ** 2)
    method = "richardson-lucy-accelerated" if accelerate else "richardson-lucy"
    return SolverResult(
        D.from_local(to_numpy(x[0])), k, stop == "iterations", stop,
        math.sqrt(float(squares[0])), method,
    )  # fmt: skip


def _agree(space: Ranks, check) -> None:
    """Run ``check()`` on every rank; if it raised on any, raise it on all (none waits)."""
    try:
        check()
        failure = None
    except (ValueError, MemoryError) as error:
        failure = (type(error), str(error))
    failures = [f for f in space.comm.allgather(failure) if f is not None]
    if failures:
        kind, message = failures[0]
        raise kind(f"{message} (on {len(failures)} of {space.comm.Get_size()} ranks)")


def _check_all(space: Ranks, t: torch.Tensor, name: str) -> None:
    """:func:`check_nonneg` on every rank at once: all raise, or none."""
    _agree(space, lambda: check_nonneg(t, name))
