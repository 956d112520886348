"""The plugin is installed, not listed in a conftest (issue 14): its pytest11 entry point
registers it in every session of the environment, where it must write nothing unless the
session collects infergate's tests."""

import infergate.plugin


def test_the_plugin_comes_from_its_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.get_plugin("infergate") is infergate.plugin
    assert pytestconfig.pluginmanager.get_plugin("infergate.plugin.matrix") is not None


def test_a_session_without_infergate_tests_writes_nothing(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # pytest-benchmark's own folder, and Python's bytecode where it writes it (not under
    # PYTHONDONTWRITEBYTECODE), are not infergate's.
    left = {p.name for p in pytester.path.iterdir()} - {".benchmarks", "__pycache__"}
    assert left == {"test_plain.py"}  # no reports/, no .cache/


def test_p_no_infergate_turns_it_off(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest("-p", "no:infergate", "--infergate-tier", "full")
    assert "unrecognized arguments: --infergate-tier" in result.stderr.str()
