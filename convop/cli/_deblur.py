"""``convop deblur``: deblur a gray or colour image by total variation or Tikhonov.

Images and kernels are read by :mod:`convop.imaging`. Before solving, the memory and the
time of the solve are estimated and refused over ``--max-bytes`` and ``--max-seconds``
(``_guards.py``); the solve runs in units where the data and the kernel are near 1
(``_scales.py``). The module is over 400 lines because a third of it is text: the
subcommand's description and the help of its options.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from .. import constructors
from ..geometry import PADDING_MODES
from ..imaging import KERNEL_SPECS, read_image, write_image
from ..noise import estimate_noise
from ..operator import ConvOperator
from ..regularization import choose_damping
from ..solvers import SolverResult, pcg, tikhonov, total_variation
from ..solvers.tv import INNER_LSQR as TV_INNER
from ._guards import check_deblur, choose_method
from ._parser import (
    MAX_DAMP,
    CommandError,
    byte_count,
    damping,
    kernel_weight,
    output_path,
    positive_float,
    positive_int,
    refuse_overwriting,
    warn,
)
from ._scales import Scales
from ._solve import lsqr, timed

#: Why scipy's lsqr stopped (its ``istop``), for the report.
STOPS = {
    0: "x = 0 solves it",
    1: "converged",
    2: "converged (least squares)",
    7: "iteration limit",
}
#: How far a kernel's sum may be from 1 before deblur warns.
SUM_TOLERANCE = 1e-6
#: The total-variation weight over the estimated noise variance, when --tv-weight is not
#: given: of 1, 2, 4, 8 and 16 on scikit-image's camera and the phantom, Gaussian and motion
#: blur, noise 0.5% to 2% (12 cases, 30 steps), the highest total gain, and within 0.5 dB of
#: each case's best but one (1.6 dB) (docs/cli.md).
TV_WEIGHT_PER_VARIANCE = 8.0
#: Kernel files read as images (a measured point-spread function), gray only.
KERNEL_IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Solves expected to take longer than this many seconds are announced with an estimate.
ANNOUNCE_SECONDS = 10.0
#: Default iterations per method: cg's, and split Bregman's outer steps.
ITERATIONS = {"tikhonov": 100, "tv": 30}

#: The image files deblur reads (by Pillow), and the arrays.
IMAGE_FILES = "PNG, JPEG or TIFF"
ARRAY_FILES = ".npy (or .npz of one array)"
#: The default kernel, and its sigma (gaussian:SIZE's default, SIZE / 6).
DEFAULT_SIZE = 9
DEFAULT_KERNEL = f"gaussian:{DEFAULT_SIZE}"
DEFAULT_SIGMA = DEFAULT_SIZE / 6

NAME = "deblur"
HELP = (
    f"deblur a gray or colour image ({IMAGE_FILES.replace(' or', ',')} or .npy): total "
    f"variation or Tikhonov"
)

DESCRIPTION = """\
Deblur an image, where A is the blur (convop.conv2d with padding "same"; a colour image's
three channels are blurred each on its own by one batched operator, groups=3, and solved
at once) and b the image. By default (--method auto) by total variation: min 1/2 |A x -
b|^2 + w (|D_y x|_1 + |D_x x|_1) with PyLops' split Bregman, w = 8 x the noise variance
estimated from the image (--tv-weight sets it); it keeps edges sharp. auto takes Tikhonov
instead when --damp is given or when TV would exceed --max-seconds. With --method
tikhonov: min |A x - b|^2 + damp^2 |x|^2, the damping chosen by the discrepancy principle
(the residual matches the noise, estimated from the image) unless --damp gives it (or
'gcv': generalised cross-validation), solved by default with scipy's cg on the normal
equations, preconditioned by convop.preconditioner (a fast approximate inverse matched to
the padding mode; --compare also runs plain cg and says how many iterations it saved), or
with scipy's lsqr (--solver lsqr). --nonneg keeps the result >= 0 (intensities): total
variation by split Bregman with one more split for the constraint, Tikhonov by ADMM whose
steps are preconditioned cg solves.
PNG/JPEG/TIFF files are read with Pillow (values scaled to [0, 1]; gray stays gray, RGB(A)
is deblurred in its three channels, alpha dropped); a .npy file (or an .npz archive of one array)
holds an (H, W) gray or (H, W, 3) colour array, which carries no absolute scale: the default
TV weight is then divided by its largest |value|, so that scaling the array scales the
result. The result is written as .npy (raw values, the input's shape) or .png (gray: 8-bit,
or 16-bit for a 16-bit input; colour: RGB; images read from files keep their [0, 1] scale
with overshoot clipped, other data are mapped from their own range).

