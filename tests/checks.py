"""Assertions shared by the tests: dtype-aware closeness, the normalised dot test and
CUDA against the CPU."""

from __future__ import annotations

import numpy as np
import torch

_EPS = {
    np.dtype(np.float32): np.finfo(np.float32).eps,
    np.dtype(np.complex64): np.finfo(np.float32).eps,
    np.dtype(np.float64): np.finfo(np.float64).eps,
    np.dtype(np.complex128): np.finfo(np.float64).eps,
}


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().resolve_conj().cpu().numpy()
    return np.asarray(a)


def eps(dtype) -> float:
    """Machine epsilon of a numpy or torch dtype."""
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty((), dtype=dtype).numpy().dtype
    return float(_EPS[np.dtype(dtype)])


def assert_close(
    actual, expected, *, dtype, terms: int, factor: float = 8.0, scale: float | None = None
) -> None:
    """``|actual - expected| <= factor * eps * sqrt(terms) * scale`` elementwise.

    Round-off of a sum of ``terms`` products grows like ``sqrt(terms)``. ``scale`` defaults
    to ``max|expected|``; FFT results need the size of the inputs instead (their round-off
    does not shrink with the result).
    """
    actual, expected = _as_numpy(actual), _as_numpy(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = float(np.max(np.abs(expected), initial=0.0))
    scale = max(scale, np.finfo(np.float64).tiny)
    tol = factor * eps(dtype) * np.sqrt(terms) * scale
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert err <= tol, f"max abs error {err:.3g} > tolerance {tol:.3g} (scale {scale:.3g})"


def assert_dot_test(x, ax, v, ahv, *, dtype, terms: int, factor: float = 100.0) -> None:
    """``<Ax, v> == <x, A^H v>`` up to round-off, normalised by Cauchy–Schwarz."""
    x, ax, v, ahv = (_as_numpy(a).astype(np.complex128).ravel() for a in (x, ax, v, ahv))
    lhs, rhs = np.vdot(v, ax), np.vdot(ahv, x)
    bound = np.linalg.norm(ax) * np.linalg.norm(v) + np.linalg.norm(x) * np.linalg.norm(ahv)
    tol = factor * eps(dtype) * np.sqrt(terms) * bound
    assert abs(lhs - rhs) <= tol, f"|<Ax,v> - <x,A^H v>| = {abs(lhs - rhs):.3g} > {tol:.3g}"


def assert_cuda_matches_cpu(op, cpu, x, v, *, dtype, terms: int) -> None:
    """``op``, built on CUDA, gives ``cpu``'s products on both faces, and keeps them there.

    ``x`` and ``v`` are flat numpy samples of the input and of the output: the numpy face
    takes them as they are, the torch face as CUDA tensors of the sample shapes.
    """
    assert op.device.type == "cuda"
    assert repr(op).endswith("device=cuda:0)")
    assert_close(op @ x, cpu @ x, dtype=dtype, terms=terms)
    assert_close(op.rmatvec(v), cpu.rmatvec(v), dtype=dtype, terms=terms)
    y = op.apply(torch.from_numpy(x).cuda().reshape(op.input_shape))
    g = op.apply_adjoint(torch.from_numpy(v).cuda().reshape(op.output_shape))
    assert (y.device.type, g.device.type) == ("cuda", "cuda")
    assert_close(y.reshape(-1), cpu @ x, dtype=dtype, terms=terms)
    assert_close(g.reshape(-1), cpu.rmatvec(v), dtype=dtype, terms=terms)
