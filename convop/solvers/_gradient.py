"""The discrete gradient of total variation and its shrinkages, for samples ``(C, *spatial)``.

``D_a``: forward differences along spatial axis ``a`` of each channel, ``(D_a x)[i] =
x[i + 1] - x[i]``, zero at the last sample of the axis (PyLops' ``FirstDerivative`` with
``kind='forward'``, the same numbers); its adjoint is ``(D_a^T g)[i] = g[i - 1] - g[i]``
with ``g[-1] = 0`` and the last ``g`` unused.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator


class Gradient:
    """The forward differences of samples of ``shape`` ``(C, *spatial)`` along every spatial axis.

    Parameters
    ----------
    shape : tuple of int
        The sample's shape, channels first.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.axes = tuple(range(1, len(self.shape)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(k, *shape)``: ``D_a x`` for each of the ``k`` spatial axes, of a flat ``x``."""
        x = x.reshape(self.shape)
        g = np.zeros((len(self.axes), *self.shape), dtype=x.dtype)  # (k, C, *spatial)
        for i, axis in enumerate(self.axes):
            head, tail = _slices(axis, len(self.shape))
            g[i][head] = x[tail] - x[head]
        return g

    def adjoint(self, g: np.ndarray, axis: int) -> np.ndarray:
        """``D_axis^T g`` of one component ``g`` of ``shape``, flat."""
        head, tail = _slices(axis, len(self.shape))
        out = np.zeros(self.shape, dtype=g.dtype)
        out[head] -= g[head]
        out[tail] += g[head]
        return out.reshape(-1)

    def total(self, x: np.ndarray, isotropic: bool) -> float:
        """``TV(x)``: ``sum |D_a x|`` (anisotropic) or ``sum sqrt(sum_a (D_a x)^2)``."""
        g = self(x)
        return float(np.sqrt((g * g).sum(0)).sum() if isotropic else np.abs(g).sum())


def _slices(axis: int, ndim: int) -> tuple[tuple, tuple]:
    """``(x[..., :-1, ...], x[..., 1:, ...])`` along ``axis``, as index tuples."""
    head = [slice(None)] * ndim
    tail = [slice(None)] * ndim
    head[axis], tail[axis] = slice(None, -1), slice(1, None)
    return tuple(head), tuple(tail)


def soft(g: np.ndarray, threshold: float) -> np.ndarray:
    """Soft thresholding, the proximal map of ``threshold |g|_1`` (entry by entry)."""
    return np.sign(g) * np.maximum(np.abs(g) - threshold, 0)


def vector_soft(g: np.ndarray, threshold: float) -> np.ndarray:
    """The vector soft threshold over axis 0: the proximal map of ``threshold sum |g(p)|_2``.

    Each pixel's gradient ``g(p)`` (``g[:, p]``) shrinks towards 0 by ``threshold`` in
    length, keeping its direction: ``g(p) max(1 - threshold / |g(p)|, 0)``.
    """
    length = np.sqrt((g * g).sum(0))  # (*shape)
    scale = np.maximum(length - threshold, 0) / np.where(length > 0, length, 1)
    return g * scale


class Stacked(LinearOperator):
    """``[A; s D_1; ...; s D_k]``, and ``s I`` below with ``identity``: the TV ADMM's x-step.

    ``min ||A x - y||^2 + s^2 sum ||D_a x - c_a||^2 (+ s^2 ||x - e||^2)`` is the least-squares
    problem of this operator with the right-hand side ``[y; s c_1; ...; s c_k (; s e)]``.

    Parameters
    ----------
    op : ConvOperator
        ``A``.
    gradient : Gradient
        The ``D_a``, on ``op``'s input shape.
    scale : float
        ``s``.
    identity : bool
        Whether ``s I`` is stacked below.
    dtype : numpy.dtype
        The solve's dtype.
    """

    def __init__(self, op, gradient: Gradient, scale: float, identity: bool,
                 dtype: np.dtype) -> None:  # fmt: skip
        self.op, self.gradient, self.scale, self.identity = op, gradient, scale, identity
        m, n = op.shape
        rows = m + (len(gradient.axes) + identity) * n
        super().__init__(dtype=dtype, shape=(rows, n))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1)
        parts = [self.op.matvec(x), (self.scale * self.gradient(x)).reshape(-1)]
        if self.identity:
            parts.append(self.scale * x)
        return np.concatenate(parts)

    def _rmatvec(self, r: np.ndarray) -> np.ndarray:
        r = r.reshape(-1)
        m, n = self.op.shape
        shape = self.gradient.shape
        out = self.op.rmatvec(r[:m])
        for i, axis in enumerate(self.gradient.axes):  # in order: as PyLops' VStack sums
            block = r[m + i * n : m + (i + 1) * n].reshape(shape)
            out = out + self.scale * self.gradient.adjoint(block, axis)
        if self.identity:
            out = out + self.scale * r[m + len(self.gradient.axes) * n :]
        return out
