"""ConvOperator: the scipy face against torch, its adjoints, dtypes, layouts and the torch face."""

from __future__ import annotations

import copy
import pickle
import time
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop
from convop import functional

from .checks import assert_close, assert_cuda_matches_cpu, assert_dot_test
from .strategies import COMBO_IDS, COMBOS, conv_cases, draw_operator, real_or_complex

NP = {torch.float32: np.float32, torch.float64: np.float64, torch.complex128: np.complex128}


def _sample(case, shape, dtype, offset):
    return case.random(shape, dtype, offset).numpy()


def _draw_samples(data, combo):
    """``(case, dtype, weight, op, x, v)``: :func:`draw_operator`'s case (the operator built
    from a numpy weight), a flat sample ``x`` of its input and ``v`` of its output."""
    case, dtype, weight, op = draw_operator(data, combo, numpy_weight=True)
    x = _sample(case, (op.shape[1],), dtype, 1)
    v = _sample(case, (op.shape[0],), dtype, 2)
    return case, dtype, weight, op, x, v


# ---------------------------------------------------------------- scipy face against torch
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_matvec_equals_torch_module(combo, data):
    case, dtype, weight, op = draw_operator(data, combo, numpy_weight=True)
    x = _sample(case, case.input_shape, dtype, 1)
    expected = case.module(weight)(torch.from_numpy(x)[None])[0]
    y = op @ x.ravel()
    assert y.dtype == NP[dtype]
    assert_close(y, expected.reshape(-1), dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_rmatvec_equals_vjp_of_torch_module(combo, data):
    case, dtype, weight, op = draw_operator(data, combo, numpy_weight=True)
    x = _sample(case, case.input_shape, dtype, 1)
    _, vjp = torch.func.vjp(case.module(weight), torch.from_numpy(x)[None])
    v = _sample(case, op.output_shape, dtype, 2)
    (expected,) = vjp(torch.from_numpy(v)[None])
    assert_close(op.rmatvec(v.ravel()), expected.reshape(-1), dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_dot_test(combo, data):
    case, dtype, _, op, x, v = _draw_samples(data, combo)
    assert_dot_test(x, op.matvec(x), v, op.rmatvec(v), dtype=dtype, terms=case.terms)


@pytest.mark.parametrize(
    ("batched", "single", "rows"),
    [("matmat", "matvec", 1), ("rmatmat", "rmatvec", 0)],
    ids=["matmat", "rmatmat"],
)
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_batched_product_equals_columnwise_products(combo, data, batched, single, rows):
    """matmat (rmatmat) of three columns equals matvec (rmatvec) of each column."""
    case, dtype, _, op = draw_operator(data, combo, numpy_weight=True)
    X = _sample(case, (op.shape[rows], 3), dtype, 1)
    expected = np.stack([getattr(op, single)(X[:, j]) for j in range(3)], axis=1)
    assert_close(getattr(op, batched)(X), expected, dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_adjoint_of_adjoint_is_the_operator(combo, data):
    _, dtype, _, op, x, v = _draw_samples(data, combo)
    assert op.H.shape == op.shape[::-1]
    assert_close(op.H.H @ x, op @ x, dtype=dtype, terms=1)
    assert_close(op.H @ v, op.rmatvec(v), dtype=dtype, terms=1)
    assert_close(op.H.rmatvec(x), op @ x, dtype=dtype, terms=1)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_transpose_is_conjugate_of_adjoint(combo, data):
    case, dtype, _, op, x, v = _draw_samples(data, combo)
    assert_close(op.T @ v, np.conj(op.H @ np.conj(v)), dtype=dtype, terms=case.terms)
    assert_close(op.T.rmatvec(x), np.conj(op @ np.conj(x)), dtype=dtype, terms=case.terms)
    assert_close(op.T.T @ x, op @ x, dtype=dtype, terms=1)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_float32_operator_matches_float64_reference(combo, data):
    case = data.draw(conv_cases(*combo), label="case")
    weight = case.weight(torch.float64)
    x = _sample(case, case.input_shape, torch.float64, 1)
    op32 = case.operator(weight.float())
    x32 = x.astype(np.float32)
    reference = case.operator(weight.float().double())
    y = op32 @ x32.ravel()
    assert y.dtype == np.float32
    # Round-off is relative to sum |w| |x| per output, which cancellation can make >> |y|.
    magnitude = case.operator(weight.float().double().abs()) @ np.abs(x.ravel())
    assert_close(y, reference @ x32.astype(np.float64).ravel(), dtype=np.float32,
                 terms=case.terms, scale=float(magnitude.max()))  # fmt: skip
    v = _sample(case, (op32.shape[0],), torch.float64, 2).astype(np.float32)
    assert_dot_test(x32, y, v, op32.rmatvec(v), dtype=np.float32, terms=case.terms, factor=10)


def test_complex_transpose_differs_from_adjoint():
    op = convop.conv1d(torch.tensor([[[1.0 + 2.0j, 3.0 - 1.0j]]]), (1, 4))
    v = np.array([1.0, 1.0j, 0.5])
    assert not np.allclose(op.T @ v, op.H @ v)
    np.testing.assert_allclose(op.T @ v, np.conj(op.H @ np.conj(v)))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_operators_survive_pickles_and_copies(method):
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    op = convop.conv2d(weight, (2, 9, 8), padding=1, padding_mode="reflect", method=method)
    x = np.random.default_rng(0).standard_normal(op.shape[1])
    y = np.random.default_rng(1).standard_normal(op.shape[0])
    op @ x  # caches filled: a spectrum, kept grids
    for copied in (
        pickle.loads(pickle.dumps(op)),
        copy.deepcopy(op),
        pickle.loads(pickle.dumps(op.H)),
    ):
        twin = copied if copied.shape == op.shape else copied.H
        np.testing.assert_allclose(twin @ x, op @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(twin.rmatvec(y), op.rmatvec(y), rtol=1e-12, atol=1e-12)


def test_matmat_runs_one_batched_convolution(monkeypatch):
    calls = []
    conv2d = functional._CONV[2]
    monkeypatch.setitem(functional._CONV, 2, lambda *a: calls.append(a[0].shape) or conv2d(*a))
    op = convop.conv2d(torch.randn(4, 3, 3, 3), (3, 8, 8), method="direct")
    op.matmat(np.ones((op.shape[1], 7), dtype=np.float32))
    assert calls == [torch.Size([7, 3, 8, 8])]


# ---------------------------------------------------------------- named operators
def test_adjoint_is_a_named_conv_operator():
    layer = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect")
    op = convop.from_module(layer, (2, 9, 9))
    adjoint = op.H
    assert isinstance(adjoint, convop.ConvOperator)
    assert adjoint.is_adjoint
    assert adjoint.weight is op.weight
    assert (adjoint.input_shape, adjoint.output_shape) == (op.output_shape, op.input_shape)
    assert adjoint.bias is None
    assert repr(adjoint).startswith("ConvOperator(adjoint of conv2d, input_shape=(3, 5, 5)")
    assert not op.H.H.is_adjoint
    np.testing.assert_array_equal(op.H.H.bias, op.bias)


def test_repr_names_kind_shapes_geometry_dtype_and_device():
    op = convop.conv_transpose3d(
        torch.zeros(4, 1, 2, 2, 2, dtype=torch.float64),
        (4, 3, 3, 3),
        stride=2,
        groups=2,
        method="direct",  # 'auto' adds its estimates: tests/test_cost.py
    )
    assert repr(op) == (
        "ConvOperator(conv_transpose3d, input_shape=(4, 3, 3, 3), output_shape=(2, 6, 6, 6), "
        "kernel_size=(2, 2, 2), stride=(2, 2, 2), groups=2, method='direct', dtype=float64, "
        "device=cpu)"
    )


def test_repr_shows_asymmetric_same_padding_per_side():
    op = convop.conv1d(torch.zeros(1, 1, 4), (1, 9), padding="same", padding_mode="circular")
    assert "padding=((1, 2),), padding_mode='circular'" in repr(op)


# ---------------------------------------------------------------- dtypes
class Promotion(NamedTuple):
    """An operator's dtype, its data's and the result's, on the faces that take such data."""

    op_dtype: torch.dtype
    x_dtype: torch.dtype
    result: torch.dtype
    faces: tuple[str, ...] = ("numpy", "torch")


PROMOTIONS = [
    Promotion(torch.float32, torch.float32, torch.float32),
    Promotion(torch.float32, torch.float64, torch.float64),
    Promotion(torch.float64, torch.float32, torch.float64),
    Promotion(torch.float32, torch.complex64, torch.complex64),
    Promotion(torch.float64, torch.complex64, torch.complex128),
    Promotion(torch.float32, torch.int8, torch.float32, faces=("numpy",)),
    Promotion(torch.float32, torch.int64, torch.float64, faces=("numpy",)),
    Promotion(torch.float64, torch.bool, torch.float64, faces=("numpy",)),
    Promotion(torch.complex64, torch.float64, torch.complex128, faces=("numpy",)),
    Promotion(torch.float32, torch.bfloat16, torch.float32, faces=("torch",)),  # not in numpy
]


def _promotions(face: str) -> list:
    """The cases of ``face``, as ``pytest.param``s named by their two dtypes."""
    return [
        pytest.param(case, id=f"{case.op_dtype}-{case.x_dtype}".replace("torch.", ""))
        for case in PROMOTIONS
        if face in case.faces
    ]


def _numpy(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


@pytest.mark.parametrize("case", _promotions("numpy"))
def test_numpy_face_promotes_like_a_dense_matrix(case):
    weight = torch.randn(2, 1, 3, dtype=torch.float64).to(case.op_dtype)
    op = convop.conv1d(weight, (1, 6), padding=1)
    x_dtype, result = _numpy(case.x_dtype), _numpy(case.result)
    x = (np.arange(6) % 2).astype(x_dtype)
    dense = op.matmat(np.eye(6)).astype(np.result_type(op.dtype, np.float64))
    y = op @ x
    assert y.dtype == result
    np.testing.assert_allclose(y, dense @ x, rtol=1e-5, atol=1e-5)
    assert op.rmatvec(np.ones(12, dtype=x_dtype)).dtype == result


def test_numpy_face_rejects_unsupported_dtypes():
    op = convop.conv1d(torch.randn(1, 1, 2, dtype=torch.float64), (1, 4))
    with pytest.raises(TypeError, match=r"x of dtype float128 promotes .* to float128"):
        op @ np.ones(4, dtype=np.longdouble)
    with pytest.raises(TypeError, match=r"x must hold numbers, got dtype <U1"):
        op @ np.array(list("abcd"))


@pytest.mark.parametrize("case", _promotions("torch"))
def test_torch_face_promotes_like_torch(case):
    op = convop.conv1d(torch.ones(1, 1, 2, dtype=case.op_dtype), (1, 4))
    x = torch.arange(4).to(case.x_dtype)
    y = op.apply(x[None])
    assert y.dtype == case.result
    torch.testing.assert_close(y, torch.tensor([[1, 3, 5]]).to(case.result))
    assert op.apply_adjoint(torch.ones(1, 3, dtype=case.x_dtype)).dtype == case.result


# ---------------------------------------------------------------- numpy input layouts
def _layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as ``x`` in awkward memory layouts."""
    double = np.empty(2 * x.size, dtype=x.dtype)
    double[::2] = x
    reversed_ = x[::-1].copy()[::-1]
    readonly = x.copy()
    readonly.flags.writeable = False
    return {
        "strided": double[::2],
        "negative-stride": reversed_,
        "big-endian": x.astype(x.dtype.newbyteorder(">")),
        "read-only": readonly,
        "column": x.reshape(-1, 1),
    }


@pytest.mark.parametrize("layout", list(_layouts(np.zeros(1))))
def test_matvec_accepts_any_layout_and_leaves_it_alone(layout):
    op = convop.conv2d(torch.randn(3, 2, 3, 3, dtype=torch.float64), (2, 5, 6), padding=1)
    x = np.random.default_rng(0).standard_normal(op.shape[1])
    v = np.random.default_rng(1).standard_normal(op.shape[0])
    xs, vs = _layouts(x)[layout], _layouts(v)[layout]
    saved_x, saved_v = xs.copy(), vs.copy()
    np.testing.assert_array_equal((op @ xs).ravel(), op @ x)
    np.testing.assert_array_equal(op.rmatvec(vs).ravel(), op.rmatvec(v))
    np.testing.assert_array_equal(xs, saved_x)
    np.testing.assert_array_equal(vs, saved_v)


def test_matmul_dispatches_like_scipy():
    op = convop.conv1d(torch.randn(2, 1, 3, dtype=torch.float64), (1, 8), padding=1)
    x = np.random.default_rng(0).standard_normal(op.shape[1])
    X = np.random.default_rng(1).standard_normal((op.shape[1], 3))
    dense = op.todense()
    np.testing.assert_allclose(op @ x, dense @ x, rtol=1e-12)
    np.testing.assert_array_equal(op @ x.reshape(-1, 1), (op @ x).reshape(-1, 1))
    np.testing.assert_array_equal(op @ list(x), op @ x)
    np.testing.assert_array_equal(op @ X, op.matmat(X))
    product = op @ op.H
    assert isinstance(product, spla.LinearOperator)
    np.testing.assert_allclose(product @ np.ones(op.shape[0]), dense @ dense.T @ np.ones(16))
    np.testing.assert_allclose(op.dot(2.0) @ x, 2 * (op @ x), rtol=1e-12)


def test_matvec_result_is_fresh_memory():
    op = convop.conv1d(torch.ones(1, 1, 1, dtype=torch.float64), (1, 5))  # the identity
    x = np.arange(5.0)
    y = op @ x
    y[:] = -1
    np.testing.assert_array_equal(x, np.arange(5.0))
    np.testing.assert_array_equal(op @ x, np.arange(5.0))


def test_matmat_accepts_fortran_and_transposed_views():
    op = convop.conv1d(torch.randn(2, 1, 3, dtype=torch.float64), (1, 8), stride=2)
    X = np.random.default_rng(0).standard_normal((op.shape[1], 4))
    expected = op.matmat(X)
    np.testing.assert_array_equal(op.matmat(np.asfortranarray(X)), expected)
    np.testing.assert_array_equal(op.matmat(X.T.copy().T), expected)
    np.testing.assert_array_equal(op.matmat(X[:, ::-1])[:, ::-1], expected)


def test_products_leave_no_state_on_the_operator():
    op = convop.conv2d(torch.randn(2, 2, 3, 3), (2, 6, 6), padding_mode="circular", padding=1)
    before = dict(vars(op))
    weight = op.weight.clone()
    op @ np.ones(op.shape[1], dtype=np.float32)
    op.rmatmat(np.ones((op.shape[0], 2)))
    op.apply(torch.ones(op.input_shape))
    memo = {"_choice"}  # 'auto' resolved for the weight's dtype and device, a pure function
    assert vars(op).keys() == before.keys()
    assert all(vars(op)[key] is value for key, value in before.items() if key not in memo)
    assert torch.equal(op.weight, weight)


# ---------------------------------------------------------------- wrong sizes
def test_matvec_rejects_wrongly_sized_vectors():
    op = convop.conv2d(torch.randn(3, 2, 3, 3), (2, 5, 5))
    with pytest.raises(
        ValueError, match=r"x must have shape \(50,\) or \(50, 1\).*got shape \(49,\)"
    ):
        op @ np.ones(49)
    with pytest.raises(ValueError, match=r"x must have shape \(27,\) or \(27, 1\).*\(3, 3, 3\)"):
        op.rmatvec(np.ones(50))
    with pytest.raises(ValueError, match=r"X must have shape \(50, k\).*got shape \(27, 2\)"):
        op.matmat(np.ones((27, 2)))
    with pytest.raises(ValueError, match=r"X must have shape \(27, k\).*got shape \(27,\)"):
        op.rmatmat(np.ones(27))


_SCIPY_CALLS = {
    "matvec": lambda A, a: A.matvec(a),
    "rmatvec": lambda A, a: A.rmatvec(a),
    "matmat": lambda A, a: A.matmat(a),
    "rmatmat": lambda A, a: A.rmatmat(a),
    "dot": lambda A, a: A.dot(a),
    "matmul": lambda A, a: A @ a,
}


@pytest.mark.parametrize("call", list(_SCIPY_CALLS))
@pytest.mark.parametrize("shape", ["n", "n,1", "n,3", "m", "m,1", "m,3", "n+1", "n,1,1", "scalar"])
def test_overridden_scipy_methods_behave_like_scipy(call, shape):
    """convop overrides matvec/rmatvec/matmat/rmatmat/dot for speed and messages: same
    results, shapes and exception types as scipy's own LinearOperator on the dense matrix."""
    op = convop.conv2d(torch.randn(3, 2, 3, 3, dtype=torch.float64), (2, 5, 4), stride=2)
    reference = spla.aslinearoperator(op.todense())
    m, n = op.shape
    sizes = {"n": n, "m": m, "n+1": n + 1}
    dims = [sizes.get(d) or int(d) for d in shape.split(",")] if shape != "scalar" else []
    a = np.random.default_rng(0).standard_normal(dims) if dims else 2.0
    fn = _SCIPY_CALLS[call]
    try:
        want = fn(reference, a)
    except Exception as error:
        with pytest.raises(type(error)):
            fn(op, a)
        return
    got = fn(op, a)
    if isinstance(want, np.ndarray):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-12)
    else:  # op @ scalar, op.dot(scalar): a scaled operator
        np.testing.assert_allclose(got @ np.ones(n), want @ np.ones(n), atol=1e-12)


def test_apply_rejects_wrong_trailing_shape_type_and_device():
    op = convop.conv2d(torch.randn(3, 2, 3, 3), (2, 5, 5))
    with pytest.raises(
        ValueError, match=r"x must have shape \(\.\.\., 2, 5, 5\), got \(4, 2, 5, 4\)"
    ):
        op.apply(torch.ones(4, 2, 5, 4))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3, 3, 3\), got \(3, 3\)"):
        op.apply_adjoint(torch.ones(3, 3))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        op.apply(np.ones((2, 5, 5)))
    with pytest.raises(
        TypeError, match=r"x must be a floating-point or complex tensor, got torch\.int64"
    ):
        op.apply(torch.ones(2, 5, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="x is on meta but the operator's weight is on cpu"):
        op.apply(torch.ones(2, 5, 5, device="meta"))


def test_constructor_checks_weight_against_geometry():
    geometry = convop.ConvGeometry.from_torch((3, 2, 3), (2, 8))
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 2, 3\).*got \(3, 2, 2\)"):
        convop.ConvOperator(torch.ones(3, 2, 2), geometry)
    with pytest.raises(TypeError, match="geometry must be a ConvGeometry, got dict"):
        convop.ConvOperator(torch.ones(3, 2, 3), {})
    with pytest.raises(TypeError, match=r"weight must be a torch\.Tensor, got ndarray"):
        convop.ConvOperator(np.ones((3, 2, 3)), geometry)
    with pytest.raises(
        TypeError, match=r"weight must have dtype .*, got weight\.dtype=torch\.float16"
    ):
        convop.ConvOperator(torch.ones(3, 2, 3, dtype=torch.float16), geometry)


# ---------------------------------------------------------------- torch face
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data(), lead=st.sampled_from([(), (3,), (2, 2)]))
def test_apply_and_apply_adjoint_on_batches(combo, data, lead):
    case = data.draw(conv_cases(*combo), label="case")
    dtype = data.draw(real_or_complex, label="dtype")
    weight = case.weight(dtype)
    op = case.operator(weight)
    x = case.random((*lead, *op.input_shape), dtype, 1)
    flat = x.reshape(-1, *op.input_shape)
    module = case.module(weight)
    y = op.apply(x)
    assert y.shape == (*lead, *op.output_shape)
    assert_close(y.reshape(flat.shape[0], -1), module(flat).reshape(flat.shape[0], -1),
                 dtype=dtype, terms=case.terms)  # fmt: skip
    v = case.random(tuple(y.shape), dtype, 2)
    _, vjp = torch.func.vjp(module, flat)
    (expected,) = vjp(v.reshape(-1, *op.output_shape))
    assert_close(op.apply_adjoint(v).reshape(expected.shape), expected, dtype=dtype,
                 terms=case.terms)  # fmt: skip
    assert_close(op.H.apply(v), op.apply_adjoint(v), dtype=dtype, terms=1)


def test_apply_handles_an_empty_batch():
    op = convop.conv1d(torch.randn(2, 1, 3), (1, 5))
    assert op.apply(torch.ones(0, 1, 5)).shape == (0, 2, 3)


def test_apply_is_differentiable_with_respect_to_input_and_weight():
    weight = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    op = convop.conv2d(weight, (3, 4, 5), stride=(1, 2), padding=1, padding_mode="reflect")
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, *op.output_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: op.apply(x), (x, weight))
    assert torch.autograd.gradcheck(lambda y, w: op.apply_adjoint(y), (y, weight))
    assert weight.grad is None  # gradcheck does not accumulate; the graph reaches the weight
    op.apply(x).sum().backward()
    assert weight.grad is not None


def test_numpy_face_works_with_a_weight_that_requires_grad():
    weight = torch.randn(2, 1, 3, requires_grad=True)
    op = convop.conv1d(weight, (1, 5))
    np.testing.assert_allclose(op @ np.ones(5, dtype=np.float32), op.apply(torch.ones(1, 5))
                               .detach().reshape(-1).numpy())  # fmt: skip


# ---------------------------------------------------------------- scipy solvers
def _well_conditioned_operator():
    """3 -> 3 channel 'same' conv: 2 * identity plus small random taps (diagonally dominant)."""
    g = torch.Generator().manual_seed(0)
    weight = 0.05 * torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=g)
    weight[range(3), range(3), 1, 1] += 2.0
    return convop.conv2d(weight, (3, 12, 10), padding="same", padding_mode="replicate")


