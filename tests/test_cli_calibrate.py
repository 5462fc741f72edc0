"""``convop calibrate``: :func:`convop.calibrate` per precision, its cache file, its failures.

The probe is replaced (by the built-in constants with a second more per call, so that the
estimates visibly change) except in one real run; cache files go to the test's own
directory, never to the user's cache.
"""

from __future__ import annotations

import re

import pytest
import torch

import convop
from convop._auto import calibrate as _calibrate
from convop._auto import probe as _probe
from convop.cli import _calibrate as command

from .cli_helpers import calibrating, run, slow_machine

CPU = torch.device("cpu")
F32, F64 = torch.float32, torch.float64


def _typical(dtype: torch.dtype) -> list[str]:
    """``op.estimate()`` of the products the command shows, as it prints them."""
    return [
        str(convop.conv2d(torch.zeros(weight, dtype=dtype), shape, padding=padding).estimate())
        for _, weight, shape, padding in command.TYPICAL
    ]


def _files(cache) -> list[str]:
    return sorted(path.name for path in cache.iterdir())


def test_calibrate_prints_the_file_and_the_calibrated_estimates(tmp_path, capsys, monkeypatch):
    calls = calibrating(monkeypatch, tmp_path / "cache")
    before = _typical(F64)
    code, out, err = run(capsys, "calibrate", "--dtype", "float64")
    assert (code, err) == (0, "")
    assert calls == [(F64, CPU)]
    (name,) = _files(tmp_path / "cache")
    assert name.startswith("calibration-cpu-float64-")
    lines = out.splitlines()
    assert lines[0] == f"calibrating cpu (torch's {torch.get_num_threads()} threads): float64"
    assert re.fullmatch(rf"float64: measured in [\d.e-]+ s, written to .*cache/{name}", lines[1])
    after = _typical(F64)  # now by the calibrated constants: a second per call more
    assert all(now.endswith(", calibrated") and now != was for now, was in zip(after, before))
    shown = [f"  {what}: {now} (before: {was})"
             for (what, *_), now, was in zip(command.TYPICAL, after, before)]  # fmt: skip
    assert lines[2:] == shown


@pytest.mark.parametrize(
    ("option", "measured"),
    [((), [F32, F64]), (("--dtype", "complex128"), [F64]), (("--dtype", "complex64"), [F32])],
    ids=["default both", "complex128 is float64's", "complex64 is float32's"],
)
def test_calibrate_measures_each_precision_asked_for(tmp_path, capsys, monkeypatch, option,
                                                    measured):  # fmt: skip
    calls = calibrating(monkeypatch, tmp_path / "cache")
    code, out, _ = run(capsys, "calibrate", *option)
    names = [str(dtype).removeprefix("torch.") for dtype in measured]
    assert code == 0
    assert calls == [(dtype, CPU) for dtype in measured]
    assert [name.split("-")[2] for name in _files(tmp_path / "cache")] == names
    assert re.findall(r"^(\w+): measured in", out, re.MULTILINE) == names


def test_a_busy_machine_ends_in_exit_status_1_keeping_what_was_measured(tmp_path, capsys,
                                                                        monkeypatch):  # fmt: skip
    """float32 is measured and kept; float64's probe finds the machine busy: one line, 1."""

    def busy_for_float64(dtype, device):
        if dtype == F64:
            raise _probe.Busy("the probe ran 1.00 s on 0.40 of 2 CPUs")
        return slow_machine(dtype, device)

    calibrating(monkeypatch, tmp_path / "cache", busy_for_float64)
    code, out, err = run(capsys, "calibrate")
    assert code == 1
    assert "float32: measured in" in out
    assert "float64: measured" not in out
    assert err == (
        "convop: error: calibrating cpu failed: the probe ran 1.00 s on 0.40 of 2 CPUs: the "
        "machine was too busy to measure, so the float64 constants were neither kept nor "
        "written; calibrate again when it is quieter\n"
    )
    assert [name.split("-")[2] for name in _files(tmp_path / "cache")] == ["float32"]


def test_an_unwritable_cache_directory_is_one_error_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    calibrating(monkeypatch, tmp_path / "file" / "cache")
    code, out, err = run(capsys, "calibrate", "--dtype", "float32")
    assert code == 2
    assert "measured in" not in out
    assert re.fullmatch(
        r"convop: error: the calibration could not be written to .*file/cache/calibration-cpu-"
        r"float32-\w+\.json: .*Not a directory.*; its constants are kept for this process only "
        r"\(which ends now: nothing is kept\); set CONVOP_CACHE_DIR to a directory you can "
        r"write\n",
        err,
    )


def test_calibrate_says_when_convop_calibrate_0_ignores_it(tmp_path, capsys, monkeypatch):
    calibrating(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv("CONVOP_CALIBRATE", "0")
    code, out, err = run(capsys, "calibrate", "--dtype", "float32")
    assert code == 0
    assert _files(tmp_path / "cache")  # written all the same, for later
    assert err == (
        "convop: warning: CONVOP_CALIBRATE=0: method='auto' ignores calibrations until it is "
        "unset or 1; the file is kept for then\n"
    )
    assert out.count(", built-in (before: est.") == len(command.TYPICAL)


def test_calibrate_refuses_a_gpu_torch_does_not_see(capsys):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, out, err = run(capsys, "calibrate", "--device", f"cuda:{count}")
    assert (code, out) == (2, "")
    assert err == (
        f"convop: error: --device cuda:{count}: torch sees {count} CUDA GPU"
        f"{'s' * (count != 1)} here\n"
    )


def test_one_real_calibration_is_read_back_by_a_new_process(tmp_path, capsys, monkeypatch):
    """The real probe (about half a second), not stopped by other tests' load on the CPUs."""
    calls = calibrating(monkeypatch, tmp_path / "cache", _probe.probe)  # the real one
    monkeypatch.setattr(_probe, "disturbed", lambda *args: False)
    code, out, err = run(capsys, "calibrate", "--dtype", "float32")
    assert (code, err, calls) == (0, "", [(F32, CPU)])
    assert out.count(", calibrated (before: est.") == len(command.TYPICAL)
    _calibrate._KNOWN.clear()  # as a new process: the file is read
    assert all(now.endswith(", cache file") for now in _typical(F32))


def test_a_bad_convop_calibrate_switch_is_refused_before_probing(tmp_path, capsys, monkeypatch):
    calls = calibrating(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv("CONVOP_CALIBRATE", "sometimes")
    code, out, err = run(capsys, "calibrate")
    assert (code, out, calls) == (2, "", [])
    assert err == (
        "convop: error: CONVOP_CALIBRATE must be 0 or 1 (or false/true, no/yes, off/on), got "
        "'sometimes'\n"
    )
    assert not (tmp_path / "cache").exists()
