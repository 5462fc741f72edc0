"""convop.data: the test images, the kernels and PSNR."""

from __future__ import annotations

import numpy as np
import pytest

from convop.data import gaussian_kernel, motion_kernel, phantom, psnr


def test_phantom_spans_0_to_1():
    image = phantom(32)
    assert (image.shape, image.min(), image.max()) == ((32, 32), 0.0, 1.0)


@pytest.mark.parametrize("kernel", [gaussian_kernel(7, 1.2), motion_kernel(9, 30.0)])
def test_kernels_sum_to_1(kernel):
    assert kernel.shape in ((7, 7), (9, 9))
    assert abs(kernel.sum() - 1) < 1e-12


def test_psnr_of_a_known_error():
    truth = phantom(16)  # range 1
    # mse 0.01 against a peak of 1: 10 log10(1 / 0.01) = 20 dB, flattened or not
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-12)
    assert psnr((truth - 0.1).ravel(), truth) == pytest.approx(20.0, abs=1e-12)


def test_psnr_peak_is_the_range_of_truth_not_of_the_estimate():
    truth = 3 + 2 * phantom(16)  # range 2
    estimate = truth + 0.1
    assert psnr(estimate, truth) == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-12)
    assert psnr(10 * estimate, truth) == psnr(10 * estimate, truth, data_range=2.0)


def test_psnr_data_range_sets_the_peak():
    truth = phantom(16)
    assert psnr(truth + 0.1, truth, data_range=255) == pytest.approx(
        10 * np.log10(255**2 / 0.01), abs=1e-10
    )


def test_psnr_of_an_exact_estimate_is_infinite():
    truth = phantom(16)
    assert psnr(truth.copy(), truth) == float("inf")


def test_psnr_refuses_different_sizes():
    with pytest.raises(ValueError, match=r"as many values, got estimate.shape=\(15,\)"):
        psnr(np.zeros(15), phantom(16))


@pytest.mark.parametrize(
    ("data_range", "match"),
    [(None, r"got 0 \(the range of truth\); pass data_range"), (0.0, r"got 0 \(data_range\)")],
)
def test_psnr_refuses_a_peak_of_0(data_range, match):
    with pytest.raises(ValueError, match=match):
        psnr(np.ones(4), np.zeros(4), data_range=data_range)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: gaussian_kernel(9, float("inf")), "sigma must be a finite float > 0"),
        (lambda: gaussian_kernel(9, float("nan")), "sigma must be a finite float > 0"),
        (lambda: motion_kernel(9, float("nan")), "angle must be a finite number"),
        (lambda: motion_kernel(9, float("inf")), "angle must be a finite number"),
    ],
)
def test_kernels_refuse_non_finite_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("sigma", [1e-300, 5e-324])
def test_a_tiny_sigma_gives_the_delta_kernel_without_a_warning(sigma):
    kernel = gaussian_kernel(5, sigma)  # warnings are errors in this suite
    expected = np.zeros((5, 5))
    expected[2, 2] = 1.0
    np.testing.assert_array_equal(kernel, expected)


def test_a_huge_motion_angle_is_reduced_exactly():
    np.testing.assert_array_equal(motion_kernel(9, 45.0 + 360.0 * 2**44), motion_kernel(9, 45.0))
