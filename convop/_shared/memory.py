"""How much memory is available, and the guard that refuses work before allocating it.

Every large allocation convop makes (explicit matrices, FFT spectra and workspaces, files
read back) first asks :func:`check_memory`, which raises ``MemoryError`` with the size needed
and the limit *before* anything is allocated. The memory available comes from psutil
(Linux, macOS, Windows, BSD); where psutil cannot tell, from ``/proc/meminfo`` or
``sysconf``; where nothing can, a fixed default limit applies and the message says so.
"""

from __future__ import annotations

import os

import torch

#: Fraction of the memory available now that one result may take by default.
DEFAULT_MEMORY_FRACTION = 0.5
#: The default limit when the memory available cannot be determined on this platform.
FALLBACK_LIMIT = 2 * 1024**3


def _psutil_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # not installed, or a platform psutil does not support
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:  # SC_AVPHYS_PAGES is missing on macOS and Windows
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


#: Where the host's available memory is read from, in order of preference.
HOST_SOURCES = (_psutil_available, _meminfo_available, _sysconf_available)


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes available to a new allocation on ``device`` (the host by default).

    ``None`` when this platform does not say. CUDA devices report their free memory.

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    for source in HOST_SOURCES:
        free = source()
        if free is not None and free >= 0:
            return free
    return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> format_bytes(1536), format_bytes(3 * 1024**3)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def memory_limit(
    max_bytes: int | None,
    device: torch.device | None = None,
    fraction: float = DEFAULT_MEMORY_FRACTION,
) -> tuple[int, str]:
    """``(limit, where the limit comes from)`` for a ``max_bytes`` argument.

    Raises
    ------
    ValueError
        If ``max_bytes`` is not ``None`` or a non-negative int.
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        return max_bytes, "max_bytes"
    free = available_memory(device)
    if free is None:
        return FALLBACK_LIMIT, (
            f"a default of {format_bytes(FALLBACK_LIMIT)}, as the memory available could "
            f"not be determined on this platform"
        )
    share = "half the" if fraction == 0.5 else f"{fraction:.0%} of the"
    return int(fraction * free), f"{share} {format_bytes(free)} available now"


def check_memory(
    needed: int,
    max_bytes: int | None,
    what: str,
    device: torch.device | None = None,
    *,
    fraction: float = DEFAULT_MEMORY_FRACTION,
    hint: str | None = None,
) -> None:
    """Raise ``MemoryError`` before allocating more than the limit.

    Parameters
    ----------
    needed : int
        Bytes the work would allocate.
    max_bytes : int or None
        The caller's limit; ``None``: ``fraction`` of the memory available now on ``device``.
    what : str
        What would be built, for the message.
    device : torch.device, optional
        Where the memory would be allocated (the host by default).
    fraction : float, default 0.5
        Share of the available memory allowed when ``max_bytes`` is ``None``.
    hint : str, optional
        What to do instead; by default, to pass a larger ``max_bytes``.

    Examples
    --------
    >>> check_memory(10**15, 10**6, "a test")
    Traceback (most recent call last):
    ...
    MemoryError: a test needs 909.5 TiB, more than the limit of 976.6 KiB (max_bytes); ...
    """
    limit, source = memory_limit(max_bytes, device, fraction)
    if needed > limit:
        if hint is None:
            hint = f"pass max_bytes={needed} or more to build it anyway"
        raise MemoryError(
            f"{what} needs {format_bytes(needed)}, more than the limit of "
            f"{format_bytes(limit)} ({source}); {hint}"
        )
