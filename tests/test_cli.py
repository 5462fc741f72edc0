"""The ``convop`` command, run in-process through ``convop.cli.main`` (plus one subprocess test).

Matrices written by ``convop matrix`` are compared with ``op.tosparse()`` of the operator built
directly, and through it with torch's own layers; every error path must end in one line
``convop: error: ...`` and exit status 2 (1 for unexpected failures), never a traceback.
``--module`` files that would run code when unpickled must be refused without running it.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib.image
import numpy as np
import pytest
import torch
from PIL import Image

import convop
from convop import cli
from convop.data import gaussian_kernel, motion_kernel, phantom

from .modules import MODULE_CASES, ModuleCase

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


# ---------------------------------------------------------------------- demo
def test_demo_prints_table_and_writes_figure(tmp_path, capsys):
    figure = tmp_path / "demo.png"
    argv = ("demo", "--image", "phantom", "--size", 128, "--iterations", 20, "--quiet", "--out")
    code, out, err = run(capsys, *argv, figure)
    assert (code, err) == (0, "")
    assert figure.read_bytes().startswith(PNG_MAGIC)
    assert "128 x 128 Shepp-Logan phantom" in out
    assert "PSNR (dB)" in out
    base = table_psnr(out, "blurred + noisy")
    for row in ("Tikhonov, lsqr", "Tikhonov, pcg", "TV, PyLops"):
        assert table_psnr(out, row) > base + 1, row
    assert table_psnr(out, "TV, PyLops") > table_psnr(out, "Tikhonov, pcg")
    assert re.search(r"^Tikhonov, lsqr\s+[\d.]+\s+\S+\s+20\s+[\d.]+$", out, re.MULTILINE)
    found = re.search(r"^Tikhonov, pcg .* (\d+) \(cg: (\d+)\)", out, re.MULTILINE)
    assert int(found.group(1)) < int(found.group(2))  # the preconditioner saves iterations
    found = re.search(r"Tikhonov damp ([\d.e-]+) \(chosen by the discrepancy principle\)", out)
    damp = float(found.group(1))
    op = convop.conv2d(gaussian_kernel(9, 2.0)[None, None], (1, 128, 128), padding="same",
                       padding_mode="reflect")  # fmt: skip
    y = op @ phantom(128).ravel() + 0.01 * np.random.default_rng(0).standard_normal(128 * 128)
    assert damp == pytest.approx(convop.choose_damping(op, y, method="discrepancy"), rel=5e-3)
    error = float(re.search(r"exact: <A u, v> = <u, A\^T v> to ([\d.e+-]+)", out).group(1))
    assert error < 1e-14
    assert re.search(r"^speed: one product [\d.]+ ms .* Convolve2D [\d.]+ ms", out, re.MULTILINE)


def test_demo_no_figure_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "demo", "--image", "phantom", "--size", 32, "--iterations", 3,
                       "--no-figure", "--quiet")  # fmt: skip
    assert code == 0
    assert "TV, PyLops" in out
    assert list(tmp_path.iterdir()) == []


def test_demo_without_matplotlib_notes_and_succeeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    figure = tmp_path / "demo.png"
    code, out, _ = run(capsys, "demo", "--image", "phantom", "--size", 32, "--iterations", 3,
                       "--quiet", "--out", figure)  # fmt: skip
    assert code == 0
    assert "matplotlib is not installed" in out
    assert not figure.exists()


def test_demo_without_scikit_image_falls_back_to_the_phantom(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import raises ImportError
    code, out, _ = run(capsys, "demo", "--size", 32, "--iterations", 3, "--no-figure",
                       "--quiet")  # fmt: skip
    assert code == 0
    assert "scikit-image is not installed: the phantom instead of the photo" in out
    assert "32 x 32 Shepp-Logan phantom" in out
    code, _, err = run(capsys, "demo", "--image", "camera", "--no-figure")
    assert code == 2
    assert "--image camera needs scikit-image: pip install scikit-image" in err


def test_demo_on_the_photo_gains_three_db_with_tv(tmp_path, capsys):
    """Issue 15's goal: the best method >= +3 dB over the blurred input on the photo."""
    pytest.importorskip("skimage")
    code, out, _ = run(capsys, "demo", "--size", 128, "--iterations", 20, "--no-figure",
                       "--quiet")  # fmt: skip
    assert code == 0
    assert "camera photo" in out
    assert table_psnr(out, "TV, PyLops") > table_psnr(out, "blurred + noisy") + 3


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


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda case: case.id)
def test_matrix_reads_every_conv_class_from_module_files(tmp_path, capsys, case: ModuleCase):
    """The table holds all six classes: nn.Conv1d/2d/3d and nn.ConvTranspose1d/2d/3d."""
    layer = case.make()
    torch.save(layer, tmp_path / "layer.pt")
    shape = ",".join(str(n) for n in case.input_shape)
    code, _, err = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "layer.pt",
        "--input-shape",
        shape,
        tmp_path / "B.npz",
    )
    x = torch.randn(case.input_shape, dtype=torch.float64)
    expected = layer(x[None]) - layer(torch.zeros_like(x)[None])  # B @ x: the bias cancels
    loaded = convop.load_matrix(tmp_path / "B.npz")
    assert (code, err) == (0, "")
    np.testing.assert_allclose(
        loaded @ x.numpy().ravel(), expected.detach().numpy().ravel(), rtol=1e-12, atol=1e-12
    )


