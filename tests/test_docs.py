"""Every ```python block in README.md and docs/*.md runs, so the documentation cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
