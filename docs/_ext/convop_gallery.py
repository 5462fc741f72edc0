"""How sphinx-gallery runs convop's examples, and how their figures reach the gallery.

The scripts in ``examples/`` are plain command-line programs: ``python examples/NAME.py
[--quick] [--out DIR]`` checks what it prints, exits non-zero when a check fails, and writes
its PNG figures into ``DIR``, closing its matplotlib figures. sphinx-gallery runs each one in
the Sphinx process as ``__main__`` (conf.py, ``sphinx_gallery_conf``):

- :func:`reset_argv` gives every script ``--quick --out <a fresh folder>`` (quick mode, the
  default, as in CI) or only ``--out <folder>`` when the environment variable
  ``CONVOP_DOCS_FULL=1`` asks for the full-size runs. It also gives the script the
  ``__file__`` and ``__doc__`` it has when run with ``python``: sphinx-gallery sets neither
  (``__doc__`` is blanked), and the scripts read both.
- :func:`png_scraper` is the image scraper: after the script ran, it moves the PNGs the
  script wrote into its ``--out`` folder to the gallery's image folder, in name order, and
  returns the reST that shows them (the first one is the thumbnail). The matplotlib scraper
  would find nothing: the scripts draw on ``matplotlib.figure.Figure`` objects, not pyplot.

Each script stands alone: it imports no sibling module, so the ``.py`` and the Jupyter
notebook that its gallery page offers for download run anywhere convop is installed. A
notebook has no command line, and its kernel's own arguments (``-f kernel.json``) are not
the script's: :data:`FIRST_NOTEBOOK_CELL`, the first cell of every notebook, sets the
script's options. ``tests/test_examples.py`` runs every script, and its notebook, from an
empty folder.

sphinx-gallery imports both functions by name (``"convop_gallery.reset_argv"``); conf.py
puts this folder on ``sys.path``.
"""

from __future__ import annotations

import ast
import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst

#: ``CONVOP_DOCS_FULL=1`` runs the examples at full size (minutes); otherwise ``--quick``.
FULL = os.environ.get("CONVOP_DOCS_FULL", "") not in ("", "0")
#: ``CONVOP_DOCS_EXAMPLES=skip`` builds the gallery's pages without running the examples.
RUN = os.environ.get("CONVOP_DOCS_EXAMPLES", "run") != "skip"

#: The first cell of every example's notebook (``first_notebook_cell`` in conf.py).
FIRST_NOTEBOOK_CELL = """\
# The script's command-line options: [] runs it at full size, ["--quick"] smaller and
# faster; ["--out", "DIR"] writes its figure into DIR instead of ./figures.
import sys

sys.argv[1:] = []
"""

_OUT_KEY = "convop_out_dir"
_base: Path | None = None  # one temporary folder per build, removed when the build ends


def _out_dir(stem: str) -> Path:
    global _base
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="convop-gallery-"))
        atexit.register(shutil.rmtree, _base, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=_base))


def reset_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """Command-line arguments of one example; also sets its ``__file__`` and ``__doc__``."""
    src_file = Path(script_vars["src_file"])
    out = _out_dir(src_file.stem)
    script_vars[_OUT_KEY] = out  # script_vars is the scraper's block_vars
    example_globals = script_vars.get("example_globals")
    if example_globals is not None:
        example_globals["__file__"] = str(src_file)
        tree = ast.parse(src_file.read_text(encoding="utf-8"))
        example_globals["__doc__"] = ast.get_docstring(tree, clean=False)
    return ["--out", str(out)] if FULL else ["--quick", "--out", str(out)]


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """reST for the PNGs the example wrote into its ``--out`` folder since the last block."""
    out = block_vars.get(_OUT_KEY)
    if out is None or not Path(out).is_dir():
        return ""
    images = []
    for png in sorted(Path(out).glob("*.png")):
        target = next(block_vars["image_path_iterator"])
        shutil.move(png, target)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"]) if images else ""
