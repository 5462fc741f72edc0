"""``convop deconvolve``: stacks and their voxel sizes round-trip, the PSF is prepared as
documented, the result is the library's, every refusal is one line, the guards hold."""

from __future__ import annotations

import io
import itertools
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import tifffile

import convop
from convop import cli
from convop.cli import _deconvolve as deconvolve_module
from convop.cli import _deconvolve_mpi as deconvolve_mpi
from convop.cli import _deconvolve_plan as plan_module
from convop.cli import _psf as psf_module
from convop.data import gaussian_kernel, psnr
from convop.operator import Estimate

from .cli_helpers import Terminal, estimate_as, run

SHAPE = (6, 12, 10)
VOXEL = (0.3, 0.1, 0.1)  # micrometres: z, y, x


def _psf(shape: tuple[int, ...] = (3, 5, 5)) -> np.ndarray:
    """A separable Gaussian PSF, float32, not normalised (as a microscope records it)."""
    profiles = [gaussian_kernel(k, 0.4 + k / 6).sum(0) for k in shape]
    grid = np.ones(shape)
    for axis, profile in enumerate(profiles):
        grid = grid * profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return (1000 * grid).astype(np.float32)


def _unit(psf: np.ndarray) -> np.ndarray:
    """The PSF as the command uses it: divided by its sum in float64, then float32."""
    return (psf.astype(np.float64) / psf.sum(dtype=np.float64)).astype(np.float32)


