"""The ``convop`` command, run in-process through ``convop.cli.main`` (plus one subprocess test).

Matrices written by ``convop matrix`` are compared with ``op.tosparse()`` of the operator built
directly, and through it with torch's own layers; every error path must end in one line
``convop: error: ...`` and exit status 2 (1 for unexpected failures), never a traceback.
``--module`` files that would run code when unpickled must be refused without running it.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
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
    line = (r"^tv: \d+ split-Bregman steps of 5 lsqr iterations, .* weight ([\d.e-]+) "
            r"\(8 x the noise variance / the data's scale ([\d.e-]+), "
            r"noise level ([\d.e-]+)\)")  # fmt: skip
    found = re.search(line, out, re.MULTILINE)
    assert found, out
    weight, scale, noise = map(float, found.groups())  # a .npy array: its scale is its peak
    assert scale == pytest.approx(np.abs(noisy).max(), rel=5e-3)  # printed to 3 digits
    assert weight == pytest.approx(8 * noise**2 / scale, rel=2e-2)
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


def test_deblur_divides_a_psf_image_by_its_sum(tmp_path, capsys):
    """Issue 24, item 13: an 8-bit PNG of a PSF sums to hundreds; used as is, the result is
    nearly black. It is divided by its sum, as a .npy kernel is with --normalize."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    kernel = gaussian_kernel(5)
    samples = as_uint(kernel / kernel.max(), 8)  # (5, 5), peak 255
    Image.fromarray(samples).save(tmp_path / "psf.png")
    np.save(tmp_path / "psf.npy", samples / samples.sum())  # the oracle: the same, normalised
    np.save(tmp_path / "psf-raw.npy", samples.astype(np.float64))
    damp = 0.05
    common = ("deblur", tmp_path / "blurred.npy", "--damp", damp, "--quiet", "--output")
    code, out, err = run(capsys, *common, tmp_path / "png.npy", "--kernel", tmp_path / "psf.png")
    assert (code, err) == (0, "")
    total = samples.sum() / 255
    assert f", divided by its sum {total:.6g} (an image file carries no absolute scale)" in out
    code, _, err = run(capsys, *common, tmp_path / "npy.npy", "--kernel", tmp_path / "psf.npy")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, *common, tmp_path / "raw.npy", "--kernel",
                       tmp_path / "psf-raw.npy", "--normalize")  # fmt: skip
    assert (code, err) == (0, "")
    a = dense_blur(samples / samples.sum(), 32)
    tolerance = 2 * pcg_tolerance(a, blurred.ravel(), damp)  # each within one of the exact
    reference = np.load(tmp_path / "npy.npy")
    for name in ("png.npy", "raw.npy"):
        assert np.linalg.norm(np.load(tmp_path / name) - reference) <= tolerance, name
    assert np.load(tmp_path / "png.npy").mean() == pytest.approx(blurred.mean(), rel=0.05)


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


#: deblur's pcg: cg on the normal equations to this relative residual (convop.cli._solve).
PCG_RTOL = 1e-6
#: deblur --solver lsqr: scipy's lsqr with its default atol.
LSQR_ATOL = 1e-6


def dense_blur(kernel: np.ndarray, n: int) -> np.ndarray:
    """The dense matrix of ``kernel``'s blur of an n x n image (reflect, 'same')."""
    op = convop.conv2d(kernel[None, None], (1, n, n), padding="same", padding_mode="reflect")
    return op.todense()


def tikhonov_dense(a: np.ndarray, b: np.ndarray, damp: float) -> np.ndarray:
    """``argmin |a x - b|^2 + damp^2 |x|^2``, by a dense solve of the normal equations."""
    return np.linalg.solve(a.T @ a + damp**2 * np.eye(a.shape[1]), a.T @ b)


def _smallest_eigenvalue(a: np.ndarray, damp: float) -> float:
    return float(np.linalg.eigvalsh(a.T @ a)[0]) + damp**2


def pcg_tolerance(a: np.ndarray, b: np.ndarray, damp: float) -> float:
    """How far from the exact Tikhonov solution pcg's stopping rule lets its result be.

    With H = A^T A + damp^2 I and c = A^T b, any x has |x - x*| <= |H x - c| / mu, mu the
    smallest eigenvalue of H; cg stops at |H x - c| <= rtol |c|. ``b`` may hold one image
    per column, solved at once (one cg on the block-diagonal system): the norms are then of
    all of them.
    """
    return PCG_RTOL * float(np.linalg.norm(a.T @ b)) / _smallest_eigenvalue(a, damp)


