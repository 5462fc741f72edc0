"""``convop deconvolve``: deconvolve a microscope image or stack with its measured PSF.

Stacks are read and written by :mod:`convop._io.stacks` (TIFF through tifffile, ``.npy``,
``.npz``); the PSF is prepared by ``_psf.py``; the files, the operator and the guards are
settled before any sample of the stack is read (``_deconvolve_plan.py``); under ``mpiexec``
with more than one rank, the stack is deconvolved slab by slab (``_deconvolve_mpi.py``).
This module holds the subcommand's text, its options, the solves and the report.
"""

from __future__ import annotations

import argparse
import textwrap

import numpy as np

from .._io.stacks import read_stack, write_stack
from ..geometry import PADDING_MODES
from ..noise import estimate_noise
from ..regularization import choose_damping
from ..solvers import SolverResult, pcg, richardson_lucy, total_variation
from ._deblur import TV_WEIGHT_PER_VARIANCE
from ._deconvolve_plan import BLOCK, Plan, block_sums, check_cost, darkest_block, make_plan
from ._parser import (
    DTYPES,
    CommandFailure,
    byte_count,
    damping,
    non_negative_float,
    positive_float,
    positive_int,
)
from ._psf import VOXEL_TOLERANCE
from ._solve import timed

#: The methods: Richardson-Lucy, with total variation, and the least-squares two.
METHODS = ("rl", "rl-tv", "tikhonov", "tv")
#: The boundary models: the extended domain, then every padding mode of convop.
BOUNDARIES = ("extend", *PADDING_MODES)
#: Default iterations per method.
ITERATIONS = {"rl": 30, "rl-tv": 30, "tikhonov": 100, "tv": 30}
#: RL-TV's default weight: the middle of the range 1e-3 to 1e-2 usual for microscopy
#: (docs/deconvolution.md); well below the limit for blurs of a few samples (about 0.05).
RL_TV_WEIGHT = 0.002

NAME = "deconvolve"
HELP = "deconvolve a microscope image or stack (TIFF, .npy) with its PSF: Richardson-Lucy"


def _paragraphs(*texts: str) -> str:
    """Paragraphs wrapped to 88 columns, as the help prints them."""
    return "\n\n".join(textwrap.fill(" ".join(text.split()), 88) for text in texts)


DESCRIPTION = _paragraphs(
    f"""Deconvolve a 2-D image or a 3-D stack of counts (fluorescence microscopy,
    astronomy) with its measured point-spread function. The default, --method rl, is
    Richardson-Lucy (convop.richardson_lucy): the maximum-likelihood object x >= 0 of
    Poisson counts y ~ Poisson(A x + b), b the --background; the iteration count
    regularises it (too many amplify the noise). --accelerate extrapolates its steps
    (Biggs & Andrews); rl-tv adds a total-variation penalty of weight --tv (Dey et al.;
    default {RL_TV_WEIGHT:g}, larger for noisier data; a weight that could make RL's
    update non-positive is refused with the limit). tikhonov solves min |A x - (y - b)|^2
    + damp^2 |x|^2 by preconditioned cg, damp chosen by the discrepancy principle unless
    --damp gives it; tv minimises 1/2 |A x - (y - b)|^2 + w TV(x) by split Bregman, w =
    --tv or {TV_WEIGHT_PER_VARIANCE:g} x the noise variance / the largest count.""",
    f"""The boundary (--boundary): extend (the default) reconstructs an object larger than
    the stack by the PSF's reach, blurred with no padding (convop.extended_domain), and
    crops it back to the stack's frame: light from past the frame is explained, and
    nothing rings from the borders; or a padding mode of convop ({", ".join(PADDING_MODES)}),
    the object the stack's size.""",
    """Files: TIFF (one page per plane: ImageJ, OME-TIFF or plain; 8- or 16-bit integers
    or floats; needs tifffile, convop's tiff extra), .npy, or .npz (one array, or
    FILE.npz:NAME). The voxel size is read from ImageJ or OME metadata, in micrometres,
    and written back into a TIFF output; --voxel and --psf-voxel give or replace it. The
    result is float32 in counts (RL keeps their total), written as TIFF (OME-TIFF for an
    OME input, else ImageJ) or .npy; by default next to the stack, as
    NAME-deconvolved.tif (.npy for .npy and .npz).""",
    f"""The PSF (the same kinds of file) is normalised to sum 1 and centred: its all-zero
    border planes are cut off, and it is zero-padded to an odd size with its intensity
    centroid, rounded to the nearest sample, at the middle sample (the result is
    registered on the stack by the PSF's centroid). It must have one axis per axis of the
    stack, be no larger along any after centring and, where both voxel sizes are known,
    be sampled as the stack is (within {VOXEL_TOLERANCE:.0%} per axis): else it is refused,
    with both sizes.""",
    f"""--background auto takes the mean of the darkest block of {BLOCK} samples per axis
    ({BLOCK**2} counts in 2-D, {BLOCK**3} in 3-D): a mean of that many counts is far less
    noisy than a low percentile of single pixels, which Poisson noise drags below the
    background (the 1st percentile of counts of mean 10 is 3). A frame with no empty
    block makes it too high: give the value then.""",
    """Under mpiexec with several ranks (mpi4py and pylops-mpi, the mpi extra), each rank
    reads only its slab of planes and runs rl on it, with exact halo exchange
    (convop.distributed); rank 0 writes the result plane by plane as the ranks send it.
    Only rl runs distributed.""",
    """Refused before any work: an --output that is the stack or the PSF file (by any
    name), NaN or Inf samples, negative counts, a PSF that is all zeros or negative, has
    other axes or is larger than the stack, and solves whose estimated memory exceeds
    --max-bytes or whose estimated time exceeds --max-seconds.""",
)

