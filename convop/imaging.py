"""Images and blur kernels from files and specs: what ``convop deblur`` and ``convop matrix`` read.

- :func:`read_image`: a PNG, JPEG, ... file (read with Pillow, scaled to [0, 1]) or a ``.npy``
  array, as ``(H, W, C)`` float64 pixels with ``C = 1`` (gray) or 3 (red, green, blue);
- :func:`write_image`: such pixels as ``.npy`` or as a gray or RGB PNG;
- :func:`load_kernel`: a kernel from a ``.npy`` file or a spec such as ``gaussian:9`` or
  ``motion:15:30`` (the kernels of :mod:`convop.data`);
- :func:`require_finite`: refuse NaN and Inf values, saying how many and where the first is.

Files are validated before they are trusted: ``.npy`` files are read without unpickling and
must hold one real numeric array; a missing file raises ``FileNotFoundError``, a damaged or
unusable one a ``ValueError`` naming it. Pillow is imported only for image files other than
``.npy``; without it they raise ``ImportError`` saying how to install it. Writes are atomic:
a failed write leaves no partial file.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._shared.files import atomic_write
from ._shared.memory import check_memory
from .data import gaussian_kernel, motion_kernel

#: The kernel specs :func:`load_kernel` accepts.
KERNEL_SPECS = "KERNEL.npy, gaussian:SIZE[:SIGMA] or motion:LENGTH[:ANGLE]"
#: Built-in kernels by spec name: the function and the syntax of its parameters.
_BUILT_IN = {
    "gaussian": (gaussian_kernel, "SIZE[:SIGMA]"),
    "motion": (motion_kernel, "LENGTH[:ANGLE]"),
}
#: Bytes a built-in kernel of side n takes per entry of its n x n grid, temporaries included.
_KERNEL_BYTES_PER_ENTRY = 3 * 8
#: Bits per sample of Pillow's gray modes ("I": how Pillow may hold a 16-bit PNG).
_GRAY_BITS = {"1": 8, "L": 8, "LA": 8, "La": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I": 16}


class Image(NamedTuple):
    """An image as :func:`read_image` read it."""

    pixels: np.ndarray
    """``(H, W, C)`` float64, ``C = 1`` (gray) or 3 (red, green, blue)."""
    bits: int | None
    """Bits per sample of an image file, whose pixels are scaled to [0, 1]; ``None``: ``.npy``."""
    alpha: bool
    """Whether the file had an alpha channel, which is dropped."""


def require_finite(values: np.ndarray, what: str, axes: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` if ``values`` holds NaN or Inf: how many, and where the first is.

    Parameters
    ----------
    values : numpy.ndarray
        The values to check.
    what : str
        What they are, for the message (``"kernel 'k.npy'"``).
    axes : sequence of str, optional
        Names of the dimensions (``("row", "column")``); without them the index is given.

    Examples
    --------
    >>> import numpy as np
    >>> from convop.imaging import require_finite
    >>> require_finite(np.array([[1.0, np.nan], [np.inf, 0.0]]), "image", ("row", "column"))
    Traceback (most recent call last):
    ...
    ValueError: image has 2 non-finite values (NaN or Inf), the first at row 0, column 1
    """
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if count == 0:
        return
    first = [int(i) for i in np.argwhere(bad)[0]]
    where = (
        ", ".join(f"{name} {i}" for name, i in zip(axes, first))
        if axes
        else f"index {tuple(first)}"
    )
    raise ValueError(
        f"{what} has {count} non-finite value{'s' * (count > 1)} (NaN or Inf), "
        f"the first at {where}"
    )


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    return path


