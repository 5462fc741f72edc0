"""The ``convop`` command: a deblurring demo, the matrix of a convolution, image deblurring.

Three subcommands, each a thin layer over the library:

- ``convop demo``: blur and noise the built-in Shepp-Logan phantom, deblur it with scipy's
  ``lsqr`` and ``lsmr`` on a :class:`~convop.operator.ConvOperator`, print PSNR and timings,
  write a figure;
- ``convop matrix``: the exact sparse matrix of a convolution (a kernel plus PyTorch's
  arguments, or a saved ``nn.Conv*`` module) written with :func:`convop.save_matrix`;
- ``convop deblur``: deblur a grayscale image file with a given or built-in kernel.

matplotlib and tqdm are imported only by the subcommands that use them (pylops never).
Errors (bad arguments, files that are not there, configurations convop rejects, the memory
guard) end in one line ``convop: error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import __version__
from ._memory import format_bytes
from .constructors import (
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    from_module,
)
from .operator import ConvOperator

#: Exit status for bad arguments and configurations convop rejects (as argparse uses).
EXIT_USAGE = 2
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
KERNEL_SPECS = "KERNEL.npy, gaussian:SIZE[:SIGMA] or motion:LENGTH[:ANGLE]"
_CONSTRUCTORS = {
    (1, False): conv1d,
    (2, False): conv2d,
    (3, False): conv3d,
    (1, True): conv_transpose1d,
    (2, True): conv_transpose2d,
    (3, True): conv_transpose3d,
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Why scipy's lsqr stopped (its ``istop``), for the deblur report.
_STOPS = {
    0: "x = 0 solves it",
    1: "converged",
    2: "converged (least squares)",
    7: "iteration limit",
}
_LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights of R, G, B


class _UsageError(Exception):
    """Bad command-line syntax; ``main`` turns it into one error line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line pointing at the right ``--help``."""

    def error(self, message: str):  # argparse's hook: must not return
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and example epilogs."""


