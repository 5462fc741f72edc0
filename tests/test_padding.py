"""convop.padding: source indices match torch's F.pad, and pad_adjoint is pad's exact adjoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from convop.padding import pad, pad_adjoint, pad_adjoint_, pad_into, source_index

from .checks import assert_close, assert_dot_test

MODES = ["zeros", "reflect", "replicate", "circular"]


@st.composite
def padded_shapes(draw, mode: str, ndim: int | None = None):
    """(spatial size, per-dim (before, after)) valid for ``mode`` in ``ndim`` (1-3) dims."""
    ndim = draw(st.integers(1, 3)) if ndim is None else ndim
    pairs = [tuple(draw(st.integers(0, 4)) for _ in range(2)) for _ in range(ndim)]
    slack = {"reflect": 1, "circular": 0}.get(mode)
    sizes = [
        max(1, 0 if slack is None else max(pair) + slack) + draw(st.integers(0, 3))
        for pair in pairs
    ]
    return tuple(sizes), pairs


@st.composite
def padded_inputs(draw, mode: str, dtype: torch.dtype):
    """``(x, pairs)``: a batch ``(2, 3, *sizes)`` from a seeded generator, padding for ``mode``."""
    sizes, pairs = draw(padded_shapes(mode))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    return torch.randn(2, 3, *sizes, dtype=dtype, generator=generator), pairs


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_pad_adjoint_equals_vjp_of_torch_pad(mode, data):
    x, pairs = data.draw(padded_inputs(mode, torch.float64))
    flat = [p for pair in reversed(pairs) for p in pair]
    padded, vjp = torch.func.vjp(
        lambda t: F.pad(t, flat, mode="constant" if mode == "zeros" else mode), x
    )
    z = torch.randn(padded.shape, dtype=torch.float64)
    (expected,) = vjp(z)
    kept = z.clone()
    assert_close(pad_adjoint(z, pairs, mode), expected, dtype=torch.float64, terms=27)
    assert torch.equal(z, kept)  # pad_adjoint writes nothing into z
    folded = pad_adjoint_(z, pairs, mode)  # in place: the same values, a view of z
    assert_close(folded, expected, dtype=torch.float64, terms=27)
    assert folded.data_ptr() >= z.data_ptr()
    assert folded.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_pad_into_writes_pad_into_a_window_and_nothing_else(mode, data):
    x, pairs = data.draw(padded_inputs(mode, torch.complex128))
    expected = pad(x, pairs, mode)
    grid = torch.full((2, 3, *(s + 2 for s in expected.shape[2:])), 7.0, dtype=x.dtype)
    window = grid[(..., *(slice(1, 1 + s) for s in expected.shape[2:]))]
    assert pad_into(window, x, pairs, mode) is window
    assert torch.equal(window, expected)
    window.fill_(7.0)
    assert bool((grid == 7.0).all())  # nothing written outside the window


def test_circular_halos_longer_than_the_input_fold_every_wrap():
    """pad's F.pad refuses them, but the fold is defined by the source map: check both paths."""
    n, before, after = 3, 7, 5
    source = source_index(n, before, after, "circular")
    z = torch.randn(2, before + n + after, dtype=torch.float64)
    expected = torch.zeros(2, n, dtype=torch.float64).index_add_(1, source, z)
    torch.testing.assert_close(pad_adjoint(z, [(before, after)], "circular"), expected)
    torch.testing.assert_close(pad_adjoint_(z.clone(), [(before, after)], "circular"), expected)
    x = torch.randn(2, n, dtype=torch.float64)
    out = torch.empty(2, before + n + after, dtype=torch.float64)
    torch.testing.assert_close(pad_into(out, x, [(before, after)], "circular"), x[:, source])


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
def test_pad_passes_dot_test_with_pad_adjoint(mode, data):
    x, pairs = data.draw(padded_inputs(mode, torch.complex128))
    px = pad(x, pairs, mode)
    z = torch.randn(px.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    assert_dot_test(x, px, z, pad_adjoint(z, pairs, mode), dtype=torch.float64, terms=27)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@given(data=st.data())
def test_source_index_reproduces_torch_pad(mode, data):
    (n,), [(before, after)] = data.draw(padded_shapes(mode, ndim=1))
    x = torch.arange(float(n)).reshape(1, 1, n)
    expected = F.pad(x, [before, after], mode=mode)[0, 0]
    assert torch.equal(x[0, 0][source_index(n, before, after, mode)], expected)


def test_source_index_marks_zero_padding_halo_with_minus_one():
    assert source_index(3, 2, 1, "zeros").tolist() == [-1, -1, 0, 1, 2, -1]


def test_source_index_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown padding mode 'mirror'"):
        source_index(3, 1, 1, "mirror")


def test_pad_without_padding_returns_input_unchanged():
    x = torch.randn(1, 1, 4)
    assert pad(x, [(0, 0)], "reflect") is x
    assert pad_adjoint(x, [(0, 0)], "reflect") is x
