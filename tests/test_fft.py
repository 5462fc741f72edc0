"""convop._fft: the FFT algorithm equals the direct one, forward and adjoint, everywhere."""

from __future__ import annotations

import copy
import threading
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop
from convop import _fft as fft
from convop import functional

from .checks import assert_close
from .strategies import COMBO_IDS, COMBOS, conv_cases, draw_case

DTYPE_PAIRS = st.sampled_from(
    [
        (torch.float64, torch.float64),  # rfft
        (torch.complex128, torch.complex128),  # fft
        (torch.float64, torch.complex128),  # real weight, complex data: full transforms
        (torch.complex128, torch.float64),  # complex weight, real data
    ]
)


def _setup(data, combo):
    case = data.draw(conv_cases(*combo), label="case")
    weight_dtype, data_dtype = data.draw(DTYPE_PAIRS, label="dtypes")
    weight = case.weight(weight_dtype)
    geometry = case.operator(weight).geometry
    spectrum = fft.spectrum(weight, geometry)
    compute = torch.promote_types(weight_dtype, data_dtype)
    return case, geometry, spectrum, weight.to(compute), data_dtype


def _bound(weight: torch.Tensor, x) -> float:
    """Bound on any output sample, the scale of an FFT product's round-off."""
    return float(weight.abs().sum()) * float(np.abs(np.asarray(x)).max())


#: direction -> (the geometry's shape of what it takes, the seed offset of its sample)
DIRECTIONS = {"forward": ("input_shape", 1), "adjoint": ("output_shape", 2)}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_fft_equals_direct(combo, data, direction):
    """fft.forward (adjoint) of a batch equals functional.forward (adjoint), also when it
    places into a kept grid that held another batch before: its other samples stay zero."""
    case, geometry, spectrum, weight, dtype = _setup(data, combo)
    shape, offset = DIRECTIONS[direction]
    fourier = getattr(fft, direction)
    x = case.random((2, *getattr(geometry, shape)), dtype, offset=offset)
    expected = getattr(functional, direction)(x.to(weight.dtype), weight, geometry)
    grids = fft.Grids()
    fourier(case.random(x.shape, dtype, offset=3), spectrum, geometry, grids=grids)
    for actual in (fourier(x, spectrum, geometry), fourier(x, spectrum, geometry, grids=grids)):
        assert actual.dtype == expected.dtype
        assert_close(actual, expected, dtype=torch.float64, terms=case.terms * 64,
                     scale=_bound(weight, x))  # fmt: skip


# ---------------------------------------------------------------- through the operator
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_fft_operator_equals_direct_operator(combo, data):
    case, dtype, weight = draw_case(data, combo)
    direct, fourier = case.operator(weight), case.operator(weight, method="fft")
    assert (direct.method, fourier.method) == ("direct", "fft")
    x = case.random((fourier.shape[1],), dtype, offset=1).numpy()
    v = case.random((fourier.shape[0],), dtype, offset=2).numpy()
    terms = case.terms * 64
    assert_close(fourier @ x, direct @ x, dtype=dtype, terms=terms, scale=_bound(weight, x))
    assert_close(fourier.rmatvec(v), direct.rmatvec(v), dtype=dtype, terms=terms,
                 scale=_bound(weight, v))  # fmt: skip
    assert_close(fourier.H @ v, direct.H @ v, dtype=dtype, terms=terms, scale=_bound(weight, v))
    assert_close(fourier.T @ v, direct.T @ v, dtype=dtype, terms=terms, scale=_bound(weight, v))
    X = np.stack([x, 2 * x, -x], axis=1)
    assert_close(fourier.matmat(X), direct.matmat(X), dtype=dtype, terms=terms,
                 scale=2 * _bound(weight, x))  # fmt: skip


