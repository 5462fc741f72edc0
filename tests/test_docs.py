"""The documentation cannot go stale.

Every ```python block in README.md and docs/*.md runs; the dependency lists match
pyproject.toml; the API reference, the command-line page, the examples page and the
architecture page cover what the package has. The Sphinx build (``make docs``) checks the
API and the command line again, and that every example comes out of the gallery with a
figure.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

BLOCKS = [
    pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}:{n}")
    for path in DOCUMENTS
    for n, match in enumerate(_BLOCK.finditer(path.read_text()), start=1)
]


def test_readme_has_code_to_run():
    assert any("README.md" in param.id for param in BLOCKS)


@pytest.mark.parametrize("source", BLOCKS)
def test_code_block_runs(source):
    exec(compile(source, "<doc block>", "exec"), {"__name__": "__doc_block__"})


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_pages_list_exactly_the_declared_dependencies(page):
    project = _project()
    listed = set(re.findall(r"`([a-z][a-z0-9_\-]*>=[0-9.]+)`", (ROOT / page).read_text()))
    extras = project["optional-dependencies"]
    declared = set(project["dependencies"]) | set(extras["plot"]) | set(extras["demo"])
    declared |= {requirement.split(";")[0].strip() for requirement in extras["mpi"]}
    assert listed == declared


def test_license_file_is_the_declared_license():
    project = _project()
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()


# ---------------------------------------------------------------------- API reference
def _public_names() -> list[str]:
    """``convop.__all__``, read without importing the package."""
    for node in ast.parse((ROOT / "convop" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("convop/__init__.py has no __all__")


def test_api_page_documents_every_public_name():
    text = (DOCS / "api.md").read_text()
    # ``.. autofunction:: convop.NAME`` (or convop.module.NAME), in rST or MyST form
    targets = re.findall(r"(?:^\.\. |\{)auto\w+(?:::|\})\s+(convop(?:\.\w+)+)", text, re.M)
    shown = {target.rsplit(".", 1)[-1] for target in targets}
    missing = [name for name in _public_names() if name not in shown]
    assert not missing, f"docs/api.md documents no {missing} (autofunction/autoclass blocks)"


# ---------------------------------------------------------------------- command line
def _convop_help(args: list[str]) -> str:
    from convop.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main([*args, "--help"])
    return buffer.getvalue()


def test_cli_page_shows_the_help_of_every_subcommand():
    # the subcommands, as listed under "positional arguments:" (docs/_ext/convop_docs.py)
    section = re.search(r"^positional arguments:\n((?:[ \t]+\S.*\n?)+)", _convop_help([]), re.M)
    assert section, "convop --help has no positional arguments"
    commands = re.findall(r"^ {4}([a-z][\w-]*)(?: {2,}|$)", section.group(1), re.M)
    assert commands, "no subcommands found in convop --help"
    text = (DOCS / "cli.md").read_text()
    shown = {args.strip() for args in re.findall(r"^```\{convop-help\}(.*)$", text, re.M)}
    assert {"", *commands} <= shown


# ---------------------------------------------------------------------- examples
def _examples() -> list[Path]:
    """The scripts the gallery runs: examples/*.py except helpers named _*.py."""
    return [p for p in sorted((ROOT / "examples").glob("*.py")) if not p.name.startswith("_")]


def test_examples_page_has_a_section_per_example():
    text = (DOCS / "examples.md").read_text()
    headings = re.findall(r"^## (.*)$", text, re.M)
    for script in _examples():
        assert any(f"examples/{script.name}" in h for h in headings), (
            f"docs/examples.md has no '## `examples/{script.name}`' section"
        )
        assert f"sphx_glr_gallery_{script.stem}.py" in text, (
            f"docs/examples.md does not link to the gallery page of {script.name}"
        )


@pytest.mark.parametrize("script", _examples(), ids=lambda p: p.name)
def test_example_has_a_docstring_to_title_its_gallery_page(script):
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.name} has no module docstring"
    assert docstring.strip().splitlines()[0].strip()


# ---------------------------------------------------------------------- architecture
def _architecture():
    spec = importlib.util.spec_from_file_location(
        "architecture", DOCS / "_ext" / "architecture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_modules() -> dict[str, list[Path]]:
    """``{module: its files}``; a subpackage (convop/cli/) counts as one module."""
    modules: dict[str, list[Path]] = {}
    for path in sorted((ROOT / "convop").glob("*.py")):
        modules[path.stem] = [path]
    for init in sorted((ROOT / "convop").glob("*/__init__.py")):
        modules[init.parent.name] = sorted(init.parent.rglob("*.py"))
    return modules


def _imports_at_import_time(path: Path, modules: set[str]) -> set[str]:
    """The convop modules that ``path`` imports when it is imported (not in functions, not
    under ``if TYPE_CHECKING``)."""
    package_depth = len(path.relative_to(ROOT / "convop").parts) - 1  # 0: convop/x.py
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    up = node.level - 1 - package_depth  # < 0: inside a subpackage
                    if up < 0:
                        continue  # a sibling in the same subpackage
                    parts = (node.module or "").split(".") if node.module else []
                else:
                    if not (node.module or "").startswith("convop"):
                        continue
                    parts = node.module.split(".")[1:]
                if parts and parts[0]:
                    found.add(parts[0])
                else:  # from . import a, b
                    found.update(a.name for a in node.names if a.name in modules)
                    if any(a.name not in modules for a in node.names):
                        found.add("__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "convop" and len(parts) > 1:
                        found.add(parts[1])
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def test_architecture_lists_every_module_and_imports_go_one_way():
    architecture = _architecture()
    layer = architecture.modules_by_layer()
    modules = _package_modules()
    assert set(layer) == set(modules), (
        "docs/_ext/architecture.py LAYERS and the modules of convop/ differ: "
        f"missing {sorted(set(modules) - set(layer))}, gone {sorted(set(layer) - set(modules))}"
    )
    page = (DOCS / "architecture.md").read_text()
    assert not [m for m in modules if f"`{m}`" not in page], "docs/architecture.md misses a module"
    listed = re.findall(r"^\| `([\w.]+)` \|", page, flags=re.MULTILINE)
    assert not [m for m in listed if m not in modules], "docs/architecture.md lists a lost module"
    wrong = [
        f"{module} (layer {layer[module]}) imports {other} (layer {layer[other]})"
        for module, files in modules.items()
        for path in files
        for other in _imports_at_import_time(path, set(modules))
        if other in layer and other != module and layer[other] > layer[module]
    ]
    assert not wrong, f"imports against the layers of docs/architecture.md: {wrong}"


def test_architecture_picture_is_up_to_date():
    architecture = _architecture()
    assert (DOCS / "_static" / "architecture.svg").read_text() == architecture.svg(), (
        "run: python docs/_ext/architecture.py"
    )
