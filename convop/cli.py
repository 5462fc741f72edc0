"""The ``convop`` command: a deblurring demo, the matrix of a convolution, image deblurring.

Three subcommands, each a thin layer over the library:

- ``convop demo``: blur and noise the built-in Shepp-Logan phantom, deblur it with scipy's
  ``lsqr`` and ``lsmr`` on a :class:`~convop.operator.ConvOperator`, print PSNR and timings,
  write a figure;
- ``convop matrix``: the exact sparse matrix of a convolution (a kernel plus PyTorch's
  arguments, or a saved ``nn.Conv*`` module), built with
  :meth:`~convop.operator.ConvOperator.tosparse` and written with :func:`convop.save_matrix`;
- ``convop deblur``: deblur an image file, gray or colour (each channel on its own), with a
  given or built-in kernel.

matplotlib, Pillow and tqdm are imported only by the subcommands that use them (pylops never).

Failures never end in a traceback. Bad arguments, missing, damaged or refused files,
configurations convop rejects and the guards (memory, expected time) end in one line
``convop: error: ...`` on stderr and exit status 2; anything unexpected (a failure inside
torch such as an allocation that fails, or a bug) in one line ``convop: error: TYPE: ...``
and exit status 1; an interrupt in exit status 130. Warnings are one line
``convop: warning: ...`` each.

``--module`` files are read by torch's restricted unpickler (``weights_only=True``), which
accepts torch's six conv classes and plain data only and runs no code from the file; full
unpickling happens only with the loudly named ``--unsafe-unpickle``.

The module is longer than convop's usual ~400 lines because it holds the parser and all three
subcommands; splitting it into a ``cli/`` package (parser and argument types, one module per
subcommand) is planned.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import __version__
from . import _cost as cost_model
from ._fft import frame
from ._files import atomic_write
from ._memory import check_memory, format_bytes
from .constructors import (
    MODULE_KINDS,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    from_module,
)
from .geometry import ConvGeometry
from .operator import ConvOperator

#: Exit status for bad arguments, bad or refused input and the guards (as argparse uses).
EXIT_USAGE = 2
#: Exit status for unexpected failures (inside torch, scipy, numpy, or a bug).
EXIT_FAILURE = 1
#: Exit status after an interrupt (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130
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
#: The only classes a ``--module`` file may contain (besides tensors and plain data).
_CONV_MODULES = tuple(MODULE_KINDS)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CPU = torch.device("cpu")
#: Why scipy's lsqr stopped (its ``istop``), for the deblur report.
_STOPS = {
    0: "x = 0 solves it",
    1: "converged",
    2: "converged (least squares)",
    7: "iteration limit",
}
_CHANNELS = ("red", "green", "blue")
#: Bits per sample of Pillow's gray modes ("I": how Pillow may hold a 16-bit PNG).
_GRAY_BITS = {"1": 8, "L": 8, "LA": 8, "La": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I": 16}
#: How far a kernel's sum may be from 1 before deblur warns.
_SUM_TOLERANCE = 1e-6


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
def _one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _warn(text: str) -> None:
    print(f"convop: warning: {_one_line(text)}", file=sys.stderr)


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {str(path)!r}")
    return path


def _load_array(path: Path, what: str, *, real: bool) -> np.ndarray:
    """The one numeric array of a ``.npy`` file, never unpickled; ``ValueError`` otherwise."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # damaged, truncated, empty, pickled
        raise ValueError(f"cannot read {what}: {error}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise ValueError(f"{what} must hold one numeric array, got an .npz archive")
    if array.dtype.kind not in ("biuf" if real else "biufc"):
        raise ValueError(
            f"{what} must hold one {'real ' * real}numeric array, got dtype {array.dtype}"
        )
    return array


def _require_finite(values: np.ndarray, what: str, axes: Sequence[str] | None = None) -> None:
    """``ValueError`` saying how many values are NaN or infinite and where the first is.

    ``axes`` names the dimensions (``("row", "column")``); without it the index is printed.
    """
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if count == 0:
        return
    first = [int(i) for i in np.argwhere(bad)[0]]
    where = (
        ", ".join(f"{name} {i}" for name, i in zip(axes, first))
        if axes
        else f"index {tuple(first)}"
    )
    raise ValueError(
        f"{what} has {count} non-finite value{'s' * (count > 1)} (NaN or Inf), "
        f"the first at {where}"
    )


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
        The kernel as stored (any number of dimensions, values not checked).

    Raises
    ------
    ValueError
        For an unknown spec, a missing, damaged or unreadable file, or invalid kernel
        parameters.

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
    return _load_array(_existing(spec, "kernel file"), f"kernel file {spec!r}", real=False)


def _as_weight(kernel: np.ndarray, ndim: int, dtype: str | None, spec: str) -> np.ndarray:
    """A finite kernel in PyTorch's weight layout ``(C_out, C_in/groups, *k)``, ``ndim`` dims."""
    if kernel.ndim not in (ndim, ndim + 2):
        raise ValueError(
            f"kernel {spec!r} has shape {kernel.shape}, but the input has {ndim} spatial "
            f"dimension{'s' * (ndim > 1)}: expected a kernel with {ndim} dimension"
            f"{'s' * (ndim > 1)} (one channel) or {ndim + 2} (C_out, C_in/groups, *kernel)"
        )
    if dtype is not None:
        kernel = kernel.astype(dtype)
    elif kernel.dtype.kind not in "fc":
        kernel = kernel.astype(np.float64)
    _require_finite(kernel, f"kernel {spec!r}")
    return kernel[None, None] if kernel.ndim == ndim else kernel  # one channel in, one out


def _load_module(spec: str, *, unsafe: bool) -> nn.Module:
    """A conv module saved with ``torch.save(module)``, read by torch's restricted unpickler
    (only :data:`_CONV_MODULES`, tensors and plain data), or fully unpickled when ``unsafe``."""
    path = _existing(spec, "module file")
    if unsafe:
        _warn(
            f"--unsafe-unpickle: fully unpickling {spec!r}, which can run arbitrary code "
            f"from the file"
        )
        allowed = contextlib.nullcontext()
    elif hasattr(torch.serialization, "safe_globals"):
        allowed = torch.serialization.safe_globals(list(_CONV_MODULES))
    else:  # torch < 2.5
        raise ValueError(
            f"reading --module files safely needs torch >= 2.5, found torch "
            f"{torch.__version__}: upgrade torch, or pass --unsafe-unpickle for a file you "
            f"trust (full unpickling can run arbitrary code)"
        )
    try:
        with allowed:
            module = torch.load(path, weights_only=not unsafe, map_location="cpu")
    except Exception as error:  # a damaged or foreign file can fail in any way
        raise _module_load_error(spec, error) from None
    if not isinstance(module, nn.Module):
        hint = ""
        if isinstance(module, dict):
            hint = " (a state_dict holds no configuration; save the module itself)"
        raise ValueError(
            f"{spec!r} must hold a conv module saved with torch.save(module), "
            f"got {type(module).__name__}{hint}"
        )
    return module


def _module_load_error(spec: str, error: Exception) -> ValueError:
    """What to tell about a ``--module`` file ``torch.load`` failed on: refused or damaged."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)  # torch's restricted unpickler said no
    if refused:
        classes = ", ".join(f"nn.{cls.__name__}" for cls in _CONV_MODULES)
        return ValueError(
            f"refused to load {spec!r}: it needs {refused.group(1)}, which --module files may "
            f"not contain. They are read with torch.load(weights_only=True), which accepts "
            f"only {classes} (not subclasses), tensors and plain data, and runs no code from "
            f"the file: save a plain torch conv layer with torch.save(layer), or pass "
            f"--unsafe-unpickle for a file you trust (full unpickling can run arbitrary code)"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text)
    reason = detail.group(1) if detail else f"{type(error).__name__}: {text}"
    return ValueError(
        f"cannot load a torch module from {spec!r} (damaged, or not written by "
        f"torch.save): {reason}"
    )


# ---------------------------------------------------------------------- images
class _Image(NamedTuple):
    """An image to deblur, as read."""

    pixels: np.ndarray  # (H, W, C) float64; C = 1 (gray) or 3 (red, green, blue)
    bits: int | None  # bits per sample of an image file (pixels scaled to [0, 1]); None: .npy
    alpha: bool  # an alpha channel was dropped


def _pillow():
    """Pillow's ``PIL.Image``, or a ``ValueError`` saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(
            "PNG and JPEG images need Pillow, which is not installed: "
            "pip install 'convop[plot]' (or use .npy files)"
        ) from None
    return Image


