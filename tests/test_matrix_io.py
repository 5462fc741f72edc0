"""Saving and loading materialised matrices: exact round trips, atomic writes, and readers that
refuse every corrupt file with one exception type (scipy's own readers are the oracle on valid
files only)."""

from __future__ import annotations

import collections
import errno
import io
import itertools
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch

import convop
from convop._io import mtx as _mtx


def _operator(dtype: torch.dtype) -> convop.ConvOperator:
    weight = torch.randn(3, 2, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return convop.conv2d(weight, (2, 7, 6), stride=2, padding=1, padding_mode="reflect")


def _small_matrix() -> sp.csr_array:
    """5 x 4 with 20 nonzeros whose values print in exponent form (1.2345e-07, ...)."""
    values = 1.2345e-07 * np.arange(1, 21).reshape(5, 4) ** 3  # (5, 4)
    values[1, 2] = -3.5e12
    return sp.csr_array(values)


def _refused(path: Path, kind: str = "Matrix Market") -> str:
    """The start of every corrupt-file message for ``path``, as a regular expression."""
    return rf"^{re.escape(str(path))}: not a valid {re.escape(kind)} file: "


def _same(loaded: sp.csr_array, expected: sp.sparray | np.ndarray) -> None:
    expected = sp.csr_array(expected)
    expected.sum_duplicates()
    assert isinstance(loaded, sp.csr_array)
    assert loaded.has_canonical_format
    assert loaded.shape == expected.shape
    assert loaded.dtype == expected.dtype
    assert loaded.nnz == expected.nnz
    np.testing.assert_array_equal(loaded.toarray(), expected.toarray())


def _forbidden(*args, **kwargs):
    raise AssertionError("scipy.io.mmread must never see an untrusted file")


# ====================================================================== round trips
@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
def test_operator_round_trips_exactly(tmp_path, suffix, dtype):
    op = _operator(dtype)
    path = convop.save_matrix(tmp_path / f"conv{suffix}", op)
    loaded = convop.load_matrix(path)
    assert isinstance(loaded, sp.csr_array)
    assert loaded.shape == op.shape
    assert loaded.dtype == op.dtype
    assert loaded.nnz == op.tosparse().nnz
    np.testing.assert_array_equal(loaded.toarray(), op.todense())


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_sparse_and_dense_matrices_save_too(tmp_path, suffix):
    dense = _operator(torch.float64).todense()
    for index, matrix in enumerate([sp.csc_array(dense), sp.coo_matrix(dense), dense]):
        loaded = convop.load_matrix(
            convop.save_matrix(str(tmp_path / f"m{index}{suffix}"), matrix)
        )
        np.testing.assert_array_equal(loaded.toarray(), dense)


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_exponents_nan_inf_and_explicit_zeros_round_trip(tmp_path, suffix):
    matrix = _small_matrix()
    matrix.data[[0, 1, 2, 3]] = [np.nan, np.inf, -np.inf, 0.0]  # an explicit zero stays stored
    _same(convop.load_matrix(convop.save_matrix(tmp_path / f"B{suffix}", matrix)), matrix)


@pytest.mark.parametrize("suffix", [".NPZ", ".Mtx"])
def test_upper_case_suffix_writes_exactly_the_path_given(tmp_path, suffix):
    path = tmp_path / f"B{suffix}"
    assert convop.save_matrix(path, _small_matrix()) == path
    assert sorted(tmp_path.iterdir()) == [path]
    _same(convop.load_matrix(path), _small_matrix())


def test_matrix_market_file_names_the_operator(tmp_path):
    op = _operator(torch.float64)
    path = convop.save_matrix(tmp_path / "conv.mtx", op)
    assert repr(op) in path.read_text()
    assert scipy.io.mminfo(path)[:3] == (*op.shape, op.tosparse().nnz)


def test_symmetric_matrix_is_written_in_general_storage(tmp_path):
    matrix = sp.csr_array(np.array([[1.0, 2.0], [2.0, 0.0]]))
    path = convop.save_matrix(tmp_path / "B.mtx", matrix)
    assert scipy.io.mminfo(path)[-1] == "general"
    _same(convop.load_matrix(path), matrix)


def test_unknown_suffix_and_non_matrix_are_rejected(tmp_path):
    op = _operator(torch.float64)
    with pytest.raises(ValueError, match=r"path must end in one of \.npz, \.mtx, got .*conv\.txt"):
        convop.save_matrix(tmp_path / "conv.txt", op)
    with pytest.raises(ValueError, match=r"path must end in one of"):
        convop.load_matrix(tmp_path / "conv.csv")
    with pytest.raises(TypeError, match=r"matrix must be a ConvOperator.*got list"):
        convop.save_matrix(tmp_path / "conv.npz", [[1.0]])
    with pytest.raises(TypeError, match=r"got ndarray with 3 dimensions"):
        convop.save_matrix(tmp_path / "conv.npz", np.zeros((2, 2, 2)))


def test_memory_guard_applies_when_saving_an_operator(tmp_path):
    with pytest.raises(MemoryError, match=r"tosparse\('csr'\)"):
        convop.save_matrix(tmp_path / "conv.npz", _operator(torch.float64), max_bytes=1)


# ====================================================================== atomic writes
class WriteFailure(NamedTuple):
    id: str
    target: Callable[[Path], Path]  # from a fresh path, a target that cannot be written
    reason: str  # regular expression


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


WRITE_FAILURES = [
    WriteFailure(
        "missing-directory", lambda p: p.parent / "missing" / p.name, r"directory .*missing does"
    ),
    WriteFailure("target-is-a-directory", _directory, r"it is a directory"),
    WriteFailure(
        "parent-is-a-file", lambda p: _file(p.parent / "file") / p.name, r".*file is not a dir"
    ),
    WriteFailure("target-is-a-pipe", _fifo, r"it exists and is not a regular file"),
]


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
@pytest.mark.parametrize("failure", WRITE_FAILURES, ids=[f.id for f in WRITE_FAILURES])
def test_write_failure_is_an_os_error_naming_the_target(tmp_path, failure, suffix):
    target = failure.target(tmp_path / f"B{suffix}")
    match = rf"cannot write {re.escape(str(target))}: {failure.reason}"
    with pytest.raises(OSError, match=match):
        convop.save_matrix(target, _small_matrix())
    assert list(tmp_path.rglob("*.tmp")) == []


@pytest.fixture
def readonly_directory(tmp_path):
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o555)
    if os.access(directory, os.W_OK):
        directory.chmod(0o755)
        pytest.skip("permissions are not enforced for this user (root)")
    yield directory
    directory.chmod(0o755)


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_unwritable_directory_is_an_os_error(readonly_directory, suffix):
    target = readonly_directory / f"B{suffix}"
    with pytest.raises(PermissionError, match=r"no permission to write in directory .*readonly"):
        convop.save_matrix(target, _small_matrix())
    assert list(readonly_directory.iterdir()) == []


