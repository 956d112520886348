"""A child process that died or outlived its limit, as a test's verdict (light to import:
the probes load it before any framework)."""

from __future__ import annotations

import os
import signal


def describe_exit(returncode: int | None) -> str:
    """'SIGSEGV (signal 11)' for a process a signal ended, else 'exit status N'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (killed: the kernel's out-of-memory killer, or another process)" \
            if -returncode == signal.SIGKILL else ""
        return f"{name} (signal {-returncode}){why}"
    return f"exit status {returncode}"


class ChildFailure(RuntimeError):
    """The worker died or was killed while running ``step``: the test's verdict is ``status``
    ('crashed' or 'timeout'), never a pass."""

    def __init__(self, status: str, label: str, step: str, detail: str, stderr_tail: str,
                 reproduce: str = ""):
        self.status, self.label, self.step, self.detail = status, label, step, detail
        self.stderr_tail, self.reproduce = stderr_tail, reproduce
        super().__init__(self._message())

    def summary(self) -> str:
        lines = [f"{self.label}: {self.status} during {self.step}: {self.detail}"]
        if self.reproduce:
            lines.append(f"reproduce alone: {self.reproduce}")
        return "\n".join(lines)

    def _message(self) -> str:
        lines = [self.summary()]
        if self.stderr_tail.strip():
            lines.append("last lines of the worker's stderr:")
            lines += [f"  | {line}" for line in self.stderr_tail.rstrip().splitlines()]
        return "\n".join(lines)

    def with_reproduce(self, command: str) -> ChildFailure:
        return ChildFailure(self.status, self.label, self.step, self.detail, self.stderr_tail,
                            command)

    def as_dict(self) -> dict:
        return {"status": self.status, "summary": self.summary(), "step": self.step,
                "detail": self.detail,
                "stderr_tail": self.stderr_tail, "reproduce": self.reproduce}


def path_first(source) -> str:
    """PYTHONPATH for a child that imports infergate from ``source`` (this checkout, another
    revision's), ahead of whatever PYTHONPATH this process has."""
    return os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def kill_group(pid: int) -> None:
    """SIGKILL the process group a child was started in (``start_new_session``): the child
    and whatever it forked and left behind."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Process groups of the children run_child is waiting on, from any thread.
_RUNNING: set[int] = set()


def end_children() -> None:
    """SIGKILL every child run_child is waiting on. An interrupt reaches only the main thread:
    a child waited on by another thread (the counting pool's) would outlive it, and the
    pool's shutdown would wait for that child's whole limit."""
    for pid in list(_RUNNING):
        kill_group(pid)


def run_child(command: list[str], *, input: str, env: dict, timeout: float, cwd=None,
              preexec_fn=None):
    """``subprocess.run`` (text, output captured) for a child that may crash. The child gets
    its own process group, killed soon after the child ends: ONNX Runtime's crash handler
    forks a helper that hangs holding the child's pipes, and reading them to the end would
    then wait out the whole timeout. Raises subprocess.TimeoutExpired as run() does."""
    import subprocess
    import threading
    import time

    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            preexec_fn=preexec_fn, start_new_session=True)

    def reap_strays():
        proc.wait()
        time.sleep(2)  # its own last writes first
        kill_group(proc.pid)

    threading.Thread(target=reap_strays, daemon=True).start()
    _RUNNING.add(proc.pid)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(command, timeout, out, err) from None
    except BaseException:  # an interrupt or SIGTERM: the child and its forks end with us
        kill_group(proc.pid)
        raise
    finally:
        _RUNNING.discard(proc.pid)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