def _read_image(spec: str) -> _Image:
    """A ``.npy`` array, or a PNG/JPEG/... file read with Pillow; finite pixels only."""
    path = _existing(spec, "image file")
    if path.suffix.lower() == ".npy":
        return _read_npy_image(path, f"image {spec!r}")
    Image = _pillow()
    try:
        with Image.open(path) as picture:
            samples, bits, alpha = _samples(picture)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {spec!r}: {error}") from None
    pixels = np.atleast_3d(samples).astype(np.float64) / (2**bits - 1)  # (H, W, C) in [0, 1]
    return _Image(pixels, bits, alpha)


def _read_npy_image(path: Path, what: str) -> _Image:
    array = _load_array(path, what, real=True)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(
            f"{what} must have shape (H, W) (gray) or (H, W, 3) (colour), got {array.shape}"
        )
    _require_finite(array, what, ("row", "column", "channel"))
    pixels = array[..., None] if array.ndim == 2 else array
    return _Image(pixels.astype(np.float64), bits=None, alpha=False)


def _samples(picture) -> tuple[np.ndarray, int, bool]:
    """``(samples, bits, alpha)`` of a Pillow image: ``(H, W)`` gray or ``(H, W, 3)`` RGB
    unsigned samples, their bits (8, or 16 for 16-bit gray), whether alpha was dropped."""
    alpha = any(band in "Aa" for band in picture.getbands()) or "transparency" in picture.info
    bits = _GRAY_BITS.get(picture.mode)
    if bits == 16:
        samples = np.asarray(picture)
        if samples.size and (samples.min() < 0 or samples.max() > 2**16 - 1):
            raise ValueError(f"mode {picture.mode} samples outside 0..65535 are not supported")
        return samples, bits, alpha
    if bits == 8:
        return np.asarray(picture.convert("L")), bits, alpha
    if picture.mode == "F":
        raise ValueError("floating-point images are not supported: save the array as .npy")
    return np.asarray(picture.convert("RGB")), 8, alpha  # palette, RGB(A), CMYK, ...


