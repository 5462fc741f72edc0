"""The internals of :mod:`convop.threads`.

The setting itself, and running one product under it (what the numpy faces of
:class:`~convop.ConvOperator` call).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TypeVar

import torch

from ._checks import as_int

T = TypeVar("T")
Setting = int | str | None

_DOUBLE = (torch.float64, torch.complex128)
_SETTING: contextvars.ContextVar[Setting] = contextvars.ContextVar("array_threads", default="auto")


def _validate(n: object) -> Setting:
    if n is None:
        return None
    if isinstance(n, str):
        if n == "auto":
            return n
        raise ValueError(f"n must be 'auto', None or a positive int, got n={n!r}")
    return as_int(n, "n", minimum=1)


def product_threads(dtype: torch.dtype, device: torch.device) -> int | None:
    """Threads for one product on numpy data of ``dtype`` (None: leave torch's setting)."""
    setting = _SETTING.get()
    if setting is None or device.type != "cpu":
        return None
    if setting == "auto":
        return 1 if dtype in _DOUBLE else None
    return setting  # type: ignore[return-value]


def run_with_threads(
    threads: int | None, fn: Callable[..., T], *args: object, **kwargs: object
) -> T:
    """``fn(*args, **kwargs)`` with torch on ``threads`` threads, restored afterwards.

    torch's thread count is per OS thread (an OpenMP setting of the calling thread), so
    saving and restoring it here is safe under nesting and with concurrent Python threads.
    """
    if threads is None:
        return fn(*args, **kwargs)
    saved = torch.get_num_threads()
    if saved == threads:
        return fn(*args, **kwargs)
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(saved)
