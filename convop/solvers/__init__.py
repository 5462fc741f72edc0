"""Solvers for convolution operators.

:func:`solve_tikhonov`: the exact Tikhonov and Wiener solves of circulant convolutions.
"""

from .tikhonov import solve_tikhonov

__all__ = ["solve_tikhonov"]
