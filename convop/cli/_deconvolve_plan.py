"""What ``convop deconvolve`` settles before it reads a sample of the stack.

The files (the output's name and suffix, the inputs it must not overwrite, the stack's
header, the PSF), the options that go together, the blur operator, and the guards: the
memory and the time of the solve, from the operator's own estimate
(:meth:`convop.ConvOperator.estimate`), refused over ``--max-bytes`` and ``--max-seconds``
before anything is allocated. Also the background estimate of ``--background auto``, in a
form that MPI ranks add up (:func:`block_sums`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import constructors
from .._io.stacks import (
    ARRAY_SUFFIXES,
    TIFF_SUFFIXES,
    StackInfo,
    split_member,
    stack_info,
    tifffile,
)
from .._shared.memory import check_memory
from ..extended import ExtendedDomain, extended_domain
from ..operator import ConvOperator
from ..solvers.poisson import INPUT_VECTORS, OUTPUT_VECTORS
from ..solvers.tv import INNER_LSQR as TV_INNER
from ._parser import CommandError, output_path, refuse_overwriting
from ._psf import PSF, check_against, read_psf

#: The default output's name: the stack's, with this before the suffix.
OUTPUT_TAG = "-deconvolved"
#: ``--background auto``: the mean of the darkest block of this many samples per axis.
BLOCK = 8
#: Vectors (of the solve's dtype) each method keeps, of the object's and of the image's
#: size: RL's (and the data, and the samples as read), cg's, split Bregman's (its splits
#: and Bregman variables).
VECTORS = {
    "rl": (INPUT_VECTORS, OUTPUT_VECTORS + 2),
    "rl-tv": (INPUT_VECTORS + 2, OUTPUT_VECTORS + 2),
    "tikhonov": (8, 3),
    "tv": (8 + 6, 3),
}
#: Products (forward or adjoint) per iteration: RL's two (accelerated, at most one more), cg's
#: two, and split Bregman's lsqr iterations of two each and one more product.
PRODUCTS = {"rl": 2, "rl-tv": 2, "tikhonov": 2, "tv": 2 * TV_INNER + 1}


class Plan(NamedTuple):
    """The deconvolution, settled: files, PSF, operator, method."""

    path: Path
    """The stack's file."""
    info: StackInfo
    """Its header."""
    what: str
    """``"stack 'cells.tif'"`` (``"image ..."`` for 2-D), for messages."""
    voxel: tuple[float, ...] | None
    """The stack's voxel size in micrometres (``--voxel``, else the file's), if known."""
    psf: PSF
    output: Path
    op: ConvOperator
    """The blur, object to image, in the solve's dtype (``--dtype``)."""
    model: ExtendedDomain | None
    """The extended-domain model (``--boundary extend``), whose crop gives the frame."""
    method: str
    iterations: int


def default_output(stack: Path) -> Path:
    """``cells.tif`` -> ``cells-deconvolved.tif`` next to it; ``.npy`` for arrays."""
    name = stack.name
    for suffix in (".ome.tif", ".ome.tiff", *TIFF_SUFFIXES, *ARRAY_SUFFIXES):
        if name.lower().endswith(suffix):
            stem, kept = name[: -len(suffix)], name[-len(suffix) :]
            break
    else:
        stem, kept = stack.stem, stack.suffix
    kept = ".npy" if kept.lower() in ARRAY_SUFFIXES else kept
    return stack.with_name(f"{stem}{OUTPUT_TAG}{kept}")


