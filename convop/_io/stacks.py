"""Images and stacks for deconvolution: TIFF (ImageJ, OME, plain), ``.npy`` and ``.npz``.

What ``convop deconvolve`` reads and writes, as arrays of spatial axes only: ``(Y, X)`` (an
image) or ``(Z, Y, X)`` (a stack, one TIFF page per plane). Each file is read in two steps:
:func:`stack_info` reads the header alone (shape, dtype, voxel size), so that the command's
guards run before any sample is read; :func:`read_stack` then reads all the planes or a slab
of them (TIFF pages by index, ``.npy`` through a memory map), validated before it is trusted:
real numbers, finite, within the range of the dtype asked for, and ``>= 0`` for counts.
Every corrupt or unusable file raises one ``ValueError`` naming it; a missing one
``FileNotFoundError``.

The voxel size is read, in micrometres, from ImageJ metadata (the resolution tags in the
description's ``unit``, and ``spacing`` between planes: 1 unit where ImageJ leaves it out)
or OME-XML (``PhysicalSizeX/Y/Z`` and their units, micrometres by default), and from nothing
else: a plain TIFF's resolution is a print resolution (72 dpi), not a sampling.
:func:`write_stack` writes float32 TIFF (ImageJ, or OME for an OME input, with the voxel
size) or ``.npy``, atomically, from slabs that arrive one after the other.

TIFF needs tifffile (convop's ``tiff`` extra), imported only when a TIFF file is used.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple
from xml.etree import ElementTree

import numpy as np

from .._shared.files import atomic_write
from .._shared.memory import check_memory

TIFF_SUFFIXES = (".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
#: Micrometres per unit of length, as ImageJ and OME-XML name units (lowercase).
MICROMETRES = {
    "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "pm": 1e-6,
    "å": 1e-4, "angstrom": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6,
}  # fmt: skip
#: TIFF axes read as an image or a stack (tifffile's series axes, singletons dropped): a
#: plain multi-page TIFF has I or Q for its pages.
TIFF_AXES = {"YX": 2, "ZYX": 3, "IYX": 3, "QYX": 3}
#: What each of tifffile's other axes is, for the refusal.
_AXIS_NAMES = {"C": "channels", "S": "colour samples", "T": "time points", "R": "tiles"}
_AXES = ("plane", "row", "column")


class StackInfo(NamedTuple):
    """A file's header: what :func:`stack_info` reads before any sample."""

    shape: tuple[int, ...]
    """The spatial shape, ``(Y, X)`` or ``(Z, Y, X)``."""
    dtype: np.dtype
    """The samples' type as stored."""
    voxel: tuple[float, ...] | None
    """The sample spacing along each axis, in micrometres; None unless the file gives all."""
    flavour: str
    """``'imagej'``, ``'ome'``, ``'tiff'`` (plain), ``'npy'`` or ``'npz'``."""
    member: str | None = None
    """The ``.npz`` archive's array."""


def split_member(text: str) -> tuple[str, str | None]:
    """``'cells.npz:psf'`` -> ``('cells.npz', 'psf')``; any other text -> ``(text, None)``."""
    head, sep, member = text.rpartition(".npz:")
    return (head + ".npz", member) if sep and member else (text, None)


def tifffile():
    """The tifffile module, or an ``ImportError`` naming the extra that brings it."""
    try:
        import tifffile as module
    except ImportError:
        raise ImportError(
            "TIFF files need tifffile, which is not installed: pip install tifffile; it "
            "comes with the tiff extra of a convop clone, pip install '.[tiff]'; or use .npy files"
        ) from None
    return module