def test_kept_grids_are_per_direction_thread_and_shape_and_bounded(monkeypatch):
    grids = fft.Grids()
    like = torch.zeros((), dtype=torch.float64)
    where = (slice(1, 7), slice(2, 6))

    def get(direction, shape, at=where):
        return grids.get(direction, shape, like, at)

    grid, window = get("forward", (2, 1, 8, 8))
    assert window.data_ptr() == grid[..., 1, 2].data_ptr()  # a view of the window
    window.fill_(3.0)
    assert get("forward", (2, 1, 8, 8))[0] is grid  # reused
    assert get("adjoint", (2, 1, 8, 8))[0] is not grid  # one per direction
    moved = (slice(0, 6), slice(0, 4))
    again, window = get("forward", (2, 1, 8, 8), moved)
    assert again is grid
    assert float(grid.sum()) == 0.0  # another window: zeroed first, nothing stale outside
    assert get("forward", (3, 1, 8, 8))[0] is not grid  # replaced: another batch
    other = []
    thread = threading.Thread(target=lambda: other.append(get("forward", (3, 1, 8, 8))[0]))
    thread.start()
    thread.join()
    assert other[0] is not get("forward", (3, 1, 8, 8))[0]  # one per thread
    monkeypatch.setattr(fft, "GRID_KEEP_BYTES", 1000)
    assert get("forward", (2, 1, 8, 8)) is None  # 1024 bytes: not kept
    assert copy.deepcopy(grids)._local.__dict__ == {}  # copies start with no grids


def test_fft_products_keep_their_grids_only_where_it_is_safe(monkeypatch):
    """A kept grid is reused by products without autograd; products that autograd records,
    and grids beyond the size kept, place into fresh zeros. All of them stay exact."""
    weight = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    op = convop.conv2d(weight, (3, 9, 8), padding="same", method="fft")
    direct = convop.conv2d(weight, (3, 9, 8), padding="same", method="direct")
    placed = []
    get = fft.Grids.get
    monkeypatch.setattr(fft.Grids, "get", lambda *a: placed.append(a[1]) or get(*a))
    for seed in range(3):  # every product into the same kept grid: other samples stay zero
        x = torch.randn(
            2, 3, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
        torch.testing.assert_close(op.apply(x), direct.apply(x))
        y = direct.apply(x)
        torch.testing.assert_close(op.apply_adjoint(y), direct.apply_adjoint(y))
    assert placed == ["forward", "adjoint"] * 3
    kept = op._grids._local.__dict__["forward"][0]
    assert kept[..., 2:11, 2:10].abs().sum() > 0
    assert kept[..., :2, :].abs().sum() == 0
    placed.clear()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.apply, (x,))
    assert placed == []  # autograd records these products: fresh grids
    monkeypatch.setattr(fft, "GRID_KEEP_BYTES", 0)
    x = x.detach()
    torch.testing.assert_close(op.apply(x), direct.apply(x))


def test_fft_gradients_flow_to_the_weight():
    weight = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    op = convop.conv2d(weight, (3, 9, 8), padding="same", padding_mode="reflect", method="fft")
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, *op.output_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: op.apply(x), (x, weight))
    assert torch.autograd.gradcheck(lambda y, w: op.apply_adjoint(y), (y, weight))


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("data", [torch.float64, torch.complex128])
def test_fft_gradients_of_one_channel_operators(weight_grad, data):
    """The pointwise mixing (in place when autograd needs nothing) and the full spectrum of
    a real weight for complex data keep their gradients."""
    weight = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=weight_grad)
    op = convop.conv2d(weight, (1, 6, 5), padding="same", method="fft")
    x = torch.randn(1, 1, 6, 5, dtype=data, requires_grad=True)
    y = torch.randn(1, *op.output_shape, dtype=data, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: op.apply(x), (x, weight))
    assert torch.autograd.gradcheck(lambda y, w: op.apply_adjoint(y), (y, weight))


