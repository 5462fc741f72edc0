"""How many threads torch uses for products on numpy arrays (the scipy and PyLops faces).

Iterative solvers (scipy's ``lsqr``, ``lsmr``, ``cg``, PyLops' ``cgls``, ...) alternate the
operator's products with numpy vector operations. numpy's OpenBLAS runs double-precision
level-1 BLAS (``dot``, ``norm``) on vectors longer than 10 000 on all cores, and its worker
threads then keep spinning for about 0.1 s. A multi-threaded torch product started in that
window waits on threads that have lost their core. Measured on the 2-core development
machine: a 512x512 deblurring product takes 3 ms alone and 31 ms right after one
``np.dot`` of a float64 vector of that size; ``lsqr`` ran 1.7x slower than with PyLops'
single-threaded numpy FFTs, and 40x slower through a small float64 conv layer. One torch
thread avoids the fight and leaves convop ahead (docs/benchmarks.md).
OpenBLAS does not thread single-precision level-1 BLAS, so float32 solves do not suffer.

The setting is per thread of Python execution (a ``contextvars.ContextVar``, like
numpy's ``errstate``): new threads start from ``'auto'``. The torch face
(:meth:`~convop.ConvOperator.apply`) always uses torch's own setting, and so does anything
on a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._threads import _SETTING, Setting, _validate


def get_array_threads() -> Setting:
    """The current setting: ``'auto'``, ``None`` or a number of threads.

    Examples
    --------
    >>> import convop
    >>> convop.get_array_threads()
    'auto'
    """
    return _SETTING.get()


def set_array_threads(n: Setting) -> None:
    """Set how many torch threads products on numpy arrays use, in the current context.

    Parameters
    ----------
    n : 'auto', None or int
        ``'auto'`` (the default): one thread for double-precision data (float64,
        complex128), where numpy's BLAS threads and torch's would fight inside solvers;
        torch's own setting for single precision. ``None``: always torch's own setting
        (``torch.get_num_threads()``). An int: that many threads for every product.

    Raises
    ------
    ValueError, TypeError
        If ``n`` is none of these.

    See Also
    --------
    array_threads : The same, for a ``with`` block.

    Examples
    --------
    >>> import convop
    >>> convop.set_array_threads(None)
    >>> convop.get_array_threads() is None
    True
    >>> convop.set_array_threads("auto")
    """
    _SETTING.set(_validate(n))


@contextlib.contextmanager
def array_threads(n: Setting) -> Iterator[None]:
    """Within a ``with`` block, products on numpy arrays use ``n`` torch threads.

    Parameters
    ----------
    n : 'auto', None or int
        As for :func:`set_array_threads`; the previous setting returns on exit.

    Yields
    ------
    None
        Inside the block, products on numpy arrays use the setting ``n``.

    Examples
    --------
    A float64 solve on a machine whose numpy BLAS is single-threaded
    (``OPENBLAS_NUM_THREADS=1``) can give torch all cores back:

    >>> import numpy as np, scipy.sparse.linalg as spla, torch, convop
    >>> op = convop.conv2d(np.ones((1, 1, 3, 3)) / 9, (1, 64, 64), padding="same")
    >>> y = op @ np.ones(64 * 64)
    >>> with convop.array_threads(torch.get_num_threads()):
    ...     x = spla.lsqr(op, y, iter_lim=5)[0]
    >>> x.shape
    (4096,)
    """
    token = _SETTING.set(_validate(n))
    try:
        yield
    finally:
        _SETTING.reset(token)