def _counts(shape: tuple[int, ...] = SHAPE, seed: int = 0, background: float = 2.0):
    """``(truth, y)``: a blocky object past the frame, blurred ('valid') with Poisson noise."""
    rng = np.random.default_rng(seed)
    model = convop.extended_domain(_unit(_psf((3, 5, 5)[-len(shape) :])), shape)
    scene = np.full(model.object_shape, 4.0)
    scene[tuple(slice(n // 4, 3 * n // 4) for n in model.object_shape)] += 60.0
    mean = (model.op @ scene.astype(np.float32).ravel()).reshape(shape) + background
    return model.crop(scene), rng.poisson(mean).astype(np.uint16)


def _rl(psf: np.ndarray, y: np.ndarray, iterations: int, background: float,
        **options) -> np.ndarray:  # fmt: skip
    """The oracle: convop.richardson_lucy on the extended-domain model, cropped."""
    model = convop.extended_domain(_unit(psf), y.shape)
    found = convop.richardson_lucy(model.op, y.astype(np.float32)[None], iterations,
                                   background=background, **options)  # fmt: skip
    return model.crop(found.x[0])


def _imagej(path: Path, values: np.ndarray, voxel: tuple[float, ...] | None = VOXEL) -> Path:
    meta = {"axes": "ZYX"[-values.ndim :]}
    if voxel is None:
        tifffile.imwrite(path, values, imagej=True, metadata=meta)
        return path
    meta |= {"unit": "micron", "spacing": voxel[0]} if values.ndim == 3 else {"unit": "um"}
    tifffile.imwrite(path, values, imagej=True, metadata=meta,
                     resolution=(1 / voxel[-1], 1 / voxel[-2]))  # fmt: skip
    return path


def _ome(path: Path, values: np.ndarray, voxel: tuple[float, ...], unit: str = "µm") -> Path:
    meta = {"axes": "ZYX"}
    for axis, size in zip("ZYX", voxel):
        meta |= {f"PhysicalSize{axis}": size, f"PhysicalSize{axis}Unit": unit}
    tifffile.imwrite(path, values, ome=True, metadata=meta)
    return path


def _deconvolve(capsys, stack: Path, psf: Path, output: Path, *options) -> tuple:
    """``convop deconvolve STACK --psf PSF --output OUTPUT --quiet OPTIONS``."""
    return run(capsys, "deconvolve", stack, "--psf", psf, "--output", output, "--quiet",
               *options)  # fmt: skip


# ---------------------------------------------------------------------- round trips
def _imagej_voxel(tif) -> tuple[float, ...]:
    """The voxel size in um of an ImageJ file, as tifffile reads its tags (the oracle)."""
    meta = tif.imagej_metadata
    assert meta["unit"] in ("micron", "um", "µm")
    (xn, xd), (yn, yd) = (tif.pages[0].tags[t].value for t in ("XResolution", "YResolution"))
    return meta["spacing"], yd / yn, xd / xn


def _ome_voxel(tif) -> tuple[float, ...]:
    """The voxel size in um of an OME-TIFF, from tifffile's parse of its XML (the oracle)."""
    pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    scale = {"µm": 1.0, "nm": 1e-3}
    return tuple(pixels[f"PhysicalSize{a}"] * scale[pixels[f"PhysicalSize{a}Unit"]]
                        for a in "ZYX")  # fmt: skip


class Flavour(NamedTuple):
    stack: Callable[[Path, np.ndarray], Path]
    psf: Callable[[Path, np.ndarray], Path]
    voxel: Callable  # the output's voxel size, read by tifffile alone (fails on another kind)


FLAVOURS = {
    "imagej": Flavour(lambda p, y: _imagej(p / "stack.tif", y),
                      lambda p, psf: _imagej(p / "psf.tif", psf), _imagej_voxel),
    # the stack's sizes in nanometres, the PSF's in micrometres: the same, once converted
    "ome": Flavour(lambda p, y: _ome(p / "stack.ome.tif", y, tuple(1e3 * v for v in VOXEL), "nm"),
                   lambda p, psf: _ome(p / "psf.ome.tif", psf, VOXEL), _ome_voxel),
}  # fmt: skip


@pytest.mark.parametrize("flavour", FLAVOURS.values(), ids=FLAVOURS)
def test_tiff_stack_round_trips_with_its_voxel_size(tmp_path, capsys, flavour):
    """The output has the stack's shape and voxel size (OME stays OME, in micrometres), and
    its values are convop.richardson_lucy's on the extended-domain model."""
    _, y = _counts()
    psf = _psf()
    stack, psf_file = flavour.stack(tmp_path, y), flavour.psf(tmp_path, psf)
    output = tmp_path / "out.tif"
    code, out, err = _deconvolve(capsys, stack, psf_file, output, "--iterations", 3,
                                 "--background", 2)  # fmt: skip
    assert (code, err) == (0, "")
    with tifffile.TiffFile(output) as tif:
        got, series = tif.asarray(), tif.series[0]
        voxel = flavour.voxel(tif)
    assert (series.shape, series.axes, got.dtype) == (SHAPE, "ZYX", np.float32)
    np.testing.assert_allclose(voxel, VOXEL, rtol=1e-6)
    np.testing.assert_allclose(got, _rl(psf, y, 3, 2.0), rtol=1e-6, atol=1e-6 * got.max())
    assert "voxel 0.3 x 0.1 x 0.1 um" in out
    assert out.rstrip().endswith(f"wrote {output} (float32, voxel 0.3 x 0.1 x 0.1 um)")


def _tiff(dtype):
    return lambda path, y: tifffile.imwrite(path, y.astype(dtype))


INPUTS = {
    "tiff uint8": ("stack.tif", _tiff(np.uint8)),
    "tiff uint16": ("stack.tif", _tiff(np.uint16)),
    "tiff float32": ("stack.tiff", _tiff(np.float32)),
    "npy float64": ("stack.npy", lambda path, y: np.save(path, y.astype(np.float64))),
    "npy int32": ("stack.npy", lambda path, y: np.save(path, y.astype(np.int32))),
    "npz one array": ("stack.npz", lambda path, y: np.savez(path, y)),
}


@pytest.mark.parametrize(("name", "write"), INPUTS.values(), ids=INPUTS)
def test_every_sample_type_gives_the_same_result(tmp_path, capsys, name, write):
    _, y = _counts()
    y = np.minimum(y, 255)  # exact in every type
    write(tmp_path / name, y)
    np.save(tmp_path / "psf.npy", _psf())
    code, _, err = _deconvolve(capsys, tmp_path / name, tmp_path / "psf.npy",
                               tmp_path / "out.npy", "--iterations", 2,
                               "--background", 1)  # fmt: skip
    assert (code, err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _rl(_psf(), y, 2, 1.0), rtol=1e-6,
                               atol=1e-6 * y.max())  # fmt: skip


def test_npz_with_several_arrays_takes_the_one_named(tmp_path, capsys):
    _, y = _counts()
    np.savez(tmp_path / "data.npz", stack=y, psf=_psf())
    argv = ("deconvolve", f"{tmp_path}/data.npz", "--psf", f"{tmp_path}/data.npz:psf",
            "--iterations", 2, "--background", 2, "--quiet")  # fmt: skip
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert re.fullmatch(r"convop: error: cannot read stack '.*data\.npz': it holds 2 arrays "
                        r"\['stack', 'psf'\]: name one as FILE\.npz:NAME\n", err)  # fmt: skip
    code, out, err = run(capsys, *argv[:1], f"{tmp_path}/data.npz:stack", *argv[2:])
    assert (code, err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "data-deconvolved.npy"), _rl(_psf(), y, 2, 2.0),
                               rtol=1e-6, atol=1e-6 * y.max())  # fmt: skip


def test_voxel_option_is_written_into_a_tiff_output(tmp_path, capsys):
    """A .npy stack carries no voxel size: --voxel gives it, and the TIFF keeps it; without
    a PSF voxel size nothing is compared."""
    _, y = _counts()
    np.save(tmp_path / "stack.npy", y)
    np.save(tmp_path / "psf.npy", _psf())
    code, _, err = _deconvolve(capsys, tmp_path / "stack.npy", tmp_path / "psf.npy",
                               tmp_path / "out.tif", "--iterations", 1, "--voxel",
                               "0.5,0.2,0.2")  # fmt: skip
    assert (code, err) == (0, "")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        np.testing.assert_allclose(_imagej_voxel(tif), (0.5, 0.2, 0.2), rtol=1e-6)


def test_image_2d_and_padding_boundaries_are_the_librarys(tmp_path, capsys):
    """A 2-D image with a 2-D PSF, written as a one-page TIFF; --boundary reflect is
    richardson_lucy on the 'same' convolution by the flipped (correlation) PSF."""
    _, y = _counts((16, 14))
    psf = _psf((5, 3))
    psf[0, 0] += 40.0  # asymmetric (a wrong flip would show), its centroid still the middle
    _imagej(tmp_path / "image.tif", y, VOXEL[1:])
    np.save(tmp_path / "psf.npy", psf)
    code, out, err = _deconvolve(capsys, tmp_path / "image.tif", tmp_path / "psf.npy",
                                 tmp_path / "out.tif", "--iterations", 3, "--background", 2,
                                 "--boundary", "reflect")  # fmt: skip
    assert (code, err) == (0, "")
    flipped = np.flip(_unit(psf)).copy()[None, None]  # torch correlates
    truth_op = convop.conv2d(flipped, (1, *y.shape), padding=(2, 1), padding_mode="reflect")
    want = convop.richardson_lucy(truth_op, y.astype(np.float32)[None], 3, background=2.0).x
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert (len(tif.pages), tif.series[0].axes) == (1, "YX")
        got = tif.asarray()
        (xn, xd), (yn, yd) = (tif.pages[0].tags[t].value for t in ("XResolution", "YResolution"))
    np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5 * y.max())
    np.testing.assert_allclose((yd / yn, xd / xn), VOXEL[1:], rtol=1e-6)
    assert "image '" in out


# ---------------------------------------------------------------------- the PSF
def test_psf_is_normalised_and_centred_by_its_centroid(tmp_path, capsys):
    """A PSF scaled by 37 and placed off-centre in a larger frame of zeros gives the result of
    the centred PSF summing to 1."""
    _, y = _counts()
    psf = _psf()
    frame = np.zeros((5, 11, 9), np.float32)
    frame[2:5, 1:6, 3:8] = 37 * psf
    np.save(tmp_path / "stack.npy", y)
    np.save(tmp_path / "framed.npy", frame)
    np.save(tmp_path / "psf.npy", _unit(psf))
    for name in ("framed", "psf"):
        code, _, err = _deconvolve(capsys, tmp_path / "stack.npy", tmp_path / f"{name}.npy",
                                   tmp_path / f"{name}-out.npy", "--iterations", 2,
                                   "--background", 2)  # fmt: skip
        assert (code, err) == (0, "")
    np.testing.assert_allclose(np.load(tmp_path / "framed-out.npy"), _rl(psf, y, 2, 2.0),
                               rtol=1e-5, atol=1e-5 * y.max())  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "psf-out.npy"), _rl(psf, y, 2, 2.0),
                               rtol=1e-5, atol=1e-5 * y.max())  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_centred_psf_is_odd_whole_and_centred_on_its_centroid(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 8, size=rng.integers(1, 4)))
    psf = rng.random(shape) * (rng.random(shape) < 0.6)
    psf.flat[rng.integers(psf.size)] = 1.0  # not all zero
    got = psf_module.centred(psf)
    assert all(k % 2 == 1 for k in got.shape)
    assert got.sum() == pytest.approx(psf.sum(), rel=1e-12)  # no sample dropped
    grids = np.indices(got.shape)
    centroid = [float((g * got).sum() / got.sum()) for g in grids]  # the oracle: numpy's
    assert [int(np.floor(c + 0.5)) for c in centroid] == [k // 2 for k in got.shape]
    assert np.count_nonzero(got) == np.count_nonzero(psf)


def test_report_names_the_psf_as_read_and_as_centred(tmp_path, capsys):
    _, y = _counts()
    frame = np.zeros((5, 11, 9), np.float32)
    frame[2:5, 1:6, 3:8] = _psf()
    np.save(tmp_path / "stack.npy", y)
    np.save(tmp_path / "psf.npy", frame)
    code, out, _ = _deconvolve(capsys, tmp_path / "stack.npy", tmp_path / "psf.npy",
                               tmp_path / "out.npy", "--iterations", 1)  # fmt: skip
    assert code == 0
    total = frame.sum(dtype=np.float64)
    assert f"(5 x 11 x 9, centred 3 x 5 x 5, divided by its sum {total:.6g})" in out


# ---------------------------------------------------------------------- background
def test_background_auto_is_the_darkest_blocks_mean(tmp_path, capsys):
    _, y = _counts((10, 20, 17), background=3.0)
    sums = plan_module.block_sums(y.astype(np.float32), 0, y.shape)
    starts = [range(0, n // 8 * 8, 8) for n in y.shape]  # the oracle: every whole block
    means = [y[z : z + 8, r : r + 8, c : c + 8].mean() for z, r, c in itertools.product(*starts)]
    value, _ = plan_module.darkest_block(sums, y.shape)
    assert value == pytest.approx(min(means), rel=1e-12)
    slabs = sum(plan_module.block_sums(y[a:b].astype(np.float32), a, y.shape)
                for a, b in ((0, 3), (3, 9), (9, 10)))  # fmt: skip
    np.testing.assert_allclose(slabs, sums, rtol=1e-12)  # ranks' slabs add up
    np.save(tmp_path / "stack.npy", y)
    np.save(tmp_path / "psf.npy", _psf())
    code, out, _ = _deconvolve(capsys, tmp_path / "stack.npy", tmp_path / "psf.npy",
                               tmp_path / "out.npy", "--iterations", 2)  # fmt: skip
    assert code == 0
    assert f"background {min(means):.4g} (auto: the mean of the darkest 8x8x8 block" in out
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), _rl(_psf(), y, 2, min(means)),
                               rtol=1e-5, atol=1e-5 * y.max())  # fmt: skip


# ---------------------------------------------------------------------- quality
def test_deconvolution_is_closer_to_the_truth_than_the_stack(tmp_path, capsys):
    truth, y = _counts((8, 24, 20), background=2.0)
    np.save(tmp_path / "stack.npy", y)
    _imagej(tmp_path / "psf.tif", _psf())
    for method in ("rl", "rl-tv"):
        code, _, err = _deconvolve(capsys, tmp_path / "stack.npy", tmp_path / "psf.tif",
                                   tmp_path / f"{method}.npy", "--method", method, "--accelerate",
                                   "--iterations", 8, "--background", 2)  # fmt: skip
        assert (code, err) == (0, "")
        got = np.load(tmp_path / f"{method}.npy")
        peak = truth.max()
        assert psnr(got / peak, truth / peak) > psnr((y - 2.0) / peak, truth / peak) + 1, method


@pytest.mark.parametrize("method", ["tikhonov", "tv"])
def test_least_squares_methods_get_closer_to_the_truth(tmp_path, capsys, method):
    truth, y = _counts((20, 18), background=2.0)
    np.save(tmp_path / "image.npy", y)
    np.save(tmp_path / "psf.npy", _psf((5, 5)))
    code, out, err = _deconvolve(
        capsys,
        tmp_path / "image.npy",
        tmp_path / "psf.npy",
        tmp_path / "out.npy",
        "--method",
        method,
        "--background",
        2,
    )
    assert (code, err) == (0, "")
    assert re.search(rf"^{method}: \d+ .*residual \|y - b - A x\| / \|y\| = ", out, re.MULTILINE)
    got = np.load(tmp_path / "out.npy")
    assert np.linalg.norm(got - truth) < np.linalg.norm(y - 2.0 - truth)


# ---------------------------------------------------------------------- refusals
class Refusal(NamedTuple):
    argv: str  # {tmp} is the test's directory; stack.npy, psf.npy are written first
    message: str  # a regex of the line after "convop: error: "


REFUSALS = {
    "missing stack": Refusal(
        "{tmp}/none.tif --psf {tmp}/psf.npy", r"stack '.*none\.tif' not found: .*"
    ),
    "missing PSF": Refusal("{tmp}/stack.npy --psf {tmp}/none.npy", r"PSF '.*none\.npy' not found"),
    "2-D PSF for a stack": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf2.npy",
        r"--psf: a 2-D PSF \(shape \(5, 5\)\) for a 3-D stack "
        r"\(6, 12, 10\) .*one axis per axis of the stack",
    ),
    "PSF larger": Refusal(
        "{tmp}/stack.npy --psf {tmp}/big.npy",
        r"--psf: the PSF, centred, has 13 samples along y .*more than the stack's 12 "
        r"\(stack '.*', shape \(6, 12, 10\)\): crop the PSF",
    ),
    "anisotropy": Refusal(
        "{tmp}/stack.tif --psf {tmp}/psf.tif --psf-voxel 0.1,0.1,0.1",
        r"--psf: the PSF's voxel size 0\.1 x 0\.1 x 0\.1 um differs from the stack's "
        r"0\.3 x 0\.1 x 0\.1 um \(stack '.*'\) along z \(anisotropy z/x 1, y/x 1 "
        r"against z/x 3, y/x 1\): resample the PSF",
    ),
    "negative counts": Refusal(
        "{tmp}/negative.npy --psf {tmp}/psf.npy",
        r"stack '.*' has 1 negative value, the first at plane 2, row 3, "
        r"column 4: counts are >= 0 .*",
    ),
    "NaN": Refusal(
        "{tmp}/nan.npy --psf {tmp}/psf.npy",
        r"stack '.*' has 2 non-finite values \(NaN or Inf\), the first at plane 1, "
        r"row 0, column 0",
    ),
    "NaN PSF": Refusal(
        "{tmp}/stack.npy --psf {tmp}/nan-psf.npy",
        r"PSF '.*' has 1 non-finite value \(NaN or Inf\)",
    ),
    "negative PSF": Refusal(
        "{tmp}/stack.npy --psf {tmp}/negative-psf.npy",
        r"PSF '.*' has 1 negative value, the smallest -1: a PSF is an "
        r"intensity",
    ),
    "zero PSF": Refusal("{tmp}/stack.npy --psf {tmp}/zero.npy", r"PSF '.*' is all zeros"),
    "output is the stack": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --output {tmp}/stack.npy",
        r"--output '.*stack\.npy' is the stack .*overwrite the input",
    ),
    "output links to the PSF": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --output {tmp}/link.npy",
        r"--output '.*link\.npy' is the PSF .*overwrite the input",
    ),
    "unknown method": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --method wiener",
        r"argument --method: invalid choice: 'wiener'.*",
    ),
    "tv too large": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --method rl-tv --tv 5",
        r"tv=5 could make the denominator .* tv must be below 0\.\d+ .*",
    ),
    "accelerate tikhonov": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --method tikhonov --accelerate",
        r"--accelerate is for --method rl and rl-tv, not tikhonov",
    ),
    "voxel count": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --voxel 0.1,0.1",
        r"--voxel gives 2 sizes, but stack '.*' has 3 axes \(6, 12, 10\)",
    ),
    "channels": Refusal(
        "{tmp}/channels.tif --psf {tmp}/psf.npy",
        r"cannot read stack '.*': has axes CYX: C \(channels\); expected YX .*",
    ),
    "damaged TIFF": Refusal(
        "{tmp}/damaged.tif --psf {tmp}/psf.npy", r"cannot read stack '.*damaged\.tif': \S.*"
    ),
    "output suffix": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --output {tmp}/out.png",
        r"--output must end in \.tif or \.tiff or \.npy, got .*",
    ),
    "memory guard": Refusal(
        "{tmp}/stack.npy --psf {tmp}/psf.npy --max-bytes 1K",
        r"deconvolving stack '.*' \(6 x 12 x 10\) by rl needs [\d.]+ KiB, "
        r"more than the limit of 1\.0 KiB .*pass --max-bytes \d+ or more .*",
    ),
}


