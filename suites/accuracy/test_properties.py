"""Dynamic shapes and batch invariance, drawn by hypothesis, on the built-in models."""

from infergate.suites.properties import (  # noqa: F401
    test_batch_invariance,
    test_dynamic_shapes_match_pytorch,
)
