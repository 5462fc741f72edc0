"""Run under ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (``make test-mpi``).

Every rank runs every test; products are collective, so each test must take the same path on
all ranks: data are drawn from fixed seeds, Hypothesis is derandomized, and pass/fail is
decided on values reduced over all ranks (:func:`agree`). The session fails when no test
passed, so that a broken MPI set-up (everything skipped) cannot look green.
"""

from __future__ import annotations

import pytest

_PASSED = {"count": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _PASSED["count"] += 1


def pytest_sessionfinish(session, exitstatus):
    with_mpi = session.config.getoption("--with-mpi", default=False)
    if with_mpi and exitstatus == 0 and _PASSED["count"] == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nno MPI test ran: the MPI tests are all skipped or deselected")
