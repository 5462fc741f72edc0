"""``convop demo``: the deblurring showcase's table, figure and fallbacks."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import convop
from convop.data import gaussian_kernel, phantom

from .cli_helpers import (
    PNG_MAGIC,
    run,
    table_psnr,
)


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