def _permission_denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def test_permission_denied_names_the_directory(tmp_path, monkeypatch):
    # the same failure as above, simulated, so that it is also checked when running as root
    monkeypatch.setattr(tempfile, "mkstemp", _permission_denied)
    match = (
        rf"cannot write .*B\.mtx: no permission to write in directory {re.escape(str(tmp_path))}"
    )
    with pytest.raises(PermissionError, match=match):
        convop.save_matrix(tmp_path / "B.mtx", _small_matrix())


def _disk_full(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_disk_full_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"B{suffix}"
    path.write_bytes(b"the old file")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match=rf"cannot write .*B{suffix}: no space left on the device"):
        convop.save_matrix(path, _small_matrix())
    assert path.read_bytes() == b"the old file"
    assert list(tmp_path.iterdir()) == [path]


def _dies_mid_write(file, *args, **kwargs) -> None:
    file.write(b"%%MatrixMarket matrix coordinate real general\n5 4 20\n1 1")
    raise RuntimeError("the writer died")


def test_writer_dying_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "B.mtx"
    path.write_bytes(b"the old file")
    monkeypatch.setattr(scipy.io, "mmwrite", _dies_mid_write)
    with pytest.raises(RuntimeError, match="the writer died"):
        convop.save_matrix(path, _small_matrix())
    assert path.read_bytes() == b"the old file"
    assert list(tmp_path.iterdir()) == [path]


