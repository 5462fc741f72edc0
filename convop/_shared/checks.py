"""Small validators that raise ``ValueError``/``TypeError`` naming the parameter.

Every message has the form "<name> ... expected ..., got <value>" so that a user can
find the offending argument without reading a traceback.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np


def is_int(value: object) -> bool:
    """True for Python and numpy integers, False for bools, floats and everything else."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise naming ``name``.

    Bools and floats are rejected (``stride=1.0`` is almost always a bug upstream).
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return value


def as_int_tuple(value: object, ndim: int, name: str, *, minimum: int | None = None) -> tuple:
    """Broadcast an int to ``ndim`` entries, or check a sequence of ``ndim`` ints.

    Raises
    ------
    TypeError
        If ``value`` is neither an int nor a sequence of ints.
    ValueError
        If the sequence has the wrong length or an entry is below ``minimum``.
    """
    if is_int(value):
        items = (operator.index(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim:
            raise ValueError(
                f"{name} must be an int or a tuple of {ndim} ints, got {name}={tuple(value)!r} "
                f"of length {len(value)}"
            )
        if not all(is_int(v) for v in value):
            raise TypeError(f"{name} must contain only ints, got {name}={tuple(value)!r}")
        items = tuple(operator.index(v) for v in value)
    else:
        raise TypeError(
            f"{name} must be an int or a tuple of {ndim} ints, got {value!r} "
            f"of type {type(value).__name__}"
        )
    if minimum is not None and any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {name}={value!r}")
    return items


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the strings in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {name}={value!r}")
    return value


def as_float(value: object, name: str, *, minimum: float | None = None,
             positive: bool = False, maximum: float | None = None) -> float:  # fmt: skip
    """Return ``value`` as a finite Python float, or raise naming ``name``.

    Python and numpy real numbers are accepted, bools and everything else are not.
    ``minimum``/``maximum`` are inclusive bounds; ``positive`` asks for ``value > 0``.

    Examples
    --------
    >>> as_float(0.5, "damp", minimum=0.0)
    0.5
    >>> as_float(float("nan"), "damp", minimum=0.0)
    Traceback (most recent call last):
    ...
    ValueError: damp must be a finite float >= 0, got damp=nan
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                    np.floating)):  # fmt: skip
        raise TypeError(f"{name} must be a float, got {value!r} of type {type(value).__name__}")
    number = float(value)
    wanted = [f">= {minimum:g}"] if minimum is not None else []
    wanted += ["> 0"] if positive else []
    wanted += [f"<= {maximum:g}"] if maximum is not None else []
    ok = math.isfinite(number)
    ok = ok and (minimum is None or number >= minimum) and (not positive or number > 0)
    ok = ok and (maximum is None or number <= maximum)
    if not ok:
        condition = " ".join(["a finite float", " and ".join(wanted)]).strip()
        raise ValueError(f"{name} must be {condition}, got {name}={value!r}")
    return number
