"""convop.testing.dot_test: the normalised dot test of any operator with matvec/rmatvec.

The adjoints it is run on come from torch (``torch.func.vjp`` of the forward convolution),
and its value is compared with the definition evaluated in 50-digit arithmetic (mpmath).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

import mpmath
import numpy as np
import pylops
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import aslinearoperator

import convop
from convop.testing import dot_test

from .checks import eps

DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
C_IN, C_OUT, KERNEL = 3, 4, 3
INPUT_SHAPE = (C_IN, 9, 8)


def _weight(dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(C_OUT, C_IN, KERNEL, KERNEL, dtype=dtype, generator=generator)


def _op(dtype: torch.dtype = torch.float64, mode: str = "reflect") -> convop.ConvOperator:
    return convop.conv2d(_weight(dtype), INPUT_SHAPE, stride=2, padding=1, padding_mode=mode)


def _round_off(dtype: torch.dtype) -> float:
    """docs/conventions.md, section 8: c eps sqrt(K), c = 10 (float32) or 100 (float64)."""
    c = 10.0 if dtype in (torch.float32, torch.complex64) else 100.0
    return c * eps(dtype) * np.sqrt(C_IN * KERNEL * KERNEL)


def _vjp_adjoint(op: convop.ConvOperator, weight: torch.Tensor):
    """``v -> A^H v`` from torch's own gradient of ``F.conv2d`` on the padded input."""
    mode = op.geometry.padding_mode

    def forward(x: torch.Tensor) -> torch.Tensor:  # (1, C_in, H, W) -> (1, C_out, ...)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), weight, stride=2)

    def adjoint(v: np.ndarray) -> np.ndarray:
        x0 = torch.zeros(1, *op.input_shape, dtype=weight.dtype)
        _, pullback = torch.func.vjp(forward, x0)
        (grad,) = pullback(torch.from_numpy(v).reshape(1, *op.output_shape))
        return grad.reshape(-1).numpy()

    return adjoint


def _naive_adjoint(op: convop.ConvOperator, weight: torch.Tensor):
    """conv_transpose2d with the layer's own padding: the adjoint for zero padding only."""
    r = op.geometry.adjoint_output_padding

    def adjoint(v: np.ndarray) -> np.ndarray:
        y = torch.from_numpy(v).reshape(1, *op.output_shape)  # (1, C_out, H_out, W_out)
        return F.conv_transpose2d(y, weight, stride=2, padding=1, output_padding=r).ravel()

    return adjoint


class Recorder:
    """A numpy operator that keeps the vectors its products were given."""

    def __init__(self, op: Any, adjoint=None) -> None:
        self.op, self.adjoint, self.seen = op, adjoint or op.rmatvec, []
        self.shape, self.dtype = op.shape, op.dtype

    def matvec(self, x):
        self.seen.append(x)
        return self.op.matvec(x)

    def rmatvec(self, v):
        self.seen.append(v)
        return self.adjoint(v)


class TorchFace:
    """A convop operator's torch face as matvec/rmatvec of flat tensors, keeping its inputs.

    No ``dtype`` unless given: a torch dtype (and ``device``) makes the vectors drawn tensors.
    """

    def __init__(self, op: convop.ConvOperator, **dtype_and_device: Any) -> None:
        self.op, self.shape, self.seen = op, op.shape, []
        self.__dict__.update(dtype_and_device)

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return self.op.apply(x.reshape(self.op.input_shape)).ravel()

    def rmatvec(self, v: torch.Tensor) -> torch.Tensor:
        self.seen.append(v)
        return self.op.apply_adjoint(v.reshape(self.op.output_shape)).ravel()


# ---------------------------------------------------------------------- the value
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_an_exact_adjoint_gives_round_off(dtype, mode):
    assert dot_test(_op(dtype, mode), trials=4) <= _round_off(dtype)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_torchs_gradient_passes_and_conv_transpose_fails(mode):
    op, weight = _op(torch.float64, mode), _weight(torch.float64)
    assert dot_test(op, adjoint=_vjp_adjoint(op, weight), trials=4) <= _round_off(torch.float64)
    assert dot_test(op, adjoint=_naive_adjoint(op, weight), trials=4) > 1e-3


def test_conv_transpose_passes_for_zero_padding():
    op, weight = _op(torch.float64, "zeros"), _weight(torch.float64)
    assert dot_test(op, adjoint=_naive_adjoint(op, weight), trials=4) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_a_transpose_that_forgets_to_conjugate_fails(dtype):
    """The vectors drawn for a complex operator are complex: a real pair would pass."""
    op = _op(dtype)
    assert dot_test(op, adjoint=op.T.matvec) > 1e-2