# ---------------------------------------------------------------------- argument types
def _ints(text: str, what: str, *, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def _int_or_tuple(text: str) -> int | tuple[int, ...]:
    """``"2"`` -> ``2``, ``"2,1"`` -> ``(2, 1)`` (non-negative; convop checks the rest)."""
    values = _ints(text, "a non-negative int or comma-separated ints such as 2 or 2,1", minimum=0)
    return values[0] if len(values) == 1 else values


def _padding(text: str) -> int | tuple[int, ...] | str:
    return text if text in ("same", "valid") else _int_or_tuple(text)


def _input_shape(text: str) -> tuple[int, ...]:
    values = _ints(text, "C,H[,W[,D]]: 2 to 4 positive ints such as 1,64,64", minimum=1)
    if not 2 <= len(values) <= 4:
        raise argparse.ArgumentTypeError(
            f"expected C,H[,W[,D]]: 2 to 4 positive ints such as 1,64,64, got {text!r} "
            f"({len(values)} values)"
        )
    return values


def _positive_int(text: str) -> int:
    values = _ints(text, "a positive int", minimum=1)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return values[0]


def _float(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 if positive else value >= 0):
        expected = "a positive number" if positive else "a non-negative number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, positive=True)


def _non_negative_float(text: str) -> float:
    return _float(text, positive=False)


def _byte_count(text: str) -> int:
    """``"1000"``, ``"512K"``, ``"64M"``, ``"2G"`` (binary multiples) -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = body[-1:] if body[-1:] in units else ""
    try:
        value = float(body[: len(body) - len(unit)])
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 1000000, 512K, 64M or 2G, got {text!r}"
        )
    return int(value * units[unit])


# ---------------------------------------------------------------------- kernels and files
def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {str(path)!r}")
    return path


def load_kernel(spec: str) -> np.ndarray:
    """A blur kernel from ``KERNEL.npy``, ``gaussian:SIZE[:SIGMA]`` or ``motion:LENGTH[:ANGLE]``.

    Parameters
    ----------
    spec : str
        A ``.npy`` file (loaded without pickles), or a built-in normalised 2-d kernel:
        :func:`convop.data.gaussian_kernel` (odd ``SIZE``, ``SIGMA`` in pixels, default
        ``SIZE / 6``) or :func:`convop.data.motion_kernel` (odd ``LENGTH`` in pixels,
        ``ANGLE`` in degrees, default 0).

    Returns
    -------
    numpy.ndarray
        The kernel as stored (any number of dimensions).

    Raises
    ------
    ValueError
        For an unknown spec, a missing or unreadable file, or invalid kernel parameters.

    Examples
    --------
    >>> from convop.cli import load_kernel
    >>> load_kernel("gaussian:5:1.0").shape
    (5, 5)
    >>> load_kernel("motion:3")[1]
    array([0.33333333, 0.33333333, 0.33333333])
    """
    from .data import gaussian_kernel, motion_kernel

    name, *params = spec.split(":")
    builders = {
        "gaussian": (gaussian_kernel, "SIZE[:SIGMA]"),
        "motion": (motion_kernel, "LENGTH[:ANGLE]"),
    }
    if name in builders:
        build, syntax = builders[name]
        try:
            if not 1 <= len(params) <= 2:
                raise ValueError
            args = [int(params[0])] + [float(p) for p in params[1:]]
        except ValueError:
            raise ValueError(f"kernel {spec!r}: expected {name}:{syntax}") from None
        try:
            return build(*args)
        except ValueError as error:
            raise ValueError(f"kernel {spec!r}: {error}") from None
    if Path(spec).suffix.lower() != ".npy":
        raise ValueError(f"unknown kernel {spec!r}: expected {KERNEL_SPECS}")
    path = _existing(spec, "kernel file")
    try:
        kernel = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read kernel file {spec!r}: {error}") from None
    if not isinstance(kernel, np.ndarray) or kernel.dtype.kind not in "biufc":
        raise ValueError(f"kernel file {spec!r} must hold one numeric array")
    return kernel


def _as_weight(kernel: np.ndarray, ndim: int, dtype: str | None, spec: str) -> np.ndarray:
    """A kernel in PyTorch's weight layout ``(C_out, C_in/groups, *k)`` for ``ndim`` dims."""
    if kernel.ndim == ndim:  # one channel in, one out
        kernel = kernel[None, None]
    elif kernel.ndim != ndim + 2:
        raise ValueError(
            f"kernel {spec!r} has shape {kernel.shape}, but the input has {ndim} spatial "
            f"dimension{'s' * (ndim > 1)}: expected a kernel with {ndim} dimension"
            f"{'s' * (ndim > 1)} (one channel) or {ndim + 2} (C_out, C_in/groups, *kernel)"
        )
    if dtype is not None:
        return kernel.astype(dtype)
    return kernel if kernel.dtype.kind in "fc" else kernel.astype(np.float64)


def _read_image(spec: str) -> np.ndarray:
    """A grayscale image as a 2-d float64 array (``.npy``, or PNG/JPEG via matplotlib)."""
    path = _existing(spec, "image file")
    if path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read image {spec!r}: {error}") from None
        if not isinstance(image, np.ndarray) or image.dtype.kind not in "biuf":
            raise ValueError(f"image {spec!r} must hold one real numeric array")
    else:
        import matplotlib.image

        try:
            image = np.asarray(matplotlib.image.imread(path))
        except (OSError, ValueError, SyntaxError) as error:
            raise ValueError(f"cannot read image {spec!r}: {error}") from None
        if image.dtype.kind in "ui":  # JPEG and friends come as integers
            image = image / np.iinfo(image.dtype).max
        if image.ndim == 3 and image.shape[2] in (3, 4):  # RGB(A): luminance, alpha ignored
            image = image[..., :3] @ _LUMINANCE
        elif image.ndim == 3 and image.shape[2] in (1, 2):  # gray (+ alpha)
            image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image {spec!r} must be 2-d (grayscale), got shape {image.shape}")
    return image.astype(np.float64)


def _output_path(text: str, suffixes: Sequence[str], what: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} must end in {' or '.join(suffixes)}, got {text!r}")
    if not path.parent.is_dir():
        raise ValueError(f"directory of {what} {text!r} does not exist")
    return path


# ---------------------------------------------------------------------- solving
def _progress(iterations: int, desc: str, quiet: bool):
    """A tqdm bar over solver iterations; off with ``--quiet`` or when stderr is no TTY."""
    from tqdm import tqdm

    return tqdm(
        total=iterations, desc=desc, unit="it", leave=False, disable=True if quiet else None
    )


def _counted(op: ConvOperator, bar):
    """``op`` behind a thin ``LinearOperator`` that ticks ``bar`` once per forward product.

    scipy's ``lsqr``/``lsmr`` take no callback, but each iteration applies ``op`` exactly once.
    """
    from scipy.sparse.linalg import LinearOperator

    class Counted(LinearOperator):
        def __init__(self) -> None:
            super().__init__(dtype=op.dtype, shape=op.shape)

        def _matvec(self, x):
            bar.update(1)
            return op.matvec(x)

        def _rmatvec(self, y):
            return op.rmatvec(y)

    return Counted()


def _solve(
    name: str,
    op: ConvOperator,
    b: np.ndarray,
    *,
    damp: float,
    iterations: int,
    quiet: bool,
    exact_count: bool,
) -> tuple[np.ndarray, int, int, float, float]:
    """Run scipy's ``lsqr`` or ``lsmr``; ``(x, istop, itn, residual norm, seconds)``.

    ``exact_count`` runs exactly ``iterations`` (tolerances 0) instead of stopping early.
    """
    from scipy.sparse.linalg import lsmr, lsqr

    tol = dict(atol=0.0, btol=0.0) if exact_count else {}
    # Products on float64 arrays run torch single-threaded (convop.threads): no pool fight.
    with _progress(iterations, name, quiet) as bar:
        A = _counted(op, bar)
        start = time.perf_counter()
        if name == "lsqr":
            x, istop, itn, r1norm = lsqr(A, b, damp=damp, iter_lim=iterations, **tol)[:4]
        else:
            x, istop, itn, r1norm = lsmr(A, b, damp=damp, maxiter=iterations, **tol)[:4]
        seconds = time.perf_counter() - start
    return x, istop, itn, float(r1norm), seconds


def _psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the range of ``truth``."""
    peak = float(truth.max() - truth.min())
    mse = float(np.mean((estimate.reshape(truth.shape) - truth) ** 2))
    return 10 * np.log10(peak**2 / mse) if mse > 0 else float("inf")


def _save_panels(path: Path, panels: Sequence[tuple[str, np.ndarray]]) -> bool:
    """Grayscale images side by side in one PNG; ``False`` (and a note) without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError:
        print(
            "note: matplotlib is not installed, so no figure was written "
            "(pip install 'convop[plot]')"
        )
        return False
    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    for ax, (title, image) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    return True


# ---------------------------------------------------------------------- subcommands
def _run_demo(args: argparse.Namespace) -> int:
    from .data import gaussian_kernel, phantom

    out = None if args.no_figure else _output_path(args.out, (".png",), "--out")
    n, k = args.size, args.kernel_size
    truth = phantom(n)  # (n, n) in [0, 1]
    kernel = gaussian_kernel(k, args.sigma)  # (k, k), sums to 1
    op = conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    method = getattr(op, "method", "direct")
    rng = np.random.default_rng(0)
    noise = args.noise * float(truth.max() - truth.min())
    b = op @ truth.ravel() + noise * rng.standard_normal(op.shape[0])
    damp = 10 * args.noise if args.damp is None else args.damp
    sigma = k / 6 if args.sigma is None else args.sigma
    print(f"convop demo: deblurring the {n} x {n} Shepp-Logan phantom")
    print(
        f"blur: {k} x {k} Gaussian, sigma {sigma:.3g} px, reflect padding; "
        f"noise: {100 * args.noise:.3g}% of the range (seed 0); damp {damp:.3g}\n"
    )

    rows = [("blurred + noisy", _psnr(b, truth), "-", "-", "-")]
    panels = [("true", truth), (f"blurred + noisy, {rows[0][1]:.1f} dB", b.reshape(n, n))]
    for name in ("lsqr", "lsmr"):
        x, _, itn, _, seconds = _solve(
            name, op, b, damp=damp, iterations=args.iterations, quiet=args.quiet, exact_count=True
        )
        psnr = _psnr(x, truth)
        rows.append((f"scipy {name}", psnr, str(itn), f"{seconds:.2f}", method))
        panels.append((f"{name}, {psnr:.1f} dB", x.reshape(n, n)))

    print(f"{'method':<16} {'PSNR (dB)':>9} {'iterations':>10} {'time (s)':>8}  operator")
    for label, psnr, itn, seconds, how in rows:
        print(f"{label:<16} {psnr:>9.2f} {itn:>10} {seconds:>8}  {how}")
    if out is not None and _save_panels(out, panels):
        print(f"\nfigure: {out}")
    return 0


def _build_operator(args: argparse.Namespace) -> tuple[ConvOperator, str]:
    """The operator described by ``convop matrix``'s arguments, and where it came from."""
    ndim = len(args.input_shape) - 1
    conv_options = ("stride", "padding", "dilation", "groups", "padding_mode", "output_padding")
    if args.module is not None:
        given = [f"--{o.replace('_', '-')}" for o in conv_options if getattr(args, o) is not None]
        if given or args.transposed:
            flags = ", ".join(given + (["--transposed"] if args.transposed else []))
            raise ValueError(
                f"{flags} cannot be used with --module: the module's own configuration is used"
            )
        module = _load_module(args.module)
        if args.dtype is not None:
            module = module.to(_DTYPES[args.dtype])
        return from_module(module, args.input_shape), f"module {args.module}"
    weight = _as_weight(load_kernel(args.kernel), ndim, args.dtype, args.kernel)
    options = {o: getattr(args, o) for o in conv_options if getattr(args, o) is not None}
    if args.transposed:
        mode = options.pop("padding_mode", "zeros")
        if mode != "zeros":
            raise ValueError(
                f"--padding-mode {mode} is not available with --transposed: "
                f"PyTorch's transposed convolutions pad with zeros only"
            )
    elif "output_padding" in options:
        raise ValueError("--output-padding applies to --transposed convolutions only")
    build = _CONSTRUCTORS[ndim, args.transposed]
    return build(weight, args.input_shape, **options), f"kernel {args.kernel}"


def _load_module(spec: str) -> torch.nn.Module:
    path = _existing(spec, "module file")
    try:
        module = torch.load(path, weights_only=False, map_location="cpu")  # unpickles
    except Exception as error:  # unpickling can fail in any way (missing classes, junk, ...)
        raise ValueError(f"cannot load a torch module from {spec!r}: {error}") from None
    if not isinstance(module, torch.nn.Module):
        hint = ""
        if isinstance(module, dict):
            hint = " (a state_dict holds no configuration; save the module itself)"
        raise ValueError(
            f"{spec!r} must hold a conv module saved with torch.save(module), "
            f"got {type(module).__name__}{hint}"
        )
    return module


def _run_matrix(args: argparse.Namespace) -> int:
    from . import materialize
    from .matrix_io import FORMATS, save_matrix

    output = _output_path(args.output, tuple(FORMATS), "OUTPUT")
    op, source = _build_operator(args)
    plan = materialize.plan(op.weight, op.geometry, adjoint=op.is_adjoint)
    nnz = materialize.nnz(plan)
    save_matrix(output, op, max_bytes=args.max_bytes)
    m, n = op.shape
    print(
        f"{op.name} from {source}: input {op.input_shape} -> output {op.output_shape}, "
        f"{op.geometry.describe()}, {op.dtype}"
    )
    print(f"wrote {output} ({FORMATS[output.suffix.lower()]})")
    print(f"  shape    {m} x {n}")
    print(f"  nnz      {nnz}")
    print(f"  density  {nnz / (m * n):.3g}")
    print(f"  file     {format_bytes(output.stat().st_size)}")
    if op.bias is not None:
        print(
            "note: the layer's bias is not part of the (linear) matrix and is not saved: "
            "the layer computes B @ x + bias, with bias its per-channel bias repeated "
            "over the output positions (op.bias in Python)"
        )
    return 0


def _run_deblur(args: argparse.Namespace) -> int:
    suffix = ".npy" if Path(args.image).suffix.lower() == ".npy" else ".png"
    default = Path(f"{Path(args.image).stem}-deblurred{suffix}")
    output = _output_path(args.output or str(default), (".png", ".npy"), "--output")
    image = _read_image(args.image)  # (H, W)
    weight = _as_weight(load_kernel(args.kernel), 2, None, args.kernel)
    if weight.shape[:2] != (1, 1):
        raise ValueError(f"kernel {args.kernel!r} must have one channel, got shape {weight.shape}")
    op = conv2d(weight, (1, *image.shape), padding="same", padding_mode=args.padding_mode)
    x, istop, itn, r1norm, seconds = _solve(
        "lsqr",
        op,
        image.ravel(),
        damp=args.damp,
        iterations=args.iterations,
        quiet=args.quiet,
        exact_count=False,
    )
    result = x.reshape(image.shape)
    if output.suffix.lower() == ".npy":
        np.save(output, result)
    else:
        import matplotlib.image

        # Image files are read into [0, 1]: keep that scale (clipping the overshoot);
        # other data are mapped from their own range.
        lo, hi = (
            (0.0, 1.0) if image.min() >= 0 and image.max() <= 1 else (image.min(), image.max())
        )
        matplotlib.image.imsave(output, result, cmap="gray", vmin=lo, vmax=hi)
    relative = r1norm / max(float(np.linalg.norm(image)), np.finfo(float).tiny)
    stopped = _STOPS.get(istop, f"istop={istop}")
    print(
        f"deblurred {args.image} ({image.shape[0]} x {image.shape[1]}) with kernel "
        f"{args.kernel} {weight.shape[2:]}, {args.padding_mode} padding"
    )
    print(
        f"lsqr: {itn} iterations ({stopped}), {seconds:.2f} s, damp {args.damp:g}, "
        f"residual |b - A x| / |b| = {relative:.3g}"
    )
    print(f"wrote {output}")
    return 0


# ---------------------------------------------------------------------- parser
_MAIN_EPILOG = """\
examples:
  convop demo                                  deblur the built-in phantom, write a figure
  convop matrix --kernel gaussian:5 --input-shape 1,64,64 B.mtx
  convop deblur photo.png --kernel motion:9:30 --output sharp.png
  convop SUBCOMMAND --help                     options of one subcommand
"""

_DEMO_DESCRIPTION = """\
Deblurring showcase on the built-in Shepp-Logan phantom (no download): blur it with a
Gaussian kernel through convop.conv2d(..., padding="same", padding_mode="reflect"), add
Gaussian noise (fixed seed), solve the Tikhonov-damped least-squares problem with scipy's
lsqr and lsmr on the lazy operator, print a table (PSNR, iterations, time, the operator's
evaluation method) and write a figure (true / blurred + noisy / lsqr / lsmr)."""

_DEMO_EPILOG = """\
examples:
  convop demo                                  256 x 256, figure in ./convop-demo.png
  convop demo --size 128 --iterations 20 --no-figure
  convop demo --sigma 2 --noise 0.02 --out blur.png
"""

_MATRIX_DESCRIPTION = """\
Build the exact sparse matrix B of a convolution, y = B @ x for one flattened sample
(x = tensor.reshape(-1) of shape (C, *spatial)), and write it as scipy .npz or Matrix Market
.mtx (MATLAB, Julia, R, SuiteSparse, ...). Give either a kernel and PyTorch's conv arguments,
or a conv module saved with torch.save(module). Prints shape, nnz, density and file size."""

_MATRIX_EPILOG = """\
kernel:
  KERNEL.npy               PyTorch's weight layout (C_out, C_in/groups, *k), or
                           (C_in, C_out/groups, *k) with --transposed; a single-channel
                           kernel with only the spatial dimensions is accepted as well
  gaussian:SIZE[:SIGMA]    normalised 2-d Gaussian, odd SIZE, SIGMA default SIZE/6
  motion:LENGTH[:ANGLE]    normalised 2-d linear motion blur, odd LENGTH, ANGLE in degrees

examples:
  convop matrix --kernel gaussian:5 --input-shape 1,64,64 --padding same B.npz
  convop matrix --kernel w.npy --input-shape 3,32,32 --stride 2 --padding 1,0 B.mtx
  convop matrix --kernel w.npy --input-shape 4,16 --transposed --stride 2 B.npz
  convop matrix --module layer.pt --input-shape 3,32,32 B.mtx
"""

_DEBLUR_DESCRIPTION = """\
Deblur a grayscale image: solve min |A x - b|^2 + damp^2 |x|^2 with scipy's lsqr, where A
is the blur (convop.conv2d with padding "same") and b the image. PNG/JPEG files are read
with matplotlib (RGB(A) converted to gray by luminance, values in [0, 1]); a .npy file holds
a 2-d array. The result is written as .npy (raw values) or .png (grayscale; images read
from files keep their [0, 1] scale with overshoot clipped, other data are mapped from their
own range)."""

_DEBLUR_EPILOG = """\
examples:
  convop deblur photo.png                           gaussian:9, ./photo-deblurred.png
  convop deblur scan.npy --kernel psf.npy --damp 0.02 --output sharp.npy
  convop deblur shake.jpg --kernel motion:15:30 --iterations 200 --output sharp.png
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``convop`` argument parser with its three subcommands."""
    parser = _Parser(
        prog="convop",
        description="Convolutions as exact lazy linear operators: a deblurring demo, the\n"
        "sparse matrix of any PyTorch convolution, and image deblurring.",
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"convop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="deblur the built-in phantom with lsqr and lsmr, print PSNR, write a figure",
        description=_DEMO_DESCRIPTION,
        epilog=_DEMO_EPILOG,
        formatter_class=_Formatter,
    )
    demo.add_argument(
        "--size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="image size in pixels, at least 8 (default 256)",
    )
    demo.add_argument(
        "--kernel-size",
        type=_positive_int,
        default=9,
        metavar="K",
        help="odd Gaussian kernel size (default 9)",
    )
    demo.add_argument(
        "--sigma",
        type=_positive_float,
        default=None,
        metavar="S",
        help="Gaussian standard deviation in pixels (default K/6)",
    )
    demo.add_argument(
        "--noise",
        type=_non_negative_float,
        default=0.01,
        metavar="SIGMA",
        help="noise standard deviation as a fraction of the image's range (default 0.01)",
    )
    demo.add_argument(
        "--damp",
        type=_non_negative_float,
        default=None,
        metavar="D",
        help="Tikhonov damping of both solvers (default 10 * SIGMA)",
    )
    demo.add_argument(
        "--iterations",
        type=_positive_int,
        default=50,
        metavar="N",
        help="iterations of each solver, run in full (default 50)",
    )
    demo.add_argument(
        "--out",
        default="convop-demo.png",
        metavar="FIG.png",
        help="figure to write (default ./convop-demo.png)",
    )
    demo.add_argument("--no-figure", action="store_true", help="do not write the figure")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_run_demo)

    matrix = commands.add_parser(
        "matrix",
        help="write the exact sparse matrix of a convolution (.npz or .mtx)",
        description=_MATRIX_DESCRIPTION,
        epilog=_MATRIX_EPILOG,
        formatter_class=_Formatter,
    )
    source = matrix.add_mutually_exclusive_group(required=True)
    source.add_argument("--kernel", metavar="SPEC", help=f"the kernel: {KERNEL_SPECS}")
    source.add_argument(
        "--module",
        metavar="MODULE.pt",
        help="an nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d saved with "
        "torch.save(module); loading UNPICKLES the file, which can run "
        "arbitrary code: use only files you trust",
    )
    matrix.add_argument(
        "--input-shape",
        type=_input_shape,
        required=True,
        metavar="C,H[,W[,D]]",
        help="shape of one input sample: channels, then 1 to 3 spatial sizes",
    )
    tuple_help = "an int or one per spatial dimension, e.g. 2 or 2,1 (default {})"
    matrix.add_argument("--stride", type=_int_or_tuple, metavar="S", help=tuple_help.format(1))
    matrix.add_argument(
        "--padding",
        type=_padding,
        metavar="P",
        help="an int, one per spatial dimension (1,0), same or valid; "
        "transposed: ints only (default 0)",
    )
    matrix.add_argument("--dilation", type=_int_or_tuple, metavar="D", help=tuple_help.format(1))
    matrix.add_argument(
        "--groups",
        type=_positive_int,
        metavar="G",
        help="channel groups, dividing both channel counts (default 1)",
    )
    matrix.add_argument(
        "--padding-mode",
        choices=PADDING_MODES,
        metavar="MODE",
        help=f"one of {', '.join(PADDING_MODES)} (default zeros)",
    )
    matrix.add_argument(
        "--transposed",
        action="store_true",
        help="a transposed convolution (conv_transposeNd); weight layout (C_in, C_out/groups, *k)",
    )
    matrix.add_argument(
        "--output-padding",
        type=_int_or_tuple,
        metavar="OP",
        help="with --transposed: " + tuple_help.format(0),
    )
    matrix.add_argument(
        "--dtype",
        choices=tuple(_DTYPES),
        default=None,
        help="cast the weight (default: as stored; float64 for "
        "gaussian/motion and integer kernels)",
    )
    matrix.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=None,
        metavar="N",
        help="refuse to build a matrix needing more memory, e.g. 2G "
        "(default: half the memory available)",
    )
    matrix.add_argument("output", metavar="OUTPUT", help="file to write: .npz or .mtx")
    matrix.set_defaults(run=_run_matrix)

    deblur = commands.add_parser(
        "deblur",
        help="deblur a grayscale image (PNG, JPEG or .npy) with lsqr",
        description=_DEBLUR_DESCRIPTION,
        epilog=_DEBLUR_EPILOG,
        formatter_class=_Formatter,
    )
    deblur.add_argument("image", metavar="IMAGE", help="PNG, JPEG or 2-d .npy file")
    deblur.add_argument(
        "--kernel",
        default="gaussian:9",
        metavar="SPEC",
        help=f"the blur: {KERNEL_SPECS}; a 2-d or (1, 1, kh, kw) array (default gaussian:9)",
    )
    deblur.add_argument(
        "--damp",
        type=_non_negative_float,
        default=0.05,
        metavar="D",
        help="Tikhonov damping, larger for noisier images (default 0.05)",
    )
    deblur.add_argument(
        "--iterations",
        type=_positive_int,
        default=100,
        metavar="N",
        help="most lsqr iterations (default 100)",
    )
    deblur.add_argument(
        "--padding-mode",
        choices=PADDING_MODES,
        default="reflect",
        metavar="MODE",
        help=f"boundary model: one of {', '.join(PADDING_MODES)} (default reflect)",
    )
    deblur.add_argument(
        "--output",
        default=None,
        metavar="OUT",
        help="OUT.png or OUT.npy (default ./IMAGE-deblurred.png, or .npy for a .npy image)",
    )
    deblur.add_argument("--quiet", action="store_true", help="no progress bar")
    deblur.set_defaults(run=_run_deblur)
    return parser


# ---------------------------------------------------------------------- entry point
def _fail(message: object) -> int:
    text = " ".join(str(message).split())  # always one line
    text = text.replace("pass max_bytes=", "pass --max-bytes ").replace(
        "(max_bytes)", "(--max-bytes)"
    )
    print(f"convop: error: {text}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convop`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success (``--help`` and ``--version`` included), 2 for bad
        arguments, missing or unreadable files, configurations convop rejects and the memory
        guard (one line ``convop: error: ...`` on stderr), 130 when interrupted.

    See Also
    --------
    convop.save_matrix, convop.conv2d, convop.from_module

    Examples
    --------
    >>> from convop.cli import main
    >>> main(["--version"])
    convop ...
    0
    >>> main(["matrix", "--kernel", "gaussian:4", "--input-shape", "1,8,8", "B.npz"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except _UsageError as error:
        return _fail(error)
    try:
        return args.run(args)
    except (ValueError, TypeError, MemoryError, OSError) as error:
        return _fail(error)
    except KeyboardInterrupt:
        print("convop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
