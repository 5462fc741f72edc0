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
