"""``convop calibrate``: measure this machine's constants for ``method='auto'``.

A thin layer over :func:`convop.calibrate`, one precision at a time so that each one's
result is printed as it is kept: how long the probe took, the cache file written, and what
the new constants estimate for two typical products (a conv layer and a large blur), beside
what was estimated before. Only the public :meth:`~convop.ConvOperator.estimate` is read.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

from .. import calibrate, constructors
from ..operator import Estimate
from ._parser import CommandError, CommandFailure, device_name, one_line, warn

#: ``--dtype`` choices: each names a precision (complex64 is float32's, complex128 float64's).
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.float32,
    "complex128": torch.float64,
}
#: The products whose estimates are shown: (what, weight shape, input shape, padding).
TYPICAL = (
    ("3x3 layer, 64 -> 64 channels, 56 x 56", (64, 64, 3, 3), (64, 56, 56), 1),
    ("31x31 blur, 512 x 512", (1, 1, 31, 31), (1, 512, 512), "same"),
)

NAME = "calibrate"
HELP = "measure this machine's constants for method='auto' and keep them in a cache file"

DESCRIPTION = """\
Measure this machine's constants for convop's cost model, which method="auto" uses to
choose between direct and FFT products (and convop deblur to estimate its time), and keep
them in a cache file that later processes read. A short probe per precision (small direct
convolutions both ways and small FFT products; about half a second each on a 2-core CPU).
Until a calibration, "auto" uses built-in constants measured on convop's development
machine; nothing else in convop measures this machine or writes the file.

Cache files are JSON, one per machine, device type and precision, in $CONVOP_CACHE_DIR,
else $XDG_CACHE_HOME/convop, else ~/.cache/convop, and are used only on the machine, thread
count and torch version that wrote them: calibrate again after changing any of them.
CONVOP_CALIBRATE=0 makes "auto" ignore calibrations. Prints, for each precision, the time
the probe took, the file written, and the estimates of two typical products before and
after. A machine kept busy by other processes during the probe is not measured: nothing is
kept for that precision, and the command ends with exit status 1."""

EPILOG = """\
examples:
  convop calibrate                          the CPU, float32 and float64
  convop calibrate --dtype float64
  convop calibrate --device cuda            the first CUDA GPU, both precisions
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop calibrate``'s options."""
    parser.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        metavar="DEVICE",
        help="cpu (default), cuda or cuda:N",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="the precision to measure (complex64 is float32's, complex128 float64's; "
        "default: float32 and float64)",
    )


def _usable(device: torch.device) -> torch.device:
    """``device``, refused where torch has no such GPU."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise CommandError(
                f"--device {device}: torch sees {count} CUDA GPU{'s' * (count != 1)} here"
            )
    return device


def _estimates(device: torch.device, dtype: torch.dtype) -> list[Estimate]:
    """What ``op.estimate()`` says now of each :data:`TYPICAL` product."""
    found = []
    for _, weight, shape, padding in TYPICAL:
        zeros = torch.zeros(weight, dtype=dtype, device=device)  # (C_out, C_in, kh, kw)
        found.append(constructors.conv2d(zeros, shape, padding=padding).estimate())
    return found


def _measure(device: torch.device, dtype: torch.dtype) -> Path:
    """:func:`convop.calibrate` for one precision: the cache file written.

    A file that could not be written is refused (the constants would end with this
    process); other warnings are shown, one line each.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = calibrate(device, dtype)[dtype]
        except RuntimeError as error:  # the machine was too busy, or torch failed
            raise CommandFailure(f"calibrating {device} failed: {error}") from None
    unwritten = [w for w in caught if path is None and issubclass(w.category, RuntimeWarning)]
    for shown in caught:
        if shown not in unwritten:
            warn(f"{shown.category.__name__}: {shown.message}")
    if path is None:
        why = one_line(unwritten[-1].message) if unwritten else "no cache file"
        raise CommandError(
            f"{why} (which ends now: nothing is kept); set CONVOP_CACHE_DIR to a directory "
            f"you can write"
        )
    return path


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def run(args: argparse.Namespace) -> int:
    device = _usable(args.device)
    precisions = (torch.float32, torch.float64) if args.dtype is None else (DTYPES[args.dtype],)
    names = ", ".join(_name(dtype) for dtype in precisions)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"torch's {torch.get_num_threads()} threads"
    before = {dtype: _estimates(device, dtype) for dtype in precisions}  # and any refusal
    print(f"calibrating {device} ({what}): {names}", flush=True)
    for dtype in precisions:
        start = time.perf_counter()
        path = _measure(device, dtype)
        took = time.perf_counter() - start
        print(f"{_name(dtype)}: measured in {took:.2g} s, written to {path}", flush=True)
        after = _estimates(device, dtype)
        for (product, *_), was, now in zip(TYPICAL, before[dtype], after):
            print(f"  {product}: {now} (before: {was})")
        if after[0].source != "calibrated":
            switch = os.environ.get("CONVOP_CALIBRATE", "")
            warn(
                f"CONVOP_CALIBRATE={switch}: method='auto' ignores calibrations until it is "
                f"unset or 1; the file is kept for then"
            )
    return 0
