"""convop.deconvolution: preconditioners and exact Tikhonov solves, against dense algebra."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator, cg, lsqr

import convop
from convop._fourier.boundary import dct, extended_length, idct
from convop._shared import memory
from convop.constructors import CONSTRUCTORS
from convop.data import gaussian_kernel, phantom
from convop.deconvolution import Preconditioner, preconditioner
from convop.solvers import solve_tikhonov


class Case(NamedTuple):
    name: str
    build: object  # () -> ConvOperator


def _blur2d(mode: str, n: int = 24, k: int = 7) -> convop.ConvOperator:
    w = torch.from_numpy(gaussian_kernel(k, 1.5))[None, None]
    return convop.conv2d(w, (1, n, n), padding="same", padding_mode=mode)


def _crosstalk(mode: str) -> convop.ConvOperator:
    mix = torch.full((3, 3), 0.1, dtype=torch.float64) + 0.7 * torch.eye(3, dtype=torch.float64)
    g = torch.from_numpy(gaussian_kernel(5, 1.0))
    return convop.conv2d(mix[:, :, None, None] * g, (3, 16, 16), padding=2,
                         padding_mode=mode)  # fmt: skip


def _mixing(mode: str) -> convop.ConvOperator:
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return convop.conv2d(w, (4, 12, 10), padding=1, groups=2, padding_mode=mode)


def _line(mode: str) -> convop.ConvOperator:
    w = torch.tensor([[[0.1, 0.3, 0.6, 0.2]]], dtype=torch.float64)  # not symmetric, even size
    return convop.conv1d(w, (1, 40), padding="same", dilation=2, padding_mode=mode)


def _cube(mode: str) -> convop.ConvOperator:
    g = torch.from_numpy(gaussian_kernel(3, 0.8).sum(0))  # the 1-D factor, sums to 1
    w = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    return convop.conv3d(w, (1, 6, 7, 5), padding=1, padding_mode=mode)


def _half_symmetric(mode: str) -> convop.ConvOperator:
    """Channels that mix, kernels mirror-symmetric along axis 0 only: even x periodic."""
    a = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    w = a + a.flip(2)
    return convop.conv2d(w / w.abs().sum((1, 2, 3)).max(), (2, 10, 9), padding=(2, 1),
                         padding_mode=mode)  # fmt: skip


MODES = ["zeros", "reflect", "replicate", "circular"]
LAYOUTS = {
    "blur-2d": _blur2d,
    "crosstalk-3ch": _crosstalk,
    "groups-mixing": _mixing,
    "line-1d": _line,
    "cube-3d": _cube,
    "half-symmetric": _half_symmetric,
}
CASES = [Case(f"{name}-{mode}", lambda b=build, m=mode: b(m)) for name, build in
         LAYOUTS.items() for mode in MODES]  # fmt: skip


def transposed() -> convop.ConvOperator:
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return convop.conv_transpose2d(w, (2, 9, 9), padding=1)


def dense_inverse(op: convop.ConvOperator, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """``(A, (A^H A + damp^2 I)^{-1})`` as dense float64 arrays."""
    a = op.todense().astype(np.complex128 if op.dtype.kind == "c" else np.float64)
    normal = a.conj().T @ a + damp**2 * np.eye(a.shape[1])
    return a, np.linalg.inv(normal)


class Dense(NamedTuple):
    """A Tikhonov problem ``min ||A x - y||^2 + damp^2 ||x||^2`` in dense algebra."""

    a: np.ndarray  # A
    normal: np.ndarray  # A^H A + damp^2 I
    rhs: np.ndarray  # A^H y
    exact: np.ndarray  # the minimiser


def dense_problem(op: convop.ConvOperator, damp: float, y: np.ndarray) -> Dense:
    a, inverse = dense_inverse(op, damp)
    rhs = a.conj().T @ y
    return Dense(a, a.conj().T @ a + damp**2 * np.eye(a.shape[1]), rhs, inverse @ rhs)


def dense_of(p: LinearOperator) -> np.ndarray:
    return p @ np.eye(p.shape[1], dtype=p.dtype)


EPS = np.finfo(np.float64).eps


def cg_error_bound(normal: np.ndarray, rhs: np.ndarray, exact: np.ndarray, rtol: float) -> float:
    """``||x - x*||_2`` that scipy's ``cg`` guarantees when it stops on ``N x = b``.

    It stops once its residual ``r`` has ``||r|| < rtol ||b||``, and ``x - x* = -N^{-1} r``:
    so ``||x - x*|| <= rtol ||b|| / lambda_min(N)``, up to ``cond(N)`` times ``rtol``
    relative to ``||x*||`` (not ``rtol``). ``1e3 eps ||N|| ||x*||`` more covers round-off:
    the drift of cg's updated residual from ``b - N x`` and the dense reference's own.
    """
    values = np.linalg.eigvalsh(normal)
    slack = 1e3 * EPS * values[-1] * np.linalg.norm(exact)
    return (rtol * np.linalg.norm(rhs) + slack) / values[0]


def lsqr_error_bound(stacked: np.ndarray, p: np.ndarray, normal: np.ndarray, rhs: np.ndarray,
                     z: np.ndarray, exact: np.ndarray, tol: float) -> float:  # fmt: skip
    """``||P z - x*||_2`` that scipy's ``lsqr`` (``atol = btol = tol``) guarantees, ``S z = rhs``.

    It stops (istop 1 or 2) when ``||r|| <= tol (||rhs|| + ||S|| ||z||)`` or ``||S^H r|| <=
    tol ||S|| ||r||``, with its estimate of ``||S||`` at most ``||S||_F`` and ``||r|| <=
    ||rhs||``. For ``S = [A; damp I] P``, ``P z - x* = N^{-1} P^{-H} S^H r``: so the error is
    at most ``||N^{-1}|| ||P^{-1}||`` times that bound on ``||S^H r||``, plus round-off as
    in :func:`cg_error_bound`.
    """
    frobenius, two = np.linalg.norm(stacked), np.linalg.norm(stacked, 2)
    size, length = np.linalg.norm(rhs), np.linalg.norm(z)
    gradient = max(tol * frobenius * size, two * tol * (size + frobenius * length))
    values = np.linalg.eigvalsh(normal)
    inverse_p = 1 / np.linalg.svd(p, compute_uv=False)[-1]
    slack = 1e3 * EPS * values[-1] * np.linalg.norm(exact)
    return (inverse_p * gradient + slack) / values[0]


def normal_operator(op: convop.ConvOperator, damp: float) -> LinearOperator:
    return LinearOperator((op.shape[1], op.shape[1]), dtype=op.dtype,
                          matvec=lambda v: op.rmatvec(op.matvec(v)) + damp**2 * v)  # fmt: skip


# --------------------------------------------------------------------------- preconditioner
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_preconditioner_is_symmetric_positive_definite(case):
    op = case.build()
    m = dense_of(preconditioner(op, damp=1e-2))
    np.testing.assert_allclose(m, m.conj().T, atol=1e-12 * np.abs(m).max())
    np.linalg.cholesky((m + m.conj().T) / 2)  # raises unless positive definite


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_right_preconditioner_is_a_factor_of_the_normal_one(case):
    """``P P^H = M`` (reflect's end weights excepted), ``P^H`` by both faces."""
    op = case.build()
    root = preconditioner(op, damp=1e-2, kind="right")
    p = dense_of(root)
    m = dense_of(preconditioner(op, damp=1e-2))
    if "reflect" not in root.boundaries:
        np.testing.assert_allclose(p @ p.conj().T, m, atol=1e-12 * np.abs(m).max())
    np.linalg.cholesky(p @ p.conj().T)  # nonsingular
    np.testing.assert_allclose(dense_of(root.H), p.conj().T, atol=1e-14 * np.abs(p).max())
    eye = torch.eye(op.shape[1], dtype=torch.float64).reshape(-1, *op.input_shape)
    torch_adjoint = root.apply(eye, adjoint=True).reshape(op.shape[1], -1).T.numpy()
    np.testing.assert_allclose(torch_adjoint, p.conj().T, atol=1e-14 * np.abs(p).max())
    if root._scale is None:  # without a scaling, the symmetric square root
        np.testing.assert_allclose(p, p.conj().T, atol=1e-12 * np.abs(p).max())


#: Adjoints and transposes: the preconditioner of their own normal operator.
REVERSED = [Case("transposed", transposed), Case("adjoint", lambda: _mixing("reflect").H),
            Case("transpose", lambda: _blur2d("reflect").T)]  # fmt: skip


@pytest.mark.parametrize("case", CASES + REVERSED, ids=[c.name for c in CASES + REVERSED])
def test_preconditioned_cg_reaches_the_dense_solution(case):
    op, damp = case.build(), 3e-2
    y = np.random.default_rng(0).standard_normal(op.shape[0])
    dense = dense_problem(op, damp, y)
    x, info = cg(normal_operator(op, damp), op.rmatvec(y), rtol=1e-10, maxiter=5000,
                 M=preconditioner(op, damp=damp))  # fmt: skip
    assert info == 0
    bound = cg_error_bound(dense.normal, dense.rhs, dense.exact, 1e-10)
    assert np.linalg.norm(x - dense.exact) <= bound


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_right_preconditioned_lsqr_reaches_the_dense_solution(case):
    """``[A; damp I] P z = [y; 0]``, ``x = P z``: the same Tikhonov solution."""
    op, damp = case.build(), 3e-2
    y = np.random.default_rng(1).standard_normal(op.shape[0])
    dense = dense_problem(op, damp, y)
    p = preconditioner(op, damp=damp, kind="right")
    m, n = op.shape
    stacked = LinearOperator(
        (m + n, n),
        dtype=op.dtype,
        matvec=lambda z: np.concatenate([op.matvec(p.matvec(z)), damp * p.matvec(z)]),
        rmatvec=lambda r: p.rmatvec(op.rmatvec(r[:m]) + damp * r[m:]),
    )
    rhs = np.concatenate([y, np.zeros(n)])
    z, istop = lsqr(stacked, rhs, atol=1e-14, btol=1e-14, iter_lim=5000)[:2]
    assert istop in (1, 2)
    right = dense_of(p)
    bound = lsqr_error_bound(np.vstack([dense.a @ right, damp * right]), right, dense.normal,
                             rhs, z, dense.exact, 1e-14)  # fmt: skip
    assert np.linalg.norm(p.matvec(z) - dense.exact) <= bound


SAVINGS = [("zeros", 5), ("reflect", 20), ("replicate", 3), ("circular", 50)]


@pytest.mark.parametrize(("mode", "factor"), SAVINGS)
def test_preconditioner_saves_iterations_on_a_blur(mode, factor):
    op = _blur2d(mode, n=32, k=9)
    damp = 1e-2
    y = op @ phantom(32).ravel()

    def iterations(**kw) -> int:
        count: list = []
        cg(normal_operator(op, damp), op.rmatvec(y), rtol=1e-6, callback=count.append, **kw)
        return len(count)

    plain, preconditioned = iterations(), iterations(M=preconditioner(op, damp=damp))
    assert preconditioned * factor <= plain


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith(("zeros", "replicate"))],
                         ids=lambda c: c.name)  # fmt: skip
