# infergate's accuracy and performance tests, judged on this repo's models (models/).
from infergate.suites import *  # noqa: F403
