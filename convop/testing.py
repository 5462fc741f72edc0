"""Checks for linear operators and their adjoints, for test suites and examples.

:func:`dot_test` is the dot test of an operator against its adjoint, normalised by its
Cauchy–Schwarz scale (docs/conventions.md, section 8), for any object with ``matvec`` and
``rmatvec`` whose products take numpy arrays or torch tensors: a convop operator, a scipy or
PyLops ``LinearOperator``, or an operator of one's own. PyLops' ``pylops.utils.dottest``
answers the same question relative to ``|<Ax, v>|``, which a correct float32 operator fails
about one time in five; here the error is a number to compare with round-off.

Like ``numpy.testing``, this module is imported by name (``import convop.testing``); it
needs only numpy and torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._shared.checks import as_int

__all__ = ["dot_test"]

# numpy's floating-point and complex dtypes that torch has too (vectors are drawn in them)
_TORCH_DTYPES = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.complex64): torch.complex64,
    np.dtype(np.complex128): torch.complex128,
}


def dot_test(
    op: Any,
    x: Any = None,
    v: Any = None,
    *,
    adjoint: Callable[[Any], Any] | None = None,
    trials: int = 1,
    seed: int | np.random.Generator | None = 0,
) -> float:
    r"""The dot test of ``op`` and its adjoint, normalised by its Cauchy–Schwarz scale.

    Parameters
    ----------
    op : object with ``matvec`` (and ``rmatvec`` unless ``adjoint`` is given)
        The operator ``A``: a convop operator, a scipy or PyLops ``LinearOperator``, or any
        object whose ``matvec`` maps a vector of its domain to one of its range, numpy
        arrays or torch tensors. ``op.shape`` (and ``op.dtype``) are read only to draw the
        vectors that are not given.
    x : numpy.ndarray or torch.Tensor, optional
        A vector of the domain, passed to ``op.matvec`` as it is and never modified.
        Drawn at random if not given.
    v : numpy.ndarray or torch.Tensor, optional
        A vector of the range, passed to the adjoint. Drawn at random if not given.
    adjoint : callable, optional
        ``v -> A^H v``, the adjoint under test; ``op.rmatvec`` by default. Pass a function
        to test a hand-written adjoint against ``op.matvec``.
    trials : int, default 1
        How many random pairs ``(x, v)`` to draw; the largest error is returned. Only
        where neither ``x`` nor ``v`` is given.
    seed : int, numpy.random.Generator or None, default 0
        Seeds ``numpy.random.default_rng``, which draws the vectors that are not given
        (``None``: fresh entropy; a Generator: continues its stream).

    Returns
    -------
    float
        .. math::

            \frac{|\langle Ax, v\rangle - \langle x, A^H v\rangle|}
                 {\|Ax\|\,\|v\| + \|x\|\,\|A^H v\|},

        between 0 and 1, with the inner products and norms in float64 (complex128 for
        complex vectors); 0.0 where the scale is 0 (then so is the numerator).

    Raises
    ------
    TypeError
        If ``op`` has no ``matvec`` (or no ``rmatvec`` and no ``adjoint`` is given), if
        ``adjoint`` is not callable, or if a vector must be drawn and ``op`` has no
        ``shape``.
    ValueError
        If ``trials`` is below 1 or ``x`` or ``v`` is given with ``trials > 1``, if the
        size of ``x`` or ``v`` does not match ``op.shape`` or a product's size the vector it
        is paired with, or if a vector or a product holds a NaN or an infinity.

    See Also
    --------
    pylops.utils.dottest : The same test, relative to ``|<Ax, v>|``.

    Notes
    -----
    ``<a, b> = sum(conj(a) * b)``. In exact arithmetic ``<Ax, v> = <x, A^H v>`` for every
    ``x`` and ``v`` exactly when ``A^H`` is the adjoint, and by Cauchy–Schwarz each side is
    at most its term of the scale, so the result lies in ``[0, 1]``. In floating point a
    correct adjoint gives round-off: at most about ``c * eps * sqrt(K)``, with ``eps`` the
    machine epsilon of the operator's dtype, ``K`` the number of terms one output sums
    (``(C_in / groups) * prod(kernel_size)`` for a convolution), ``c`` about 10 for float32
    and 100 for float64. A wrong adjoint gives a fixed fraction of the scale, divided by
    about ``sqrt(n)`` for random vectors of size ``n`` (their signs cancel): often 1e-2 or
    1e-3, far above round-off, yet a test of the whole vector ``A^H v`` (against
    ``torch.func.vjp``, say) shows the error's real size.

    The vectors drawn are standard normal, in ``op.dtype`` (real and imaginary parts for
    a complex dtype: a transpose that forgets to conjugate passes a real dot test), of
    sizes ``op.shape[1]`` and ``op.shape[0]``. They are torch tensors where ``op.dtype``
    is a torch dtype or the vector given is a tensor (on that tensor's device, or on
    ``op.device``), numpy arrays otherwise. The products run under ``torch.no_grad()``.

    Examples
    --------
    >>> import torch, convop
    >>> from convop.testing import dot_test
    >>> seeded = torch.Generator().manual_seed(0)
    >>> weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=seeded)
    >>> op = convop.conv2d(weight, (3, 9, 8), stride=2, padding=1, padding_mode="reflect")
    >>> dot_test(op) < 1e-14  # op.rmatvec, the exact adjoint: round-off
    True
    >>> dot_test(op, trials=8) < 1e-14  # the worst of 8 random pairs
    True

    A hand-written adjoint: the transposed convolution with the layer's own padding, the
    adjoint for zero padding only (here the reflected halo is not folded back).

    >>> import torch.nn.functional as F
    >>> def naive(y):
    ...     y = torch.from_numpy(y).reshape(1, *op.output_shape)  # (1, C_out, H_out, W_out)
    ...     r = op.geometry.adjoint_output_padding
    ...     return F.conv_transpose2d(y, weight, stride=2, padding=1, output_padding=r).ravel()
    >>> dot_test(op, adjoint=naive) > 1e-3
    True

    An operator on torch tensors, of any shape: here convop's torch face.

    >>> from types import SimpleNamespace
    >>> face = SimpleNamespace(matvec=op.apply, rmatvec=op.apply_adjoint)
    >>> x = torch.randn(op.input_shape, dtype=torch.float64, generator=seeded)
    >>> v = torch.randn(op.output_shape, dtype=torch.float64, generator=seeded)
    >>> dot_test(face, x, v) < 1e-14
    True
    """
    matvec = getattr(op, "matvec", None)
    if not callable(matvec):
        raise TypeError(
            "op must have a matvec method (a convop operator, a scipy or PyLops "
            f"LinearOperator), got {type(op).__name__}"
        )
    if adjoint is None:
        adjoint = getattr(op, "rmatvec", None)
        if not callable(adjoint):
            raise TypeError(
                f"op must have an rmatvec method, or the adjoint must be given, got "
                f"{type(op).__name__} without one and adjoint=None"
            )
    elif not callable(adjoint):
        raise TypeError(f"adjoint must be a callable v -> A^H v, got {type(adjoint).__name__}")
    trials = as_int(trials, "trials", minimum=1)
    if trials > 1 and (x is not None or v is not None):
        raise ValueError(
            f"trials={trials} needs x and v drawn at random: give neither x nor v, or "
            "leave trials=1"
        )
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        x_k = _draw(op, 1, v, rng) if x is None else x
        v_k = _draw(op, 0, x, rng) if v is None else v
        x_flat, v_flat = _flat(x_k, "x"), _flat(v_k, "v")  # checked before any product
        _check_sizes(op, x_flat.size, v_flat.size)
        with torch.no_grad():
            ax, av = matvec(x_k), adjoint(v_k)
        gap = _normalised_gap(
            x_flat, _flat(ax, "op.matvec(x)"), v_flat, _flat(av, "the adjoint of v")
        )
        worst = max(worst, gap)
    return worst


def _draw(op: Any, axis: int, other: Any, rng: np.random.Generator) -> Any:
    """A standard normal vector of size ``op.shape[axis]`` in ``op.dtype``, numpy or torch.

    ``other`` is the vector given for the other side, if any: a tensor makes this one a
    tensor on its device.
    """
    shape = getattr(op, "shape", None)
    if shape is None or len(shape) != 2:
        what = "x" if axis == 1 else "v"
        raise TypeError(
            f"{what} must be given: drawing it needs op.shape (rows, columns), and "
            f"{type(op).__name__} has shape={shape!r}"
        )
    n = int(shape[axis])
    dtype = getattr(op, "dtype", None)
    as_tensor = isinstance(dtype, torch.dtype) or isinstance(other, torch.Tensor)
    if not isinstance(dtype, torch.dtype):  # numpy's (or none): the same type in torch
        dtype = np.dtype(np.float64 if dtype is None else dtype).newbyteorder("=")
        dtype = _TORCH_DTYPES.get(dtype, torch.complex128 if dtype.kind == "c" else None)
    if dtype is None or not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.float64  # an integer matrix, say: its vectors are real numbers
    values = torch.from_numpy(rng.standard_normal(n))  # (n,)
    if dtype.is_complex:
        values = torch.complex(values, torch.from_numpy(rng.standard_normal(n)))
    if not as_tensor:
        return values.to(dtype).numpy()
    device = other.device if isinstance(other, torch.Tensor) else getattr(op, "device", "cpu")
    return values.to(device=device, dtype=dtype)


def _check_sizes(op: Any, n: int, m: int) -> None:
    """``x`` of size ``n`` and ``v`` of size ``m`` fit ``op.shape``, where ``op`` has one."""
    shape = getattr(op, "shape", None)
    if shape is None or len(shape) != 2:
        return
    for what, size, expected, side in (("x", n, shape[1], "domain"), ("v", m, shape[0], "range")):
        if size != expected:
            raise ValueError(
                f"{what} has {size} values but op.shape is {tuple(shape)}: {what} must be a "
                f"vector of op's {side}, of {expected} values"
            )


def _flat(a: Any, what: str) -> np.ndarray:
    """``a`` as a flat float64 or complex128 numpy array; finite, or a ValueError."""
    if isinstance(a, torch.Tensor):
        wide = torch.complex128 if a.is_complex() else torch.float64
        a = a.detach().resolve_conj().resolve_neg().to(device="cpu", dtype=wide).numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{what} must hold numbers, got an array of dtype {a.dtype}")
    flat = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        raise ValueError(f"{what} holds NaN or infinite values: the dot test needs finite ones")
    return flat


def _normalised_gap(x: np.ndarray, ax: np.ndarray, v: np.ndarray, av: np.ndarray) -> float:
    """``|<Ax, v> - <x, A^H v>| / (|Ax| |v| + |x| |A^H v|)`` of flat float64/complex128."""
    if ax.size != v.size:
        raise ValueError(
            f"op.matvec(x) has {ax.size} values but v has {v.size}: v must be a vector of "
            "op's range"
        )
    if av.size != x.size:
        raise ValueError(
            f"the adjoint of v has {av.size} values but x has {x.size}: x must be a vector "
            "of op's domain"
        )
    # The ratio does not change when (x, Ax) or (v, A^H v) is scaled: each pair is brought
    # to a largest entry of 1, so that no norm or inner product overflows or underflows.
    x, ax = _unit(x, ax)
    v, av = _unit(v, av)
    scale = np.linalg.norm(ax) * np.linalg.norm(v) + np.linalg.norm(x) * np.linalg.norm(av)
    if scale == 0.0:
        return 0.0
    return float(abs(np.vdot(v, ax) - np.vdot(av, x)) / scale)


def _unit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` divided by the largest magnitude among their entries (if not 0)."""
    peak = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return (a / peak, b / peak) if peak > 0.0 else (a, b)
