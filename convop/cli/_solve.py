"""Progress bars over the solves of ``demo`` and ``deblur``: no solver lives here.

The solvers are :mod:`convop.solvers`' (ticking a bar through their callback); scipy's
``lsqr``, which takes no callback, ticks it through a thin operator that counts its
products. Each returns what the reports print, the seconds included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..operator import ConvOperator
from ..solvers import SolverResult
from ..threads import solver_threads


@contextlib.contextmanager
def progress(iterations: int, desc: str, quiet: bool) -> Iterator[Callable]:
    """A tqdm bar over solver iterations, and the solver callback that ticks it.

    Off with ``--quiet`` or when stderr is no TTY. Yields ``tick(iteration, x)``, which
    returns None: the solver goes on.
    """
    from tqdm import tqdm

    with tqdm(total=iterations, desc=desc, unit="it", leave=False,
              disable=True if quiet else None) as bar:  # fmt: skip

        def tick(_iteration: int, _x: np.ndarray) -> None:
            bar.update(1)

        yield tick


def timed(iterations: int, label: str, quiet: bool, solver: Callable, *args,
          **kwargs) -> tuple[SolverResult, float]:  # fmt: skip
    """A solver of :mod:`convop.solvers` with a progress bar: ``(its result, seconds)``.

    ``solver(*args, **kwargs)``, its callback ticking the bar.
    """
    with progress(iterations, label, quiet) as tick:
        start = time.perf_counter()
        solved = solver(*args, callback=tick, **kwargs)
        return solved, time.perf_counter() - start


def _counted(op: ConvOperator, tick: Callable):
    """``op`` behind a thin ``LinearOperator`` that ticks once per forward product.

    scipy's ``lsqr`` takes no callback, but each iteration applies ``op`` exactly once.
    """
    from scipy.sparse.linalg import LinearOperator

    class Counted(LinearOperator):
        def __init__(self) -> None:
            super().__init__(dtype=op.dtype, shape=op.shape)

        def _matvec(self, x):
            tick(0, x)
            return op.matvec(x)

        def _rmatvec(self, y):
            return op.rmatvec(y)

    return Counted()


def lsqr(
    op: ConvOperator, b: np.ndarray, *, damp: float, iterations: int, quiet: bool,
    exact_count: bool, label: str = "lsqr",
) -> tuple[np.ndarray, int, int, float, float]:  # fmt: skip
    """scipy's ``lsqr`` with a progress bar: ``(x, istop, itn, residual norm, seconds)``.

    ``exact_count`` runs exactly ``iterations`` (tolerances 0) instead of stopping early.
    """
    from scipy.sparse.linalg import lsqr as scipy_lsqr

    tol = dict(atol=0.0, btol=0.0) if exact_count else {}
    with progress(iterations, label, quiet) as tick, solver_threads():
        start = time.perf_counter()
        x, istop, itn, r1norm = scipy_lsqr(_counted(op, tick), b, damp=damp,
                                           iter_lim=iterations, **tol)[:4]  # fmt: skip
        seconds = time.perf_counter() - start
    return x, istop, itn, float(r1norm), seconds
