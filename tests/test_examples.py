"""Every script in examples/ runs to completion: they check their own results and exit 0."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {ROOT / 'examples'}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path):
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
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