def test_short_file_on_disk_is_detected(tmp_path, monkeypatch):
    real_fstat = os.fstat

    def short(fd: int) -> os.stat_result:
        status = real_fstat(fd)
        return os.stat_result((*status[:6], status.st_size - 1, *status[7:10]))

    monkeypatch.setattr(os, "fstat", short)
    with pytest.raises(OSError, match=r"cannot write .*B\.npz: the file holds \d+ bytes, \d+ wer"):
        convop.save_matrix(tmp_path / "B.npz", _small_matrix())
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_new_file_gets_the_mode_open_would_give(tmp_path, umask_027, suffix):
    path = convop.save_matrix(tmp_path / f"B{suffix}", _small_matrix())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_overwritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / "B.mtx"
    path.write_bytes(b"the old file")
    path.chmod(0o604)
    convop.save_matrix(path, _small_matrix())
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


def test_writing_through_a_symbolic_link_keeps_the_link(tmp_path):
    real = _directory(tmp_path / "data") / "real.mtx"
    real.write_bytes(b"the old file")
    link = tmp_path / "B.mtx"
    link.symlink_to(real)
    assert convop.save_matrix(link, _small_matrix()) == link
    assert link.is_symlink()
    _same(convop.load_matrix(real), _small_matrix())


def test_matrix_is_validated_before_the_file_system_is_touched(tmp_path):
    target = tmp_path / "missing" / "conv.npz"
    with pytest.raises(TypeError, match=r"matrix must be a ConvOperator"):
        convop.save_matrix(target, [[1.0]])
    with pytest.raises(MemoryError, match=r"tosparse\('csr'\)"):
        convop.save_matrix(target, _operator(torch.float64), max_bytes=1)


# ====================================================================== Matrix Market oracle
SYMMETRIC = {
    "general": lambda a: a,
    "symmetric": lambda a: a + a.T,
    "skew-symmetric": lambda a: a - a.T,
    "hermitian": lambda a: a + a.conj().T,
}
FIELDS = ("real", "integer", "complex", "pattern")


def _allowed(fmt: str, field: str, symmetry: str) -> bool:
    return not (
        (fmt == "array" and field == "pattern")
        or (symmetry == "hermitian" and field != "complex")
        or (symmetry == "skew-symmetric" and field == "pattern")
    )


COMBINATIONS = [
    combination
    for combination in itertools.product(("coordinate", "array"), FIELDS, SYMMETRIC)
    if _allowed(*combination)
]


def _oracle_matrix(field: str, symmetry: str) -> np.ndarray:
    """6 x 6, about half zeros, with the field's values and the symmetry's structure."""
    rng = np.random.default_rng(1)
    a = rng.integers(-9, 10, (6, 6)) * (rng.random((6, 6)) < 0.4)  # (6, 6)
    values = {
        "real": a / 7,
        "integer": a,
        "complex": a / 3 + 1j * np.roll(a, 1, axis=0),
        "pattern": a.astype(np.float64),
    }[field]
    return SYMMETRIC[symmetry](values)


@pytest.mark.parametrize(("fmt", "field", "symmetry"), COMBINATIONS)
def test_matrix_market_files_load_as_scipy_reads_them(tmp_path, fmt, field, symmetry):
    matrix = _oracle_matrix(field, symmetry)
    path = tmp_path / "B.mtx"
    written = matrix if fmt == "array" else sp.coo_array(matrix)
    scipy.io.mmwrite(path, written, field=field, symmetry=symmetry)
    assert scipy.io.mminfo(path)[3:] == (fmt, field, symmetry)
    _same(convop.load_matrix(path), scipy.io.mmread(path))


class Variant(NamedTuple):
    id: str
    text: str


