"""Every script in examples/ runs to completion in --quick mode and writes its figure.

The scripts check their own results (they exit non-zero when a check fails), so a return code
of 0 means the example's claims hold; each must also write at least one PNG into ``--out``.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# examples/_common.py and any other "_" module are the scripts' shared helpers, not examples
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))

# One torch thread per example: these problems are small, and torch's thread pool slows down
# many times over when the cores are shared with other processes (parallel test runs).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {ROOT / 'examples'}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path):
    out = tmp_path / "figures"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script.relative_to(ROOT)} exited with code {result.returncode}\n"
        f"--- stderr ---\n{result.stderr}\n--- stdout (last 2000 chars) ---\n"
        f"{result.stdout[-2000:]}"
    )
    figures = sorted(out.glob("*.png"))
    assert figures, f"{script.relative_to(ROOT)} wrote no PNG into --out {out}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_says_what_it_shows(script: Path):
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.relative_to(ROOT)} has no module docstring"
