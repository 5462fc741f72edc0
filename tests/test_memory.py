"""The memory guard: available memory on every platform, limits, and its messages."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import convop
from convop import _memory


def test_available_memory_is_read_from_psutil():
    psutil = pytest.importorskip("psutil")
    free = _memory.available_memory()
    assert 0 < free <= psutil.virtual_memory().total


def test_without_psutil_linux_meminfo_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import raises ImportError
    assert _memory._psutil_available() is None
    if os.path.exists("/proc/meminfo"):
        assert _memory.available_memory() == _memory._meminfo_available() > 0


def test_sysconf_without_available_pages_is_no_crash(monkeypatch):
    # macOS has no SC_AVPHYS_PAGES (ValueError), Windows has no os.sysconf (AttributeError).
    def missing(name):
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "sysconf", missing)
    assert _memory._sysconf_available() is None
    monkeypatch.delattr(os, "sysconf")
    assert _memory._sysconf_available() is None


def test_unknown_memory_falls_back_to_a_fixed_limit_and_says_so(monkeypatch):
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: None, lambda: None))
    assert _memory.available_memory() is None
    op = convop.conv1d(torch.ones(1, 1, 3), (1, 10**5))
    with pytest.raises(MemoryError, match=r"more than the limit of 2\.0 GiB \(a default of 2\.0 "
                                          r"GiB, as the memory available could not be "
                                          r"determined on this platform\)"):  # fmt: skip
        op.todense()


def test_first_source_that_answers_is_used(monkeypatch):
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: None, lambda: 3 * 2**30))
    assert _memory.available_memory() == 3 * 2**30
    with pytest.raises(MemoryError, match=r"limit of 1\.5 GiB \(half the 3\.0 GiB available"):
        _memory.check_memory(2 * 2**30, None, "a test")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GB"])
def test_max_bytes_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match=r"max_bytes must be a non-negative int or None"):
        _memory.check_memory(1, bad, "a test")


def test_hint_replaces_the_max_bytes_advice():
    with pytest.raises(MemoryError, match=r"needs 2 B, more than the limit of 1 B \(max_bytes\); "
                                          r"use less$"):  # fmt: skip
        _memory.check_memory(2, 1, "a test", hint="use less")


def test_memory_sizes_print_in_human_units():
    sizes = [_memory.format_bytes(n) for n in (512, 1536, 3 * 2**30)]
    assert sizes == ["512 B", "1.5 KiB", "3.0 GiB"]
