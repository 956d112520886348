"""Progress lines for long work (exports, quantization, compiles, measurements), so CI logs
never sit still.

Written to stderr, or to the sink a host installs: the pytest plugin installs one that writes
past pytest's capture, because a test that spends a minute compiling would otherwise look
hung (fd-level capture swallows even ``sys.__stderr__``).
"""

from __future__ import annotations

import sys
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


@contextmanager
def step(what: str):
    say(f"{what} ...")
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        say(f"{what} failed after {time.perf_counter() - start:.1f} s")
        raise
    say(f"{what} done in {time.perf_counter() - start:.1f} s")
