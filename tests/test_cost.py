"""The cost model behind method='auto' and its calibration: choices, estimates, cache files.

The session runs with ``CONVOP_CALIBRATE=0`` and a temporary ``CONVOP_CACHE_DIR`` (see the
repository's conftest.py); the tests here turn calibration on where they need it, with a
fresh in-process memory and their own cache directory.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import convop
from convop._auto import cache as _cache
from convop._auto import calibrate as _calibrate
from convop._auto import cost as _cost
from convop._auto import probe as _probe
from convop._auto import trial as _trial
from convop._auto.cost import Direct, Estimate, Throughput
from convop._fft import frame
from convop.geometry import ConvGeometry

CPU = torch.device("cpu")
F32, F64 = torch.float32, torch.float64


class Forbidden(Exception):
    """Raised by something that must not run (a probe, a timing, a file write)."""


def _forbid(what: str):
    def forbidden(*args, **kwargs):
        raise Forbidden(f"{what} ran")

    return forbidden


@pytest.fixture
def calibrating(tmp_path, monkeypatch):
    """Calibration on, a fresh process memory, and an empty cache directory (returned)."""
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    return tmp_path / "cache"


def _fake(scale: float = 1.0) -> Throughput:
    single = ((1e-9, 2e-9, 3e-9), (1e-9, 2e-9, 3e-9), (2e-9, 2e-9, 2e-9))
    grouped = ((4e-10, 5e-10, 6e-10),) * 3
    side = Direct(call=1e-5 * scale, group=2e-6, dilated=2.0, complex=3.5, large=1.5,
                  single=single, grouped=grouped, dense=(5e-11, 6e-11, 7e-11))  # fmt: skip
    return Throughput(conv=side, transpose=side, call_fft=1e-4, transform=(1e-9, 5e-10, 6e-10),
                      lone_1d=3.0, odd=1.5, complex_fft=2.2, large=0.5, mix=3e-9)  # fmt: skip


@pytest.fixture
def counted(monkeypatch):
    """The probe replaced by one that counts its calls and returns :func:`_fake`."""
    calls = []

    def probe(dtype, device):
        calls.append((dtype, device))
        return _fake()

    monkeypatch.setattr(_probe, "probe", probe)
    return calls


@pytest.fixture
def reads(monkeypatch):
    """Every read of a cache file, recorded (and done)."""
    seen = []
    real = _cache.read

    def read(path, key):
        seen.append(path)
        return real(path, key)

    monkeypatch.setattr(_cache, "read", read)
    return seen


def _file(dtype=F64) -> Path:
    return _cache.cache_file(_cache.machine(CPU, dtype))


# ---------------------------------------------------------------- choices on clear-cut cases
class Clear(NamedTuple):
    name: str
    weight: tuple
    input: tuple
    dtype: torch.dtype
    options: dict
    method: str


CLEAR = [
    Clear("31x31 blur on 512x512", (1, 1, 31, 31), (1, 512, 512), F64, {"padding": "same"}, "fft"),
    Clear("64->64 3x3 layer", (64, 64, 3, 3), (64, 56, 56), F32, {"padding": 1}, "direct"),
    Clear(
        "depthwise 3x3", (32, 1, 3, 3), (32, 112, 112), F32, {"padding": 1, "groups": 32}, "direct"
    ),
]


def _geometry(case: Clear) -> ConvGeometry:
    return ConvGeometry.from_torch(case.weight, case.input, **case.options)


@pytest.mark.parametrize("case", CLEAR, ids=[c.name for c in CLEAR])
def test_builtin_constants_choose_the_clear_winner(case):
    found = _cost.estimate(_geometry(case), case.dtype, CPU)
    assert (found.method, found.source) == (case.method, "built-in")


@pytest.fixture(scope="module")
def measured():
    """This machine's constants, measured once by the real probe (for both precisions).

    On one thread and whatever the load (a busy machine makes them noisy, not useless), so
    that the tests do not depend on what else the machine runs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_probe, "disturbed", lambda *args: False)
            return {dtype: _probe.probe(dtype, CPU) for dtype in (F32, F64)}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CLEAR, ids=[c.name for c in CLEAR])
