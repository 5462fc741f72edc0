"""convop.spectral: exact singular values and certified norms, against dense SVDs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convop
from convop import spectral
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
            lambda: convop.conv2d(
                torch.rand(3, 1, 3, 3, dtype=torch.float64),
                (3, 64, 64),
                padding=1,
                groups=3,
                padding_mode="reflect",
            ),
            1e-2,
        ),
        (
            "replicate, non-negative 2 -> 3 channels, 48^2",
            lambda: convop.conv2d(
                torch.rand(3, 2, 5, 5, dtype=torch.float64),
                (2, 48, 48),
                padding=2,
                padding_mode="replicate",
            ),
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
    x = torch.arange(9, dtype=dtype) - 4
    g = torch.exp(-(x**2) / 4)
    w = torch.outer(g, g) / g.sum() ** 2
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
    grid = spectral._embedding_grid(op.geometry)
    grams = spectral._Grams(w, op.geometry, grid)
    peak = grams.bound(None)
    blocks, _ = spectral._blocks(w, op.geometry, grid, half=True)  # formed, not from lags
    assert peak == pytest.approx(float(torch.linalg.svdvals(blocks).max()), rel=1e-12)
    for factor in (0.99, 0.999, 0.9999):
        assert grams.bound(peak * factor, slack=1e-2) >= peak * (1 - 1e-12)
    for factor in (1.003, 1.01):
        assert grams.bound(peak * factor, slack=1e-2) == peak * factor


@pytest.mark.parametrize("groups", [1, 2])
def test_single_precision_test_flags_every_block_above_the_level(groups):
    """Soundness of the chunked float32 Cholesky test, block by block against eigvalsh."""
    w = torch.randn(16, 16 // groups, 3, 3, generator=torch.Generator().manual_seed(4))
    op = convop.conv2d(w, (16, 30, 30), padding=1, groups=groups)
    grams = spectral._Grams(w, op.geometry, spectral._embedding_grid(op.geometry))
    top = torch.linalg.eigvalsh(grams.exact())[:, -1]
    level = float(top.median())  # half the blocks above it
    failed = torch.zeros(grams.count, dtype=torch.bool)
    failed[grams._single_failures(level)] = True
    # what bound() allows for: the blocks' error and the factorisation's backward error
    slack = grams._single_error(level) + spectral._CHOLESKY_SHIFT[torch.complex64] * level
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