# ---------------------------------------------------------------------- headers
def stack_info(path: str | os.PathLike, what: str, member: str | None = None) -> StackInfo:
    """The header of an image or stack file: shape, dtype, voxel size; no sample is read.

    ``what`` names the file in messages (``"stack 'cells.tif'"``); ``member`` is the
    ``.npz`` array to read (needed when the archive holds several).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        info = _tiff_info(path, what)
    elif suffix == ".npy":
        array = _npy_map(path, what)
        info = StackInfo(array.shape, array.dtype, None, "npy")
    elif suffix == ".npz":
        info = _npz_info(path, what, member)
    else:
        raise ValueError(
            f"{what} must be a TIFF (.tif, .tiff), .npy or .npz file, got {str(path)!r}"
        )
    if info.dtype.kind not in "buif" or info.dtype.itemsize > 8:
        raise ValueError(f"{what} must hold real numbers, got dtype {info.dtype}")
    if len(info.shape) not in (2, 3) or 0 in info.shape:
        raise ValueError(
            f"{what} must be an image (Y, X) or a stack (Z, Y, X) with samples, got shape "
            f"{info.shape}"
        )
    return info


class _Complaints(logging.Handler):
    """Keeps what tifffile logs at WARNING or above (it reads on past what it cannot)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(re.sub(r"^<[^>]*>\s*", "", record.getMessage()))


@contextlib.contextmanager
def _strict() -> Iterator[None]:
    """Turn tifffile's logged warnings (a damaged file it half reads) into a ``ValueError``.

    Nothing reaches stderr meanwhile; the logger is restored on the way out.
    """
    logger = logging.getLogger("tifffile")
    complaints = _Complaints()
    logger.addHandler(complaints)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(complaints)
        logger.propagate = propagate
    if complaints.messages:
        raise ValueError("; ".join(dict.fromkeys(complaints.messages)))


def _tiff_info(path: Path, what: str) -> StackInfo:
    module = tifffile()
    try:
        with _strict(), module.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            if axes not in TIFF_AXES:
                others = ", ".join(f"{a} ({_AXIS_NAMES[a]})" for a in axes if a in _AXIS_NAMES)
                raise ValueError(
                    f"has axes {axes}{': ' + others if others else ''}; expected YX (an "
                    f"image) or ZYX (a stack of planes): save one channel and one time point"
                )
            flavour = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "tiff"
            voxel = {"ome": _ome_voxel, "imagej": _imagej_voxel}.get(flavour)
            found = voxel(tif, len(shape)) if voxel else None
    except (OSError, ValueError, IndexError, KeyError, ElementTree.ParseError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"cannot read {what}: {error}") from None
    return StackInfo(shape, dtype, found, flavour)


def _micrometres(unit: object) -> float | None:
    """Micrometres per ``unit`` (a name ImageJ or OME-XML uses); None for others (pixel)."""
    return MICROMETRES.get(str(unit).strip().lower()) if unit is not None else None


def _voxel(sizes: list[float]) -> tuple[float, ...] | None:
    ok = all(math.isfinite(s) and s > 0 for s in sizes)
    return tuple(float(s) for s in sizes) if ok else None


def _imagej_voxel(tif, ndim: int) -> tuple[float, ...] | None:
    """From the resolution tags (pixels per unit) and ``spacing``, in ImageJ's ``unit``."""
    meta = tif.imagej_metadata or {}
    scale = _micrometres(meta.get("unit"))
    tags = tif.pages[0].tags
    rationals = [tags.get(name) for name in ("YResolution", "XResolution")]
    if scale is None or None in rationals:
        return None
    sizes = [den / num * scale if num > 0 and den > 0 else math.nan
             for num, den in (tag.value for tag in rationals)]  # fmt: skip
    if ndim == 3:
        sizes.insert(0, float(meta.get("spacing", 1.0)) * scale)
    return _voxel(sizes)