def test_calibrated_constants_choose_the_clear_winner(case, measured):
    found = _cost.estimate(_geometry(case), case.dtype, CPU, speed=measured[case.dtype])
    assert found.method == case.method


def test_the_probe_gives_valid_constants_that_survive_a_file(measured):
    for speed in measured.values():
        assert isinstance(speed, Throughput)
        assert _cache.decode(json.loads(json.dumps(_cache.encode(speed)))) == speed


def test_the_probe_draws_nothing_from_the_global_generator(monkeypatch):
    # its duration (0.3-0.6 s here) is reported by benchmarks/bench_auto.py, not timed here
    monkeypatch.setattr(_probe, "disturbed", lambda *args: False)
    state = torch.get_rng_state()
    _probe.probe(F32, CPU)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("wall", "cpu", "threads", "busy"),
    [(1.0, 0.99, 1, False), (1.0, 0.6, 1, True), (1.0, 1.95, 2, False), (1.0, 1.1, 2, True)],
)
def test_a_probe_without_the_cpus_of_its_threads_was_disturbed(wall, cpu, threads, busy):
    assert _probe.disturbed(wall, cpu, threads) is busy


def test_calibrating_a_busy_machine_raises_and_keeps_and_writes_nothing(calibrating,
                                                                         monkeypatch):  # fmt: skip
    def busy(dtype, device):
        raise _probe.Busy("the probe ran 5 s on 1.0 of 2 CPUs")

    monkeypatch.setattr(_probe, "probe", busy)
    with pytest.raises(RuntimeError, match=r"5 s on 1\.0 of 2 CPUs: the machine was too busy to "
                                           r"measure, so the float64 constants were neither "
                                           r"kept nor written"):  # fmt: skip
        convop.calibrate(dtype=F64)
    assert _calibrate.throughput(F64, CPU) == (_cost.builtin(F64, CPU), "built-in")
    assert not calibrating.exists()


def test_groups_cost_more_than_one_group_of_the_same_work():
    speed = _cost.builtin(F64, CPU)
    one = ConvGeometry.from_torch((32, 32, 3, 3), (32, 64, 64), padding=1)
    many = ConvGeometry.from_torch((32, 1, 3, 3), (32, 64, 64), padding=1, groups=32)
    per_mac = [_cost.side_seconds(g, F64, speed.conv) for g in (one, many)]
    assert per_mac[1] > per_mac[0] / 32  # 32x fewer multiply-adds, less than 32x faster


def test_one_row_convolutions_too_large_for_the_caches_take_the_large_factor():
    speed = _fake()
    small = ConvGeometry.from_torch((1, 1, 3, 3), (1, 160, 160), padding=1)
    large = ConvGeometry.from_torch((1, 1, 3, 3), (1, 1024, 1024), padding=1)
    layer = ConvGeometry.from_torch((16, 16, 3, 3), (16, 1024, 1024), padding=1)
    per_mac = [
        (_cost.side_seconds(g, F64, speed.conv) - speed.conv.call - speed.conv.group)
        / (n * n * c * c * 9)
        for g, n, c in ((small, 160, 1), (large, 1024, 1), (layer, 1024, 16))
    ]
    assert per_mac[1] / per_mac[0] == pytest.approx(speed.conv.large)
    assert per_mac[2] == pytest.approx(speed.conv.dense[0])  # dense: no factor


def test_complex_and_dilated_convolutions_cost_more():
    plain = ConvGeometry.from_torch((1, 1, 5, 5), (1, 64, 64), padding=2)
    dilated = ConvGeometry.from_torch((1, 1, 5, 5), (1, 64, 64), padding=4, dilation=2)
    speed = _cost.builtin(F64, CPU)
    base = _cost.seconds("direct", plain, F64, CPU, speed)
    assert _cost.seconds("direct", plain, torch.complex128, CPU, speed) > base
    assert _cost.seconds("direct", dilated, F64, CPU, speed) > base
    assert _cost.seconds("fft", plain, torch.complex128, CPU, speed) > _cost.seconds(
        "fft", plain, F64, CPU, speed
    )


