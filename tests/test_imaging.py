"""convop.imaging: images and kernels read from files and specs, images written back.

The command line's tests (test_cli.py) run every file kind and every refusal through
``convop deblur`` and ``convop matrix``; these check the library functions themselves.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image as PILImage

from convop.data import gaussian_kernel, motion_kernel, phantom
from convop.imaging import load_kernel, read_image, require_finite, write_image


def test_load_kernel_specs_are_the_data_kernels(tmp_path):
    np.save(tmp_path / "k.npy", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(load_kernel("gaussian:7:1.5"), gaussian_kernel(7, 1.5))
    np.testing.assert_array_equal(load_kernel("gaussian:5"), gaussian_kernel(5))
    np.testing.assert_array_equal(load_kernel("motion:9:30"), motion_kernel(9, 30))
    np.testing.assert_array_equal(load_kernel(tmp_path / "k.npy"), np.arange(6.0).reshape(2, 3))


KERNEL_ERRORS = {
    "unknown": ("box:3", ValueError, r"unknown kernel 'box:3': expected KERNEL.npy, gaussian"),
    "syntax": ("motion:9:x", ValueError, r"kernel 'motion:9:x': expected motion:LENGTH\[:ANGLE\]"),
    "parameter": ("motion:8", ValueError, r"kernel 'motion:8': length must be odd"),
    "missing file": ("nope.npy", FileNotFoundError, r"kernel file not found: 'nope.npy'"),
    # Issue 24, item 11: the fields are finite (NaN ended in an IndexError, Inf was a box).
    "NaN angle": ("motion:9:nan", ValueError, r"^kernel 'motion:9:nan': ANGLE must be a finite"),
    "infinite sigma": ("gaussian:9:inf", ValueError, r"SIGMA must be a finite number, got 'inf'"),
    "sigma beyond float64": ("gaussian:9:1e400", ValueError, r"SIGMA .* got '1e400'"),
    "too many fields": ("gaussian:9:2:1", ValueError, r"expected gaussian:SIZE\[:SIGMA\]$"),
}


@pytest.mark.parametrize(("spec", "error", "match"), KERNEL_ERRORS.values(), ids=KERNEL_ERRORS)
def test_load_kernel_errors_name_the_spec(spec, error, match):
    with pytest.raises(error, match=match):
        load_kernel(spec)


@pytest.mark.parametrize("spec", ["gaussian:101", "motion:101"])
def test_load_kernel_refuses_a_built_in_kernel_over_the_memory_limit(spec):
    """Before it is made: gaussian:30001 took 20 GiB and minutes before convop refused it."""
    refusal = rf"^kernel '{spec}' needs [\d.]+ KiB, more than the limit of 1000 B \(max_bytes\)"
    with pytest.raises(MemoryError, match=rf"{refusal}; choose a smaller"):
        load_kernel(spec, max_bytes=1000)
    assert load_kernel(spec, max_bytes=10**6).shape == (101, 101)


def test_load_kernel_never_unpickles(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read kernel file '.*objects.npy'"):
        load_kernel(tmp_path / "objects.npy")


@pytest.mark.parametrize("bits", [8, 16])
def test_gray_png_round_trip_keeps_depth_and_scale(tmp_path, bits):
    truth = phantom(16)
    samples = np.round(truth * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)
    PILImage.fromarray(samples).save(tmp_path / "in.png")
    image = read_image(tmp_path / "in.png")
    assert (image.pixels.shape, image.bits, image.alpha) == ((16, 16, 1), bits, False)
    np.testing.assert_allclose(image.pixels[..., 0], samples / (2**bits - 1), rtol=0, atol=0)
    write_image(tmp_path / "out.png", image.pixels + 0.5, like=image)  # overshoot clipped
    with PILImage.open(tmp_path / "out.png") as written:
        expected = np.clip(samples / (2**bits - 1) + 0.5, 0, 1) * (2**bits - 1)
        np.testing.assert_array_equal(np.asarray(written), np.round(expected))


def test_rgba_png_reads_as_rgb_with_alpha_noted(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    PILImage.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert (image.pixels.shape, image.bits, image.alpha) == ((5, 7, 3), 8, True)
    np.testing.assert_array_equal(image.pixels * 255, rgba[..., :3])


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3)])
def test_npy_round_trip_is_exact(tmp_path, shape):
    values = np.random.default_rng(1).standard_normal(shape)
    np.save(tmp_path / "in.npy", values)
    image = read_image(tmp_path / "in.npy")
    assert (image.pixels.shape[:2], image.bits) == ((6, 5), None)
    write_image(tmp_path / "out.npy", image.pixels, like=image)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), values)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3)])
def test_npz_of_one_array_reads_like_npy(tmp_path, shape):
    values = np.random.default_rng(2).standard_normal(shape)
    np.savez_compressed(tmp_path / "in.npz", pixels=values)
    kept = values.copy()
    image = read_image(tmp_path / "in.npz")
    assert (image.pixels.shape[:2], image.bits) == ((6, 5), None)
    np.testing.assert_array_equal(image.pixels.reshape(values.shape), kept)


def test_npz_must_hold_one_real_array(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.ones((3, 3)), b=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"it must hold one array, got 2: \['a', 'b'\]"):
        read_image(tmp_path / "two.npz")
    np.savez(tmp_path / "complex.npz", a=np.ones((3, 3), dtype=complex))
    with pytest.raises(ValueError, match="must hold one real numeric array, got dtype complex"):
        read_image(tmp_path / "complex.npz")
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "objects.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "broken.npz")


@pytest.mark.parametrize("bits", [8, 16])
def test_gray_tiff_reads_through_pillow(tmp_path, bits):
    samples = np.round(phantom(16) * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)
    PILImage.fromarray(samples).save(tmp_path / "in.tif")
    image = read_image(tmp_path / "in.tif")
    assert (image.pixels.shape, image.bits) == ((16, 16, 1), bits)
    np.testing.assert_allclose(image.pixels[..., 0], samples / (2**bits - 1), rtol=0, atol=0)


def test_png_of_other_data_maps_their_range(tmp_path):
    values = np.linspace(-2.0, 2.0, 5)[None, :].repeat(2, axis=0)  # (2, 5), not in [0, 1]
    write_image(tmp_path / "out.png", values)
    with PILImage.open(tmp_path / "out.png") as written:
        assert written.mode == "L"
        np.testing.assert_array_equal(np.asarray(written)[0], [0, 64, 128, 191, 255])


def test_png_of_data_near_the_float64_limit_maps_their_range(tmp_path):
    values = 1e308 * np.linspace(-1.0, 1.0, 5)[None, :].repeat(2, axis=0)  # max - min > 1e308
    write_image(tmp_path / "out.png", values)
    with PILImage.open(tmp_path / "out.png") as written:
        np.testing.assert_array_equal(np.asarray(written)[0], [0, 64, 128, 191, 255])


def test_read_image_refuses_non_finite_pixels(tmp_path):
    values = np.ones((4, 4, 3))
    values[2, 1, 0] = np.nan
    np.save(tmp_path / "nan.npy", values)
    with pytest.raises(ValueError, match=r"1 non-finite value .* row 2, column 1, channel 0$"):
        read_image(tmp_path / "nan.npy")


def test_read_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file not found: '.*nope.png'"):
        read_image(tmp_path / "nope.png")


def test_image_files_without_pillow_say_how_to_install_it(tmp_path, monkeypatch):
    PILImage.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "gray.png")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import raises ImportError
    with pytest.raises(
        ImportError,
        match=r"need Pillow, .* pip install pillow \(it comes with convop's plot extra\)",
    ):
        read_image(tmp_path / "gray.png")


def test_write_image_refuses_other_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, 1\) or \(H, W, 3\), got \(2, 2, 2\)"):
        write_image(tmp_path / "x.npy", np.zeros((2, 2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_require_finite_names_the_index_without_axes():
    with pytest.raises(ValueError, match=r"^w has 1 non-finite value \(NaN or Inf\), the first at "
                                         r"index \(0, 1\)$"):  # fmt: skip
        require_finite(np.array([[0.0, np.inf]]), "w")
    require_finite(np.zeros(3), "w")  # finite: nothing happens