PAYLOADS = {"pickled object": MakesDirectory, "inside a real Conv2d": conv_with_payload}


@pytest.mark.parametrize("make", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_module_file_that_would_run_code_is_refused_unrun(tmp_path, capsys, make):
    marker = tmp_path / "marker"
    torch.save(make(marker), tmp_path / "evil.pt")
    code, out, err = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "evil.pt",
        "--input-shape",
        "1,6,6",
        tmp_path / "B.npz",
    )
    assert (code, out) == (2, "")
    assert re.fullmatch(
        r"convop: error: refused to load '.*evil.pt': it needs \w+\.mkdir, .*"
        r"torch\.save\(layer\), or pass --unsafe-unpickle for a file you trust .*\n",
        err,
    )
    assert not marker.exists()
    assert not (tmp_path / "B.npz").exists()


def test_unsafe_unpickle_reads_what_is_refused_and_warns(tmp_path, capsys):
    marker = tmp_path / "marker"
    layer = conv_with_payload(marker)
    torch.save(layer, tmp_path / "layer.pt")
    code, _, err = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "layer.pt",
        "--unsafe-unpickle",
        "--input-shape",
        "1,6,6",
        tmp_path / "B.npz",
    )
    expected = convop.from_module(layer, (1, 6, 6)).tosparse()
    assert code == 0
    assert err == (
        f"convop: warning: --unsafe-unpickle: fully unpickling {str(tmp_path / 'layer.pt')!r}, "
        f"which can run arbitrary code from the file\n"
    )
    assert marker.is_dir()  # the file's code did run: the warning is no exaggeration
    assert (convop.load_matrix(tmp_path / "B.npz") != expected).nnz == 0


def test_module_file_without_torch_safe_globals_is_refused(tmp_path, capsys, monkeypatch):
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "layer.pt")
    monkeypatch.delattr(torch.serialization, "safe_globals")  # as in torch < 2.5
    code, _, err = run(
        capsys,
        "matrix",
        "--module",
        tmp_path / "layer.pt",
        "--input-shape",
        "1,6,6",
        tmp_path / "B.npz",
    )
    assert code == 2
    assert re.match(r"convop: error: reading --module files safely needs torch >= 2.5", err)


PROGRESS_CASES = {
    "log file": (io.StringIO, (), False),
    "terminal --quiet": (Terminal, ("--quiet",), False),
    "terminal": (Terminal, (), True),
}


@pytest.mark.parametrize(("stderr", "flags", "bar"), PROGRESS_CASES.values(), ids=PROGRESS_CASES)
def test_matrix_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, stderr, flags, bar):
    monkeypatch.setattr(convop._materialize, "PROGRESS_ENTRIES", 0)  # every build is "long"
    monkeypatch.setattr(sys, "stderr", stderr())
    argv = ["matrix", "--kernel", "gaussian:3", "--input-shape", "1,16,16", *flags]
    code = cli.main([*argv, str(tmp_path / "B.npz")])
    assert code == 0
    assert ("tosparse" in sys.stderr.getvalue()) == bar


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
    code, out, err = run(
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
    assert (code, err) == (0, "")
    assert sharp.shape == truth.shape
    assert np.linalg.norm(sharp - truth) < 0.7 * np.linalg.norm(blurred - truth)
    assert re.search(r"pcg: \d+ iterations .*, [\d.]+ s, .*residual", out)


@pytest.mark.parametrize("rule", [None, "gcv", "discrepancy"])
def test_deblur_chooses_the_damping_from_the_image(tmp_path, capsys, rule):
    """Without --damp (discrepancy) or with a rule: the value printed, closer to the truth."""
    truth, blurred = blurred_phantom(48)
    noisy = blurred + 0.01 * np.random.default_rng(0).standard_normal(blurred.shape)
    np.save(tmp_path / "blurred.npy", noisy)
    extra = ("--method", "tikhonov") if rule is None else ("--damp", rule)
    code, out, err = run(capsys, "deblur", tmp_path / "blurred.npy", "--kernel", "gaussian:5",
                         *extra, "--quiet", "--output", tmp_path / "sharp.npy")  # fmt: skip
    assert (code, err) == (0, "")
    found = re.search(r"damp ([\d.e-]+) \(chosen by (\w+)\)", out)
    assert found is not None, out
    assert found.group(2) == (rule or "discrepancy")
    damp = float(found.group(1))
    op = convop.conv2d(gaussian_kernel(5)[None, None], (1, 48, 48), padding="same",
                       padding_mode="reflect")  # fmt: skip
    method = rule or "discrepancy"
    assert damp == pytest.approx(convop.choose_damping(op, noisy.ravel(), method=method),
                                 rel=5e-3)  # printed to 3 digits  # fmt: skip
    sharp = np.load(tmp_path / "sharp.npy")
    assert np.linalg.norm(sharp - truth) < np.linalg.norm(noisy - truth)


def _psnr(x: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((x - truth) ** 2)))


