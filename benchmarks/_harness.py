"""The harness of convop's benchmarks: a benchmark file holds only its cases, anchors and
goals; this module times, watches for disturbed runs, keeps the goal rows and reports.

- :func:`main`: the options every benchmark takes (``--quick``, ``--markdown``, ``--write
  FILE``, ``--goals 1,5``, ``--repeats N``) and its sections (:class:`Section`), each run in
  a fresh process (``script.py [options] --section N --dump FILE``, reporting back in JSON):
  a ratio must not depend on which sections ran before it, since the heap, the thread pools
  and the caches carry over within a process (30 ``lsqr`` iterations: 831 ms through PyLops
  and 397 ms through convop in a fresh process, 660 ms and 452 ms after other sections).
- :class:`Watch`: the share of the CPUs other processes used (``/proc/stat`` less the
  benchmark's own CPU time), per section and for the whole run; above :data:`QUIET` the run
  says it was disturbed (on 2 cores a busy neighbour stalls every parallel region of torch).
- :class:`Goal`: a measured value, its anchor, its bound and a verdict (pass, FAIL, info,
  skipped, ERROR). A section that raises is an ERROR row and the run goes on; the exit
  status is 0 either way (2 for a wrong command line).
- :func:`interleaved`: medians of loops of calls (each >= 10 ms, after 0.1 s of warm-up)
  taken in rounds that take turns, so that the machine's drift (up to 2x within a minute on
  this VM) falls alike on both sides of a ratio; for torch work only: alternating torch's
  spinning OpenMP workers with numpy's threads slows both, so numpy-based anchors are timed
  one after the other (:func:`timeit`).
- The report: console lines as it goes; Markdown (header, goals, notes, tables, every
  timing), merged into FILE between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
  (NAME: the script's name; appended, or a new file, where the markers are missing).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

NAN = float("nan")
QUIET = 0.10  # others' share of the CPUs above which a measurement was disturbed


# ---------------------------------------------------------------------- timing and checks
def timeit(fn: Callable[[], object], repeats: int, budget: float = 10.0) -> float:
    """:func:`interleaved` of ``fn`` alone."""
    return interleaved({"": fn}, repeats, budget)[""]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, budget: float = 20.0,
                loops: bool = True) -> dict[str, float]:  # fmt: skip
    """Median time per call of each of ``fns`` over ``repeats`` rounds of one timed loop of
    each (fewer rounds beyond ``budget`` seconds; a call slower than ``budget`` is timed
    once, cold). ``loops=False``: one call a round and no warm-up (whole solves)."""
    number, cold, per_round = dict.fromkeys(fns, 1), {}, 0.0
    for name, fn in fns.items() if loops else ():  # warm-up: heap grown, thread pools started
        start = time.perf_counter()
        fn()
        cold[name] = first = time.perf_counter() - start
        while first <= budget and time.perf_counter() - start < 0.1:
            fn()
        number[name] = max(1, int(0.01 / max(first, 1e-9)))
        per_round += first * number[name] if first <= budget else 0.0
    if loops:
        repeats = max(1, min(repeats, int(budget / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns if cold.get(name, 0) <= budget}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            for _ in range(number[name]):
                fns[name]()
            times[name].append((time.perf_counter() - start) / number[name])
    return {name: statistics.median(times[name]) if name in times else cold[name] for name in fns}


def timed(fn: Callable[[], object], repeats: int, budget: float = 10.0) -> tuple[float, object]:
    """:func:`timeit` of ``fn`` and what its last call returned (for the caller to check)."""
    out: list[object] = [None]

    def call() -> None:
        out[0] = fn()

    return timeit(call, repeats, budget), out[0]


def check(actual, expected, what: str, rtol: float, scale: float | None = None) -> float:
    """``max|actual - expected| <= rtol * scale`` (default scale ``max|expected|``), else an
    AssertionError naming ``what``; returns the error relative to the scale."""
    import numpy as np

    actual, expected = (np.asarray(a.resolve_conj().detach() if hasattr(a, "resolve_conj") else a)
                        for a in (actual, expected))  # fmt: skip
    scale = float(np.abs(expected).max()) if scale is None else scale
    err = float(np.abs(actual.reshape(expected.shape) - expected).max())
    if not err <= rtol * scale:
        raise AssertionError(f"{what}: max error {err:.2e} > {rtol:.0e} x scale {scale:.2e}")
    return err / max(scale, 1e-300)


def shown(seconds: float) -> str:
    """``'41.2 us'``, ``'3.05 ms'``, ``'1.55 s'``: three significant digits; ``'—'`` for NaN."""
    if seconds != seconds:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


# ---------------------------------------------------------------------- other processes
def _stat() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot: ``/proc/stat`` less idle and
    iowait (steal, a VM's CPU taken by the host, counts as busy); NaN where it is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz
    return NAN, NAN


def own_cpu() -> float:
    """CPU seconds of this process and of its finished (waited for) children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Watch:
    """The share of the machine's CPUs that other processes use from now on; ``own`` gives
    the benchmark's own CPU seconds (an MPI benchmark's sum over its ranks is collective:
    every rank then makes the Watch and calls :meth:`others`)."""

    def __init__(self, own: Callable[[], float] = own_cpu) -> None:
        self.own, self.start = own, (*_stat(), own())

    def others(self) -> float:
        busy, total = _stat()
        own = self.own()
        if not total - self.start[1] > 0:  # NaN: no /proc/stat; 0: not one tick elapsed
            return NAN if total != total else 0.0
        share = (busy - self.start[0] - (own - self.start[2])) / (total - self.start[1])
        return max(0.0, share)


