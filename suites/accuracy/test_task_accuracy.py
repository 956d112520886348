"""Task accuracy on real data, on the built-in models."""

from infergate.suites.task_accuracy import test_task_accuracy  # noqa: F401
