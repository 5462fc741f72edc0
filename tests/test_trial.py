"""convop._auto.trial: where the cost model cannot tell, "auto" times both methods per batch size.

Timing here runs on a scripted clock: the tests check what is timed and what is kept, never
how fast anything is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convop
from convop._auto import calibrate as _calibrate
from convop._auto import cost as _cost
from convop._auto import trial as _trial
from convop._auto.cost import Estimate

CPU = torch.device("cpu")


class Clock:
    """A scripted ``time.perf_counter``: each product advances it by its method's seconds."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.now, self.seconds, self.calls = 0.0, seconds, []

    def __call__(self) -> float:
        return self.now

    def run(self, method: str) -> torch.Tensor:
        self.calls.append(method)
        self.now += self.seconds[method]
        return torch.tensor([float(len(self.calls))])


@pytest.fixture
def clock(monkeypatch):
    def make(direct: float, fft: float) -> Clock:
        scripted = Clock({"direct": direct, "fft": fft})
        monkeypatch.setattr(_trial.time, "perf_counter", scripted)
        return scripted

    return make


def test_a_race_keeps_the_faster_and_its_result(clock):
    timed = clock(direct=0.030, fft=0.001)
    method, out, seconds = _trial.race(timed.run, CPU)
    assert method == "fft"
    assert seconds == pytest.approx({"direct": 0.030, "fft": 0.001})
    # one untimed run each, then one timed run each: far apart, no second round
    assert timed.calls == ["direct", "fft", "direct", "fft"]
    assert out.item() == 4  # the timed FFT run's own result


def test_a_close_race_repeats_its_rounds_within_limits(clock):
    timed = clock(direct=2**-9, fft=1.25 * 2**-9)  # binary fractions: the clock sums exactly
    method, out, _ = _trial.race(timed.run, CPU)
    assert method == "direct"
    assert timed.calls == ["direct", "fft"] * (1 + _trial.ROUNDS)  # warm-up, then all rounds
    assert out.item() == 3  # the fastest run's result (the first of equally fast ones)
    slow = clock(direct=0.2, fft=0.25)  # close, but one round already spends the budget
    assert _trial.race(slow.run, CPU)[0] == "direct"
    assert slow.calls == ["direct", "fft"] * 2


def test_a_method_out_of_memory_loses_the_race(clock):
    timed = clock(direct=0.030, fft=0.001)

    def run(method):
        if method == "fft":
            raise MemoryError("the FFT spectrum would need 40 GiB")
        return timed.run(method)

    method, _, seconds = _trial.race(run, CPU)
    assert method == "direct"
    assert seconds["fft"] == float("inf")

    def neither(method):
        raise MemoryError(f"{method} does not fit")

    with pytest.raises(MemoryError, match="direct does not fit"):
        _trial.race(neither, CPU)


def test_describe_names_dtype_and_device_only_when_they_differ():
    f64, c128 = torch.float64, torch.complex128
    assert _trial.describe({}) == ""
    one = {(f64, CPU, 64, False): "fft", (f64, CPU, 1, True): "direct"}
    assert _trial.describe(one) == "timed: batch 1 adjoint direct, batch 64 fft"
    two = {(f64, CPU, 1, False): "fft", (c128, CPU, 1, False): "direct"}
    assert _trial.describe(two) == (
        "timed: batch 1 direct (complex128, cpu), batch 1 fft (float64, cpu)"
    )


@pytest.mark.parametrize(("direct", "fft", "close"), [
    (1e-3, 3.9e-3, True), (3.9e-3, 1e-3, True), (1e-3, 4.1e-3, False), (5e-3, 1e-3, False),
])  # fmt: skip
def test_estimates_within_the_ratio_are_uncertain(direct, fft, close):
    assert _trial.uncertain(direct, fft) is close


@pytest.mark.parametrize(("batch", "size"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (64, 64)])
def test_batches_are_raced_per_power_of_two(batch, size):
    assert _trial.size_class(batch) == size


@pytest.mark.parametrize("source", ["built-in", "cache file", "calibrated"])
def test_close_estimates_are_uncertain_whatever_the_constants(monkeypatch, source):
    """The race is a product's own work, "fast by default": not only after a calibration."""
    f64 = torch.float64
    blur = convop.conv1d(torch.randn(1, 1, 31, dtype=f64), (1, 4096), padding=15).geometry
    wide = convop.conv2d(torch.randn(1, 1, 31, 31, dtype=f64), (1, 512, 512), padding=15).geometry
    speed = _cost.builtin(f64, CPU)
    close = _cost.estimate(blur, f64, CPU, speed=speed)
    assert _trial.uncertain(close.direct, close.fft)  # a blur the model finds close to call
    far = _cost.estimate(wide, f64, CPU, speed=speed)
    assert not _trial.uncertain(far.direct, far.fft)  # a large blur: FFT by far
    assert not _calibrate.estimate(blur, f64, CPU).uncertain  # CONVOP_CALIBRATE=0
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setattr(_calibrate, "throughput", lambda *a: (speed, source))
    assert _calibrate.estimate(blur, f64, CPU).uncertain
    assert not _calibrate.estimate(wide, f64, CPU).uncertain
    assert not _calibrate.estimate(blur, f64, torch.device("meta")).uncertain  # not timed there