def _quantised(values: np.ndarray, image: _Image) -> np.ndarray:
    """``values`` as unsigned samples of ``image``'s depth (8 bits for ``.npy`` data): image
    files keep their [0, 1] scale (overshoot clipped), other data map from their own range."""
    bits = image.bits or 8
    pixels = image.pixels
    lo, hi = (
        (0.0, 1.0) if pixels.min() >= 0 and pixels.max() <= 1 else (pixels.min(), pixels.max())
    )
    scaled = np.clip((values - lo) / (float(hi - lo) or 1.0), 0.0, 1.0)
    return np.round(scaled * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)


def _write_image(path: Path, result: np.ndarray, image: _Image) -> None:
    """``result`` ``(H, W, C)`` as ``.npy`` (raw, the input's shape) or PNG (gray: mode L or
    I;16, colour: RGB)."""
    values = result[..., 0] if result.shape[2] == 1 else result  # (H, W) or (H, W, 3)
    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda file: np.save(file, values))
    else:
        picture = _pillow().fromarray(_quantised(values, image))
        atomic_write(path, lambda file: picture.save(file, format="PNG"))


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
    label: str | None = None,
) -> tuple[np.ndarray, int, int, float, float]:
    """Run scipy's ``lsqr`` or ``lsmr``; ``(x, istop, itn, residual norm, seconds)``.

    ``exact_count`` runs exactly ``iterations`` (tolerances 0) instead of stopping early;
    ``label`` titles the progress bar (default ``name``).
    """
    from scipy.sparse.linalg import lsmr, lsqr

    tol = dict(atol=0.0, btol=0.0) if exact_count else {}
    # Products on float64 arrays run torch single-threaded (convop.threads): no pool fight.
    with _progress(iterations, label or name, quiet) as bar:
        A = _counted(op, bar)
        start = time.perf_counter()
        if name == "lsqr":
            x, istop, itn, r1norm = lsqr(A, b, damp=damp, iter_lim=iterations, **tol)[:4]
        else:
            x, istop, itn, r1norm = lsmr(A, b, damp=damp, maxiter=iterations, **tol)[:4]
        seconds = time.perf_counter() - start
    return x, istop, itn, float(r1norm), seconds