def test_multiply_add_table_interpolates_between_and_holds_beyond_its_anchors():
    side = _fake().conv
    assert side.mac_seconds(1, 3, 1, 2) == pytest.approx(1e-9)
    assert side.mac_seconds(1, 3, 4, 2) == pytest.approx(4e-10)  # several groups: 'grouped'
    assert side.mac_seconds(1, 3, 1, 3) == pytest.approx(2e-9)  # 3-D: its own row
    assert side.mac_seconds(16, 15, 1, 2) == pytest.approx(7e-11)
    assert side.mac_seconds(64, 31, 1, 1) == pytest.approx(7e-11)  # beyond: the end values
    assert side.mac_seconds(1, 1, 1, 2) == pytest.approx(1e-9)
    assert side.mac_seconds(4, 3, 1, 2) == pytest.approx(math.sqrt(1e-9 * 5e-11))  # log-midway
    assert 1e-9 < side.mac_seconds(1, 5, 1, 2) < 2e-9


def test_odd_grids_cost_more_per_sample():
    speed = _fake()
    even = ConvGeometry.from_torch((1, 1, 3, 3), (1, 148, 148), padding=1)  # a grid of 150**2
    odd = ConvGeometry.from_torch((1, 1, 3, 3), (1, 133, 133), padding=1)  # 135 = 3**3 * 5
    assert (frame(even).sizes, frame(odd).sizes) == ((150, 150), (135, 135))
    per_unit = [
        (_cost.seconds("fft", g, F64, CPU, speed) - speed.call_fft) / (n * math.log2(n))
        for g, n in ((even, 150**2), (odd, 135**2))
    ]
    assert per_unit[1] / per_unit[0] == pytest.approx(speed.odd)
    one_d = ConvGeometry.from_torch((1, 1, 3), (1, 10123), padding=1)  # 10125 = 3**4 * 5**3
    assert frame(one_d).sizes == (10240,)  # 1-D grids are even: 2**11 * 5, not 10125


def test_large_grids_take_the_large_factor():
    speed = _fake()
    small = ConvGeometry.from_torch((1, 1, 3, 3), (1, 148, 148), padding=1)  # 150**2
    large = ConvGeometry.from_torch((1, 1, 3, 3), (1, 1022, 1022), padding=1)  # beyond 540**2
    per_unit = [
        (_cost.seconds("fft", g, F32, CPU, speed) - speed.call_fft) / (n * math.log2(n))
        for g, n in ((small, 150**2), (large, 1024**2))
    ]  # one channel in and out: no mixing term
    assert per_unit[1] / per_unit[0] == pytest.approx(speed.large)


def test_one_long_1d_transform_costs_more_per_sample_than_many():
    speed = _fake()
    one = ConvGeometry.from_torch((1, 1, 3), (1, 4096), padding=1)
    many = ConvGeometry.from_torch((16, 1, 3), (16, 4096), padding=1, groups=16)
    seconds = [_cost.seconds("fft", g, F64, CPU, speed) - speed.call_fft for g in (one, many)]
    assert seconds[1] / seconds[0] == pytest.approx(16 / speed.lone_1d)


# ---------------------------------------------------------------- the operator's face
def test_method_stays_direct_or_fft_and_repr_says_why(monkeypatch):
    monkeypatch.setenv("CONVOP_CALIBRATE", "0")
    op = convop.conv2d(torch.ones(1, 1, 31, 31, dtype=F64), (1, 512, 512), padding="same")
    assert op.method == "fft"
    assert isinstance(op._auto(op.weight), Estimate)
    assert "method='fft' (auto: est. fft " in repr(op)
    assert repr(op).endswith(", built-in), dtype=float64, device=cpu)")
    fixed = convop.conv2d(torch.ones(1, 1, 31, 31), (1, 64, 64), method="direct")
    assert "method='direct', dtype" in repr(fixed)