def test_value_is_the_definition_in_50_digits():
    A = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])  # (2, 3), exact binary fractions
    B = A.T + np.array([[0.0, 0.5], [0.0, 0.0], [-0.25, 0.0]])  # a wrong "adjoint"
    x, v = np.array([0.5, -1.5, 2.0]), np.array([-3.0, 1.25])
    got = dot_test(aslinearoperator(A), x, v, adjoint=lambda y: B @ y)
    with mpmath.workdps(50):
        a, b = mpmath.matrix(A.tolist()), mpmath.matrix(B.tolist())
        xm, vm = mpmath.matrix(x.tolist()), mpmath.matrix(v.tolist())
        ax, bv = a * xm, b * vm
        lhs = sum(vm[i] * ax[i] for i in range(2))
        rhs = sum(bv[j] * xm[j] for j in range(3))
        scale = mpmath.norm(ax) * mpmath.norm(vm) + mpmath.norm(xm) * mpmath.norm(bv)
        expected = float(abs(lhs - rhs) / scale)
    assert got == pytest.approx(expected, rel=1e-14)
    assert expected > 0.01


def test_the_worst_of_the_trials_is_returned():
    op, weight = _op(torch.float64), _weight(torch.float64)
    naive = _naive_adjoint(op, weight)
    recorder = Recorder(op, naive)
    worst = dot_test(recorder, trials=5)
    pairs = list(zip(recorder.seen[0::2], recorder.seen[1::2]))  # (x, v) of each trial
    assert len(pairs) == 5
    assert len({float(x[0]) for x, _ in pairs}) == 5  # five different draws
    assert worst == max(dot_test(op, x, v, adjoint=naive) for x, v in pairs)


@pytest.mark.parametrize("size", [1e-300, 1e300])
def test_tiny_and_huge_vectors_give_the_value_of_unit_ones(size):
    """Neither underflow (a scale of 0) nor overflow (inf - inf) on finite vectors."""
    A = aslinearoperator(np.array([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]]))  # (3, 2)
    wrong = np.array([[1.0, 0.0, 3.0], [2.5, 1.0, -1.0]])  # A.T with one entry off
    x, v = np.array([0.5, -1.0]), np.array([1.0, 2.0, -0.5])
    unit = dot_test(A, x, v, adjoint=lambda y: wrong @ y)
    assert unit > 1e-2
    assert dot_test(A, size * x, size * v, adjoint=lambda y: wrong @ y) == pytest.approx(unit)


def test_a_zero_operator_gives_zero_not_nan():
    assert dot_test(aslinearoperator(np.zeros((3, 4)))) == 0.0


# ---------------------------------------------------------------------- the vectors drawn
def test_the_same_seed_draws_the_same_vectors():
    op, weight = _op(), _weight(torch.float64)
    naive = _naive_adjoint(op, weight)
    same = [dot_test(op, adjoint=naive, seed=7) for _ in range(2)]
    stream = np.random.default_rng(7)
    continued = [dot_test(op, adjoint=naive, seed=stream) for _ in range(2)]
    assert same[0] == same[1] == continued[0] != continued[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_numpy_vectors_are_drawn_in_the_operators_dtype(dtype):
    recorder = Recorder(aslinearoperator(np.eye(3, 4, dtype=dtype)))
    dot_test(recorder)
    x, v = recorder.seen
    assert (type(x), type(v)) == (np.ndarray, np.ndarray)
    assert (x.dtype, v.dtype, x.shape, v.shape) == (dtype, dtype, (4,), (3,))


def test_an_integer_operator_gets_real_vectors():
    recorder = Recorder(aslinearoperator(np.arange(12).reshape(3, 4)))
    assert dot_test(recorder) <= 1e-15
    assert [a.dtype for a in recorder.seen] == [np.float64, np.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128], ids=str)
def test_an_operator_with_a_torch_dtype_gets_tensors(dtype):
    face = TorchFace(_op(dtype), dtype=dtype, device=torch.device("cpu"))
    assert dot_test(face) <= _round_off(dtype)
    assert [(type(a), a.dtype) for a in face.seen] == [(torch.Tensor, dtype)] * 2


def test_a_tensor_given_makes_the_other_vector_a_tensor():
    face = TorchFace(_op(torch.float64))  # no dtype: float64
    x = torch.ones(face.shape[1], dtype=torch.float64)
    assert dot_test(face, x) <= _round_off(torch.float64)
    assert face.seen[0] is x
    v = face.seen[1]
    assert (type(v), v.dtype, v.shape) == (torch.Tensor, torch.float64, (face.shape[0],))