def test_float32_fft_operator_promotes_to_float64_exactly_as_direct():
    weight = torch.randn(1, 1, 7, 7)
    direct = convop.conv2d(weight, (1, 20, 20), padding=3, method="direct")
    fourier = convop.conv2d(weight, (1, 20, 20), padding=3, method="fft")
    x = np.random.default_rng(0).standard_normal(400)  # float64 data: float64 products
    np.testing.assert_allclose(fourier @ x, direct @ x, rtol=0, atol=1e-12)
    x32 = x.astype(np.float32)
    assert (fourier @ x32).dtype == np.float32
    np.testing.assert_allclose(fourier @ x32, direct @ x32, rtol=0, atol=1e-5)


def test_method_is_named_and_validated():
    weight = torch.ones(1, 1, 31, 31, dtype=torch.float64)
    op = convop.conv2d(weight, (1, 256, 256), padding="same")
    assert op.method == "fft"  # a deblurring-sized kernel
    assert "method='fft'" in repr(op)
    assert op.H.method == "fft"
    layer = convop.conv2d(torch.ones(64, 64, 3, 3), (64, 56, 56), padding=1)
    assert layer.method == "direct"
    with pytest.raises(ValueError, match=r"method must be one of 'auto', 'direct', 'fft', got"):
        convop.conv2d(weight, (1, 64, 64), method="winograd")


@pytest.mark.parametrize("even", [False, True])
def test_fast_lengths_have_only_small_prime_factors(even):
    for n in (1, 7, 173, 1038, 4097, 16500):
        length = fft.fast_length(n, even=even)
        assert length >= n
        assert length % 2 == 0 or not even
        rest = length
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        assert rest == 1
        # the smallest such length: none between n and it
        assert not any(
            fft.fast_length(m, even=even) < length for m in range(n, length, max(1, length // 50))
        )


def test_1d_grids_are_even_and_others_keep_the_smallest_fast_length():
    one = convop.conv1d(torch.ones(1, 1, 3), (1, 16498), padding=1).geometry  # 16500 padded
    two = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 133, 133), padding=1).geometry
    assert fft.frame(one).sizes == (17280,)  # not 16875: odd
    assert fft.frame(two).sizes == (135, 135)


# ---------------------------------------------------------------- non-finite data and weights
NON_FINITE = [float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data(), bad=st.sampled_from(NON_FINITE))
def test_non_finite_data_gives_the_direct_pattern(combo, data, bad):
    case = data.draw(conv_cases(*combo), label="case")
    weight = case.weight(torch.float64)
    direct, fourier = case.operator(weight), case.operator(weight, method="fft")
    for forward in (True, False):
        n = fourier.shape[1] if forward else fourier.shape[0]
        x = case.random((n,), torch.float64, offset=1).numpy()
        x[data.draw(st.integers(0, n - 1), label="where")] = bad
        expected = direct @ x if forward else direct.rmatvec(x)
        actual = fourier @ x if forward else fourier.rmatvec(x)
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
        np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
        finite = np.isfinite(expected)
        assert_close(
            actual[finite],
            expected[finite],
            dtype=torch.float64,
            terms=case.terms,
            scale=_bound(weight, np.nan_to_num(x, nan=0, posinf=0, neginf=0)),
        )


@pytest.mark.parametrize("bad", NON_FINITE)
def test_non_finite_weight_gives_the_direct_pattern(bad):
    weight = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    weight[1, 0, 4, 4] = bad
    direct = convop.conv2d(weight, (1, 20, 18), padding=4, padding_mode="reflect",
                           method="direct")  # fmt: skip
    fourier = convop.conv2d(weight, (1, 20, 18), padding=4, padding_mode="reflect",
                            method="fft")  # fmt: skip
    x = np.random.default_rng(0).standard_normal(fourier.shape[1])
    np.testing.assert_array_equal(fourier @ x, direct @ x)  # the direct path, bit for bit
    v = np.random.default_rng(1).standard_normal(fourier.shape[0])
    np.testing.assert_array_equal(fourier.rmatvec(v), direct.rmatvec(v))


