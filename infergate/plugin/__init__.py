"""infergate's pytest plugin, registered by the ``pytest11`` entry point ``infergate``: the
options, the matrix parametrization, isolation, results and reports, performance, history.

Installing infergate turns it on in every pytest run of that environment; a session that
collects none of infergate's tests writes nothing (no reports, no folders), ``-p no:infergate``
turns it off.
"""

# In import order: a module listed after one that imports it would load unrewritten
# (PytestAssertRewriteWarning).
pytest_plugins = [
    "infergate.plugin.termination",
    "infergate.plugin.outputs",
    "infergate.plugin.run_limit",
    "infergate.plugin.options",
    "infergate.plugin.isolation",
    "infergate.plugin.matrix",
    "infergate.plugin.spec_errors",
    "infergate.plugin.performance",
    "infergate.plugin.results",
    "infergate.plugin.history",
    "infergate.plugin.shard",
    "infergate.plugin.properties",
    "infergate.plugin.instruction_counts",
]