def test_estimate_says_the_pick_first_in_readable_units():
    assert str(Estimate(5.4e-3, 2.1e-3, "calibrated")) == (
        "est. fft 2.1 ms, direct 5.4 ms, calibrated"
    )
    assert str(Estimate(4.1e-5, 1.234, "built-in")) == "est. direct 41 us, fft 1.2 s, built-in"
    assert Estimate(1.0, 1.0, "built-in").method == "direct"  # a tie keeps the direct sum


def _operators() -> list[convop.ConvOperator]:
    """Operators of every kind, a 1024^2 blur and a close call of the model among them."""
    return [
        convop.conv2d(torch.ones(1, 1, 15, 15), (1, 1024, 1024), padding="same"),
        convop.conv1d(torch.randn(1, 1, 31, dtype=F64), (1, 4096), padding=15),  # close call
        convop.conv_transpose1d(torch.ones(2, 1, 3), (2, 16)),
        convop.from_module(torch.nn.Conv2d(3, 8, 3), (3, 16, 16)),
    ]


def test_building_repr_method_and_estimate_never_time_probe_or_write(calibrating, monkeypatch):
    monkeypatch.setattr(_probe, "probe", _forbid("the probe"))
    monkeypatch.setattr(_probe, "_measure", _forbid("a measurement"))
    monkeypatch.setattr(_trial, "race", _forbid("a race"))
    monkeypatch.setattr(_cache, "write", _forbid("the cache writer"))
    monkeypatch.setattr(_cache, "atomic_write", _forbid("an atomic write"))
    for op in _operators():
        for face in (op, op.H, op.T):
            repr(face), face.method, face.estimate(), face.estimate(batch=64)
    assert _calibrate.estimate(_operators()[1].geometry, F64, CPU).uncertain  # races later
    assert not calibrating.exists()  # no directory, no file


def test_building_and_repr_of_a_large_blur_take_under_a_millisecond(tmp_path, monkeypatch):
    """As the first use in a process on a machine never calibrated: nothing to measure."""
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    weight = torch.ones(1, 1, 15, 15)
    seconds = []
    for i in range(10):
        monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path / str(i)))
        monkeypatch.setattr(_calibrate, "_KNOWN", {})  # a fresh process
        start = time.perf_counter()
        op = convop.conv2d(weight, (1, 1024, 1024), padding="same")
        text = repr(op)
        seconds.append(time.perf_counter() - start)
    assert "method='fft' (auto: est. fft" in text
    assert min(seconds) < 1e-3  # about 0.1 ms here
    assert not any(tmp_path.iterdir())


def test_calibrate_gives_auto_the_measured_constants(calibrating, counted):
    op = convop.conv1d(torch.ones(1, 1, 3, dtype=F64), (1, 32))
    assert "built-in)" in repr(op)  # resolved before: calibrating replaces it
    assert convop.calibrate(dtype=F64) == {F64: _file()}
    assert counted == [(F64, CPU)]
    assert "calibrated)" in repr(op)
    assert op.estimate().source == "calibrated"
    op.apply(torch.ones(1, 32, dtype=F64))
    assert counted == [(F64, CPU)]  # products measure nothing more


def test_calibrate_measures_both_precisions_by_default(calibrating, counted):
    assert convop.calibrate() == {F32: _file(F32), F64: _file(F64)}
    assert counted == [(F32, CPU), (F64, CPU)]
    assert convop.calibrate("cpu", torch.complex64) == {F32: _file(F32)}  # the same precision


@pytest.mark.parametrize(("args", "error", "message"), [
    (("meta",), ValueError, r"device must be a CPU or CUDA device .*got device='meta'"),
    (("gpu",), ValueError, r"device must name a torch device, got device='gpu'"),
    ((0.5,), TypeError, r"device must be a torch\.device or str, got float"),
    ((None, torch.float16), TypeError, r"dtype must be torch\.float32, .*dtype=torch\.float16"),
    ((None, "float32"), TypeError, r"dtype must be .*got dtype='float32'"),
])  # fmt: skip
def test_calibrate_refuses_other_devices_and_dtypes(calibrating, counted, args, error, message):
    with pytest.raises(error, match=message):
        convop.calibrate(*args)
    assert counted == []


