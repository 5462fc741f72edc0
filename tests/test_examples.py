"""Every script in examples/ runs on its own, as a script and as a notebook, and says what it
shows.

The scripts check their own results (they exit non-zero when a check fails), so a return code
of 0 means the example's claims hold; each must also write at least one PNG into ``--out``.
Each runs from an empty folder holding only a copy of it, as after a download from the
gallery: an example that imports a sibling module, or reads a file next to it, fails here.
The gallery also offers each script as a Jupyter notebook, which sphinx-gallery builds
(``docs/_ext/convop_gallery.py``); the notebook test builds it the same way and runs its code
cells as a Jupyter kernel would: no ``__file__``, the kernel's own arguments in ``sys.argv``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
IDS = [path.name for path in EXAMPLES]

# One torch thread per example: these problems are small, and torch's thread pool slows down
# many times over when the cores are shared with other processes (parallel test runs).
# PYTHONPATH is dropped, so that nothing but the installed convop is importable.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}

# Runs a notebook's code cells in order in one namespace, as a Jupyter kernel does: the
# script's __name__ is "__main__", it has no __file__, and sys.argv holds the kernel's own
# arguments (ipykernel is started as "python -m ipykernel_launcher -f kernel.json").
KERNEL = """
import json, sys
cells = json.load(open(sys.argv[1], encoding="utf-8"))["cells"]
sys.argv = ["ipykernel_launcher.py", "-f", "kernel-0.json"]
namespace = {"__name__": "__main__"}
for cell in cells:
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), "<cell>", "exec"), namespace)
"""

# Runs a script (the first argument, the rest its own) as __main__ with psfmodels not
# importable, as where the optional psf extra is not installed.
WITHOUT_PSFMODELS = """
import runpy, sys
sys.modules["psfmodels"] = None  # "import psfmodels" now raises ImportError
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _alone(script: Path, folder: Path) -> Path:
    """A copy of ``script`` in ``folder``, which holds nothing else."""
    folder.mkdir()
    return Path(shutil.copy(script, folder))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _assert_ran(result: subprocess.CompletedProcess, what: str, out: Path) -> None:
    assert result.returncode == 0, (
        f"{what} exited with code {result.returncode}\n--- stderr ---\n{result.stderr}\n"
        f"--- stdout (last 2000 chars) ---\n{result.stdout[-2000:]}"
    )
    assert "All checks passed." in result.stdout, f"{what} did not reach its end"
    assert sorted(out.glob("*.png")), f"{what} wrote no PNG into {out}"


def _gallery():
    """docs/_ext/convop_gallery.py, the gallery's own settings."""
    spec = importlib.util.spec_from_file_location(
        "convop_gallery", ROOT / "docs" / "_ext" / "convop_gallery.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_examples():
    assert EXAMPLES, f"no examples found in {ROOT / 'examples'}"


@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_example_runs_on_its_own(script: Path, tmp_path: Path):
    copy = _alone(script, tmp_path / "download")
    out = tmp_path / "figures"
    result = _run([copy.name, "--quick", "--out", str(out)], cwd=copy.parent)
    _assert_ran(result, f"{script.name}, alone in a folder", out)


def _notebook(script: Path, folder: Path) -> Path:
    """The gallery's notebook of ``script``, alone in ``folder``, set for a quick run."""
    from sphinx_gallery.notebook import python_to_jupyter_cli

    copy = _alone(script, folder)
    cell = _gallery().FIRST_NOTEBOOK_CELL
    python_to_jupyter_cli([str(copy)], sphinx_gallery_conf={"first_notebook_cell": cell})
    notebook = copy.with_suffix(".ipynb")
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    # the reader sets the options in the first cell; here: a quick run
    source = "".join(cells[0]["source"])
    assert source.count("sys.argv[1:] = []") == 1, source
    cells[0]["source"] = [source.replace("sys.argv[1:] = []", 'sys.argv[1:] = ["--quick"]')]
    notebook.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    copy.unlink()  # a notebook, not the script beside it
    return notebook


def test_widefield_example_falls_back_to_a_gaussian_psf_without_psfmodels(tmp_path: Path):
    """psfmodels is optional: without it the widefield example uses its Gaussian-beam PSF,
    still passes its checks, and says which PSF it used."""
    copy = _alone(ROOT / "examples" / "deconvolve_widefield_3d.py", tmp_path / "download")
    out = tmp_path / "figures"
    result = _run(
        ["-c", WITHOUT_PSFMODELS, copy.name, "--quick", "--out", str(out)], cwd=copy.parent
    )
    _assert_ran(result, f"{copy.name} without psfmodels", out)
    assert "PSF: Gaussian beam (psfmodels is not installed)" in result.stdout, result.stdout


@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_example_reads_its_options_as_a_notebook_sets_them(script: Path, tmp_path: Path):
    """What a notebook changes: the options come from the first cell's ``sys.argv``, and
    there is no ``__file__``. Every example parses ``sys.argv`` and never reads
    ``__file__``; one notebook runs in full below (running all of them would run every
    example a second time in CI for what this checks)."""
    pytest.importorskip("sphinx_gallery")  # the docs extra
    _notebook(script, tmp_path / "download")
    tree = ast.parse(script.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "__file__" not in names, f"{script.name} reads __file__, which a notebook lacks"
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "parse_args"
    ]
    assert calls, f"{script.name} parses no options"


def test_a_notebook_runs_as_a_jupyter_kernel_runs_it(tmp_path: Path):
    pytest.importorskip("sphinx_gallery")  # the docs extra
    notebook = _notebook(ROOT / "examples" / "transposed_is_adjoint.py", tmp_path / "download")
    result = _run(["-c", KERNEL, notebook.name], cwd=notebook.parent)
    _assert_ran(result, f"the notebook {notebook.name}", notebook.parent / "figures")


@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_example_imports_the_dot_test_rather_than_a_copy(script: Path):
    """An example that checks an adjoint imports ``convop.testing``'s checks: a copy of
    its own, in each script that needs one, is what drifts."""
    import convop.testing

    tree = ast.parse(script.read_text())
    own = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    copied = sorted(own & set(convop.testing.__all__))
    assert not copied, f"{script.name} defines its own {copied}: import convop.testing's"


@pytest.mark.parametrize("script", EXAMPLES, ids=IDS)
def test_example_says_what_it_shows(script: Path):
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.relative_to(ROOT)} has no module docstring"
