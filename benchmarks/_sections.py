"""Running a benchmark's sections in fresh processes, and its Markdown report.

Shared by the benchmark scripts.

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


@dataclasses.dataclass
class Timing:
    """One timed row of a report: what ran (``method``) on which case, and its median."""

    group: str
    case: str
    method: str
    seconds: float
    note: str = ""


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


def merge(report, found: dict, timing, goal) -> None:
    """Add what :func:`run_fresh` read back to ``report``, as ``timing`` and ``goal`` rows."""
    report.timings += [timing(**row) for row in found["timings"]]
    report.goals += [goal(**row) for row in found["goals"]]
    report.notes += found["notes"]


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


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def shown(seconds: float) -> str:
    """``'41.2 us'``, ``'3.05 ms'``, ``'1.55 s'``: three significant digits; ``'—'`` for NaN."""
    if seconds != seconds:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def timings_table(report, note: str = "note") -> str:
    """Every timing of ``report`` (rows with group, case, method, seconds, note)."""
    lines = [f"| group | case | method | median | {note} |", "|---|---|---|---:|---|"]
    for t in report.timings:
        cells = (t.group, cell(t.case), cell(t.method), shown(t.seconds), cell(t.note))
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def markdown(report, header: list[str], goals_table: str, note: str = "note") -> str:
    """The report as Markdown: the header lines, a count of verdicts, the goals table, the
    notes and every timing."""
    counts = {v: sum(g.verdict == v for g in report.goals)
              for v in ("pass", "FAIL", "ERROR", "skipped", "info")}  # fmt: skip
    out = [*(f"- {line}" for line in header), ""]
    out += [f"**Goals**: {', '.join(f'{n} {v}' for v, n in counts.items() if n)}.", ""]
    out += [goals_table, ""]
    if report.notes:
        out += ["**Notes**", "", *(f"- {note}" for note in report.notes), ""]
    out += ["**Every timing**", "", timings_table(report, note)]
    return "\n".join(out)