def test_scaled_model_shares_the_normal_operators_diagonal(case):
    """``M = S (T + beta^2 I)^{-1} S`` with ``diag(S^{-1} T S^{-1}) = diag(op^H op)``."""
    op = case.build()
    p = preconditioner(op, damp=1e-2, beta=0.05)
    m = dense_of(p)
    a = op.todense()
    columns = (np.abs(a) ** 2).sum(0)
    if p._scale is None:
        assert p._matched(op.weight)
        pytest.skip("the model is the operator's own: not scaled")
    scale = p._scale.numpy().reshape(-1)
    model = np.diag(np.linalg.inv(m)).real - 0.05**2 / scale**2
    np.testing.assert_allclose(model, columns, rtol=1e-8, atol=1e-10 * columns.max())


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith(("zeros", "replicate"))],
                         ids=lambda c: c.name)  # fmt: skip
@pytest.mark.parametrize("kind", ["normal", "right"])
def test_cosine_transforms_apply_the_extension_model(case, kind, monkeypatch):
    """The cosine path is ``2^{-d} E^T f(C) E`` on the ``2n`` extension, at ``n`` samples."""
    op = case.build()
    fast = preconditioner(op, damp=1e-2, kind=kind)
    m = dense_of(fast)
    monkeypatch.setattr(convop.deconvolution, "COSINE", False)
    slow = preconditioner(op, damp=1e-2, kind=kind)
    reference = dense_of(slow)
    assert slow.grid == tuple(extended_length(n, b) for n, b in zip(op.input_shape[1:],
                                                            slow.boundaries))  # fmt: skip
    if "even" in fast.boundaries:
        assert fast._cosine
        assert fast.grid == tuple(op.input_shape[1:])
    np.testing.assert_allclose(m, reference, atol=1e-12 * np.abs(reference).max())