def _ome_voxel(tif, ndim: int) -> tuple[float, ...] | None:
    """From the first image's ``PhysicalSizeZ/Y/X`` and their units (default micrometres)."""
    root = ElementTree.fromstring(tif.ome_metadata)
    pixels = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX"[-ndim:]:
        value = pixels.get(f"PhysicalSize{axis}")
        scale = _micrometres(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is None or scale is None:
            return None
        sizes.append(float(value) * scale)
    return _voxel(sizes)


def _npy_map(path: Path, what: str) -> np.ndarray:
    """The ``.npy`` file's array as a read-only memory map: header read, no data."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # damaged, truncated, pickled, .npz
        raise ValueError(f"cannot read {what}: {error}") from None


def _npz_info(path: Path, what: str, member: str | None) -> StackInfo:
    """The archive's array (the one it holds, or ``member``): its ``.npy`` header alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
            if member is None and len(names) != 1:
                raise ValueError(
                    f"it holds {len(names)} arrays {names}: name one as FILE.npz:NAME"
                )
            member = names[0] if member is None else member
            if member not in names:
                raise ValueError(f"it holds no array {member!r}, only {names}")
            with archive.open(f"{member}.npy") as file:
                version = np.lib.format.read_magic(file)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
                if read is None:
                    raise ValueError(f"array {member!r} has .npy format {version}")
                shape, _, dtype = read(file)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read {what}: {error}") from None
    return StackInfo(tuple(shape), np.dtype(dtype), None, "npz", member)


# ---------------------------------------------------------------------- samples
def read_stack(path: str | os.PathLike, info: StackInfo, what: str, *,
               planes: slice | None = None, counts: bool = True, dtype=np.float32,
               max_bytes: int | None = None) -> np.ndarray:  # fmt: skip
    """The samples of an image or stack file as ``dtype``: all, or the slab ``planes``.

    ``info`` is the file's :func:`stack_info`; ``planes`` selects along the first axis (of
    a stack's planes, an image's rows); ``dtype`` is float32 or float64. Refused: NaN or
    Inf, values beyond ``dtype``'s range, and with ``counts`` negative values, each saying
    how many and where the first is (in the file's indices); over ``max_bytes`` (default:
    half the memory available).
    """
    dtype = np.dtype(dtype)
    planes = slice(None) if planes is None else planes
    first, stop, _ = planes.indices(info.shape[0])
    shape = (max(stop - first, 0), *info.shape[1:])
    stored = info.shape if info.flavour == "npz" else shape  # an archive's array is read whole
    needed = math.prod(stored) * info.dtype.itemsize + math.prod(shape) * dtype.itemsize
    check_memory(needed, max_bytes, f"reading {what}")
    path = Path(path)
    try:
        if info.flavour == "npy":
            values = np.array(_npy_map(path, what)[planes])
        elif info.flavour == "npz":
            with np.load(path, allow_pickle=False) as archive:
                values = archive[info.member][planes]
        else:
            values = _tiff_planes(path, info, planes)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"cannot read {what}: {error}") from None
    if values.shape != shape:
        raise ValueError(f"cannot read {what}: its header says {shape}, it holds {values.shape}")
    return _checked(values, what, first, counts, dtype)


def _tiff_planes(path: Path, info: StackInfo, planes: slice) -> np.ndarray:
    """The pages of ``planes`` (a stack), or the rows ``planes`` of the one page (an image)."""
    with _strict(), tifffile().TiffFile(path) as tif:
        if len(info.shape) == 2:
            return tif.series[0].asarray()[planes]
        first, stop, _ = planes.indices(info.shape[0])
        if stop <= first:
            return np.zeros((0, *info.shape[1:]), info.dtype)
        values = tif.series[0].asarray(key=range(first, stop))
        return values.reshape(stop - first, *info.shape[1:])


def _checked(values: np.ndarray, what: str, first: int, counts: bool,
             dtype: np.dtype) -> np.ndarray:  # fmt: skip
    """``values`` as ``dtype``, refused if not finite, beyond it, or negative counts."""
    names = _AXES[-values.ndim :]
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        count = int(bad.sum())
        if count:
            raise ValueError(
                f"{what} has {count} non-finite value{'s' * (count > 1)} (NaN or Inf), the "
                f"first at {_first(bad, names, first)}"
            )
        big = np.abs(values) > np.finfo(dtype).max
        if big.any():
            where = _first(big, names, first)
            raise ValueError(f"{what} has values beyond {dtype}'s range, the first at {where}")
    if counts and values.dtype.kind in "if":
        negative = values < 0
        count = int(negative.sum())
        if count:
            raise ValueError(
                f"{what} has {count} negative value{'s' * (count > 1)}, the first at "
                f"{_first(negative, names, first)}: counts are >= 0 (subtract a camera "
                f"offset no larger than the darkest counts)"
            )
    return np.ascontiguousarray(values, dtype=dtype)


