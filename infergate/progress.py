"""Progress lines for long work (exports, quantization, compiles, measurements), so CI logs
never sit still.

Written to stderr, or to the sink a host installs: the pytest plugin installs one that writes
past pytest's capture, because a test that spends a minute compiling would otherwise look
hung (fd-level capture swallows even ``sys.__stderr__``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

_sink: Callable[[str], None] | None = None


def set_sink(sink: Callable[[str], None] | None) -> None:
    global _sink
    _sink = sink


def say(message: str) -> None:
    line = f"[infergate] {message}"
    if _sink is not None:
        _sink(line)
    else:
        print(line, file=sys.stderr, flush=True)


# A step says it started only once it has run this long (a CI log never sits still on a
# long compile), and that it ended only if it took at least QUIET_S: a cache hit or a quick
# export is silent, a long one is two lines, a failure is always said.
STILL_RUNNING_S, QUIET_S = 5.0, 1.0


@contextmanager
def step(what: str):
    started = threading.Event()

    def announce():
        started.set()
        say(f"{what} ...")

    timer = threading.Timer(STILL_RUNNING_S, announce)
    timer.daemon = True
    timer.start()
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        timer.cancel()
        say(f"{what} failed after {time.perf_counter() - start:.1f} s")
        raise
    timer.cancel()
    took = time.perf_counter() - start
    if started.is_set() or took >= QUIET_S:
        say(f"{what} done in {took:.1f} s")
