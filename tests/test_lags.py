"""convop._fourier.lags: a kernel's autocorrelation, directly and by FFTs, against long doubles."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop._shared.memory
from convop._fourier.lags import _gram_lags, gram_lags, lags_error, lags_method
from convop.geometry import ConvGeometry


class LagCase(NamedTuple):
    geom: ConvGeometry
    input_side: bool
    complex_: bool
    seed: int

    def weight(self) -> torch.Tensor:
        dtype = torch.complex128 if self.complex_ else torch.float64
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.geom.weight_shape, dtype=dtype, generator=gen)


@st.composite
def lag_cases(draw) -> LagCase:
    """Groups first, then channels, kernel, dilation and stride (1 on the input side)."""
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    biggest = {1: 9, 2: 5, 3: 3}[ndim]
    kernel = tuple(draw(st.lists(st.integers(1, biggest), min_size=ndim, max_size=ndim)))
    dilation = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    input_side = draw(st.booleans())
    stride = (1,) * ndim if input_side else tuple(
        draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    )  # fmt: skip
    size = tuple(d * (k - 1) + s + 1 for k, d, s in zip(kernel, dilation, stride))
    geom = ConvGeometry.from_torch((c_out, c_in // groups, *kernel), (c_in, *size),
                                   stride=stride, dilation=dilation, groups=groups)  # fmt: skip
    return LagCase(geom, input_side, draw(st.booleans()), draw(st.integers(0, 2**16)))


def side_weight(weight: np.ndarray, geom: ConvGeometry, input_side: bool) -> np.ndarray:
    """``(G, p, q, *k)``: the kernel whose output-side lags are the ones asked for."""
    g = geom.groups
    o, c = geom.out_channels // g, geom.in_channels // g
    w = weight.reshape(g, o, c, *geom.kernel_size)
    if input_side:  # the adjoint kernel: channels swapped, taps reversed and conjugated
        w = np.conj(np.flip(w.swapaxes(1, 2), axis=tuple(range(3, w.ndim))))
    return w


def exact_lags(weight: torch.Tensor, geom: ConvGeometry, input_side: bool) -> np.ndarray:
    """``R_delta[a, b] = sum_{c, t} w[a, c, t + tau] conj(w[b, c, t])`` in extended precision.

    From the definition, one lag at a time, in numpy's long double (64-bit significand
    here); laid out as :func:`gram_lags` promises: ``(G, L, p * p)``, lags in
    lexicographic order of ``tau``, kept where the stride divides ``d tau``.
    """
    wide = np.clongdouble if weight.is_complex() else np.longdouble
    w = side_weight(weight.numpy().astype(wide), geom, input_side)
    g, p, q, *k = w.shape
    kept = [
        [t for t in range(-(n - 1), n) if (t * d) % s == 0]
        for n, d, s in zip(k, geom.dilation, geom.stride)
    ]
    out = np.zeros((g, len(list(itertools.product(*kept))), p, p), dtype=wide)
    for index, tau in enumerate(itertools.product(*kept)):
        mine = tuple(slice(max(t, 0), n + min(t, 0)) for t, n in zip(tau, k))
        theirs = tuple(slice(max(-t, 0), n - max(t, 0)) for t, n in zip(tau, k))
        a = w[(Ellipsis, *mine)].reshape(g, p, q, -1)
        b = np.conj(w[(Ellipsis, *theirs)]).reshape(g, p, q, -1)
        out[:, index] = np.einsum("gact,gbct->gab", a, b)
    return out.reshape(g, -1, p * p)


def entry_scale(weight: torch.Tensor, geom: ConvGeometry, input_side: bool) -> np.ndarray:
    """``||w_a||_2 ||w_b||_2`` per group and channel pair: ``(G, 1, p * p)``."""
    w = side_weight(weight.numpy(), geom, input_side)
    norms = np.sqrt((np.abs(w) ** 2).reshape(*w.shape[:2], -1).sum(-1))  # (G, p)
    return (norms[:, :, None] * norms[:, None, :]).reshape(w.shape[0], 1, -1)


@given(lag_cases())
def test_fft_lags_equal_the_direct_ones(case):
    """Both paths on random geometries, within the sum of their stated error bounds."""
    weight = case.weight()
    direct, deltas = _gram_lags(weight, case.geom, case.input_side, "direct")
    fft, fft_deltas = _gram_lags(weight, case.geom, case.input_side, "fft")
    torch.testing.assert_close(fft_deltas, deltas, rtol=0, atol=0)
    assert fft.dtype == direct.dtype
    assert fft.shape == direct.shape
    bound = sum(lags_error(case.geom, input_side=case.input_side, method=m, dtype=weight.dtype)
                for m in ("direct", "fft"))  # fmt: skip
    scale = entry_scale(weight, case.geom, case.input_side)
    assert np.all(np.abs((fft - direct).numpy()) <= bound * scale)


@given(lag_cases())
def test_each_path_is_within_its_bound_of_the_exact_lags(case):
    weight = case.weight()
    exact = exact_lags(weight, case.geom, case.input_side)
    scale = entry_scale(weight, case.geom, case.input_side)
    for method in ("direct", "fft"):
        taps, deltas = _gram_lags(weight, case.geom, case.input_side, method)
        assert taps.shape == exact.shape
        error = np.abs(taps.numpy().astype(exact.dtype) - exact).astype(np.float64)
        bound = lags_error(case.geom, input_side=case.input_side, method=method,
                           dtype=weight.dtype)  # fmt: skip
        assert np.all(error <= bound * scale), method
        assert torch.equal(deltas.flip(0), -deltas)  # lag L - 1 - l mirrors lag l


def test_the_bound_is_not_loose_by_orders_of_magnitude():
    """The FFT path's worst error on a 25 x 25 kernel reaches a fair share of its bound."""
    geom = ConvGeometry.from_torch((2, 2, 25, 25), (2, 64, 64))
    weight = torch.randn(geom.weight_shape, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3))  # fmt: skip
    taps, _ = _gram_lags(weight, geom, True, "fft")
    exact = exact_lags(weight, geom, True)
    error = np.abs(taps.numpy().astype(exact.dtype) - exact).astype(np.float64)
    ratio = (error / (lags_error(geom, input_side=True, method="fft")
                      * entry_scale(weight, geom, True))).max()  # fmt: skip
    assert 3e-4 < ratio <= 1


