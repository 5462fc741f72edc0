"""MkDocs hooks (mkdocs.yml ``hooks:``): generated parts of the site, checked in strict mode.

Example figures. docs/examples.md has one ``## `examples/NAME.py` `` section per script in
examples/; each section names its script (``examples/NAME.py``) and shows the figures the
script writes as ``![...](figures/FILE.png)``. Before every build, each script with a figure
missing from docs/figures/ is run as

    python examples/NAME.py --quick --out docs/figures

(one after the other) and the figures are checked to be there. Existing figures are reused,
so a build with every figure present runs no example; delete docs/figures/ (git-ignored) to
redraw them. The build fails, with the script's own error
output, when a script fails, does not accept ``--quick``/``--out`` or does not write a figure
the page shows; and (strict mode) when a script in examples/ has no section on the page.

Command-line help. On docs/cli.md, each line ``<!-- convop ARGS --help -->`` is replaced by
what ``convop ARGS --help`` prints (``convop.cli.main``, run in this process at a fixed width
of 88 columns), so the page cannot drift from the parser.

API completeness. Every name in ``convop.__all__`` (read statically) must have a
``::: convop.NAME`` (or ``::: convop.module.NAME``) block in docs/api.md (strict mode).
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

EXAMPLES_PAGE = "examples.md"
FIGURES = "figures"
TIMEOUT_S = 300  # per example, in quick mode

HELP = re.compile(r"^<!-- convop ((?:[\w-]+ )*)--help -->$", re.MULTILINE)
HELP_COLUMNS = "88"
SCRIPT = re.compile(r"examples/([\w-]+\.py)")
IMAGE = re.compile(r"!\[[^\]]*\]\((figures/[^)\s]+\.png)\)")

log = logging.getLogger("mkdocs.hooks.convop")  # under "mkdocs.": counted by --strict


# ---------------------------------------------------------------------- example figures
def _wanted_figures(root: Path, docs: Path) -> dict[str, list[str]]:
    """``{script name: figures the page shows}`` from docs/examples.md, and its checks."""
    text = (docs / EXAMPLES_PAGE).read_text(encoding="utf-8")
    wanted: dict[str, list[str]] = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:  # level-2 sections
        title = section.splitlines()[0]
        scripts = SCRIPT.findall(section)
        figures = IMAGE.findall(section)
        if not scripts:
            if figures:
                raise PluginError(
                    f"docs/{EXAMPLES_PAGE}, section {title!r}: shows {', '.join(figures)} but "
                    f"names no examples/NAME.py script to make it"
                )
            continue
        if not (root / "examples" / scripts[0]).is_file():
            raise PluginError(
                f"docs/{EXAMPLES_PAGE}, section {title!r}: no such script examples/{scripts[0]}"
            )
        wanted.setdefault(scripts[0], []).extend(figures)
    for script in sorted((root / "examples").glob("*.py")):
        if script.name not in wanted:
            log.warning(
                "examples/%s has no section in docs/%s (a '## ' heading whose section names "
                "examples/%s)",
                script.name,
                EXAMPLES_PAGE,
                script.name,
            )
    return wanted


def _run_example(root: Path, out: Path, name: str) -> None:
    """Run ``examples/NAME.py --quick --out docs/figures``; PluginError if it fails."""
    command = [sys.executable, f"examples/{name}", "--quick", "--out", os.path.relpath(out, root)]
    shown = " ".join(["python", *command[1:]])
    log.info("Drawing the figures of examples/%s: %s", name, shown)
    # one torch thread: on a busy machine two spinning OpenMP threads slow examples ~10x
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        raise PluginError(f"{shown} did not finish within {TIMEOUT_S} s") from error
    if result.returncode != 0:
        hint = ""
        if "unrecognized arguments" in result.stderr:
            hint = (
                f"\nexamples/{name} must accept --quick (a fast run) and --out DIR (where its "
                f"PNG figures go) for the documentation to show its figures."
            )
        raise PluginError(
            f"{shown} failed with exit code {result.returncode}{hint}\n"
            f"--- its stderr (last 3000 characters) ---\n{result.stderr[-3000:]}"
        )
    log.info("examples/%s done in %.1f s", name, time.perf_counter() - start)


def _make_figures(root: Path, docs: Path) -> None:
    wanted = _wanted_figures(root, docs)
    missing = {
        name: [f for f in figures if not (docs / f).is_file()] for name, figures in wanted.items()
    }
    missing = {name: figures for name, figures in missing.items() if figures}
    if not missing:
        return
    (docs / FIGURES).mkdir(parents=True, exist_ok=True)
    for name, figures in sorted(missing.items()):
        # One at a time: each example already uses every core through torch.
        _run_example(root, docs / FIGURES, name)
        still = [f"docs/{f}" for f in figures if not (docs / f).is_file()]
        if still:
            made = sorted(p.name for p in (docs / FIGURES).glob("*.png"))
            raise PluginError(
                f"examples/{name} --quick --out docs/{FIGURES} ran but did not write "
                f"{', '.join(still)}, which docs/{EXAMPLES_PAGE} shows; docs/{FIGURES} holds "
                f"{made or 'no PNG'}"
            )


# ---------------------------------------------------------------------- API completeness
def _public_names(init: Path) -> list[str]:
    """``__all__`` of a package's ``__init__.py``, read without importing it."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def _check_api_page(root: Path, docs: Path) -> None:
    text = (docs / "api.md").read_text(encoding="utf-8")
    # ``::: convop.NAME`` or ``::: convop.module.NAME`` (where it is defined)
    blocks = re.findall(r"^::: (convop\.[\w.]+)", text, flags=re.MULTILINE)
    shown = {path.rsplit(".", 1)[-1] for path in blocks}
    for name in _public_names(root / "convop" / "__init__.py"):
        if name not in shown:
            log.warning(
                "convop.%s is in convop.__all__ but docs/api.md has no '::: convop.%s' block",
                name,
                name,
            )


# ---------------------------------------------------------------------- command-line help
def _help_text(args: list[str]) -> str:
    from convop.cli import main  # imported only for the page that needs it

    buffer = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal width
    try:
        with contextlib.redirect_stdout(buffer):
            status = main([*args, "--help"])
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    if status != 0:
        raise PluginError(f"convop {' '.join([*args, '--help'])} exited with status {status}")
    return buffer.getvalue().rstrip()


# ---------------------------------------------------------------------- MkDocs events
def on_pre_build(config: MkDocsConfig) -> None:
    root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir).resolve()
    _check_api_page(root, docs)
    _make_figures(root, docs)


def on_page_markdown(markdown: str, page, config: MkDocsConfig, files) -> str:
    def replace(match: re.Match) -> str:
        return f"```text\n{_help_text(match.group(1).split())}\n```"

    return HELP.sub(replace, markdown)
