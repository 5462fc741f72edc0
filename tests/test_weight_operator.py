"""WeightOperator: the convolution of a fixed input as a map of the weight, against torch."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import convop
from convop import functional
from convop.weight_operator import WeightOperator

from .checks import assert_close, assert_cuda_matches_cpu, assert_dot_test
from .strategies import COMBO_IDS, COMBOS, conv_cases, draw_case, real_or_complex

NP = {torch.float32: np.float32, torch.float64: np.float64, torch.complex128: np.complex128}


def _torch_conv(case, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The torch layer of ``case`` with ``weight`` (differentiably) on a batch ``x``."""
    layer = case.module(torch.zeros_like(weight))
    return torch.func.functional_call(layer, {"weight": weight}, (x,))


def _torch_conv_adjoint(case, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The torch layer's adjoint (its input vjp) with ``weight`` at one output sample ``v``."""
    zero = torch.zeros((1, *case.input_shape), dtype=v.dtype)
    _, vjp = torch.func.vjp(lambda x: _torch_conv(case, weight, x), zero)
    return vjp(v[None])[0][0]


def _draw(data, combo, dtypes=real_or_complex):
    """``(case, dtype, x, A)``: a case, a fixed input sample and its weight operator."""
    case, dtype, weight = draw_case(data, combo, dtypes)
    x = case.random(case.input_shape, dtype, 1)
    return case, dtype, x, case.operator(weight).weight_operator(x.numpy())


def _grad_terms(case, A) -> int:
    """Terms summed into one entry of the forward map or of the weight gradient."""
    return max(case.terms, A.shape[0])


# ---------------------------------------------------------------- forward and adjoint vs torch
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_matvec_equals_torch_layer_with_that_weight(combo, data):
    case, dtype, x, A = _draw(data, combo)
    w = case.random(case.weight_shape, dtype, 3)
    expected = _torch_conv(case, w, x[None])[0]
    assert A.shape == (expected.numel(), w.numel())
    y = A @ w.numpy().ravel()
    assert y.dtype == NP[dtype]
    assert_close(y, expected.reshape(-1), dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_rmatvec_equals_the_weight_gradient_of_autograd(combo, data):
    case, dtype, x, A = _draw(data, combo)
    w = case.random(case.weight_shape, dtype, 3)
    v = case.random(A.output_shape, dtype, 2)
    _, vjp = torch.func.vjp(lambda w: _torch_conv(case, w, x[None])[0], w)
    (expected,) = vjp(v)
    g = A.rmatvec(v.numpy().ravel())
    assert g.dtype == NP[dtype]
    assert_close(g, expected.reshape(-1), dtype=dtype, terms=_grad_terms(case, A))


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_dot_test(combo, data):
    case, dtype, _, A = _draw(data, combo)
    w = case.random((A.shape[1],), dtype, 3).numpy()
    v = case.random((A.shape[0],), dtype, 2).numpy()
    assert_dot_test(w, A @ w, v, A.rmatvec(v), dtype=dtype, terms=_grad_terms(case, A))


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_matmat_and_rmatmat_equal_columnwise_products(combo, data):
    case, dtype, _, A = _draw(data, combo)
    W = case.random((A.shape[1], 3), dtype, 3).numpy()
    V = case.random((A.shape[0], 3), dtype, 2).numpy()
    terms = _grad_terms(case, A)
    expected = np.stack([A.matvec(W[:, j]) for j in range(3)], axis=1)
    assert_close(A.matmat(W), expected, dtype=dtype, terms=terms)
    expected = np.stack([A.rmatvec(V[:, j]) for j in range(3)], axis=1)
    assert_close(A.rmatmat(V), expected, dtype=dtype, terms=terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data(), lead=st.sampled_from([(), (3,), (2, 2)]))
def test_torch_face_agrees_with_numpy_face(combo, data, lead):
    case, dtype, _, A = _draw(data, combo)
    w = case.random((*lead, *A.input_shape), dtype, 3)
    v = case.random((*lead, *A.output_shape), dtype, 2)
    y, g = A.apply(w), A.apply_adjoint(v)
    assert (y.shape, g.shape) == ((*lead, *A.output_shape), (*lead, *A.input_shape))
    W, V = w.reshape(-1, A.shape[1]).numpy().T, v.reshape(-1, A.shape[0]).numpy().T
    terms = _grad_terms(case, A)
    assert_close(y.reshape(-1, A.shape[0]).T, A.matmat(W), dtype=dtype, terms=terms)
    assert_close(g.reshape(-1, A.shape[1]).T, A.rmatmat(V), dtype=dtype, terms=terms)
    assert_close(A.H.apply(v), g, dtype=dtype, terms=1)


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_torch_face_refuses_flattened_samples_like_every_operator(lead):
    """One convention for every convop operator (convop._base): ``(..., *input_shape)``."""
    A = _op().weight_operator(torch.randn(2, 4, 5, dtype=torch.float64))
    w = torch.randn(*lead, A.shape[1], dtype=torch.float64)
    v = torch.randn(*lead, A.shape[0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"w must have shape \(\.\.\., 3, 2, 2, 2\), got .*"
                       r"reshape flattened samples to \(\.\.\., \*input_shape\)"):  # fmt: skip
        A.apply(w)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3, 3, 2\), got .*"
                       r"\(\.\.\., \*output_shape\)"):  # fmt: skip
        A.apply_adjoint(v)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_float32_operator_matches_float64_reference(combo, data):
    case = data.draw(conv_cases(*combo), label="case")
    x = case.random(case.input_shape, torch.float64, 1).float()
    w = case.random(case.weight_shape, torch.float64, 3).float().numpy().ravel()
    A32 = case.operator(case.weight(torch.float32)).weight_operator(x)
    A64 = case.operator(case.weight(torch.float64)).weight_operator(x.double())
    y = A32 @ w
    assert y.dtype == np.float32
    # Round-off is relative to sum |w| |x| per output, which cancellation can make >> |y|.
    magnitude = case.operator(case.weight(torch.float64)).weight_operator(x.double().abs())
    scale = float((magnitude @ np.abs(w).astype(np.float64)).max())
    assert_close(y, A64 @ w.astype(np.float64), dtype=np.float32, terms=case.terms, scale=scale)
    v = case.random((A32.shape[0],), torch.float64, 2).float().numpy()
    assert_dot_test(w, y, v, A32.rmatvec(v), dtype=np.float32, terms=_grad_terms(case, A32),
                    factor=10)  # fmt: skip


# ---------------------------------------------------------------- the adjoint and the transpose
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_weight_map_of_the_adjoint_with_real_weights(combo, data):
    case, dtype, weight = draw_case(data, combo, st.just(torch.float64))
    op = case.operator(weight)
    v = case.random(op.output_shape, dtype, 1)  # the fixed input of op.H
    A = op.H.weight_operator(v.numpy())
    assert A.shape == (op.shape[1], weight.numel())
    w = case.random(case.weight_shape, dtype, 3)
    expected = _torch_conv_adjoint(case, w, v)
    assert_close(A @ w.numpy().ravel(), expected.reshape(-1), dtype=dtype, terms=case.terms)
    u = case.random(op.input_shape, dtype, 2)
    _, vjp = torch.func.vjp(lambda w: _torch_conv_adjoint(case, w, v), w)
    (gradient,) = vjp(u)
    terms = _grad_terms(case, A)
    assert_close(A.rmatvec(u.numpy().ravel()), gradient.reshape(-1), dtype=dtype, terms=terms)
    assert_close(op.T.weight_operator(v.numpy()) @ w.numpy().ravel(), A @ w.numpy().ravel(),
                 dtype=dtype, terms=1)  # fmt: skip


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_weight_map_of_the_transpose_is_linear_for_complex_weights(combo, data):
    case, dtype, weight = draw_case(data, combo)
    op = case.operator(weight)
    v = case.random(op.output_shape, dtype, 1)
    A = op.T.weight_operator(v)
    w = case.random(case.weight_shape, dtype, 3)
    v_conj = v.conj().resolve_conj()
    expected = _torch_conv_adjoint(case, w, v_conj).conj()  # A^T v = conj(A^H conj(v))
    assert_close(A @ w.numpy().ravel(), expected.reshape(-1), dtype=dtype, terms=case.terms)
    u = case.random((A.shape[0],), dtype, 2).numpy()
    w = w.numpy().ravel()
    assert_dot_test(w, A @ w, u, A.rmatvec(u), dtype=dtype, terms=_grad_terms(case, A))


def test_real_operator_applied_to_complex_weights_is_its_linear_extension():
    op = convop.conv1d(torch.zeros(2, 1, 3, dtype=torch.float64), (1, 7), padding=1)
    A = op.H.weight_operator(np.random.default_rng(0).standard_normal(op.output_shape))
    w = np.random.default_rng(1).standard_normal((2, A.shape[1]))
    np.testing.assert_allclose(A @ (w[0] + 1j * w[1]), A @ w[0] + 1j * (A @ w[1]), rtol=1e-12)
    v = np.random.default_rng(2).standard_normal((2, A.shape[0]))
    np.testing.assert_allclose(A.rmatvec(v[0] + 1j * v[1]), A.rmatvec(v[0]) + 1j * A.rmatvec(v[1]),
                               rtol=1e-12)  # fmt: skip


class Refusal(NamedTuple):
    """An operator whose map of the weight is conjugate-linear, and the message it gets."""

    weight_dtype: torch.dtype
    x_dtype: type
    which: Callable
    message: str


REFUSALS = {
    "complex weight, op.H": Refusal(
        torch.complex128, np.float64, lambda op: op.H,
        r"adjoint of conv1d is conjugate-linear .* op\.dtype=complex128 and x\.dtype=float64"
        r"\. Use op\.T"),
    "real weight, complex x, op.H": Refusal(
        torch.float64, np.complex128, lambda op: op.H,
        r"op\.dtype=float64 and x\.dtype=complex128\. Use op\.T"),
    "complex weight, op.H.T": Refusal(
        torch.complex128, np.float64, lambda op: op.H.T,
        r"conjugate of conv1d is conjugate-linear .* Use the conv1d itself"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_conjugate_linear_maps_are_refused(case):
    op = case.which(convop.conv1d(torch.ones(2, 1, 3, dtype=case.weight_dtype), (1, 6)))
    with pytest.raises(ValueError, match=case.message):
        op.weight_operator(np.ones(op.input_shape, dtype=case.x_dtype))


# ---------------------------------------------------------------- construction and inputs
def _op() -> convop.ConvOperator:
    return convop.conv2d(torch.zeros(3, 2, 2, 2, dtype=torch.float64), (2, 4, 5), stride=(1, 2))


BAD_X = [
    ("wrong shape", np.ones((2, 5, 4)), ValueError,
     r"x must have shape \(2, 4, 5\) \(one sample of op\.input_shape\) or \(40,\) "
     r"\(flattened\), got \(2, 5, 4\)"),
    ("batched", torch.ones(1, 2, 4, 5), ValueError, r"got \(1, 2, 4, 5\)"),
    ("column", np.ones((40, 1)), ValueError, r"got \(40, 1\)"),
    ("list", [0.0] * 40, TypeError, r"x must be a torch\.Tensor or numpy\.ndarray, got list"),
    ("int tensor", torch.ones(40, dtype=torch.int64), TypeError,
     r"x must be a floating-point or complex tensor, got x\.dtype=torch\.int64"),
    ("strings", np.array(["a"] * 40), TypeError, r"x must hold numbers, got dtype <U1"),
    ("float128", np.ones(40, dtype=np.longdouble), TypeError,
     r"x of dtype float128 promotes with the operator's float64 to float128"),
    ("meta", torch.ones(40, device="meta"), ValueError, r"x is on the meta device"),
    ("sparse", torch.ones(2, 4, 5).to_sparse(), TypeError,
     r"x must be a dense \(strided\) tensor, got layout torch\.sparse_coo"),
]  # fmt: skip


@pytest.mark.parametrize(("x", "error", "message"), [c[1:] for c in BAD_X],
                         ids=[c[0] for c in BAD_X])  # fmt: skip
def test_bad_inputs_are_refused_at_construction(x, error, message):
    with pytest.raises(error, match=message):
        _op().weight_operator(x)


def test_op_must_be_a_conv_operator():
    with pytest.raises(TypeError, match=r"op must be a ConvOperator, got ndarray"):
        WeightOperator(np.ones((3, 3)), np.ones(3))


class Promotion(NamedTuple):
    """The operator's dtype: ``op.dtype`` promoted with ``x``'s, as ``op @ x`` would be."""

    weight_dtype: torch.dtype
    x: np.ndarray | torch.Tensor
    result: type


PROMOTIONS = [
    Promotion(torch.float32, np.arange(4, dtype=np.float32), np.float32),
    Promotion(torch.float32, np.arange(4, dtype=np.float64), np.float64),
    Promotion(torch.float64, np.arange(4, dtype=np.float32), np.float64),
    Promotion(torch.float32, np.arange(4, dtype=np.int64), np.float64),
    Promotion(torch.float32, np.arange(4, dtype=np.complex64), np.complex64),
    Promotion(torch.complex64, np.arange(4, dtype=np.float64), np.complex128),
    Promotion(torch.float32, torch.arange(4).to(torch.bfloat16), np.float32),
    Promotion(torch.float32, torch.arange(4).double(), np.float64),
    Promotion(torch.float64, torch.arange(4).to(torch.complex64), np.complex128),
]


@pytest.mark.parametrize("case", PROMOTIONS, ids=lambda c: f"{c.weight_dtype}-{c.x.dtype}")
def test_dtype_promotes_like_the_conv_operator(case):
    op = convop.conv1d(torch.ones(1, 1, 2, dtype=case.weight_dtype), (1, 4))
    A = op.weight_operator(case.x)
    assert A.dtype == case.result
    y = A @ np.ones(2, dtype=np.float32)
    assert y.dtype == case.result
    np.testing.assert_allclose(y, [1, 3, 5])
    assert A.apply(torch.ones(A.input_shape)).numpy().dtype == case.result


def test_caller_arrays_are_copied_and_never_written():
    op = _op()
    x = np.random.default_rng(0).standard_normal(op.input_shape).astype(">f8")  # big-endian
    x.flags.writeable = False
    saved = x.copy()
    A = op.weight_operator(x)
    w = np.random.default_rng(1).standard_normal(A.shape[1])[::-1]  # negative stride
    v = np.asfortranarray(np.random.default_rng(2).standard_normal((A.shape[0], 2)))
    w_saved, v_saved = w.copy(), v.copy()
    y, g = A @ w, A.rmatmat(v)
    np.testing.assert_array_equal(x, saved)
    np.testing.assert_array_equal(w, w_saved)
    np.testing.assert_array_equal(v, v_saved)
    y_copy = A @ w_saved
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(g, A.rmatmat(v_saved))
    np.testing.assert_array_equal(A.x.numpy(), saved)
    assert not np.shares_memory(A.x.numpy(), x)


def test_a_tensor_x_is_held_as_given():
    op = _op()
    x = torch.randn(op.shape[1], dtype=torch.float64)
    A = op.weight_operator(x)
    assert A.x is x
    w = np.random.default_rng(1).standard_normal(A.shape[1])
    before = A @ w
    with torch.no_grad():
        x.mul_(2.0)
    np.testing.assert_allclose(A @ w, 2 * before, rtol=1e-12)


def test_operators_survive_pickles():
    A = _op().weight_operator(torch.randn(2, 4, 5, dtype=torch.float64))
    w = np.random.default_rng(1).standard_normal(A.shape[1])
    v = np.random.default_rng(2).standard_normal(A.shape[0])
    for twin in (pickle.loads(pickle.dumps(A)), pickle.loads(pickle.dumps(A.H)).H):
        np.testing.assert_array_equal(twin @ w, A @ w)
        np.testing.assert_array_equal(twin.rmatvec(v), A.rmatvec(v))


def test_weight_values_of_the_operator_are_not_read():
    weight = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    op = convop.conv2d(weight, (2, 4, 5))
    A = op.weight_operator(torch.randn(2, 4, 5, dtype=torch.float64))
    w = np.random.default_rng(1).standard_normal(A.shape[1])
    before = A @ w
    with torch.no_grad():
        weight.fill_(7.0)
    np.testing.assert_array_equal(A @ w, before)


# ---------------------------------------------------------------- torch face
def test_apply_is_differentiable_with_respect_to_weight_output_and_x():
    op = convop.conv2d(torch.zeros(2, 1, 2, 2, dtype=torch.float64), (2, 4, 5), stride=(1, 2),
                       padding=1, padding_mode="reflect", groups=2)  # fmt: skip
    x = torch.randn(op.input_shape, dtype=torch.float64, requires_grad=True)
    A = op.weight_operator(x)
    w = torch.randn(2, *A.input_shape, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, *A.output_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: A.apply(w), (w, x))
    assert torch.autograd.gradcheck(lambda v, x: A.apply_adjoint(v), (v, x))
    assert x.grad is None  # gradcheck does not accumulate; the graph reaches x
    A.apply(w).sum().backward()
    assert x.grad is not None


def test_apply_handles_an_empty_batch():
    A = _op().weight_operator(torch.zeros(2, 4, 5, dtype=torch.float64))
    assert A.apply(torch.ones(0, *A.input_shape)).shape == (0, *A.output_shape)
    assert A.apply_adjoint(torch.ones(0, *A.output_shape)).shape == (0, *A.input_shape)
    assert A.matmat(np.ones((A.shape[1], 0))).shape == (A.shape[0], 0)


def test_apply_rejects_wrong_shape_type_and_device():
    A = _op().weight_operator(torch.zeros(2, 4, 5, dtype=torch.float64))
    with pytest.raises(
        ValueError, match=r"w must have shape \(\.\.\., 3, 2, 2, 2\), got \(2, 2, 2\)"
    ):
        A.apply(torch.ones(2, 2, 2))
    with pytest.raises(
        ValueError, match=r"y must have shape \(\.\.\., 3, 3, 2\), got \(3, 4, 3\)"
    ):
        A.apply_adjoint(torch.ones(3, 4, 3))
    with pytest.raises(TypeError, match=r"w must be a torch\.Tensor, got ndarray"):
        A.apply(np.ones((3, 2, 2, 2)))
    with pytest.raises(TypeError, match=r"y must be a floating-point or complex tensor, got "):
        A.apply_adjoint(torch.ones(3, 3, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"w is on meta but the operator's x is on cpu"):
        A.apply(torch.ones(3, 2, 2, 2, device="meta"))
    with pytest.raises(ValueError, match=r"y must have shape"):
        A.H.apply(torch.ones(2, 2, 2))


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_products_run_under_no_grad_and_inference_mode(mode):
    op = _op()
    x = torch.randn(op.input_shape, dtype=torch.float64)
    A = op.weight_operator(x)
    v = torch.randn(A.shape[0], dtype=torch.float64)
    expected = A.rmatvec(v.numpy())
    with mode():
        made_here = op.weight_operator(x.clone())
        np.testing.assert_allclose(A.rmatvec(v.numpy()), expected, rtol=1e-14)
        np.testing.assert_allclose(made_here.rmatvec(v.numpy()), expected, rtol=1e-14)
        g = A.apply_adjoint(v.reshape(A.output_shape))
        np.testing.assert_allclose(g.numpy().reshape(-1), expected, rtol=1e-14)


def test_matmat_and_rmatmat_run_one_batched_convolution(monkeypatch):
    calls = []
    conv2d = functional._CONV[2]
    monkeypatch.setitem(functional._CONV, 2, lambda *a: calls.append(a[0].shape) or conv2d(*a))
    A = convop.conv2d(torch.randn(4, 3, 3, 3), (3, 8, 8)).weight_operator(torch.ones(3, 8, 8))
    A.matmat(np.ones((A.shape[1], 7), dtype=np.float32))
    assert len(calls) == 1
    A.rmatmat(np.ones((A.shape[0], 7), dtype=np.float32))  # one forward (in the vjp) only
    assert len(calls) == 2


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_cuda_operator_matches_cpu_reference(combo, data):
    case, dtype, x, cpu = _draw(data, combo)
    A = case.operator(case.weight(dtype)).weight_operator(x.cuda())  # runs where x is
    w = case.random((A.shape[1],), dtype, 3).numpy()
    v = case.random((A.shape[0],), dtype, 2).numpy()
    assert_cuda_matches_cpu(A, cpu, w, v, dtype=dtype, terms=_grad_terms(case, A))


# ---------------------------------------------------------------- named operators, PyLops
def test_adjoint_is_a_named_weight_operator():
    A = _op().weight_operator(torch.zeros(2, 4, 5, dtype=torch.float64))
    assert repr(A) == (
        "WeightOperator(weight map of conv2d, shape=(18, 24), x_shape=(2, 4, 5), "
        "weight_shape=(3, 2, 2, 2), output_shape=(3, 3, 2), kernel_size=(2, 2), "
        "stride=(1, 2), dtype=float64, device=cpu)"
    )
    assert isinstance(A.H, WeightOperator)
    assert A.H.is_adjoint
    assert not A.H.H.is_adjoint
    assert (A.H.input_shape, A.H.output_shape) == (A.output_shape, A.input_shape)
    assert repr(A.H).startswith("WeightOperator(weight gradient of conv2d, shape=(24, 18)")
    assert repr(_op().T.weight_operator(torch.zeros(3, 3, 2, dtype=torch.float64))).startswith(
        "WeightOperator(weight map of transpose of conv2d, shape=(40, 24)"
    )


def test_to_pylops_passes_the_dot_test():
    pylops = pytest.importorskip("pylops")
    op = convop.conv_transpose2d(torch.zeros(2, 3, 2, 3, dtype=torch.float64), (2, 3, 4),
                                 stride=2, groups=1)  # fmt: skip
    A = op.weight_operator(torch.randn(op.input_shape, dtype=torch.float64))
    P = A.to_pylops()
    assert (P.dims, P.dimsd) == (A.input_shape, A.output_shape)
    w = np.random.default_rng(0).standard_normal(A.input_shape)
    np.testing.assert_allclose(P @ w, (A @ w.ravel()).reshape(A.output_shape), rtol=1e-12)
    assert pylops.utils.dottest(P, *P.shape, rtol=1e-10)
    assert pylops.utils.dottest(A.H.to_pylops(), *A.H.shape, rtol=1e-10)


def test_lsqr_recovers_a_blur_kernel():
    from scipy.sparse.linalg import lsqr

    g = torch.Generator().manual_seed(0)
    kernel = torch.rand(1, 1, 3, 3, dtype=torch.float64, generator=g)
    image = torch.rand(1, 12, 10, dtype=torch.float64, generator=g)
    blur = convop.conv2d(kernel, (1, 12, 10), padding="same", padding_mode="reflect")
    A = blur.weight_operator(image)
    found = lsqr(A, blur @ image.numpy().ravel(), atol=1e-14, btol=1e-14)[0]
    np.testing.assert_allclose(found, kernel.numpy().ravel(), rtol=1e-8)