def test_cosine_transform_pair():
    gen = torch.Generator().manual_seed(9)
    for n in [1, 2, 3, 4, 7, 10]:
        x = torch.randn(2, n, 3, dtype=torch.float64, generator=gen)
        j = torch.arange(n, dtype=torch.float64)
        basis = torch.cos(np.pi * j[:, None] * (2 * j[None, :] + 1) / (2 * n))  # [k, j]
        expected = torch.einsum("kj,bjc->bkc", basis, x)
        torch.testing.assert_close(dct(x, 1), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(idct(dct(x, 1), 1), x, rtol=1e-12, atol=1e-12)


def test_replicate_scaling_follows_the_weight():
    op = _blur2d("replicate", n=12, k=5)
    p = preconditioner(op, damp=1e-2, beta=0.05)
    dense_of(p)
    with torch.no_grad():
        op.weight.mul_(2)
    m = dense_of(p)
    a = op.todense()
    model = np.diag(np.linalg.inv(m)) - 0.05**2 / p._scale.numpy().reshape(-1) ** 2
    np.testing.assert_allclose(model, (a**2).sum(0), rtol=1e-8)


def test_preconditioner_of_a_circulant_is_the_exact_inverse():
    w = torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    op = convop.conv2d(w, (3, 8, 10), padding=1, padding_mode="circular")
    p = preconditioner(op, damp=0.1)
    _, inverse = dense_inverse(op, 0.1)
    np.testing.assert_allclose(dense_of(p), inverse, atol=1e-10 * np.abs(inverse).max())
    assert p.exact
    assert p.beta == 0.1
    assert p.boundaries == ("periodic", "periodic")
    root = dense_of(preconditioner(op, damp=0.1, kind="right"))
    np.testing.assert_allclose(root @ root, inverse, atol=1e-10 * np.abs(inverse).max())


def test_preconditioner_of_a_complex_operator():
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(2, 2, 3, 3, dtype=torch.complex128, generator=gen)
    op = convop.conv2d(w, (2, 7, 6), padding=1, padding_mode="circular")
    _, inverse = dense_inverse(op, 0.2)
    np.testing.assert_allclose(dense_of(preconditioner(op, damp=0.2)), inverse,
                               atol=1e-10 * np.abs(inverse).max())  # fmt: skip


def test_preconditioner_follows_the_weight():
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    op = convop.conv2d(w, (1, 8, 8), padding=1, padding_mode="circular")
    p = preconditioner(op, damp=0.1)
    dense_of(p)  # computes the spectrum
    with torch.no_grad():
        w.mul_(3)
    _, inverse = dense_inverse(op, 0.1)
    np.testing.assert_allclose(dense_of(p), inverse, atol=1e-10 * np.abs(inverse).max())


def test_torch_and_numpy_faces_agree_and_leave_inputs_alone():
    op = _crosstalk("reflect")
    p = preconditioner(op, damp=1e-2)
    x = np.random.default_rng(3).standard_normal((op.shape[1], 4))
    kept = x.copy()
    numpy_face = p @ x
    torch_face = p.apply(torch.from_numpy(x.T.copy()).reshape(4, *op.input_shape))
    np.testing.assert_allclose(torch_face.reshape(4, -1).numpy().T, numpy_face, rtol=1e-12)
    np.testing.assert_array_equal(x, kept)
    single = p.apply(torch.from_numpy(x[:, 0].copy()).reshape(op.input_shape))
    np.testing.assert_allclose(single.reshape(-1).numpy(), numpy_face[:, 0], rtol=1e-12)
    assert isinstance(p, Preconditioner)
    assert "Preconditioner(normal" in repr(p)


def test_preconditioner_through_pylops():
    pylops = pytest.importorskip("pylops")
    op = _blur2d("reflect")
    p = preconditioner(op, damp=1e-2).to_pylops()
    assert p.dims == op.input_shape
    assert pylops.utils.dottest(p, *p.shape, rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"damp": -1.0}, ValueError, "damp must be a finite float >= 0, got damp=-1.0"),
        ({"damp": "0.1"}, TypeError, "damp must be a float, got '0.1' of type str"),
        ({"kind": "left"}, ValueError, "kind"),
        ({"beta": float("nan")}, ValueError, "beta must be a finite float >= 0"),
    ],
)
def test_preconditioner_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        preconditioner(_blur2d("zeros"), **kwargs)


