"""Saving and loading materialised matrices: exact round trips through .npz and .mtx."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch

import convop


def _operator(dtype: torch.dtype) -> convop.ConvOperator:
    weight = torch.randn(3, 2, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return convop.conv2d(weight, (2, 7, 6), stride=2, padding=1, padding_mode="reflect")


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_operator_round_trips_exactly(tmp_path, suffix, dtype):
    op = _operator(dtype)
    path = convop.save_matrix(tmp_path / f"conv{suffix}", op)
    loaded = convop.load_matrix(path)
    assert isinstance(loaded, sp.csr_array)
    assert loaded.shape == op.shape
    assert loaded.dtype == op.dtype
    assert loaded.nnz == op.tosparse().nnz
    np.testing.assert_array_equal(loaded.toarray(), op.todense())


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_sparse_and_dense_matrices_save_too(tmp_path, suffix):
    dense = _operator(torch.float64).todense()
    for index, matrix in enumerate([sp.csc_array(dense), sp.coo_matrix(dense), dense]):
        loaded = convop.load_matrix(
            convop.save_matrix(str(tmp_path / f"m{index}{suffix}"), matrix)
        )
        np.testing.assert_array_equal(loaded.toarray(), dense)


def test_matrix_market_file_names_the_operator(tmp_path):
    op = _operator(torch.float64)
    path = convop.save_matrix(tmp_path / "conv.mtx", op)
    assert repr(op) in path.read_text()
    assert scipy.io.mminfo(path)[:3] == (*op.shape, op.tosparse().nnz)


def test_unknown_suffix_and_non_matrix_are_rejected(tmp_path):
    op = _operator(torch.float64)
    with pytest.raises(ValueError, match=r"path must end in one of \.npz, \.mtx, got .*conv\.txt"):
        convop.save_matrix(tmp_path / "conv.txt", op)
    with pytest.raises(ValueError, match=r"path must end in one of"):
        convop.load_matrix(tmp_path / "conv.csv")
    with pytest.raises(TypeError, match=r"matrix must be a ConvOperator.*got list"):
        convop.save_matrix(tmp_path / "conv.npz", [[1.0]])


def test_memory_guard_applies_when_saving_an_operator(tmp_path):
    with pytest.raises(MemoryError, match=r"tosparse\('csr'\)"):
        convop.save_matrix(tmp_path / "conv.npz", _operator(torch.float64), max_bytes=1)
