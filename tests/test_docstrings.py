"""numpydoc's validation of the public API: ``convop.__all__`` and the public methods and
properties of its classes.

The checks enforced are those that catch docstrings that lie or mislead: parameters
missing, unknown or out of order, malformed summaries and sections, a generator without
its Yields. Not enforced: "See Also" and extended summaries everywhere, an Examples section
on every property (the classes carry them), a Returns section on one-line accessors.
"""

from __future__ import annotations

import inspect

import pytest

import convop

numpydoc_validate = pytest.importorskip("numpydoc.validate")

CHECKS = {
    "GL01", "GL02", "GL03", "GL05", "GL06", "GL07", "GL09", "GL10",
    "SS01", "SS02", "SS03", "SS04", "SS05", "SS06",
    "PR01", "PR02", "PR03", "PR04", "PR05", "PR06", "PR08", "PR09", "PR10",
    "RT02", "RT04", "RT05", "YD01", "SA02", "SA03", "SA04", "EX02",
}  # fmt: skip


def _public_api() -> list[str]:
    names = []
    for name in convop.__all__:
        obj = getattr(convop, name)
        names.append(f"convop.{name}")
        if inspect.isclass(obj):
            names += [
                f"convop.{name}.{member}"
                for member, value in vars(obj).items()
                if not member.startswith("_") and (callable(value) or isinstance(value, property))
            ]
    return names


@pytest.mark.parametrize("name", _public_api())
def test_public_docstring_passes_numpydoc_validation(name):
    errors = [
        f"{code}: {message}"
        for code, message in numpydoc_validate.validate(name)["errors"]
        if code in CHECKS
    ]
    assert not errors, f"{name}:\n" + "\n".join(errors)
