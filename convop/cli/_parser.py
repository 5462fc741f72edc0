"""The parser's pieces: its class, the argument types, and the errors and one-line messages.

Every subcommand module adds its own options with these types; ``convop.cli.build_parser``
puts the subcommands together.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..geometry import PADDING_STRINGS
from ..imaging import load_kernel, require_finite

#: ``--dtype`` choices: the real dtypes a kernel may be cast to.
DTYPES = ("float32", "float64")


class CommandError(Exception):
    """Bad input or a guard, said by the command itself: one error line, exit status 2."""


class UsageError(CommandError):
    """Bad command-line syntax, as argparse reports it."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line pointing at the right ``--help``."""

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


def positive_int(text: str) -> int:
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


def positive_float(text: str) -> float:
    return _float(text, positive=True)


def non_negative_float(text: str) -> float:
    return _float(text, positive=False)


def damping(text: str) -> float | str:
    """``--damp``: a float >= 0, or a rule that chooses it from the data."""
    if text.strip().lower() in ("gcv", "discrepancy"):
        return text.strip().lower()
    try:
        return _float(text, positive=False)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0, 'gcv' or 'discrepancy', got {text!r}"
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
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 1000000, 512K, 64M or 2G, got {text!r}"
        )
    return int(value * units[unit])


# ---------------------------------------------------------------------- kernels
def kernel_weight(spec: str, ndim: int, dtype: str | None) -> np.ndarray:
    """The ``--kernel`` as a finite weight in PyTorch's layout ``(C_out, C_in/groups, *k)``.

    For ``ndim`` spatial dimensions, cast to ``dtype`` (default: as stored, integers and
    built-in kernels as float64).
    """
    kernel = load_kernel(spec)
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
