"""The ``convop`` command, run in-process through ``convop.cli.main`` (plus one subprocess test).

Matrices written by ``convop matrix`` are compared with ``op.tosparse()`` of the operator built
directly, and through it with torch's own layers; every error path must end in exit status 2
and one line ``convop: error: ...``, never a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import matplotlib.image
import numpy as np
import pytest
import torch

import convop
from convop import cli
from convop.data import gaussian_kernel, motion_kernel, phantom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit status, stdout, stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def table_psnr(out: str, label: str) -> float:
    """The PSNR column of one row of the demo's table."""
    return float(re.search(rf"^{re.escape(label)}\s+([\d.]+)", out, re.MULTILINE).group(1))


# ---------------------------------------------------------------------- demo
def test_demo_prints_table_and_writes_figure(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    code, out, err = run(capsys, "demo", "--size", 64, "--iterations", 20, "--out", figure)
    assert (code, err) == (0, "")
    assert figure.read_bytes().startswith(PNG_MAGIC)
    assert "PSNR (dB)" in out
    assert table_psnr(out, "scipy lsqr") > table_psnr(out, "blurred + noisy") + 1
    assert table_psnr(out, "scipy lsmr") > table_psnr(out, "blurred + noisy") + 1
    kernel = gaussian_kernel(9)[None, None]
    op = convop.conv2d(kernel, (1, 64, 64), padding="same", padding_mode="reflect")
    assert re.search(rf"^scipy lsqr\s+[\d.]+\s+20\s+[\d.]+\s+{op.method}$", out, re.MULTILINE)


def test_demo_no_figure_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "demo", "--size", 32, "--iterations", 3, "--no-figure")
    assert code == 0
    assert "scipy lsmr" in out
    assert list(tmp_path.iterdir()) == []


def test_demo_without_matplotlib_notes_and_succeeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    figure = tmp_path / "demo.png"
    code, out, _ = run(capsys, "demo", "--size", 32, "--iterations", 3, "--out", figure)
    assert code == 0
    assert "matplotlib is not installed" in out
    assert not figure.exists()


# ---------------------------------------------------------------------- matrix
@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_matrix_of_gaussian_kernel_matches_tosparse(tmp_path, capsys, suffix):
    path = tmp_path / f"B{suffix}"
    code, out, _ = run(
        capsys,
        "matrix",
        "--kernel",
        "gaussian:5",
        "--input-shape",
        "1,16,16",
        "--padding",
        "same",
        "--padding-mode",
        "reflect",
        path,
    )
    expected = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, 16, 16), padding="same", padding_mode="reflect"
    ).tosparse()
    loaded = convop.load_matrix(path)
    assert code == 0
    assert (loaded.shape, loaded.nnz, loaded.dtype) == (expected.shape, expected.nnz, np.float64)
    np.testing.assert_allclose(loaded.toarray(), expected.toarray(), rtol=1e-15, atol=0)
    assert f"nnz      {expected.nnz}" in out
    assert "shape    256 x 256" in out
    assert re.search(r"file     [\d.]+ (B|KiB)", out)


def test_matrix_of_npy_weight_with_stride_and_padding_tuple(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    code, _, _ = run(
        capsys,
        "matrix",
        "--kernel",
        tmp_path / "w.npy",
        "--input-shape",
        "2,9,9",
        "--stride",
        "2",
        "--padding",
        "1,0",
        tmp_path / "B.npz",
    )
    loaded = convop.load_matrix(tmp_path / "B.npz")
    expected = convop.conv2d(w, (2, 9, 9), stride=2, padding=(1, 0)).tosparse()
    assert code == 0
    assert loaded.dtype == np.float32
    assert (loaded != expected).nnz == 0


def test_matrix_of_single_channel_1d_kernel_gets_channel_dims(tmp_path, capsys):
    k = np.array([1.0, -2.0, 1.0])
    np.save(tmp_path / "k.npy", k)
    code, _, _ = run(
        capsys,
        "matrix",
        "--kernel",
        tmp_path / "k.npy",
        "--input-shape",
        "1,8",
        "--dilation",
        "2",
        "--dtype",
        "float32",
        tmp_path / "B.npz",
    )
    loaded = convop.load_matrix(tmp_path / "B.npz")
    x = torch.randn(1, 1, 8)
    expected = torch.nn.functional.conv1d(
        x, torch.tensor(k, dtype=torch.float32)[None, None], dilation=2
    )
    assert code == 0
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded @ x.numpy().ravel(), expected.numpy().ravel(), rtol=1e-5)


