"""This repo as the plugin's reference user: the equivalence test on the built-in models."""

from infergate.suites.equivalence import test_equivalence  # noqa: F401