def wait_for_quiet(longest: float) -> float:
    """Wait (at most ``longest`` seconds) for a second in which the CPUs are at most
    :data:`QUIET` busy; returns the busy share of the last second watched."""
    deadline = time.monotonic() + longest
    while True:
        busy0, total0 = _stat()
        time.sleep(1.0)
        busy1, total1 = _stat()
        busy = (busy1 - busy0) / max(1e-9, total1 - total0)
        if not busy > QUIET or time.monotonic() >= deadline:
            return busy


# ---------------------------------------------------------------------- the report
@dataclass
class Timing:
    """One timed row: what ran (``method``) on which case, its median, and a note."""

    group: str
    case: str
    method: str
    seconds: float
    note: str = ""


def value_text(value: float, unit: str) -> str:
    """A goal's number: ``unit`` 's' (seconds), '%', 'dB', or a suffix such as 'x'."""
    if value != value:
        return "—"
    if unit in ("s", "%", "dB"):
        return {"s": shown(value), "%": f"{value:.1%}", "dB": f"{value:+.2f} dB"}[unit]
    return f"{value:.3g}{unit}"


@dataclass
class Goal:
    """One row of the goals table: ``value`` measured against ``anchor`` and bounded by
    ``bound`` (at most, or at least with ``at_least``; ``None``: shown for information).
    ``also`` holds the row's other conditions, which its ``detail`` states."""

    goal: int
    what: str
    value: float = NAN
    bound: float | None = None
    unit: str = "x"
    anchor: str = ""
    detail: str = ""
    at_least: bool = False
    also: bool = True
    error: str = ""

    @property
    def verdict(self) -> str:
        if self.error or self.value != self.value or self.bound is None:
            return "ERROR" if self.error else "skipped" if self.value != self.value else "info"
        within = self.value >= self.bound if self.at_least else self.value <= self.bound
        return "pass" if within and self.also else "FAIL"

    @property
    def bound_text(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return "—" if self.bound is None else f"{sign} {value_text(self.bound, self.unit)}"

    def cells(self) -> list[str]:
        verdict = {"FAIL": "**FAIL**", "ERROR": "**ERROR**"}.get(self.verdict, self.verdict)
        return [str(self.goal), self.what, value_text(self.value, self.unit), self.anchor or "—",
                self.bound_text, verdict, self.error or self.detail]  # fmt: skip


@dataclass
class Report:
    """What a run measured: timings, goal rows, notes, tables and free-form ``data``."""

    settings: argparse.Namespace
    echo: bool = True  # print as it goes (an MPI benchmark: rank 0 only)
    timings: list[Timing] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)  # section -> others' CPU share

    @property
    def quick(self) -> bool:
        return self.settings.quick

    @property
    def repeats(self) -> int:
        return self.settings.repeats

    def say(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)

    def record(self, group: str, case: str, method: str, seconds: float, note: str = "") -> float:
        self.timings.append(Timing(group, case, method, seconds, note))
        self.say(f"  {group:8s} {case:34s} {method:52s} {shown(seconds):>10s}  {note}")
        return seconds

    def goal(self, goal: int, what: str, value: float = NAN, bound: float | None = None,
             **fields) -> Goal:  # fmt: skip
        row = Goal(goal, what, value, bound, **fields)
        self.goals.append(row)
        self.say(f"  -> goal {goal}: {what}: {value_text(value, row.unit)} [{row.verdict}] "
                 f"{row.error or row.detail}")  # fmt: skip
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.say(f"  note: {text}")

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self.tables.append({"title": title, "header": header, "rows": rows})
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        self.say(f"\n{title}\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths))
                                            for r in [header, *rows]))  # fmt: skip

    @contextlib.contextmanager
    def section(self, goal: int, what: str) -> Iterator[None]:
        """Run one part; an exception becomes an ERROR row of ``goal`` and the run goes on."""
        try:
            yield
        except Exception as exc:  # the run must report every other goal
            self.goal(goal, what, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    def dump(self) -> dict:
        return {"timings": [dataclasses.asdict(t) for t in self.timings],
                "goals": [dataclasses.asdict(g) for g in self.goals],
                "notes": self.notes, "tables": self.tables, "data": self.data}  # fmt: skip

    def merge(self, found: dict) -> None:
        self.timings += [Timing(**row) for row in found["timings"]]
        self.goals += [Goal(**row) for row in found["goals"]]
        self.notes, self.tables, self.data = (self.notes + found["notes"],
                                              self.tables + found["tables"],
                                              self.data + found["data"])  # fmt: skip


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in cells]
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def markdown(report: Report, header: list[str]) -> str:
    """The header lines, a count of verdicts, the goals table, the notes, the tables, and
    every timing."""
    counts = {v: sum(g.verdict == v for g in report.goals)
              for v in ("pass", "FAIL", "ERROR", "skipped", "info")}  # fmt: skip
    out = [*(f"- {line}" for line in header), ""]
    out += [f"**Goals**: {', '.join(f'{n} {v}' for v, n in counts.items() if n) or 'none'}.", ""]
    goals = [g.cells() for g in sorted(report.goals, key=lambda g: g.goal)]
    out += [md_table(["goal", "case", "measured", "anchor", "bound", "verdict", "detail"], goals)]
    out += [""]
    if report.notes:
        out += ["**Notes**", "", *(f"- {note}" for note in report.notes), ""]
    for t in report.tables:
        out += [f"**{t['title']}**", "", md_table(t["header"], t["rows"]), ""]
    if report.timings:
        rows = [[t.group, t.case, t.method, shown(t.seconds), t.note] for t in report.timings]
        out += ["**Every timing**", "", md_table(["group", "case", "method", "median", "note"],
                                                  rows)]  # fmt: skip
    return "\n".join(out).rstrip()


