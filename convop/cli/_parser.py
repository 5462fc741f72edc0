"""The parser's pieces: its class, the argument types, and the errors and one-line messages.

Every subcommand module adds its own options with these types; ``convop.cli.build_parser``
puts the subcommands together.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..geometry import PADDING_STRINGS
from ..imaging import load_kernel, require_finite

#: ``--dtype`` choices: the real dtypes a kernel may be cast to.
DTYPES = ("float32", "float64")
#: The largest Tikhonov damping, for a kernel of scale 1 (|A| <= 1). Beyond it the damping
#: alone decides the result: (A^T A + damp^2 I)^-1 A^T b is A^T b / damp^2 to a relative
#: |A|^2 / damp^2 <= 1e-16, float64's precision, and its square leaves the solvers' range.
MAX_DAMP = 1e8


class CommandError(Exception):
    """Bad input or a guard, said by the command itself: one error line, exit status 2."""


class UsageError(CommandError):
    """Bad command-line syntax, as argparse reports it."""


class CommandFailure(Exception):
    """A failure of the work itself, said by the command: one error line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line pointing at the right ``--help``.

    It takes no abbreviations (``allow_abbrev=False``), and nor do its subcommands' parsers
    (``add_subparsers`` makes them of this class): ``--output`` is never read as
    ``--output-padding``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str):  # argparse's hook: must not return
        raise UsageError(f"{message} (see '{self.prog} --help')")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and example epilogs."""


# ---------------------------------------------------------------------- messages
def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def warn(text: str) -> None:
    """``convop: warning: ...`` on stderr, one line."""
    print(f"convop: warning: {one_line(text)}", file=sys.stderr)


@contextlib.contextmanager
def concerning(what: str) -> Iterator[None]:
    """Report a library error raised inside, prefixed by ``what``.

    A ``ValueError``, ``TypeError`` or ``MemoryError`` keeps its own message, prefixed by
    ``what`` (the option or input it is about).
    """
    try:
        yield
    except (ValueError, TypeError, MemoryError) as error:
        raise CommandError(f"{what}: {error}") from None


def refuse_overwriting(output: Path, what: str, inputs: dict[str, str | None]) -> None:
    """Refuse an ``output`` that is one of the ``inputs`` (``{description: path}``).

    The same file under any name: the same path, a symbolic link to it or a hard link
    (:func:`os.path.samefile`). An output that does not exist yet is no input.
    """
    for description, given in inputs.items():
        if given is None:
            continue
        try:
            same = output.exists() and os.path.samefile(output, given)
        except OSError:  # the input is no file (a kernel spec such as gaussian:9)
            same = False
        if same:
            raise CommandError(
                f"{what} {str(output)!r} is {description} {given!r}: writing it would "
                f"overwrite the input; choose another file name"
            )


def output_path(text: str, suffixes: tuple[str, ...], what: str) -> Path:
    """``text`` as a path to write, checked before any work: its suffix and directory."""
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise CommandError(f"{what} must end in {' or '.join(suffixes)}, got {text!r}")
    if not path.parent.is_dir():
        raise CommandError(f"directory of {what} {text!r} does not exist")
    return path


# ---------------------------------------------------------------------- argument types
def _ints(text: str, what: str, *, minimum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def int_or_tuple(text: str) -> int | tuple[int, ...]:
    """``"2"`` -> ``2``, ``"2,1"`` -> ``(2, 1)`` (non-negative; convop checks the rest)."""
    values = _ints(text, "a non-negative int or comma-separated ints such as 2 or 2,1", minimum=0)
    return values[0] if len(values) == 1 else values


def padding(text: str) -> int | tuple[int, ...] | str:
    """``same``, ``valid`` or :func:`int_or_tuple`."""
    return text if text in PADDING_STRINGS else int_or_tuple(text)


def input_shape(text: str) -> tuple[int, ...]:
    """``C,H[,W[,D]]``: 2 to 4 positive ints."""
    values = _ints(text, "C,H[,W[,D]]: 2 to 4 positive ints such as 1,64,64", minimum=1)
    if not 2 <= len(values) <= 4:
        raise argparse.ArgumentTypeError(
            f"expected C,H[,W[,D]]: 2 to 4 positive ints such as 1,64,64, got {text!r} "
            f"({len(values)} values)"
        )
    return values


def device_name(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``: a device convop can calibrate.

    Whether torch sees that GPU is checked when the command runs.
    """
    try:
        device = torch.device(text)
    except RuntimeError:  # not a device's name at all
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return device


def positive_int(text: str) -> int:
    values = _ints(text, "a positive int", minimum=1)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return values[0]


def _float(text: str, *, positive: bool, maximum: float = math.inf) -> float:
    """A finite number, > 0 (``positive``) or >= 0, at most ``maximum``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    above = value > 0 if positive else value >= 0  # False for NaN
    if not (above and math.isfinite(value) and value <= maximum):
        if math.isfinite(maximum):
            expected = f"a number {'above 0, at most' if positive else 'from 0 to'} {maximum:g}"
        else:
            expected = "a finite positive number" if positive else "a finite number >= 0"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _float(text, positive=True)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _float(text, positive=False)


def fraction(text: str) -> float:
    """A number from 0 to 1."""
    return _float(text, positive=False, maximum=1.0)


def damp_value(text: str) -> float:
    """A Tikhonov damping: a number from 0 to :data:`MAX_DAMP`."""
    return _float(text, positive=False, maximum=MAX_DAMP)


def damping(text: str) -> float | str:
    """``--damp``: a number from 0 to :data:`MAX_DAMP`, or a rule that chooses it."""
    if text.strip().lower() in ("gcv", "discrepancy"):
        return text.strip().lower()
    try:
        return damp_value(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to {MAX_DAMP:g}, 'gcv' or 'discrepancy', got {text!r}"
        ) from None


def byte_count(text: str) -> int:
    """``"1000"``, ``"512K"``, ``"64M"``, ``"2G"`` (binary multiples) -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = body[-1:] if body[-1:] in units else ""
    try:
        value = float(body[: len(body) - len(unit)])
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 1000000, 512K, 64M or 2G, got {text!r}"
        )
    return int(value * units[unit])


# ---------------------------------------------------------------------- kernels
def kernel_weight(
    spec: str, ndim: int, dtype: str | None, max_bytes: int | None = None
) -> np.ndarray:
    """The ``--kernel`` as a finite weight in PyTorch's layout ``(C_out, C_in/groups, *k)``.

    For ``ndim`` spatial dimensions, cast to ``dtype`` (default: as stored, integers and
    built-in kernels as float64); a built-in kernel over ``max_bytes`` is refused.
    """
    try:
        kernel = load_kernel(spec, max_bytes=max_bytes)
    except MemoryError as error:  # the guard of a built-in kernel
        raise CommandError(f"--max-bytes: {error}" if max_bytes is not None else error) from None
    if kernel.ndim not in (ndim, ndim + 2):
        raise CommandError(
            f"kernel {spec!r} has shape {kernel.shape}, but the input has {ndim} spatial "
            f"dimension{'s' * (ndim > 1)}: expected a kernel with {ndim} dimension"
            f"{'s' * (ndim > 1)} (one channel) or {ndim + 2} (C_out, C_in/groups, *kernel)"
        )
    if dtype is not None:
        kernel = kernel.astype(dtype)
    elif kernel.dtype.kind not in "fc":
        kernel = kernel.astype(np.float64)
    require_finite(kernel, f"kernel {spec!r}")
    return kernel[None, None] if kernel.ndim == ndim else kernel  # one channel in, one out
