"""Instructions per inference under callgrind, on the built-in models."""

from infergate.suites.instructions import test_instructions  # noqa: F401
