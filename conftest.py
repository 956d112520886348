# infergate's own plugin comes from its pytest11 entry point (pyproject.toml), as in a user's
# repo; pytester serves the harness's own plugin tests (tests/test_plugin.py).
pytest_plugins = ["pytester"]
