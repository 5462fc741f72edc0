"""Collection rules and environment for the whole repository (tests/ and the doctests in convop/).

``convop.distributed`` needs the optional ``mpi`` extra; where it is missing (Python 3.10,
or an install without the ``mpi`` extra), its doctests are not collected instead of failing.

The session never writes to the user's cache: ``CONVOP_CACHE_DIR`` points to a temporary
directory, removed at the end. It runs with ``CONVOP_CALIBRATE=0`` (unless set), so that
every ``method='auto'`` choice comes from the built-in constants and no test depends on how
busy the machine is; tests/test_cost.py turns calibration on where it tests it.
"""

import importlib.util
import os
import shutil
import tempfile

collect_ignore = []
if importlib.util.find_spec("mpi4py") is None or importlib.util.find_spec("pylops_mpi") is None:
    collect_ignore.append("convop/distributed.py")

_CACHE = tempfile.mkdtemp(prefix="convop-test-cache-")


def pytest_configure(config):
    os.environ["CONVOP_CACHE_DIR"] = _CACHE  # children (CLI, examples, MPI runs) inherit it
    os.environ.setdefault("CONVOP_CALIBRATE", "0")


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
