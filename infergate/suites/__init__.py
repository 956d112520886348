"""infergate's tests, for a project to collect with one line in one of its test modules::

    from infergate.suites import *  # noqa: F403  infergate's tests, on this project's models

Each test carries its own ``matrix`` mark, so it judges the same combinations wherever it is
imported. The performance tests are in file order (instructions before latency: test_latency
reports the count test_instructions took in the same session).
"""

from infergate.suites.device import test_device_memory, test_device_time
from infergate.suites.equivalence import test_equivalence
from infergate.suites.instructions import test_instructions
from infergate.suites.latency import test_latency
from infergate.suites.memory import test_memory
from infergate.suites.properties import test_batch_invariance, test_dynamic_shapes_match_pytorch
from infergate.suites.task_accuracy import test_task_accuracy

__all__ = [
    "test_equivalence",
    "test_dynamic_shapes_match_pytorch",
    "test_batch_invariance",
    "test_task_accuracy",
    "test_device_time",
    "test_device_memory",
    "test_instructions",
    "test_latency",
    "test_memory",
]
