"""convop's own Sphinx additions: generated CLI help, completeness checks, public-name links.

Command-line help
    The directive ``convop-help`` (in Markdown: a ```` ```{convop-help} matrix ```` fence)
    shows what ``convop matrix --help`` prints: ``convop.cli.main([..., "--help"])`` runs in
    the Sphinx process at a fixed width of 88 columns and its output becomes a literal block,
    so the page cannot drift from the parser. Without an argument it shows ``convop --help``.
    Every subcommand that ``convop --help`` lists must have its help on some page, or the
    build warns. The directive ``convop-commands`` is the table of the subcommands, each
    linked to its section (``#convop-NAME``) beside the summary ``convop --help`` gives it.

API completeness
    Every name in ``convop.__all__`` must be documented somewhere on the site, under
    ``convop.NAME`` or ``convop.<module>.NAME``, or the build warns.

Gallery
    Every example must come out of the gallery with at least one figure, or the build warns.
    The scripts' docstrings start with a sentence rather than a reST title; the first line of
    such a docstring is made the page's title.

Class signatures
    A class whose base defines ``__new__(cls, *args, **kwargs)`` (scipy's ``LinearOperator``)
    would show as ``ConvOperator(*args, **kwargs)``; it shows its own ``__init__``'s
    parameters instead.

Cross-references
    convop's docstrings name objects by their public path (``:meth:`convop.ConvOperator.apply```)
    or by their defining module's (``:class:`~convop.operator.ConvOperator```), relative to
    the module they are in (``:func:`to_linear```). A reference that Sphinx cannot resolve as
    written is resolved as Python would (import the module, follow the attributes) and linked
    to wherever the site documents that same object. A Python object the site does not
    document (an internal module, or one of torch, numpy, scipy, ...) is shown as code
    without a link. A name Python cannot resolve from there (imported only for type checking)
    links to the one documented object whose path ends with it; otherwise it is a warning.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

HELP_COLUMNS = "88"


# ---------------------------------------------------------------------- command-line help
def help_text(args: list[str]) -> str:
    """What ``convop ARGS --help`` prints, at 88 columns."""
    from convop.cli import main

    buffer = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal's width
    try:
        with contextlib.redirect_stdout(buffer):
            try:
                status = main([*args, "--help"])
            except SystemExit as exit_:  # argparse's --help exits
                status = exit_.code
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    if status not in (0, None):
        raise RuntimeError(f"convop {' '.join([*args, '--help'])} exited with status {status}")
    return buffer.getvalue().rstrip()


def subcommands(text: str) -> list[str]:
    """The subcommands a ``--help`` text lists under "positional arguments"."""
    section = re.search(r"^positional arguments:\n((?:[ \t]+\S.*\n?)+)", text, re.M)
    if section is None:
        return []
    choice = re.search(r"\{([\w,-]+)\}", section.group(1))
    if choice:  # argparse's own display of the choices, without a metavar
        return choice.group(1).split(",")
    return re.findall(r"^ {4}([a-z][\w-]*)(?: {2,}|$)", section.group(1), re.M)


class ConvopHelp(SphinxDirective):
    """A literal block with the output of ``convop [SUBCOMMAND ...] --help``."""

    optional_arguments = 10
    has_content = False

    def run(self) -> list[nodes.Node]:
        args = list(self.arguments)
        try:
            text = help_text(args)
        except Exception as error:
            logger.warning(
                "convop-help %s: %s", " ".join(args), error, location=self.get_location()
            )
            return []
        shown = getattr(self.env, "convop_cli_help", {})
        shown.setdefault(self.env.docname, set()).add(" ".join(args))
        self.env.convop_cli_help = shown
        block = nodes.literal_block(text, text, language="text")
        self.set_source_info(block)
        return [block]


def commands() -> list[tuple[str, str]]:
    """``(name, summary)`` of each subcommand, in the order ``convop --help`` lists them."""
    from convop.cli import SUBCOMMANDS

    return [(command.NAME, " ".join(command.HELP.split())) for command in SUBCOMMANDS]


def _row(*cells: nodes.Node) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        row += nodes.entry("", nodes.paragraph("", "", cell))
    return row


class ConvopCommands(SphinxDirective):
    """A table of the subcommands: ``convop NAME``, linked to its section, and its summary."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        table = nodes.table()
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=20)
        group += nodes.colspec(colwidth=80)
        head = nodes.thead()
        head += _row(nodes.Text("command"), nodes.Text("what it does"))
        body = nodes.tbody()
        for name, summary in commands():
            title = nodes.literal(text=f"convop {name}")
            link = nodes.reference("", "", title, refuri=f"#convop-{name}", internal=True)
            body += _row(link, nodes.Text(summary))
        group += head
        group += body
        self.set_source_info(table)
        return [table]


