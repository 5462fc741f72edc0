"""convop._base: the operator contract, and the faces every operator gets from it.

A small operator that implements the contract and nothing else (an explicit matrix acting on
samples of shape (2, 3)) checks the faces against numpy's own matrix products; then every
operator of convop (convolutions, weight maps, preconditioners, their adjoints and
transposes) is checked to take the one torch-face convention and to convert to the one
PyLops operator.
"""

from __future__ import annotations

import pickle
import pickletools
from collections.abc import Callable

import numpy as np
import pylops
import pytest
import scipy.sparse.linalg as spla
import torch

import convop
from convop._base import Adjoint, Operator, Transpose
from convop.pylops_bridge import PyLopsConv

numpydoc_validate = pytest.importorskip("numpydoc.validate")


class Matrix(Operator):
    """``y = M x`` for samples of shape ``(2, 3)``, ``M`` of shape ``(4, 6)``: the contract."""

    name = "matrix"

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.device, self.torch_dtype = matrix.device, matrix.dtype  # attributes: the contract
        super().__init__((2, 3), (4,))  # allows them as well as properties

    def _product(self, batch: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        dtype = torch.promote_types(self.matrix.dtype, batch.dtype)
        m = self.matrix.to(dtype)
        rows = batch.to(dtype).reshape(batch.shape[0], -1)  # (B, n)
        out = rows @ m.conj() if adjoint else rows @ m.T  # (B, 6) or (B, 4)
        out = out if grad else out.detach()
        return out.reshape(batch.shape[0], *(self.input_shape if adjoint else self.output_shape))


def _matrix(dtype=torch.complex128) -> tuple[Matrix, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 6, dtype=dtype, generator=g)
    return Matrix(m), m.numpy()


def _random(shape, dtype, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return (
        (x + 1j * rng.standard_normal(shape)).astype(dtype)
        if dtype.kind == "c"
        else x.astype(dtype)
    )


# ---------------------------------------------------------------- the numpy face
@pytest.mark.parametrize("data", [np.float32, np.float64, np.complex64, np.complex128])
def test_numpy_face_of_a_contract_operator_is_its_matrix(data):
    op, m = _matrix()
    x, y = _random(6, np.dtype(data), 1), _random(4, np.dtype(data), 2)
    X, Y = _random((6, 3), np.dtype(data), 3), _random((4, 3), np.dtype(data), 4)
    for got, want in (
        (op @ x, m @ x),
        (op.matvec(x), m @ x),
        (op.rmatvec(y), m.conj().T @ y),
        (op.matmat(X), m @ X),
        (op.rmatmat(Y), m.conj().T @ Y),
        (op.dot(X), m @ X),
        (op.H @ y, m.conj().T @ y),
        (op.T @ y, m.T @ y),
        (op.T.rmatvec(x), m.conj() @ x),
        (op.H.H @ x, m @ x),
        (op.T.T @ x, m @ x),
        (op.H.T @ x, m.conj() @ x),
    ):
        assert got.dtype == np.complex128
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert op.H.H is op
    assert op.T.T is op
    assert (type(op.H), type(op.T)) == (Adjoint, Transpose)
    assert (op.H.name, op.T.name) == ("adjoint of matrix", "transpose of matrix")


#: (the operator's dtype, the data's): numpy's promotion of the two is the oracle.
PROMOTIONS = [
    (torch.float32, np.float32),
    (torch.float32, np.float64),
    (torch.float32, np.int64),
    (torch.float64, np.complex64),
    (torch.complex64, np.float32),
]


@pytest.mark.parametrize(
    ("dtype", "data"), PROMOTIONS, ids=lambda c: getattr(c, "__name__", str(c))
)
def test_numpy_face_computes_in_numpys_result_dtype(dtype, data):
    op, m = _matrix(dtype)
    x = np.arange(6).astype(data)
    y = op @ x
    expected = np.result_type(m.dtype, data)
    assert (op.dtype, y.dtype) == (np.dtype(m.dtype), expected)
    np.testing.assert_allclose(y, m.astype(np.complex128) @ x, rtol=1e-5)
    assert op.rmatmat(np.ones((4, 2), dtype=data)).dtype == expected


def test_numpy_face_refuses_wrong_shapes_naming_the_sample():
    op, _ = _matrix()
    message = r"x must have shape \(6,\) or \(6, 1\), a flattened sample of shape \(2, 3\), got"
    with pytest.raises(ValueError, match=message + r" shape \(4,\)"):
        op.matvec(np.ones(4))
    message = r"X must have shape \(4, k\), one flattened sample of shape \(4,\) per column"
    with pytest.raises(ValueError, match=message + r", got shape \(6, 2\)"):
        op.rmatmat(np.ones((6, 2)))
    with pytest.raises(AttributeError, match=r"Matrix\.dtype follows the operator"):
        op.dtype = np.float32


def test_vectors_that_solvers_pass_cross_into_torch_without_a_copy(monkeypatch):
    op, m = _matrix(torch.float64)
    seen = []
    product = Matrix._product
    monkeypatch.setattr(Matrix, "_product", lambda s, b, **k: seen.append(b) or product(s, b, **k))
    x = np.arange(6.0)
    y = op @ x
    assert np.shares_memory(seen[0].numpy(), x)  # a view of the caller's vector ...
    assert not np.shares_memory(y, x)  # ... and never written: the result is fresh memory
    np.testing.assert_array_equal(x, np.arange(6.0))
    op @ x[::-1]  # not contiguous: copied first
    assert not np.shares_memory(seen[1].numpy(), x)
    np.testing.assert_allclose(y, m @ x, rtol=1e-14)


# ---------------------------------------------------------------- the torch face
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_torch_face_takes_any_leading_dimensions(lead):
    op, m = _matrix()
    x = torch.randn(*lead, 2, 3, dtype=torch.complex128)
    y = torch.randn(*lead, 4, dtype=torch.complex128)
    out, back = op.apply(x), op.apply_adjoint(y)
    assert (out.shape, back.shape) == ((*lead, 4), (*lead, 2, 3))
    expected = np.einsum("ij,...j->...i", m, x.reshape(*lead, 6).numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    expected = np.einsum("ji,...j->...i", m.conj(), y.numpy()).reshape(*lead, 2, 3)
    np.testing.assert_allclose(back.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(op.H.apply(y).numpy(), back.numpy(), rtol=1e-14)
    expected = np.einsum("ji,...j->...i", m, y.numpy()).reshape(*lead, 2, 3)
    np.testing.assert_allclose(op.T.apply(y).numpy(), expected, rtol=1e-12)  # not conjugated


def test_torch_face_refuses_what_it_cannot_take():
    op, _ = _matrix()
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2, 3\), got \(5, 6\); "
                                         r"reshape flattened samples to \(\.\.\., "
                                         r"\*input_shape\)"):  # fmt: skip
        op.apply(torch.ones(5, 6, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 4\), got \(2, 3\)"):
        op.apply_adjoint(torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        op.apply(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"x must be a floating-point or complex tensor, got "
                                        r"torch\.int64"):  # fmt: skip
        op.apply(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor"):
        op.apply(torch.ones(2, 3).to_sparse())
    with pytest.raises(ValueError, match=r"x is on meta but the operator's weight is on cpu; "
                                         r"move it with \.to\('cpu'\)"):  # fmt: skip
        op.apply(torch.ones(2, 3, device="meta"))


def test_autograd_only_where_the_torch_face_asks():
    weight = torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True)
    op = convop.conv1d(weight, (1, 8))
    x = torch.randn(1, 1, 8, dtype=torch.float64, requires_grad=True)
    assert op._product(x, adjoint=False).grad_fn is None
    assert op.apply(x).grad_fn is not None
    matrix = Matrix(torch.randn(4, 6, dtype=torch.float64, requires_grad=True))
    assert matrix._product(x.new_ones(1, 2, 3), adjoint=False).grad_fn is None
    assert torch.autograd.gradcheck(matrix.apply, (torch.randn(2, 2, 3, dtype=torch.float64,
                                                               requires_grad=True),))  # fmt: skip


# ---------------------------------------------------------------- every operator of convop
def _conv() -> convop.ConvOperator:
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return convop.conv2d(w, (2, 7, 6), stride=(1, 2), padding=1, padding_mode="reflect")


def _weight_map() -> convop.WeightOperator:
    x = torch.randn(2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return _conv().weight_operator(x)


def _preconditioner() -> convop.Preconditioner:
    w = torch.rand(2, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    op = convop.conv2d(w, (2, 8, 7), padding="same", padding_mode="replicate")
    return convop.preconditioner(op, damp=0.1, kind="right")


OPERATORS: dict[str, Callable[[], Operator]] = {
    "conv": _conv,
    "conv.H": lambda: _conv().H,
    "conv.T": lambda: _conv().T,
    "weight map": _weight_map,
    "weight map.H": lambda: _weight_map().H,
    "weight map.T": lambda: _weight_map().T,
    "preconditioner": _preconditioner,
    "preconditioner.H": lambda: _preconditioner().H,
}


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_every_operator_takes_one_torch_face_convention(make, lead):
    op = make()
    assert isinstance(op, Operator)
    dtype = torch.promote_types(op.torch_dtype, torch.float64)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*lead, *op.input_shape, dtype=dtype, generator=g)
    y = torch.randn(*lead, *op.output_shape, dtype=dtype, generator=g)
    out, back = op.apply(x), op.apply_adjoint(y)
    assert (out.shape, back.shape) == ((*lead, *op.output_shape), (*lead, *op.input_shape))
    columns = x.reshape(-1, op.shape[1]).numpy().T  # the numpy face, one sample per column
    np.testing.assert_allclose(out.reshape(-1, op.shape[0]).numpy().T, op.matmat(columns),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    columns = y.reshape(-1, op.shape[0]).numpy().T
    np.testing.assert_allclose(back.reshape(-1, op.shape[1]).numpy().T, op.rmatmat(columns),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., .*reshape flattened samples"):
        op.apply(x.reshape(*lead, op.shape[1]))
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., .*reshape flattened samples"):
        op.apply_adjoint(y.reshape(*lead, op.shape[0]))


@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_every_operator_becomes_the_one_pylops_operator(make):
    op = make()
    P = op.to_pylops(name="P")
    assert isinstance(P, PyLopsConv)
    assert (P.dims, P.dimsd, P.name, P.operator) == (op.input_shape, op.output_shape, "P", op)
    complexflag = 3 if op.dtype.kind == "c" else 0
    assert pylops.utils.dottest(P, *P.shape, rtol=1e-10, complexflag=complexflag)
    x = np.random.default_rng(5).standard_normal(op.input_shape)
    np.testing.assert_allclose((P @ x).ravel(), op @ x.ravel(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_every_operator_runs_in_scipys_solvers(make):
    op = make()
    assert isinstance(op, spla.LinearOperator)
    A = op.H @ op + 1.0 * spla.aslinearoperator(np.eye(op.shape[1]))  # positive definite
    rhs = np.ones(op.shape[1], dtype=op.dtype)
    solution, info = spla.cg(A, rhs, rtol=1e-10, maxiter=500)
    assert info == 0
    np.testing.assert_allclose(A @ solution, rhs, atol=1e-8)


# ---------------------------------------------------------------- pickles and docstrings
def test_a_pickled_convolution_records_its_public_class_and_round_trips():
    op = _conv()
    data = pickle.dumps(op)
    names = [
        arg for opcode, arg, _ in pickletools.genops(data) if opcode.name == "SHORT_BINUNICODE"
    ]
    at = names.index("convop.operator")  # the class's global, as STACK_GLOBAL reads it
    assert names[at + 1] == "ConvOperator"
    twin = pickle.loads(data)
    x = np.random.default_rng(6).standard_normal(op.shape[1])
    np.testing.assert_array_equal(twin @ x, op @ x)
    np.testing.assert_array_equal(
        twin.H.apply(torch.ones(op.output_shape, dtype=torch.float64)),
        op.H.apply(torch.ones(op.output_shape, dtype=torch.float64)),
    )


FACES = [f"convop._base.Operator.{face}" for face in (
    "apply", "apply_adjoint", "matvec", "rmatvec", "matmat", "rmatmat", "dot", "to_pylops"
)] + [
    "convop._auto.choice.AutoMethod.method",  # ConvOperator's, from the mixins
    "convop._auto.choice.AutoMethod.estimate",
    *(f"convop._explicit.ExplicitMatrices.{name}"
      for name in ("todense", "to_dense", "tosparse", "to_sparse_csr")),
]  # fmt: skip
CHECKS = {"GL01", "GL02", "GL03", "GL05", "GL06", "GL07", "GL09", "GL10", "SS01", "SS02",
          "SS03", "SS04", "SS05", "SS06", "PR01", "PR02", "PR03", "PR04", "PR05", "PR06",
          "PR08", "PR09", "PR10", "RT02", "RT04", "RT05", "EX02"}  # fmt: skip


@pytest.mark.parametrize("face", FACES)
def test_the_faces_have_valid_numpydoc_docstrings(face):
    """tests/test_docstrings.py sees only what a public class defines itself: these are
    every operator's (or ConvOperator's), defined once in the classes it inherits."""
    found = numpydoc_validate.validate(face)["errors"]
    assert not [f"{code}: {message}" for code, message in found if code in CHECKS]