# ---------------------------------------------------------------- the estimate
def test_estimate_gives_seconds_and_bytes_of_both_methods_with_one_set_of_constants(
    calibrating, counted
):
    geom = ConvGeometry.from_torch((4, 2, 5, 5), (2, 40, 30), padding=2)
    op = convop.conv2d(torch.randn(4, 2, 5, 5, dtype=F64), (2, 40, 30), padding=2)
    for source, speed in (("built-in", _cost.builtin(F64, CPU)), ("calibrated", _fake())):
        if source == "calibrated":
            convop.calibrate(dtype=F64)
        found = op.estimate(batch=3)
        assert found.source == source
        assert found.direct == pytest.approx(3 * _cost.seconds("direct", geom, F64, CPU, speed))
        assert found.fft == pytest.approx(3 * _cost.seconds("fft", geom, F64, CPU, speed))
        assert found.method == ("fft" if found.fft < found.direct else "direct")
        assert found.batch == 3
        assert found == _calibrate.estimate(geom, F64, CPU, batch=3)


@pytest.mark.parametrize("dtype", [F32, torch.complex128])
def test_estimated_bytes_are_what_the_memory_guards_of_the_products_check(monkeypatch, dtype):
    monkeypatch.setattr(convop.operator, "PRODUCT_GUARD_BYTES", 0)  # guard every product
    asked = []
    monkeypatch.setattr(convop.operator, "check_memory", lambda need, *a, **k: asked.append(need))
    monkeypatch.setattr(convop._fft, "check_memory", lambda need, *a, **k: asked.append(need))
    weight = torch.randn(3, 2, 5, 5, dtype=dtype)
    batch = torch.randn(4, 2, 20, 17, dtype=dtype)
    for method in ("direct", "fft"):
        op = convop.conv2d(weight, (2, 20, 17), padding=2, padding_mode="reflect", method=method)
        asked.clear()
        op.apply(batch)
        assert sum(asked) == getattr(op.estimate(batch=4), f"{method}_bytes")
        assert len(asked) == (2 if method == "fft" else 1)  # fft: the spectrum, the product


def test_estimate_refuses_a_batch_that_is_not_a_positive_int():
    op = convop.conv1d(torch.ones(1, 1, 3), (1, 8))
    with pytest.raises(ValueError, match=r"batch must be >= 1, got batch=0"):
        op.estimate(batch=0)
    with pytest.raises(TypeError, match=r"batch must be an int, got 2\.0"):
        op.estimate(batch=2.0)


# ---------------------------------------------------------------- switch and directory
def test_calibration_off_uses_the_builtin_constants_and_reads_nothing(calibrating, counted,
                                                                      monkeypatch):  # fmt: skip
    convop.calibrate(dtype=F64)  # a valid cache file, and this process's constants
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    monkeypatch.setenv("CONVOP_CALIBRATE", "0")
    monkeypatch.setattr(_cache, "read", _forbid("a read of the cache file"))
    monkeypatch.setattr(_trial, "race", _forbid("a race"))
    assert _calibrate.throughput(F64, CPU) == (_cost.builtin(F64, CPU), "built-in")
    op = convop.conv1d(torch.randn(1, 1, 31, dtype=F64), (1, 4096), padding=15)  # close call
    assert not op.estimate().uncertain
    op.apply(torch.ones(1, 4096, dtype=F64))
    assert "built-in)" in repr(op)
    assert [p.name for p in calibrating.iterdir()] == [_file().name]


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_the_switch_reads_off(monkeypatch, value):
    monkeypatch.setenv("CONVOP_CALIBRATE", value)
    assert not _calibrate.enabled()


@pytest.mark.parametrize("value", ["1", "true", "On", ""])
def test_the_switch_reads_on(monkeypatch, value):
    monkeypatch.setenv("CONVOP_CALIBRATE", value)
    assert _calibrate.enabled()


def test_the_switch_refuses_other_values(monkeypatch):
    monkeypatch.setenv("CONVOP_CALIBRATE", "sometimes")
    with pytest.raises(ValueError, match=r"CONVOP_CALIBRATE must be 0 or 1 .*got 'sometimes'"):
        _calibrate.enabled()