def test_matrix_of_saved_conv2d_module_with_bias_note(tmp_path, capsys):
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(
        2, 3, 3, stride=2, padding=1, padding_mode="circular", dtype=torch.float64
    )
    torch.save(layer, tmp_path / "layer.pt")
    code, out, _ = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "layer.pt",
        "--input-shape",
        "2,8,8",
        tmp_path / "B.mtx",
    )
    loaded = convop.load_matrix(tmp_path / "B.mtx")
    op = convop.from_module(layer, (2, 8, 8))
    x = torch.randn(2, 8, 8, dtype=torch.float64)
    expected = layer(x[None]).detach().numpy().ravel()  # torch is the oracle
    assert code == 0
    np.testing.assert_allclose(loaded.toarray(), op.tosparse().toarray(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(loaded @ x.numpy().ravel() + op.bias, expected, rtol=1e-12)
    assert "bias is not part of the (linear) matrix" in out


def test_matrix_of_module_cast_by_dtype_without_bias_note(tmp_path, capsys):
    layer = torch.nn.Conv1d(1, 2, 3, bias=False, dtype=torch.float64)
    torch.save(layer, tmp_path / "layer.pt")
    code, out, _ = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "layer.pt",
        "--input-shape",
        "1,6",
        "--dtype",
        "float32",
        tmp_path / "B.npz",
    )
    loaded = convop.load_matrix(tmp_path / "B.npz")
    expected = convop.from_module(layer.float(), (1, 6)).tosparse()
    assert code == 0
    assert loaded.dtype == np.float32
    assert (loaded != expected).nnz == 0
    assert "bias" not in out


def test_matrix_of_transposed_convolution(tmp_path, capsys):
    w = np.random.default_rng(1).standard_normal((2, 3, 3))  # (C_in, C_out, k)
    np.save(tmp_path / "w.npy", w)
    code, out, _ = run(
        capsys,
        "matrix",
        "--kernel",
        tmp_path / "w.npy",
        "--input-shape",
        "2,5",
        "--transposed",
        "--stride",
        "2",
        "--output-padding",
        "1",
        tmp_path / "B.npz",
    )
    loaded = convop.load_matrix(tmp_path / "B.npz")
    x = torch.randn(1, 2, 5, dtype=torch.float64)
    expected = torch.nn.functional.conv_transpose1d(
        x, torch.from_numpy(w), stride=2, output_padding=1
    )
    assert code == 0
    assert "conv_transpose1d" in out
    assert loaded.shape == (3 * 12, 2 * 5)
    np.testing.assert_allclose(loaded @ x.numpy().ravel(), expected.numpy().ravel(), rtol=1e-12)


def test_matrix_max_bytes_accepts_binary_suffix(tmp_path, capsys):
    code, _, _ = run(
        capsys,
        "matrix",
        "--kernel",
        "motion:5:45",
        "--input-shape",
        "1,8,8",
        "--max-bytes",
        "1M",
        tmp_path / "B.npz",
    )
    expected = convop.conv2d(motion_kernel(5, 45)[None, None], (1, 8, 8)).tosparse()
    assert code == 0
    assert (convop.load_matrix(tmp_path / "B.npz") != expected).nnz == 0


# ---------------------------------------------------------------------- deblur
def blurred_phantom(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, blurred)``: the phantom and its gaussian:5 blur (reflect, 'same')."""
    truth = phantom(n)
    op = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, n, n), padding="same", padding_mode="reflect"
    )
    return truth, (op @ truth.ravel()).reshape(n, n)


def test_deblur_npy_gets_closer_to_the_truth(tmp_path, capsys):
    truth, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    code, out, _ = run(
        capsys,
        "deblur",
        tmp_path / "blurred.npy",
        "--kernel",
        "gaussian:5",
        "--damp",
        "0.001",
        "--iterations",
        "50",
        "--output",
        tmp_path / "sharp.npy",
    )
    sharp = np.load(tmp_path / "sharp.npy")
    assert code == 0
    assert sharp.shape == truth.shape
    assert np.linalg.norm(sharp - truth) < 0.7 * np.linalg.norm(blurred - truth)
    assert re.search(r"lsqr: \d+ iterations .*, [\d.]+ s, .*residual", out)


def test_deblur_rgb_png_is_read_as_luminance(tmp_path, capsys):
    _, blurred = blurred_phantom()
    gray = np.round(blurred * 255) / 255  # exactly representable in an 8-bit PNG
    matplotlib.image.imsave(tmp_path / "rgb.png", np.stack([gray] * 3, axis=-1))
    np.save(tmp_path / "gray.npy", gray)
    args = ("--kernel", "gaussian:5", "--iterations", 20, "--output")
    assert run(capsys, "deblur", tmp_path / "rgb.png", *args, tmp_path / "a.npy")[0] == 0
    assert run(capsys, "deblur", tmp_path / "gray.npy", *args, tmp_path / "b.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-5)


def test_deblur_png_default_output_in_current_directory(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    matplotlib.image.imsave(tmp_path / "photo.png", blurred, cmap="gray", vmin=0, vmax=1)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "deblur", "photo.png", "--iterations", 20, "--quiet")
    result = matplotlib.image.imread(tmp_path / "photo-deblurred.png")
    assert code == 0
    assert "wrote photo-deblurred.png" in out
    assert result.shape[:2] == blurred.shape


# ---------------------------------------------------------------------- errors
class ErrorCase(NamedTuple):
    argv: tuple[str, ...]  # "{tmp}" is replaced by the test's tmp_path
    match: str


MATRIX = ("matrix", "--input-shape", "1,8,8")
ERROR_CASES = {
    "unknown subcommand": ErrorCase(("bogus",), r"invalid choice: 'bogus'"),
    "no subcommand": ErrorCase((), r"required: SUBCOMMAND"),
    "unknown option": ErrorCase(("demo", "--fast"), r"unrecognized arguments: --fast"),
    "bad kernel spec": ErrorCase(
        (*MATRIX, "--kernel", "box:3", "{tmp}/B.npz"),
        r"unknown kernel 'box:3': expected KERNEL.npy, gaussian",
    ),
    "bad kernel parameters": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:x", "{tmp}/B.npz"), r"expected gaussian:SIZE\[:SIGMA\]"
    ),
    "even gaussian": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:4", "{tmp}/B.npz"), r"size must be odd, got size=4"
    ),
    "kernel of wrong ndim": ErrorCase(
        ("matrix", "--input-shape", "1,8", "--kernel", "gaussian:3", "{tmp}/B.npz"),
        r"input has 1 spatial dimension: expected",
    ),
    "input shape not ints": ErrorCase(
        ("matrix", "--kernel", "gaussian:3", "--input-shape", "1,x", "{tmp}/B.npz"),
        r"--input-shape: expected C,H",
    ),
    "input shape too long": ErrorCase(
        ("matrix", "--kernel", "gaussian:3", "--input-shape", "1,2,3,4,5", "{tmp}/B.npz"),
        r"\(5 values\)",
    ),
    "missing kernel file": ErrorCase(
        (*MATRIX, "--kernel", "{tmp}/nope.npy", "{tmp}/B.npz"),
        r"kernel file not found: '.*nope.npy'",
    ),
    "missing module file": ErrorCase(
        (*MATRIX, "--module", "{tmp}/nope.pt", "{tmp}/B.npz"), r"module file not found"
    ),
    "module file not a pickle": ErrorCase(
        (*MATRIX, "--module", "{tmp}/junk.pt", "{tmp}/B.npz"), r"cannot load a torch module"
    ),
    "state_dict": ErrorCase(
        (*MATRIX, "--module", "{tmp}/state.pt", "{tmp}/B.npz"),
        r"got OrderedDict \(a state_dict holds no configuration",
    ),
    "conv option with module": ErrorCase(
        (*MATRIX, "--module", "{tmp}/layer.pt", "--stride", "2", "{tmp}/B.npz"),
        r"--stride cannot be used",
    ),
    "kernel and module": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--module", "{tmp}/layer.pt", "{tmp}/B.npz"),
        r"not allowed with",
    ),
    "same with stride": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--padding", "same", "--stride", "2", "{tmp}/B.npz"),
        r"padding='same' requires stride=1",
    ),
    "channels mismatch": ErrorCase(
        ("matrix", "--input-shape", "3,8,8", "--kernel", "gaussian:3", "{tmp}/B.npz"),
        r"input_shape\[0\]=3",
    ),
    "bad tuple option": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--stride", "2,x", "{tmp}/B.npz"),
        r"--stride: expected a non-negative int",
    ),
    "transposed reflect": ErrorCase(
        (
            *MATRIX,
            "--kernel",
            "gaussian:3",
            "--transposed",
            "--padding-mode",
            "reflect",
            "{tmp}/B.npz",
        ),
        r"zeros only",
    ),
    "output padding untransposed": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--output-padding", "1", "{tmp}/B.npz"),
        r"--output-padding applies to --transposed",
    ),
    "max bytes too small": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--max-bytes", "10", "{tmp}/B.npz"),
        r"more than the limit of 10 B \(--max-bytes\); pass "
        r"--max-bytes \d+",
    ),
    "bad max bytes": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--max-bytes", "lots", "{tmp}/B.npz"),
        r"--max-bytes: expected a number of bytes",
    ),
    "bad output suffix": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "{tmp}/B.txt"), r"OUTPUT must end in .npz or .mtx"
    ),
    "missing output directory": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "{tmp}/no/B.npz"), r"does not exist"
    ),
    "demo even kernel": ErrorCase(
        ("demo", "--kernel-size", "4", "--no-figure"), r"size must be odd"
    ),
    "demo tiny image": ErrorCase(("demo", "--size", "4", "--no-figure"), r"n must be >= 8"),
    "demo zero iterations": ErrorCase(
        ("demo", "--iterations", "0"), r"--iterations: expected a positive int, got '0'"
    ),
    "missing image": ErrorCase(("deblur", "{tmp}/nope.png"), r"image file not found"),
    "image not 2-d": ErrorCase(("deblur", "{tmp}/cube.npy"), r"must be 2-d \(grayscale\)"),
    "image output suffix": ErrorCase(
        ("deblur", "{tmp}/cube.npy", "--output", "{tmp}/x.tif"),
        r"--output must end in .png or .npy",
    ),
    "multichannel deblur kernel": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--kernel", "{tmp}/w.npy"), r"must have one channel"
    ),
}


@pytest.fixture
def error_files(tmp_path: Path) -> Path:
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "layer.pt")
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4)))
    np.save(tmp_path / "image.npy", np.zeros((8, 8)))
    np.save(tmp_path / "w.npy", np.zeros((2, 1, 3, 3)))
    return tmp_path


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_is_one_line_with_exit_status_2(error_files, capsys, case):
    argv = [a.replace("{tmp}", str(error_files)) for a in case.argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("convop: error: ")
    assert re.search(case.match, err), err


def test_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_demo", interrupted)
    code, _, err = run(capsys, "demo")
    assert (code, err) == (130, "convop: interrupted\n")


# ---------------------------------------------------------------------- help and version
@pytest.mark.parametrize("command", [[], ["demo"], ["matrix"], ["deblur"]], ids=str)
def test_help_exits_0_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: {' '.join(['convop', *command])}")
    assert "examples:" in out


def test_matrix_help_warns_that_modules_are_unpickled(capsys):
    _, out, _ = run(capsys, "matrix", "--help")
    assert "UNPICKLES" in out


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