def _first(mask: np.ndarray, names: tuple[str, ...], first: int) -> str:
    index = [int(i) for i in np.argwhere(mask)[0]]
    index[0] += first
    return ", ".join(f"{name} {i}" for name, i in zip(names, index))


# ---------------------------------------------------------------------- writing
def write_stack(path: str | os.PathLike, shape: tuple[int, ...], slabs: Iterable[np.ndarray],
                *, voxel: tuple[float, ...] | None = None,
                flavour: str = "imagej") -> None:  # fmt: skip
    """Write float32 samples of ``shape`` as ``.npy`` or TIFF, atomically, slab by slab.

    ``slabs`` are consecutive slabs along the first axis (their planes add up to
    ``shape[0]``), each read once, as they come: a stack is never held whole. A TIFF is an
    ImageJ hyperstack (``flavour='ome'``: OME-TIFF) with one page per plane and the
    ``voxel`` size (micrometres, per axis) when given. A failed write leaves no file.
    """
    target = Path(path)
    if target.suffix.lower() == ".npy":
        atomic_write(target, lambda file: _write_npy(file, shape, slabs))
        return
    module = tifffile()

    def write(file: BinaryIO) -> None:
        pages = _pages(shape, slabs)
        handle = module.FileHandle(file, name=target.name)  # the temporary file has no name
        with module.TiffWriter(handle, ome=flavour == "ome", imagej=flavour != "ome") as tif:
            tif.write(pages, shape=shape, dtype=np.float32, photometric="minisblack",
                      **_tiff_metadata(shape, voxel, flavour))  # fmt: skip
        file.seek(0, os.SEEK_END)  # tifffile seeks back to finish headers: end at the end

    atomic_write(target, write)


def _float32(slabs: Iterable[np.ndarray], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Each slab as contiguous little-endian float32, checked to add up to ``shape``."""
    done = 0
    for slab in slabs:
        if tuple(slab.shape[1:]) != shape[1:] or done + slab.shape[0] > shape[0]:
            raise ValueError(f"slab of shape {slab.shape} does not fit the shape {shape}")
        done += slab.shape[0]
        yield np.ascontiguousarray(slab, dtype="<f4")
    if done != shape[0]:
        raise ValueError(f"the slabs hold {done} planes of the {shape[0]} of shape {shape}")


def _write_npy(file: BinaryIO, shape: tuple[int, ...], slabs: Iterable[np.ndarray]) -> None:
    header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(file, header)
    for slab in _float32(slabs, shape):
        file.write(memoryview(slab).cast("B"))


def _pages(shape: tuple[int, ...], slabs: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """A stack's planes one by one; an image's rows joined into its one page."""
    if len(shape) == 2:
        yield np.concatenate(list(_float32(slabs, shape)))
        return
    for slab in _float32(slabs, shape):
        yield from slab


def _tiff_metadata(shape: tuple[int, ...], voxel: tuple[float, ...] | None,
                   flavour: str) -> dict:  # fmt: skip
    """tifffile's ``write`` arguments that carry the axes and the voxel size."""
    axes = "ZYX"[-len(shape) :]
    if flavour == "ome":
        metadata = {"axes": axes}
        for axis, size in zip(axes, voxel or ()):
            metadata |= {f"PhysicalSize{axis}": size, f"PhysicalSize{axis}Unit": "µm"}
        return {"metadata": metadata}
    if voxel is None:
        return {"metadata": {"axes": axes}}
    metadata = {"axes": axes, "unit": "micron"}
    if len(shape) == 3:
        metadata["spacing"] = voxel[0]
    return {"metadata": metadata, "resolution": (1 / voxel[-1], 1 / voxel[-2])}
