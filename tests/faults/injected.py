"""Faults as they happen in the field, planted in real backends: a real SIGSEGV / SIGABRT in
the process running the backend, a real sleep, a real exception.

The backends are importable classes so that a worker process (``infergate.isolation``) builds
the very same faulty backend the test put in the registry."""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import time

from infergate.backends.ort_cpu import OrtCpu, OrtRunner


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: a real SIGSEGV, as in a broken kernel


def abort() -> None:
    os.abort()  # SIGABRT, as from a failed assertion in a runtime's C++ code


def broken_import() -> None:
    importlib.import_module("tests.faults.broken_package")  # installed, but will not load


FAULTS = {"segfault": segfault, "abort": abort, "hang": lambda: time.sleep(3600),
          "broken_import": broken_import,
          "freeze": lambda: os.kill(os.getpid(), signal.SIGSTOP),  # a frozen container, cgroup
          "kill": lambda: os.kill(os.getpid(), signal.SIGKILL),  # as the OOM killer does
          "raise": lambda: (_ for _ in ()).throw(RuntimeError("exporter exploded"))}


class _FaultyRunner(OrtRunner):
    fault_at = ""  # activate | run
    fault = ""

    def activate_impl(self):
        super().activate_impl()
        if self.fault_at == "activate":
            FAULTS[self.fault]()

    def run_impl(self, feed):
        if self.fault_at == "run":
            FAULTS[self.fault]()
        return super().run_impl(feed)


def faulty_backend(fault: str, at: str, precision: str | None = None) -> type:
    """An ort_cpu whose runner hits ``fault`` at ``at`` ('prepare', 'activate' or 'run'), at
    every precision or at ``precision`` only: the class lives in this module, so a worker
    process can import it by name."""
    return globals()[f"OrtCpu_{fault}_{at}" + (f"_{precision}" if precision else "")]


def _define(fault: str, at: str, only: str | None = None) -> None:
    suffix = f"{fault}_{at}" + (f"_{only}" if only else "")
    runner = type(f"Runner_{suffix}", (_FaultyRunner,), {"fault": fault, "fault_at": at})

    def prepare(self, subject, precision):
        faulty = only is None or precision == only
        if at == "prepare" and faulty:
            FAULTS[fault]()
        real = OrtCpu.prepare(self, subject, precision)
        if not faulty:
            return real
        return runner(real.label, real.output_names, real.model_path, real.providers)

    name = f"OrtCpu_{suffix}"
    globals()[name] = type(name, (OrtCpu,), {"prepare": prepare, "__module__": __name__})
    runner.__module__ = __name__
    globals()[runner.__name__] = runner


for _fault in FAULTS:
    for _at in ("prepare", "activate", "run"):
        _define(_fault, _at)
_define("segfault", "run", "int8")  # one precision of a process that counts several