PLAIN = "%%MatrixMarket matrix coordinate real general\n3 2 3\n1 1 1.5\n3 2 -2e-3\n2 1 0\n"
VARIANTS = [
    Variant(
        "case-and-double", PLAIN.replace("matrix coordinate real", "MATRIX Coordinate DOUBLE")
    ),
    Variant("comments-and-blank-lines", PLAIN.replace("\n3 2 3\n", "\n%c\n\n% c\n3 2 3\n\n")),
    Variant("windows-line-ends", PLAIN.replace("\n", "\r\n")),
    Variant("tabs-and-spaces", PLAIN.replace("1 1 1.5", " 1\t1   +1.50 \t")),
    Variant("entries-in-any-order", PLAIN.replace("1 1 1.5\n3 2 -2e-3", "3 2 -2e-3\n1 1 1.5")),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_layout_variants_of_the_format_load_alike(tmp_path, variant):
    plain, path = tmp_path / "plain.mtx", tmp_path / "B.mtx"
    plain.write_text(PLAIN)
    path.write_bytes(variant.text.encode())
    _same(convop.load_matrix(path), convop.load_matrix(plain))


def test_duplicate_entries_are_summed(tmp_path):
    path = tmp_path / "B.mtx"
    path.write_text(
        "%%MatrixMarket matrix coordinate integer general\n2 2 4\n2 2 5\n1 2 1\n2 2 -2\n1 1 4\n"
    )
    _same(convop.load_matrix(path), scipy.io.mmread(path))


def test_skew_symmetric_file_may_store_zeros_on_its_diagonal(tmp_path):
    # scipy.io.mmwrite writes them for a matrix with explicit diagonal zeros
    matrix = sp.coo_array((np.array([0.0, 2.0]), (np.array([1, 1]), np.array([1, 0]))), (3, 3))
    path = tmp_path / "B.mtx"
    scipy.io.mmwrite(path, matrix, symmetry="skew-symmetric")
    _same(convop.load_matrix(path), scipy.io.mmread(path))


@pytest.mark.parametrize("chunk_bytes", [7, 64])
def test_chunked_reading_matches_reading_at_once(tmp_path, monkeypatch, chunk_bytes):
    path = convop.save_matrix(tmp_path / "conv.mtx", _operator(torch.complex128))
    whole = convop.load_matrix(path)
    monkeypatch.setattr(_mtx, "CHUNK_BYTES", chunk_bytes)
    _same(convop.load_matrix(path), whole)


# ====================================================================== Matrix Market refused
class Malformed(NamedTuple):
    id: str
    text: str
    reason: str  # regular expression


HEAD = "%%MatrixMarket matrix coordinate real general\n"
# fmt: off
MALFORMED = [
    # the banner
    Malformed("empty",
              "",
              r"the file is empty"),
    Malformed("no-banner",
              "2 2 1\n1 1 1\n",
              r"line 1 must read '%%MatrixMarket matrix <form"),
    Malformed("short-banner",
              "%%MatrixMarket matrix coordinate real\n1 1 0\n",
              r"line 1 must"),
    Malformed("vector",
              HEAD.replace("matrix", "vector") + "1 0\n",
              r"unknown object 'vector'"),
    Malformed("format",
              HEAD.replace("coordinate", "sparse") + "1 1\n",
              r"unknown format 'spa"),
    Malformed("field",
              HEAD.replace("real", "float") + "1 1 0\n",
              r"unknown field 'float'"),
    Malformed("symmetry",
              HEAD.replace("general", "lower") + "1 1 0\n",
              r"unknown symmetry"),
    Malformed("array-pattern",
              "%%MatrixMarket matrix array pattern general\n1 1\n1\n",
              r"an 'array' file cannot have field 'pattern'"),
    Malformed("real-hermitian",
              HEAD.replace("general", "hermitian") + "1 1 0\n",
              r"a 'hermitian' matrix must be 'complex', got 'real'"),
    Malformed("pattern-skew",
              HEAD.replace("real general", "pattern skew-symmetric") + "1 1 0\n",
              r"a 'pattern' matrix cannot be 'skew-symmetric'"),
    Malformed("not-square",
              HEAD.replace("general", "symmetric") + "2 3 0\n",
              r"a symmetric matrix must be square, got 2 x 3"),
    # the size line
    Malformed("banner-only",
              HEAD,
              r"it ends before its size line \(the file may be truncated\)"),
    Malformed("comments-only",
              HEAD + "%\n\n",
              r"it ends before its size line"),
    Malformed("size-line-short",
              HEAD + "2 2\n",
              r"line 2: expected the size line 'rows colu"),
    Malformed("size-negative",
              HEAD + "%\n2 -2 1\n",
              r"line 3: expected the size line"),
    Malformed("size-float",
              HEAD + "2 2.0 1\n",
              r"line 2: expected the size line"),
    Malformed("size-huge",
              HEAD + "9007199254740993 1 0\n",
              r"line 2: sizes above 2\*\*53 are not suppo"),
    Malformed("size-no-newline",
              HEAD + "2 2 0",
              r"incomplete last line \(the file may be"),
    # the entries
    Malformed("last-line-no-newline",
              HEAD + "2 2 1\n1 1 1.5",
              r"incomplete last line"),
    Malformed("cut-exponent-no-newline",
              HEAD + "2 2 1\n1 1 1.5E",
              r"incomplete last line"),
    Malformed("too-few-entries",
              HEAD + "2 2 2\n1 1 1\n",
              r"found 1 entries, but the size line announces 2 \(the file may be trunc"),
    Malformed("too-many-entries",
              HEAD + "2 2 1\n1 1 1\n2 2 1\n",
              r"more entries than the 1 the size line announces"),
    Malformed("too-few-numbers",
              HEAD + "2 2 1\n1 1\n",
              r"line 3 holds 2 numbers, an entry has 3"),
    Malformed("too-many-numbers",
              HEAD + "2 2 1\n1 1 1 1\n",
              r"line 3 holds 4 numbers"),
    Malformed("row-zero",
              HEAD + "2 2 1\n0 1 1\n",
              r"entry 1: row index 0 is not an integer in"),
    Malformed("row-too-big",
              HEAD + "2 2 2\n1 1 1\n3 1 1\n",
              r"entry 2: row index 3 is not an"),
    Malformed("column-too-big",
              HEAD + "2 2 1\n1 3 1\n",
              r"entry 1: column index 3 is not an integer in 1\.\.2"),
    Malformed("fractional-index",
              HEAD + "2 2 1\n1.5 1 1\n",
              r"entry 1: row index 1\.5 is not an"),
    Malformed("nan-index",
              HEAD + "2 2 1\nnan 1 1\n",
              r"entry 1: row index nan is not an integer"),
    Malformed("comment-in-data",
              HEAD + "2 2 1\n% a b\n",
              r"line 3: not a number in '% a b'"),
    Malformed("nul-byte",
              HEAD + "2 2 1\n1 1 1\x00\n",
              r"line 3: unexpected byte 0x00"),
    Malformed("non-ascii",
              HEAD + "2 2 1\n1 1 1\u00e9\n",
              r"line 3: unexpected byte 0xc3"),
    # entries the field or the symmetry rules out
    Malformed("integer-fraction",
              HEAD.replace("real", "integer") + "2 2 1\n1 1 1.5\n",
              r"entry 1: 1\.5 is not an integer up to 2\*\*53"),
    Malformed("integer-too-large",
              HEAD.replace("real", "integer") + "1 1 1\n1 1 1e16\n",
              r"entry 1: 1e\+16 is not an integer up to 2\*\*53"),
    Malformed("symmetric-upper",
              HEAD.replace("general", "symmetric") + "2 2 1\n1 2 1\n",
              r"the entry at \(1, 2\) lies above the diagonal; symmetric storage is the lowe"),
    Malformed("skew-diagonal",
              HEAD.replace("general", "skew-symmetric") + "2 2 1\n2 2 1\n",
              r"the entry at \(2, 2\) is on the diagonal, so must be 0, got 1\.0"),
    Malformed("hermitian-diagonal",
              HEAD.replace("real general", "complex hermitian") + "1 1 1\n1 1 1 2\n",
              r"the entry at \(1, 1\) is on the diagonal, so must be real"),
    Malformed("array-hermitian-diagonal",
              "%%MatrixMarket matrix array complex hermitian\n1 1\n1 2\n",
              r"the entry at \(1, 1\) is on the diagonal, so must be real"),
    Malformed("array-too-few",
              "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n",
              r"found 3 entries, but the size line announces 4"),
    Malformed("array-two-per-line",
              "%%MatrixMarket matrix array real general\n1 2\n1 2\n",
              r"line 3 holds 2 numbers, an entry has 1"),
]
# fmt: on


@pytest.mark.parametrize("case", MALFORMED, ids=[case.id for case in MALFORMED])
def test_malformed_matrix_market_file_is_a_value_error(tmp_path, case):
    path = tmp_path / "B.mtx"
    path.write_bytes(case.text.encode())
    with pytest.raises(ValueError, match=_refused(path) + case.reason):
        convop.load_matrix(path)


@pytest.mark.parametrize("number", ["1.5E", "1.5E-", "1..2", "1-2", "junk", "1,5", "0x1p3", "1_0"])
def test_number_cut_short_or_malformed_is_refused(tmp_path, number):
    # scipy.io.mmread reads "1.5E" as 1.5 and crashes the process on "1.5E-" at the end
    path = tmp_path / "B.mtx"
    path.write_text(f"{HEAD}2 2 1\n1 1 {number}\n")
    with pytest.raises(
        ValueError, match=_refused(path) + rf"line 3: not a number in '1 1 {re.escape(number)}'"
    ):
        convop.load_matrix(path)


@pytest.mark.parametrize("chunk_bytes", [7, 64, _mtx.CHUNK_BYTES])
def test_bad_number_deep_in_the_file_is_reported_on_its_line(tmp_path, monkeypatch, chunk_bytes):
    lines = [f"{i % 9 + 1} {i % 7 + 1} {i}.25e-3" for i in range(300)]
    lines[211] = "4 4 1.5E"
    path = tmp_path / "B.mtx"
    path.write_text(HEAD + "%\n\n9 7 300\n" + "\n".join(lines) + "\n")
    monkeypatch.setattr(_mtx, "CHUNK_BYTES", chunk_bytes)
    with pytest.raises(
        ValueError, match=_refused(path) + r"line 216: not a number in '4 4 1\.5E'"
    ):
        convop.load_matrix(path)


class Overlong(NamedTuple):
    id: str
    text: str
    chunk_bytes: int
    line: int


OVERLONG = [
    Overlong("comment", f"{HEAD}%{'c' * 70}\n1 1 0\n", 1 << 20, 2),
    Overlong("data-in-one-chunk", f"{HEAD}1 1 1\n1{' ' * 70}1 1\n", 1 << 20, 3),
    Overlong("data-across-chunks", f"{HEAD}1 1 1\n1{' ' * 70}1 1\n", 8, 3),
]


@pytest.mark.parametrize("case", OVERLONG, ids=[case.id for case in OVERLONG])
def test_overlong_line_is_refused(tmp_path, monkeypatch, case):
    monkeypatch.setattr(_mtx, "MAX_LINE_BYTES", 64)
    monkeypatch.setattr(_mtx, "CHUNK_BYTES", case.chunk_bytes)
    path = tmp_path / "B.mtx"
    path.write_text(case.text)
    with pytest.raises(
        ValueError, match=_refused(path) + rf"line {case.line} is longer than 64 B"
    ):
        convop.load_matrix(path)


def test_every_truncation_of_a_matrix_market_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(scipy.io, "mmread", _forbidden)
    whole = convop.save_matrix(tmp_path / "whole.mtx", _small_matrix()).read_bytes()
    assert b"e-7\n" in whole.lower()
    path = tmp_path / "B.mtx"
    for end in range(len(whole)):
        path.write_bytes(whole[:end])
        with pytest.raises(ValueError, match=_refused(path)):
            convop.load_matrix(path)


@pytest.mark.parametrize("max_bytes", [None, 10**6])
def test_dense_header_claiming_80_gb_is_refused_by_the_memory_guard(tmp_path, max_bytes):
    path = tmp_path / "B.mtx"
    path.write_text("%%MatrixMarket matrix array real general\n%\n100000 100000\n")
    assert path.stat().st_size == 57
    with pytest.raises(MemoryError, match=r"load_matrix\('.*B\.mtx'\) needs \d+\.\d [GT]iB"):
        convop.load_matrix(path, max_bytes=max_bytes)


def test_memory_guard_counts_the_data_the_header_announces(tmp_path):
    path = convop.save_matrix(tmp_path / "conv.mtx", _operator(torch.float64))
    with pytest.raises(MemoryError, match=r"pass max_bytes=\d+ or more"):
        convop.load_matrix(path, max_bytes=10_000)
    _same(convop.load_matrix(path, max_bytes=10**8), _operator(torch.float64).tosparse())


# ====================================================================== .npz refused
def _npz_arrays(**changes) -> dict[str, np.ndarray]:
    """A valid CSR [[1, 0], [0, 2]] as save_npz stores it, with ``changes`` (None drops)."""
    arrays = {
        "data": np.array([1.0, 2.0]),
        "indices": np.array([0, 1], dtype=np.int32),
        "indptr": np.array([0, 1, 2], dtype=np.int32),
        "format": np.array(b"csr"),
        "shape": np.array([2, 2]),
    }
    arrays.update(changes)
    return {name: array for name, array in arrays.items() if array is not None}


class Trap:
    """Unpickling a Trap records it: loading an .npz must never unpickle."""

    sprung: list[int] = []  # noqa: RUF012

    def __reduce__(self):
        return (Trap.sprung.append, (1,))


class NpzCase(NamedTuple):
    id: str
    arrays: dict[str, np.ndarray]
    reason: str  # regular expression


def _coo_arrays(**changes) -> dict[str, np.ndarray]:
    """The arrays of :func:`_npz_arrays` in the COO layout (no CSR index arrays)."""
    return _npz_arrays(format=np.array(b"coo"), indices=None, indptr=None, **changes)


# fmt: off
MALFORMED_NPZ = [
    NpzCase("no-indices", _npz_arrays(indices=None), r"it has no array 'indices'"),
    NpzCase("dia", _npz_arrays(format=np.array(b"dia")), r"unsupported sparse format 'dia'"),
    NpzCase("format-number", _npz_arrays(format=np.array(3)), r"'format' must be a string"),
    NpzCase("shape-3-d", _npz_arrays(shape=np.array([2, 2, 1])), r"'shape' must be two non-ne"),
    NpzCase("shape-negative", _npz_arrays(shape=np.array([2, -2])), r"'shape' must be two"),
    NpzCase("shape-float", _npz_arrays(shape=np.array([2.0, 2.0])), r"'shape' must be two"),
    NpzCase("indices-float", _npz_arrays(indices=np.array([0.0, 1.0])), r"'indices' must be 1"),
    NpzCase("index-too-big", _npz_arrays(indices=np.array([0, 2])),
            r"indices\[1\] = 2 is not in 0\.\.1"),
    NpzCase("index-negative", _npz_arrays(indices=np.array([-1, 1])), r"indices\[0\] = -1"),
    NpzCase("indptr-short-of-data", _npz_arrays(indptr=np.array([0, 1, 1])),
            r"'indptr' .* does not match shape \(2, 2\) and 2 indices, 2 values"),
    NpzCase("indptr-not-from-0", _npz_arrays(indptr=np.array([1, 1, 2])), r"'indptr' .* does "),
    NpzCase("indptr-wrong-length", _npz_arrays(indptr=np.array([0, 2])), r"'indptr' .* does "),
    NpzCase("indptr-decreasing",
            _npz_arrays(shape=np.array([3, 2]), indptr=np.array([0, 2, 1, 2])),
            r"'indptr' decreases after entry 1"),
    NpzCase("data-2-d", _npz_arrays(data=np.ones((2, 1))), r"'data' must be 1-d numbers"),
    NpzCase("data-text", _npz_arrays(data=np.array(["a", "b"])), r"'data' must be 1-d numbers"),
    NpzCase("data-float16", _npz_arrays(data=np.float16([1, 2])), r"'data' must be 1-d numb"),
    NpzCase("data-pickled", _npz_arrays(data=np.array([Trap(), Trap()])),
            r"array 'data' holds Python objects, which are never unpickled"),
    NpzCase("coo-row-too-big", _coo_arrays(row=np.array([0, 2]), col=np.array([0, 1])),
            r"row\[1\] = 2 is not in 0\.\.1"),
    NpzCase("coo-lengths", _coo_arrays(row=np.array([0]), col=np.array([0, 1])),
            r"'row', 'col', 'data' differ in length"),
    NpzCase("coo-coords-3-d", _coo_arrays(coords=np.zeros((3, 2), dtype=int)),
            r"'coords' must have shape \(2, nnz\)"),
]
# fmt: on


@pytest.mark.parametrize("case", MALFORMED_NPZ, ids=[case.id for case in MALFORMED_NPZ])
def test_malformed_npz_is_a_value_error(tmp_path, case):
    path = tmp_path / "B.npz"
    np.savez(path, **case.arrays, allow_pickle=True)
    with pytest.raises(ValueError, match=_refused(path, "scipy sparse .npz") + case.reason):
        convop.load_matrix(path)
    assert Trap.sprung == []


@pytest.mark.parametrize(
    "matrix",
    [sp.csc_array(np.eye(3)), sp.coo_array(np.eye(3)), sp.coo_matrix(np.eye(3))],
    ids=["csc", "coo", "coo-matrix"],
)
def test_npz_written_by_scipy_loads(tmp_path, matrix):
    path = tmp_path / "B.npz"
    sp.save_npz(path, matrix)
    _same(convop.load_matrix(path), sp.load_npz(path))


def test_npz_in_the_n_d_coo_layout_loads(tmp_path):
    path = tmp_path / "B.npz"
    coords = np.array([[0, 1, 1], [1, 0, 0]])  # (2, nnz), a duplicate at (1, 0)
    np.savez(
        path,
        **_npz_arrays(
            format=np.array(b"coo"),
            data=np.array([1.0, 2.0, 3.0]),
            indices=None,
            indptr=None,
            coords=coords,
        ),
    )
    _same(convop.load_matrix(path), np.array([[0.0, 1.0], [5.0, 0.0]]))


def test_file_that_is_not_a_zip_is_a_value_error(tmp_path):
    path = tmp_path / "B.npz"
    path.write_bytes(b"%%MatrixMarket matrix coordinate real general\n1 1 0\n")
    with pytest.raises(ValueError, match=_refused(path, "scipy sparse .npz") + "BadZipFile"):
        convop.load_matrix(path)


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    sp.save_npz(buffer, _small_matrix())
    return buffer.getvalue()


def test_every_truncation_of_an_npz_is_refused(tmp_path):
    whole, path = _npz_bytes(), tmp_path / "B.npz"
    for end in range(len(whole)):
        path.write_bytes(whole[:end])
        with pytest.raises(ValueError, match=_refused(path, "scipy sparse .npz")):
            convop.load_matrix(path)


def _outcome(path: Path) -> str:
    """'refused' (a ValueError naming the file) or 'identical' (the small matrix, exactly)."""
    try:
        loaded = convop.load_matrix(path)
    except ValueError as error:
        named = str(error).startswith(f"{path}: not a valid scipy sparse .npz file: ")
        return "refused" if named else f"refused without naming the file: {error}"
    _same(loaded, _small_matrix())
    return "identical"


def test_byte_flips_in_an_npz_are_refused_or_harmless(tmp_path):
    whole, path = _npz_bytes(), tmp_path / "B.npz"
    outcomes = collections.Counter()
    for at, mask in itertools.product(range(0, len(whole), 3), [0x01, 0xFF]):
        flipped = bytearray(whole)
        flipped[at] ^= mask
        path.write_bytes(flipped)
        outcomes[_outcome(path)] += 1
    assert set(outcomes) == {"refused", "identical"}, outcomes


def test_memory_guard_applies_when_loading_an_npz(tmp_path):
    path = convop.save_matrix(tmp_path / "conv.npz", _operator(torch.float64))
    with pytest.raises(MemoryError, match=r"load_matrix\('.*conv\.npz'\) needs"):
        convop.load_matrix(path, max_bytes=1000)


# ====================================================================== I/O errors and arguments
@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_unreadable_file_stays_an_os_error(tmp_path, suffix):
    with pytest.raises(FileNotFoundError):
        convop.load_matrix(tmp_path / f"missing{suffix}")
    with pytest.raises(IsADirectoryError):
        convop.load_matrix(_directory(tmp_path / f"B{suffix}"))


@pytest.mark.parametrize("max_bytes", [-1, 1.5, True, "1"])
def test_invalid_max_bytes_is_refused_before_reading(tmp_path, max_bytes):
    with pytest.raises(ValueError, match=r"max_bytes must be a non-negative int or None"):
        convop.load_matrix(tmp_path / "missing.mtx", max_bytes=max_bytes)
