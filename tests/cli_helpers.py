"""What the tests of the ``convop`` command share: running it in-process, files that
would run code, a terminal stderr, a fixed cost estimate."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shlex
from pathlib import Path

import numpy as np
import torch

import convop
from convop import cli
from convop._auto import calibrate as _calibrate
from convop._auto import cost as _cost
from convop._auto import probe as _probe
from convop.data import gaussian_kernel, phantom
from convop.operator import ConvOperator, Estimate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit status, stdout, stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def command(line: str, **values: object) -> list[str]:
    """The words of the command ``line``, split as a shell does, with ``{name}`` in each word
    replaced by ``values[name]`` (``{tmp}``: the test's ``tmp_path``).

    >>> command("matrix {tmp}/B.npz --input-shape 1,8,8", tmp="/my dir")
    ['matrix', '/my dir/B.npz', '--input-shape', '1,8,8']
    """
    return [word.format(**values) for word in shlex.split(line)]


def run_line(capsys, line: str, **values: object) -> tuple[int, str, str]:
    """:func:`run` of the command ``line`` (:func:`command`): exit status, stdout, stderr."""
    return run(capsys, *command(line, **values))


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


def estimate_as(monkeypatch, estimate: Estimate, method: str | None = None) -> None:
    """Make every ``op.estimate()`` return ``estimate`` (and ``op.method`` be ``method``).

    The products still run by the method ``'auto'`` picks: only what the guards read changes.
    """
    monkeypatch.setattr(ConvOperator, "estimate", lambda self, batch=1: estimate)
    if method is not None:
        monkeypatch.setattr(ConvOperator, "method", property(lambda self: method))


def slow_machine(dtype: torch.dtype, device: torch.device, seconds: float = 1.0):
    """The built-in constants, but each call (direct or FFT) costing ``seconds`` more."""
    speed = _cost.builtin(dtype, device)
    return dataclasses.replace(
        speed,
        conv=dataclasses.replace(speed.conv, call=seconds),
        transpose=dataclasses.replace(speed.transpose, call=seconds),
        call_fft=seconds,
    )


def calibrating(monkeypatch, cache: Path, probe=slow_machine) -> list:
    """Calibration on as in a fresh process, cache files in ``cache``, and the probe replaced.

    ``probe(dtype, device)`` stands for the measurement (default :func:`slow_machine`); the
    list returned records its calls. Everything is restored after the test.
    """
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(cache))
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    monkeypatch.setattr(_calibrate, "generation", _calibrate.generation)
    calls = []

    def counted(dtype, device):
        calls.append((dtype, device))
        return probe(dtype, device)

    monkeypatch.setattr(_probe, "probe", counted)
    return calls