def merge_into(path: Path, name: str, block: str | None = None) -> None:
    """Put ``block`` between ``name``'s markers in ``path`` (written to a temporary name,
    read back, then renamed into place); with no ``block``, only check that it can."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else ""
    if not (text.count(begin) == text.count(end) < 2 and text.find(begin) <= text.find(end)):
        raise ValueError(f"{path} must hold {begin} once, then {end} once, or neither")
    if block is None:
        return
    if begin in text:
        head, tail = text.split(begin)[0], text.split(end)[1]
    else:  # appended after a blank line, or a new file
        head, tail = (text.rstrip() + "\n\n" if text else ""), "\n"
    new = f"{head}{begin}\n{block}\n{end}{tail}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    if tmp.read_text() != new:
        raise OSError(f"{tmp} did not read back as written")
    tmp.replace(path)


def machine() -> list[str]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, IndexError):
        cpu = Path("/proc/cpuinfo").read_text().split("model name")[1].split("\n")[0]
        cpu = cpu.split(":", 1)[1].strip()
    versions = [f"Python {platform.python_version()}"]
    for package in ("convop", "torch", "numpy", "scipy", "pylops", "deepinv", "mpi4py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    blas = ""
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        pools = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        blas = "; BLAS: " + ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in pools
        )
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("CONVOP_")]
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return [
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores available (os.cpu_count() "
        f"{os.cpu_count()}), {ram:.0f} GiB RAM; {platform.system()} {platform.release()}",
        ", ".join(versions),
        f"torch threads: {torch.get_num_threads()} (interop "
        f"{torch.get_num_interop_threads()}){blas}; {', '.join(env) or 'no CONVOP_*'}",
    ]


# ---------------------------------------------------------------------- sections and main
@dataclass
class Section:
    """One part of a benchmark, run in a process of its own: ``run(report)`` measures the
    goals numbered ``goals`` (an exception it lets out: an ERROR row of the first)."""

    name: str
    run: Callable[[Report], None]
    goals: tuple[int, ...] = (0,)


def run_fresh(argv: list[str], index: int, timeout: float | None) -> dict | str:
    """``script *argv --section index --dump FILE`` and what it dumped, or why not."""
    with tempfile.TemporaryDirectory() as folder:
        dump = Path(folder) / "section.json"
        command = [sys.executable, os.path.abspath(sys.argv[0]), *argv, "--section", str(index),
                   "--dump", str(dump)]  # fmt: skip
        try:
            done = subprocess.run(command, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"over {timeout:g} s"
        if done.returncode or not dump.is_file():
            return f"exit status {done.returncode}"
        return json.loads(dump.read_text())


def forwarded(argv: Sequence[str]) -> list[str]:
    """The command line less what only the parent does (``--write FILE``, ``--markdown``)."""
    out, skip = [], False
    for arg in argv:
        if not skip and arg != "--markdown" and not arg.startswith("--write"):
            out.append(arg)
        skip = arg == "--write"
    return out


def main(doc: str, sections: Sequence[Section] | Callable[[argparse.Namespace], list[Section]],
         *, options: Callable[[argparse.ArgumentParser], None] | None = None,
         repeats: tuple[int, int] = (3, 7), fresh: bool = True, retry: float = 0.0,
         timeout: float | None = None, finish: Callable[[Report], None] | None = None,
         echo: bool = True, own: Callable[[], float] = own_cpu) -> int:  # fmt: skip
    """Parse the common options (and ``options``), run the sections, report.

    ``sections``: a list, or a function of the options giving it (the same in every
    process). ``repeats``: the default ``--repeats`` with and without ``--quick``. ``fresh``:
    each section in a process of its own. ``retry``: seconds that may go to running a
    disturbed section once more, after waiting for a quiet second. ``timeout``: a section's
    longest. ``finish(report)``: after the sections, before the verdicts. ``echo``: print
    and write (False on all but one MPI rank).
    """
    argv, name = sys.argv[1:], Path(sys.argv[0]).stem
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer repeats")
    parser.add_argument("--markdown", action="store_true", help="print the report as Markdown")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help="merge the Markdown report "
        f"into FILE between <!-- {name}:begin --> and <!-- {name}:end -->",
    )
    parser.add_argument("--goals", help="comma-separated goal numbers to run (default: all)")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {repeats[1]}, "
                        f"{repeats[0]} with --quick)")  # fmt: skip
    parser.add_argument("--section", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or repeats[not args.quick]
    chosen = list(sections(args) if callable(sections) else sections)
    if args.section is not None:  # a section's own process
        found = run_here(args, chosen[args.section], echo)
        args.dump.write_text(json.dumps(found))
        return 0
    known = wanted = {g for s in chosen for g in s.goals}
    if args.goals is not None:
        try:
            wanted = {int(g) for g in args.goals.split(",")}
        except ValueError:
            wanted = set()
        if not wanted or not wanted <= known:
            parser.error(f"--goals: expected some of {sorted(known)}, got {args.goals!r}")
        if args.write is not None:
            parser.error("--write needs every goal (leave out --goals)")
    try:
        if args.write is not None:
            merge_into(args.write, name)
    except ValueError as exc:
        parser.error(str(exc))

    started, report, header = time.perf_counter(), Report(args, echo=echo), machine()
    report.say("\n".join(header))
    whole, spare = Watch(own), retry
    for index, section in enumerate(chosen):
        if not wanted & set(section.goals):
            continue
        report.say(f"\n== {section.name}")
        for attempt in range(2):
            begun, watch = time.monotonic(), Watch(own)
            found = run_fresh(forwarded(argv), index, timeout) if fresh else run_here(
                args, section, echo)  # fmt: skip
            share = watch.others()
            if attempt or not share > QUIET or spare <= 0:
                break
            report.say(f"  disturbed (other processes used {share:.0%} of the CPUs): again")
            wait_for_quiet(min(30.0, spare))
            spare -= time.monotonic() - begun
        if isinstance(found, str):
            for goal in section.goals:
                report.goal(goal, section.name, error=found)
        else:
            report.merge(found)
        report.shares[section.name] = share
        report.say(f"  {time.monotonic() - begun:.0f} s; others used {share:.0%} of the CPUs")
    report.shares["whole run"] = whole.others()
    if finish is not None:
        finish(report)
    if args.goals is not None:
        report.goals = [g for g in report.goals if g.goal in wanted]
    return conclude(report, header, argv, name, time.perf_counter() - started)


def run_here(args: argparse.Namespace, section: Section, echo: bool) -> dict:
    report = Report(args, echo=echo)
    with report.section(section.goals[0], section.name):
        section.run(report)
    return report.dump()


def conclude(report: Report, header: list[str], argv: list[str], name: str,
             elapsed: float) -> int:  # fmt: skip
    """The verdicts, the disturbed-run line, the Markdown and ``--write``."""
    shares = {k: v for k, v in report.shares.items() if v == v}
    quiet = ("quiet" if max(shares.values(), default=0.0) <= QUIET else
             "NOT quiet: the ratios of the busy sections are unreliable")  # fmt: skip
    share_line = ("other processes' share of the CPUs: " + ", ".join(
        f"{k} {v:.0%}" for k, v in shares.items()) + f" ({quiet})")  # fmt: skip
    command = " ".join(["python", f"benchmarks/{name}.py", *forwarded(argv)])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"`{command}`, {stamp}, {elapsed:.0f} s in all", *header, share_line]
    report.say(f"\n{share_line}\nGoals ({elapsed:.0f} s):")
    for g in sorted(report.goals, key=lambda g: g.goal):
        report.say(f"  {g.verdict:7s} goal {g.goal}  {value_text(g.value, g.unit):>9s}  "
                   f"{g.bound_text:9s} {g.what}: {g.error or g.detail}")  # fmt: skip
    failed = sum(g.verdict in ("FAIL", "ERROR") for g in report.goals)
    report.say(f"{failed} goal rows not met or broken" if failed else "every goal row met")
    block = markdown(report, header)
    if report.settings.markdown:
        report.say("\n" + block)
    if report.settings.write is not None and report.echo:
        merge_into(report.settings.write, name, block)
        report.say(f"merged the report into {report.settings.write}")
    return 0
