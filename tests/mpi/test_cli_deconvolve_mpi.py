"""``convop deconvolve`` under mpiexec writes what the serial command writes (``make test-mpi``).

Run with ``OMP_NUM_THREADS=1 mpiexec -n N python -m pytest --with-mpi
tests/mpi/test_cli_deconvolve_mpi.py`` for N = 2 and 3 (on one rank the command runs
serially and the comparison is trivial). Rank 0 writes the files and runs the serial
command (the MPI launch switched off for it alone); then every rank runs the command, each
reading its own slab. The solve runs in float64, so the two outputs differ by float32's
rounding of the written values at most. Verdicts are broadcast from rank 0, so all ranks
pass or fail together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import tifffile
from mpi4py import MPI

import convop
from convop.cli import _deconvolve_mpi
from convop.data import gaussian_kernel

from ..cli_helpers import run

pytestmark = pytest.mark.mpi

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
VOXEL = (0.3, 0.1, 0.1)


def _on_rank_0(work: Callable[[], object]) -> object:
    """``work()`` on rank 0 alone; its result on every rank (its failure fails every rank)."""
    result, failure = None, None
    if RANK == 0:
        try:
            result = work()
        except Exception as error:  # reported on every rank, below
            failure = f"{type(error).__name__}: {error}"
    result, failure = COMM.bcast((result, failure), root=0)
    assert failure is None, failure
    return result


def _psf(shape: tuple[int, ...]) -> np.ndarray:
    grid = np.ones(shape)
    for axis, k in enumerate(shape):
        profile = gaussian_kernel(k, 0.4 + k / 6).sum(0)
        grid = grid * profile.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return (1000 * grid).astype(np.float32)


def _counts(shape: tuple[int, ...], psf: np.ndarray, seed: int) -> np.ndarray:
    """Poisson counts of a dim scene, bright in its first half (the auto background sees the
    dark blocks of the other), blurred past the frame, background 2."""
    model = convop.extended_domain(psf / psf.sum(dtype=np.float64), shape)
    rng = np.random.default_rng(seed)
    scene = 5 + 80 * rng.random(model.object_shape)
    scene[..., model.object_shape[-1] // 2 :] = 3.0
    return rng.poisson((model.op @ scene.ravel()).reshape(shape) + 2).astype(np.uint16)


def _files(directory: Path) -> Path:
    """The stacks and PSFs of the cases, written once (by rank 0)."""
    psf3, psf2 = _psf((3, 5, 5)), _psf((5, 5))
    stack = _counts((9, 12, 16), psf3, 0)
    meta = {"axes": "ZYX", "unit": "micron", "spacing": VOXEL[0]}
    resolution = (1 / VOXEL[2], 1 / VOXEL[1])
    tifffile.imwrite(directory / "stack.tif", stack, imagej=True, metadata=meta,
                     resolution=resolution)  # fmt: skip
    tifffile.imwrite(directory / "psf.tif", psf3, imagej=True, metadata=meta,
                     resolution=resolution)  # fmt: skip
    np.save(directory / "stack.npy", stack)
    np.save(directory / "psf.npy", psf3)
    np.save(directory / "image.npy", _counts((12, 10), psf2, 1))
    np.save(directory / "psf2.npy", psf2)
    return directory


def _shared_directory(tmp_path: Path) -> Path:
    """Rank 0's ``tmp_path``, with the files in it, on every rank."""
    return Path(_on_rank_0(lambda: str(_files(tmp_path))))


class Case(NamedTuple):
    stack: str
    psf: str
    options: tuple[str, ...]
    output: str


CASES = {
    "tiff stack, accelerated, auto background": Case(
        "stack.tif", "psf.tif", ("--accelerate", "--iterations", "4"), "out.tif"
    ),
    "npy stack, reflect boundary": Case(
        "stack.npy", "psf.npy", ("--boundary", "reflect", "--background", "2"), "out.npy"
    ),
    "2-D image, rows split": Case("image.npy", "psf2.npy", ("--background", "1.5"), "out.npy"),
}


def _command(directory: Path, case: Case, output: str) -> list[str]:
    return ["deconvolve", str(directory / case.stack), "--psf", str(directory / case.psf),
            "--output", str(directory / output), "--quiet", "--dtype", "float64",
            "--iterations", "3", *case.options]  # fmt: skip


