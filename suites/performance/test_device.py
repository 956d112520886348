"""Device time and memory on CUDA, on the built-in models."""

from infergate.suites.device import test_device_memory, test_device_time  # noqa: F401