def test_one_nan_pixel_stays_one_local_patch_of_nans():
    op = convop.conv2d(torch.ones(1, 1, 15, 15) / 225, (1, 128, 128), padding="same")
    assert op.method == "fft"
    x = np.ones(128 * 128, dtype=np.float32)
    x[64 * 128 + 64] = np.nan
    y = op @ x
    assert np.isnan(y).sum() == 15 * 15
    np.testing.assert_allclose(y.reshape(128, 128)[10:40, 10:40], 1.0, rtol=1e-5)


def test_values_that_would_overflow_in_the_transforms_run_directly():
    weight = torch.ones(1, 1, 31, 31) / 31**2
    x = np.full(256 * 256, 3e36, dtype=np.float32)  # the direct sums stay finite
    fourier = convop.conv2d(weight, (1, 256, 256), padding="same", method="fft")
    direct = convop.conv2d(weight, (1, 256, 256), padding="same", method="direct")
    np.testing.assert_array_equal(fourier @ x, direct @ x)
    assert np.isfinite(fourier @ x).all()


# ---------------------------------------------------------------- the spectrum cache's key
LAYER_INPUT = (2, 12, 10)


def _layer() -> torch.nn.Conv2d:
    """A float32 layer whose FFT products use the channel-mixing matmul (2 -> 3 channels)."""
    layer = torch.nn.Conv2d(2, 3, 5, padding="same", padding_mode="reflect", bias=False)
    torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(0))
    return layer


def _to_complex128(layer: torch.nn.Module) -> None:
    with warnings.catch_warnings():  # torch calls complex modules a new feature
        warnings.filterwarnings("ignore", "Complex modules", UserWarning)
        layer.to(torch.complex128)


def _assert_fft_follows_the_layer(fourier, layer, dtype, seed: int) -> None:
    """``fourier``'s numpy-face products, forward and adjoint, on ``dtype`` data equal the
    direct operator's on the layer as it is now, to the FFT round-off of ``dtype``."""
    direct = convop.from_module(layer, LAYER_INPUT, method="direct")
    rng = np.random.default_rng(seed)
    x, v = (rng.standard_normal(n) + 1j * rng.standard_normal(n) for n in fourier.shape[::-1])
    x, v = (a if np.dtype(dtype).kind == "c" else a.real for a in (x, v))
    x, v = x.astype(dtype), v.astype(dtype)
    scale = float(layer.weight.detach().abs().sum()) * max(np.abs(x).max(), np.abs(v).max())
    for got, want in ((fourier @ x, direct @ x), (fourier.H @ v, direct.H @ v)):
        assert got.dtype == dtype
        assert_close(got, want, dtype=dtype, terms=2 * 25 * 64, scale=scale)


@pytest.mark.parametrize(
    ("change", "dtype"),
    [(lambda layer: layer.double(), np.float64), (_to_complex128, np.complex128)],
    ids=["double", "complex128"],
)
def test_spectrum_cache_follows_an_in_place_dtype_change(change, dtype):
    """After a float32 product, ``layer.double()`` replaces the parameter's data with the
    same values in float64: reusing the cached float32 spectrum would give float64 results
    with float32 round-off (9e-8 relative instead of 1e-16)."""
    layer = _layer()
    fourier = convop.from_module(layer, LAYER_INPUT, method="fft")
    _assert_fft_follows_the_layer(fourier, layer, np.float32, seed=1)  # caches float32
    change(layer)
    _assert_fft_follows_the_layer(fourier, layer, dtype, seed=2)


@pytest.mark.cuda
def test_spectrum_cache_follows_an_in_place_device_change():
    layer = _layer().double()
    fourier = convop.from_module(layer, LAYER_INPUT, method="fft")
    _assert_fft_follows_the_layer(fourier, layer, np.float64, seed=1)  # caches on the CPU
    layer.cuda()
    assert fourier.device.type == "cuda"
    _assert_fft_follows_the_layer(fourier, layer, np.float64, seed=2)