def test_deblur_tv_keeps_edges_better_than_tikhonov(tmp_path, capsys):
    """The phantom is piecewise constant: TV beats Tikhonov, and both beat the input."""
    truth, blurred = blurred_phantom(64)
    noisy = blurred + 0.01 * np.random.default_rng(1).standard_normal(blurred.shape)
    np.save(tmp_path / "blurred.npy", noisy)
    common = ("--kernel", "gaussian:5", "--quiet")
    code, out, err = run(capsys, "deblur", tmp_path / "blurred.npy", *common, "--output",
                         tmp_path / "auto.npy")  # fmt: skip
    assert (code, err) == (0, "")
    line = (r"^tv: \d+ split-Bregman steps of 5 lsqr iterations, .* weight [\d.e-]+ "
            r"\(8 x the noise variance, noise level [\d.e-]+\)")  # fmt: skip
    assert re.search(line, out, re.MULTILINE), out
    code, out, _ = run(capsys, "deblur", tmp_path / "blurred.npy", *common, "--method",
                       "tikhonov", "--output", tmp_path / "tikhonov.npy")  # fmt: skip
    assert code == 0
    assert out.count("pcg: ") == 1
    tv = _psnr(np.load(tmp_path / "auto.npy"), truth)
    tikhonov = _psnr(np.load(tmp_path / "tikhonov.npy"), truth)
    assert tv > tikhonov > _psnr(noisy, truth)


@pytest.mark.parametrize("method", ["tv", "tikhonov"])
def test_deblur_nonneg_keeps_the_result_nonnegative_and_closer(tmp_path, capsys, method):
    """The phantom's background is 0: unconstrained results dip below it, --nonneg not."""
    truth, blurred = blurred_phantom(48)
    noisy = blurred + 0.02 * np.random.default_rng(2).standard_normal(blurred.shape)
    np.save(tmp_path / "blurred.npy", noisy)
    common = ("deblur", tmp_path / "blurred.npy", "--kernel", "gaussian:5", "--method", method,
              "--quiet", "--output")  # fmt: skip
    code, out, err = run(capsys, *common, tmp_path / "free.npy")
    assert (code, err) == (0, "")
    code, out, err = run(capsys, *common, tmp_path / "nonneg.npy", "--nonneg")
    assert (code, err) == (0, "")
    label = r"tv: \d+ split-Bregman steps" if method == "tv" else r"admm: \d+ steps \(converged\)"
    assert re.search(rf"^{label}.*x >= 0, residual", out, re.MULTILINE), out
    free, nonneg = np.load(tmp_path / "free.npy"), np.load(tmp_path / "nonneg.npy")
    assert free.min() < -1e-3
    assert nonneg.min() >= 0
    assert _psnr(nonneg, truth) > _psnr(free, truth)


def test_deblur_auto_takes_tikhonov_for_a_given_damping_or_a_tight_budget(
    tmp_path, capsys, monkeypatch
):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    argv = ("deblur", tmp_path / "image.npy", "--quiet", "--output", tmp_path / "x.npy")
    code, out, _ = run(capsys, *argv, "--damp", "0.05")
    assert code == 0
    assert "pcg: " in out
    monkeypatch.setattr(convop._cost, "direct_seconds", lambda *args: 0.5)  # per product
    monkeypatch.setattr(convop._cost, "fft_seconds", lambda *args: 0.5)
    code, out, _ = run(capsys, *argv, "--max-seconds", 150)  # tv: 30 x 6 x 2 x 0.5 s = 180 s
    assert code == 0
    assert "pcg: " in out
    assert "chosen by discrepancy" in out
    code, out, _ = run(capsys, *argv, "--max-seconds", 180)
    assert code == 0
    assert "tv: " in out


