"""convop.spectral: exact singular values and certified norms, against dense SVDs."""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convop
from convop import spectral
from convop._fourier.circulant import convolution_of, embedding_grid, polyphase_blocks
from convop._fourier.grams import CHOLESKY_SHIFT, Grams, cholesky_shift
from convop._fourier.lags import lags_error
from convop._fourier.rounding import Rounding, rounding_of
from convop._fourier.scaling import read_taps
from convop.data import gaussian_kernel
from convop.geometry import ConvGeometry

from .strategies import COMBO_IDS, COMBOS, conv_cases


def dense_matrix(op: convop.ConvOperator) -> np.ndarray:
    """The explicit float64/complex128 matrix of ``op``."""
    w = op.weight.detach()
    precise = w.to(torch.complex128 if w.is_complex() else torch.float64)
    dense = convop.ConvOperator(precise, op.geometry).todense()
    return dense.conj().T if op.is_adjoint else dense


def dense_svd(op: convop.ConvOperator) -> np.ndarray:
    """Singular values of the explicit matrix of ``op``."""
    return np.linalg.svd(dense_matrix(op), compute_uv=False)


def dense_norm(op: convop.ConvOperator) -> float:
    """``||op||_2`` from the explicit matrix: the top eigenvalue of its smaller Gram matrix."""
    a = dense_matrix(op)
    gram = a @ a.conj().T if a.shape[0] <= a.shape[1] else a.conj().T @ a
    return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0))


@st.composite
def circulant_operators(draw) -> convop.ConvOperator:
    """A random circulant convolution: circular padding summing to the kernel's reach (split
    at random between the sides), any ndim, channels, groups, dilation, a stride dividing the
    size; or a padding-free one with 1-sample kernels; then maybe its adjoint or transpose."""
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    pointwise = draw(st.booleans()) and draw(st.booleans())
    kernel, dilation, stride, size, padding = [], [], [], [], []
    for _ in range(ndim):
        k = 1 if pointwise else draw(st.integers(1, 4 if ndim < 3 else 3))
        d = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        reach = d * (k - 1)
        n = s * draw(st.integers(max(1, -(-reach // (2 * s))), 6 if ndim < 3 else 3))
        lo = draw(st.integers(max(0, reach - n), min(reach, n)))
        kernel.append(k), dilation.append(d), stride.append(s), size.append(n)
        padding.append((lo, reach - lo))
    geom = ConvGeometry(
        c_in, c_out, tuple(kernel), tuple(size), tuple(stride), tuple(padding), tuple(dilation),
        groups=groups, padding_mode="zeros" if pointwise else "circular",
    )  # fmt: skip
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.complex128]))
    seed = draw(st.integers(0, 2**16))
    w = torch.randn(geom.weight_shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    op = convop.ConvOperator(w, geom)
    return draw(st.sampled_from([op, op.H, op.T]))


# --------------------------------------------------------------------------- svdvals
@given(circulant_operators())
def test_svdvals_equal_the_dense_svd(op):
    values = convop.svdvals(op)
    expected = dense_svd(op)
    assert values.dtype == torch.float64
    assert values.device == op.weight.device
    assert values.shape == (min(op.shape),)
    assert torch.all(values[:-1] >= values[1:])  # sorted descending
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-10 * expected[0])


def test_svdvals_of_a_strided_3d_circular_conv_with_groups():
    w = torch.randn(6, 2, 3, 1, 2, dtype=torch.float64)
    op = convop.ConvOperator(w, ConvGeometry(4, 6, (3, 1, 2), (4, 6, 4), (2, 2, 2),
                                             ((1, 1), (0, 0), (1, 0)), (1, 1, 1), groups=2,
                                             padding_mode="circular"))  # fmt: skip
    np.testing.assert_allclose(convop.svdvals(op).numpy(), dense_svd(op), atol=1e-11)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda w: convop.conv2d(w, (2, 8, 8), padding=1), "padding_mode='zeros'"),
        (lambda w: convop.conv2d(w, (2, 8, 8), padding=1, padding_mode="reflect"), "reflect"),
        (lambda w: convop.conv2d(w, (2, 8, 8), padding_mode="circular"), "not by the kernel"),
        (
            lambda w: convop.conv2d(w, (2, 9, 8), padding=1, stride=2, padding_mode="circular"),
            "stride 2 does not divide the input size 9",
        ),
        (
            lambda w: convop.conv_transpose2d(w, (4, 8, 8), padding=1),
            "padding_mode='zeros'",
        ),
    ],
)
def test_svdvals_refuses_non_circulant_operators_and_points_to_opnorm(build, reason):
    op = build(torch.randn(4, 2, 3, 3))
    assert not convop.is_circulant(op)
    with pytest.raises(ValueError, match=reason) as info:
        convop.svdvals(op)
    assert "convop.opnorm" in str(info.value)