EPILOG = """\
examples:
  convop deconvolve stack.tif --psf psf.tif          Richardson-Lucy, extended domain
  convop deconvolve stack.tif --psf psf.tif --accelerate --iterations 20 --background 100
  convop deconvolve cells.npy --psf psf.npy --voxel 0.3,0.1,0.1 --output sharp.tif
  mpiexec -n 4 convop deconvolve big.tif --psf psf.tif --output big-rl.npy
"""


def voxel_sizes(text: str) -> tuple[float, ...]:
    """``Z,Y,X`` or ``Y,X``: sample spacings in micrometres, finite and > 0."""
    try:
        values = tuple(positive_float(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        values = ()
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"expected Z,Y,X or Y,X: 2 or 3 positive sizes in micrometres such as "
            f"0.3,0.1,0.1, got {text!r}"
        )
    return values


def background(text: str) -> float | str:
    """``--background``: ``auto`` or a number >= 0 (counts)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return non_negative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number of counts >= 0, got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop deconvolve``'s options."""
    parser.add_argument(
        "stack",
        metavar="STACK",
        help="TIFF (.tif, .tiff), .npy or .npz (FILE.npz:NAME for one of "
        "several arrays): an image (Y, X) or a stack (Z, Y, X) of counts",
    )
    parser.add_argument(
        "--psf",
        required=True,
        metavar="PSF",
        help="the point-spread function, a file of the same kinds with as "
        "many axes as the stack; normalised to sum 1 and centred on its "
        "centroid",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="rl",
        help="rl: Richardson-Lucy (default); rl-tv: with total variation; "
        "tikhonov: preconditioned cg; tv: total variation (split Bregman)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=None,
        metavar="N",
        help="iterations (rl, rl-tv: "
        f"{ITERATIONS['rl']}; tikhonov: at most {ITERATIONS['tikhonov']}; "
        f"tv: {ITERATIONS['tv']} steps); fewer regularise rl more",
    )
    parser.add_argument(
        "--accelerate",
        action="store_true",
        help="rl, rl-tv: Biggs-Andrews extrapolation, about half the "
        "iterations for the same likelihood",
    )
    parser.add_argument(
        "--tv",
        type=positive_float,
        default=None,
        metavar="WEIGHT",
        help=f"the total-variation weight: rl-tv's (default {RL_TV_WEIGHT:g}) "
        f"or tv's (default {TV_WEIGHT_PER_VARIANCE:g} x the noise variance / "
        "the largest count)",
    )
    parser.add_argument(
        "--damp",
        type=damping,
        default=None,
        metavar="D",
        help="tikhonov's damping: a number, 'discrepancy' (default) or 'gcv'",
    )
    parser.add_argument(
        "--background",
        type=background,
        default="auto",
        metavar="B",
        help="the mean counts from no object (camera offset, dark current, "
        "haze): a number, or auto (default): the mean of the darkest block "
        "of 8 samples per axis",
    )
    parser.add_argument(
        "--boundary",
        choices=BOUNDARIES,
        default="extend",
        help="extend (default): an object larger than the stack by the PSF's "
        "reach, cropped back; or a padding mode of convop",
    )
    parser.add_argument(
        "--voxel",
        type=voxel_sizes,
        default=None,
        metavar="Z,Y,X",
        help="the stack's voxel size in micrometres (default: from its ImageJ or OME metadata)",
    )
    parser.add_argument(
        "--psf-voxel",
        type=voxel_sizes,
        default=None,
        metavar="Z,Y,X",
        help="the PSF's voxel size in micrometres (default: from its "
        "metadata); refused unless it matches the stack's",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="OUT",
        help="OUT.tif, OUT.tiff or OUT.npy, float32 (default: next to the "
        "stack, NAME-deconvolved.tif, or .npy for .npy and .npz)",
    )
    parser.add_argument(
        "--max-bytes",
        type=byte_count,
        default=None,
        metavar="N",
        help="refuse when the estimated memory exceeds N, e.g. 2G (default: "
        "half the memory available; per rank under MPI)",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="refuse when convop's cost model expects the solve to take longer (default 600 s)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the precision of the solve (default float32; float64 takes twice the memory); "
        "the result is written as float32 either way",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------- the solves
def relative(residual: float, norm: float) -> float:
    """``residual / norm``, for a ``norm`` that may be 0 (all-zero data)."""
    return residual / max(norm, np.finfo(np.float32).tiny)


def _fit(solved: SolverResult, y: np.ndarray) -> float:
    """The solve's residual relative to the data's norm."""
    return relative(solved.residual, float(np.linalg.norm(y)))


def _rl(plan: Plan, y: np.ndarray, b: float, args: argparse.Namespace,
        label: str) -> tuple[np.ndarray, str]:  # fmt: skip
    tv = (args.tv or RL_TV_WEIGHT) if plan.method == "rl-tv" else 0.0
    solved, seconds = timed(plan.iterations, label, args.quiet, richardson_lucy, plan.op,
                            y[None], plan.iterations, background=b,
                            accelerate=args.accelerate, tv=tv)  # fmt: skip
    how = f", tv {tv:g}" if tv else ""
    return solved.x, (
        f"{plan.method}: {solved.iterations} iterations{' (accelerated)' * args.accelerate}"
        f"{how}, {seconds:.2f} s, residual |y - (A x + b)| / |y| = "
        f"{_fit(solved, y):.3g}"
    )


def _tikhonov(plan: Plan, y: np.ndarray, b: float, args: argparse.Namespace,
              label: str) -> tuple[np.ndarray, str]:  # fmt: skip
    data = y[None] - y.dtype.type(b)
    if args.damp is None or isinstance(args.damp, str):
        rule = args.damp or "discrepancy"
        damp, how = choose_damping(plan.op, data, method=rule), f" (chosen by {rule})"
    else:
        damp, how = args.damp, ""
    solved, seconds = timed(plan.iterations, label, args.quiet, pcg, plan.op, data, damp,
                            maxiter=plan.iterations)  # fmt: skip
    stopped = "converged" if solved.converged else "iteration limit"
    return solved.x, (
        f"tikhonov: {solved.iterations} pcg iterations ({stopped}), {seconds:.2f} s, damp "
        f"{damp:.3g}{how}, residual |y - b - A x| / |y| = {_fit(solved, y):.3g}"
    )


def _tv(plan: Plan, y: np.ndarray, b: float, args: argparse.Namespace,
        label: str) -> tuple[np.ndarray, str]:  # fmt: skip
    data = y - y.dtype.type(b)
    if args.tv is None:
        axes = tuple(a for a, n in enumerate(y.shape) if n > 1)
        noise = estimate_noise(data, axes=axes)
        weight = max(TV_WEIGHT_PER_VARIANCE * noise**2 / max(float(y.max()), 1e-30), 1e-8)
        how = f" ({TV_WEIGHT_PER_VARIANCE:g} x the noise variance / the largest count)"
    else:
        weight, how = args.tv, ""
    reach = [((k - 1) // 2, k // 2) for k in plan.psf.values.shape]
    start = np.pad(data, reach, mode="edge") if plan.model is not None else data
    solved, seconds = timed(plan.iterations, label, args.quiet, total_variation, plan.op,
                            data[None], weight, x0=start[None],
                            maxiter=plan.iterations)  # fmt: skip
    return solved.x, (
        f"tv: {solved.iterations} split-Bregman steps, {seconds:.2f} s, weight {weight:.3g}"
        f"{how}, residual |y - b - A x| / |y| = {_fit(solved, y):.3g}"
    )


SOLVES = {"rl": _rl, "rl-tv": _rl, "tikhonov": _tikhonov, "tv": _tv}


# ---------------------------------------------------------------------- the report
def summary(plan: Plan, b: float, how: str, args: argparse.Namespace) -> str:
    """The report's first line: what was deconvolved with what."""
    shape = " x ".join(map(str, plan.info.shape))
    voxel = f", voxel {_sizes(plan.voxel)} um" if plan.voxel else ""
    psf = plan.psf
    read = " x ".join(map(str, psf.shape))
    centred = " x ".join(map(str, psf.values.shape))
    return (
        f"deconvolved {plan.what} ({shape}, {plan.info.dtype}{voxel}) with PSF {args.psf!r} "
        f"({read}, centred {centred}, divided by its sum {psf.total:.6g}), boundary "
        f"{args.boundary}, background {b:.4g}"
        + (f" ({how})" if how else "")
        + (f", solved in {args.dtype}" if args.dtype != "float32" else "")
    )


def written(plan: Plan) -> str:
    """The report's last line."""
    kept = ""
    if plan.output.suffix.lower() != ".npy" and plan.voxel:
        kept = f", voxel {_sizes(plan.voxel)} um"
    return f"wrote {plan.output} (float32{kept})"


def _sizes(voxel: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.4g}" for v in voxel)


def label(plan: Plan, seconds: float) -> str:
    """The progress bar's label: the method and the cost model's estimate."""
    return f"{plan.method} (model: ~{seconds:.2g} s)"


def flavour(plan: Plan) -> str:
    """The output TIFF's kind: OME for an OME input, else ImageJ."""
    return "ome" if plan.info.flavour == "ome" else "imagej"


# ---------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    from . import _deconvolve_mpi

    world = _deconvolve_mpi.world()
    if world is not None:
        return _deconvolve_mpi.run(args, world)
    plan = make_plan(args, ITERATIONS)
    estimate = check_cost(plan, args)  # nothing of the stack read yet
    y = read_stack(plan.path, plan.info, plan.what, dtype=args.dtype, max_bytes=args.max_bytes)
    if args.background == "auto":
        b, how = darkest_block(block_sums(y, 0, plan.info.shape), plan.info.shape)
    else:
        b, how = args.background, ""
    x, report = SOLVES[plan.method](plan, y, b, args, label(plan, estimate.seconds))
    x = x.reshape(plan.op.input_shape)[0]  # (*object) or (*stack)
    result = plan.model.crop(x) if plan.model is not None else x
    if not np.isfinite(result).all():
        raise CommandFailure(f"{plan.method} gave non-finite values: nothing was written")
    write_stack(plan.output, plan.info.shape, [result], voxel=plan.voxel, flavour=flavour(plan))
    print(summary(plan, b, how, args))
    print(report)
    print(written(plan))
    return 0