def _residual_stop_bound(op, b: np.ndarray, x: np.ndarray, atol: float, btol: float) -> float:
    """``||x - x*||`` once LSQR or LSMR stopped by their test 1 on a consistent ``b = A x*``.

    Test 1 is ``||r|| <= btol ||b|| + atol ||A|| ||x||``, with ``||A||`` their estimate of
    the Frobenius norm (the bidiagonal's, at most ``||A||_F``) and ``r = A (x* - x)``, so
    ``||x - x*|| <= ||r|| / sigma_min(A)``: the dense matrix gives both norms. (The residual
    norm they test is a recurrence; its drift, a few ``eps`` per iteration, is far below
    ``atol`` here.)
    """
    a = op.todense()
    sigma_min = np.linalg.svd(a, compute_uv=False).min()
    bound = btol * np.linalg.norm(b) + atol * np.linalg.norm(a) * np.linalg.norm(x)
    return bound / sigma_min


def test_lsqr_recovers_a_signal_through_a_multichannel_conv():
    op = _well_conditioned_operator()
    x_true = np.random.default_rng(0).standard_normal(op.shape[1])
    b = op @ x_true
    x, istop, *_ = spla.lsqr(op, b, atol=1e-12, btol=1e-12, iter_lim=200)
    # A is square and nonsingular: ||A^H r|| >= sigma_min ||r|| keeps test 2 (||A^H r|| <=
    # atol ||A|| ||r||) from stopping it, so it stops by test 1, before the iteration limit
    assert istop == 1
    bound = _residual_stop_bound(op, b, x, atol=1e-12, btol=1e-12)  # 4.8e-10
    assert np.linalg.norm(x - x_true) <= bound  # 2.6e-11 measured


