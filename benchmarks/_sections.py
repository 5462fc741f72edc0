"""Running a benchmark's sections in fresh processes, shared by the benchmark scripts.

A section's ratios must not depend on which sections ran before it in the same process
(the heap earlier products grew, thread pools and caches all carry over), so each script
runs every section as ``python script.py --section N --dump FILE`` and reads back what it
measured: the ``timings``, ``goals`` and ``notes`` of its report, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_fresh(script: str, section: int, extra: list[str]) -> dict | str:
    """Run ``script --section N --dump FILE *extra`` and return what it dumped.

    Returns the dumped dict (``timings``, ``goals``, ``notes``: lists of plain rows), or a
    short reason (``'exit status 1'``) when the section broke or wrote nothing.
    """
    with tempfile.TemporaryDirectory() as folder:
        dump = Path(folder) / "section.json"
        command = [sys.executable, script, "--section", str(section), "--dump", str(dump)]
        done = subprocess.run(command + extra)
        if done.returncode or not dump.is_file():
            return f"exit status {done.returncode}"
        return json.loads(dump.read_text())


def write_section(path: Path | None, report) -> None:
    """Dump ``report.timings``, ``report.goals`` (dataclasses) and ``report.notes`` to
    ``path`` as JSON, for :func:`run_fresh` (nothing when ``path`` is ``None``)."""
    if path is None:
        return
    path.write_text(json.dumps({
        "timings": [dataclasses.asdict(t) for t in report.timings],
        "goals": [dataclasses.asdict(g) for g in report.goals],
        "notes": report.notes,
    }))  # fmt: skip
