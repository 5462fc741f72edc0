"""``convop deblur``: closer to the truth, every solver and format, guards, photographs."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import matplotlib.image
import numpy as np
import pytest
import torch
from PIL import Image

import convop
from convop.data import gaussian_kernel
from convop.operator import Estimate

from .cli_helpers import (
    as_uint,
    blurred_phantom,
    calibrating,
    estimate_as,
    run,
    run_line,
)


def _deblur(capsys, tmp: Path, image: np.ndarray, options: str) -> tuple:
    """``convop deblur TMP/image.npy OPTIONS --output TMP/out.npy`` of ``image`` (``{tmp}``
    in OPTIONS is ``tmp``): the exit status, stdout, stderr and the result (None if none)."""
    np.save(tmp / "image.npy", image)
    line = f"deblur {{tmp}}/image.npy {options} --output {{tmp}}/out.npy"
    code, out, err = run_line(capsys, line, tmp=tmp)
    path = tmp / "out.npy"
    return code, out, err, np.load(path) if path.exists() else None


# ---------------------------------------------------------------------- deblur
def test_deblur_npy_gets_closer_to_the_truth(tmp_path, capsys):
    truth, blurred = blurred_phantom()
    options = "--kernel gaussian:5 --damp 0.001 --iterations 50"
    code, out, err, sharp = _deblur(capsys, tmp_path, blurred, options)
    assert (code, err) == (0, "")
    assert sharp.shape == truth.shape
    assert np.linalg.norm(sharp - truth) < 0.7 * np.linalg.norm(blurred - truth)
    assert re.search(r"pcg: \d+ iterations .*, [\d.]+ s, .*residual", out)


@pytest.mark.parametrize("rule", [None, "gcv", "discrepancy"])
def test_deblur_chooses_the_damping_from_the_image(tmp_path, capsys, rule):
    """Without --damp (discrepancy) or with a rule: the value printed, closer to the truth."""
    truth, blurred = blurred_phantom(48)
    noisy = blurred + 0.01 * np.random.default_rng(0).standard_normal(blurred.shape)
    extra = "--method tikhonov" if rule is None else f"--damp {rule}"
    code, out, err, sharp = _deblur(
        capsys, tmp_path, noisy, f"--kernel gaussian:5 {extra} --quiet"
    )
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
    estimate_as(monkeypatch, Estimate(0.5, 0.5, "built-in"))  # seconds per product
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
    estimate_as(monkeypatch, Estimate(0.1, 0.1, "cache file"))  # seconds per product
    code, out, _ = run(capsys, "deblur", tmp_path / "image.npy", "--method", "tikhonov",
                       "--quiet", "--output", tmp_path / "x.npy")  # fmt: skip
    assert code == 0
    assert re.search(r"^pcg: 32 x 32, 1 channel: up to about 20 s and [\d.]+ MiB by convop's "
                     r"cost model with cache file constants$", out, re.MULTILINE), out  # fmt: skip


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
    code, out, err = run_line(
        capsys, "deblur {tmp}/rgba.png --iterations 5 --quiet --output {tmp}/out.png", tmp=tmp_path
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
    np.save(tmp_path / "k.npy", kernel)
    code, _, err, _ = _deblur(
        capsys, tmp_path, blurred, "--kernel {tmp}/k.npy --iterations 5 --quiet"
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
        patch.setattr(convop._shared.memory, "HOST_SOURCES", (lambda: 1000,))
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


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_deblur_refuses_over_the_time_limit_before_solving(tmp_path, capsys, monkeypatch, method):
    """The time is op.estimate()'s seconds of one product by op.method, 2 per iteration."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "rgb.npy", np.stack([blurred] * 3, axis=-1))
    argv = ("deblur", tmp_path / "rgb.npy", "--method", "tikhonov", "--iterations", 100,
            "--quiet", "--output", tmp_path / "x.npy")  # fmt: skip
    slow = Estimate(**{"direct": 1e-3, "fft": 1e-3, method: 4.5}, source="calibrated")
    estimate_as(monkeypatch, slow, method)  # per product of all 3 channels
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        f"convop: error: deblurring 3 channels of 32 x 32 pixels would take up to about 900 s by "
        f"convop's cost model with calibrated constants (100 solver iterations x 2 {method} "
        f"products of 4.5 s), more than --max-seconds 600; pass --max-seconds 900 or more (or "
        f"fewer --iterations) to run it anyway\n"
    )
    assert run(capsys, *argv, "--max-seconds", 900)[0] == 0
    fast = Estimate(**{"direct": 4.5, "fft": 4.5, method: 1e-3}, source="calibrated")
    estimate_as(monkeypatch, fast, method)  # the other method's time is not the guard's
    assert run(capsys, *argv)[0] == 0


