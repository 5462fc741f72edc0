"""Thread settings: products change none; ``convop.solver_threads`` limits BLAS for a block."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from threadpoolctl import threadpool_info

import convop


def _op(dtype: torch.dtype, n: int = 24) -> convop.ConvOperator:
    weight = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    return convop.conv2d(weight, (2, n, n), padding=1, padding_mode="reflect")


def _pools() -> list[tuple[str, str, int]]:
    """Every thread pool's library and thread count (BLAS, OpenMP), as threadpoolctl sees it."""
    return sorted((p["filepath"], p["user_api"], p["num_threads"]) for p in threadpool_info())


@pytest.fixture
def four_torch_threads():
    """torch on 4 threads for the test (any count works, whatever the core count)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def no_thread_setting(monkeypatch):
    """Fails the test if anything calls ``torch.set_num_threads`` while it runs."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    yield
    assert calls == [], f"torch.set_num_threads was called with {calls}"


# ------------------------------------------------------------------ products
@pytest.mark.usefixtures("four_torch_threads", "no_thread_setting")
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
def test_every_face_runs_on_torchs_own_threads(monkeypatch, dtype):
    seen = []
    run = convop.ConvOperator._run

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(convop.ConvOperator, "_run", spy)
    op = _op(dtype)
    x = np.ones(op.shape[1], dtype=op.dtype)
    op @ x
    op.rmatvec(np.ones(op.shape[0], dtype=op.dtype))
    op.matmat(np.ones((op.shape[1], 3), dtype=op.dtype))
    op.matvec(x[::-1])  # the general path (a negative stride)
    op.to_pylops() @ x
    op.apply(torch.ones(op.input_shape, dtype=dtype))
    assert seen == [4] * 6


def test_concurrent_products_are_exact_and_change_no_setting():
    """Four Python threads run products of every face while a fifth watches torch's thread
    count, in itself and in threads it starts afresh (which read torch's process default):
    nothing changes, and every result equals the same product run alone."""
    ops = [_op(torch.float64), _op(torch.float32), _op(torch.complex128)]
    fft_weight = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    ops.append(convop.conv2d(fft_weight, (2, 30, 30), padding=2, method="fft"))  # kept grids
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(op.shape[1]).astype(op.dtype) for op in ops]
    expected = [(op @ x, op.rmatvec(op @ x)) for op, x in zip(ops, inputs)]
    threads_before, pools_before = torch.get_num_threads(), _pools()

    stop, seen, failures = threading.Event(), set(), []

    def fresh_thread_reading() -> int:
        out = []
        reader = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
        reader.start()
        reader.join()
        return out[0]

    def watch():
        while not stop.is_set():
            seen.add(torch.get_num_threads())
            seen.add(fresh_thread_reading())

    def work(seed: int):
        try:
            for i in range(30):
                j = (seed + i) % len(ops)
                op, x = ops[j], inputs[j]
                y = op @ x
                back = op.rmatvec(y)
                batch = op.matmat(np.stack([x, 2 * x], axis=1))
                tensor = op.apply(torch.from_numpy(x).reshape(op.input_shape)).reshape(-1)
                np.testing.assert_array_equal(y, expected[j][0])
                np.testing.assert_array_equal(back, expected[j][1])
                scale = float(np.abs(expected[j][0]).max())  # batched: another algorithm
                np.testing.assert_allclose(batch[:, 1], 2 * expected[j][0], atol=1e-5 * scale)
                np.testing.assert_allclose(tensor.numpy(), expected[j][0], atol=1e-5 * scale)
        except Exception as error:  # reported in the main thread
            failures.append(error)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    watcher.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    watcher.join()
    assert failures == []
    assert seen == {threads_before}
    assert torch.get_num_threads() == threads_before
    assert _pools() == pools_before


# ------------------------------------------------------------------ solver_threads
def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.mark.usefixtures("no_thread_setting")
def test_solver_threads_limits_blas_only_and_restores():
    before, torch_threads = _pools(), torch.get_num_threads()
    openmp = [p for p in before if p[1] == "openmp"]
    with convop.solver_threads():
        assert _blas_threads()
        assert set(_blas_threads()) == {1}
        assert [p for p in _pools() if p[1] == "openmp"] == openmp  # torch's pool untouched
        assert torch.get_num_threads() == torch_threads
        with convop.solver_threads(blas=2):
            assert set(_blas_threads()) <= {1, 2}
        assert set(_blas_threads()) == {1}
    assert _pools() == before
    with pytest.raises(RuntimeError, match="boom"), convop.solver_threads():
        raise RuntimeError("boom")
    assert _pools() == before


def test_a_solve_inside_solver_threads_gives_the_same_answer():
    op = _op(torch.float64, n=16)
    y = op @ np.random.default_rng(2).standard_normal(op.shape[1])
    plain = spla.lsqr(op, y, iter_lim=20, atol=0, btol=0)[0]
    with convop.solver_threads():
        limited = spla.lsqr(op, y, iter_lim=20, atol=0, btol=0)[0]
    np.testing.assert_allclose(limited, plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("blas", "error", "message"),
    [
        (0, ValueError, r"blas must be >= 1, got blas=0"),
        (-2, ValueError, r"blas must be >= 1, got blas=-2"),
        (None, TypeError, r"blas must be an int, got None"),
        (1.5, TypeError, r"blas must be an int, got 1.5"),
        (True, TypeError, r"blas must be an int, got True"),
    ],
)
def test_invalid_blas_is_rejected(blas, error, message):
    before = _pools()
    with pytest.raises(error, match=message), convop.solver_threads(blas):
        pass
    assert _pools() == before