# ---------------------------------------------------------------------- operators and tensors
def test_a_torch_operator_on_tensors_of_any_shape():
    """convop's torch face: tensors of the sample shapes, requiring grad, conjugate views."""
    op = _op(torch.complex128)
    face = SimpleNamespace(matvec=op.apply, rmatvec=op.apply_adjoint)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(INPUT_SHAPE, dtype=torch.complex128, generator=generator).requires_grad_()
    v = torch.randn(op.output_shape, dtype=torch.complex128, generator=generator).conj()
    assert dot_test(face, x, v) <= _round_off(torch.complex128)
    assert x.grad is None


def test_a_pylops_operator():
    op = _op(torch.float64)
    assert dot_test(op.to_pylops(), trials=3) <= _round_off(torch.float64)
    assert dot_test(pylops.MatrixMult(op.todense()), trials=3) <= _round_off(torch.float64)


def test_the_callers_vectors_are_not_modified():
    op = _op(torch.float64)
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal(op.shape[1]), rng.standard_normal(op.shape[0])
    x.flags.writeable = v.flags.writeable = False
    saved = x.copy(), v.copy()
    dot_test(op, x, v)
    np.testing.assert_array_equal(x, saved[0])
    np.testing.assert_array_equal(v, saved[1])


@pytest.mark.cuda
def test_tensors_on_cuda():
    weight = _weight(torch.float64).cuda()
    op = convop.conv2d(weight, INPUT_SHAPE, stride=2, padding=1, padding_mode="reflect")
    face = SimpleNamespace(matvec=op.apply, rmatvec=op.apply_adjoint)
    x = torch.randn(INPUT_SHAPE, dtype=torch.float64, device="cuda")
    v = torch.randn(op.output_shape, dtype=torch.float64, device="cuda")
    assert dot_test(face, x, v) <= _round_off(torch.float64)


# ---------------------------------------------------------------------- bad input
def _square():
    return aslinearoperator(np.eye(3))


class Bad(NamedTuple):
    id: str
    call: Any  # () -> dot_test(...)
    error: type[Exception]
    match: str


BAD = [
    Bad("no matvec", lambda: dot_test(object()), TypeError, r"op must have a matvec method"),
    Bad(
        "no rmatvec",
        lambda: dot_test(SimpleNamespace(matvec=abs, shape=(3, 3))),
        TypeError,
        r"op must have an rmatvec method, or the adjoint must be given",
    ),
    Bad(
        "adjoint not callable",
        lambda: dot_test(_square(), adjoint=3),
        TypeError,
        r"adjoint must be a callable v -> A\^H v, got int",
    ),
    Bad("trials 0", lambda: dot_test(_square(), trials=0), ValueError, r"trials must be >= 1"),
    Bad(
        "trials float",
        lambda: dot_test(_square(), trials=2.0),
        TypeError,
        r"trials must be an int",
    ),
    Bad(
        "x with trials",
        lambda: dot_test(_square(), np.ones(3), trials=2),
        ValueError,
        r"trials=2 needs x and v drawn at random",
    ),
    Bad(
        "no shape to draw",
        lambda: dot_test(SimpleNamespace(matvec=abs, rmatvec=abs)),
        TypeError,
        r"x must be given: drawing it needs op.shape",
    ),
    Bad(
        "v not of op.shape",
        lambda: dot_test(_square(), np.ones(3), np.ones(4)),
        ValueError,
        r"v has 4 values but op.shape is \(3, 3\): v must be a vector of op's range",
    ),
    Bad(
        "x not of op.shape",
        lambda: dot_test(_square(), np.ones((2, 2))),
        ValueError,
        r"x has 4 values but op.shape is \(3, 3\): x must be a vector of op's domain",
    ),
    Bad(
        "product of the wrong size",
        lambda: dot_test(SimpleNamespace(matvec=np.diff, rmatvec=abs), np.ones(3), np.ones(3)),
        ValueError,
        r"op.matvec\(x\) has 2 values but v has 3",
    ),
    Bad(
        "adjoint of the wrong size",
        lambda: dot_test(_square(), np.ones(3), np.ones(3), adjoint=lambda v: np.ones(2)),
        ValueError,
        r"the adjoint of v has 2 values but x has 3",
    ),
    Bad(
        "nan in x",
        lambda: dot_test(_square(), np.array([1.0, np.nan, 0.0])),
        ValueError,
        r"x holds NaN or infinite values",
    ),
    Bad(
        "product overflows",
        lambda: dot_test(_square(), adjoint=lambda v: np.full(3, np.inf)),
        ValueError,
        r"the adjoint of v holds NaN or infinite values",
    ),
    Bad(
        "strings",
        lambda: dot_test(_square(), np.array(["a", "b", "c"]), np.ones(3), adjoint=abs),
        TypeError,
        r"x must hold numbers, got an array of dtype <U1",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_bad_input_is_refused_with_a_clear_message(case):
    with pytest.raises(case.error, match=case.match):
        case.call()
