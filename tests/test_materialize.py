"""Explicit matrices: exact against the operator's own batched products, structural, guarded."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop
from convop import _materialize as materialize

from .checks import assert_close
from .strategies import COMBO_IDS, COMBOS, draw_operator


def _assert_canonical(matrix) -> None:
    """Sorted, duplicate-free indices, checked independently of scipy's flags."""
    compressed = matrix.tocsr() if matrix.format == "coo" else matrix
    for start, stop in zip(compressed.indptr[:-1], compressed.indptr[1:]):
        assert np.all(np.diff(compressed.indices[start:stop]) > 0)
    if matrix.format == "coo":
        order = np.lexsort((matrix.col, matrix.row))
        assert np.array_equal(order, np.arange(matrix.nnz))


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_todense_equals_products_with_the_identity(combo, data):
    case, dtype, _, op = draw_operator(data, combo)
    for operator in (op, op.H):
        expected = operator.matmat(np.eye(operator.shape[1]))  # one batched convolution
        dense = operator.todense()
        assert dense.dtype == operator.dtype
        assert_close(dense, expected, dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data(), fmt=st.sampled_from(["csr", "csc", "coo"]))
def test_tosparse_equals_todense_and_is_canonical(combo, data, fmt):
    _case, dtype, _, op = draw_operator(data, combo)
    for operator in (op, op.H, op.T):
        matrix = operator.tosparse(fmt)
        assert isinstance(matrix, sp.sparray)
        assert matrix.format == fmt
        assert matrix.shape == operator.shape
        assert matrix.dtype == operator.dtype
        assert_close(matrix.toarray(), operator.todense(), dtype=dtype, terms=1)
        _assert_canonical(matrix)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_sparse_stores_exactly_the_structural_entries(combo, data):
    # With random weights no two folded taps cancel, so the structural pairs are exactly
    # the nonzeros of the dense matrix built by batched convolutions.
    _case, _dtype, _, op = draw_operator(data, combo)
    structural = np.count_nonzero(op.matmat(np.eye(op.shape[1])))
    matrix = op.tosparse()
    assert matrix.nnz == structural
    assert np.count_nonzero(matrix.data) == structural  # no explicit zeros stored either
    plan = materialize.plan(op.weight, op.geometry, adjoint=False)
    assert materialize.nnz(plan) == structural


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_adjoint_and_transpose_materialise(combo, data):
    _case, _dtype, _, op = draw_operator(data, combo)
    dense = op.todense()
    np.testing.assert_array_equal(op.H.todense(), dense.conj().T)
    np.testing.assert_array_equal(op.T.todense(), dense.T)
    np.testing.assert_array_equal(op.H.tosparse().toarray(), dense.conj().T)
    np.testing.assert_array_equal(op.H.H.todense(), dense)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_torch_matrices_equal_the_numpy_ones(combo, data):
    _case, _dtype, _, op = draw_operator(data, combo)
    for operator in (op, op.H):
        sparse = operator.to_sparse_csr()
        assert sparse.layout == torch.sparse_csr
        assert sparse.device == operator.device
        expected = operator.todense()
        np.testing.assert_array_equal(sparse.to_dense().numpy(), expected)
        np.testing.assert_array_equal(operator.to_dense().numpy(), expected)


def test_small_blocks_build_the_same_matrix(monkeypatch):
    op = convop.conv2d(torch.randn(3, 2, 3, 2, dtype=torch.float64), (2, 9, 8),
                       stride=(2, 1), padding=2, padding_mode="reflect")  # fmt: skip
    dense, sparse = op.todense(), op.tosparse()
    monkeypatch.setattr(materialize, "BLOCK_ENTRIES", 7)  # many blocks, some of one row
    np.testing.assert_array_equal(op.todense(), dense)
    assert (op.tosparse() != sparse).nnz == 0
    assert (op.H.tosparse("csr") != sparse.T.tocsr()).nnz == 0