def _purge_help(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "convop_cli_help", {}).pop(docname, None)


def _merge_help(app: Sphinx, env: BuildEnvironment, docnames: Any, other: BuildEnvironment):
    env.convop_cli_help = {
        **getattr(env, "convop_cli_help", {}),
        **getattr(other, "convop_cli_help", {}),
    }


# ---------------------------------------------------------------------- completeness checks
def _check_consistency(app: Sphinx, env: BuildEnvironment) -> None:
    import convop

    documented = set(env.get_domain("py").objects)
    for name in convop.__all__:
        if f"convop.{name}" not in documented and not any(
            path.startswith("convop.") and path.endswith(f".{name}") for path in documented
        ):
            logger.warning(
                "convop.%s is in convop.__all__ but no page documents it (autofunction, "
                "autoclass, ... on docs/api.md)",
                name,
            )

    _check_gallery(app)

    shown = set().union(*getattr(env, "convop_cli_help", {}).values())
    commands = subcommands(help_text([]))
    if not commands:
        logger.warning("`convop --help` lists no subcommands under 'positional arguments'")
    for command in ["", *commands]:
        if command not in shown:
            logger.warning(
                "no page shows `convop %s--help`: add a {convop-help} %s block (docs/cli.md)",
                f"{command} " if command else "",
                command,
            )


def _check_gallery(app: Sphinx) -> None:
    """Every example of the gallery has at least one figure (the gallery is made first)."""
    conf = app.config.sphinx_gallery_conf
    if str(conf.get("plot_gallery", True)) == "False":
        return  # the examples were not run (CONVOP_DOCS_EXAMPLES=skip): no figures to check
    examples = Path(conf["examples_dirs"])
    images = Path(app.srcdir) / conf["gallery_dirs"] / "images"
    pattern = re.compile(conf["filename_pattern"])
    ignore = re.compile(conf["ignore_pattern"])
    for script in sorted(examples.glob("*.py")):
        path = script.as_posix()
        if ignore.search(path) or not pattern.search(path):
            continue
        if not list(images.glob(f"sphx_glr_{script.stem}_[0-9][0-9][0-9].png")):
            logger.warning(
                "examples/%s: no figure in the gallery (the script must write a PNG into "
                "its --out folder)",
                script.name,
            )


# ---------------------------------------------------------------------- gallery titles
_GALLERY_TITLE = re.compile(
    r"(\.\. _sphx_glr_[\w-]+\.py:\n\n+)(?P<first>[^\n]+)\n(?P<rest>(?:[^\n]+\n)*)",
)


def _gallery_title(app: Sphinx, docname: str, source: list[str]) -> None:
    """Make the first line of an example's docstring its page's title, if it has none."""
    gallery = app.config.sphinx_gallery_conf["gallery_dirs"]
    if not docname.startswith(f"{gallery}/") or docname.endswith("/index"):
        return
    match = _GALLERY_TITLE.search(source[0])
    if match is None:
        return
    first, rest = match.group("first"), match.group("rest")
    if rest and set(rest.splitlines()[0].strip()) <= set("=-~^*#+'\"`:._") and rest.strip():
        return  # already a title (an underlined line)
    title = first.strip().removesuffix(".")
    heading = f"{title}\n{'=' * len(title)}\n\n"
    source[0] = source[0][: match.start("first")] + heading + rest + source[0][match.end() :]