A kernel read from an image file (a measured point-spread function) is divided by its sum:
an image carries no absolute scale. A .npy kernel keeps its values; if it does not sum to 1
it is used with a warning (the result's brightness scales by the inverse of its sum), or
divided by its sum with --normalize.

Refused before solving: an --output that is the image or the kernel file (by any name:
a symbolic or hard link), NaN or Inf pixels or kernel values, an all-zero kernel, and
problems whose estimated memory exceeds --max-bytes or whose estimated time exceeds
--max-seconds."""

EPILOG = """\
examples:
  convop deblur photo.png                           gaussian:9, total variation
  convop deblur scan.npy --kernel psf.npy --damp 0.02 --output sharp.npy
  convop deblur shake.jpg --kernel motion:15:30 --iterations 200 --output sharp.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop deblur``'s options."""
    parser.add_argument(
        "image",
        metavar="IMAGE",
        help=f"{IMAGE_FILES} file (read with Pillow), or {ARRAY_FILES} of shape (H, W) or "
        f"(H, W, 3)",
    )
    parser.add_argument(
        "--kernel",
        default=DEFAULT_KERNEL,
        metavar="SPEC",
        help=f"the blur: {KERNEL_SPECS} (SIGMA default SIZE/6); a 2-d or (1, 1, kh, kw) "
        f"array, or a gray image file ({IMAGE_FILES}: a measured point-spread function, "
        f"divided by its sum) (default {DEFAULT_KERNEL}: {DEFAULT_SIZE} x {DEFAULT_SIZE}, "
        f"sigma {DEFAULT_SIGMA:g} pixels)",
    )
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="divide a .npy kernel by its sum, so that the result keeps the image's "
        "brightness (built-in kernels sum to 1; image files are always divided by their "
        "sum, as an image carries no absolute scale)",
    )
    parser.add_argument(
        "--damp",
        type=damping,
        default=None,
        metavar="D",
        help=f"Tikhonov damping: a number from 0 to {MAX_DAMP:g} (for a kernel summing to "
        f"1; beyond, the damping alone decides the result), or chosen from the data by "
        f"'discrepancy' "
        "(the residual matches the noise, estimated from the image; the default) or 'gcv' "
        "(generalised cross-validation, which tends to damp too little on photographs)",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "tikhonov", "tv"),
        default="auto",
        help="tikhonov: min |A x - b|^2 + damp^2 |x|^2; tv: total variation by PyLops' split "
        "Bregman, which keeps edges sharp; auto (default): tv, or tikhonov where tv would "
        "take longer than --max-seconds",
    )
    parser.add_argument(
        "--tv-weight",
        type=positive_float,
        default=None,
        metavar="W",
        help=f"tv's weight w (default {TV_WEIGHT_PER_VARIANCE:g} x the noise variance "
        f"estimated from the image, over the largest |value| of a .npy array)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"most iterations: cg's or lsqr's for tikhonov (default "
        f"{ITERATIONS['tikhonov']}), split-Bregman steps of {TV_INNER} lsqr iterations for tv "
        f"(default {ITERATIONS['tv']})",
    )
    parser.add_argument(
        "--nonneg",
        action="store_true",
        help="keep the result >= 0: tv with one more split for the constraint; tikhonov by "
        "ADMM, each step a preconditioned cg solve (--iterations counts the steps)",
    )
    parser.add_argument(
        "--solver",
        choices=("pcg", "lsqr"),
        default="pcg",
        help="pcg: cg on the normal equations with convop.preconditioner, to a relative "
        "residual of 1e-6 (default); lsqr: scipy's lsqr",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="with pcg, also run plain cg and report the iterations and time saved",
    )
    parser.add_argument(
        "--padding-mode",
        choices=PADDING_MODES,
        default="reflect",
        metavar="MODE",
        help=f"boundary model: one of {', '.join(PADDING_MODES)} (default reflect)",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="OUT",
        help="OUT.png or OUT.npy (default ./IMAGE-deblurred.png, or .npy for a .npy image)",
    )
    parser.add_argument(
        "--max-bytes",
        type=byte_count,
        default=None,
        metavar="N",
        help="refuse to deblur when the estimated memory exceeds N, e.g. 2G "
        "(default: half the memory available)",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="refuse to deblur when convop's cost model expects the solve to take longer "
        "(default 600 s); 'convop calibrate' gives it this machine's constants",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------- the blur
def _blur_weight(
    spec: str, normalize: bool = False, max_bytes: int | None = None
) -> tuple[np.ndarray, str]:
    """The deblur kernel as a finite float64 ``(1, 1, kh, kw)`` weight, not all zeros.

    Divided by its sum when read from an image file (which carries no absolute scale) or
    with ``normalize`` (refused when the sum is zero). Also returns what was done, for the
    report: ``", divided by its sum 312 (...)"``, or ``""``.
    """
    from_image = Path(spec).suffix.lower() in KERNEL_IMAGES
    if from_image:
        try:
            image = read_image(spec)
        except (ValueError, ImportError) as error:
            raise CommandError(f"kernel {spec!r}: {error}") from None
        if image.pixels.shape[2] != 1:
            raise CommandError(f"kernel {spec!r} must be a gray image, got a colour one")
        weight = image.pixels[None, None, :, :, 0].copy()
    else:
        weight = kernel_weight(spec, 2, "float64", max_bytes)
    if weight.shape[:2] != (1, 1):
        raise CommandError(f"kernel {spec!r} must have one channel, got shape {weight.shape}")
    if not weight.any():
        raise CommandError(
            f"kernel {spec!r} is all zeros: it blurs every image to 0, so there is nothing "
            f"to recover"
        )
    if not (normalize or from_image):
        return weight, ""
    top = math.frexp(float(np.abs(weight).max()))[1]
    unit = np.ldexp(weight, -top)  # largest |value| in [0.5, 1): its sums cannot overflow
    total = float(unit.sum())
    if abs(total) <= SUM_TOLERANCE * float(np.abs(unit).sum()):
        raise CommandError(f"--normalize: kernel {spec!r} sums to 0, it cannot be normalised")
    why = "an image file carries no absolute scale" if from_image else "--normalize"
    return unit / total, f", divided by its sum {math.ldexp(total, top):.6g} ({why})"


def _warn_unless_normalised(weight: np.ndarray, scales: Scales, spec: str) -> None:
    """Warn when the kernel does not sum to 1: the result's brightness then scales.

    ``weight`` is the kernel in the solve's units (divided by ``scales.t``).
    """
    total = float(weight.sum()) * scales.t
    if abs(float(weight.sum())) <= SUM_TOLERANCE * float(np.abs(weight).sum()):
        warn(
            f"kernel {spec!r} sums to 0: it removes the image's mean brightness, which the "
            f"result cannot recover (the damping pulls it towards 0)"
        )
    elif abs(total - 1) > SUM_TOLERANCE:
        warn(
            f"kernel {spec!r} sums to {total:.6g}, not 1: the result's brightness scales by "
            f"its inverse ({1 / total:.6g}); pass --normalize to divide the kernel by its sum"
        )


def _pcg(
    op: ConvOperator, b: np.ndarray, label: str, args: argparse.Namespace, damp: float,
    shown: str,
) -> tuple[np.ndarray, str]:  # fmt: skip
    """Preconditioned cg on the image ``b`` (flattened): the solution and its report line.

    ``shown``: the damping as the report gives it (in the kernel's units).
    """
    solved, seconds = timed(args.iterations, label, args.quiet, pcg, op, b, damp,
                             maxiter=args.iterations)  # fmt: skip
    line = (
        f"{label}: {solved.iterations} iterations ({_stopped(solved)}), {seconds:.2f} s, "
        f"{shown}, residual |b - A x| / |b| = {_relative(solved, b):.3g}"
    )
    if args.compare:
        plain, plain_seconds = timed(args.iterations, f"{label} (plain cg)", args.quiet, pcg,
                                      op, b, damp, M=None, maxiter=args.iterations)  # fmt: skip
        more = "" if plain.converged else "+ (iteration limit)"
        itn = solved.iterations
        line += (
            f"; plain cg: {plain.iterations}{more} iterations, {plain_seconds:.2f} s: the "
            f"preconditioner saved {plain.iterations - itn} iterations "
            f"({plain.iterations / max(itn, 1):.3g}x fewer)"
        )
    return solved.x, line


def _stopped(solved: SolverResult) -> str:
    return "converged" if solved.converged else "iteration limit"


def _relative(solved: SolverResult, b: np.ndarray) -> float:
    """``|b - A x| / |b|``."""
    return solved.residual / max(float(np.linalg.norm(b)), np.finfo(float).tiny)


def _tv(
    op: ConvOperator, b: np.ndarray, label: str, args: argparse.Namespace, scales: Scales
) -> tuple[np.ndarray, str]:
    """Total variation on the image ``b`` (flattened): the solution and its report line.

    ``op`` and ``b`` are in the solve's units (:mod:`convop.cli._scales`); the report gives
    the weight and the noise level in the data's units.
    """
    if args.tv_weight is None:
        noise = estimate_noise(b.reshape(op.input_shape), axes=(-2, -1))
        weight = scales.default_weight(TV_WEIGHT_PER_VARIANCE, noise)
        scale = f" / the data's scale {scales.peak:.3g}" if scales.peak != 1 else ""
        how = (
            f" ({TV_WEIGHT_PER_VARIANCE:g} x the noise variance{scale}, noise level "
            f"{noise * scales.s:.3g})"
        )
        if weight <= 0:
            weight, how = 1e-8, " (no noise found: the smallest weight)"
        elif not math.isfinite(weight):
            raise CommandError(
                "the default TV weight leaves float64's range for this image and kernel: "
                "pass --tv-weight"
            )
    else:
        weight, how = scales.weight_in_units(args.tv_weight), ""
    # started from the image; without --nonneg by PyLops' split Bregman, as ever
    method = "admm" if args.nonneg else "pylops"
    solved, seconds = timed(args.iterations, label, args.quiet, total_variation, op, b, weight,
                             nonneg=args.nonneg, method=method, x0=b, maxiter=args.iterations,
                             inner=TV_INNER)  # fmt: skip
    kept = ", x >= 0" if args.nonneg else ""
    return solved.x, (
        f"{label}: {solved.iterations} split-Bregman steps of {TV_INNER} lsqr iterations, "
        f"{seconds:.2f} s, weight {scales.weight_from_units(weight):.3g}{how}{kept}, residual "
        f"|b - A x| / |b| = {_relative(solved, b):.3g}"
    )


def _tikhonov(
    op: ConvOperator, b: np.ndarray, label: str, args: argparse.Namespace, scales: Scales
) -> tuple[np.ndarray, str]:
    """lsqr (or pcg) on the image ``b`` (flattened): the solution and its report line.

    The damping is ``--damp``, or chosen here from ``b`` by its rule (by default the
    discrepancy principle). ``op`` and ``b`` are in the solve's units
    (:mod:`convop.cli._scales`); the report gives the damping in the kernel's.
    """
    if args.damp is None or isinstance(args.damp, str):
        rule = args.damp or "discrepancy"
        damp = choose_damping(op, b, method=rule)
        chosen = f" (chosen by {rule})"
    else:
        damp, chosen = scales.damp_in_units(args.damp), ""
    shown = f"damp {scales.damp_from_units(damp):.3g}{chosen}"
    if args.nonneg:  # ADMM, started from the image
        solved, seconds = timed(args.iterations, label, args.quiet, tikhonov, op, b, damp,
                                 nonneg=True, x0=b, maxiter=args.iterations)  # fmt: skip
        return solved.x, (
            f"{label}: {solved.iterations} steps ({_stopped(solved)}), {seconds:.2f} s, "
            f"{shown}, x >= 0, residual |b - A x| / |b| = {_relative(solved, b):.3g}"
        )
    if args.solver == "pcg":
        return _pcg(op, b, label, args, damp, shown)
    x, istop, itn, r1norm, seconds = lsqr(
        op, b, damp=damp, iterations=args.iterations, quiet=args.quiet, exact_count=False,
        label=label,
    )  # fmt: skip
    relative = r1norm / max(float(np.linalg.norm(b)), np.finfo(float).tiny)
    stopped = STOPS.get(istop, f"istop={istop}")
    return x, (
        f"{label}: {itn} iterations ({stopped}), {seconds:.2f} s, {shown}, "
        f"residual |b - A x| / |b| = {relative:.3g}"
    )


def run(args: argparse.Namespace) -> int:
    suffix = ".npy" if Path(args.image).suffix.lower() in (".npy", ".npz") else ".png"
    default = Path(f"{Path(args.image).stem}-deblurred{suffix}")
    output = output_path(args.output or str(default), (".png", ".npy"), "--output")
    inputs = {"the input image": args.image, "the kernel file": args.kernel}
    refuse_overwriting(output, "--output", inputs)  # before any work
    weight, normalised = _blur_weight(args.kernel, args.normalize, args.max_bytes)
    image = read_image(args.image)
    height, width, channels = image.pixels.shape
    scales = Scales.of(image.pixels, image.bits is not None, weight)
    if isinstance(args.damp, float):
        scales.damp_in_units(args.damp)  # refused now, not after the guards
    if args.tv_weight is not None:
        scales.weight_in_units(args.tv_weight)
    unit_weight = scales.kernel_in_units(weight)  # (1, 1, kh, kw), the solve's units
    # One operator for every channel: the same blur on each, none mixed (groups).
    op = constructors.conv2d(
        np.repeat(unit_weight, channels, axis=0), (channels, height, width), padding="same",
        padding_mode=args.padding_mode, groups=channels,
    )  # fmt: skip
    method = choose_method(op, args, ITERATIONS)
    if args.nonneg and method == "tikhonov" and args.solver == "lsqr":
        raise CommandError(
            "--nonneg solves tikhonov by ADMM with preconditioned cg steps; --solver lsqr "
            "has no constraint (leave --solver out)"
        )
    solver = "tv" if method == "tv" else "admm" if args.nonneg else args.solver
    if args.compare and solver != "pcg":
        raise CommandError(
            "--compare needs --method tikhonov and --solver pcg without --nonneg (it compares "
            "pcg with plain cg)"
        )
    cost = check_deblur(op, args, solver)  # nothing allocated yet
    plural = "s" * (channels > 1)
    if cost.seconds > ANNOUNCE_SECONDS:
        print(
            f"{solver}: {height} x {width}, {channels} channel{plural}: up to about "
            f"{cost.seconds:.3g} s and {cost.bytes / 2**20:.3g} MiB by convop's cost model "
            f"with {cost.source} constants",
            flush=True,
        )
    _warn_unless_normalised(unit_weight, scales, args.kernel)
    deblur = _tv if method == "tv" else _tikhonov
    pixels = np.ascontiguousarray(image.pixels.transpose(2, 0, 1)).ravel()  # (C, H, W)
    x, report = deblur(op, scales.data_in_units(pixels), solver, args, scales)
    x = scales.result(x.reshape(channels, height, width))  # the data's units
    write_image(output, np.ascontiguousarray(x.transpose(1, 2, 0)), like=image)
    print(
        f"deblurred {args.image} ({height} x {width}, {'gray' if channels == 1 else 'RGB'}) "
        f"with kernel {args.kernel} {weight.shape[2:]}{normalised}, {args.padding_mode} "
        f"padding" + (f", {channels} channels at once" if channels > 1 else "")
    )
    print(report)
    if image.alpha:
        print("note: the image's alpha channel is dropped: not deblurred and not written")
    print(f"wrote {output}")
    return 0
