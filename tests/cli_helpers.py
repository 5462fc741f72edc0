"""What the tests of the ``convop`` command share: running it in-process, files that
would run code, a terminal stderr."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

import convop
from convop import cli
from convop.data import gaussian_kernel, phantom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit status, stdout, stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def table_psnr(out: str, label: str) -> float:
    """The PSNR column of one row of the demo's table."""
    return float(re.search(rf"^{re.escape(label)}\s+([\d.]+)", out, re.MULTILINE).group(1))


class MakesDirectory:
    """Unpickling this calls ``os.mkdir(path)``: a stand-in for any code a file could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def conv_with_payload(marker: Path) -> torch.nn.Conv2d:
    """A real Conv2d whose ``__dict__`` hides a :class:`MakesDirectory`."""
    layer = torch.nn.Conv2d(1, 1, 3, dtype=torch.float64)
    layer.__dict__["payload"] = MakesDirectory(marker)
    return layer


class SubConv(torch.nn.Conv2d):
    """Computes what nn.Conv2d computes, but is not one of the classes --module may hold."""


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def out_of_memory(*args, **kwargs):
    raise RuntimeError(
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000000000 "
        "bytes.\nError code 12 (Cannot allocate memory)"
    )


def as_uint(image: np.ndarray, bits: int) -> np.ndarray:
    """``image`` in [0, 1] as unsigned samples of ``bits`` bits."""
    dtype = np.uint16 if bits == 16 else np.uint8
    return np.round(np.clip(image, 0, 1) * (2**bits - 1)).astype(dtype)


def blurred_phantom(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, blurred)``: the phantom and its gaussian:5 blur (reflect, 'same')."""
    truth = phantom(n)
    op = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, n, n), padding="same", padding_mode="reflect"
    )
    return truth, (op @ truth.ravel()).reshape(n, n)
