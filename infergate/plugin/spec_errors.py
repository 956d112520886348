"""A model whose ``forward`` takes other inputs, or returns other outputs, than its ModelSpec
declares is the spec's error, not the backend's. Only building or running the model shows it,
so the first test that does ends the session with one usage error naming the model file and
the field, instead of a failure for every combination."""

from __future__ import annotations

import pytest

from infergate.build.model_outputs import MISMATCHES, ForwardMismatch
from infergate.isolation import WorkerError
from infergate.models import defined_in

_KEY = "infergate_spec_error"  # a report's user property: reaches xdist's controller too


def pytest_configure(config):
    config.pluginmanager.register(SpecErrors(), "infergate-spec-errors")


def _mismatch(exc: BaseException | None) -> tuple[str, str]:
    """(field, message) of the mismatch where ``exc`` is one or was caused by one (in this
    process or in a worker), else ("", "")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ForwardMismatch):
            return exc.FIELD, str(exc)
        if isinstance(exc, WorkerError) and exc.kind in MISMATCHES:
            return MISMATCHES[exc.kind].FIELD, exc.message
        exc = exc.__cause__ or exc.__context__
    return "", ""


class SpecErrors:
    def __init__(self):
        self.usage = ""
        self.session = None

    def pytest_sessionstart(self, session):
        self.session = session

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        combo = getattr(getattr(item, "callspec", None), "params", {}).get("combo")
        field, message = _mismatch(call.excinfo.value) if call.excinfo and combo else ("", "")
        if message:
            usage = (f"{defined_in(combo.spec)}: ModelSpec {combo.spec.name!r}: "
                     f"{field}: {ForwardMismatch.detail(message)}")
            report.longrepr = usage  # the backend's traceback says nothing more
            report.user_properties.append((_KEY, usage))
        return report

    def pytest_runtest_logreport(self, report):
        usage = dict(report.user_properties).get(_KEY)
        if usage and not self.usage:
            self.usage = usage
            self.session.shouldstop = "a ModelSpec does not match its model's forward"

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session):
        try:
            return (yield)
        finally:
            # An xdist worker only stops; its controller, which saw the report, says why.
            if self.usage and not hasattr(session.config, "workerinput"):
                raise pytest.UsageError(self.usage)
