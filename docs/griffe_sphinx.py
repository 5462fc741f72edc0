"""Griffe extension: what Sphinx would do with convop's numpydoc docstrings, for mkdocstrings.

convop's docstrings cross-reference with Sphinx roles (``:func:`to_linear```,
``:meth:`ConvOperator.tosparse```, ``:class:`~convop.geometry.ConvGeometry```), which read
well in ``help()`` but which mkdocstrings would print literally. Once the package is loaded,
every role is resolved in the scope of the object whose docstring holds it (as Sphinx does)
and replaced by a cross-reference to its full path that mkdocs-autorefs turns into a link. A
leading ``~`` shows only the last component, as in Sphinx.

A name that does not resolve in the package is logged as a warning, so the strict build fails
on a broken reference instead of rendering it silently. A name that exists but is not on the
site (an internal module such as ``convop.fft``) is shown as code without a link: the
references are autorefs' "optional" ones.

Two more fixes, for what Markdown and inspection would otherwise show:

- a paragraph ending in ``::`` introduces an (indented) literal block in reStructuredText;
  the ``::`` becomes ``:`` (or disappears after a space), as Sphinx renders it, and the
  indented block stays a Markdown code block;
- inspection (``force_inspection``, needed for runtime-assigned docstrings) gives a
  dataclass field with a default, e.g. ``ConvGeometry.groups = 1``, the docstring of the
  default's type (``int.__doc__``); such borrowed docstrings are dropped;
- inspection cannot tell ``from .padding import pad`` from a definition, so it would list
  ``pad`` among ``convop.functional``'s members: in modules without ``__all__``, names
  imported from elsewhere are marked private (``filters: public`` hides them), and so are
  the special attributes inspection finds on classes (``__weakref__``, ``__dict__``, ...).

Used by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import builtins
import inspect
import logging
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|attr|mod|obj|data|exc|const):`(~?)([\w.]+)`")
LITERAL = re.compile(r"([ \t]?)::$", re.MULTILINE)

# The docstrings that inspection borrows from the type of a class attribute's value.
BORROWED = {
    inspect.cleandoc(t.__doc__)
    for t in vars(builtins).values()
    if isinstance(t, type) and t.__doc__
}

# Under "mkdocs." so that mkdocs counts these warnings in strict mode.
log = logging.getLogger("mkdocs.plugins.convop.griffe_sphinx")


def _resolve(obj: griffe.Object, name: str, package: griffe.Module) -> str:
    """Full path of ``name`` as seen from ``obj``'s docstring."""
    head, _, rest = name.partition(".")
    if head == package.name:
        if rest:
            package[rest]  # KeyError if there is no such member
        return name
    path = obj.resolve(head)  # NameResolutionError if unknown in obj's scope and parents'
    if rest:
        package.modules_collection[f"{path}.{rest}"]  # KeyError if no such member
        path = f"{path}.{rest}"
    return path


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxDocstrings(griffe.Extension):
    """Sphinx roles to links, rST literal-block markers, inspection artefacts (see above)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.is_module and not obj.exports:
                for member in obj.members.values():
                    if member.is_alias and not member.inherited:
                        member.public = False
            if obj.is_attribute and obj.name.startswith("__"):
                obj.public = False
            if obj.docstring is None:
                continue
            if obj.is_attribute and inspect.cleandoc(obj.docstring.value) in BORROWED:
                obj.docstring = None
                continue

            def link(match: re.Match, obj: griffe.Object = obj) -> str:
                tilde, name = match.groups()
                shown = name.rsplit(".", 1)[-1] if tilde else name
                try:
                    path = _resolve(obj, name, pkg)
                except (KeyError, griffe.NameResolutionError, griffe.AliasResolutionError):
                    log.warning(
                        "%s: cannot resolve %s in the docstring of %s",
                        obj.relative_filepath,
                        match.group(0),
                        obj.path,
                    )
                    return f"`{shown}`"
                return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

            text = ROLE.sub(link, obj.docstring.value)
            obj.docstring.value = LITERAL.sub(lambda m: "" if m.group(1) else ":", text)