# ---------------------------------------------------------------------- deblur's guards
def _deblur_bytes(geometry: ConvGeometry, channels: int) -> int:
    """Estimated memory of deblurring ``channels`` channels one after the other.

    The image and the result (``channels`` float64 planes each), lsqr's ~6 float64 vectors
    of one channel, and the products' workspace: ~2 complex grids of the padded size.
    """
    pixels = math.prod(geometry.input_size)
    padded = math.prod(frame(geometry).sizes)
    return 8 * pixels * (2 * channels + 6) + 2 * 16 * padded


def _deblur_seconds(geometry: ConvGeometry, method: str, channels: int, iterations: int) -> float:
    """Estimated time of ``iterations`` lsqr iterations per channel by convop's cost model.

    Each iteration applies the blur and its adjoint: two products.
    """
    product = cost_model.fft_seconds if method == "fft" else cost_model.direct_seconds
    return product(geometry, torch.float64, _CPU) * 2 * iterations * channels


def _check_deblur(
    geometry: ConvGeometry, method: str, channels: int, args: argparse.Namespace
) -> None:
    """Refuse, before anything is allocated, a deblur over the memory or the time limit."""
    height, width = geometry.input_size
    what = f"deblurring {channels} channel{'s' * (channels > 1)} of {height} x {width} pixels"
    check_memory(_deblur_bytes(geometry, channels), args.max_bytes, what)
    seconds = _deblur_seconds(geometry, method, channels, args.iterations)
    if seconds > args.max_seconds:
        raise ValueError(
            f"{what} would take up to about {seconds:.3g} s by convop's cost model "
            f"({args.iterations} lsqr iterations x 2 {method} products x {channels} "
            f"channel{'s' * (channels > 1)}), more than --max-seconds {args.max_seconds:g}; "
            f"pass --max-seconds {math.ceil(seconds)} or more (or fewer --iterations) to run "
            f"it anyway"
        )


# ---------------------------------------------------------------------- demo helpers
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
        module = _load_module(args.module, unsafe=args.unsafe_unpickle)
        if args.dtype is not None:
            module = module.to(_DTYPES[args.dtype])
        op = from_module(module, args.input_shape)
        _require_finite(op.weight.detach().numpy(), f"the weight of module {args.module!r}")
        return op, f"module {args.module}"
    if args.unsafe_unpickle:
        raise ValueError("--unsafe-unpickle applies to --module only")
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


def _build_progress(quiet: bool) -> bool | None:
    """``tosparse``'s ``progress``: its own choice (long builds) on a terminal, else off."""
    terminal = sys.stderr is not None and sys.stderr.isatty()
    return None if terminal and not quiet else False


def _run_matrix(args: argparse.Namespace) -> int:
    from .matrix_io import FORMATS, save_matrix

    output = _output_path(args.output, tuple(FORMATS), "OUTPUT")
    op, source = _build_operator(args)
    m, n = op.shape
    matrix = op.tosparse("csr", max_bytes=args.max_bytes, progress=_build_progress(args.quiet))
    save_matrix(output, matrix, comment=repr(op))
    print(
        f"{op.name} from {source}: input {op.input_shape} -> output {op.output_shape}, "
        f"{op.geometry.describe()}, {op.dtype}"
    )
    print(f"wrote {output} ({FORMATS[output.suffix.lower()]})")
    print(f"  shape    {m} x {n}")
    print(f"  nnz      {matrix.nnz}")
    print(f"  density  {matrix.nnz / (m * n):.3g}")
    print(f"  file     {format_bytes(output.stat().st_size)}")
    if op.bias is not None:
        print(
            "note: the layer's bias is not part of the (linear) matrix and is not saved: "
            "the layer computes B @ x + bias, with bias its per-channel bias repeated "
            "over the output positions (op.bias in Python)"
        )
    return 0


def _blur_weight(spec: str) -> np.ndarray:
    """The deblur kernel as a finite float64 ``(1, 1, kh, kw)`` weight, not all zeros."""
    weight = _as_weight(load_kernel(spec), 2, "float64", spec)
    if weight.shape[:2] != (1, 1):
        raise ValueError(f"kernel {spec!r} must have one channel, got shape {weight.shape}")
    if not weight.any():
        raise ValueError(
            f"kernel {spec!r} is all zeros: it blurs every image to 0, so there is nothing "
            f"to recover"
        )
    return weight