def test_preconditioner_refuses_strides_and_other_objects():
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 8, 8), stride=2, padding=1)
    with pytest.raises(
        ValueError, match=r"preconditioner\(\) needs stride 1, got stride=\(2, 2\)"
    ):
        preconditioner(op)
    with pytest.raises(TypeError, match=r"op must be a convop\.ConvOperator, got ndarray"):
        preconditioner(np.eye(3))


# --------------------------------------------------------------------------- Tikhonov
class Circulant(NamedTuple):
    """A circular convolution with a weight drawn from torch's global generator."""

    weight: tuple[int, ...]  # its shape
    input: tuple[int, ...]
    padding: int | tuple[int, ...]
    options: dict = {}  # noqa: RUF012 - never mutated
    dtype: torch.dtype = torch.float64
    face: str = "op"  # the operator, or its adjoint ("H") or transpose ("T")
    draw: Callable[..., torch.Tensor] = torch.randn

    def __call__(self) -> convop.ConvOperator:
        build = CONSTRUCTORS[len(self.weight) - 2, False]
        op = build(self.draw(self.weight, dtype=self.dtype), self.input, padding=self.padding,
                   padding_mode="circular", **self.options)  # fmt: skip
        return {"op": op, "H": op.H, "T": op.T}[self.face]


