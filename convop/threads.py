"""Thread pools in solver loops: numpy's BLAS beside torch.

convop's products never change a thread setting: the numpy faces (scipy, PyLops) and the
torch face all run torch on its own thread count (``torch.get_num_threads()``), so a product
on a numpy array is as fast as the same product on a tensor, and nothing another Python
thread can observe changes while it runs.

Iterative solvers (scipy's ``lsqr``, ``lsmr``, ``cg``, PyLops' ``cgls``, ...) alternate those
products with numpy vector operations. numpy's OpenBLAS threads double-precision level-1 BLAS
(``dot``, and so ``norm``) over vectors longer than about 10 000 samples on every core, while
torch's OpenMP workers keep spinning for a while after each product: the two pools then fight
for the cores at every step. On the 2-core development machine, 30 ``lsqr`` iterations of a
512x512 float64 deblur took 1.58 s so, 0.56 s with numpy's BLAS on one thread (PyLops' own
operator: 1.90 s); the vector operations of a solver gain nothing from BLAS threads at these
sizes. :func:`solver_threads` does that for the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._shared.checks import as_int


@contextlib.contextmanager
def solver_threads(blas: int = 1) -> Iterator[None]:
    """Within a ``with`` block, numpy's and scipy's BLAS run on ``blas`` threads.

    For the length of an iterative solve: the solver's vector operations then leave the
    cores to torch's products (see :mod:`convop.threads`). torch's own thread count is not
    touched. BLAS thread pools are process-wide, so the limit holds for every Python thread
    until the block ends; the previous limits return on exit, also on an exception. The
    limit is set with `threadpoolctl <https://github.com/joblib/threadpoolctl>`_, so it
    reaches OpenBLAS, MKL and BLIS, whichever numpy and scipy were built with.

    Parameters
    ----------
    blas : int, default 1
        Threads of the BLAS libraries inside the block.

    Yields
    ------
    None
        Inside the block, BLAS calls use at most ``blas`` threads.

    Raises
    ------
    ValueError, TypeError
        If ``blas`` is not a positive int.

    See Also
    --------
    torch.set_num_threads : Sets torch's own thread count, which every product uses.

    Examples
    --------
    >>> import numpy as np, scipy.sparse.linalg as spla, convop
    >>> op = convop.conv2d(np.ones((1, 1, 3, 3)) / 9, (1, 64, 64), padding="same")
    >>> y = op @ np.ones(64 * 64)
    >>> with convop.solver_threads():
    ...     x = spla.lsqr(op, y, iter_lim=5)[0]
    >>> x.shape
    (4096,)
    """
    blas = as_int(blas, "blas", minimum=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas, user_api="blas"):
        yield
