"""convop._fourier.gram_diagonal: exact column norms of every geometry, against dense matrices."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import convop
import convop.geometry
from convop._fourier.gram_diagonal import diagonal_bytes, gram_diagonal
from convop._shared import memory as _memory

MODES = ["zeros", "replicate", "reflect", "circular"]
GEOMETRIES = {
    "2d-channels": (convop.conv2d, (2, 3, 3, 3), (3, 7, 6), {"padding": 1}),
    "2d-asymmetric-padding": (convop.conv2d, (1, 1, 5, 5), (1, 9, 8), {"padding": (2, 3)}),
    "1d-dilated-groups": (convop.conv1d, (4, 2, 3), (4, 9),
                          {"padding": 2, "dilation": 2, "groups": 2}),
    "2d-strided": (convop.conv2d, (3, 1, 3, 4), (1, 8, 9), {"padding": (1, 2), "stride": (2, 1)}),
    "3d": (convop.conv3d, (2, 1, 3, 3, 3), (1, 5, 4, 6), {"padding": 1}),
    "1d-padding-as-wide-as-the-input": (convop.conv1d, (1, 1, 7), (1, 4), {"padding": 3}),
}  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gram_diagonal_is_the_dense_column_norms(name, mode, dtype):
    build, weight_shape, input_shape, kwargs = GEOMETRIES[name]
    if mode == "reflect" and max(np.atleast_1d(kwargs["padding"])) >= min(input_shape[1:]):
        pytest.skip("reflect padding must be narrower than the input")
    gen = torch.Generator().manual_seed(len(name) + len(mode))
    weight = torch.randn(*weight_shape, dtype=dtype, generator=gen)
    op = build(weight, input_shape, padding_mode=mode, **kwargs)
    dense = op.todense()
    expected = (np.abs(dense) ** 2).sum(0).reshape(input_shape)
    got = gram_diagonal(weight, op.geometry)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14 * expected.max())


def test_replicate_end_samples_weigh_more_than_the_interior():
    """A 1-D box of 5 taps: an end sample is read through 3, 2, 1 taps by outputs 0, 1, 2."""
    weight = torch.ones(1, 1, 5, dtype=torch.float64)
    op = convop.conv1d(weight, (1, 10), padding=2, padding_mode="replicate")
    diagonal = gram_diagonal(weight, op.geometry)[0]
    assert diagonal[0] == 3**2 + 2**2 + 1**2
    assert diagonal[5] == 5


# ---------------------------------------------------------------------- the memory guard
GUARDED = {
    "2d-reflect-channels": ((2, 3, 5, 5), (3, 9, 8), "reflect", torch.float64),
    "2d-replicate-complex": ((1, 1, 5, 3), (1, 7, 6), "replicate", torch.complex128),
    "3d-circular": ((1, 1, 3, 3, 3), (1, 5, 4, 6), "circular", torch.float64),
}


def _guarded(name: str) -> tuple[torch.Tensor, convop.geometry.ConvGeometry]:
    weight_shape, input_shape, mode, dtype = GUARDED[name]
    weight = torch.randn(*weight_shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    geom = convop.geometry.ConvGeometry.from_torch(weight_shape, input_shape, padding="same",
                                                   padding_mode=mode)  # fmt: skip
    return weight, geom


@pytest.mark.parametrize("name", list(GUARDED))
def test_gram_diagonal_allows_exactly_its_limit(name):
    """Refused at 0, it names what it needs; exactly that is computed, one byte less refused."""
    weight, geom = _guarded(name)
    with pytest.raises(MemoryError, match=r"pass max_bytes=\d+ or more") as refused:
        gram_diagonal(weight, geom, max_bytes=0)
    needed = int(re.search(r"pass max_bytes=(\d+) or more", str(refused.value))[1])
    assert needed == diagonal_bytes(geom, weight.dtype) > 0
    expected = gram_diagonal(weight, geom)
    torch.testing.assert_close(gram_diagonal(weight, geom, max_bytes=needed), expected,
                               rtol=0, atol=0)  # fmt: skip
    with pytest.raises(MemoryError, match=rf"exact diagonal of B\^H B .*max_bytes={needed} "):
        gram_diagonal(weight, geom, max_bytes=needed - 1)


def test_gram_diagonal_by_default_allows_half_the_memory_available(monkeypatch):
    weight, geom = _guarded("2d-reflect-channels")
    needed = diagonal_bytes(geom, weight.dtype)
    expected = gram_diagonal(weight, geom)
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: 2 * needed,))
    torch.testing.assert_close(gram_diagonal(weight, geom), expected, rtol=0, atol=0)
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: 2 * needed - 1,))
    with pytest.raises(MemoryError, match=r"more than the limit .*half the"):
        gram_diagonal(weight, geom)


def test_gram_diagonal_refuses_a_large_kernel_before_allocating(monkeypatch):
    """A 201 x 201 kernel on 256^2 under reflect: 2.6e9 entries, sized from O(n) counts."""
    weight = torch.ones(1, 1, 201, 201, dtype=torch.float64)
    geom = convop.geometry.ConvGeometry.from_torch(
        (1, 1, 201, 201), (1, 256, 256), padding="same", padding_mode="reflect"
    )

    def contraction(*args, **kwargs):
        raise AssertionError("gram_diagonal contracted before asking the memory guard")

    monkeypatch.setattr(torch, "tensordot", contraction)
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: 2**30,))
    with pytest.raises(MemoryError, match=r"\(201, 201\) kernel on a \(256, 256\) input"):
        gram_diagonal(weight, geom)
    assert diagonal_bytes(geom) > 8 * (200 * 256) ** 2  # (J I)^2 float64 squares at least