def test_a_close_call_races_with_the_builtin_constants(monkeypatch):
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setattr(
        _calibrate, "throughput", lambda d, dev: (_cost.builtin(d, dev), "built-in")
    )
    raced = []
    real = _trial.race
    monkeypatch.setattr(_trial, "race", lambda *a: raced.append(1) or real(*a))
    weight = torch.randn(1, 1, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    auto = convop.conv1d(weight, (1, 4096), padding=15)
    direct = convop.conv1d(weight, (1, 4096), padding=15, method="direct")
    x = torch.randn(2, 1, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(auto.apply(x), direct.apply(x))
    torch.testing.assert_close(auto.apply(x), direct.apply(x))
    assert raced == [1]
    assert "built-in; timed: batch 2 " in repr(auto)


@pytest.fixture
def races(monkeypatch):
    """'auto' operators whose estimate is uncertain; every race recorded (and run for real)."""
    guess = Estimate(1e-3, 1.5e-3, "calibrated", uncertain=True)
    monkeypatch.setattr(_calibrate, "estimate", lambda *a, **k: guess)
    seen = []
    real = _trial.race

    def recorded(run, device):
        method, out, seconds = real(run, device)
        seen.append(method)
        return method, out, seconds

    monkeypatch.setattr(_trial, "race", recorded)
    return seen


def _pair(method: str = "auto"):
    """An operator by ``method`` and the same by the direct method, the oracle."""
    weight = torch.randn(
        3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    auto = convop.conv2d(weight, (2, 12, 11), padding=2, method=method)
    return auto, convop.conv2d(weight, (2, 12, 11), padding=2, method="direct")


def test_auto_races_once_per_size_class_and_direction(races):
    auto, direct = _pair()
    g = torch.Generator().manual_seed(1)
    for batch, raced in ((3, 1), (4, 1), (2, 2), (5, 3), (8, 3)):  # classes 4, 4, 2, 8, 8
        x = torch.randn(batch, *auto.input_shape, dtype=torch.float64, generator=g)
        torch.testing.assert_close(auto.apply(x), direct.apply(x))
        assert len(races) == raced
    y = torch.randn(4, *auto.output_shape, dtype=torch.float64, generator=g)
    torch.testing.assert_close(auto.apply_adjoint(y), direct.apply_adjoint(y))
    assert len(races) == 4  # the adjoint is raced on its own
    torch.testing.assert_close(auto.H.apply(y), direct.H.apply(y))
    assert len(races) == 4  # ... and its record is shared with op.H
    assert set(auto._raced) == {
        (torch.float64, CPU, 4, False), (torch.float64, CPU, 2, False),
        (torch.float64, CPU, 8, False), (torch.float64, CPU, 4, True),
    }  # fmt: skip
    assert "timed: batch 2 " in repr(auto)
    assert "batch 4 adjoint " in repr(auto)


def test_vector_products_race_once_and_stay_exact(races):
    auto, direct = _pair()
    x = np.random.default_rng(0).standard_normal(auto.shape[1])
    for _ in range(3):
        np.testing.assert_allclose(auto @ x, direct @ x, rtol=1e-10, atol=1e-12)
    assert len(races) == 1
    assert set(auto._raced) == {(torch.float64, CPU, 1, False)}


def test_a_raced_product_that_autograd_records_keeps_its_gradient(races):
    auto, _ = _pair()
    x = torch.randn(2, *auto.input_shape, dtype=torch.float64, requires_grad=True)
    assert auto.apply(x).requires_grad
    assert len(races) == 1
    assert torch.autograd.gradcheck(auto.apply, (x,))


def test_certain_estimates_and_fixed_methods_never_race(races, monkeypatch):
    for method in ("direct", "fft"):
        fixed, _ = _pair(method)
        fixed.apply(torch.randn(4, *fixed.input_shape, dtype=torch.float64))
    sure = Estimate(1e-3, 1.5e-3, "calibrated", uncertain=False)
    monkeypatch.setattr(_calibrate, "estimate", lambda *a, **k: sure)
    auto, _ = _pair()
    auto.apply(torch.randn(4, *auto.input_shape, dtype=torch.float64))
    assert races == []
    assert "timed" not in repr(auto)