def test_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path / "mine"))
    assert _cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CONVOP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.cache_dir() == tmp_path / "xdg" / "convop"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.cache_dir() == tmp_path / "home" / ".cache" / "convop"


def test_the_file_name_follows_machine_precision_and_threads(calibrating, monkeypatch):
    names = {_file(F64).name, _file(F32).name}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    names.add(_file(F64).name)
    assert len(names) == 3
    assert _file(F64).name.startswith("calibration-cpu-float64-")
    key = _cache.machine(CPU, torch.complex128)
    assert key["precision"] == "float64"
    assert set(key) >= {"cpu", "arch", "cpus", "threads", "torch", "device"}


# ---------------------------------------------------------------- the cache file
def test_cache_file_round_trip(calibrating, counted, reads):
    assert convop.calibrate(dtype=F64) == {F64: _file()}
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    document = json.loads(_file().read_text())
    assert document["schema"] == _cache.SCHEMA
    assert document["key"] == _cache.machine(CPU, F64)
    assert document["probe_seconds"] >= 0
    assert _cache.read(_file(), _cache.machine(CPU, F64)) == _fake()
    _calibrate._KNOWN.clear()  # a new process: reads the file, does not probe
    assert _calibrate.throughput(F64, CPU) == (_fake(), "cache file")
    assert counted == [(F64, CPU)]
    assert [p.name for p in calibrating.iterdir()] == [_file().name]  # no temporary left


def test_the_cache_file_is_read_once_per_process_and_precision(calibrating, counted, reads):
    convop.calibrate()
    _calibrate._KNOWN.clear()  # a new process
    reads.clear()
    for _ in range(3):
        _calibrate.throughput(F64, CPU)
        _calibrate.throughput(torch.complex128, CPU)  # the same precision
        _calibrate.estimate(ConvGeometry.from_torch((1, 1, 3), (1, 9)), F32, CPU)
    assert reads == [_file(F64), _file(F32)]


def test_no_cache_file_is_looked_for_again_in_the_same_process(calibrating, reads):
    for _ in range(3):
        assert _calibrate.throughput(F64, CPU) == (_cost.builtin(F64, CPU), "built-in")
    assert reads == [_file()]  # looked for once (there is none), not again
    assert _calibrate._KNOWN == {("cpu", F64): None}


def _valid_document() -> dict:
    return {"schema": _cache.SCHEMA, "key": _cache.machine(CPU, F64),
            "probe_seconds": 0.2, "throughput": _cache.encode(_fake(2.0))}  # fmt: skip


def _edited(edit) -> bytes:
    document = _valid_document()
    edit(document)
    return json.dumps(document).encode()


class Bad(NamedTuple):
    name: str
    content: bytes


BAD_FILES = [
    Bad("not JSON", b"{'schema': 1"),
    Bad("not UTF-8", b"\xff\xfe{}"),
    Bad("empty", b""),
    Bad("a list", b"[1, 2, 3]"),
    Bad("no fields", b"{}"),
    Bad("another schema", _edited(lambda d: d.update(schema=_cache.SCHEMA + 1))),
    Bad("another machine", _edited(lambda d: d["key"].update(cpu="Some Other CPU"))),
    Bad("another torch", _edited(lambda d: d["key"].update(torch="0.0.1"))),
    Bad("NaN", _edited(lambda d: d["throughput"].update(mix=float("nan")))),
    Bad("Infinity", _edited(lambda d: d["throughput"]["conv"].update(call=float("inf")))),
    Bad("negative", _edited(lambda d: d["throughput"].update(call_fft=-1e-4))),
    Bad("zero", _edited(lambda d: d["throughput"]["transpose"].update(group=0))),
    Bad("a string", _edited(lambda d: d["throughput"].update(mix="3e-9"))),
    Bad("a bool", _edited(lambda d: d["throughput"]["conv"].update(dilated=True))),
    Bad("short table", _edited(lambda d: d["throughput"]["conv"].update(dense=[1e-10]))),
    Bad("flat table", _edited(lambda d: d["throughput"]["conv"].update(single=[1e-9] * 3))),
    Bad("deep table", _edited(lambda d: d["throughput"]["conv"].update(dense=[[1e-9]] * 3))),
    Bad("missing field", _edited(lambda d: d["throughput"].pop("transform"))),
    Bad("extra field", _edited(lambda d: d["throughput"].update(speedup=2.0))),
    Bad("huge", b" " * (_cache.MAX_FILE_BYTES + 1) + json.dumps(_valid_document()).encode()),
]


