"""convop.richardson_lucy over MPI ranks equals the serial result (``make test-mpi``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mpi4py import MPI

import convop
from convop.data import gaussian_kernel

pytestmark = pytest.mark.mpi

COMM = MPI.COMM_WORLD


def _problem(mode: str, extended: bool):
    """A 3-D blur of a positive volume with Poisson counts: ``(op, y)`` (same on every rank)."""
    rng = np.random.default_rng(0)
    psf = np.einsum("i,j,k->ijk", *[gaussian_kernel(5, 1.0).sum(0)] * 3)
    psf = psf / psf.sum()
    if extended:
        op = convop.extended_domain(psf, (12, 10, 9)).op
    else:
        w = torch.from_numpy(psf).reshape(1, 1, 5, 5, 5)
        op = convop.conv3d(w, (1, 12, 10, 9), padding="same", padding_mode=mode)
    truth = rng.random(op.input_shape) * 100 + 1
    y = rng.poisson(op @ truth.ravel()).astype(np.float64)
    return op, y


@pytest.mark.parametrize("accelerate", [False, True])
@pytest.mark.parametrize(("mode", "extended"), [("reflect", False), ("zeros", False),
                                                ("zeros", True)])  # fmt: skip
def test_distributed_rl_equals_serial(mode, extended, accelerate):
    op, y = _problem(mode, extended)
    want = convop.richardson_lucy(op, y, 12, accelerate=accelerate, background=0.5).x
    D = op.to_pylops_mpi()
    seen = []
    got = convop.richardson_lucy(D, D.scatter(y, output=True), 12, accelerate=accelerate,
                                 background=0.5, callback=lambda k, x: seen.append(k))  # fmt: skip
    x = D.gather(got.x, output=False).reshape(-1)
    error = np.abs(x - want).max() / np.abs(want).max()
    assert COMM.allreduce(float(error), op=MPI.MAX) < 1e-10
    assert seen == list(range(1, 13))
    assert got.stop == "iterations"


def test_distributed_rl_refuses_what_it_cannot_do_on_every_rank():
    op, y = _problem("reflect", False)
    D = op.to_pylops_mpi()
    with pytest.raises(TypeError, match="DistributedArray"):
        convop.richardson_lucy(D, y, 3)
    bad = y.copy()
    if COMM.Get_rank() == 0:
        bad[0] = -1.0  # the first sample: only rank 0's block holds it
    with pytest.raises(ValueError, match="y must be >= 0"):
        convop.richardson_lucy(D, D.scatter(bad, output=True, root=0), 3)
    with pytest.raises(ValueError, match="tv > 0"):
        convop.richardson_lucy(D, D.scatter(y, output=True), 3, tv=1e-3)


def test_a_memory_refusal_on_one_rank_stops_every_rank(monkeypatch):
    import convop._shared.memory as memory

    op, y = _problem("reflect", False)
    D = op.to_pylops_mpi()
    data = D.scatter(y, output=True)
    if COMM.Get_rank() == COMM.Get_size() - 1:  # only the last rank is short of memory
        monkeypatch.setattr(memory, "available_memory", lambda device=None: 1000)
    with pytest.raises(MemoryError, match=r"Richardson-Lucy .* \(on 1 of \d+ ranks\)"):
        convop.richardson_lucy(D, data, 3)


def test_apply_local_is_the_distributed_product_on_tensors():
    op, y = _problem("reflect", False)
    D = op.to_pylops_mpi()
    x = np.random.default_rng(2).random(op.input_shape)
    for adjoint, vector in ((False, D.scatter(x)), (True, D.scatter(y, output=True))):
        want = (D.H @ vector if adjoint else D @ vector).local_array
        block = torch.from_numpy(np.array(vector.local_array))
        got = D.apply_local(block, adjoint=adjoint).reshape(-1).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    with pytest.raises(ValueError, match="this rank's block"):
        D.apply_local(torch.zeros(3, dtype=torch.float64))