CIRCULANTS = {
    "1ch-2d": Circulant((1, 1, 5, 5), (1, 12, 10), 2, draw=torch.rand),
    "more-outputs": Circulant((5, 2, 3, 3), (2, 8, 9), 1),
    "one-input": Circulant((3, 1, 3, 3), (1, 8, 9), 1),
    "one-output-complex-adjoint": Circulant((1, 3, 5), (3, 11), 2, dtype=torch.complex128,
                                            face="H"),
    "more-inputs-groups": Circulant((2, 3, 5), (6, 20), 2, {"groups": 2}),
    "3d-dilated": Circulant((2, 2, 3, 3, 1), (2, 4, 6, 5), (1, 2, 0), {"dilation": (1, 2, 1)}),
    "complex": Circulant((2, 2, 3, 3), (2, 6, 7), 1, dtype=torch.complex128),
    "adjoint": Circulant((3, 2, 3, 3), (2, 7, 8), 1, face="H"),
    # op.T reads the weight conjugated
    "complex-transpose": Circulant((3, 2, 3, 3), (2, 6, 5), 1, dtype=torch.complex128, face="T"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CIRCULANTS))
def test_solve_tikhonov_equals_the_dense_solve(name):
    torch.manual_seed(6)
    op = CIRCULANTS[name]()
    a, inverse = dense_inverse(op, 0.3)
    rng = np.random.default_rng(4)
    y = rng.standard_normal(op.shape[0]).astype(op.dtype)
    if op.dtype.kind == "c":
        y = y + 1j * rng.standard_normal(op.shape[0])
    kept = y.copy()
    x = solve_tikhonov(op, y, damp=0.3)
    exact = inverse @ (a.conj().T @ y)
    np.testing.assert_allclose(x, exact, atol=1e-10 * np.abs(exact).max())
    np.testing.assert_array_equal(y, kept)


def test_solve_tikhonov_keeps_the_shape_type_and_batch_of_y():
    op = CIRCULANTS["1ch-2d"]()
    y = torch.randn(3, *op.output_shape, dtype=torch.float64)
    x = solve_tikhonov(op, y, damp=0.1)
    assert isinstance(x, torch.Tensor)
    assert x.shape == (3, *op.input_shape)
    one = solve_tikhonov(op, y[1].numpy(), damp=0.1)
    assert isinstance(one, np.ndarray)
    assert one.shape == op.input_shape
    np.testing.assert_allclose(one, x[1].numpy(), rtol=1e-12, atol=1e-14)


def test_wiener_form_with_a_scalar_ratio_is_tikhonov():
    op = CIRCULANTS["more-outputs"]()
    y = np.random.default_rng(5).standard_normal(op.shape[0])
    np.testing.assert_allclose(solve_tikhonov(op, y, nsr=0.04), solve_tikhonov(op, y, damp=0.2),
                               rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize("name", ["1ch-2d", "one-input", "more-outputs"])
def test_wiener_form_with_a_spectrum_solves_its_normal_equations(name):
    """``(A^T A + F^H diag(r) F) x = A^T y`` for a per-frequency ratio ``r``."""
    torch.manual_seed(7)
    op = CIRCULANTS[name]()
    n = op.input_shape[1:]
    f = torch.fft.rfftfreq(n[1])[None, :] ** 2 + torch.fft.fftfreq(n[0])[:, None] ** 2
    ratio = (0.01 + f).numpy()  # noise over a 1/f^2-like signal spectrum
    y = np.random.default_rng(6).standard_normal(op.shape[0])
    x = solve_tikhonov(op, y, nsr=ratio)
    t = torch.from_numpy(x.reshape(op.input_shape))
    spectrum = torch.from_numpy(ratio) * torch.fft.rfftn(t, dim=(-2, -1))
    penalty = torch.fft.irfftn(spectrum, s=n, dim=(-2, -1)).numpy()
    lhs = op.rmatvec(op.matvec(x)) + penalty.reshape(-1)
    np.testing.assert_allclose(lhs, op.rmatvec(y), atol=1e-10 * np.abs(op.rmatvec(y)).max())


def test_solve_tikhonov_refuses_what_it_cannot_solve_exactly():
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 8, 8), padding=1, padding_mode="reflect")
    y = np.zeros(op.shape[0], dtype=np.float32)
    with pytest.raises(ValueError, match=r"needs a circulant convolution.*convop\.preconditioner"):
        solve_tikhonov(op, y, damp=0.1)
    circ = CIRCULANTS["1ch-2d"]()
    y = np.zeros(circ.shape[0])
    with pytest.raises(ValueError, match="give one of damp and nsr"):
        solve_tikhonov(circ, y)
    with pytest.raises(ValueError, match="give one of damp and nsr"):
        solve_tikhonov(circ, y, damp=0.1, nsr=0.01)
    with pytest.raises(ValueError, match=r"y must have shape \(1, 12, 10\)"):
        solve_tikhonov(circ, np.zeros(7), damp=0.1)
    with pytest.raises(ValueError, match="nsr must broadcast to the frequency grid"):
        solve_tikhonov(circ, y, nsr=np.ones((3, 3)))
    with pytest.raises(ValueError, match="nsr must be finite and >= 0"):
        solve_tikhonov(circ, y, nsr=-np.ones((12, 6)))
    with pytest.raises(TypeError, match=r"y must be a numpy\.ndarray or torch\.Tensor, got list"):
        solve_tikhonov(circ, [0.0], damp=0.1)


