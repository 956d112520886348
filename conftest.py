pytest_plugins = [
    "fixtures.options",
    "fixtures.matrix",
    "fixtures.results",
    "fixtures.properties",
]
