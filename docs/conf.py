"""Sphinx configuration of convop's documentation site.

Build it with ``make docs`` (``python -m sphinx -W --keep-going -b html docs site``): every
warning is an error. Nothing is fetched from the network, at build time or when a page is
viewed: math is rendered to MathML at build time (``_ext/mathml.py``), the theme ships its
own assets, there is no intersphinx.

- Pages are Markdown (MyST) in this folder; the API reference comes from the numpydoc
  docstrings (autodoc + numpydoc).
- The gallery (``gallery/``, generated) runs every script in ``examples/`` with sphinx-gallery
  and shows its output and figures, with download links. Quick mode by default;
  ``CONVOP_DOCS_FULL=1`` runs the examples at full size, ``CONVOP_DOCS_EXAMPLES=skip``
  builds their pages without running them (what ``make test`` does: the test suite has run
  every example already, each alone in an empty folder). An example is re-run when it
  changed or when the mode changed since the last build.
- ``_ext/convop_docs.py``: the command-line help texts generated from the parser, checks that
  the site documents every public name and every subcommand, and cross-references to
  public names written by their defining module's path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))  # convop itself, when it is not installed

# The examples run in this process, with one torch thread as their tests run them: on a
# busy 2-core machine a second OpenMP thread that loses its core makes them about twice as
# slow. torch reads this when it is imported, which must come after.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import convop_gallery  # noqa: E402

import convop  # noqa: E402

project = "convop"
author = "convop developers"
copyright = "convop developers"
release = convop.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "mathml",
    "convop_docs",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "gallery/*.ipynb", "gallery/*.py", "gallery/*.zip"]
templates_path = []

# Every warning fails the build (-W). References to convop objects must resolve: the
# convop_docs extension shows a name that exists but is not on the site (an internal module)
# as code without a link, and objects of other packages (torch, numpy, scipy, ...) likewise:
# there is no intersphinx, which would fetch their inventories from the network.
nitpicky = True

# ---------------------------------------------------------------------- MyST (the pages)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](conventions.md#5-adjoints-of-the-padding-modes)
myst_dmath_double_inline = True

# ---------------------------------------------------------------------- API reference
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters/Returns sections state the types
autodoc_inherit_docstrings = False  # no scipy LinearOperator docstrings on our methods
numpydoc_show_class_members = False  # members are documented by autodoc's :members:
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# ---------------------------------------------------------------------- the gallery
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "gallery",
    # Every script in examples/ is an example, run and shown (each one stands alone: no
    # helper modules). sphinx-gallery matches filename_pattern (which scripts it runs)
    # against the path and ignore_pattern (which files it leaves out) against the file name.
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"^__init__\.py$",
    "first_notebook_cell": convop_gallery.FIRST_NOTEBOOK_CELL,
    "reset_argv": "convop_gallery.reset_argv",
    "image_scrapers": ("convop_gallery.png_scraper",),
    "within_subsection_order": "FileNameSortKey",
    "run_stale_examples": False,
    "abort_on_example_error": False,  # run them all, then fail with every failing example
    "only_warn_on_example_error": False,
    "download_all_examples": True,
    "remove_config_comments": True,
    "show_memory": False,
    "show_signature": False,
    "write_computation_times": False,
    "min_reported_time": 1e9,  # no "Total running time" line: it differs between builds
    "capture_repr": (),
}
# A build in the other mode (quick / full size) than the last complete one re-runs every
# example; the mode is recorded when a build succeeds (setup() below).
_MODE = "full" if convop_gallery.FULL else "quick"
if not convop_gallery.RUN:
    sphinx_gallery_conf["plot_gallery"] = "False"
    _MODE = "not run"
_MODE_FILE = DOCS / "gallery" / ".convop-mode"
if not _MODE_FILE.is_file() or _MODE_FILE.read_text().strip() != _MODE:
    sphinx_gallery_conf["run_stale_examples"] = True

# ---------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"convop {release}"
html_static_path = ["_static"]
html_css_files = ["convop.css"]
html_show_sourcelink = True
html_copy_source = True
html_last_updated_fmt = None
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 10,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": []}  # the top bar lists every page; no left sidebar


def _record_mode(app, exception) -> None:
    if exception is None:
        _MODE_FILE.parent.mkdir(parents=True, exist_ok=True)
        _MODE_FILE.write_text(_MODE + "\n")


def setup(app) -> None:
    app.connect("build-finished", _record_mode)