def test_lsmr_and_cg_on_normal_equations_recover_the_signal():
    op = _well_conditioned_operator()
    x_true = np.random.default_rng(1).standard_normal(op.shape[1])
    b = op @ x_true
    x_lsmr, istop = spla.lsmr(op, b, atol=1e-12, btol=1e-12)[:2]
    assert istop == 1  # by test 1, as lsqr's above
    bound = _residual_stop_bound(op, b, x_lsmr, atol=1e-12, btol=1e-12)  # 4.4e-10
    assert np.linalg.norm(x_lsmr - x_true) <= bound  # 2.3e-11 measured
    # cg stops at ||A^H b - A^H A x|| < rtol ||A^H b||, and A^H A's smallest eigenvalue is
    # sigma_min(A)^2: ||x - x*|| <= rtol ||A^H b|| / sigma_min^2
    rhs = op.rmatvec(b)
    x_cg, info = spla.cg(op.H @ op, rhs, rtol=1e-12, maxiter=200)
    assert info == 0
    sigma_min = np.linalg.svd(op.todense(), compute_uv=False).min()
    bound = 1e-12 * np.linalg.norm(rhs) / sigma_min**2  # 2.8e-11
    assert np.linalg.norm(x_cg - x_true) <= bound  # 4.3e-12 measured


