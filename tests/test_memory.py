"""The memory guard: available memory on every platform, limits, and its messages.

And each guard's boundary, at its call site: a build needing exactly the limit is made, one
byte more is refused (``needed > limit``, not ``>=``).
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
import torch

import convop
import convop.operator
from convop import _fft
from convop._shared import memory as _memory


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


# ---------------------------------------------------------------------- each guard's boundary
def _operator(**options) -> convop.ConvOperator:
    weight = torch.randn(
        3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    return convop.conv2d(weight, (2, 7, 6), padding=1, padding_mode="reflect", **options)


def _assert_limit_is_inclusive(build) -> None:
    """``build(max_bytes)`` refused at 0 names the size it needs; exactly that is built,
    one byte less is refused."""
    with pytest.raises(MemoryError, match=r"pass max_bytes=\d+ or more") as refused:
        build(0)
    needed = int(re.search(r"pass max_bytes=(\d+) or more", str(refused.value))[1])
    assert needed > 0
    build(needed)
    with pytest.raises(MemoryError, match=rf"more than the limit .*max_bytes={needed} or more"):
        build(needed - 1)


BUILDS = {
    "todense": lambda op, limit: op.todense(max_bytes=limit),
    "to_dense": lambda op, limit: op.to_dense(max_bytes=limit),
    "tosparse-csr": lambda op, limit: op.tosparse("csr", max_bytes=limit),
    "tosparse-coo": lambda op, limit: op.tosparse("coo", max_bytes=limit),  # one conversion
    "adjoint-tosparse-csr": lambda op, limit: op.H.tosparse("csr", max_bytes=limit),
    "to_sparse_csr": lambda op, limit: op.to_sparse_csr(max_bytes=limit),
}


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_explicit_matrix_guards_allow_exactly_their_limit(build):
    op = _operator()
    _assert_limit_is_inclusive(lambda limit: build(op, limit))


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_file_loading_guards_allow_exactly_their_limit(tmp_path, suffix):
    path = convop.save_matrix(tmp_path / f"A{suffix}", _operator())
    _assert_limit_is_inclusive(lambda limit: convop.load_matrix(path, max_bytes=limit))


def _record_guard(monkeypatch, module) -> list:
    """``(needed, fraction)`` of every ``check_memory`` call made from ``module``."""
    asked = []

    def spy(needed, max_bytes, what, device=None, **options):
        asked.append((needed, options.get("fraction", _memory.DEFAULT_MEMORY_FRACTION)))
        return _memory.check_memory(needed, max_bytes, what, device, **options)

    monkeypatch.setattr(module, "check_memory", spy)
    return asked


def _available(monkeypatch, free: int) -> None:
    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: free,))


def test_fft_spectrum_guard_allows_exactly_half_the_memory_available(monkeypatch):
    asked = _record_guard(monkeypatch, _fft)
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    _operator(method="fft").apply(x)
    [(needed, fraction)] = asked
    assert fraction == 0.5
    _available(monkeypatch, 2 * needed)  # a limit of exactly ``needed``
    _operator(method="fft").apply(x)
    _available(monkeypatch, 2 * needed - 1)
    with pytest.raises(MemoryError, match=r"the FFT spectrum .* more than the limit"):
        _operator(method="fft").apply(x)


def test_fft_product_guard_allows_exactly_the_memory_available(monkeypatch):
    monkeypatch.setattr(convop.operator, "PRODUCT_GUARD_BYTES", 0)  # guard every product
    asked = _record_guard(monkeypatch, convop.operator)
    op = _operator(method="fft")
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    expected = op.apply(x)  # the spectrum is cached from here on
    [(needed, fraction)] = asked
    assert fraction == 1.0
    _available(monkeypatch, needed)
    np.testing.assert_array_equal(op.apply(x), expected)
    _available(monkeypatch, needed - 1)
    with pytest.raises(MemoryError, match=r"a product of the conv2d .* more than the limit"):
        op.apply(x)
