"""Run under ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (``make test-mpi``).

Every rank runs every test; products are collective, so each test must take the same path on
all ranks: data are drawn from fixed seeds, Hypothesis is derandomized, and pass/fail is
decided on values reduced over all ranks (:func:`agree`). The session fails when no test
passed, so that a broken MPI set-up (everything skipped) cannot look green.

A job must fail, not hang:

- the first failure ends the session (``--maxfail=1`` unless ``--maxfail`` is given): a rank
  that goes on after a test failed on another rank waits in the next test's collectives;
- each test gets :data:`TEST_TIMEOUT` seconds (pytest-timeout's ``thread`` method, which
  ends the rank's process, and with it the ``mpiexec`` job) unless ``--timeout`` or
  ``PYTEST_TIMEOUT`` sets another limit.

Ranks that disagree on a distributed operator's slabs raise at its first product
(``convop._mpi.halo.check_agreement``); the limits catch any other hang.
"""

from __future__ import annotations

import os

import pytest

#: Seconds one MPI test may take on a rank. The slowest took 22 s on 3 ranks of a busy
#: 2-core machine (load 8); raise it with --timeout (make test-mpi MPI_TEST_TIMEOUT=...).
TEST_TIMEOUT = 60

_PASSED = {"count": 0}


def _under_mpi(config) -> bool:
    return bool(config.getoption("--with-mpi", default=False))


def _timeout_given(config) -> bool:
    return config.getoption("timeout", default=None) is not None or "PYTEST_TIMEOUT" in os.environ


def pytest_configure(config):
    if _under_mpi(config) and not config.getoption("maxfail"):
        config.option.maxfail = 1


def pytest_collection_modifyitems(config, items):
    plugin = config.pluginmanager.hasplugin("timeout")
    if _under_mpi(config) and plugin and not _timeout_given(config):
        for item in items:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT, method="thread"))


def pytest_report_header(config):
    if not _under_mpi(config):
        return None
    if not config.pluginmanager.hasplugin("timeout"):
        limit = "no time limit per test (install pytest-timeout): a hang hangs the job"
    elif _timeout_given(config):
        limit = "the time limit per test given by --timeout or PYTEST_TIMEOUT"
    else:
        limit = f"{TEST_TIMEOUT} s per test"
    return f"MPI tests: stop after {config.getoption('maxfail')} failure(s), {limit}"


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _PASSED["count"] += 1


def pytest_sessionfinish(session, exitstatus):
    with_mpi = session.config.getoption("--with-mpi", default=False)
    if with_mpi and exitstatus == 0 and _PASSED["count"] == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nno MPI test ran: the MPI tests are all skipped or deselected")