@pytest.mark.parametrize(
    ("kernel", "channels", "expected"),
    [((3, 3), 1, "direct"), ((7,), 4, "direct"), ((31, 31), 1, "fft"), ((201, 201), 1, "fft"),
     ((9, 9, 9), 2, "fft")],
)  # fmt: skip
def test_the_cheaper_path_is_chosen(kernel, channels, expected):
    geom = ConvGeometry.from_torch((channels, channels, *kernel),
                                   (channels, *(2 * k for k in kernel)))  # fmt: skip
    assert lags_method(geom, input_side=True) == expected
    assert lags_method(geom, input_side=False) == expected


def test_a_201_kernel_is_fast_and_within_bounded_memory(monkeypatch):
    """A 201 x 201 PSF: by FFTs under a 64 MiB limit (directly: 52 GB of torch's columns)."""
    limit = 64 * 1024**2
    asked = []
    real_check = convop._fourier.lags.check_memory

    def bounded(needed, max_bytes, what, device=None, **kw):
        asked.append(needed)
        return real_check(needed, limit, what, device, **kw)

    monkeypatch.setattr(convop._fourier.lags, "check_memory", bounded)
    x = np.arange(201) - 100.0
    g = np.exp(-(x**2) / (2 * 30.0**2))
    geom = ConvGeometry.from_torch((1, 1, 201, 201), (1, 256, 256), padding=100)
    weight = torch.from_numpy(np.outer(g, g))[None, None]
    taps, deltas = gram_lags(weight, geom, input_side=True)
    assert asked
    assert max(asked) <= limit
    assert taps.shape == (1, 401 * 401, 1)
    assert deltas.shape == (401 * 401, 2)
    # a separable kernel has separable lags: the outer product of the 1-D autocorrelation
    wide = g.astype(np.longdouble)
    line = np.array([(wide[max(t, 0):201 + min(t, 0)] * wide[max(-t, 0):201 - max(t, 0)]).sum()
                     for t in range(-200, 201)])  # fmt: skip
    exact = np.outer(line, line).reshape(-1).astype(np.float64)
    bound = lags_error(geom, input_side=True) * float(weight.square().sum())
    assert np.abs(taps[0, :, 0].numpy() - exact).max() <= bound


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_the_memory_guard_refuses_before_allocating(method, monkeypatch):
    monkeypatch.setattr(convop._shared.memory, "available_memory", lambda device=None: 200 * 1024)
    geom = ConvGeometry.from_torch((1, 1, 41, 41), (1, 64, 64))
    weight = torch.ones(geom.weight_shape, dtype=torch.float64)
    with pytest.raises(MemoryError, match=r"the autocorrelation of a \(41, 41\) kernel"):
        _gram_lags(weight, geom, True, method)


def test_input_side_needs_stride_one():
    geom = ConvGeometry.from_torch((1, 1, 3), (1, 9), stride=2)
    with pytest.raises(ValueError, match=r"B\^H B is shift-invariant only for stride 1"):
        gram_lags(torch.ones(geom.weight_shape), geom, input_side=True)
