"""convop._gram_diagonal: the exact column norms of every geometry, against dense matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convop
from convop._gram_diagonal import gram_diagonal

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
