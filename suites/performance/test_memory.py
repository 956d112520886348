"""Peak memory against the stored baseline, on the built-in models."""

from infergate.suites.memory import test_memory  # noqa: F401