def _zero_sum(*shape: int, dtype=torch.float64, seed: int = 10) -> torch.Tensor:
    """Random taps, each channel pair's summing to zero: ``K(0) = 0``, the rest generic."""
    w = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return w - w.mean(tuple(range(2, w.ndim)), keepdim=True)


def _repeated_inputs() -> convop.ConvOperator:
    """Two identical input channels: every ``K(f)`` (4 x 2) has rank 1."""
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    return convop.conv2d(w.repeat(1, 2, 1, 1), (2, 6, 7), padding=1, padding_mode="circular")


def _adjoint_of_repeated_inputs() -> convop.ConvOperator:
    """The adjoint of a 2 -> 3 convolution whose two inputs are equal: ``K(f)^H`` (2 x 3) has
    rank 1, so ``K K^H`` is singular everywhere."""
    gen = torch.Generator().manual_seed(12)
    w = torch.randn(3, 1, 5, dtype=torch.complex128, generator=gen)
    return convop.conv1d(w.repeat(1, 2, 1), (2, 9), padding=2, padding_mode="circular").H


SINGULAR = {
    "difference-1d": lambda: convop.conv1d(
        torch.tensor([[[1.0, -1.0]]], dtype=torch.float64), (1, 12), padding="same",
        padding_mode="circular"),
    "zero-sum-groups-2d": lambda: convop.conv2d(
        _zero_sum(4, 1, 3, 3), (2, 6, 7), padding=1, groups=2, padding_mode="circular"),
    "repeated-inputs": _repeated_inputs,
    "adjoint-of-repeated-inputs-complex": _adjoint_of_repeated_inputs,
    "zero-sum-complex-transpose": lambda: convop.conv2d(
        _zero_sum(2, 3, 3, 3, dtype=torch.complex128), (3, 5, 6), padding=1,
        padding_mode="circular").T,
}  # fmt: skip
ZERO_DAMPINGS = {"damp=0": {"damp": 0.0}, "damp=1e-200": {"damp": 1e-200}, "nsr=0": {"nsr": 0.0}}


def lstsq_tolerance(dense: np.ndarray, y: np.ndarray, exact: np.ndarray) -> float:
    """Round-off of a least-squares solution: ``eps (cond ||x|| + cond^2 ||r|| / ||A||)``.

    The perturbation bound of the minimum-norm solution (Higham, *Accuracy and Stability*,
    20.1; Golub & Van Loan 5.3.7), ``cond`` over the singular values numpy keeps, with a
    factor 100 for the transforms and the small decompositions.
    """
    s = np.linalg.svd(dense, compute_uv=False)
    kept = s[s > EPS * max(dense.shape) * s[0]]
    cond = s[0] / kept[-1]
    residual = np.linalg.norm(y - dense @ exact)
    return 100 * EPS * (cond * np.linalg.norm(exact) + cond**2 * residual / s[0])