def test_svds_matches_singular_values_of_the_explicit_matrix():
    op = convop.conv1d(torch.randn(2, 2, 3, dtype=torch.float64), (2, 20), stride=2)
    dense = op.matmat(np.eye(op.shape[1]))
    expected = np.linalg.svd(dense, compute_uv=False)[:3]
    found = spla.svds(op, k=3, return_singular_vectors=False, rng=0)
    np.testing.assert_allclose(np.sort(found)[::-1], expected, rtol=1e-10)


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_cuda_operator_matches_cpu_reference(combo, data):
    case, dtype, weight, cpu_op, x, v = _draw_samples(data, combo)
    op = case.operator(weight.cuda())
    assert_cuda_matches_cpu(op, cpu_op, x, v, dtype=dtype, terms=case.terms)


# ---------------------------------------------------------------- state follows the weight
def _blur_layer() -> torch.nn.Conv2d:
    """A float64 layer with a deblurring-sized kernel (15 x 15, reflect padding)."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(1, 1, 15, padding="same", padding_mode="reflect", bias=False).double()


def _sgd_step(layer: torch.nn.Module) -> None:
    optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    layer(torch.randn(1, 1, 24, 20, dtype=torch.float64)).square().sum().backward()
    optimizer.step()


def _load_state(layer: torch.nn.Module) -> None:
    layer.load_state_dict({"weight": torch.randn_like(layer.weight)})


def _write_through_data(layer: torch.nn.Module) -> None:
    layer.weight.data.mul_(-3.0).add_(0.5)  # bypasses autograd's version counter


def _no_grad_in_place(layer: torch.nn.Module) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))


def _flat(a) -> np.ndarray:
    return (a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)).reshape(-1)


WEIGHT_CHANGES = [_sgd_step, _load_state, _write_through_data, _no_grad_in_place]


@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
@pytest.mark.parametrize("change", WEIGHT_CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_every_face_follows_in_place_weight_changes(change, method):
    layer = _blur_layer()
    op = convop.from_module(layer, (1, 24, 20), method=method)
    x = torch.randn(1, 24, 20, dtype=torch.float64)
    v = torch.randn(1, 24, 20, dtype=torch.float64)
    op @ x.numpy().ravel()  # every cache built for the old weight
    op.H @ v.numpy().ravel()
    change(layer)
    expected = layer(x[None])[0].detach()
    _, vjp = torch.func.vjp(layer, x[None])
    (adjoint,) = vjp(v[None])
    terms = 15 * 15 * 64
    scale = float(layer.weight.detach().abs().sum()) * float(x.abs().max() + v.abs().max())
    with torch.no_grad():
        faces = {
            "matvec": op @ x.numpy().ravel(),
            "matmat": op.matmat(x.numpy().reshape(-1, 1))[:, 0],
            "apply": op.apply(x),
            "todense": op.todense() @ x.numpy().ravel(),
            "pylops": op.to_pylops() @ x.numpy(),
        }
    for y in faces.values():
        assert_close(_flat(y), _flat(expected), dtype=torch.float64, terms=terms, scale=scale)
    for y in (op.rmatvec(v.numpy().ravel()), op.H @ v.numpy().ravel(), op.apply_adjoint(v)):
        assert_close(_flat(y), _flat(adjoint), dtype=torch.float64, terms=terms, scale=scale)


def test_fft_spectrum_is_computed_once_per_weight_value(monkeypatch):
    calls = []
    spectrum = convop._fft.spectrum
    monkeypatch.setattr(convop._fft, "spectrum", lambda *a: calls.append(1) or spectrum(*a))
    layer = _blur_layer()
    op = convop.from_module(layer, (1, 24, 20), method="fft")  # small: 'auto' goes direct
    assert calls == []  # construction computes nothing
    x = np.ones(op.shape[1])
    op @ x, op.H @ x, op.matmat(np.ones((op.shape[1], 3)))
    assert len(calls) == 1  # shared by op and op.H, reused while the weight is unchanged
    _write_through_data(layer)
    op @ x, op @ x
    assert len(calls) == 2


def test_dtype_and_method_follow_the_weight():
    layer = torch.nn.Conv2d(1, 1, 15, padding="same", bias=False).double()
    op = convop.from_module(layer, (1, 32, 32))
    assert op.dtype == np.float64
    layer.float()  # replaces the parameter's data in place
    assert op.dtype == np.float32
    assert op.todense().dtype == np.float32
    x = np.random.default_rng(0).standard_normal(op.shape[1]).astype(np.float32)
    y = op @ x
    assert y.dtype == np.float32
    expected = layer(torch.from_numpy(x).reshape(1, 1, 32, 32)).detach().numpy().ravel()
    scale = float(layer.weight.detach().abs().sum()) * float(np.abs(x).max())
    assert_close(y, expected, dtype=np.float32, terms=15 * 15 * 64, scale=scale)
    assert "dtype=float32" in repr(op)
    assert op.to_pylops().dtype == np.float32


def test_weight_changed_to_an_unsupported_dtype_is_refused_at_use():
    layer = torch.nn.Conv1d(1, 2, 3)
    op = convop.from_module(layer, (1, 8))
    layer.half()
    message = r"weight now has dtype torch\.float16 \(changed in place.*module\.half\(\)\)"
    for use in (lambda: op.dtype, lambda: op @ np.ones(8), lambda: op.todense(),
                lambda: op.apply(torch.ones(1, 8, dtype=torch.float16))):  # fmt: skip
        with pytest.raises(TypeError, match=message):
            use()
    assert "dtype=torch.float16" in repr(op)  # repr never raises


def test_weight_changed_to_another_shape_is_refused_at_use():
    layer = torch.nn.Conv1d(1, 2, 3)
    op = convop.from_module(layer, (1, 8))
    layer.weight.data = torch.ones(2, 1, 5)
    with pytest.raises(ValueError, match=r"weight now has shape \(2, 1, 5\), not the \(2, 1, 3\)"):
        op @ np.ones(8)


def test_transpose_follows_a_complex_weight():
    weight = torch.randn(2, 1, 3, dtype=torch.complex128)
    op = convop.conv1d(weight, (1, 6))
    transpose = op.T
    with torch.no_grad():
        weight.mul_(1j)
    v = np.random.default_rng(0).standard_normal(op.shape[0]) + 0j
    np.testing.assert_allclose(transpose @ v, op.todense().T @ v, rtol=1e-13)
    np.testing.assert_allclose(transpose.todense(), op.todense().T, rtol=1e-13)


# ---------------------------------------------------------------- construction is lazy
def test_construction_computes_and_allocates_nothing(monkeypatch):
    def fail(*args):
        raise AssertionError("the FFT spectrum was computed")

    monkeypatch.setattr(convop._fft, "spectrum", fail)
    start = time.perf_counter()
    big = convop.conv2d(torch.ones(1, 1, 31, 31), (1, 100000, 100000), padding="same")
    fourier = convop.conv2d(torch.ones(1, 1, 31, 31), (1, 8000, 8000), method="fft")
    for op in (big, fourier, big.H, fourier.T):
        repr(op), op.method, op.dtype, op.shape
    assert time.perf_counter() - start < 0.5


def test_products_too_large_for_memory_are_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(convop._shared.memory, "HOST_SOURCES", (lambda: 2**30,))  # 1 GiB available
    fourier = convop.conv2d(torch.ones(1, 1, 31, 31), (1, 12000, 12000), method="fft")
    x = torch.zeros(()).expand(1, 1, 12000, 12000)  # no memory behind it
    with pytest.raises(MemoryError, match=r"the FFT spectrum of a conv2d .* needs .*use "
                                          r"method='direct'"):  # fmt: skip
        fourier.apply(x)
    direct = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 12000, 12000), method="direct")
    with pytest.raises(MemoryError, match=r"a product of the conv2d on a batch of 1 samples "
                                          r"needs .*apply it to smaller batches"):  # fmt: skip
        direct.apply(x)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_empty_batches_give_empty_results(method):
    op = convop.conv2d(torch.randn(3, 2, 5, 5, dtype=torch.float64), (2, 9, 8), padding=2,
                       padding_mode="reflect", method=method)  # fmt: skip
    assert op.matmat(np.ones((op.shape[1], 0))).shape == (op.shape[0], 0)
    assert op.rmatmat(np.ones((op.shape[0], 0))).shape == (op.shape[1], 0)
    assert op.apply(torch.zeros(0, *op.input_shape, dtype=torch.float64)).shape == (
        0, *op.output_shape)  # fmt: skip
    assert op.apply_adjoint(torch.zeros(2, 0, *op.output_shape)).shape == (2, 0, *op.input_shape)
    assert op.to_pylops().matmat(np.ones((op.shape[1], 0))).shape == (op.shape[0], 0)


# ---------------------------------------------------------------- weights no product can use
def test_weights_without_values_or_dense_layout_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"weight is on the meta device, which holds no values"):
        convop.conv2d(torch.ones(1, 1, 3, 3, device="meta"), (1, 8, 8))
    with pytest.raises(ValueError, match=r"weight is on the meta device"):
        convop.from_module(torch.nn.Conv2d(1, 1, 3, device="meta"), (1, 8, 8))
    with pytest.raises(TypeError, match=r"weight must be a dense \(strided\) tensor, got layout "
                                        r"torch\.sparse_coo"):  # fmt: skip
        convop.conv2d(torch.ones(1, 1, 3, 3).to_sparse(), (1, 8, 8))
    geometry = convop.ConvGeometry.from_torch((1, 1, 3), (1, 8))
    with pytest.raises(TypeError, match=r"layout torch\.sparse_coo"):
        convop.ConvOperator(torch.ones(1, 1, 3).to_sparse(), geometry)