def _warn_unless_normalised(weight: np.ndarray, spec: str) -> None:
    """Warn when the kernel does not sum to 1: the result's brightness then scales."""
    total = float(weight.sum())
    if abs(total) <= _SUM_TOLERANCE * float(np.abs(weight).sum()):
        _warn(
            f"kernel {spec!r} sums to 0: it removes the image's mean brightness, which the "
            f"result cannot recover (the damping pulls it towards 0)"
        )
    elif abs(total - 1) > _SUM_TOLERANCE:
        _warn(
            f"kernel {spec!r} sums to {total:.6g}, not 1: the result's brightness scales by "
            f"its inverse ({1 / total:.6g}); divide the kernel by its sum to keep it"
        )


def _blur_operator(
    weight: np.ndarray, shape: tuple[int, ...], args: argparse.Namespace
) -> ConvOperator:
    """The blur of one ``(H, W, C)`` image's channel, after the memory and time guards."""
    height, width, channels = shape
    op = conv2d(weight, (1, height, width), padding="same", padding_mode=args.padding_mode)
    _check_deblur(op.geometry, op.method, channels, args)  # building it allocated nothing
    return op


def _deblur_channel(
    op: ConvOperator, b: np.ndarray, label: str, args: argparse.Namespace
) -> tuple[np.ndarray, str]:
    """lsqr on one channel ``b`` (flattened): the solution and its report line."""
    x, istop, itn, r1norm, seconds = _solve(
        "lsqr",
        op,
        b,
        damp=args.damp,
        iterations=args.iterations,
        quiet=args.quiet,
        exact_count=False,
        label=label,
    )
    relative = r1norm / max(float(np.linalg.norm(b)), np.finfo(float).tiny)
    stopped = _STOPS.get(istop, f"istop={istop}")
    return x, (
        f"{label}: {itn} iterations ({stopped}), {seconds:.2f} s, damp {args.damp:g}, "
        f"residual |b - A x| / |b| = {relative:.3g}"
    )


def _run_deblur(args: argparse.Namespace) -> int:
    suffix = ".npy" if Path(args.image).suffix.lower() == ".npy" else ".png"
    default = Path(f"{Path(args.image).stem}-deblurred{suffix}")
    output = _output_path(args.output or str(default), (".png", ".npy"), "--output")
    weight = _blur_weight(args.kernel)  # (1, 1, kh, kw)
    image = _read_image(args.image)
    height, width, channels = image.pixels.shape
    op = _blur_operator(weight, image.pixels.shape, args)
    _warn_unless_normalised(weight, args.kernel)
    labels = ["lsqr"] if channels == 1 else [f"lsqr {name}" for name in _CHANNELS]
    result = np.empty_like(image.pixels)  # (H, W, C)
    reports = []
    for c, label in enumerate(labels):
        x, report = _deblur_channel(op, image.pixels[..., c].ravel(), label, args)
        result[..., c] = x.reshape(height, width)
        reports.append(report)
    _write_image(output, result, image)
    print(
        f"deblurred {args.image} ({height} x {width}, {'gray' if channels == 1 else 'RGB'}) "
        f"with kernel {args.kernel} {weight.shape[2:]}, {args.padding_mode} padding"
    )
    print("\n".join(reports))
    if image.alpha:
        print("note: the image's alpha channel is dropped: not deblurred and not written")
    print(f"wrote {output}")
    return 0


