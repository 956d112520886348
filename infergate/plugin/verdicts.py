"""How a test ends on a verdict that broke: with its message alone. The frames above it are
infergate's own (fixtures, runners), and the message already says what broke, by how much and
where, so pytest's traceback would only push it down the screen."""

from __future__ import annotations

import pytest


def hold(verdict, message: str | None = None) -> None:
    """Fail the test with ``message`` (default: the verdict's own) unless ``verdict`` holds."""
    __tracebackhide__ = True
    if not verdict:
        pytest.fail(str(verdict) if message is None else message, pytrace=False)
