"""Progress lines for long work (exports, quantization, compiles), so CI logs never sit still.

Written to the real stderr, past pytest's capture, because a test that spends a minute
compiling would otherwise look hung.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def say(message: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    print(f"[infergate] {message}", file=stream, flush=True)


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
