"""Hypothesis profiles: the only place they are registered and chosen.

The MPI tests in ``tests/mpi`` run only under ``mpiexec ... pytest --with-mpi`` (``make
test-mpi``); a plain ``pytest`` run does not collect them.

- ``dev`` (default): quick local runs.
- ``ci`` (when ``CI`` is set): extends Hypothesis's built-in ``ci`` profile (derandomized,
  no deadline, no database) with enough examples per (ndim, transposed, padding_mode) case.
- ``thorough``: for a long soak, ``pytest --hypothesis-profile=thorough``.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.differing_executors]

settings.register_profile(
    "ci", settings.get_profile("ci"), max_examples=60, suppress_health_check=_SUPPRESS
)
settings.register_profile("dev", max_examples=12, deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=_SUPPRESS
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


def pytest_ignore_collect(collection_path, config):
    """Leave tests/mpi to the mpiexec runs (``--with-mpi``, from pytest-mpi)."""
    if collection_path.name == "mpi" and collection_path.parent.name == "tests":
        with_mpi = config.getoption("--with-mpi", default=False)
        return not with_mpi
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped where torch sees none")


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def no_tf32():
    """cuDNN and cuBLAS use TF32 for float32 by default: compare true float32 with the CPU."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
