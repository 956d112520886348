"""SIGTERM (what CI timeouts, GitLab and Kubernetes send) ends a run as Ctrl-C does: the tests
stop, every child is ended (workers, probes, counting processes), and the reports are
written, saying "terminated". The exit status is then 143, as a shell reports SIGTERM."""

from __future__ import annotations

import signal
import threading

import pytest

TERMINATED = pytest.StashKey[bool]()
_PREVIOUS = pytest.StashKey[object]()
EXIT_TERMINATED = 128 + signal.SIGTERM


def pytest_configure(config):
    # Only the controlling process, on its main thread: an xdist worker is ended by its
    # controller, and a handler can only be set from the main thread.
    if hasattr(config, "workerinput") or threading.current_thread() is not threading.main_thread():
        return

    def terminated(signum, frame):
        config.stash[TERMINATED] = True
        raise KeyboardInterrupt("SIGTERM")  # pytest's own interrupt path from here

    config.stash[_PREVIOUS] = signal.signal(signal.SIGTERM, terminated)


def terminated(config) -> bool:
    return config.stash.get(TERMINATED, False)


@pytest.hookimpl(trylast=True)  # after the reports are written
def pytest_sessionfinish(session):
    if terminated(session.config):
        session.exitstatus = EXIT_TERMINATED


def pytest_unconfigure(config):
    previous = config.stash.get(_PREVIOUS, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
