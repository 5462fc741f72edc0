"""Hypothesis profiles: the only place they are registered and chosen.

The MPI tests in ``tests/mpi`` run only under ``mpiexec ... pytest --with-mpi`` (``make
test-mpi``); a plain ``pytest`` run does not collect them.

- ``dev`` (default): quick local runs.
- ``ci`` (when ``CI`` is set): extends Hypothesis's built-in ``ci`` profile (derandomized,
  no deadline, no database) with enough examples per (ndim, transposed, padding_mode) case.
- ``thorough``: for a long soak, ``pytest --hypothesis-profile=thorough``.
"""

import os

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
