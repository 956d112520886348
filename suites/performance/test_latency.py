"""Latency against the stored baseline, on the built-in models."""

from infergate.suites.latency import test_latency  # noqa: F401
