"""Solvers for convolution operators: deblurring and other inverse problems.

=============================  =========================================================
:func:`normal_operator`        ``op^H op + damp^2 I``, the normal equations' operator
:func:`pcg`                    CG on the normal equations, preconditioned by
                               :func:`convop.preconditioner`
:func:`tikhonov`               ``min ||op x - y||^2 + damp^2 ||x||^2``: exact (circulant),
                               by :func:`pcg`, or over ``x >= 0`` by ADMM [1]_
:func:`total_variation`        ``min 1/2 ||op x - y||^2 + weight TV(x)``, anisotropic or
                               isotropic, 1-D to 3-D, optionally over ``x >= 0``, by
                               split Bregman [2]_
:func:`solve_tikhonov`         the exact Tikhonov and Wiener filters of circulant
                               convolutions [3]_, batched, on tensors
=============================  =========================================================

**Data in, solution out.** ``y`` is a numpy array or a torch tensor, flat
(``op.shape[0]``) or of ``op.output_shape``; the solution has ``y``'s form (flat, or
``op.input_shape``; a tensor on ``y``'s device). The solve runs in numpy's promotion of
the operator's and the data's dtypes, on private copies: the caller's arrays are never
written to. Every iterative solver runs inside :func:`convop.solver_threads`.

**Result.** Each solver but :func:`solve_tikhonov` returns a :class:`SolverResult`:
``x``, ``iterations``, ``converged`` (the stopping rule was met), ``stop`` (``'converged'``,
``'maxiter'`` or ``'callback'``), ``residual`` (``||y - op x||``) and ``method``.

**Callback.** ``callback(iteration, x)`` is called after each iteration (an ADMM's outer
step; once for an exact solve) with the iteration number, from 1, and the current
iterate: a read-only numpy view, shaped as the solution, valid during the call only (copy
it to keep it). Returning ``True`` stops the solver, which returns that iterate with
``stop = 'callback'``; any other value (``None``, ``False``, a number) goes on. A progress
bar: ``def tick(k, x): bar.update()`` (not ``lambda k, x: bar.update()``: tqdm's
``update`` returns True whenever it redraws).

**Stopping rules.** Each solver documents its own, in relative terms (``rtol``), so that
scaling the data scales the solution and nothing else: :func:`pcg` stops on the normal
equations' residual, the ADMMs when their iterates settle and their splits agree.

References
----------
.. [1] S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein, "Distributed Optimization
   and Statistical Learning via the Alternating Direction Method of Multipliers,"
   Foundations and Trends in Machine Learning 3 (2011), 1-122.
.. [2] T. Goldstein and S. Osher, "The Split Bregman Method for L1-Regularized Problems,"
   SIAM J. Imaging Sci. 2 (2009), 323-343.
.. [3] P. C. Hansen, J. G. Nagy and D. P. O'Leary, *Deblurring Images: Matrices, Spectra,
   and Filtering*, SIAM, 2006.
"""

from ._common import SolverResult
from .circulant import solve_tikhonov
from .least_squares import tikhonov
from .normal import NormalOperator, normal_operator, pcg
from .poisson import richardson_lucy
from .tv import total_variation

__all__ = [
    "NormalOperator",
    "SolverResult",
    "normal_operator",
    "pcg",
    "richardson_lucy",
    "solve_tikhonov",
    "tikhonov",
    "total_variation",
]
