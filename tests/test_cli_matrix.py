"""``convop matrix``: files equal to ``op.tosparse()``; module files that would run code are
refused unrun."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import convop
from convop import cli
from convop.data import gaussian_kernel, motion_kernel

from .cli_helpers import (
    MakesDirectory,
    Terminal,
    conv_with_payload,
    run_line,
)
from .modules import MODULE_CASES, ModuleCase


def _matrix(capsys, tmp: Path, options: str, output: str = "B.npz", **values) -> tuple:
    """``convop matrix OPTIONS TMP/OUTPUT`` (``{tmp}`` in OPTIONS is ``tmp``): the exit
    status, stdout, stderr and the matrix written, loaded (None if none)."""
    code, out, err = run_line(capsys, f"matrix {options} {{tmp}}/{output}", tmp=tmp, **values)
    path = tmp / output
    return code, out, err, convop.load_matrix(path) if path.exists() else None


# ---------------------------------------------------------------------- matrix
@pytest.mark.parametrize("suffix", [".npz", ".mtx"])
def test_matrix_of_gaussian_kernel_matches_tosparse(tmp_path, capsys, suffix):
    code, out, _, loaded = _matrix(
        capsys,
        tmp_path,
        "--kernel gaussian:5 --input-shape 1,16,16 --padding same --padding-mode reflect",
        f"B{suffix}",
    )
    expected = convop.conv2d(
        gaussian_kernel(5)[None, None], (1, 16, 16), padding="same", padding_mode="reflect"
    ).tosparse()
    assert code == 0
    assert (loaded.shape, loaded.nnz, loaded.dtype) == (expected.shape, expected.nnz, np.float64)
    np.testing.assert_allclose(loaded.toarray(), expected.toarray(), rtol=1e-15, atol=0)
    assert f"nnz      {expected.nnz}" in out
    assert "shape    256 x 256" in out
    assert re.search(r"file     [\d.]+ (B|KiB)", out)


def test_matrix_of_npy_weight_with_stride_and_padding_tuple(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    code, _, _, loaded = _matrix(
        capsys, tmp_path, "--kernel {tmp}/w.npy --input-shape 2,9,9 --stride 2 --padding 1,0"
    )
    expected = convop.conv2d(w, (2, 9, 9), stride=2, padding=(1, 0)).tosparse()
    assert code == 0
    assert loaded.dtype == np.float32
    assert (loaded != expected).nnz == 0


def test_matrix_of_single_channel_1d_kernel_gets_channel_dims(tmp_path, capsys):
    k = np.array([1.0, -2.0, 1.0])
    np.save(tmp_path / "k.npy", k)
    code, _, _, loaded = _matrix(
        capsys, tmp_path, "--kernel {tmp}/k.npy --input-shape 1,8 --dilation 2 --dtype float32"
    )
    x = torch.randn(1, 1, 8)
    expected = torch.nn.functional.conv1d(
        x, torch.tensor(k, dtype=torch.float32)[None, None], dilation=2
    )
    assert code == 0
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded @ x.numpy().ravel(), expected.numpy().ravel(), rtol=1e-5)


def test_matrix_of_saved_conv2d_module_with_bias_note(tmp_path, capsys):
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(
        2, 3, 3, stride=2, padding=1, padding_mode="circular", dtype=torch.float64
    )
    torch.save(layer, tmp_path / "layer.pt")
    code, out, _, loaded = _matrix(
        capsys, tmp_path, "--module {tmp}/layer.pt --input-shape 2,8,8", "B.mtx"
    )
    op = convop.from_module(layer, (2, 8, 8))
    x = torch.randn(2, 8, 8, dtype=torch.float64)
    expected = layer(x[None]).detach().numpy().ravel()  # torch is the oracle
    assert code == 0
    np.testing.assert_allclose(loaded.toarray(), op.tosparse().toarray(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(loaded @ x.numpy().ravel() + op.bias, expected, rtol=1e-12)
    assert "bias is not part of the (linear) matrix" in out


def test_matrix_of_module_cast_by_dtype_without_bias_note(tmp_path, capsys):
    layer = torch.nn.Conv1d(1, 2, 3, bias=False, dtype=torch.float64)
    torch.save(layer, tmp_path / "layer.pt")
    code, out, _, loaded = _matrix(
        capsys, tmp_path, "--module {tmp}/layer.pt --input-shape 1,6 --dtype float32"
    )
    expected = convop.from_module(layer.float(), (1, 6)).tosparse()
    assert code == 0
    assert loaded.dtype == np.float32
    assert (loaded != expected).nnz == 0
    assert "bias" not in out


def test_matrix_of_transposed_convolution(tmp_path, capsys):
    w = np.random.default_rng(1).standard_normal((2, 3, 3))  # (C_in, C_out, k)
    np.save(tmp_path / "w.npy", w)
    code, out, _, loaded = _matrix(
        capsys,
        tmp_path,
        "--kernel {tmp}/w.npy --input-shape 2,5 --transposed --stride 2 --output-padding 1",
    )
    x = torch.randn(1, 2, 5, dtype=torch.float64)
    expected = torch.nn.functional.conv_transpose1d(
        x, torch.from_numpy(w), stride=2, output_padding=1
    )
    assert code == 0
    assert "conv_transpose1d" in out
    assert loaded.shape == (3 * 12, 2 * 5)
    np.testing.assert_allclose(loaded @ x.numpy().ravel(), expected.numpy().ravel(), rtol=1e-12)


def test_matrix_max_bytes_accepts_binary_suffix(tmp_path, capsys):
    code, _, _, loaded = _matrix(
        capsys, tmp_path, "--kernel motion:5:45 --input-shape 1,8,8 --max-bytes 1M"
    )
    expected = convop.conv2d(motion_kernel(5, 45)[None, None], (1, 8, 8)).tosparse()
    assert code == 0
    assert (loaded != expected).nnz == 0


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda case: case.id)
def test_matrix_reads_every_conv_class_from_module_files(tmp_path, capsys, case: ModuleCase):
    """The table holds all six classes: nn.Conv1d/2d/3d and nn.ConvTranspose1d/2d/3d."""
    layer = case.make()
    torch.save(layer, tmp_path / "layer.pt")
    shape = ",".join(str(n) for n in case.input_shape)
    code, _, err, loaded = _matrix(
        capsys, tmp_path, "--module {tmp}/layer.pt --input-shape {shape}", shape=shape
    )
    x = torch.randn(case.input_shape, dtype=torch.float64)
    expected = layer(x[None]) - layer(torch.zeros_like(x)[None])  # B @ x: the bias cancels
    assert (code, err) == (0, "")
    np.testing.assert_allclose(
        loaded @ x.numpy().ravel(), expected.detach().numpy().ravel(), rtol=1e-12, atol=1e-12
    )


PAYLOADS = {"pickled object": MakesDirectory, "inside a real Conv2d": conv_with_payload}


@pytest.mark.parametrize("make", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_module_file_that_would_run_code_is_refused_unrun(tmp_path, capsys, make):
    marker = tmp_path / "marker"
    torch.save(make(marker), tmp_path / "evil.pt")
    code, out, err, loaded = _matrix(
        capsys, tmp_path, "--module {tmp}/evil.pt --input-shape 1,6,6"
    )
    assert (code, out) == (2, "")
    assert re.fullmatch(
        r"convop: error: refused to load '.*evil.pt': it needs \w+\.mkdir, .*"
        r"torch\.save\(layer\), or pass --unsafe-unpickle for a file you trust .*\n",
        err,
    )
    assert not marker.exists()
    assert loaded is None


def test_unsafe_unpickle_reads_what_is_refused_and_warns(tmp_path, capsys):
    marker = tmp_path / "marker"
    layer = conv_with_payload(marker)
    torch.save(layer, tmp_path / "layer.pt")
    code, _, err, loaded = _matrix(
        capsys, tmp_path, "--module {tmp}/layer.pt --unsafe-unpickle --input-shape 1,6,6"
    )
    expected = convop.from_module(layer, (1, 6, 6)).tosparse()
    assert code == 0
    assert err == (
        f"convop: warning: --unsafe-unpickle: fully unpickling {str(tmp_path / 'layer.pt')!r}, "
        f"which can run arbitrary code from the file\n"
    )
    assert marker.is_dir()  # the file's code did run: the warning is no exaggeration
    assert (loaded != expected).nnz == 0


def test_module_file_without_torch_safe_globals_is_refused(tmp_path, capsys, monkeypatch):
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "layer.pt")
    monkeypatch.delattr(torch.serialization, "safe_globals")  # as in torch < 2.5
    code, _, err, loaded = _matrix(capsys, tmp_path, "--module {tmp}/layer.pt --input-shape 1,6,6")
    assert (code, loaded) == (2, None)
    assert re.match(r"convop: error: reading --module files safely needs torch >= 2.5", err)


PROGRESS_CASES = {
    "log file": (io.StringIO, (), False),
    "terminal --quiet": (Terminal, ("--quiet",), False),
    "terminal": (Terminal, (), True),
}


@pytest.mark.parametrize(("stderr", "flags", "bar"), PROGRESS_CASES.values(), ids=PROGRESS_CASES)
def test_matrix_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, stderr, flags, bar):
    monkeypatch.setattr(convop._materialize, "PROGRESS_ENTRIES", 0)  # every build is "long"
    monkeypatch.setattr(sys, "stderr", stderr())
    argv = ["matrix", "--kernel", "gaussian:3", "--input-shape", "1,16,16", *flags]
    code = cli.main([*argv, str(tmp_path / "B.npz")])
    assert code == 0
    assert ("tosparse" in sys.stderr.getvalue()) == bar
