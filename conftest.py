pytest_plugins = [
    "fixtures.outputs",
    "fixtures.options",
    "fixtures.isolation",
    "fixtures.matrix",
    "fixtures.results",
    "fixtures.history",
    "fixtures.shard",
    "fixtures.properties",
    "fixtures.performance",
    "fixtures.instruction_counts",
    "pytester",  # the harness's own plugin tests (tests/test_plugin.py)
]