def test_deblur_time_guard_is_the_calibrated_public_estimate(tmp_path, capsys, monkeypatch):
    """Issue 25: after a calibration, the limit falls where 100 x 2 x op.estimate()'s product
    lies, by the calibrated constants (here: every call takes a second more than built-in)."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    calibrating(monkeypatch, tmp_path / "cache")
    convop.calibrate(dtype=torch.float64)
    op = convop.conv2d(gaussian_kernel(9)[None, None], (1, 32, 32), padding="same",
                       padding_mode="reflect")  # fmt: skip
    guess = op.estimate()
    seconds = 100 * 2 * getattr(guess, op.method)
    assert (guess.source, seconds > 200) == ("calibrated", True)
    argv = ("deblur", tmp_path / "image.npy", "--method", "tikhonov", "--iterations", 100,
            "--quiet", "--output", tmp_path / "x.npy", "--max-seconds")  # fmt: skip
    code, _, err = run(capsys, *argv, f"{seconds * 0.999:.17g}")
    assert code == 2
    assert f"would take up to about {seconds:.3g} s by convop's cost model with calibrated" in err
    assert f"(100 solver iterations x 2 {op.method} products of" in err
    assert run(capsys, *argv, f"{seconds * 1.001:.17g}")[0] == 0


def test_deblur_memory_guard_counts_the_estimates_bytes(tmp_path, capsys, monkeypatch):
    """The memory is the solver's vectors plus op.estimate()'s bytes for op.method."""
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)
    argv = ("deblur", tmp_path / "image.npy", "--method", "tikhonov", "--max-bytes", "4K",
            "--output", tmp_path / "x.npy")  # fmt: skip
    needed = {}
    for extra in (0, 10**6, 2 * 10**6):
        estimate_as(monkeypatch, Estimate(1e-3, 1e-3, "built-in", direct_bytes=extra,
                                          fft_bytes=extra))  # fmt: skip
        code, _, err = run(capsys, *argv)
        assert code == 2
        needed[extra] = int(re.search(r"pass --max-bytes (\d+) or more", err).group(1))
    assert needed[10**6] - needed[0] == needed[2 * 10**6] - needed[10**6] == 10**6


def test_deblur_failed_write_leaves_no_file(tmp_path, capsys, monkeypatch):
    _, blurred = blurred_phantom()
    np.save(tmp_path / "image.npy", blurred)

    def disk_full(file, array):
        file.write(b"\x93NUMPY half an array")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, _, err = run_line(
        capsys,
        "deblur {tmp}/image.npy --iterations 5 --quiet --output {tmp}/out.npy",
        tmp=tmp_path,
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
    from convop.imaging import load_kernel

    data = pytest.importorskip("skimage.data")
    truth = data.camera()[160:288, 160:288] / 255.0
    k = load_kernel(spec)
    op = convop.conv2d(k.reshape(1, 1, *k.shape[-2:]), (1, 128, 128), padding="same",
                       padding_mode="reflect")  # fmt: skip
    y = op @ truth.ravel() + 0.01 * np.random.default_rng(0).standard_normal(128 * 128)

    def quality(damp: float) -> float:
        x = convop.pcg(op, y, damp=damp, maxiter=500, rtol=1e-7).x
        return _psnr(x.reshape(128, 128), truth)

    best = max(quality(d) for d in np.geomspace(0.01, 0.5, 15))
    chosen = convop.choose_damping(op, y, method="discrepancy")
    assert quality(chosen) > best - 0.5