@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.name for b in BAD_FILES])
def test_a_corrupt_or_foreign_cache_file_is_ignored_until_calibrate_replaces_it(
    calibrating, counted, bad
):
    path = _file()
    path.parent.mkdir(parents=True)
    path.write_bytes(bad.content)
    assert _calibrate.throughput(F64, CPU) == (_cost.builtin(F64, CPU), "built-in")
    assert path.read_bytes() == bad.content  # resolving 'auto' writes nothing
    assert counted == []
    convop.calibrate(dtype=F64)
    assert _cache.read(path, _cache.machine(CPU, F64)) == _fake()


def test_a_valid_cache_file_is_trusted(calibrating, counted):
    path = _file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_valid_document()))
    assert _calibrate.throughput(F64, CPU) == (_fake(2.0), "cache file")
    assert counted == []


def test_an_unwritable_cache_directory_keeps_the_constants_in_memory(tmp_path, monkeypatch,
                                                                     counted):  # fmt: skip
    (tmp_path / "a file").write_text("in the way")
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path / "a file" / "cache"))
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    with pytest.warns(RuntimeWarning, match=r"could not be written to .*a file/cache/calibration"
                                            r".*kept for this process only"):  # fmt: skip
        assert convop.calibrate(dtype=F64) == {F64: None}
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert counted == [(F64, CPU)]


def test_a_directory_in_place_of_the_cache_file_is_left_alone(calibrating, counted):
    _file().mkdir(parents=True)
    with pytest.warns(RuntimeWarning, match=r"could not be written"):
        convop.calibrate(dtype=F64)
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert _file().is_dir()


# ---------------------------------------------------------------- threads
def test_the_cache_file_is_read_once_for_many_threads(calibrating, counted, monkeypatch):
    convop.calibrate(dtype=F32)
    monkeypatch.setattr(_calibrate, "_KNOWN", {})  # a new process
    calls = []
    real = _cache.read

    def slow_read(path, key):
        calls.append(path)
        time.sleep(0.05)
        return real(path, key)

    monkeypatch.setattr(_cache, "read", slow_read)
    start = threading.Barrier(8)
    results = []

    def resolve():
        start.wait()
        results.append(_calibrate.throughput(F32, CPU))

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [_file(F32)]
    assert results == [(_fake(), "cache file")] * 8


# ---------------------------------------------------------------- validation
def test_constants_must_be_finite_and_positive():
    side = _fake().conv
    with pytest.raises(ValueError, match=r"call must be a finite number > 0, got call=nan"):
        Direct(math.nan, side.group, side.dilated, 3.0, 1.5, side.single, side.grouped, side.dense)
    with pytest.raises(ValueError, match=r"dense must be a tuple of 3 numbers"):
        Direct(side.call, side.group, side.dilated, 3.0, 1.5, side.single, side.grouped, (1e-9,))
    with pytest.raises(ValueError, match=r"grouped must be a tuple of 3 rows"):
        Direct(side.call, side.group, side.dilated, 3.0, 1.5, side.single, side.grouped[:2],
               side.dense)  # fmt: skip
    with pytest.raises(ValueError, match=r"grouped\[0\] must be a tuple of 3 numbers"):
        Direct(side.call, side.group, side.dilated, 3.0, 1.5, side.single, side.dense, side.dense)
    with pytest.raises(TypeError, match=r"mix must be a number, got str"):
        Throughput(side, side, 1e-4, (1e-9,) * 3, 3.0, 1.5, 2.0, 0.5, "fast")
    with pytest.raises(ValueError, match=r"transform\[2\] must be a finite number > 0"):
        Throughput(side, side, 1e-4, (1e-9, 1e-9, -1.0), 3.0, 1.5, 2.0, 0.5, 1e-9)