def test_float32_matrix_matches_float64_reference():
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    op32 = convop.conv2d(weight.float(), (3, 8, 8), padding="same", padding_mode="circular")
    reference = convop.conv2d(weight.float().double(), (3, 8, 8), padding="same",
                              padding_mode="circular").todense()  # fmt: skip
    dense = op32.todense()
    assert dense.dtype == np.float32
    assert op32.tosparse().dtype == np.float32
    assert_close(dense, reference, dtype=np.float32, terms=4)


def test_indices_are_int32_when_they_fit():
    matrix = convop.conv1d(torch.ones(2, 1, 3), (1, 10)).tosparse()
    assert matrix.indices.dtype == np.int32
    assert matrix.indptr.dtype == np.int32


def test_weight_that_requires_grad_materialises():
    weight = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    op = convop.conv1d(weight, (1, 6))
    np.testing.assert_array_equal(op.todense(), op.matmat(np.eye(6)))


def test_circular_padding_has_more_entries_than_zero_padding():
    weight = torch.randn(1, 1, 3, 3)
    zeros = convop.conv2d(weight, (1, 6, 6), padding=1).tosparse()
    circular = convop.conv2d(weight, (1, 6, 6), padding=1, padding_mode="circular").tosparse()
    assert (zeros.nnz, circular.nnz) == (6 * 6 * 9 - 4 * 6 * 3 + 4, 6 * 6 * 9)


# ---------------------------------------------------------------- memory guard
def test_huge_dense_matrix_fails_fast_with_the_size_needed():
    op = convop.conv2d(torch.zeros(64, 64, 3, 3), (64, 512, 512))
    start = time.perf_counter()
    with pytest.raises(
        MemoryError,
        match=r"16646400 x 16777216 float32 matrix needs 1016\.0 TiB, more than the limit.*"
        r"max_bytes=",
    ):
        op.todense()
    assert time.perf_counter() - start < 0.5


def _needed(build, max_bytes: int) -> int:
    """The ``max_bytes`` a refused build asks for."""
    with pytest.raises(MemoryError) as refused:
        build(max_bytes=max_bytes)
    return int(re.search(r"pass max_bytes=(\d+) or more", str(refused.value)).group(1))


@pytest.mark.parametrize("build", ["todense", "tosparse", "to_sparse_csr"])
def test_max_bytes_overrides_the_limit(build):
    op = convop.conv1d(torch.ones(1, 1, 3, dtype=torch.float64), (1, 10))  # 8 x 10 float64
    method = getattr(op, build)
    needed = _needed(method, 10)
    result = {"todense": 640, "tosparse": 24 * (8 + 4) + 9 * 4}[
        build.replace("to_sparse_csr", "tosparse")
    ]
    assert result <= needed < 100 * result  # the result, plus the planning of a small build
    assert _needed(method, needed - 1) == needed
    assert method(max_bytes=needed).shape == (8, 10)


def test_memory_messages_name_the_build():
    op = convop.conv1d(torch.ones(1, 1, 3, dtype=torch.float64), (1, 10))
    with pytest.raises(MemoryError, match=r"todense\(\) of a 8 x 10 float64 matrix needs"):
        op.todense(max_bytes=10)
    with pytest.raises(MemoryError, match=r"tosparse\('csr'\) with 24 nonzeros needs"):
        op.tosparse(max_bytes=10)
    with pytest.raises(MemoryError, match=r"to_sparse_csr\(\) with 24 nonzeros needs"):
        op.to_sparse_csr(max_bytes=10)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GB"])
def test_max_bytes_must_be_a_non_negative_int(bad):
    op = convop.conv1d(torch.ones(1, 1, 3), (1, 10))
    with pytest.raises(ValueError, match=r"max_bytes must be a non-negative int or None"):
        op.todense(max_bytes=bad)