def lsqr_tolerance(a: np.ndarray, b: np.ndarray, damp: float, x: np.ndarray) -> float:
    """As :func:`pcg_tolerance`, for lsqr stopped by its least-squares test (istop 2).

    lsqr on Abar = [A; damp I], bbar = [b; 0] stops at |Abar^T rbar| <= atol |Abar| |rbar|,
    rbar = bbar - Abar x, with |Abar| its estimate of the Frobenius norm (at most the
    true one); and Abar^T rbar = c - H x.
    """
    frobenius = np.sqrt(np.sum(a**2) + a.shape[1] * damp**2)
    residual = np.sqrt(np.sum((b - a @ x) ** 2) + damp**2 * np.sum(x**2))
    return LSQR_ATOL * frobenius * residual / _smallest_eigenvalue(a, damp)


@pytest.mark.parametrize("solver", ["pcg", "lsqr"])
def test_deblur_solvers_agree(tmp_path, capsys, solver):
    """Each within what its stopping rule guarantees of the exact (dense) solution."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "blurred.npy", blurred)
    damp = 0.05
    args = ("--kernel", "gaussian:5", "--damp", damp, "--iterations", "400", "--quiet")
    code, out, _ = run(capsys, "deblur", tmp_path / "blurred.npy", *args, "--solver", solver,
                       "--output", tmp_path / f"{solver}.npy")  # fmt: skip
    assert code == 0
    assert re.search(rf"^{solver}: \d+ iterations \(converged", out, re.MULTILINE), out
    a, b = dense_blur(gaussian_kernel(5), 32), blurred.ravel()
    x = np.load(tmp_path / f"{solver}.npy").ravel()
    tolerance = pcg_tolerance(a, b, damp) if solver == "pcg" else lsqr_tolerance(a, b, damp, x)
    assert np.linalg.norm(x - tikhonov_dense(a, b, damp)) <= tolerance


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
    a = dense_blur(gaussian_kernel(5), 32)
    planes = [rgb[..., c].ravel() / 255 for c in range(3)]  # exactly as the PNG holds them
    expected = np.stack([tikhonov_dense(a, b, damp).reshape(32, 32) for b in planes], axis=-1)
    # cg runs on the three channels at once: its stopping rule bounds the error of all three
    # by rtol |c| / mu, with c the three A^T b stacked and mu the same for each.
    tolerance = pcg_tolerance(a, np.stack(planes, axis=1), damp)
    assert code == 0
    assert np.linalg.norm(np.load(tmp_path / "rgb.npy") - expected) <= tolerance
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
        "PNG and JPEG images need Pillow, which is not installed: pip install pillow (it comes "
        "with convop's plot extra), or use .npy files" in err
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
    # gaussian:3 takes 216 B to make: it fits in the 500 B, the solve does not
    output = ("--output", tmp_path / "out.npy")
    argv = ("deblur", tmp_path / "image.npy", "--kernel", "gaussian:3", "--quiet", *output)
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
    argv: tuple[str, ...]  # "{tmp}" is replaced by the test's tmp_path
    match: str


MATRIX = ("matrix", "--input-shape", "1,8,8")
DEMO = (
    "demo",
    "--image",
    "phantom",
    "--size",
    "16",
    "--iterations",
    "1",
    "--no-figure",
    "--quiet",
)
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
    "max bytes too small": ErrorCase(  # the kernel, 216 B, fits: the matrix does not
        (*MATRIX, "--kernel", "gaussian:3", "--max-bytes", "1000", "{tmp}/B.npz"),
        r"^convop: error: --max-bytes: tosparse\('csr'\) with \d+ nonzeros needs [\d.]+ \w*B, "
        r"more than the limit of 1000 B \(max_bytes\); pass max_bytes=\d+ or more",
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
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got 'lcurve'",
    ),
    "negative damping": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--damp", "-1"),
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got '-1'",
    ),
    "bad tv weight": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--tv-weight", "0"),
        r"--tv-weight: expected a finite positive number, got '0'",
    ),
    "bad method": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--method", "wiener"), r"--method: invalid choice"
    ),
    "bad max seconds": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--max-seconds", "0"),
        r"--max-seconds: expected a finite positive number, got '0'",
    ),
    # Issue 24, item 11: every number finite and in range, the option or field named.
    "NaN motion angle": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--kernel", "motion:9:nan"),
        r"^convop: error: kernel 'motion:9:nan': ANGLE must be a finite number, got 'nan'$",
    ),
    "infinite gaussian sigma": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3:inf", "{tmp}/B.npz"),
        r"^convop: error: kernel 'gaussian:3:inf': SIGMA must be a finite number, got 'inf'$",
    ),
    "gaussian over the memory limit": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:101", "--max-bytes", "1000", "{tmp}/B.npz"),
        r"^convop: error: --max-bytes: kernel 'gaussian:101' needs [\d.]+ KiB, more than the "
        r"limit of 1000 B \(max_bytes\); choose a smaller SIZE$",
    ),
    "damping too large": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--damp", "1e308"),
        r"--damp: expected a number from 0 to 1e\+08, 'gcv' or 'discrepancy', got '1e308'",
    ),
    "damping too large for the kernel": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--kernel", "{tmp}/faint-kernel.npy", "--damp", "1"),
        r"^convop: error: --damp 1 is 1\.1e\+12 times the kernel's scale \(its sum of "
        r"\|values\|, about 2\*\*-40\), more than 1e\+08",
    ),
    "TV weight beyond float64 for the data": ErrorCase(
        ("deblur", "{tmp}/huge-image.npy", "--tv-weight", "1e-300"),
        r"^convop: error: --tv-weight 1e-300 is too small for an image whose values reach "
        r"1e\+300 and a kernel summing to about 2\*\*0: it leaves float64's range$",
    ),
    "infinite max seconds": ErrorCase(
        ("deblur", "{tmp}/image.npy", "--max-seconds", "inf"),
        r"--max-seconds: expected a finite positive number, got 'inf'",
    ),
    "infinite max bytes": ErrorCase(
        (*MATRIX, "--kernel", "gaussian:3", "--max-bytes", "inf", "{tmp}/B.npz"),
        r"--max-bytes: expected a number of bytes such as 1000000, 512K, 64M or 2G, got 'inf'",
    ),
    "demo infinite sigma": ErrorCase(
        (*DEMO, "--sigma", "inf"), r"--sigma: expected a finite positive number, got 'inf'"
    ),
    "demo noise out of range": ErrorCase(
        (*DEMO, "--noise", "1e308"), r"--noise: expected a number from 0 to 1, got '1e308'"
    ),
    "demo damping too large": ErrorCase(
        (*DEMO, "--damp", "1e308"), r"--damp: expected a number from 0 to 1e\+08, got '1e308'"
    ),
    "demo kernel larger than the image": ErrorCase(
        (*DEMO, "--kernel-size", "99"),
        r"^convop: error: --kernel-size 99 is too large for 16 x 16 pixels: reflect padding "
        r"needs half the kernel, 49, below the image's size \(at most 31\)$",
    ),
    "demo phantom over the memory limit": ErrorCase(
        ("demo", "--image", "phantom", "--size", "100000", "--no-figure"),
        r"^convop: error: --size: the demo on 100000 x 100000 pixels needs [\d.]+ TiB, more than "
        r"the limit of .*; pass a smaller --size$",
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
    assert [p.prog for p in parsers] == ["convop", "convop demo", "convop matrix", "convop deblur"]
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


@pytest.mark.parametrize("command", [[], ["demo"], ["matrix"], ["deblur"]], ids=str)
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
    assert [name for name, _ in convop_docs.commands()] == listed == ["demo", "matrix", "deblur"]
    for _, summary in convop_docs.commands():
        assert summary in " ".join(top.split())
    page = (DOCS / "cli.md").read_text()
    assert re.search(r"^```\{convop-commands\}\n```$", page, re.MULTILINE)
    assert not re.search(r"^\| \[?`convop \w+`", page, re.MULTILINE)  # no table by hand


def _demo_defaults() -> argparse.Namespace:
    return cli.build_parser().parse_args(["demo"])


def _deblur_constants() -> dict:
    from convop.cli import _deblur, _solve

    return {
        "steps": _deblur.ITERATIONS["tv"],
        "inner": _solve.TV_INNER,
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
