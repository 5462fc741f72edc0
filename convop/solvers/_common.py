"""What every solver of the package shares: its result, its callback, data in and out.

The data ``y`` (numpy array or torch tensor, flat or of the operator's output shape) is
read into a private flat numpy array in the solve's dtype (numpy's promotion of the
operator's and the data's), so that no solver ever writes into the caller's arrays; the
solution goes back in ``y``'s form (flat or of the input shape, numpy or a tensor on
``y``'s device).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .._shared.arrays import NUMPY_TO_TORCH, TORCH_TO_NUMPY, result_dtype, to_numpy
from .._shared.checks import as_float, as_int

#: ``callback(iteration, x)``; returning True stops the solver (see :mod:`convop.solvers`).
Callback = Callable[[int, np.ndarray], object]


@dataclass(frozen=True)
class SolverResult:
    """What a solver of :mod:`convop.solvers` returns.

    Attributes
    ----------
    x : numpy.ndarray or torch.Tensor
        The solution, in the form of the data ``y``: flat (``op.shape[1]``) for flat data,
        else of ``op.input_shape``; a tensor on ``y``'s device for a tensor ``y``.
    iterations : int
        The iterations run (the outer steps of an ADMM); 1 for an exact solve.
    converged : bool
        Whether the solver's stopping rule was met.
    stop : {'converged', 'maxiter', 'callback'}
        Why it stopped: the stopping rule, the iteration limit, or the callback.
    residual : float
        ``||y - op x||``, the data residual of the returned ``x``.
    method : str
        The algorithm that ran: ``'exact'``, ``'pcg'``, ``'cg'`` (no preconditioner),
        ``'admm'`` or ``'pylops'``.
    """

    x: np.ndarray | torch.Tensor
    iterations: int
    converged: bool
    stop: str
    residual: float
    method: str


class Data(NamedTuple):
    """Data read for a solve: a private flat copy, and how to give a solution back."""

    values: np.ndarray  # (m,), the solve's dtype, owned by the solver
    dtype: np.dtype
    shaped: bool  # y had the operator's output shape: x gets its input shape
    device: torch.device | None  # a tensor's device; None for numpy data


def check_callback(callback: object) -> Callback | None:
    """``callback``, or ``TypeError`` when it is neither ``None`` nor callable."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return callback


def check_rtol(rtol: object) -> float:
    """A relative tolerance in ``[0, 1)``."""
    value = as_float(rtol, "rtol", minimum=0.0)
    if value >= 1:
        raise ValueError(f"rtol must be a finite float >= 0 and < 1, got rtol={rtol!r}")
    return value


def check_maxiter(maxiter: object) -> int:
    """The most iterations, an int ``>= 1``."""
    return as_int(maxiter, "maxiter", minimum=1)


def check_damp(damp: object) -> float:
    """A damping ``>= 0`` whose square is a finite float64 (it shifts the normal equations)."""
    value = as_float(damp, "damp", minimum=0.0)
    if not math.isfinite(value * value):
        raise ValueError(f"damp must be a float whose square is finite, got damp={damp!r}")
    return value


def _numpy_of(value: object, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        if value.dtype not in TORCH_TO_NUMPY:
            raise TypeError(
                f"{name} must be a float32, float64, complex64 or complex128 tensor, got "
                f"{value.dtype}"
            )
        return to_numpy(value)
    raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(value).__name__}")


def read_data(op, y: object, *, real: str | None = None) -> Data:
    """``y`` as a private flat copy in the solve's dtype.

    ``real`` names a solver that refuses complex problems (a ``TypeError`` then).
    """
    array = _numpy_of(y, "y")
    out_shape = tuple(getattr(op, "output_shape", (op.shape[0],)))
    flat = array.shape == (op.shape[0],)
    if not (flat or array.shape == out_shape):
        raise ValueError(
            f"y must have shape {out_shape} or ({op.shape[0]},), got {array.shape} (one "
            f"sample: solve a batch one sample at a time, or with one grouped operator)"
        )
    dtype = result_dtype(np.dtype(op.dtype), array.dtype, "y")
    if real is not None and dtype.kind == "c":
        raise TypeError(
            f"{real} solves real problems: got y of dtype {array.dtype} and an operator of "
            f"dtype {op.dtype}"
        )
    values = np.array(array, dtype=dtype, order="C", copy=True).reshape(-1)
    device = y.device if isinstance(y, torch.Tensor) else None
    return Data(values, dtype, not flat, device)


def read_start(op, x0: object, data: Data) -> np.ndarray | None:
    """The starting point ``x0`` as a private flat copy in the solve's dtype, or None."""
    if x0 is None:
        return None
    array = _numpy_of(x0, "x0")
    in_shape = tuple(getattr(op, "input_shape", (op.shape[1],)))
    if array.shape not in ((op.shape[1],), in_shape):
        raise ValueError(f"x0 must have shape {in_shape} or ({op.shape[1]},), got {array.shape}")
    if array.dtype.kind not in "biufc" or (array.dtype.kind == "c" and data.dtype.kind != "c"):
        raise TypeError(f"x0 of dtype {array.dtype} does not fit a solve in {data.dtype}")
    return np.array(array, dtype=data.dtype, order="C", copy=True).reshape(-1)


def give_back(op, x: np.ndarray, data: Data) -> np.ndarray | torch.Tensor:
    """The flat solution ``x`` in the form of the data: shaped, and a tensor if it was one."""
    if data.shaped:
        x = x.reshape(op.input_shape)
    if data.device is None:
        return x
    return torch.from_numpy(np.ascontiguousarray(x)).to(
        device=data.device, dtype=NUMPY_TO_TORCH[data.dtype]
    )


def view(op, x: np.ndarray, data: Data) -> np.ndarray:
    """A read-only view of the iterate ``x`` for the callback, shaped as the solution."""
    seen = x.view()
    seen.flags.writeable = False
    return seen.reshape(op.input_shape) if data.shaped else seen


def settled(new: np.ndarray, old: np.ndarray, rtol: float) -> bool:
    """The step rule: ``||new - old|| <= rtol ||new||``."""
    return float(np.linalg.norm(new - old)) <= rtol * float(np.linalg.norm(new))


def finish(callback, op, data: Data, itn: int, current: np.ndarray, done: bool) -> str | None:
    """Call the callback after step ``itn``; why the loop ends now, or None to go on.

    The stopping rule wins over the callback when both say stop.
    """
    asked = callback is not None and stops(callback(itn, view(op, current, data)))
    return "converged" if done else "callback" if asked else None


def stops(answer: object) -> bool:
    """Whether a callback's return value asks to stop: ``True`` (or numpy's) only."""
    return answer is True or (isinstance(answer, np.bool_) and bool(answer))


def residual_norm(op, x: np.ndarray, data: Data) -> float:
    """``||y - op x||`` of a flat ``x``."""
    return float(np.linalg.norm(data.values - op.matvec(x)))


def result(op, x: np.ndarray, data: Data, *, iterations: int, stop: str,
           method: str) -> SolverResult:  # fmt: skip
    """The :class:`SolverResult` of the flat solution ``x``."""
    return SolverResult(
        x=give_back(op, x, data),
        iterations=int(iterations),
        converged=stop == "converged",
        stop=stop,
        residual=residual_norm(op, x, data),
        method=method,
    )
