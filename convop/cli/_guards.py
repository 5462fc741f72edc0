"""The guards of ``convop deblur``: its memory and time, estimated before anything is allocated.

Both come from the operator's public estimate (:meth:`convop.ConvOperator.estimate`), whose
numbers all come from one set of constants (its ``source``: this process's calibration, an
earlier calibration's cache file, or the built-in ones): the seconds and the bytes of one
product by the method the operator runs (``op.method``), times the products the solver
makes, plus the solver's own vectors. A solve is refused over ``--max-bytes`` and
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import math
from typing import NamedTuple

from .._shared.memory import check_memory
from ..operator import ConvOperator
from ..solvers.admm import INNER_CG as ADMM_CG
from ..solvers.tv import INNER_LSQR as TV_INNER
from ._parser import CommandError

#: The float64 vectors of the image's size (all channels) every solve keeps: the image, the
#: result and about 6 of the solver's (lsqr's or cg's).
SOLVER_VECTORS = 2 + 6
#: The further vectors split Bregman (total variation) keeps: its splits and their
#: Bregman variables.
TV_VECTORS = 8


class Cost(NamedTuple):
    """The estimated cost of a deblur: what the guards check and the messages say."""

    bytes: int
    """The memory: the solver's vectors and one product's (``op.estimate()``'s bytes)."""
    seconds: float
    """The time: ``iterations`` x 2 products of ``op.estimate()``'s seconds."""
    source: str
    """Where the estimate's constants came from (``Estimate.source``)."""
    method: str
    """How the products run (``op.method``): ``'direct'`` or ``'fft'``."""
    iterations: int
    """The most solver iterations, each one product and one adjoint."""


def solver_iterations(solver: str, iterations: int) -> int:
    """The solver iterations (each one product and one adjoint) of ``iterations`` steps.

    At most: ``tv``'s steps take ``TV_INNER`` lsqr iterations and one more product each,
    ``admm``'s (nonnegative Tikhonov) up to ``ADMM_CG`` cg iterations each.
    """
    per_step = {"tv": TV_INNER + 1, "admm": ADMM_CG}
    return iterations * per_step.get(solver, 1)


def deblur_cost(op: ConvOperator, solver: str, iterations: int) -> Cost:
    """The memory and time of ``iterations`` steps of ``solver`` on ``op``, by its estimate.

    One product of all the channels (``op``'s one sample) by ``op.method``, as
    ``op.estimate()`` gives its seconds and bytes; each solver iteration makes two.
    """
    estimate = op.estimate()
    method = op.method
    vectors = SOLVER_VECTORS + (TV_VECTORS if solver == "tv" else 0)
    needed = 8 * math.prod(op.input_shape) * vectors + getattr(estimate, f"{method}_bytes")
    count = solver_iterations(solver, iterations)
    seconds = getattr(estimate, method) * 2 * count
    return Cost(needed, seconds, estimate.source, method, count)


def choose_method(op: ConvOperator, args: argparse.Namespace,
                  iterations: dict[str, int]) -> str:  # fmt: skip
    """``--method``, resolved: auto is tv unless a damping is given or tv takes too long.

    Sets ``args.iterations`` to the method's default (in ``iterations``) when not given.
    """
    method = args.method
    if method == "auto":
        steps = args.iterations or iterations["tv"]
        fits = deblur_cost(op, "tv", steps).seconds <= args.max_seconds
        method = "tv" if args.damp is None and fits else "tikhonov"
    if args.iterations is None:
        args.iterations = iterations[method]
    return method


def check_deblur(op: ConvOperator, args: argparse.Namespace, solver: str) -> Cost:
    """Refuse, before anything is allocated, a deblur over the memory or the time limit.

    Returns the estimate the guards checked.
    """
    height, width = op.geometry.input_size
    channels = op.geometry.in_channels
    what = f"deblurring {channels} channel{'s' * (channels > 1)} of {height} x {width} pixels"
    cost = deblur_cost(op, solver, args.iterations)
    hint = f"pass --max-bytes {cost.bytes} or more to run it anyway"
    check_memory(cost.bytes, args.max_bytes, what, hint=hint)
    if cost.seconds > args.max_seconds:
        product = cost.seconds / (2 * cost.iterations)
        raise CommandError(
            f"{what} would take up to about {cost.seconds:.3g} s by convop's cost model "
            f"with {cost.source} constants ({cost.iterations} solver iterations x 2 "
            f"{cost.method} products of {product:.3g} s), more than --max-seconds "
            f"{args.max_seconds:g}; pass --max-seconds {math.ceil(cost.seconds)} or more (or "
            f"fewer --iterations) to run it anyway"
        )
    return cost