def test_deblur_kernel_from_a_gray_image_and_normalize(tmp_path, capsys):
    """A measured PSF as a 16-bit PNG: with --normalize it is the normalised kernel."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    kernel = gaussian_kernel(5)
    Image.fromarray(as_uint(kernel / kernel.max(), 16)).save(tmp_path / "psf.png")
    np.save(tmp_path / "psf.npy", kernel)
    common = ("deblur", tmp_path / "blurred.npy", "--method", "tikhonov", "--damp", "0.05",
              "--quiet")  # fmt: skip
    code, _, err = run(capsys, *common, "--kernel", tmp_path / "psf.png", "--normalize",
                       "--output", tmp_path / "png.npy")  # fmt: skip
    assert (code, err) == (0, "")
    code, _, _ = run(capsys, *common, "--kernel", tmp_path / "psf.npy", "--output",
                     tmp_path / "npy.npy")  # fmt: skip
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "png.npy"), np.load(tmp_path / "npy.npy"),
                               atol=1e-3)  # fmt: skip
    code, _, err = run(capsys, *common, "--kernel", tmp_path / "psf.png", "--output",
                       tmp_path / "raw.npy")  # fmt: skip
    assert code == 0
    assert "pass --normalize to divide the kernel by its sum" in err


def test_deblur_reads_an_npz_archive_and_writes_npy(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.savez_compressed(tmp_path / "scan.npz", blurred)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "deblur", "scan.npz", "--kernel", "gaussian:5", "--damp", "0.05",
                       "--quiet")  # fmt: skip
    assert (code, err) == (0, "")
    assert np.load(tmp_path / "scan-deblurred.npy").shape == blurred.shape


def test_deblur_refuses_colour_and_zero_sum_kernels(tmp_path, capsys):
    np.save(tmp_path / "image.npy", np.ones((8, 8)))
    Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8) + 200).save(tmp_path / "rgb.png")
    code, _, err = run(capsys, "deblur", tmp_path / "image.npy", "--kernel", tmp_path / "rgb.png")
    assert code == 2
    assert "must be a gray image, got a colour one" in err
    np.save(tmp_path / "edge.npy", np.array([[1.0, -1.0]]))
    code, _, err = run(capsys, "deblur", tmp_path / "image.npy", "--kernel",
                       tmp_path / "edge.npy", "--normalize")  # fmt: skip
    assert code == 2
    assert "--normalize: kernel" in err
    assert "sums to 0, it cannot be normalised" in err


def test_deblur_announces_a_long_solve(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    monkeypatch.setattr(convop._cost, "direct_seconds", lambda *args: 0.1)  # per product
    monkeypatch.setattr(convop._cost, "fft_seconds", lambda *args: 0.1)
    code, out, _ = run(capsys, "deblur", tmp_path / "image.npy", "--method", "tikhonov",
                       "--quiet", "--output", tmp_path / "x.npy")  # fmt: skip
    assert code == 0
    assert re.search(r"^pcg: 32 x 32, 1 channel: up to about 20 s and [\d.]+ MiB by convop's "
                     r"cost model$", out, re.MULTILINE), out  # fmt: skip


@pytest.mark.parametrize("solver", ["pcg", "lsqr"])
def test_deblur_solvers_agree(tmp_path, capsys, solver):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    args = ("--kernel", "gaussian:5", "--damp", "0.05", "--iterations", "400", "--quiet")
    code, out, _ = run(capsys, "deblur", tmp_path / "blurred.npy", *args, "--solver", solver,
                       "--output", tmp_path / f"{solver}.npy")  # fmt: skip
    assert code == 0
    assert out.count(f"{solver}: ") == 1
    exact = tikhonov_dense(blurred, 0.05)
    np.testing.assert_allclose(np.load(tmp_path / f"{solver}.npy"), exact, atol=1e-3)


def tikhonov_dense(blurred: np.ndarray, damp: float) -> np.ndarray:
    n = blurred.shape[0]
    op = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, n, n), padding="same", padding_mode="reflect"
    )
    a = op.todense()
    x = np.linalg.solve(a.T @ a + damp**2 * np.eye(n * n), a.T @ blurred.ravel())
    return x.reshape(n, n)


def test_deblur_compare_reports_the_iterations_saved(tmp_path, capsys):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    code, out, _ = run(capsys, "deblur", tmp_path / "blurred.npy", "--kernel", "gaussian:5",
                       "--damp", "0.01", "--compare", "--quiet", "--iterations", "2000",
                       "--output", tmp_path / "out.npy")  # fmt: skip
    assert code == 0
    match = re.search(r"pcg: (\d+) iterations .*plain cg: (\d+) iterations.*saved (\d+)", out)
    assert match is not None
    pcg, plain, saved = map(int, match.groups())
    assert saved == plain - pcg > 0


def test_deblur_compare_needs_pcg(tmp_path, capsys):
    np.save(tmp_path / "image.npy", np.zeros((8, 8)))
    code, _, err = run(capsys, "deblur", tmp_path / "image.npy", "--solver", "lsqr", "--compare")
    assert code == 2
    assert "--compare needs --method tikhonov and --solver pcg" in err


def test_deblur_rgb_png_is_each_channels_own_exact_solution(tmp_path, capsys):
    """One batched operator for the three channels, and still none mixed with another."""
    _, blurred = blurred_phantom()
    rgb = as_uint(np.stack([blurred, blurred.T, blurred[::-1]], axis=-1), 8)  # (32, 32, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    damp = 0.05
    code, out, _ = run(capsys, "deblur", tmp_path / "rgb.png", "--kernel", "gaussian:5",
                       "--damp", damp, "--quiet", "--output", tmp_path / "rgb.npy")  # fmt: skip
    op = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, 32, 32), padding="same", padding_mode="reflect"
    )
    a = op.todense()
    normal = a.T @ a + damp**2 * np.eye(a.shape[1])
    expected = np.stack(  # the channels exactly as the PNG holds them, each solved densely
        [np.linalg.solve(normal, a.T @ (rgb[..., c].ravel() / 255)).reshape(32, 32)
         for c in range(3)], axis=-1,
    )  # fmt: skip
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "rgb.npy"), expected, rtol=0, atol=1e-5)
    assert "3 channels at once" in out
    assert len(re.findall(r"^pcg: \d+ iterations", out, re.MULTILINE)) == 1


class ImageCase(NamedTuple):
    name: str  # file name of the input
    write: Callable[[Path, np.ndarray], object]  # writes an image in [0, 1] to a path
    mode: str  # Pillow mode of the PNG written from it


IMAGE_CASES = [
    ImageCase("gray.png", lambda path, x: Image.fromarray(as_uint(x, 8)).save(path), "L"),
    ImageCase("gray16.png", lambda path, x: Image.fromarray(as_uint(x, 16)).save(path), "I;16"),
    ImageCase(
        "rgb.png",
        lambda path, x: Image.fromarray(as_uint(np.stack([x] * 3, -1), 8)).save(path),
        "RGB",
    ),
    ImageCase(
        "rgba.png",
        lambda path, x: Image.fromarray(as_uint(np.stack([x] * 4, -1), 8)).save(path),
        "RGB",
    ),
    ImageCase(
        "matplotlib-gray.png",  # matplotlib writes RGBA
        lambda path, x: matplotlib.image.imsave(path, x, cmap="gray", vmin=0, vmax=1),
        "RGB",
    ),
    ImageCase("photo.jpg", lambda path, x: Image.fromarray(as_uint(x, 8)).save(path), "L"),
    ImageCase("gray.npy", np.save, "L"),
    ImageCase("rgb.npy", lambda path, x: np.save(path, np.stack([x] * 3, -1)), "RGB"),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda case: case.name)
def test_deblur_png_is_gray_for_gray_input_and_rgb_for_colour(tmp_path, capsys, case):
    _, blurred = blurred_phantom()
    case.write(tmp_path / case.name, blurred)
    code, _, _ = run(
        capsys,
        "deblur",
        tmp_path / case.name,
        "--iterations",
        5,
        "--quiet",
        "--output",
        tmp_path / "out.png",
    )
    with Image.open(tmp_path / "out.png") as result:
        assert (code, result.mode, result.size) == (0, case.mode, (32, 32))


NPY_IMAGES = {"gray": lambda x: x, "colour": lambda x: np.stack([x, x.T, x[::-1]], axis=-1)}


@pytest.mark.parametrize("make", NPY_IMAGES.values(), ids=NPY_IMAGES)
def test_deblur_npy_keeps_its_shape(tmp_path, capsys, monkeypatch, make):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "in.npy", make(blurred))
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "deblur", "in.npy", "--iterations", 5, "--quiet")
    assert code == 0
    assert np.load(tmp_path / "in-deblurred.npy").shape == make(blurred).shape


def test_deblur_drops_alpha_with_a_note(tmp_path, capsys):
    _, blurred = blurred_phantom()
    Image.fromarray(as_uint(np.stack([blurred] * 4, -1), 8)).save(tmp_path / "rgba.png")
    code, out, err = run(
        capsys,
        "deblur",
        tmp_path / "rgba.png",
        "--iterations",
        5,
        "--quiet",
        "--output",
        tmp_path / "out.png",
    )
    assert (code, err) == (0, "")
    assert "note: the image's alpha channel is dropped: not deblurred and not written" in out


def test_deblur_png_without_pillow_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    Image.fromarray(as_uint(blurred, 8)).save(tmp_path / "gray.png")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import raises ImportError
    code, _, err = run(capsys, "deblur", tmp_path / "gray.png")
    assert code == 2
    assert (
        "PNG and JPEG images need Pillow, which is not installed: pip install 'convop[plot]'"
        in err
    )


SUM_CASES = {
    "scaled": (
        2 * gaussian_kernel(5),
        r"sums to 2, not 1: the result's brightness scales by its inverse \(0\.5\)",
    ),
    "zero sum": (
        np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
        r"sums to 0: it removes the image's mean brightness",
    ),
}


@pytest.mark.parametrize(("kernel", "match"), SUM_CASES.values(), ids=SUM_CASES)
def test_deblur_warns_when_the_kernel_does_not_sum_to_1(tmp_path, capsys, kernel, match):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    np.save(tmp_path / "k.npy", kernel)
    code, _, err = run(
        capsys,
        "deblur",
        tmp_path / "image.npy",
        "--kernel",
        tmp_path / "k.npy",
        "--iterations",
        5,
        "--quiet",
        "--output",
        tmp_path / "sharp.npy",
    )
    assert code == 0
    assert re.fullmatch(rf"convop: warning: kernel '.*k\.npy' {match}.*\n", err)


def test_deblur_refuses_over_the_memory_limit_before_solving(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    argv = ("deblur", tmp_path / "image.npy", "--quiet", "--output", tmp_path / "out.npy")
    with monkeypatch.context() as patch:
        patch.setattr(convop._memory, "HOST_SOURCES", (lambda: 1000,))
        code, out, err = run(capsys, *argv)
    refusal = re.fullmatch(
        r"convop: error: deblurring 1 channel of 32 x 32 pixels needs [\d.]+ KiB, more than the "
        r"limit of 500 B \(half the 1000 B available now\); pass --max-bytes (\d+) or more .*\n",
        err,
    )
    assert (code, out) == (2, "")
    assert refusal
    assert not (tmp_path / "out.npy").exists()
    assert run(capsys, *argv, "--max-bytes", refusal.group(1))[0] == 0  # the override suffices


def test_deblur_refuses_over_the_time_limit_before_solving(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "rgb.npy", np.stack([blurred] * 3, axis=-1))
    monkeypatch.setattr(convop._cost, "direct_seconds", lambda *args: 4.5)  # per product
    monkeypatch.setattr(convop._cost, "fft_seconds", lambda *args: 4.5)  # (all 3 channels)
    argv = ("deblur", tmp_path / "rgb.npy", "--iterations", 100, "--output", tmp_path / "x.npy")
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        "convop: error: deblurring 3 channels of 32 x 32 pixels would take up to about 900 s by "
        "convop's cost model (100 solver iterations x 2 direct products), more than --max-seconds "
        "600; pass --max-seconds 900 or more (or fewer --iterations) to run it anyway\n"
    )
    assert run(capsys, *argv, "--max-seconds", 900)[0] == 0


def test_deblur_failed_write_leaves_no_file(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)

    def disk_full(file, array):
        file.write(b"\x93NUMPY half an array")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, _, err = run(
        capsys,
        "deblur",
        tmp_path / "image.npy",
        "--iterations",
        5,
        "--quiet",
        "--output",
        tmp_path / "out.npy",
    )
    assert code == 2
    assert re.fullmatch(r"convop: error: \[Errno 28\] cannot write .*out\.npy: no space left on "
                        r"the device; nothing was changed\n", err)  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["image.npy"]


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
        (*MATRIX, "--kernel", "gaussian:4", "{tmp}/B.npz"),
        r"^convop: error: kernel 'gaussian:4': size must be odd, got size=4$",
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
        (*MATRIX, "--module", "{tmp}/junk.pt", "{tmp}/B.npz"),
        r"cannot load a torch module from '.*junk.pt' \(damaged, or not written by "
        r"torch.save\): \w+Error: ",
    ),
    "module file of junk bytes": ErrorCase(
        (*MATRIX, "--module", "{tmp}/bytes.pt", "{tmp}/B.npz"),
        r"cannot load a torch module from '.*bytes.pt' \(damaged, or not written by torch.save\)",
    ),
    "truncated module file": ErrorCase(
        (*MATRIX, "--module", "{tmp}/truncated.pt", "{tmp}/B.npz"),
        r"cannot load a torch module from .*: RuntimeError: PytorchStreamReader failed",
    ),
    "conv subclass": ErrorCase(
        (*MATRIX, "--module", "{tmp}/subclass.pt", "{tmp}/B.npz"),
        r"refused to load '.*subclass.pt': it needs [\w.]*SubConv, .* --unsafe-unpickle",
    ),
    "unsafe unpickle with kernel": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--unsafe-unpickle", "{tmp}/B.npz"),
        r"--unsafe-unpickle applies to --module only",
    ),
    "NaN module weight": ErrorCase(
        (*MATRIX, "--module", "{tmp}/nan-layer.pt", "{tmp}/B.npz"),
        r"the weight of module '.*nan-layer.pt' has 9 non-finite values \(NaN or Inf\), "
        r"the first at index \(0, 0, 0, 0\)",
    ),
    "NaN kernel": ErrorCase(
        (*MATRIX, "--kernel", "{tmp}/nan-kernel.npy", "{tmp}/B.npz"),
        r"kernel '.*nan-kernel.npy' has 1 non-finite value \(NaN or Inf\), the first at "
        r"index \(1, 2\)",
    ),
    "truncated kernel file": ErrorCase(
        (*MATRIX, "--kernel", "{tmp}/truncated.npy", "{tmp}/B.npz"),
        r"cannot read kernel file '.*truncated.npy': Failed to read all data",
    ),
    "empty kernel file": ErrorCase(
        (*MATRIX, "--kernel", "{tmp}/empty.npy", "{tmp}/B.npz"),
        r"cannot read kernel file '.*empty.npy': No data left in file",
    ),
    "kernel file holding an archive": ErrorCase(
        (*MATRIX, "--kernel", "{tmp}/archive.npy", "{tmp}/B.npz"),
        r"must hold one numeric array, got an .npz archive",
    ),
    "huge input shape": ErrorCase(
        (
            "matrix",
            "--kernel",
            "gaussian:5",
            "--input-shape",
            "1,100000000,100000000",
            "{tmp}/B.npz",
        ),
        r"--max-bytes: tosparse\('csr'\) with 249999980000000400 nonzeros needs [\d.]+ TiB, "
        r"more than the "
        r"limit of",
    ),
    "huge input shape of a module": ErrorCase(
        (
            "matrix",
            "--module",
            "{tmp}/layer.pt",
            "--input-shape",
            "1,100000000,100000000",
            "{tmp}/B.npz",
        ),
        r"--max-bytes: tosparse\('csr'\) with \d+ nonzeros needs [\d.]+ TiB",
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
        r"^convop: error: --max-bytes: tosparse\('csr'\) with \d+ nonzeros needs [\d.]+ \w*B, "
        r"more than the limit of 10 B \(max_bytes\); pass max_bytes=\d+ or more",
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
        ("demo", "--kernel-size", "4", "--no-figure"),
        r"^convop: error: --kernel-size: size must be odd, got size=4$",
    ),
    "demo tiny image": ErrorCase(
        ("demo", "--image", "phantom", "--size", "4", "--no-figure"),
        r"^convop: error: --size: n must be >= 8, got n=4$",
    ),
    "demo zero iterations": ErrorCase(
        ("demo", "--iterations", "0"), r"--iterations: expected a positive int, got '0'"
    ),
    "missing image": ErrorCase(("deblur", "{tmp}/nope.png"), r"image file not found"),
    "image neither gray nor RGB": ErrorCase(
        ("deblur", "{tmp}/cube.npy"),
        r"must have shape \(H, W\) \(gray\) or \(H, W, 3\) \(colour\), got \(4, 4, 4\)",
    ),
    "NaN and Inf pixels": ErrorCase(
        ("deblur", "{tmp}/nan-image.npy"),
        r"image '.*nan-image.npy' has 2 non-finite values \(NaN or Inf\), the first at row 3, "
        r"column 4$",
    ),
    "Inf in a colour channel": ErrorCase(
        ("deblur", "{tmp}/inf-colour.npy"),
        r"has 1 non-finite value \(NaN or Inf\), the first at row 0, column 1, channel 2$",
    ),
    "NaN deblur kernel": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--kernel", "{tmp}/nan-kernel.npy"),
        r"kernel '.*nan-kernel.npy' has 1 non-finite value",
    ),
    "all-zero deblur kernel": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--kernel", "{tmp}/zero-kernel.npy"),
        r"kernel '.*zero-kernel.npy' is all zeros: it blurs every image to 0",
    ),
    "truncated PNG": ErrorCase(
        ("deblur", "{tmp}/truncated.png"), r"cannot read image '.*truncated.png': .*truncated"
    ),
    "PNG that is no image": ErrorCase(
        ("deblur", "{tmp}/junk.png"), r"cannot read image '.*junk.png': cannot identify image"
    ),
    "nonneg with lsqr": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--method", "tikhonov", "--nonneg", "--solver", "lsqr"),
        r"^convop: error: --nonneg solves tikhonov by ADMM with preconditioned cg steps; "
        r"--solver lsqr has no constraint \(leave --solver out\)$",
    ),
    "nonneg with compare": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--method", "tikhonov", "--nonneg", "--compare"),
        r"^convop: error: --compare needs --method tikhonov and --solver pcg without --nonneg",
    ),
    "bad damping": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--damp", "lcurve"),
        r"--damp: expected a number >= 0, 'gcv' or 'discrepancy', got 'lcurve'",
    ),
    "negative damping": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--damp", "-1"),
        r"--damp: expected a number >= 0, 'gcv' or 'discrepancy', got '-1'",
    ),
    "bad tv weight": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--tv-weight", "0"),
        r"--tv-weight: expected a positive number, got '0'",
    ),
    "bad method": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--method", "wiener"), r"--method: invalid choice"
    ),
    "bad max seconds": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--max-seconds", "0"),
        r"--max-seconds: expected a positive number, got '0'",
    ),
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
    argv = [a.replace("{tmp}", str(error_files)) for a in case.argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("convop: error: ")
    assert re.search(case.match, err), err


UNEXPECTED_CASES = {
    "demo": ("demo", "--no-figure"),
    "matrix": (*MATRIX, "--kernel", "gaussian:3", "{tmp}/B.npz"),
    "deblur": ("deblur", "{tmp}/image.npy"),
}


@pytest.mark.parametrize("argv", UNEXPECTED_CASES.values(), ids=UNEXPECTED_CASES)
def test_unexpected_failure_is_one_line_with_exit_status_1(error_files, capsys, monkeypatch, argv):
    monkeypatch.setattr(convop.constructors, "conv2d", out_of_memory)  # what all three call
    monkeypatch.setitem(convop.constructors.CONSTRUCTORS, (2, False), out_of_memory)
    code, out, err = run(capsys, *[a.replace("{tmp}", str(error_files)) for a in argv])
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
@pytest.mark.parametrize("command", [[], ["demo"], ["matrix"], ["deblur"]], ids=str)
def test_help_exits_0_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: {' '.join(['convop', *command])}")
    assert "examples:" in out


def test_matrix_help_names_the_safe_reader_and_the_unsafe_flag(capsys):
    _, out, _ = run(capsys, "matrix", "--help")
    assert "weights_only=True" in out
    assert re.search(r"--unsafe-unpickle\s.*CAN\s+RUN\s+ARBITRARY\s+CODE", out, re.DOTALL)


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


# ---------------------------------------------------------------------- deblur on photographs
def _blurred_photo(photo: np.ndarray, spec: str, sigma: float) -> np.ndarray:
    """``photo`` (H, W[, 3]) in [0, 1] blurred by ``spec`` (reflect, 'same'), noisy, clipped."""
    from convop.imaging import load_kernel

    k = load_kernel(spec)
    planes = photo[..., None] if photo.ndim == 2 else photo
    h, w, c = planes.shape
    op = convop.conv2d(k.reshape(1, 1, *k.shape[-2:]), (1, h, w), padding="same",
                       padding_mode="reflect")  # fmt: skip
    rng = np.random.default_rng(0)
    out = np.stack([(op @ planes[..., i].ravel()).reshape(h, w) for i in range(c)], axis=-1)
    out = np.clip(out + sigma * rng.standard_normal(out.shape), 0, 1)
    return out[..., 0] if photo.ndim == 2 else out


@pytest.mark.parametrize("spec", ["gaussian:9:2", "motion:15:30"])
def test_deblur_helps_on_a_photo_end_to_end(tmp_path, capsys, monkeypatch, spec):
    """scikit-image's camera, as an 8-bit PNG: the default gains, and stays 8-bit gray."""
    data = pytest.importorskip("skimage.data")
    monkeypatch.chdir(tmp_path)  # the default output goes to the current directory
    truth = data.camera()[160:288, 160:288] / 255.0
    Image.fromarray(as_uint(_blurred_photo(truth, spec, 0.01), 8)).save(tmp_path / "photo.png")
    with Image.open(tmp_path / "photo.png") as image:
        blurred = np.asarray(image) / 255.0
    code, out, err = run(capsys, "deblur", tmp_path / "photo.png", "--kernel", spec, "--quiet")
    assert (code, err) == (0, ""), err
    with Image.open(tmp_path / "photo-deblurred.png") as result:
        assert result.mode == "L"
        sharp = np.asarray(result) / 255.0
    assert _psnr(sharp, truth) > _psnr(blurred, truth) + 1.5, out