# ---------------------------------------------------------------------- class signatures
def _class_signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: Any
) -> tuple[str, Any] | None:
    if what != "class" or signature != "(*args, **kwargs)" or "__init__" not in vars(obj):
        return None
    init = inspect.signature(obj.__init__)
    parameters = [
        p.replace(annotation=inspect.Parameter.empty) for p in list(init.parameters.values())[1:]
    ]
    signature = init.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
    return str(signature), None


# ---------------------------------------------------------------------- cross-references
def _import_object(path: str) -> tuple[bool, Any]:
    """``(True, object)`` for a dotted path Python can resolve, else ``(False, None)``."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


def _documented_paths(env: BuildEnvironment) -> dict[int, str]:
    """``{id(object): documented path}`` for every convop object on the site."""
    objects = env.get_domain("py").objects
    cache = getattr(env, "_convop_documented", None)
    if cache is not None and cache[0] == len(objects):
        return cache[1]
    paths: dict[int, str] = {}
    for path in sorted(objects, key=len):  # the shortest documented path of an object wins
        found, obj = _import_object(path)
        if found and not isinstance(obj, (str, int, float, bool, type(None))):
            paths.setdefault(id(obj), path)
    env._convop_documented = (len(objects), paths)
    return paths


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = []
    if module and cls:
        candidates.append(f"{module}.{cls}.{target}")
    if module:
        candidates.append(f"{module}.{target}")
    candidates += [target, f"builtins.{target}"]
    for candidate in candidates:
        found, obj = _import_object(candidate)
        if not found:
            continue
        path = _documented_paths(env).get(id(obj))
        if path is not None:
            domain = env.get_domain("py")
            resolved = domain.resolve_xref(
                env, node["refdoc"], app.builder, "obj", path, node, contnode
            )
            if resolved is not None:
                return resolved
        return contnode  # a real object the site does not document: code, no link
    # A name Python cannot resolve from the docstring's module (imported there only for type
    # checking, say): the one documented object whose path ends with it.
    domain = env.get_domain("py")
    matches = [path for path in domain.objects if path.endswith(f".{target}")]
    if len(matches) == 1:
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, "obj", matches[0], node, contnode
        )
    return None  # nitpicky: a warning


# numpydoc prefixes each docstring's citation labels with a hash (``[1]_`` becomes
# ``[R1a2b3c4d5e6f-1]_``) so that two docstrings on one page can both have a ``[1]``, and puts
# the labels back when the doctree is read. Sphinx has by then turned the citations in the
# text into ``pending_xref`` nodes without the back-references numpydoc follows, so their
# text keeps the hash: this puts ``[1]`` back there too (the link still targets the label).
_NUMPYDOC_CITATION = re.compile(r"^\[R[0-9a-f]{12}-(.+)\]$")


def _relabel_citations(app: Sphinx, doctree: nodes.document) -> None:
    from sphinx.addnodes import pending_xref

    for xref in doctree.findall(pending_xref):
        if xref.get("refdomain") != "citation" or len(xref.children) != 1:
            continue
        text = xref.children[0]
        match = _NUMPYDOC_CITATION.match(text.astext())
        if match:
            label = f"[{match.group(1)}]"
            xref.replace(text, nodes.inline(label, label))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("convop-help", ConvopHelp)
    app.add_directive("convop-commands", ConvopCommands)
    app.connect("env-purge-doc", _purge_help)
    app.connect("env-merge-info", _merge_help)
    app.connect("env-check-consistency", _check_consistency)
    app.connect("source-read", _gallery_title)
    app.connect("missing-reference", _missing_reference)
    app.connect("autodoc-process-signature", _class_signature)
    app.connect("doctree-read", _relabel_citations)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