def _refusal_files(tmp: Path) -> None:
    _, y = _counts()
    np.save(tmp / "stack.npy", y)
    np.save(tmp / "psf.npy", _psf())
    np.save(tmp / "psf2.npy", _psf((5, 5)))
    np.save(tmp / "big.npy", _psf((3, 13, 5)))
    _imagej(tmp / "stack.tif", y)
    _imagej(tmp / "psf.tif", _psf())
    whole = (tmp / "stack.tif").read_bytes()
    (tmp / "damaged.tif").write_bytes(whole[: len(whole) // 2])  # tifffile reads 1 page of 6
    negative = y.astype(np.float32)
    negative[2, 3, 4] = -1
    np.save(tmp / "negative.npy", negative)
    nan = y.astype(np.float32)
    nan[1, 0, 0] = nan[4, 2, 2] = np.nan
    np.save(tmp / "nan.npy", nan)
    bad_psf = _psf()
    bad_psf[1, 2, 2] = np.inf
    np.save(tmp / "nan-psf.npy", bad_psf)
    bad_psf[1, 2, 2] = -1
    np.save(tmp / "negative-psf.npy", bad_psf)
    np.save(tmp / "zero.npy", np.zeros((3, 3, 3)))
    (tmp / "link.npy").symlink_to(tmp / "psf.npy")
    tifffile.imwrite(tmp / "channels.tif", np.ones((2, 12, 10), np.uint16), imagej=True,
                     metadata={"axes": "CYX"})  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS)
def test_every_refusal_is_one_line_and_exit_2(tmp_path, capsys, case):
    _refusal_files(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    argv = case.argv.replace("{tmp}", str(tmp_path)).split()
    code, out, err = run(capsys, "deconvolve", *argv, "--quiet", "--iterations", 2)
    assert (code, out) == (2, ""), err
    assert re.fullmatch(rf"convop: error: {case.message}.*\n", err), err
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing overwritten


def test_time_guard_refuses_before_reading_the_stack(tmp_path, capsys, monkeypatch):
    """The time is iterations x 2 products of op.estimate()'s seconds (3 accelerated)."""
    _refusal_files(tmp_path)
    estimate_as(monkeypatch, Estimate(2.0, 2.0, "calibrated"))
    read = []
    monkeypatch.setattr(deconvolve_module, "read_stack", lambda *args, **kwargs: read.append(args))
    argv = ("deconvolve", tmp_path / "stack.npy", "--psf", tmp_path / "psf.npy", "--quiet",
            "--output", tmp_path / "out.npy")  # fmt: skip
    code, out, err = run(capsys, *argv, "--iterations", 200)
    assert (code, out) == (2, "")
    assert err == (
        f"convop: error: deconvolving stack '{tmp_path}/stack.npy' (6 x 12 x 10) by rl would "
        f"take up to about 800 s by convop's cost model with calibrated constants (200 "
        f"iterations), more than --max-seconds 600; pass --max-seconds 800 or more (or "
        f"fewer --iterations) to run it anyway\n"
    )
    code, _, err = run(capsys, *argv, "--iterations", 150, "--accelerate")
    assert code == 2
    assert "would take up to about 900 s" in err
    assert read == []


def test_without_tifffile_a_tiff_names_the_extra(tmp_path, capsys, monkeypatch):
    _refusal_files(tmp_path)
    monkeypatch.setitem(sys.modules, "tifffile", None)
    code, out, err = run(capsys, "deconvolve", tmp_path / "stack.tif", "--psf",
                         tmp_path / "psf.npy", "--quiet")  # fmt: skip
    assert (code, out) == (2, "")
    assert re.fullmatch(r"convop: error: TIFF files need tifffile, which is not installed: pip "
                        r"install tifffile; it comes with the tiff extra.*\n", err)  # fmt: skip


def test_default_output_is_next_to_the_stack(tmp_path, capsys, monkeypatch):
    _refusal_files(tmp_path)
    _ome(tmp_path / "cells.ome.tif", np.load(tmp_path / "stack.npy"), VOXEL)
    monkeypatch.chdir(tmp_path.parent)  # not the stack's directory
    for stack, written in (("cells.ome.tif", "cells-deconvolved.ome.tif"),
                           ("stack.npy", "stack-deconvolved.npy")):  # fmt: skip
        code, _, err = run(capsys, "deconvolve", tmp_path / stack, "--psf",
                             tmp_path / "psf.npy", "--quiet", "--iterations", 1)  # fmt: skip
        assert (code, err) == (0, "")
        assert (tmp_path / written).is_file()


def test_progress_bar_shows_the_cost_models_estimate(tmp_path, monkeypatch):
    _refusal_files(tmp_path)
    monkeypatch.setattr(sys, "stderr", Terminal())
    code = cli.main(["deconvolve", str(tmp_path / "stack.npy"), "--psf",
                     str(tmp_path / "psf.npy"), "--iterations", "2"])  # fmt: skip
    assert code == 0
    assert re.search(r"rl \(model: ~[\d.e-]+ s\)", sys.stderr.getvalue())
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: no bar
    assert cli.main(["deconvolve", str(tmp_path / "stack.npy"), "--psf",
                     str(tmp_path / "psf.npy"), "--iterations", "2"]) == 0  # fmt: skip
    assert sys.stderr.getvalue() == ""


# ---------------------------------------------------------------------- MPI launch
class _Watched(types.ModuleType):
    """A stand-in for mpi4py that records whether anything was taken from it."""

    touched: list[str]

    def __getattr__(self, name: str):
        self.touched.append(name)
        raise AttributeError(name)


@pytest.mark.parametrize("variable", deconvolve_mpi.MPI_ENVIRONMENT)
def test_mpi4py_is_imported_only_under_an_mpi_launcher(monkeypatch, variable):
    watched = _Watched("mpi4py")
    watched.touched = []
    monkeypatch.setitem(sys.modules, "mpi4py", watched)
    for name in deconvolve_mpi.MPI_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert deconvolve_mpi.world() is None
    assert watched.touched == []
    monkeypatch.setenv(variable, "1")
    assert deconvolve_mpi.world() is None  # 'from mpi4py import MPI' failed: one process
    assert "MPI" in watched.touched


def test_an_mpi_launch_without_mpi4py_names_the_extra(tmp_path, capsys, monkeypatch):
    _refusal_files(tmp_path)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "3")
    code, out, err = run(capsys, "deconvolve", tmp_path / "stack.npy", "--psf",
                         tmp_path / "psf.npy", "--quiet")  # fmt: skip
    assert (code, out) == (2, "")
    assert re.fullmatch(r"convop: error: convop deconvolve under mpiexec with 3 ranks needs "
                        r"mpi4py and pylops-mpi: .*the mpi extra\n", err)  # fmt: skip
