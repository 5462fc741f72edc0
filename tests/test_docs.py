"""The documentation cannot go stale.

Every ```python block in README.md and docs/*.md runs; the dependency lists match
pyproject.toml; the API reference, the command-line page and the examples page cover what
the package has. The Sphinx build (``make docs``) checks the API and the command line again,
and that every example comes out of the gallery with a figure.
"""

from __future__ import annotations

import ast
import contextlib
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
    declared = set(project["dependencies"]) | set(extras["plot"])
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