def _serial(monkeypatch, argv: list[str]) -> int:
    """The command on this process alone: no MPI launch seen."""
    with monkeypatch.context() as patch:
        patch.setattr(_deconvolve_mpi, "world", lambda: None)
        return convop.cli.main(argv)


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.load(path)


def _voxel(path: Path) -> tuple[float, ...] | None:
    """The voxel size tifffile reads from an ImageJ file (None for .npy)."""
    if path.suffix != ".tif":
        return None
    with tifffile.TiffFile(path) as tif:
        (xn, xd), (yn, yd) = (tif.pages[0].tags[t].value for t in ("XResolution", "YResolution"))
        return tif.imagej_metadata["spacing"], yd / yn, xd / xn


def _compare(serial: Path, distributed: Path) -> tuple[float, bool]:
    """The largest difference relative to the largest value, and whether voxel sizes match."""
    want, got = _read(serial), _read(distributed)
    assert got.shape == want.shape
    assert got.dtype == np.float32
    error = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    same = _voxel(serial) == _voxel(distributed) and (
        _voxel(serial) is None or np.allclose(_voxel(serial), VOXEL, rtol=1e-6)
    )
    return error, same


@pytest.mark.parametrize("case", CASES.values(), ids=CASES)
def test_distributed_command_writes_the_serial_result(tmp_path, capsys, monkeypatch, case):
    directory = _shared_directory(tmp_path)
    serial = "serial" + Path(case.output).suffix
    code = _on_rank_0(lambda: _serial(monkeypatch, _command(directory, case, serial)))
    assert code == 0
    capsys.readouterr()
    code, out, err = run(capsys, *_command(directory, case, case.output))
    assert (code, err) == (0, "")
    assert ("wrote" in out) == (RANK == 0)  # rank 0 alone reports
    error, same = _on_rank_0(lambda: _compare(directory / serial, directory / case.output))
    assert error <= 1e-6
    assert same


def _errors(err: str) -> tuple[str, list[str]]:
    """Rank 0's stderr, and the others' that are not empty (on every rank)."""
    lines = COMM.gather(err, root=0)
    return _on_rank_0(lambda: (lines[0], [line for line in lines[1:] if line]))


@pytest.mark.skipif(SIZE == 1, reason="on one rank the command runs serially, tv included")
def test_distributed_command_refuses_other_methods_on_every_rank(tmp_path, capsys):
    directory = _shared_directory(tmp_path)
    argv = _command(directory, CASES["npy stack, reflect boundary"], "tv.npy")
    code, out, err = run(capsys, *argv, "--method", "tv")
    assert (code, out) == (2, "")
    first, others = _errors(err)
    assert others == []  # the other ranks are silent
    assert re.fullmatch(rf"convop: error: --method tv does not run under mpiexec \({SIZE} "
                        r"ranks\): only rl .*\n", first)  # fmt: skip
    assert not (directory / "tv.npy").exists()


def test_a_refusal_on_one_ranks_slab_is_every_ranks(tmp_path, capsys):
    """A negative count in the last plane, which only the last rank reads: every rank exits
    with status 2, rank 0 says why (and which rank found it), nothing is written."""
    directory = _shared_directory(tmp_path)

    def spoil() -> None:
        stack = np.load(directory / "stack.npy").astype(np.float32)
        stack[-1, 3, 4] = -1.0
        np.save(directory / "bad.npy", stack)

    _on_rank_0(spoil)
    case = CASES["npy stack, reflect boundary"]._replace(stack="bad.npy")
    code, out, err = run(capsys, *_command(directory, case, "bad-out.npy"))
    assert (code, out) == (2, "")
    first, others = _errors(err)
    assert others == []
    assert re.fullmatch(rf"convop: error: stack '.*bad\.npy' has 1 negative value, the first "
                        rf"at plane 8, row 3, column 4: .*{_found_on(SIZE - 1)}\n",
                        first)  # fmt: skip
    assert not (directory / "bad-out.npy").exists()


def _found_on(rank: int) -> str:
    """What rank 0's message adds for a failure found on ``rank`` (a regex)."""
    return f" \\(on rank {rank} of {SIZE}\\)" if rank else ""