@pytest.mark.parametrize("how", list(ZERO_DAMPINGS))
@pytest.mark.parametrize("name", list(SINGULAR))
def test_solve_tikhonov_without_damping_is_the_least_squares_solution_of_least_norm(name, how):
    """``damp = 0`` (or too small to square) on a singular circulant: numpy's ``lstsq``."""
    op = SINGULAR[name]()
    dense = op.todense()
    rng = np.random.default_rng(13)
    y = rng.standard_normal((2, *op.output_shape))
    if op.dtype.kind == "c":
        y = y + 1j * rng.standard_normal(y.shape)
    x = solve_tikhonov(op, torch.from_numpy(y), **ZERO_DAMPINGS[how]).numpy()
    assert np.isfinite(x).all()
    for sample in range(2):
        flat = y[sample].reshape(-1)
        exact = np.linalg.lstsq(dense, flat, rcond=None)[0]
        error = np.linalg.norm(x[sample].reshape(-1) - exact)
        assert error <= lstsq_tolerance(dense, flat, exact), sample


def test_rcond_drops_singular_values_as_numpy_does():
    """Between two well-separated singular values, ``rcond`` keeps what ``lstsq`` keeps."""
    op = CIRCULANTS["more-outputs"]()
    dense = op.todense()
    s = np.linalg.svd(dense, compute_uv=False)
    gaps = s[:-1] / s[1:]
    cut = int(np.argmax(gaps[: len(s) // 2]))  # a large gap in the upper half
    rcond = float(np.sqrt(s[cut] * s[cut + 1])) / s[0]
    y = np.random.default_rng(14).standard_normal(op.shape[0])
    x = solve_tikhonov(op, y, damp=0.0, rcond=rcond)
    exact = np.linalg.lstsq(dense, y, rcond=rcond)[0]
    assert np.linalg.norm(x - exact) <= 100 * EPS * s[0] / s[cut] * np.linalg.norm(y) / s[cut]
    assert np.linalg.norm(x - np.linalg.lstsq(dense, y, rcond=None)[0]) > 1e-3


@pytest.mark.parametrize("scale", [1e-160, 1e160])
def test_solve_tikhonov_is_exact_at_any_scale(scale):
    """``x(s w, s damp) = x(w, damp) / s``, also where ``(s damp)^2`` or ``s^2 |K|^2`` would
    under- or overflow."""
    op = CIRCULANTS["more-outputs"]()
    a, inverse = dense_inverse(op, 0.3)
    y = np.random.default_rng(15).standard_normal(op.shape[0])
    exact = inverse @ (a.T @ y) / scale
    scaled = convop.conv2d(op.weight.detach() * scale, (2, 8, 9), padding=1,
                           padding_mode="circular")  # fmt: skip
    x = solve_tikhonov(scaled, y, damp=0.3 * scale)
    np.testing.assert_allclose(x, exact, rtol=0, atol=1e-10 * np.abs(exact).max())


@pytest.mark.parametrize("name", ["1ch-2d", "more-outputs", "complex"])
def test_solve_tikhonov_with_a_huge_damping(name):
    """``damp^2`` beyond float64: ``x = A^H y / damp^2`` to far below round-off, or 0."""
    torch.manual_seed(16)
    op = CIRCULANTS[name]()
    a = op.todense()
    y = np.random.default_rng(16).standard_normal(op.shape[0]).astype(op.dtype)
    # (A^H A + d^2 I)^{-1} A^H y = A^H y / d^2 (1 + O(||A||^2 / d^2)), here O(1e-318)
    x = solve_tikhonov(op, 1e300 * y, damp=1e160)
    np.testing.assert_allclose(x, 1e-20 * (a.conj().T @ y), rtol=1e-12)
    np.testing.assert_array_equal(solve_tikhonov(op, y, damp=1e200), np.zeros(op.shape[1]))


def test_solve_tikhonov_of_half_precision_data_computes_in_the_weights():
    op = CIRCULANTS["more-outputs"]()
    y = torch.randn(*op.output_shape, generator=torch.Generator().manual_seed(17)).half()
    x = solve_tikhonov(op, y, damp=0.2)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x, solve_tikhonov(op, y.double(), damp=0.2), rtol=0, atol=0)
    single = convop.conv2d(op.weight.detach().float(), (2, 8, 9), padding=1,
                           padding_mode="circular")  # fmt: skip
    assert solve_tikhonov(single, y.bfloat16(), damp=0.2).dtype == torch.float32
    with pytest.raises(TypeError, match=r"y must be a floating-point or complex tensor, got "
                                        r"torch\.int64"):  # fmt: skip
        solve_tikhonov(op, y.long(), damp=0.2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"damp": float("inf")}, ValueError, "damp must be a finite float >= 0, got damp=inf"),
        ({"damp": "0.1"}, TypeError, "damp must be a float, got '0.1' of type str"),
        ({"nsr": -1.0}, ValueError, "nsr must be a finite float >= 0, got nsr=-1.0"),
        ({"nsr": np.full((12, 6), 1j)}, TypeError, "nsr must hold real numbers, got dtype comp"),
        ({"nsr": [0.1]}, TypeError, "nsr must be a float, numpy.ndarray or torch.Tensor, got li"),
        ({"damp": 0.1, "rcond": 1.0}, ValueError, r"rcond must be a float in \[0, 1\), got 1\.0"),
        ({"damp": 0.1, "rcond": "1e-9"}, TypeError, "rcond must be a float or None, got str"),
    ],
)  # fmt: skip
def test_solve_tikhonov_rejects_bad_arguments(kwargs, error, match):
    op = CIRCULANTS["1ch-2d"]()
    with pytest.raises(error, match=match):
        solve_tikhonov(op, np.zeros(op.shape[0]), **kwargs)