#: The options that only some methods take: ``{option: (its attribute, the methods)}``.
METHOD_OPTIONS = {
    "--accelerate": ("accelerate", ("rl", "rl-tv")),
    "--tv": ("tv", ("rl-tv", "tv")),
    "--damp": ("damp", ("tikhonov",)),
}


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go with ``--method``."""
    for option, (name, methods) in METHOD_OPTIONS.items():
        if getattr(args, name) not in (None, False) and args.method not in methods:
            raise CommandError(
                f"{option} is for --method {' and '.join(methods)}, not {args.method}"
            )


def make_plan(args: argparse.Namespace, iterations: dict[str, int]) -> Plan:
    """Every check that needs no sample of the stack, and the operator (allocation-free)."""
    _check_options(args)
    stack_file, member = split_member(args.stack)
    path = Path(stack_file)
    info = stack_info(path, f"stack {args.stack!r}", member)  # the header alone
    output = output_path(str(args.output or default_output(path)),
                         (*TIFF_SUFFIXES, ".npy"), "--output")  # fmt: skip
    psf_file = split_member(args.psf)[0]
    refuse_overwriting(output, "--output", {"the stack": stack_file, "the PSF": psf_file})
    if output.suffix.lower() in TIFF_SUFFIXES:
        tifffile()  # a missing extra is said now, not after the solve
    what = f"{'stack' if len(info.shape) == 3 else 'image'} {args.stack!r}"
    voxel = _voxel_option(args.voxel, info, what, "--voxel")
    psf = read_psf(args.psf, _voxel_option(args.psf_voxel, None, "the PSF", "--psf-voxel"),
                   args.max_bytes, args.dtype)  # fmt: skip
    check_against(psf, info.shape, voxel, what)
    if args.boundary == "extend":
        model = extended_domain(psf.values, info.shape)
        op = model.op
    else:
        model = None
        flipped = np.ascontiguousarray(np.flip(psf.values))  # a correlation kernel
        build = (constructors.conv1d, constructors.conv2d, constructors.conv3d)[flipped.ndim - 1]
        op = build(flipped[None, None], (1, *info.shape), padding="same",
                   padding_mode=args.boundary)  # fmt: skip
    count = args.iterations or iterations[args.method]
    return Plan(path, info, what, voxel, psf, output, op, model, args.method, count)


def _voxel_option(given: tuple[float, ...] | None, info: StackInfo | None, what: str,
                  option: str) -> tuple[float, ...] | None:  # fmt: skip
    """``--voxel`` (checked against the stack's axes) or the file's voxel size."""
    if given is None:
        return None if info is None else info.voxel
    if info is not None and len(given) != len(info.shape):
        raise CommandError(
            f"{option} gives {len(given)} sizes, but {what} has {len(info.shape)} axes "
            f"{info.shape}"
        )
    return given


# ---------------------------------------------------------------------- the guards
class Cost(NamedTuple):
    """The estimated cost of a deconvolution (on one rank, under MPI)."""

    bytes: int
    seconds: float
    source: str
    """Where the estimate's constants came from (``Estimate.source``)."""


def cost(plan: Plan, accelerate: bool, ranks: int = 1) -> Cost:
    """Memory and time by the operator's estimate; ``ranks`` share the work (one slab each).

    The memory: the method's vectors (of the operator's dtype) of the object's and the
    image's size, the samples as read, and one product's bytes (``op.estimate()``, for the
    method ``op.method`` runs). The time: ``iterations`` x the method's products of
    ``op.estimate()``'s seconds. Over MPI ranks, a rank's slab is about ``1 / ranks`` of
    each, plus the halos (not counted).
    """
    op = plan.op
    estimate = op.estimate()
    per_input, per_output = VECTORS[plan.method]
    values = per_input * math.prod(op.input_shape) + per_output * math.prod(op.output_shape)
    needed = op.dtype.itemsize * values + getattr(estimate, f"{op.method}_bytes")
    products = PRODUCTS[plan.method] + (1 if accelerate else 0)
    seconds = getattr(estimate, op.method) * products * plan.iterations
    return Cost(math.ceil(needed / ranks), seconds / ranks, estimate.source)


def check_cost(plan: Plan, args: argparse.Namespace, ranks: int = 1) -> Cost:
    """Refuse, before anything is allocated, a solve over the memory or the time limit."""
    found = cost(plan, args.accelerate, ranks)
    shape = " x ".join(map(str, plan.info.shape))
    on = f" on each of {ranks} ranks" if ranks > 1 else ""
    what = f"deconvolving {plan.what} ({shape}) by {plan.method}{on}"
    hint = f"pass --max-bytes {found.bytes} or more to run it anyway"
    check_memory(found.bytes, args.max_bytes, what, hint=hint)
    if found.seconds > args.max_seconds:
        raise CommandError(
            f"{what} would take up to about {found.seconds:.3g} s by convop's cost model with "
            f"{found.source} constants ({plan.iterations} iterations), more than "
            f"--max-seconds {args.max_seconds:g}; pass --max-seconds "
            f"{math.ceil(found.seconds)} or more (or fewer --iterations) to run it anyway"
        )
    return found


# ---------------------------------------------------------------------- background
def block_sums(values: np.ndarray, first: int, shape: tuple[int, ...]) -> np.ndarray:
    """Sums of ``values`` over the blocks of :data:`BLOCK` samples per axis of ``shape``.

    ``values`` are the planes ``first, first + 1, ...`` of a stack (or the rows of an
    image) of ``shape``; the blocks tile it from its first sample (an axis shorter than
    ``BLOCK`` is one block; samples past the last whole block are left out), so slabs of
    one stack give sums that add up to the whole stack's (float64).
    """
    lengths = [n if n < BLOCK else BLOCK for n in shape]
    counts = [n // length for n, length in zip(shape, lengths)]
    planes = np.arange(first, first + values.shape[0])
    kept = planes < counts[0] * lengths[0]
    inner = (slice(None), *(slice(0, c * n) for c, n in zip(counts[1:], lengths[1:])))
    part = values[kept][inner]
    split = [d for c, n in zip(counts[1:], lengths[1:]) for d in (c, n)]
    per_plane = part.reshape(part.shape[0], *split).sum(
        axis=tuple(range(2, 2 * len(shape), 2)), dtype=np.float64
    )  # (planes kept, *blocks of the other axes)
    sums = np.zeros(counts, dtype=np.float64)
    np.add.at(sums, planes[kept] // lengths[0], per_plane)
    return sums


def darkest_block(sums: np.ndarray, shape: tuple[int, ...]) -> tuple[float, str]:
    """``--background auto`` from :func:`block_sums` of the whole stack: value, and how."""
    lengths = [n if n < BLOCK else BLOCK for n in shape]
    value = max(float(sums.min()) / math.prod(lengths), 0.0)
    block = "x".join(map(str, lengths))
    return value, f"auto: the mean of the darkest {block} block of {sums.size}"
