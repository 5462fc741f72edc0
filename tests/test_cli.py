"""What every ``convop`` subcommand promises, run in-process through ``convop.cli.main``.

Matrices written by ``convop matrix`` are compared with ``op.tosparse()`` of the operator built
directly, and through it with torch's own layers; every error path must end in one line
``convop: error: ...`` and exit status 2 (1 for unexpected failures), never a traceback.
``--module`` files that would run code when unpickled must be refused without running it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

import convop
from convop import cli
from convop.data import gaussian_kernel, phantom

from .cli_helpers import (
    DOCS,
    SubConv,
    as_uint,
    blurred_phantom,
    out_of_memory,
    run,
)


# ---------------------------------------------------------------------- never over an input
def _same_path(tmp: Path, target: Path, suffix: str) -> Path:
    return target


def _symlink(tmp: Path, target: Path, suffix: str) -> Path:
    (tmp / "link").mkdir()
    link = tmp / "link" / f"out{suffix}"  # in another directory, and a relative link
    link.symlink_to(os.path.relpath(target, link.parent))
    return link


def _hard_link(tmp: Path, target: Path, suffix: str) -> Path:
    link = tmp / f"hard{suffix}"
    os.link(target, link)
    return link


class OverwriteCase(NamedTuple):
    argv: tuple[str, ...]  # "{tmp}" is the test's tmp_path, "{out}" the output
    victim: str  # the input the output reaches
    suffix: str  # the output's suffix, which the subcommand requires
    what: str  # how the error names the output and the input


_DEBLUR = ("deblur", "{tmp}/image.npy", "--iterations", "1", "--quiet")
OVERWRITE_CASES = {
    "deblur image": OverwriteCase(
        (*_DEBLUR, "--output", "{out}"), "image.npy", ".npy",
        r"--output '.*' is the input image '.*image\.npy'",
    ),
    "deblur kernel": OverwriteCase(
        (*_DEBLUR, "--kernel", "{tmp}/kernel.npy", "--output", "{out}"), "kernel.npy", ".npy",
        r"--output '.*' is the kernel file '.*kernel\.npy'",
    ),
    "matrix kernel": OverwriteCase(  # a kernel.npy reached by an OUTPUT named .npz
        ("matrix", "--kernel", "{tmp}/kernel.npy", "--input-shape", "1,8,8", "{out}"),
        "kernel.npy", ".npz", r"OUTPUT '.*' is the kernel file '.*kernel\.npy'",
    ),
    "matrix module": OverwriteCase(  # torch.save takes any name
        ("matrix", "--module", "{tmp}/layer.npz", "--input-shape", "1,8,8", "{out}"),
        "layer.npz", ".npz", r"OUTPUT '.*' is the module file '.*layer\.npz'",
    ),
}  # fmt: skip
OVERWRITES = [
    pytest.param(case, name, id=f"{key} by {label}")
    for key, case in OVERWRITE_CASES.items()
    for label, name in {
        "its name": _same_path,
        "symlink": _symlink,
        "hard link": _hard_link,
    }.items()
    if case.victim.endswith(case.suffix) or name is not _same_path
]


@pytest.mark.parametrize(("case", "name"), OVERWRITES)
def test_output_that_is_an_input_is_refused(tmp_path, capsys, case, name):
    """Issue 24, item 10: by its own name, a symbolic link or a hard link, exit status 2."""
    np.save(tmp_path / "image.npy", phantom(16))
    np.save(tmp_path / "kernel.npy", gaussian_kernel(3))
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "layer.npz")
    victim = tmp_path / case.victim
    before = victim.read_bytes()
    out = name(tmp_path, victim, case.suffix)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{out}", str(out)) for a in case.argv]
    code, stdout, err = run(capsys, *argv)
    assert (code, stdout) == (2, "")
    assert re.fullmatch(rf"convop: error: {case.what}: writing it would overwrite the input; "
                        rf"choose another file name\n", err), err  # fmt: skip
    assert victim.read_bytes() == before


SCALES = {"2**996": 2.0**996, "2**-1000": 2.0**-1000}


@pytest.mark.parametrize("method", ["tv", "tikhonov"])
@pytest.mark.parametrize("scale", SCALES.values(), ids=SCALES)
def test_deblur_of_scaled_data_is_the_scaled_result(tmp_path, capsys, scale, method):
    """Issue 24, item 11: pixels near 1e300 (or 1e-300) deblur as pixels near 1 do.

    A .npy array carries no absolute scale: scaling it by a power of two scales the result
    by the same, to the last bit (the damping and the TV weight are chosen from the data).
    """
    truth, blurred = blurred_phantom(24)
    noisy = blurred + 0.01 * np.random.default_rng(3).standard_normal(blurred.shape)
    np.save(tmp_path / "unit.npy", noisy)
    np.save(tmp_path / "scaled.npy", noisy * scale)
    common = ("--kernel", "gaussian:5", "--method", method, "--iterations", "5", "--quiet")
    for name in ("unit", "scaled"):
        code, _, err = run(capsys, "deblur", tmp_path / f"{name}.npy", *common, "--output",
                           tmp_path / f"{name}-out.npy")  # fmt: skip
        assert (code, err) == (0, ""), err
    unit = np.load(tmp_path / "unit-out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "scaled-out.npy"), unit * scale)
    assert np.linalg.norm(unit - truth) < np.linalg.norm(noisy - truth)


# ---------------------------------------------------------------------- errors
class ErrorCase(NamedTuple):
    argv: str  # the command line after "convop"; "{tmp}" is the test's tmp_path
    match: str


MATRIX = "matrix {tmp}/B.npz --input-shape 1,8,8"
DEMO = "demo --image phantom --size 16 --iterations 1 --no-figure --quiet"
ERROR_CASES = {
    "unknown subcommand": ErrorCase("bogus", r"invalid choice: 'bogus'"),
    "no subcommand": ErrorCase("", r"required: SUBCOMMAND"),
    "unknown option": ErrorCase("demo --fast", r"unrecognized arguments: --fast"),
    "bad kernel spec": ErrorCase(
        MATRIX + " --kernel box:3", r"unknown kernel 'box:3': expected KERNEL.npy, gaussian"
    ),
    "bad kernel parameters": ErrorCase(
        MATRIX + " --kernel gaussian:x", r"expected gaussian:SIZE\[:SIGMA\]"
    ),
    "even gaussian": ErrorCase(
        MATRIX + " --kernel gaussian:4",
        r"^convop: error: kernel 'gaussian:4': size must be odd, got size=4$",
    ),
    "kernel of wrong ndim": ErrorCase(
        "matrix --input-shape 1,8 --kernel gaussian:3 {tmp}/B.npz",
        r"input has 1 spatial dimension: expected",
    ),
    "input shape not ints": ErrorCase(
        "matrix --kernel gaussian:3 --input-shape 1,x {tmp}/B.npz", r"--input-shape: expected C,H"
    ),
    "input shape too long": ErrorCase(
        "matrix --kernel gaussian:3 --input-shape 1,2,3,4,5 {tmp}/B.npz", r"\(5 values\)"
    ),
    "missing kernel file": ErrorCase(
        MATRIX + " --kernel {tmp}/nope.npy", r"kernel file not found: '.*nope.npy'"
    ),
    "missing module file": ErrorCase(MATRIX + " --module {tmp}/nope.pt", r"module file not found"),
    "module file not a pickle": ErrorCase(
        MATRIX + " --module {tmp}/junk.pt",
        r"cannot load a torch module from '.*junk.pt' \(damaged, or not written by "
        r"torch.save\): \w+Error: ",
    ),
    "module file of junk bytes": ErrorCase(
        MATRIX + " --module {tmp}/bytes.pt",
        r"cannot load a torch module from '.*bytes.pt' \(damaged, or not written by torch.save\)",
    ),
    "truncated module file": ErrorCase(
        MATRIX + " --module {tmp}/truncated.pt",
        r"cannot load a torch module from .*: RuntimeError: PytorchStreamReader failed",
    ),
    "conv subclass": ErrorCase(
        MATRIX + " --module {tmp}/subclass.pt",
        r"refused to load '.*subclass.pt': it needs [\w.]*SubConv, .* --unsafe-unpickle",
    ),
    "unsafe unpickle with kernel": ErrorCase(
        MATRIX + " --kernel gaussian:3 --unsafe-unpickle",
        r"--unsafe-unpickle applies to --module only",
    ),
    "NaN module weight": ErrorCase(
        MATRIX + " --module {tmp}/nan-layer.pt",
        r"the weight of module '.*nan-layer.pt' has 9 non-finite values \(NaN or Inf\), "
        r"the first at index \(0, 0, 0, 0\)",
    ),
    "NaN kernel": ErrorCase(
        MATRIX + " --kernel {tmp}/nan-kernel.npy",
        r"kernel '.*nan-kernel.npy' has 1 non-finite value \(NaN or Inf\), the first at "
        r"index \(1, 2\)",
    ),
    "truncated kernel file": ErrorCase(
        MATRIX + " --kernel {tmp}/truncated.npy",
        r"cannot read kernel file '.*truncated.npy': Failed to read all data",
    ),
    "empty kernel file": ErrorCase(
        MATRIX + " --kernel {tmp}/empty.npy",
        r"cannot read kernel file '.*empty.npy': No data left in file",
    ),
    "kernel file holding an archive": ErrorCase(
        MATRIX + " --kernel {tmp}/archive.npy", r"must hold one numeric array, got an .npz archive"
    ),
    "huge input shape": ErrorCase(
        "matrix --kernel gaussian:5 --input-shape 1,100000000,100000000 {tmp}/B.npz",
        r"--max-bytes: tosparse\('csr'\) with 249999980000000400 nonzeros needs [\d.]+ TiB, "
        r"more than the "
        r"limit of",
    ),
    "huge input shape of a module": ErrorCase(
        "matrix --module {tmp}/layer.pt --input-shape 1,100000000,100000000 {tmp}/B.npz",
        r"--max-bytes: tosparse\('csr'\) with \d+ nonzeros needs [\d.]+ TiB",
    ),
    "state_dict": ErrorCase(
        MATRIX + " --module {tmp}/state.pt",
        r"got OrderedDict \(a state_dict holds no configuration",
    ),
    "conv option with module": ErrorCase(
        MATRIX + " --module {tmp}/layer.pt --stride 2", r"--stride cannot be used"
    ),
    "kernel and module": ErrorCase(
        MATRIX + " --kernel gaussian:3 --module {tmp}/layer.pt", r"not allowed with"
    ),
    "same with stride": ErrorCase(
        MATRIX + " --kernel gaussian:3 --padding same --stride 2",
        r"padding='same' requires stride=1",
    ),
    "channels mismatch": ErrorCase(
        "matrix --input-shape 3,8,8 --kernel gaussian:3 {tmp}/B.npz", r"input_shape\[0\]=3"
    ),
    "bad tuple option": ErrorCase(
        MATRIX + " --kernel gaussian:3 --stride 2,x", r"--stride: expected a non-negative int"
    ),
    "transposed reflect": ErrorCase(
        MATRIX + " --kernel gaussian:3 --transposed --padding-mode reflect", r"zeros only"
    ),
    "output padding untransposed": ErrorCase(
        MATRIX + " --kernel gaussian:3 --output-padding 1",
        r"--output-padding applies to --transposed",
    ),
    # the kernel, 216 B, fits: the matrix does not
    "max bytes too small": ErrorCase(
        MATRIX + " --kernel gaussian:3 --max-bytes 1000",
        r"^convop: error: --max-bytes: tosparse\('csr'\) with \d+ nonzeros needs [\d.]+ \w*B, "
        r"more than the limit of 1000 B \(max_bytes\); pass max_bytes=\d+ or more",
    ),
    "bad max bytes": ErrorCase(
        MATRIX + " --kernel gaussian:3 --max-bytes lots",
        r"--max-bytes: expected a number of bytes",
    ),
    "bad output suffix": ErrorCase(
        "matrix --input-shape 1,8,8 --kernel gaussian:3 {tmp}/B.txt",
        r"OUTPUT must end in .npz or .mtx",
    ),
    "missing output directory": ErrorCase(
        "matrix --input-shape 1,8,8 --kernel gaussian:3 {tmp}/no/B.npz", r"does not exist"
    ),
    "demo even kernel": ErrorCase(
        "demo --kernel-size 4 --no-figure",
        r"^convop: error: --kernel-size: size must be odd, got size=4$",
    ),
    "demo tiny image": ErrorCase(
        "demo --image phantom --size 4 --no-figure",
        r"^convop: error: --size: n must be >= 8, got n=4$",
    ),
    "demo zero iterations": ErrorCase(
        "demo --iterations 0", r"--iterations: expected a positive int, got '0'"
    ),
    "missing image": ErrorCase("deblur {tmp}/nope.png", r"image file not found"),
    "image neither gray nor RGB": ErrorCase(
        "deblur {tmp}/cube.npy",
        r"must have shape \(H, W\) \(gray\) or \(H, W, 3\) \(colour\), got \(4, 4, 4\)",
    ),
    "NaN and Inf pixels": ErrorCase(
        "deblur {tmp}/nan-image.npy",
        r"image '.*nan-image.npy' has 2 non-finite values \(NaN or Inf\), the first at row 3, "
        r"column 4$",
    ),
    "Inf in a colour channel": ErrorCase(
        "deblur {tmp}/inf-colour.npy",
        r"has 1 non-finite value \(NaN or Inf\), the first at row 0, column 1, channel 2$",
    ),
    "NaN deblur kernel": ErrorCase(
        "deblur {tmp}/image.npy --kernel {tmp}/nan-kernel.npy",
        r"kernel '.*nan-kernel.npy' has 1 non-finite value",
    ),
    "all-zero deblur kernel": ErrorCase(
        "deblur {tmp}/image.npy --kernel {tmp}/zero-kernel.npy",
        r"kernel '.*zero-kernel.npy' is all zeros: it blurs every image to 0",
    ),
    "truncated PNG": ErrorCase(
        "deblur {tmp}/truncated.png", r"cannot read image '.*truncated.png': .*truncated"
    ),
    "PNG that is no image": ErrorCase(
        "deblur {tmp}/junk.png", r"cannot read image '.*junk.png': cannot identify image"
    ),
    "nonneg with lsqr": ErrorCase(
        "deblur {tmp}/image.npy --method tikhonov --nonneg --solver lsqr",
        r"^convop: error: --nonneg solves tikhonov by ADMM with preconditioned cg steps; "
        r"--solver lsqr has no constraint \(leave --solver out\)$",
    ),
    "nonneg with compare": ErrorCase(
        "deblur {tmp}/image.npy --method tikhonov --nonneg --compare",
        r"^convop: error: --compare needs --method tikhonov and --solver pcg without --nonneg",
    ),
    "bad damping": ErrorCase(
        "deblur {tmp}/image.npy --damp lcurve",
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got 'lcurve'",
    ),
    "negative damping": ErrorCase(
        "deblur {tmp}/image.npy --damp -1",
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got '-1'",
    ),
    "bad tv weight": ErrorCase(
        "deblur {tmp}/image.npy --tv-weight 0",
        r"--tv-weight: expected a finite positive number, got '0'",
    ),
    "bad method": ErrorCase("deblur {tmp}/image.npy --method wiener", r"--method: invalid choice"),
    "bad max seconds": ErrorCase(
        "deblur {tmp}/image.npy --max-seconds 0",
        r"--max-seconds: expected a finite positive number, got '0'",
    ),
    # Issue 24, item 11: every number finite and in range, the option or field named.
    "NaN motion angle": ErrorCase(
        "deblur {tmp}/image.npy --kernel motion:9:nan",
        r"^convop: error: kernel 'motion:9:nan': ANGLE must be a finite number, got 'nan'$",
    ),
    "infinite gaussian sigma": ErrorCase(
        MATRIX + " --kernel gaussian:3:inf",
        r"^convop: error: kernel 'gaussian:3:inf': SIGMA must be a finite number, got 'inf'$",
    ),
    "gaussian over the memory limit": ErrorCase(
        MATRIX + " --kernel gaussian:101 --max-bytes 1000",
        r"^convop: error: --max-bytes: kernel 'gaussian:101' needs [\d.]+ KiB, more than the "
        r"limit of 1000 B \(max_bytes\); choose a smaller SIZE$",
    ),
    "damping too large": ErrorCase(
        "deblur {tmp}/image.npy --damp 1e308",
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got '1e308'",
    ),
    "damping too large for the kernel": ErrorCase(
        "deblur {tmp}/image.npy --kernel {tmp}/faint-kernel.npy --damp 1",
        r"^convop: error: --damp 1 is 1\.1e\+12 times the kernel's scale \(its sum of "
        r"\|values\|, about 2\*\*-40\), more than 1e\+08",
    ),
    "TV weight beyond float64 for the data": ErrorCase(
        "deblur {tmp}/huge-image.npy --tv-weight 1e-300",
        r"^convop: error: --tv-weight 1e-300 is too small for an image whose values reach "
        r"1e\+300 and a kernel summing to about 2\*\*0: it leaves float64's range$",
    ),
    "infinite max seconds": ErrorCase(
        "deblur {tmp}/image.npy --max-seconds inf",
        r"--max-seconds: expected a finite positive number, got 'inf'",
    ),
    "infinite max bytes": ErrorCase(
        MATRIX + " --kernel gaussian:3 --max-bytes inf",
        r"--max-bytes: expected a number of bytes such as 1000000, 512K, 64M or 2G, got 'inf'",
    ),
    "demo infinite sigma": ErrorCase(
        DEMO + " --sigma inf", r"--sigma: expected a finite positive number, got 'inf'"
    ),
    "demo noise out of range": ErrorCase(
        DEMO + " --noise 1e308", r"--noise: expected a number from 0 to 1, got '1e308'"
    ),
    "demo damping too large": ErrorCase(
        DEMO + " --damp 1e308", r"--damp: expected a number from 0 to 1e\+08, got '1e308'"
    ),
    "demo kernel larger than the image": ErrorCase(
        DEMO + " --kernel-size 99",
        r"^convop: error: --kernel-size 99 is too large for 16 x 16 pixels: reflect padding "
        r"needs half the kernel, 49, below the image's size \(at most 31\)$",
    ),
    "demo phantom over the memory limit": ErrorCase(
        "demo --image phantom --size 100000 --no-figure",
        r"^convop: error: --size: the demo on 100000 x 100000 pixels needs [\d.]+ TiB, more than "
        r"the limit of .*; pass a smaller --size$",
    ),
    "image output suffix": ErrorCase(
        "deblur {tmp}/cube.npy --output {tmp}/x.tif", r"--output must end in .png or .npy"
    ),
    "calibrate on no such device": ErrorCase(
        "calibrate --device tpu",
        r"--device: expected cpu, cuda or cuda:N, got 'tpu' \(see 'convop calibrate --help'\)$",
    ),
    "calibrate in no such precision": ErrorCase(
        "calibrate --dtype float16", r"--dtype: invalid choice: 'float16'"
    ),
    "multichannel deblur kernel": ErrorCase(
        "deblur {tmp}/image.npy --kernel {tmp}/w.npy", r"must have one channel"
    ),
}


@pytest.fixture
def error_files(tmp_path: Path) -> Path:
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "layer.pt")
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), tmp_path / "state.pt")
    torch.save(SubConv(1, 1, 3), tmp_path / "subclass.pt")
    nan_layer = torch.nn.Conv2d(1, 1, 3)
    torch.nn.init.constant_(nan_layer.weight, float("nan"))
    torch.save(nan_layer, tmp_path / "nan-layer.pt")
    whole = (tmp_path / "layer.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    (tmp_path / "bytes.pt").write_bytes(b"junk bytes here")
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4)))
    np.save(tmp_path / "image.npy", np.ones((8, 8)))
    np.save(tmp_path / "huge-image.npy", np.full((8, 8), 1e300))
    np.save(tmp_path / "faint-kernel.npy", gaussian_kernel(3) * 2.0**-40)
    nan_image = np.ones((8, 8))
    nan_image[3, 4], nan_image[5, 1] = np.nan, np.inf
    np.save(tmp_path / "nan-image.npy", nan_image)
    inf_colour = np.ones((8, 8, 3))
    inf_colour[0, 1, 2] = -np.inf
    np.save(tmp_path / "inf-colour.npy", inf_colour)
    np.save(tmp_path / "w.npy", np.zeros((2, 1, 3, 3)))
    nan_kernel = gaussian_kernel(3)
    nan_kernel[1, 2] = np.nan
    np.save(tmp_path / "nan-kernel.npy", nan_kernel)
    np.save(tmp_path / "zero-kernel.npy", np.zeros((3, 3)))
    np.save(tmp_path / "kernel.npy", gaussian_kernel(3))
    whole = (tmp_path / "kernel.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(whole[:-20])
    (tmp_path / "empty.npy").write_bytes(b"")
    with open(tmp_path / "archive.npy", "wb") as file:
        np.savez(file, kernel=gaussian_kernel(3))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "picture.png")
    whole = (tmp_path / "picture.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) - 30])
    (tmp_path / "junk.png").write_bytes(b"not a PNG")
    return tmp_path


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_is_one_line_with_exit_status_2(error_files, capsys, case):
    argv = [a.replace("{tmp}", str(error_files)) for a in shlex.split(case.argv)]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("convop: error: ")
    assert re.search(case.match, err), err


UNEXPECTED_CASES = {
    "demo": "demo --no-figure",
    "matrix": MATRIX + " --kernel gaussian:3",
    "deblur": "deblur {tmp}/image.npy",
    "calibrate": "calibrate",
}


@pytest.mark.parametrize("argv", UNEXPECTED_CASES.values(), ids=UNEXPECTED_CASES)
def test_unexpected_failure_is_one_line_with_exit_status_1(error_files, capsys, monkeypatch, argv):
    monkeypatch.setattr(convop.constructors, "conv2d", out_of_memory)  # what all four call
    monkeypatch.setitem(convop.constructors.CONSTRUCTORS, (2, False), out_of_memory)
    code, out, err = run(
        capsys, *[a.replace("{tmp}", str(error_files)) for a in shlex.split(argv)]
    )
    assert (code, out) == (1, "")
    assert err == (
        "convop: error: RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 80000000000000000 bytes. Error code 12 (Cannot allocate memory)\n"
    )


def test_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._demo, "run", interrupted)
    code, _, err = run(capsys, "demo")
    assert (code, err) == (130, "convop: interrupted\n")


def test_python_warnings_are_one_line(capsys, monkeypatch):
    def warns(args):
        warnings.warn("mind the\ngap", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli._demo, "run", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # this suite turns warnings into errors
        code, _, err = run(capsys, "demo")
    assert (code, err) == (0, "convop: warning: UserWarning: mind the gap\n")


# ---------------------------------------------------------------------- help and version
COMMANDS = [[], ["demo"], ["matrix"], ["deblur"], ["deconvolve"], ["calibrate"]]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_help_exits_0_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: {' '.join(['convop', *command])}")
    assert "examples:" in out


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and, recursively, its subcommands' parsers."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found += _parsers(subparser)
    return found


def test_no_parser_takes_abbreviations():
    parsers = _parsers(cli.build_parser())
    assert [p.prog for p in parsers] == ["convop", *(f"convop {c[0]}" for c in COMMANDS[1:])]
    assert all(p.allow_abbrev is False for p in parsers)


ABBREVIATIONS = {
    "--output is not --output-padding": (
        ("matrix", "--kernel", "gaussian:3", "--input-shape", "1,8,8", "--output", "{tmp}/B.npz"),
        r"unrecognized arguments: --output \(see 'convop matrix --help'\)",
    ),
    "--out is not --output": (
        ("deblur", "{tmp}/image.npy", "--out", "{tmp}/B.npy"),
        r"unrecognized arguments: --out .*B\.npy \(see 'convop deblur --help'\)",
    ),
    "--sig is not --sigma": (
        ("demo", "--sig", "3", "--no-figure"),
        r"unrecognized arguments: --sig 3 \(see 'convop demo --help'\)",
    ),
    "--vers is not --version": (("--vers",), r"required: SUBCOMMAND"),
}


@pytest.mark.parametrize(("argv", "match"), ABBREVIATIONS.values(), ids=ABBREVIATIONS)
def test_abbreviated_options_are_refused(tmp_path, capsys, argv, match):
    """Issue 24, item 12: ``matrix ... --output m.npz`` was read as ``--output-padding``."""
    np.save(tmp_path / "image.npy", phantom(16))
    code, out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert (code, out) == (2, "")
    assert re.fullmatch(rf"convop: error: .*{match}.*\n", err), err
    assert [p.name for p in tmp_path.iterdir()] == ["image.npy"]


def test_matrix_help_names_the_safe_reader_and_the_unsafe_flag(capsys):
    _, out, _ = run(capsys, "matrix", "--help")
    assert "weights_only=True" in out
    assert re.search(r"--unsafe-unpickle\s.*CAN\s+RUN\s+ARBITRARY\s+CODE", out, re.DOTALL)


# ---------------------------------------------------------------------- the texts are true
# Issue 24, item 16: what the help and docs/cli.md say is generated from the parser, or
# checked here against what the command does.
def _section(text: str, start: str, end: str) -> str:
    """The text between ``start`` and ``end``, whitespace collapsed."""
    return " ".join(text[text.index(start) + len(start) : text.index(end)].split())


def test_convop_help_examples_are_each_subcommands_first(capsys):
    _, out, _ = run(capsys, "--help")
    shown = [" ".join(line.split()) for line in cli.examples(out)]
    own = [" ".join(cli.examples(command.EPILOG)[0].split()) for command in cli.SUBCOMMANDS]
    assert shown == [*own, "convop SUBCOMMAND --help options of one subcommand"]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_help_example_parses(capsys, command):
    _, out, _ = run(capsys, *command, "--help")
    for line in cli.examples(out):
        argv = shlex.split(re.split(r" {2,}", line)[0])[1:]
        if argv != ["SUBCOMMAND", "--help"]:
            cli.build_parser().parse_args(argv)  # raises on an option that does not exist


def test_deblur_help_states_the_default_kernel_truly(capsys):
    from convop.imaging import load_kernel

    _, out, _ = run(capsys, "deblur", "--help")
    found = re.search(r"\(default (gaussian:\d+): (\d+) x (\d+), sigma ([\d.]+) pixels\)",
                      " ".join(out.split()))  # fmt: skip
    assert found, out
    spec, rows, columns, sigma = found.groups()
    assert cli.build_parser().parse_args(["deblur", "x.png"]).kernel == spec
    np.testing.assert_array_equal(load_kernel(spec), load_kernel(f"{spec}:{sigma}"))
    assert load_kernel(spec).shape == (int(rows), int(columns))


IMAGE_FORMATS = {
    "PNG": ("in.png", lambda path, x: Image.fromarray(as_uint(x, 8)).save(path)),
    "JPEG": ("in.jpg", lambda path, x: Image.fromarray(as_uint(x, 8)).save(path)),
    "TIFF": ("in.tif", lambda path, x: Image.fromarray(as_uint(x, 16)).save(path)),
    ".npy": ("in.npy", np.save),
}


@pytest.mark.parametrize(("name", "write"), IMAGE_FORMATS.values(), ids=IMAGE_FORMATS)
def test_deblur_reads_each_format_its_summaries_name(tmp_path, capsys, name, write):
    _, top, _ = run(capsys, "--help")
    _, own, _ = run(capsys, "deblur", "--help")
    summary = _section(top, "    deblur", "\n\noptions:")  # what convop --help lists
    image = _section(own, "positional arguments:\n  IMAGE", "\n\noptions:")
    kind = next(key for key, value in IMAGE_FORMATS.items() if value[0] == name)
    assert kind in summary
    assert kind in image
    write(tmp_path / name, blurred_phantom(16)[1])
    code, _, err = run(capsys, "deblur", tmp_path / name, "--iterations", 1, "--quiet",
                       "--output", tmp_path / "out.npy")  # fmt: skip
    assert (code, err) == (0, "")


def _docs_extension():
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import convop_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return convop_docs


def test_cli_page_lists_the_subcommands_as_convop_help_does():
    convop_docs = _docs_extension()
    top = convop_docs.help_text([])
    listed = convop_docs.subcommands(top)
    assert [name for name, _ in convop_docs.commands()] == listed == [c[0] for c in COMMANDS[1:]]
    for _, summary in convop_docs.commands():
        assert summary in " ".join(top.split())
    page = (DOCS / "cli.md").read_text()
    assert re.search(r"^```\{convop-commands\}\n```$", page, re.MULTILINE)
    assert not re.search(r"^\| \[?`convop \w+`", page, re.MULTILINE)  # no table by hand


def _demo_defaults() -> argparse.Namespace:
    return cli.build_parser().parse_args(["demo"])


def _deblur_constants() -> dict:
    from convop.cli import _deblur

    return {
        "steps": _deblur.ITERATIONS["tv"],
        "inner": _deblur.TV_INNER,
        "weight": _deblur.TV_WEIGHT_PER_VARIANCE,
        "announce": _deblur.ANNOUNCE_SECONDS,
    }


#: What docs/cli.md's prose says (a pattern), and what the command does.
DOC_FACTS = {
    "TV's steps": (
        r"\((\d+) steps of (\d+) `lsqr` iterations;",
        lambda: (_deblur_constants()["steps"], _deblur_constants()["inner"]),
    ),
    "TV's default weight": (
        r"by default \$(\d+)\\sigma\^2/p\$",
        lambda: (_deblur_constants()["weight"],),
    ),
    "announced solves": (
        r"more than (\d+) s is announced",
        lambda: (_deblur_constants()["announce"],),
    ),
    "demo's blur": (
        r"blurs it with a (\d+)×(\d+) Gaussian \(σ = ([\d.]+)\)",
        lambda: (_demo_defaults().kernel_size,) * 2 + (_demo_defaults().sigma,),
    ),
    "demo's noise": (r"adds ([\d.]+)% Gaussian noise", lambda: (100 * _demo_defaults().noise,)),
}


@pytest.mark.parametrize(("pattern", "truth"), DOC_FACTS.values(), ids=DOC_FACTS)
def test_cli_page_prose_agrees_with_the_command(pattern, truth):
    page = " ".join((DOCS / "cli.md").read_text().split())
    found = re.search(pattern, page)
    assert found, pattern
    assert tuple(float(value) for value in found.groups()) == pytest.approx(truth())


def test_cli_page_names_the_demo_figure_and_methods_as_the_demo_does():
    page = " ".join((DOCS / "cli.md").read_text().split())
    figure = re.search(r"\(`\./([\w.-]+)` unless `--out` says otherwise", page)
    assert figure
    assert figure.group(1) == _demo_defaults().out
    ways = re.search(r"restores it (\w+) ways", page)
    assert ways
    assert re.search(rf"\b{ways.group(1)} ways \(", cli._demo.HELP)


def test_version(capsys):
    assert run(capsys, "--version")[:2] == (0, f"convop {convop.__version__}\n")


def test_console_script_and_python_m():
    script = Path(sys.executable).with_name("convop")
    help_ = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    version = subprocess.run(
        [sys.executable, "-m", "convop", "--version"], capture_output=True, text=True, check=False
    )
    assert (help_.returncode, version.returncode) == (0, 0)
    assert help_.stdout.startswith("usage: convop")
    assert version.stdout == f"convop {convop.__version__}\n"