def test_unknown_sparse_format_is_rejected():
    op = convop.conv1d(torch.ones(1, 1, 3), (1, 10))
    with pytest.raises(ValueError, match=r"format must be one of 'csr', 'csc', 'coo', got.*'dia'"):
        op.tosparse("dia")


@pytest.mark.parametrize("build", ["todense", "tosparse", "to_sparse_csr"])
def test_huge_builds_are_refused_before_any_planning(build):
    # 3x3 on 120000^2: one int64 per row would already take 115 GB.
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 120000, 120000), padding=1)
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"needs .* more than the limit of 10 B"):
        getattr(op, build)(max_bytes=10)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_planning_shortcuts_agree_with_reading_every_tap(combo, data):
    # The interior (no padding read) is found arithmetically and its counts assumed to be k;
    # check both against the sources of every tap of every position.
    _case, _dtype, _, op = draw_operator(data, combo)
    for n, before, after, k, s, d, mode, positions, device in op._plan().dims():
        taps = torch.arange(positions)[:, None] * s + torch.arange(k) * d - before  # (P, k)
        inside = ((taps >= 0) & (taps < n)).all(dim=1)  # every tap reads the input itself
        interior = materialize._interior(n, before, k, s, d, positions)
        assert inside.tolist() == [p in interior for p in range(positions)]
        source = materialize._sources(n, before, after, k, s, d, mode, range(positions), device)
        distinct = sum(len(set(row) - {-1}) for row in source.tolist())
        assert materialize._axis_total(n, before, after, k, s, d, mode, positions,
                                       device) == distinct  # fmt: skip


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_long_kernels_plan_in_time_and_memory_linear_in_the_kernel(mode):
    # Planning used to be O(positions * k^2): 58 s and 7 GB for this one at k = 401.
    weight = torch.randn(1, 1, 401, dtype=torch.float64)
    op = convop.conv1d(weight, (1, 20000), padding="same", padding_mode=mode)
    plan = op._plan()
    assert materialize._build_bytes(plan) < 200 * 2**20
    start = time.perf_counter()
    matrix = op.tosparse()
    assert time.perf_counter() - start < 20
    x = np.random.default_rng(0).standard_normal(op.shape[1])
    assert_close(matrix @ x, op @ x, dtype=np.float64, terms=401 * 64,
                 scale=float(weight.abs().sum()) * float(np.abs(x).max()))  # fmt: skip
    assert matrix.nnz == materialize.nnz(plan)


def test_planning_in_small_chunks_builds_the_same_matrix(monkeypatch):
    op = convop.conv2d(torch.randn(2, 3, 5, 4, dtype=torch.float64), (3, 11, 9),
                       stride=(2, 1), padding=(3, 2), padding_mode="reflect")  # fmt: skip
    dense, sparse, count = op.todense(), op.tosparse(), materialize.nnz(op._plan())
    monkeypatch.setattr(materialize, "COUNT_CHUNK", 1)  # one position per planning step
    np.testing.assert_array_equal(op.todense(), dense)
    assert (op.tosparse() != sparse).nnz == 0
    assert materialize.nnz(op._plan()) == count == sparse.nnz


# ---------------------------------------------------------------- progress
def test_progress_bar_on_request_and_quiet_by_default(capsys):
    op = convop.conv2d(torch.ones(2, 1, 3, 3), (1, 16, 16))
    op.tosparse(progress=True)
    assert "tosparse" in capsys.readouterr().err
    op.todense(progress=True)
    assert "todense" in capsys.readouterr().err
    op.tosparse()
    op.todense(progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@pytest.mark.cuda
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_cuda_matrices_match_cpu(combo, data):
    case, _dtype, _, cpu_op = draw_operator(data, combo)
    op = case.operator(cpu_op.weight.cuda())
    expected = cpu_op.todense()
    assert op.to_dense().device.type == "cuda"
    np.testing.assert_allclose(op.todense(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.to_sparse_csr().to_dense().cpu().numpy(), expected,
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(op.tosparse().toarray(), expected, rtol=1e-12, atol=1e-12)
