"""Is it still right? Every model x backend x precision against PyTorch eager fp32."""

from infergate.plugin.verdicts import hold


def test_equivalence(combo, runner, reference, record, localise):
    outputs = runner.run(reference.feed)
    verdict = reference.judge(outputs, combo.backend.name, combo.precision, label=combo.id)
    record(accuracy=verdict, settings=runner.settings)
    where = localise(verdict)  # the first divergent layer: on failure or on request, else ""
    hold(verdict, f"{verdict}{where}")