def test_solve_tikhonov_asks_the_memory_guard_first(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 1024**2)
    op = convop.conv2d(torch.rand(1, 1, 5, 5, dtype=torch.float64), (1, 128, 128), padding=2,
                       padding_mode="circular")  # fmt: skip
    with pytest.raises(MemoryError, match=r"the Tikhonov solve of 4 sample\(s\)"):
        solve_tikhonov(op, torch.zeros(4, *op.output_shape, dtype=torch.float64), damp=0.1)
    with pytest.raises(MemoryError, match=r"the autocorrelation|preconditioner"):
        preconditioner(op, damp=0.1).apply(torch.zeros(16, *op.input_shape, dtype=torch.float64))


def test_preconditioner_of_a_complex_transpose_is_its_exact_inverse():
    op = CIRCULANTS["complex-transpose"]()
    _, inverse = dense_inverse(op, 0.2)
    np.testing.assert_allclose(dense_of(preconditioner(op, damp=0.2)), inverse,
                               atol=1e-10 * np.abs(inverse).max())  # fmt: skip


def _psf(k: int, symmetric: bool) -> torch.Tensor:
    """A ``k x k`` Gaussian PSF, or one elongated along a diagonal (its lags are not
    mirror-symmetric along either axis: the periodic model, scaled where affordable)."""
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    if symmetric:
        w = torch.outer(*(2 * [torch.exp(-(x**2) / (2 * (k / 6) ** 2))]))
    else:
        u, v = x[:, None] - x[None, :], x[:, None] + x[None, :]
        w = torch.exp(-(u**2) / (2 * (k / 20) ** 2) - v**2 / (2 * (k / 5) ** 2))
    return (w / w.sum())[None, None]


class PsfCase(NamedTuple):
    mode: str
    symmetric: bool
    boundary: str
    scaled: bool


PSF_CASES = [
    PsfCase("circular", True, "periodic", False),  # the exact inverse
    PsfCase("reflect", True, "reflect", False),  # the operator's own model
    PsfCase("reflect", False, "periodic", False),  # exact diagonal unaffordable: unscaled
    PsfCase("zeros", False, "periodic", True),
]


@pytest.mark.parametrize("case", PSF_CASES, ids=lambda c: f"{c.mode}-{c.boundary}")
def test_a_201_psf_on_256_squared_preconditions_in_bounded_memory(case, monkeypatch):
    """``convop deblur --method tikhonov`` with a 201 x 201 PSF: everything under 256 MiB."""
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 512 * 1024**2)
    op = convop.conv2d(_psf(201, case.symmetric), (1, 256, 256), padding="same",
                       padding_mode=case.mode)  # fmt: skip
    y = op.apply(torch.from_numpy(phantom(256))[None])
    p = preconditioner(op, damp=1e-2)
    x = p.apply(op.apply_adjoint(y))
    assert torch.isfinite(x).all()
    assert p.boundaries == (case.boundary, case.boundary)
    assert (p._scale is not None) == case.scaled
    z = torch.randn(4, *op.input_shape, dtype=torch.float64, generator=torch.Generator())
    assert bool(((p.apply(z) * z).sum((1, 2, 3)) > 0).all())  # positive definite


def test_a_201_psf_circulant_preconditioner_is_the_exact_tikhonov_solve(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 512 * 1024**2)
    op = convop.conv2d(_psf(201, False), (1, 256, 256), padding="same", padding_mode="circular")
    y = op.apply(torch.from_numpy(phantom(256))[None])
    x = preconditioner(op, damp=1e-2).apply(op.apply_adjoint(y))
    torch.testing.assert_close(x, solve_tikhonov(op, y, damp=1e-2), rtol=0,
                               atol=1e-10 * float(x.abs().max()))  # fmt: skip
