"""The cost model behind method='auto' and its calibration: choices, cache files, the probe.

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
from convop._auto import calibrate as _calibrate
from convop._auto import cost as _cost
from convop._auto.cost import Direct, Estimate, Throughput
from convop._fft import frame
from convop.geometry import ConvGeometry

CPU = torch.device("cpu")
F32, F64 = torch.float32, torch.float64


class Probed(Exception):
    """Raised by a probe that must not run."""


def _forbid_probe(*args):
    raise Probed("the probe ran")


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

    monkeypatch.setattr(_calibrate, "probe", probe)
    return calls


def _file(dtype=F64) -> Path:
    return _calibrate.cache_file(_calibrate.machine(CPU, dtype))


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
    assert _cost.choose(_geometry(case), case.dtype, CPU) == case.method
    assert _cost.estimate(_geometry(case), case.dtype, CPU).source == "built-in"


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
            patch.setattr(_calibrate, "disturbed", lambda *args: False)
            return {dtype: _calibrate.probe(dtype, CPU) for dtype in (F32, F64)}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CLEAR, ids=[c.name for c in CLEAR])
def test_calibrated_constants_choose_the_clear_winner(case, measured):
    found = _cost.estimate(_geometry(case), case.dtype, CPU, speed=measured[case.dtype])
    assert found.method == case.method


def test_the_probe_gives_valid_constants_that_survive_a_file(measured):
    for speed in measured.values():
        assert isinstance(speed, Throughput)
        assert _calibrate.decode(json.loads(json.dumps(_calibrate.encode(speed)))) == speed


def test_the_probe_draws_nothing_from_the_global_generator(monkeypatch):
    # its duration (0.3-0.6 s here) is reported by benchmarks/bench_auto.py, not timed here
    monkeypatch.setattr(_calibrate, "disturbed", lambda *args: False)
    state = torch.get_rng_state()
    _calibrate.probe(F32, CPU)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("wall", "cpu", "threads", "busy"),
    [(1.0, 0.99, 1, False), (1.0, 0.6, 1, True), (1.0, 1.95, 2, False), (1.0, 1.1, 2, True)],
)
def test_a_probe_without_the_cpus_of_its_threads_was_disturbed(wall, cpu, threads, busy):
    assert _calibrate.disturbed(wall, cpu, threads) is busy


def test_a_busy_machine_gets_the_builtin_constants_and_no_file(calibrating, monkeypatch):
    calls = []

    def busy(dtype, device):
        calls.append(dtype)
        raise _calibrate.Busy("the probe ran 5 s on 1.0 of 2 CPUs")

    monkeypatch.setattr(_calibrate, "probe", busy)
    for _ in range(2):
        speed, source = _calibrate.throughput(F64, CPU)
        assert (speed, source) == (_cost.builtin(F64, CPU), "built-in, machine busy")
    assert calls == [F64]  # not retried in this process
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
    base = _cost.direct_seconds(plain, F64, CPU, speed)
    assert _cost.direct_seconds(plain, torch.complex128, CPU, speed) > base
    assert _cost.direct_seconds(dilated, F64, CPU, speed) > base
    assert _cost.fft_seconds(plain, torch.complex128, CPU, speed) > _cost.fft_seconds(
        plain, F64, CPU, speed
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
        (_cost.fft_seconds(g, F64, CPU, speed) - speed.call_fft) / (n * math.log2(n))
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
        (_cost.fft_seconds(g, F32, CPU, speed) - speed.call_fft) / (n * math.log2(n))
        for g, n in ((small, 150**2), (large, 1024**2))
    ]  # one channel in and out: no mixing term
    assert per_unit[1] / per_unit[0] == pytest.approx(speed.large)


def test_one_long_1d_transform_costs_more_per_sample_than_many():
    speed = _fake()
    one = ConvGeometry.from_torch((1, 1, 3), (1, 4096), padding=1)
    many = ConvGeometry.from_torch((16, 1, 3), (16, 4096), padding=1, groups=16)
    seconds = [_cost.fft_seconds(g, F64, CPU, speed) - speed.call_fft for g in (one, many)]
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


def test_construction_runs_no_probe(calibrating, monkeypatch):
    monkeypatch.setattr(_calibrate, "probe", _forbid_probe)
    layer = torch.nn.Conv2d(3, 8, 3)
    ops = [
        convop.conv2d(torch.ones(1, 1, 31, 31), (1, 64, 64), padding="same"),
        convop.conv_transpose1d(torch.ones(2, 1, 3), (2, 16)),
        convop.from_module(layer, (3, 16, 16)),
    ]
    for op in ops:
        op.H, op.T, op.shape, op.dtype  # noqa: B018
    with pytest.raises(Probed):  # resolving 'auto' is what measures
        _ = ops[0].method


def test_a_product_resolves_auto_with_the_measured_constants(calibrating, counted):
    op = convop.conv1d(torch.ones(1, 1, 3, dtype=F64), (1, 32))
    op.apply(torch.ones(1, 32, dtype=F64))
    op @ torch.ones(32, dtype=F64).numpy()
    assert counted == [(F64, CPU)]
    assert "calibrated)" in repr(op)


# ---------------------------------------------------------------- switch and directory
def test_calibration_off_uses_the_builtin_constants_and_never_probes(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVOP_CALIBRATE", "0")
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    monkeypatch.setattr(_calibrate, "probe", _forbid_probe)
    assert _calibrate.throughput(F32, CPU) == (_cost.builtin(F32, CPU), "built-in")
    op = convop.conv2d(torch.ones(4, 4, 3, 3), (4, 16, 16))
    op.apply(torch.ones(4, 16, 16))
    assert "built-in)" in repr(op)
    assert list(tmp_path.iterdir()) == []


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
    assert _calibrate.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CONVOP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _calibrate.cache_dir() == tmp_path / "xdg" / "convop"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _calibrate.cache_dir() == tmp_path / "home" / ".cache" / "convop"


def test_the_file_name_follows_machine_precision_and_threads(calibrating, monkeypatch):
    names = {_file(F64).name, _file(F32).name}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    names.add(_file(F64).name)
    assert len(names) == 3
    assert _file(F64).name.startswith("calibration-cpu-float64-")
    key = _calibrate.machine(CPU, torch.complex128)
    assert key["precision"] == "float64"
    assert set(key) >= {"cpu", "arch", "cpus", "threads", "torch", "device"}


# ---------------------------------------------------------------- the cache file
def test_cache_file_round_trip(calibrating, counted):
    speed, source = _calibrate.throughput(F64, CPU)
    assert (speed, source) == (_fake(), "calibrated")
    document = json.loads(_file().read_text())
    assert document["schema"] == _calibrate.SCHEMA
    assert document["key"] == _calibrate.machine(CPU, F64)
    assert document["probe_seconds"] >= 0
    assert _calibrate.read(_file(), _calibrate.machine(CPU, F64)) == _fake()
    _calibrate._KNOWN.clear()  # a new process: reads the file, does not probe
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert counted == [(F64, CPU)]
    assert [p.name for p in calibrating.iterdir()] == [_file().name]  # no temporary left


def test_the_probe_runs_once_per_process_and_precision(calibrating, counted):
    for _ in range(3):
        _calibrate.throughput(F64, CPU)
        _calibrate.throughput(torch.complex128, CPU)  # the same precision
        _calibrate.estimate(ConvGeometry.from_torch((1, 1, 3), (1, 9)), F32, CPU)
    assert counted == [(F64, CPU), (F32, CPU)]


def _valid_document() -> dict:
    return {"schema": _calibrate.SCHEMA, "key": _calibrate.machine(CPU, F64),
            "probe_seconds": 0.2, "throughput": _calibrate.encode(_fake(2.0))}  # fmt: skip


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
    Bad("another schema", _edited(lambda d: d.update(schema=_calibrate.SCHEMA + 1))),
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
    Bad("huge", b" " * (_calibrate.MAX_FILE_BYTES + 1) + json.dumps(_valid_document()).encode()),
]


@pytest.mark.parametrize("bad", BAD_FILES, ids=[b.name for b in BAD_FILES])
def test_a_corrupt_or_foreign_cache_file_is_ignored_and_rewritten(calibrating, counted, bad):
    path = _file()
    path.parent.mkdir(parents=True)
    path.write_bytes(bad.content)
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert counted == [(F64, CPU)]
    assert _calibrate.read(path, _calibrate.machine(CPU, F64)) == _fake()


def test_a_valid_cache_file_is_trusted(calibrating, counted):
    path = _file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_valid_document()))
    assert _calibrate.throughput(F64, CPU) == (_fake(2.0), "calibrated")
    assert counted == []


def test_an_unwritable_cache_directory_keeps_the_constants_in_memory(tmp_path, monkeypatch,
                                                                     counted):  # fmt: skip
    (tmp_path / "a file").write_text("in the way")
    monkeypatch.setenv("CONVOP_CALIBRATE", "1")
    monkeypatch.setenv("CONVOP_CACHE_DIR", str(tmp_path / "a file" / "cache"))
    monkeypatch.setattr(_calibrate, "_KNOWN", {})
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert counted == [(F64, CPU)]


def test_a_directory_in_place_of_the_cache_file_is_left_alone(calibrating, counted):
    _file().mkdir(parents=True)
    assert _calibrate.throughput(F64, CPU) == (_fake(), "calibrated")
    assert _file().is_dir()


# ---------------------------------------------------------------- threads
def test_the_probe_runs_once_for_many_threads(calibrating, monkeypatch):
    calls = []

    def slow_probe(dtype, device):
        calls.append(dtype)
        time.sleep(0.05)
        return _fake()

    monkeypatch.setattr(_calibrate, "probe", slow_probe)
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
    assert calls == [F32]
    assert results == [(_fake(), "calibrated")] * 8


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