# ---------------------------------------------------------------------- parser
_MAIN_EPILOG = """\
examples:
  convop demo                                  deblur the built-in phantom, write a figure
  convop matrix --kernel gaussian:5 --input-shape 1,64,64 B.mtx
  convop deblur photo.png --kernel motion:9:30 --output sharp.png
  convop SUBCOMMAND --help                     options of one subcommand

exit status:
  0 success, 2 bad arguments, bad or refused input and the memory/time guards,
  1 unexpected failures (inside torch, or a bug), 130 interrupted; every failure is
  one line "convop: error: ..." on stderr
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
or a conv module saved with torch.save(module). Prints shape, nnz, density and file size.

Module files are read with torch.load(weights_only=True): only torch's own nn.Conv1d/2d/3d
and nn.ConvTranspose1d/2d/3d (no subclasses), tensors and plain data; nothing in the file
is run. Matrices over the memory limit are refused before they are built; a progress bar
shows for long builds, on a terminal only."""

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
Deblur an image: solve min |A x - b|^2 + damp^2 |x|^2 with scipy's lsqr for each colour
channel, where A is the blur (convop.conv2d with padding "same") and b the channel.
PNG/JPEG files are read with Pillow (values scaled to [0, 1]; gray stays gray, RGB(A) is
deblurred per channel, alpha dropped); a .npy file holds an (H, W) gray or (H, W, 3) colour
array. The result is written as .npy (raw values, the input's shape) or .png (gray: 8-bit,
or 16-bit for a 16-bit input; colour: RGB; images read from files keep their [0, 1] scale
with overshoot clipped, other data are mapped from their own range).

Refused before solving: NaN or Inf pixels or kernel values, an all-zero kernel, and
problems whose estimated memory exceeds --max-bytes or whose estimated time exceeds
--max-seconds. A kernel that does not sum to 1 is used with a warning: the result's
brightness scales by the inverse of its sum."""

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
        "torch.save(module), read with torch.load(weights_only=True): other classes "
        "are refused and nothing in the file is run",
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
    matrix.add_argument(
        "--unsafe-unpickle",
        action="store_true",
        help="read --module with full unpickling (torch.load(weights_only=False)), for a "
        "file the safe reader refuses (e.g. a conv subclass): this CAN RUN ARBITRARY CODE "
        "from the file; use only files you trust",
    )
    matrix.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown on a terminal only)"
    )
    matrix.add_argument("output", metavar="OUTPUT", help="file to write: .npz or .mtx")
    matrix.set_defaults(run=_run_matrix)

    deblur = commands.add_parser(
        "deblur",
        help="deblur a gray or colour image (PNG, JPEG or .npy) with lsqr",
        description=_DEBLUR_DESCRIPTION,
        epilog=_DEBLUR_EPILOG,
        formatter_class=_Formatter,
    )
    deblur.add_argument(
        "image", metavar="IMAGE", help="PNG or JPEG file, or .npy of shape (H, W) or (H, W, 3)"
    )
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
        help="most lsqr iterations per channel (default 100)",
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
    deblur.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=None,
        metavar="N",
        help="refuse to deblur when the estimated memory exceeds N, e.g. 2G "
        "(default: half the memory available)",
    )
    deblur.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=600.0,
        metavar="S",
        help="refuse to deblur when convop's cost model expects the solve to take longer "
        "(default 600 s)",
    )
    deblur.add_argument("--quiet", action="store_true", help="no progress bars")
    deblur.set_defaults(run=_run_deblur)
    return parser


# ---------------------------------------------------------------------- entry point
def _fail(message: object, status: int = EXIT_USAGE) -> int:
    """Print ``message`` as one line ``convop: error: ...`` on stderr; return ``status``."""
    text = _one_line(message) or type(message).__name__
    text = text.replace("pass max_bytes=", "pass --max-bytes ").replace(
        "(max_bytes)", "(--max-bytes)"
    )
    print(f"convop: error: {text}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each Python warning as one line ``convop: warning: CATEGORY: message``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        _warn(f"{category.__name__}: {message}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convop`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success (``--help`` and ``--version`` included); 2 for bad
        arguments, missing, damaged or refused files, configurations convop rejects and the
        guards (memory, expected time); 1 for unexpected failures (inside torch, such as an
        allocation that fails, or a bug); 130 when interrupted. Every failure is one line
        ``convop: error: ...`` on stderr (unexpected ones name the exception type), never a
        traceback.

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
    try:
        with _one_line_warnings():
            args = build_parser().parse_args(argv)
            return args.run(args)
    except SystemExit as exit_:  # argparse's --help and --version
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except _UsageError as error:
        return _fail(error)
    except KeyboardInterrupt:
        print("convop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, MemoryError, OSError) as error:  # refused input, guards
        return _fail(error)
    except Exception as error:  # unexpected: still one line, naming what failed
        return _fail(f"{type(error).__name__}: {error}", EXIT_FAILURE)


if __name__ == "__main__":
    raise SystemExit(main())
