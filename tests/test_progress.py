"""Progress lines: one per step that takes time."""

import threading

from infergate import progress


def test_a_quick_step_is_silent_a_slow_one_says_it_started_and_ended(monkeypatch):
    """A 0.0 s step was two lines ("… (cache miss) …", then "… done in 0.0 s"): now a step
    speaks only once it takes time (issue 24, defect 5). Controlled timings, no wall clock."""
    said = []
    monkeypatch.setattr(progress, "_sink", said.append)
    clock = iter([100.0, 100.0, 200.0, 207.5])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    timers = []

    class Timer:  # fires when the test says, not on the clock
        def __init__(self, _delay, call):
            self.call, self.cancelled, self.daemon = call, False, False
            timers.append(self)

        def start(self):
            pass

        def cancel(self):
            self.cancelled = True

    monkeypatch.setattr(threading, "Timer", Timer)
    with progress.step("exporting quick"):
        pass
    assert said == []
    with progress.step("compiling slow"):
        timers[-1].call()  # still running after STILL_RUNNING_S
    assert said == ["[infergate] compiling slow ...", "[infergate] compiling slow done in 7.5 s"]


def test_a_progress_line_stands_on_a_line_of_its_own_between_quiet_mode_s_dots(pytester):
    """`pytest -q` writes its dots with no file name to end the line on: a progress line
    said mid-line was glued to them (".[infergate] exporting ...", issue 24, defect 5)."""
    pytester.makepyfile(test_steps="""
        from infergate import progress

        def test_one():
            pass

        def test_two():
            progress.say("exporting m to ONNX done in 3.6 s")

        def test_three():
            pass
    """)
    for verbosity in (("-q",), ()):  # dots alone; a file name, then its dots
        result = pytester.runpytest(*verbosity, "-p", "no:randomly")
        result.assert_outcomes(passed=3)
        lines = result.outlines
        said = lines.index("[infergate] exporting m to ONNX done in 3.6 s")  # a line alone
        assert lines[said - 1].strip(), lines  # and no blank line before it
