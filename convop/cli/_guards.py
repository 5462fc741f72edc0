"""The guards of ``convop deblur``: its memory and time, estimated before anything is allocated.

The time is estimated by convop's cost model, which chooses between direct and FFT
products; both are refused over ``--max-bytes`` and ``--max-seconds``. This is the only
module of the command that reads convop's internal cost model and FFT frame.
"""

from __future__ import annotations

import argparse
import math

import torch

from .._auto import cost as cost_model
from .._fft import frame
from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from ..operator import ConvOperator
from ..solvers.admm import INNER_CG as ADMM_CG
from ..solvers.tv import INNER_LSQR as TV_INNER
from ._parser import CommandError

_CPU = torch.device("cpu")


def deblur_bytes(geometry: ConvGeometry) -> int:
    """Estimated memory of deblurring all the channels at once.

    The image and the result, the solver's ~6 vectors (all float64 and all channels),
    and the products' workspace: ~2 complex grids of the padded size per channel.
    """
    values = geometry.in_channels * math.prod(geometry.input_size)
    padded = geometry.in_channels * math.prod(frame(geometry).sizes)
    return 8 * values * (2 + 6) + 2 * 16 * padded


def deblur_seconds(geometry: ConvGeometry, method: str, iterations: int) -> float:
    """Estimated time of ``iterations`` solver iterations by convop's cost model.

    Each iteration applies the blur (all channels) and its adjoint: two products.
    """
    product = cost_model.fft_seconds if method == "fft" else cost_model.direct_seconds
    return product(geometry, torch.float64, _CPU) * 2 * iterations


def solver_iterations(method: str, iterations: int) -> int:
    """The solver iterations (each one product and one adjoint) of ``iterations`` steps.

    At most: ``tv``'s steps take ``TV_INNER`` lsqr iterations and one more product each,
    ``admm``'s (nonnegative Tikhonov) up to ``ADMM_CG`` cg iterations each.
    """
    per_step = {"tv": TV_INNER + 1, "admm": ADMM_CG}
    return iterations * per_step.get(method, 1)


def choose_method(op: ConvOperator, args: argparse.Namespace,
                  iterations: dict[str, int]) -> str:  # fmt: skip
    """``--method``, resolved: auto is tv unless a damping is given or tv takes too long.

    Sets ``args.iterations`` to the method's default (in ``iterations``) when not given.
    """
    method = args.method
    if method == "auto":
        steps = args.iterations or iterations["tv"]
        seconds = deblur_seconds(op.geometry, op.method, solver_iterations("tv", steps))
        fits = seconds <= args.max_seconds
        method = "tv" if args.damp is None and fits else "tikhonov"
    if args.iterations is None:
        args.iterations = iterations[method]
    return method


def check_deblur(op: ConvOperator, args: argparse.Namespace,
                  solver: str) -> tuple[int, float]:  # fmt: skip
    """Refuse, before anything is allocated, a deblur over the memory or the time limit.

    Returns the estimates, ``(bytes, seconds)``.
    """
    geometry = op.geometry
    height, width = geometry.input_size
    channels = geometry.in_channels
    what = f"deblurring {channels} channel{'s' * (channels > 1)} of {height} x {width} pixels"
    tv = 8 * 8 * channels * height * width  # split Bregman's extra vectors
    needed = deblur_bytes(geometry) + (tv if solver == "tv" else 0)
    hint = f"pass --max-bytes {needed} or more to run it anyway"
    check_memory(needed, args.max_bytes, what, hint=hint)
    method = op.method
    iterations = solver_iterations(solver, args.iterations)
    seconds = deblur_seconds(geometry, method, iterations)
    if seconds > args.max_seconds:
        raise CommandError(
            f"{what} would take up to about {seconds:.3g} s by convop's cost model "
            f"({iterations} solver iterations x 2 {method} products), more than "
            f"--max-seconds {args.max_seconds:g}; "
            f"pass --max-seconds {math.ceil(seconds)} or more (or fewer --iterations) to run "
            f"it anyway"
        )
    return needed, seconds
