"""convop.threads: the torch thread count of products on numpy arrays, and its policy."""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import pytest
import torch

import convop
from convop._threads import product_threads, run_with_threads
from convop.operator import ConvOperator

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only: nothing runs on it here


@pytest.fixture
def four_torch_threads():
    """torch on 4 threads for the test (any count works, whatever the core count)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def seen_threads(monkeypatch):
    """Records torch's thread count inside every product of any ConvOperator."""
    seen: list[int] = []
    run = ConvOperator._run

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(ConvOperator, "_run", spy)
    return seen


def _op(dtype: torch.dtype) -> ConvOperator:
    return convop.conv2d(torch.ones(2, 1, 3, 3, dtype=dtype), (1, 8, 8), padding=1)


class Policy(NamedTuple):
    setting: object
    dtype: torch.dtype
    device: torch.device
    threads: int | None


POLICIES = [
    Policy("auto", torch.float64, CPU, 1),
    Policy("auto", torch.complex128, CPU, 1),
    Policy("auto", torch.float32, CPU, None),
    Policy("auto", torch.complex64, CPU, None),
    Policy("auto", torch.float64, CUDA, None),
    Policy(None, torch.float64, CPU, None),
    Policy(3, torch.float32, CPU, 3),
    Policy(3, torch.float64, CPU, 3),
    Policy(3, torch.float64, CUDA, None),
]


# ---------------------------------------------------------------- the setting
def test_default_is_auto():
    assert convop.get_array_threads() == "auto"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.setting}-{p.dtype}-{p.device}")
def test_policy_by_setting_dtype_and_device(policy):
    with convop.array_threads(policy.setting):
        assert product_threads(policy.dtype, policy.device) == policy.threads


def test_context_manager_restores_the_previous_setting():
    with convop.array_threads(2):
        with convop.array_threads(None):
            assert convop.get_array_threads() is None
        assert convop.get_array_threads() == 2
    assert convop.get_array_threads() == "auto"


def test_set_array_threads_sets_the_current_context():
    try:
        convop.set_array_threads(5)
        assert convop.get_array_threads() == 5
    finally:
        convop.set_array_threads("auto")


def test_other_python_threads_start_from_auto():
    seen = []
    with convop.array_threads(7):
        worker = threading.Thread(target=lambda: seen.append(convop.get_array_threads()))
        worker.start()
        worker.join()
    assert seen == ["auto"]


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (0, ValueError, r"n must be >= 1, got n=0"),
        (-2, ValueError, r"n must be >= 1, got n=-2"),
        ("all", ValueError, r"n must be 'auto', None or a positive int, got n='all'"),
        (1.5, TypeError, r"n must be an int, got 1.5"),
        (True, TypeError, r"n must be an int, got True"),
    ],
)
def test_invalid_settings_are_rejected(n, error, message):
    with pytest.raises(error, match=message):
        convop.set_array_threads(n)
    with pytest.raises(error, match=message), convop.array_threads(n):
        pass
    assert convop.get_array_threads() == "auto"


# ---------------------------------------------------------------- products
@pytest.mark.usefixtures("four_torch_threads")
@pytest.mark.parametrize(
    ("dtype", "setting", "expected"),
    [
        (torch.float64, "auto", 1),
        (torch.float32, "auto", 4),
        (torch.float64, None, 4),
        (torch.float32, 2, 2),
    ],
)
def test_numpy_face_products_run_on_the_chosen_threads(seen_threads, dtype, setting, expected):
    op = _op(dtype)
    x = np.ones(op.shape[1], dtype=op.dtype)
    y = np.ones(op.shape[0], dtype=op.dtype)
    with convop.array_threads(setting):
        op @ x
        op.rmatvec(y)
        op.matmat(np.ones((op.shape[1], 3), dtype=op.dtype))
        op.H.rmatmat(np.ones((op.shape[1], 2), dtype=op.dtype))
        op.matvec(x[::-1])  # the general path (a negative stride)
        op.to_pylops() @ x
    assert seen_threads == [expected] * 6
    assert torch.get_num_threads() == 4


@pytest.mark.usefixtures("four_torch_threads")
def test_float32_operator_on_float64_data_computes_single_threaded(seen_threads):
    op = _op(torch.float32)
    assert (op @ np.ones(op.shape[1])).dtype == np.float64
    assert seen_threads == [1]


@pytest.mark.usefixtures("four_torch_threads")
def test_torch_face_keeps_torchs_setting(seen_threads):
    op = _op(torch.float64)
    op.apply(torch.ones(op.input_shape, dtype=torch.float64))
    op.apply_adjoint(torch.ones(op.output_shape, dtype=torch.float64))
    assert seen_threads == [4, 4]


@pytest.mark.usefixtures("four_torch_threads")
def test_thread_count_is_restored_when_a_product_fails(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ConvOperator, "_run", fail)
    op = _op(torch.float64)
    with pytest.raises(RuntimeError, match="boom"):
        op @ np.ones(op.shape[1])
    assert torch.get_num_threads() == 4


@pytest.mark.usefixtures("four_torch_threads")
def test_run_with_threads_nests_and_restores():
    def inner():
        return torch.get_num_threads(), run_with_threads(1, torch.get_num_threads)

    assert run_with_threads(2, inner) == (2, 1)
    assert run_with_threads(None, torch.get_num_threads) == 4
    assert torch.get_num_threads() == 4