def test_deblur_colour_photo_round_trip(tmp_path, capsys):
    """An RGB photo stays RGB, each channel gains, and --nonneg changes nothing visible."""
    data = pytest.importorskip("skimage.data")
    truth = data.astronaut()[100:164, 180:244] / 255.0  # (64, 64, 3)
    Image.fromarray(as_uint(_blurred_photo(truth, "gaussian:7", 0.01), 8)).save(
        tmp_path / "in.png"
    )
    with Image.open(tmp_path / "in.png") as image:
        blurred = np.asarray(image) / 255.0
    code, out, err = run(capsys, "deblur", tmp_path / "in.png", "--kernel", "gaussian:7",
                         "--nonneg", "--quiet", "--output", tmp_path / "out.png")  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "3 channels at once" in out
    with Image.open(tmp_path / "out.png") as result:
        assert (result.mode, result.size) == ("RGB", (64, 64))
        sharp = np.asarray(result) / 255.0
    for c in range(3):
        assert _psnr(sharp[..., c], truth[..., c]) > _psnr(blurred[..., c], truth[..., c]), c


@pytest.mark.parametrize("spec", ["gaussian:9:2", "motion:15:30"])
def test_deblur_damping_is_near_the_best_of_a_sweep_on_a_photo(spec):
    """The CLI's damping (the discrepancy principle) within 0.5 dB of a sweep's best."""
    from convop.cli._solve import solve_normal
    from convop.imaging import load_kernel

    data = pytest.importorskip("skimage.data")
    truth = data.camera()[160:288, 160:288] / 255.0
    k = load_kernel(spec)
    op = convop.conv2d(k.reshape(1, 1, *k.shape[-2:]), (1, 128, 128), padding="same",
                       padding_mode="reflect")  # fmt: skip
    y = op @ truth.ravel() + 0.01 * np.random.default_rng(0).standard_normal(128 * 128)

    def quality(damp: float) -> float:
        x = solve_normal(op, y, damp=damp, iterations=500, quiet=True, rtol=1e-7)[0]
        return _psnr(x.reshape(128, 128), truth)

    best = max(quality(d) for d in np.geomspace(0.01, 0.5, 15))
    chosen = convop.choose_damping(op, y, method="discrepancy")
    assert quality(chosen) > best - 0.5