def test_svdvals_follow_the_weight_and_refuse_non_finite_weights():
    w = torch.randn(3, 3, 3, dtype=torch.float64)
    op = convop.conv1d(w, (3, 10), padding=1, padding_mode="circular")
    before = convop.svdvals(op)
    with torch.no_grad():
        w.mul_(2)
    np.testing.assert_allclose(convop.svdvals(op).numpy(), 2 * before.numpy(), rtol=1e-12)
    with torch.no_grad():
        w[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        convop.svdvals(op)
    with pytest.raises(ValueError, match="NaN or Inf"):
        convop.opnorm(op)


def test_svdvals_and_opnorm_reject_non_operators():
    with pytest.raises(TypeError, match=r"op must be a convop\.ConvOperator, got ndarray"):
        convop.svdvals(np.eye(3))
    with pytest.raises(TypeError, match=r"op must be a convop\.ConvOperator"):
        convop.opnorm(torch.eye(3))


# --------------------------------------------------------------------------- opnorm
def assert_brackets(result: convop.OpNorm, norm: float) -> None:
    assert isinstance(result, convop.OpNorm)
    slack = 1e-12 * norm  # the dense reference's own round-off
    assert result.lower <= norm + slack, (result, norm)
    assert result.upper >= norm - slack, (result, norm)
    assert result.lower <= result.estimate <= result.upper


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_opnorm_brackets_the_dense_norm(ndim, transposed, mode, data):
    case = data.draw(conv_cases(ndim, transposed, mode))
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32, torch.complex128]))
    op = case.operator(case.weight(dtype))
    op = data.draw(st.sampled_from([op, op.H, op.T]))
    norm = dense_norm(op)
    assert_brackets(convop.opnorm(op), norm)


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_opnorm_bounds_hold_without_the_explicit_matrix(ndim, transposed, mode, data,
                                                        monkeypatch_dense):  # fmt: skip
    """The iterative and structural bounds alone (no dense path), on the same cases."""
    case = data.draw(conv_cases(ndim, transposed, mode))
    kind = data.draw(st.sampled_from(["signed", "non-negative", "complex"]))
    weight = case.weight(torch.complex128 if kind == "complex" else torch.float64)
    if kind == "non-negative":  # these take the Collatz-Wielandt bound
        weight = weight.abs()
    op = case.operator(weight)
    op = data.draw(st.sampled_from([op, op.H, op.T]))
    rtol = data.draw(st.sampled_from([1e-1, 1e-3]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convop.opnorm(op, rtol=rtol, maxiter=30)
    assert_brackets(result, dense_norm(op))
    if not caught:
        assert result.upper <= (1 + rtol) * result.lower
    else:
        assert "apart, more than rtol" in str(caught[0].message)


@pytest.fixture
def monkeypatch_dense(monkeypatch):
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 0)
    monkeypatch.setattr(spectral, "GRAM_LIMIT", 0)


def nonnegative(weight_shape, input_shape, **options) -> Callable[[], convop.ConvOperator]:
    """Builds a 2-d operator of a uniformly random (non-negative) float64 weight, when called."""

    def build() -> convop.ConvOperator:
        return convop.conv2d(torch.rand(weight_shape, dtype=torch.float64), input_shape, **options)

    return build


@pytest.mark.parametrize(
    ("name", "build", "rtol"),
    [
        (
            "zeros, 8 -> 8 channels, 40^2",
            lambda: convop.conv2d(
                torch.randn(8, 8, 3, 3, dtype=torch.float64), (8, 40, 40), padding=1
            ),
            1e-2,
        ),
        (
            "zeros, 64 -> 64 channels, 56^2, float32",
            lambda: convop.conv2d(torch.randn(64, 64, 3, 3) / 24, (64, 56, 56), padding=1),
            1e-2,
        ),
        (
            "zeros, strided, 4 -> 6 channels, 1-D",
            lambda: convop.conv1d(
                torch.randn(6, 4, 5, dtype=torch.float64), (4, 600), padding=2, stride=2
            ),
            1e-3,
        ),
        (
            "transposed, stride 2, 32^2",
            lambda: convop.conv_transpose2d(
                torch.randn(4, 4, 4, 4, dtype=torch.float64), (4, 32, 32), stride=2, padding=1
            ),
            1e-2,
        ),
        ("reflect Gaussian blur, 128^2", lambda: blur(128, "reflect"), 1e-3),
        (
            "replicate Gaussian blur, 96^2, float32",
            lambda: blur(96, "replicate", torch.float32),
            1e-3,
        ),
        (
            "circular Gaussian blur, 96^2, stride 3",
            lambda: convop.conv2d(
                blur(96, "circular").weight,
                (1, 96, 96),
                stride=3,
                padding=4,
                padding_mode="circular",
            ),
            1e-6,
        ),
        (
            "reflect, non-negative depthwise 3 channels, 64^2",
            nonnegative((3, 1, 3, 3), (3, 64, 64), padding=1, groups=3, padding_mode="reflect"),
            1e-2,
        ),
        (
            "replicate, non-negative 2 -> 3 channels, 48^2",
            nonnegative((3, 2, 5, 5), (2, 48, 48), padding=2, padding_mode="replicate"),
            1e-2,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_opnorm_reaches_rtol_on_larger_operators(name, build, rtol, monkeypatch_dense):
    """Operators beyond the explicit matrix's size, one per kind of upper bound."""
    torch.manual_seed(0)
    op = build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no gap warning: rtol is reached
        result = convop.opnorm(op, rtol=rtol)
    assert result.upper <= (1 + rtol) * result.lower
    if max(op.shape) <= 2000:
        assert_brackets(result, dense_norm(op))


def blur(n: int, mode: str, dtype=torch.float64) -> convop.ConvOperator:
    """The 9 x 9 Gaussian blur of sigma sqrt(2) of an ``(n, n)`` image, 'same' size."""
    w = torch.from_numpy(gaussian_kernel(9, math.sqrt(2))).to(dtype)
    return convop.conv2d(w[None, None], (1, n, n), padding="same", padding_mode=mode)


def test_opnorm_of_a_circulant_is_exact():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    op = convop.conv2d(w, (3, 8, 8), padding=1, padding_mode="circular")
    result = convop.opnorm(op, rtol=1e-6)
    top = float(convop.svdvals(op)[0])
    assert result.gap < 1e-8
    assert result.lower <= top <= result.upper


def test_opnorm_warns_with_the_gap_it_reached(monkeypatch_dense):
    torch.manual_seed(1)
    op = convop.conv2d(torch.randn(4, 2, 3, 3, dtype=torch.float64), (2, 12, 12), padding=1,
                       padding_mode="reflect")  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"opnorm: the certified bounds .* apart, more than"
                                            r" rtol=0.001, after \d+ iterations"):  # fmt: skip
        result = convop.opnorm(op, rtol=1e-3, maxiter=5)
    assert_brackets(result, dense_norm(op))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rtol": 0.0}, ValueError, "rtol must be a positive finite float, got 0.0"),
        ({"rtol": math.nan}, ValueError, "rtol must be a positive finite float"),
        ({"rtol": "1e-3"}, TypeError, "rtol must be a float, got str"),
        ({"rtol": True}, TypeError, "rtol must be a float, got bool"),
        ({"maxiter": 0}, ValueError, "maxiter must be a positive int, got 0"),
        ({"maxiter": 2.5}, ValueError, "maxiter must be a positive int, got 2.5"),
    ],
)
def test_opnorm_rejects_bad_arguments(kwargs, error, match):
    op = convop.conv1d(torch.randn(1, 1, 3), (1, 8), padding=1)
    with pytest.raises(error, match=match):
        convop.opnorm(op, **kwargs)


def test_opnorm_follows_the_weight_and_leaves_it_alone():
    w = torch.randn(2, 2, 3, dtype=torch.float64)
    op = convop.conv1d(w, (2, 300), padding=1, padding_mode="replicate")
    kept = w.clone()
    first = convop.opnorm(op, rtol=1e-2)
    assert torch.equal(w, kept)
    with torch.no_grad():
        w.mul_(3)
    second = convop.opnorm(op, rtol=1e-2)
    assert second.lower > 2.9 * first.lower
    assert second.upper < 3.1 * first.upper


def test_opnorm_of_a_separable_blur_is_tight_without_iterating_much(monkeypatch_dense):
    op = blur(256, "reflect")
    result = convop.opnorm(op, rtol=1e-3)
    assert result.lower >= 1.0
    assert result.upper <= 1.001 * result.lower


@pytest.mark.parametrize(
    ("weight_shape", "input_shape", "options"),
    [
        ((16, 16, 3, 3), (16, 20, 20), {"padding": 1}),
        ((6, 4, 3, 3), (4, 17, 15), {"stride": 2, "padding": 1, "dilation": (1, 2)}),
        ((12, 3, 5), (3, 40), {"padding": 2}),  # more outputs: the input-side Grams
        ((8, 2, 3, 3, 3), (4, 6, 7, 5), {"padding": 1, "groups": 2}),
        ((32, 32, 3, 3), (32, 12, 12), {"padding": 1, "padding_mode": "reflect"}),
    ],
    ids=["16ch", "strided-dilated", "input-side", "3d-groups", "32ch-reflect"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_precision_gram_test_never_passes_above_the_peak(weight_shape, input_shape,
                                                               options, dtype):  # fmt: skip
    """The float32 blocks and Cholesky test (taken when rtol >= 1e-2) certify nothing false.

    At targets just below the exact peak some block must fail and be computed exactly; at
    targets above it the bound is the target.
    """
    w = torch.randn(weight_shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    op = getattr(convop, f"conv{len(input_shape) - 1}d")(w, input_shape, **options)
    grid = embedding_grid(op.geometry)
    grams = Grams(w, op.geometry, grid)
    blocks, _ = polyphase_blocks(w, op.geometry, grid, half=True)  # formed, not from lags
    top = float(torch.linalg.svdvals(blocks).max())
    assert math.sqrt(grams.top_eigenvalue()) == pytest.approx(top, rel=1e-12)
    peak = grams.bound(None)  # raised by the blocks' round-off budget, which stays small
    assert top <= peak <= top * (1 + 1e-10)
    for factor in (0.99, 0.999, 0.9999):
        assert grams.bound(peak * factor, slack=1e-2) >= peak * (1 - 1e-12)
    for factor in (1.003, 1.01):
        assert grams.bound(peak * factor, slack=1e-2) == peak * factor


@pytest.mark.parametrize("groups", [1, 2])
def test_single_precision_test_flags_every_block_above_the_level(groups):
    """Soundness of the chunked float32 Cholesky test, block by block against eigvalsh."""
    w = torch.randn(16, 16 // groups, 3, 3, generator=torch.Generator().manual_seed(4))
    op = convop.conv2d(w, (16, 30, 30), padding=1, groups=groups)
    grams = Grams(w, op.geometry, embedding_grid(op.geometry))
    top = torch.linalg.eigvalsh(grams.exact())[:, -1]
    level = float(top.median())  # half the blocks above it
    failed = torch.zeros(grams.count, dtype=torch.bool)
    failed[grams._single_failures(level)] = True
    # what bound() allows for: the blocks' error and the factorisation's backward error
    slack = grams._single_error(level) + CHOLESKY_SHIFT[torch.complex64] * level
    assert bool(failed[top > level + slack].all())  # every block above is caught
    assert not bool(failed[top < level - 2 * slack].any())  # and the clear ones pass
    assert 0 < grams._single_error(level) < 1e-3 * level


def test_opnorm_certifies_a_zero_padded_layer_from_its_warm_start(monkeypatch_dense):
    """The windowed plane wave at the spectrum's peak is within rtol=1e-2 at once."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
    op = convop.from_module(layer, (16, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convop.opnorm(op, rtol=1e-2, maxiter=1)  # one Lanczos step could not
    assert result.upper <= 1.01 * result.lower


def test_opnorm_falls_back_to_the_exact_gram_matrix_where_bounds_stay_apart():
    """Large reflect padding makes the embedding loose; a 480-column operator is exact."""
    w = torch.randn(4, 2, 1, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = convop.conv3d(w, (4, 4, 5, 6), padding=3, groups=2, padding_mode="reflect")
    assert op.shape[0] * op.shape[1] > spectral.DENSE_LIMIT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convop.opnorm(op, rtol=1e-3)
    assert result.gap < 1e-8
    assert_brackets(result, dense_norm(op))


@pytest.mark.cuda
def test_svdvals_and_opnorm_run_on_the_weights_device():
    w = torch.randn(4, 4, 3, 3, device="cuda")
    op = convop.conv2d(w, (4, 16, 16), padding=1, padding_mode="circular")
    values = convop.svdvals(op)
    assert values.device.type == "cuda"
    assert values.dtype == torch.float64
    zero = convop.conv2d(w, (4, 40, 40), padding=1)
    result = convop.opnorm(zero, rtol=1e-2)
    cpu = convop.opnorm(convop.conv2d(w.cpu(), (4, 40, 40), padding=1), rtol=1e-2)
    assert result.lower <= cpu.upper
    assert cpu.lower <= result.upper


# --------------------------------------------------------------------------- every scale
#: The limits as shipped, before any test patches them.
DENSE_LIMIT, GRAM_LIMIT = spectral.DENSE_LIMIT, spectral.GRAM_LIMIT


def opnorm_allowing_a_gap(op: convop.ConvOperator, **kwargs) -> convop.OpNorm:
    """``convop.opnorm``, where bounds left more than ``rtol`` apart (a ``RuntimeWarning``: the
    embedding is loose on small zero-padded operators) are allowed: the bracket is tested."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "opnorm: the certified bounds", RuntimeWarning)
        return convop.opnorm(op, **kwargs)


def scaled_norm(build, weight: torch.Tensor, exponent: int) -> float:
    """``||build(weight * 2**exponent)||``: the dense norm of ``build(weight)``, times
    ``2**exponent`` (exact: a power of two), where the dense matrix's squares would not fit."""
    return math.ldexp(dense_norm(build(weight)), exponent)


class ScaleCase(NamedTuple):
    """An operator ``build(weight)`` and the path ``opnorm`` takes for it."""

    name: str
    build: Callable[[torch.Tensor], convop.ConvOperator]
    weight_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float64
    iterative: bool = True  # the explicit-matrix paths turned off: Lanczos and bounds
    non_negative: bool = False


SCALE_CASES = [
    ScaleCase(
        "circulant",
        lambda w: convop.conv1d(w, (2, 8), padding=1, padding_mode="circular"),
        (2, 2, 3),
        iterative=False,
    ),
    ScaleCase(
        "explicit matrix",
        lambda w: convop.conv2d(w, (2, 5, 5), padding=1),
        (3, 2, 3, 3),
        iterative=False,
    ),
    ScaleCase("zeros, signed", lambda w: convop.conv2d(w, (2, 12, 12), padding=1), (3, 2, 3, 3)),
    ScaleCase(
        "reflect, non-negative",
        lambda w: convop.conv2d(w, (2, 10, 10), padding=1, padding_mode="reflect"),
        (2, 2, 3, 3),
        non_negative=True,
    ),
    ScaleCase(
        "depthwise, replicate",
        lambda w: convop.conv2d(w, (2, 12, 12), padding=1, groups=2, padding_mode="replicate"),
        (2, 1, 3, 3),
    ),
    ScaleCase(
        "transposed, stride 2",
        lambda w: convop.conv_transpose1d(w, (2, 9), stride=2, padding=1),
        (2, 3, 4),
    ),
    ScaleCase(
        "complex, zeros",
        lambda w: convop.conv1d(w, (2, 30), padding=2),
        (2, 2, 5),
        dtype=torch.complex128,
    ),
]


@pytest.mark.parametrize("exponent", [-1000, -600, 600, 1000])
@pytest.mark.parametrize("case", SCALE_CASES, ids=lambda c: c.name)
def test_opnorm_brackets_the_norm_at_every_scale(case, exponent, monkeypatch):
    """Squares of 2**±600 leave float64's range: the bounds must not (issue 24, item 1)."""
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 0 if case.iterative else DENSE_LIMIT)
    monkeypatch.setattr(spectral, "GRAM_LIMIT", 0 if case.iterative else GRAM_LIMIT)
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(case.weight_shape, dtype=case.dtype, generator=gen)
    weight = weight.abs() if case.non_negative else weight
    unit = opnorm_allowing_a_gap(case.build(weight), rtol=1e-2)
    result = opnorm_allowing_a_gap(case.build(weight * 2.0**exponent), rtol=1e-2)
    assert_brackets(result, scaled_norm(case.build, weight, exponent))
    # homogeneous: the same bracket as at scale 1, scaled (a power of two scales exactly)
    expected = [math.ldexp(v, exponent) for v in unit]
    np.testing.assert_allclose(list(result), expected, rtol=1e-13, atol=0)


def test_opnorm_of_the_issue_reproducers():
    """A circulant of tiny taps had upper = 0; a huge 1x1 kernel had lower = inf."""
    w = torch.randn(1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tiny = convop.conv1d(w * 1e-200, (1, 8), padding=1, padding_mode="circular")
    assert_brackets(convop.opnorm(tiny), float(convop.svdvals(tiny)[0]))
    huge = convop.conv1d(torch.tensor([[[1e200]]], dtype=torch.float64), (1, 4))
    assert_brackets(convop.opnorm(huge), 1e200)
    assert float(convop.svdvals(huge)[0]) == 1e200


@pytest.mark.parametrize("scale", [2.0**-100, 2.0**-60, 1e9, 2.0**100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_opnorm_in_single_precision_near_its_range(dtype, scale, monkeypatch_dense):
    """Lanczos runs in float32: ||A^H A v|| of a norm above ~4e9 overflowed (issue 24, 2)."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(2, 2, 3, 3, dtype=dtype, generator=gen) * scale
    op = convop.conv2d(w, (2, 16, 16), padding=1)
    result = opnorm_allowing_a_gap(op, rtol=1e-2)
    assert_brackets(result, dense_norm(op))  # the float32 weight, exactly, in float64


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (convop.opnorm, r"opnorm: the operator's norm is about 2\*\*1024\.6, too close to or "
                        r"beyond float64's largest"),
        (convop.svdvals, r"svdvals\(\): the largest singular value is about 2\*\*1024\.6, "
                         r"beyond float64's largest"),
    ],
    ids=["opnorm", "svdvals"],
)  # fmt: skip
def test_a_norm_beyond_float64_is_refused(entry, message):
    w = torch.full((1, 1, 3), 2.0**1023, dtype=torch.float64)  # finite taps, norm 3 * 2**1023
    op = convop.conv1d(w, (1, 8), padding=1, padding_mode="circular")
    with pytest.raises(ValueError, match=message):
        entry(op)


def test_opnorm_of_a_subnormal_norm_rounds_outward_and_says_so():
    norm = 2.0**-1073  # a subnormal: its neighbours are 2**-1074 apart
    op = convop.conv1d(torch.tensor([[[norm]]], dtype=torch.float64), (1, 4))
    with pytest.warns(RuntimeWarning, match=r"apart, more than rtol=0\.001, in float64's "
                                            r"subnormal range"):  # fmt: skip
        result = convop.opnorm(op)
    assert result.lower <= norm <= result.upper
    assert result.upper <= 4 * norm
    assert float(convop.svdvals(op)[0]) == norm


@pytest.mark.parametrize(
    ("build", "weight_shape"),
    [
        (lambda w: convop.conv1d(w, (2, 8), padding=1, padding_mode="circular"), (2, 2, 3)),
        (lambda w: convop.conv2d(w, (2, 5, 5), padding=1), (3, 2, 3, 3)),
        (lambda w: convop.conv2d(w, (2, 50, 50), padding=1), (3, 2, 3, 3)),
        (lambda w: convop.conv2d(w, (4, 40, 40), padding=1, groups=4), (4, 1, 3, 3)),
    ],
    ids=["circulant", "explicit matrix", "iterative", "depthwise"],
)
def test_opnorm_of_an_all_zero_weight_is_zero(build, weight_shape):
    result = convop.opnorm(build(torch.zeros(weight_shape, dtype=torch.float64)))
    assert result == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda w: convop.conv1d(w, (1, 1), padding=1),
        lambda w: convop.conv_transpose1d(w, (1, 1), padding=1),
        lambda w: convop.conv1d(w, (1, 1), padding=2, dilation=2, stride=2),
    ],
    ids=["conv", "transposed", "strided-dilated"],
)
def test_opnorm_scales_by_the_taps_that_read_the_input(build):
    """Outer taps here meet only zero padding: 2**600 there must not set the scale, or the
    centre's 2**-600 would vanish when squared."""
    op = build(torch.tensor([[[2.0**600, 2.0**-600, 2.0**600]]], dtype=torch.float64))
    matrix = np.ldexp(dense_matrix(op), 600)  # the explicit matrix, by index arithmetic
    norm = math.ldexp(float(np.linalg.norm(matrix, 2)), -600)
    assert_brackets(convop.opnorm(op), norm)


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_the_taps_read_are_those_in_the_explicit_matrix(ndim, transposed, mode, data):
    """opnorm scales by the largest tap the operator reads: exactly the taps in its matrix.

    Tap ``t`` (a kernel position) is ``2**t`` in every channel, so each matrix entry (a sum
    of distinct taps, by index arithmetic) shows in its bits which taps land in it.
    """
    case = data.draw(conv_cases(ndim, transposed, mode))
    taps = math.prod(case.kernel_size)
    kernel = (2.0 ** torch.arange(taps, dtype=torch.float64)).reshape(case.kernel_size)
    op = case.operator(kernel.expand(case.weight_shape).clone())
    conv, _ = convolution_of(op.geometry)
    read = read_taps(op.geometry, conv)
    read = torch.ones(case.kernel_size, dtype=torch.bool) if read is None else read
    expected = int(kernel[read].sum())
    seen = np.bitwise_or.reduce(op.todense().astype(np.int64), axis=None)
    assert int(seen) == expected


@pytest.mark.parametrize(
    ("build", "weight_shape"),
    [
        (lambda w: convop.conv1d(w, (4, 200), padding=1, groups=4), (4, 1, 3)),
        (lambda w: convop.conv2d(w, (3, 20, 20), padding=1, groups=3), (3, 1, 3, 3)),
        (lambda w: convop.conv3d(w, (2, 8, 8, 8), padding=1, groups=2), (2, 1, 2, 2, 2)),
        (
            lambda w: convop.conv2d(w, (4, 20, 20), padding=1, groups=2, padding_mode="reflect"),
            (4, 2, 3, 3),
        ),
    ],
    ids=["1d-depthwise", "2d-depthwise", "3d-depthwise", "2d-groups-reflect"],
)
def test_opnorm_with_a_pruned_channel(build, weight_shape, monkeypatch_dense):
    """A zero channel had no phase (0/0) in the separable bound's 1-D factors, and no
    direction (0/0) in the rank-one fit of a 3-D kernel (issue 24, item 3)."""
    w = torch.randn(weight_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w[1] = 0
    op = build(w)
    assert_brackets(opnorm_allowing_a_gap(op, rtol=1e-2), dense_norm(op))


def test_lipschitz_of_a_depthwise_layer_with_a_pruned_channel():
    """The issue's reproducer, through convop.lipschitz (400 samples: no explicit matrix)."""
    layer = torch.nn.Conv1d(4, 4, 3, padding=1, groups=4, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight[2] = 0
    bound = convop.lipschitz(layer, (4, 400))
    channels = [dense_norm(convop.conv1d(layer.weight[c : c + 1].detach(), (1, 400), padding=1))
                for c in (0, 1, 3)]  # fmt: skip
    assert max(channels) <= bound <= (1 + 2e-2) * max(channels)


def test_opnorm_with_tiny_and_huge_channels(monkeypatch_dense):
    """Block diagonal over groups: the norm is the larger group's, 2**1200 times the other."""
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    exponents = torch.tensor([-600.0, 600.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    op = convop.conv2d(w * 2.0**exponents, (2, 20, 20), padding=1, groups=2)
    channels = [
        scaled_norm(lambda v: convop.conv2d(v, (1, 20, 20), padding=1), w[c : c + 1], e)
        for c, e in ((0, -600), (1, 600))
    ]
    assert_brackets(opnorm_allowing_a_gap(op, rtol=1e-2), max(channels))


def test_opnorm_lower_bound_keeps_its_round_off_margin():
    """Issue 31: an identity (norm exactly 1) through the iterative bracket; the lower bound
    must sit below 1 by the margin the code applies, or a lost margin goes unnoticed."""
    w = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = w[1, 1, 1, 1] = 1  # the centre tap of each channel: x -> x
    op = convop.conv2d(w, (2, 64, 64), padding=1)
    assert not convop.is_circulant(op)
    assert op.shape[0] * op.shape[1] > spectral.DENSE_LIMIT  # not the explicit matrix
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convop.opnorm(op, rtol=1e-3)
    assert result.lower <= (1 - spectral.MARGIN / 2) * 1.0
    assert result.upper >= 1.0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_opnorm_brackets_the_norm_at_drawn_scales(data, monkeypatch):
    """Any kind of operator, scaled by 2**±600 or 2**±1000, some groups pruned or scaled
    2**300 apart, through every path: the bracket holds."""
    case = data.draw(st.sampled_from(COMBOS).flatmap(lambda c: conv_cases(*c)), label="case")
    dtype = data.draw(st.sampled_from([torch.float64, torch.complex128]), label="dtype")
    exponent = data.draw(st.sampled_from([-1000, -600, 600, 1000]), label="exponent")
    groups = case.options["groups"]
    weight = case.weight(dtype)
    # per group: kept, pruned, or 2**-300 times (group g's channels are a block of the first dim)
    factors = data.draw(st.lists(st.sampled_from([1.0, 0.0, 2.0**-300]), min_size=groups,
                                 max_size=groups), label="group factors")  # fmt: skip
    weight = weight * torch.tensor(factors, dtype=torch.float64).repeat_interleave(
        weight.shape[0] // groups
    ).reshape(-1, *[1] * (weight.ndim - 1))
    iterative = data.draw(st.booleans(), label="iterative")
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 0 if iterative else DENSE_LIMIT)
    monkeypatch.setattr(spectral, "GRAM_LIMIT", 0 if iterative else GRAM_LIMIT)
    op = case.operator(weight * 2.0**exponent)
    result = opnorm_allowing_a_gap(op, rtol=1e-2, maxiter=30)
    assert_brackets(result, scaled_norm(case.operator, weight, exponent))


# --------------------------------------------------------------------------- round-off
def exact_norm(op: convop.ConvOperator) -> mpmath.mpf:
    """``||op||_2`` of the operator's exact weight: its exact matrix (each entry a sum of taps,
    in rationals, by the copies of each tap that index arithmetic places), then the largest
    singular value in 60-digit arithmetic (mpmath). Small operators only."""
    w = op.weight.detach()
    rows, cols = math.prod(op.geometry.output_shape), math.prod(op.geometry.input_shape)
    real = [[Fraction(0)] * cols for _ in range(rows)]
    imag = [[Fraction(0)] * cols for _ in range(rows)]
    for index in itertools.product(*map(range, w.shape)):
        one = torch.zeros(w.shape, dtype=torch.float64)
        one[index] = 1
        copies = convop.ConvOperator(one, op.geometry).todense()  # small integers: exact
        value = complex(w[index].item())
        for i, j in zip(*np.nonzero(copies)):
            real[i][j] += Fraction(value.real) * int(copies[i, j])
            imag[i][j] += Fraction(value.imag) * int(copies[i, j])
    with mpmath.workdps(60):
        exact = mpmath.matrix(rows, cols)
        for i, j in itertools.product(range(rows), range(cols)):
            re, im = real[i][j], imag[i][j]
            exact[i, j] = mpmath.mpc(mpmath.mpf(re.numerator) / re.denominator,
                                     mpmath.mpf(im.numerator) / im.denominator)  # fmt: skip
        return max(mpmath.svd_c(exact, compute_uv=False))


def assert_brackets_exactly(result: convop.OpNorm, norm: mpmath.mpf) -> None:
    """``lower <= norm <= upper`` with no slack: ``norm`` is exact to 60 digits."""
    with mpmath.workdps(60):
        assert mpmath.mpf(result.lower) <= norm <= mpmath.mpf(result.upper), (result, norm)
    assert result.lower <= result.estimate <= result.upper


def folded(taps: list, dtype: torch.dtype = torch.float64, mode: str = "replicate",
           **options) -> convop.ConvOperator:  # fmt: skip
    """The convolution of one input sample padded by 1 with ``mode``: every tap folds onto
    it, so the matrix is the sum of the taps (``C_out x C_in``)."""
    w = torch.tensor(taps, dtype=dtype)
    return convop.conv1d(w, (w.shape[1], 1), padding=1, padding_mode=mode, **options)


#: 2 -> 3 channels, taps ``[a, 1e-17 b, -a]`` per pair: the matrix is ``1e-17 B``
CHANNELS = [[[a, 1e-17 * b, -a] for a, b in ((o + 1, o - c), (c + 2, 2 * c + o))]
            for o, c in zip(range(3), (1, 0, 1))]  # fmt: skip


class Cancelling(NamedTuple):
    """An operator whose norm is tiny next to its taps, and the path ``opnorm`` takes."""

    name: str
    build: Callable[[], convop.ConvOperator]
    iterative: bool = False  # the explicit-matrix paths turned off: Lanczos and bounds
    tight: bool = True  # an upper bound near the norm exists on that path


CANCELLING = [
    Cancelling("replicate", lambda: folded([[[1, 1e-17, -1]]])),  # the issue's reproducer
    Cancelling("circular", lambda: folded([[[1, 1e-17, -1]]], mode="circular")),
    Cancelling("rounded up", lambda: folded([[[0.1, 0.2, -0.3]]])),  # computed 2x too large
    Cancelling("complex", lambda: folded([[[1 + 2j, 1e-17j, -1 - 2j]]], torch.complex128)),
    Cancelling("float32", lambda: folded([[[1, 1e-17, -1]]], torch.float32)),
    Cancelling("channels", lambda: folded(CHANNELS)),
    Cancelling("channels, circular", lambda: folded(CHANNELS, mode="circular")),
    Cancelling("adjoint", lambda: folded(CHANNELS).H),
    Cancelling("transpose", lambda: folded([[[1 + 2j, 1e-17j, -1 - 2j]]], torch.complex128).T),
    Cancelling("iterative", lambda: folded([[[1, 1e-17, -1]]]), iterative=True),
    Cancelling("iterative, rounded up", lambda: folded([[[0.1, 0.2, -0.3]]]), iterative=True),
    Cancelling(
        "iterative, fft", lambda: folded([[[0.1, 0.2, -0.3]]], method="fft"), iterative=True
    ),
    # channels mix: neither separable nor non-negative, and the circulant embedding is no
    # tighter than its grid allows (the explicit matrix would be, past GRAM_LIMIT)
    Cancelling("iterative, channels", lambda: folded(CHANNELS).H, iterative=True, tight=False),
]


@pytest.mark.parametrize("case", CANCELLING, ids=lambda c: c.name)
def test_opnorm_brackets_a_norm_whose_taps_cancel(case, monkeypatch):
    """Padding folds every tap onto one sample, and they cancel: the true norm is ~1e-17 but
    the computed matrix held 0 (or twice the norm), and opnorm returned it as certified."""
    monkeypatch.setattr(spectral, "DENSE_LIMIT", 0 if case.iterative else DENSE_LIMIT)
    monkeypatch.setattr(spectral, "GRAM_LIMIT", 0 if case.iterative else GRAM_LIMIT)
    op = case.build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convop.opnorm(op)
    assert_brackets_exactly(result, exact_norm(op))
    assert result.upper > 0  # no silent 0
    assert result.upper < (1e-5 if case.tight else math.inf)  # the doubt: absolute, small
    assert [w.category for w in caught] == [RuntimeWarning]  # the gap is said, and why
    assert re.search(r"apart, more than rtol=0\.001, .*round-off alone", str(caught[0].message))


def perturbed_lags(fraction: float):
    """``gram_lags`` with every lag lowered by ``fraction`` of the error ``lags_error``
    allows, ``c ||w_a|| ||w_b||`` in entry ``[a, b]``: the direction that lowers the block
    at frequency 0 most (``R_{-delta} = R_delta^T`` is kept)."""
    real = convop._fourier.grams.gram_lags

    def gram_lags(weight, geom, *, input_side):
        taps, deltas = real(weight, geom, input_side=input_side)
        g = geom.groups
        w = weight.detach().to(torch.float64).reshape(g, geom.out_channels // g,
                                                      geom.in_channels // g, -1)  # fmt: skip
        norms = torch.linalg.vector_norm(w, dim=(1, 3) if input_side else (2, 3))  # (G, p)
        outer = (norms[:, :, None] * norms[:, None, :]).reshape(g, 1, -1)
        c = lags_error(geom, input_side=input_side, dtype=weight.dtype)
        return taps - fraction * c * outer, deltas

    return gram_lags


#: Circulant convolutions (one sample, circular padding) whose blocks are tiny next to the
#: lags' round-off, with exact matrices in float64 (``a + 2**-20 b`` is exact).
LAG_CASES = [
    ("one channel", [[[1.0, 2.0**-20, -1.0]]]),
    ("input side", [[[3.0, 5 * 2.0**-20, -3.0]], [[-2.0, 7 * 2.0**-20, 2.0]]]),  # 1 -> 2
    ("output side", [[[3.0, 5 * 2.0**-20, -3.0], [1.0, -(2.0**-20), -1.0]]]),  # 2 -> 1
]


@pytest.mark.parametrize(("name", "taps"), LAG_CASES, ids=[c[0] for c in LAG_CASES])
def test_opnorm_budgets_the_lags_round_off(name, taps, monkeypatch):
    """Lags off by just less than lags_error allows, in the worst direction, must not move
    the bounds past the norm: the blocks' budget E covers them (issue 24, lag error)."""
    op = folded(taps, mode="circular")
    norm = dense_norm(op)  # the matrix is exact in float64: so is this, to round-off
    monkeypatch.setattr(convop._fourier.grams, "gram_lags", perturbed_lags(0.99))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "opnorm: the certified bounds", RuntimeWarning)
        assert_brackets(convop.opnorm(op), norm)
    conv = op.geometry
    grams = Grams(op.weight, conv, conv.input_size)
    assert grams.top_eigenvalue() < norm**2 * (1 - 1e-3)  # the lags lowered the block
    for factor in (1 - 1e-4, 1 - 1e-6):  # the Cholesky test at targets below the peak
        assert grams.bound(norm * factor) >= norm * (1 - 1e-12)
        assert grams.bound(norm * factor, slack=1e-2) >= norm * (1 - 1e-12)


class Ordinary(NamedTuple):
    """A layer of random taps: ``conv{D}d(weight, input_shape, **options)``, and an rtol."""

    name: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    options: dict
    rtol: float
    non_negative: bool = False  # the Collatz-Wielandt bound


ORDINARY = [
    Ordinary("64ch-circulant", (64, 64, 3, 3), (64, 8, 8),
             {"padding": 1, "padding_mode": "circular"}, 1e-7),
    Ordinary("depthwise-31x31-circulant", (2, 1, 31, 31), (2, 48, 48),
             {"padding": 15, "groups": 2, "padding_mode": "circular"}, 1e-7),
    Ordinary("3d-circulant", (8, 4, 3, 3, 3), (4, 6, 6, 6),
             {"padding": 1, "padding_mode": "circular"}, 1e-7),
    Ordinary("16ch-zeros", (16, 16, 3, 3), (16, 48, 48), {"padding": 1}, 1e-3),
    Ordinary("15x15-3ch-zeros-fft", (3, 3, 15, 15), (3, 96, 96), {"padding": 7}, 1e-2),
    Ordinary("31x31-blur-zeros-fft", (1, 1, 31, 31), (1, 96, 96), {"padding": 15}, 1e-3,
             non_negative=True),
]  # fmt: skip


@pytest.mark.parametrize("case", ORDINARY, ids=lambda c: c.name)
def test_round_off_budgets_leave_ordinary_layers_their_rtol(case, monkeypatch_dense):
    """The absolute error terms are far below any rtol where the taps do not cancel."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(case.weight_shape, dtype=torch.float64, generator=gen)
    w = w.abs() if case.non_negative else w
    op = getattr(convop, f"conv{len(case.input_shape) - 1}d")(w, case.input_shape, **case.options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = convop.opnorm(op, rtol=case.rtol)
    assert result.upper <= (1 + case.rtol) * result.lower
    conv = op.geometry
    grams = Grams(w, conv, embedding_grid(conv))
    # the mean of tr G(f) over the frequencies is ||w_g||_F^2, so lambda_max >= that / p
    squares = float(w.reshape(conv.groups, -1).square().sum(1).max())
    assert grams.error <= 1e-8 * squares / grams.size


@pytest.mark.parametrize("p", [1, 16, 128, 512, 1024])
def test_cholesky_shift_covers_its_backward_error(p):
    """Rump: gamma_{p+1} tr(A), and tr(t^2 I - G) reaches p t^2; 1e-12 fell short past p ~ 90."""
    u = 2.0**-53
    assert cholesky_shift(p) >= (p + 1) * u * p / (1 - (p + 1) * u)


class FFTCase(NamedTuple):
    """An operator whose products run by FFT, on integer data (its direct products: exact)."""

    name: str
    build: Callable[[torch.Tensor], convop.ConvOperator]
    weight_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float64


#: The first: one tap on 65536 samples, where the FFT's error is twice a direct product's bound
FFT_CASES = [
    FFTCase("1x1, 65536 samples", lambda w: convop.conv1d(w, (1, 65536), method="fft"),
            (1, 1, 1)),
    FFTCase("reflect, 2 -> 3 channels",
            lambda w: convop.conv2d(w, (2, 40, 40), padding=2, padding_mode="reflect",
                                    method="fft"), (3, 2, 5, 5)),
    FFTCase("transposed, stride 2",
            lambda w: convop.conv_transpose2d(w, (2, 30, 30), stride=2, padding=1,
                                              method="fft"), (2, 3, 4, 4)),
    FFTCase("complex, groups",
            lambda w: convop.conv1d(w, (4, 500), padding=3, groups=2, method="fft"),
            (4, 2, 7), torch.complex128),
]  # fmt: skip


def integers(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Integers in ``[-8, 8]`` (real and imaginary parts): sums of their products are exact."""
    values = torch.randint(-8, 9, (2, *shape), generator=gen).to(torch.float64)
    return torch.complex(*values) if dtype.is_complex else values[0]


def fft_errors(case: FFTCase) -> tuple[float, Rounding]:
    """The largest ``||fl(A x) - A x|| / ||x||`` of ``case``'s FFT products (forward and
    adjoint, integer data: the direct products are exact), and the budget of its bounds."""
    gen = torch.Generator().manual_seed(8)
    op = case.build(integers(case.weight_shape, case.dtype, gen))
    direct = convop.ConvOperator(op.weight, op.geometry, method="direct")
    errors = []
    for fft, exact, shape in (
        (op.apply, direct.apply, op.input_shape),
        (op.apply_adjoint, direct.apply_adjoint, op.output_shape),
    ):
        x = integers((4, *shape), case.dtype, gen)
        errors.append(float(((fft(x) - exact(x)).flatten(1).norm(dim=1)
                             / x.flatten(1).norm(dim=1)).max()))  # fmt: skip
    return max(errors), rounding_of(op, convolution_of(op.geometry)[0])


@pytest.mark.parametrize("case", FFT_CASES, ids=lambda c: c.name)
def test_fft_products_stay_within_their_round_off_budget(case):
    """The bounds' products by FFT (the Rayleigh quotient's) err within the budget."""
    error, rounding = fft_errors(case)
    assert error <= rounding.normwise


def test_fft_products_err_more_than_a_direct_products_bound():
    """An FFT errs relative to all the taps and samples: a direct product's budget
    ``gamma_n || |A| ||`` would not cover it (2x here), so FFT products get their own."""
    error, rounding = fft_errors(FFT_CASES[0])
    assert error > 1.5 * rounding.gamma * rounding.abs_norm


def test_opnorm_says_when_rtol_is_below_its_round_off_margin():
    """An exact path's bounds are MARGIN apart (and a budget for round-off): a smaller rtol
    cannot be met, which the warning says rather than returning them silently."""
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    op = convop.conv2d(w, (3, 8, 8), padding=1, padding_mode="circular")
    with pytest.warns(RuntimeWarning, match=r"rtol=1e-12, because rtol is below the margin"):
        result = convop.opnorm(op, rtol=1e-12)
    assert result.lower <= float(convop.svdvals(op)[0]) <= result.upper
