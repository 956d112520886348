"""The run's own limit, ``--infergate-run-timeout`` (``infergate.run_budget``; the option is
``options.py``'s). The test in progress when it is spent gets its timeout verdict; the run
then stops, its reports written ("stopped: the run's limit … was reached"), exit status 2."""

from __future__ import annotations

from infergate import run_budget


def pytest_configure(config):
    run_budget.start(config.getoption(run_budget.OPTION))


def pytest_unconfigure(config):
    run_budget.stop()


def pytest_runtest_teardown(item, nextitem):
    if nextitem is not None and run_budget.spent():
        item.session.shouldstop = f"infergate: {run_budget.reason()}"