def _load_array(path: Path, what: str, *, real: bool) -> np.ndarray:
    """The one numeric array of a ``.npy`` file, never unpickled; ``ValueError`` otherwise."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # damaged, truncated, empty, pickled
        raise ValueError(f"cannot read {what}: {error}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        array.close()
        raise ValueError(f"{what} must hold one numeric array, got an .npz archive")
    if array.dtype.kind not in ("biuf" if real else "biufc"):
        raise ValueError(
            f"{what} must hold one {'real ' * real}numeric array, got dtype {array.dtype}"
        )
    return array


def _load_archive(path: Path, what: str) -> np.ndarray:
    """The one numeric array of an ``.npz`` archive, never unpickled; ``ValueError`` else."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it is not an .npz archive")
            names = list(archive.files)
            if len(names) != 1:
                raise ValueError(f"it must hold one array, got {len(names)}: {names}")
            array = archive[names[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read {what}: {error}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold one real numeric array, got dtype {array.dtype}")
    return array


def _parameters(text: str, name: str, syntax: str, params: list[str]) -> list:
    """A built-in spec's parameters: an int, then finite floats; ``ValueError`` naming them."""
    fields = re.findall(r"[A-Z]+", syntax)  # "SIZE[:SIGMA]" -> SIZE, SIGMA
    try:
        if not 1 <= len(params) <= len(fields):
            raise ValueError
        args = [int(params[0])] + [float(p) for p in params[1:]]
    except ValueError:
        raise ValueError(f"kernel {text!r}: expected {name}:{syntax}") from None
    for field, given, value in zip(fields[1:], params[1:], args[1:]):
        if not math.isfinite(value):
            raise ValueError(f"kernel {text!r}: {field} must be a finite number, got {given!r}")
    return args


def load_kernel(spec: str | os.PathLike, *, max_bytes: int | None = None) -> np.ndarray:
    """A blur kernel from ``KERNEL.npy``, ``gaussian:SIZE[:SIGMA]`` or ``motion:LENGTH[:ANGLE]``.

    Parameters
    ----------
    spec : str or path
        A ``.npy`` file (loaded without unpickling: one real or complex numeric array), or a
        built-in normalised 2-d kernel: :func:`convop.data.gaussian_kernel` (odd ``SIZE``,
        ``SIGMA`` in pixels, default ``SIZE / 6``) or :func:`convop.data.motion_kernel`
        (odd ``LENGTH`` in pixels, ``ANGLE`` in degrees, default 0). ``SIGMA`` and
        ``ANGLE`` must be finite numbers.
    max_bytes : int, optional
        The most memory a built-in kernel may take (its ``SIZE x SIZE`` grid and the
        temporaries that make it); default half the memory available now.

    Returns
    -------
    numpy.ndarray
        The kernel as stored: any number of dimensions, values not checked (see
        :func:`require_finite`).

    Raises
    ------
    FileNotFoundError
        If the ``.npy`` file does not exist.
    ValueError
        For an unknown spec, a damaged or unusable file, or invalid kernel parameters
        (the message starts with the spec).
    MemoryError
        Before allocating, for a built-in kernel over ``max_bytes``.

    See Also
    --------
    convop.data.gaussian_kernel : The kernel of ``gaussian:SIZE[:SIGMA]``.
    convop.data.motion_kernel : The kernel of ``motion:LENGTH[:ANGLE]``.

    Examples
    --------
    >>> from convop.imaging import load_kernel
    >>> load_kernel("gaussian:5:1.0").shape
    (5, 5)
    >>> load_kernel("motion:3")[1]
    array([0.33333333, 0.33333333, 0.33333333])
    >>> load_kernel("gaussian:4")
    Traceback (most recent call last):
    ...
    ValueError: kernel 'gaussian:4': size must be odd, got size=4
    >>> load_kernel("motion:9:nan")
    Traceback (most recent call last):
    ...
    ValueError: kernel 'motion:9:nan': ANGLE must be a finite number, got 'nan'
    """
    text = os.fspath(spec)
    name, *params = text.split(":")
    if name in _BUILT_IN:
        build, syntax = _BUILT_IN[name]
        args = _parameters(text, name, syntax, params)
        size = args[0]
        if size >= 1:  # a size < 1 is the builder's to refuse
            field = syntax.split("[")[0]
            check_memory(
                _KERNEL_BYTES_PER_ENTRY * size**2, max_bytes, f"kernel {text!r}",
                hint=f"choose a smaller {field}",
            )  # fmt: skip
        try:
            return build(*args)
        except ValueError as error:
            raise ValueError(f"kernel {text!r}: {error}") from None
    if Path(text).suffix.lower() != ".npy":
        raise ValueError(f"unknown kernel {text!r}: expected {KERNEL_SPECS}")
    return _load_array(_existing(text, "kernel file"), f"kernel file {text!r}", real=False)


def _pillow():
    """Pillow's ``PIL.Image``, or an ``ImportError`` saying how to install it."""
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise ImportError(
            "PNG and JPEG images need Pillow, which is not installed: "
            "pip install pillow (it comes with convop's plot extra), or use .npy files"
        ) from None
    return PILImage


def read_image(path: str | os.PathLike) -> Image:
    """A gray or colour image from a ``.npy`` file or an image file (PNG, JPEG, ...).

    Parameters
    ----------
    path : str or path
        A ``.npy`` file (or an ``.npz`` archive of one array) holding a real ``(H, W)``
        gray or ``(H, W, 3)`` colour array, used as it is; or any file Pillow reads (PNG,
        JPEG, TIFF, ...): gray stays gray (8 or 16 bits), other modes
        (palette, RGB(A), CMYK, ...) become RGB, an alpha channel is dropped, and samples
        are scaled to [0, 1] by their bit depth.

    Returns
    -------
    Image
        ``pixels`` ``(H, W, C)`` float64 with ``C = 1`` or 3, finite; ``bits`` per sample of
        an image file (``None`` for ``.npy``); ``alpha``, whether an alpha channel was
        dropped.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it cannot be read, has another shape, or holds NaN or Inf (saying how many and
        where the first is).
    ImportError
        For an image file other than ``.npy`` when Pillow is not installed.

    See Also
    --------
    write_image : Writes pixels back, at the bit depth of the image read.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from convop.imaging import read_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gray.npy"
    >>> np.save(path, np.eye(4))
    >>> image = read_image(path)
    >>> image.pixels.shape, image.bits, image.alpha
    ((4, 4, 1), None, False)
    """
    where = _existing(path, "image file")
    what = f"image {os.fspath(path)!r}"
    if where.suffix.lower() in (".npy", ".npz"):
        if where.suffix.lower() == ".npy":
            array = _load_array(where, what, real=True)
        else:
            array = _load_archive(where, what)
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
            raise ValueError(
                f"{what} must have shape (H, W) (gray) or (H, W, 3) (colour), got {array.shape}"
            )
        require_finite(array, what, ("row", "column", "channel"))
        pixels = array[..., None] if array.ndim == 2 else array
        return Image(pixels.astype(np.float64), bits=None, alpha=False)
    PILImage = _pillow()
    try:
        with PILImage.open(where) as picture:
            samples, bits, alpha = _samples(picture)
    except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError) as error:
        raise ValueError(f"cannot read {what}: {error}") from None
    pixels = np.atleast_3d(samples).astype(np.float64) / (2**bits - 1)  # (H, W, C) in [0, 1]
    return Image(pixels, bits, alpha)


def _samples(picture) -> tuple[np.ndarray, int, bool]:
    """``(samples, bits, alpha)`` of a Pillow image.

    ``(H, W)`` gray or ``(H, W, 3)`` RGB unsigned samples, their bits (8, or 16 for 16-bit
    gray), whether alpha was dropped.
    """
    alpha = any(band in "Aa" for band in picture.getbands()) or "transparency" in picture.info
    bits = _GRAY_BITS.get(picture.mode)
    if bits == 16:
        samples = np.asarray(picture)
        if samples.size and (samples.min() < 0 or samples.max() > 2**16 - 1):
            raise ValueError(f"mode {picture.mode} samples outside 0..65535 are not supported")
        return samples, bits, alpha
    if bits == 8:
        return np.asarray(picture.convert("L")), bits, alpha
    if picture.mode == "F":
        raise ValueError("floating-point images are not supported: save the array as .npy")
    return np.asarray(picture.convert("RGB")), 8, alpha  # palette, RGB(A), CMYK, ...


def _quantised(values: np.ndarray, like: Image | None) -> np.ndarray:
    """``values`` as unsigned samples of ``like``'s depth (8 bits for ``.npy`` data).

    Scaled from [0, 1] when ``like``'s pixels lie in it (overshoot clipped), else from their
    range.
    """
    bits = (like.bits if like is not None else None) or 8
    reference = like.pixels if like is not None else values
    lo, hi = (
        (0.0, 1.0)
        if reference.min() >= 0 and reference.max() <= 1
        else (float(reference.min()), float(reference.max()))
    )
    # Divided by the larger bound first: hi - lo and values - lo stay finite near 1e308.
    unit = max(abs(lo), abs(hi)) or 1.0
    low, span = lo / unit, (hi / unit - lo / unit) or 1.0
    scaled = np.clip((values / unit - low) / span, 0.0, 1.0)
    return np.round(scaled * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)


def write_image(path: str | os.PathLike, values: np.ndarray, like: Image | None = None) -> None:
    """Write an ``(H, W)`` gray or ``(H, W, 3)`` colour image as ``.npy`` or PNG, atomically.

    Parameters
    ----------
    path : str or path
        ``.npy``: the values as they are, ``(H, W)`` or ``(H, W, 3)``. Any other name: a PNG,
        gray (mode L, or I;16 when ``like`` has 16 bits) or RGB.
    values : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)`` (gray) or ``(H, W, 3)`` real values.
    like : Image, optional
        The image ``values`` were computed from. A PNG takes its bit depth, and its scale:
        [0, 1] when its pixels lie in [0, 1] (the scale of image files; values outside are
        clipped), else its pixels' range. Without it: 8 bits, and the scale of ``values``.

    Raises
    ------
    OSError
        If the file cannot be written; nothing is left behind.
    ImportError
        For a PNG when Pillow is not installed.

    See Also
    --------
    read_image : Reads an image, giving the ``Image`` that ``like`` takes.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from convop.imaging import read_image, write_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ramp.png"
    >>> write_image(path, np.linspace(0, 1, 12).reshape(3, 4))
    >>> image = read_image(path)  # 8-bit gray, scaled back to [0, 1]
    >>> image.bits, image.pixels[0, :, 0] * 255
    (8, array([ 0., 23., 46., 70.]))
    """
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if not (values.ndim == 2 or (values.ndim == 3 and values.shape[2] == 3)):
        raise ValueError(
            f"values must have shape (H, W), (H, W, 1) or (H, W, 3), got {values.shape}"
        )
    target = Path(path)
    if target.suffix.lower() == ".npy":
        atomic_write(target, lambda file: np.save(file, values))
    else:
        picture = _pillow().fromarray(_quantised(values, like))
        atomic_write(target, lambda file: picture.save(file, format="PNG"))
