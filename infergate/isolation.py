"""Backends' native code in a child process: a crash, hang or kill costs one test, never the run.

The parent keeps a few worker processes (``WorkerPool``); each prepares and runs combinations
on request (``IsolatedRunner`` stands in for the real runner), so a segfault in ONNX Runtime or
a driver abort ends a worker, not pytest. A step that outlives its limit gets the worker
killed. Both become a ``ChildFailure`` naming the signal or limit, the step, and the tail of
the worker's stderr.

Messages are length-prefixed pickles on the worker's stdin and a private copy of its stdout;
the worker's own fd 1 goes to stderr, so native prints cannot corrupt the protocol.
"""

from __future__ import annotations

import collections
import faulthandler
import importlib
import importlib.util
import io
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from infergate import progress, run_budget
from infergate.backends.base import Runner
from infergate.failures import ChildFailure, describe_exit, kill_group

_HEADER = struct.Struct("!Q")
STDERR_TAIL_LINES = 40
STOPPED_S = 10  # a worker stopped this long is given up: nothing in a CI job resumes it


@dataclass(frozen=True)
class Limits:
    """Seconds each step may take before its worker is killed."""

    prepare_s: float  # export, conversion, quantization, compile, session creation
    first_run_s: float  # the first inference (lazy compiles and allocations happen here)
    run_s: float  # every later inference


# A CPU smoke combination prepares in seconds to ~2 minutes (torch.compile of MiniLM); the full
# tier's larger models (resnet50, gpt2, TensorRT engine builds) take several times that.
TIER_LIMITS = {"smoke": Limits(prepare_s=600, first_run_s=180, run_s=120),
               "full": Limits(prepare_s=1800, first_run_s=600, run_s=300)}


def limits_for(spec, tier: str) -> Limits:
    """The tier's limits, with the spec's ``timeouts`` (and its reason) over them."""
    limits = TIER_LIMITS[tier]
    own = spec.timeouts
    if own is None:
        return limits
    return replace(limits, **{name: getattr(own, name) for name in
                              ("prepare_s", "first_run_s", "run_s")
                              if getattr(own, name) is not None})


class WorkerError(RuntimeError):
    """A Python exception inside the worker (the worker lives on): its type, message and
    traceback as the worker saw them."""

    def __init__(self, text: str, kind: str = "", message: str = ""):
        super().__init__(text)
        self.kind, self.message = kind, message  # the worker's exception: type name, str()


def _write(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(stream, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Worker:
    """One child process serving the ``_Server``'s requests (build, open, activate, run,
    close, localise)."""

    def __init__(self):
        # The worker imports what this process can (a user's model module included).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # Unbuffered stdout: select() must see every byte that has not been read yet.
        # Its own process group: what it forks (ONNX Runtime's crash handler forks a child
        # that hangs holding the worker's pipes) is killed with it.
        self.proc = subprocess.Popen([sys.executable, "-m", "infergate.isolation"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, bufsize=0,
                                     start_new_session=True)
        self._requests = io.BufferedWriter(self.proc.stdin)
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._progress: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.last_progress = ""
        self.retired = False
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()

    def _drain_stderr(self) -> None:
        for raw in io.BufferedReader(self.proc.stderr):
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            if line.startswith("[infergate] "):  # the worker's progress, for CI logs
                self._progress.put(line.removeprefix("[infergate] "))

    def _relay_progress(self) -> None:
        """Progress lines reach the log from the calling thread (pytest's capture is not
        thread-safe)."""
        while not self._progress.empty():
            self.last_progress = self._progress.get()
            progress.say(self.last_progress)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self) -> str:
        self._reader.join(timeout=2)  # the rest of what a dead worker wrote
        return "\n".join(self._tail)

    def call(self, op: str, label: str, step: str, limit_s: float, **args):
        __tracebackhide__ = True
        self.last_progress = ""
        try:
            _write(self._requests, (op, args))
        except (BrokenPipeError, OSError):
            self._fail_dead(label, step)
        reply = self._receive(label, step, limit_s)
        if reply[0] == "error":
            _, kind, message, trace = reply
            raise WorkerError(f"{label}: {step} raised {kind}: {message}\n"
                              f"in the worker:\n{trace}", kind, message)
        return reply[1]

    def _receive(self, label: str, step: str, limit_s: float):
        __tracebackhide__ = True
        stream = self.proc.stdout
        limit_s, said = run_budget.clamp(limit_s)
        deadline = time.monotonic() + limit_s
        stopped_since = None
        while True:  # wait for the header within the limit; a reply, once started, is read whole
            left = deadline - time.monotonic()
            ready, _, _ = select.select([stream], [], [], min(1.0, max(0.0, left)))
            self._relay_progress()
            if ready:
                break
            if self.proc.poll() is not None:  # dead, though a stray child may hold the pipe
                self._fail_dead(label, step)
            stopped_since = (stopped_since or time.monotonic()) if self._stopped() else None
            if stopped_since is not None and time.monotonic() - stopped_since >= STOPPED_S:
                self.kill()  # nothing in a CI job sends SIGCONT: it would wait out its limit
                raise ChildFailure("timeout", label, self._at(step),
                                   f"the worker was stopped (SIGSTOP, a frozen cgroup) for "
                                   f"{STOPPED_S} s; it was killed", self.stderr_tail())
            if left <= 0:
                self.kill()
                raise ChildFailure("timeout", label, self._at(step),
                                   f"no answer within {said}; the worker was killed",
                                   self.stderr_tail())
        header = _read_exactly(stream, _HEADER.size)
        body = header and _read_exactly(stream, _HEADER.unpack(header)[0])
        if body is None:
            self._fail_dead(label, step)
        return pickle.loads(body)

    def _fail_dead(self, label: str, step: str):
        try:
            returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self.proc.returncode
        self._kill_group()
        self._relay_progress()
        raise ChildFailure("crashed", label, self._at(step),
                           f"the worker process ended with {describe_exit(returncode)}",
                           self.stderr_tail())

    def _at(self, step: str) -> str:
        if not self.last_progress:
            return step
        where = "after" if " done in " in self.last_progress else "at"
        return f"{step}, {where} '{self.last_progress}'"

    def _stopped(self) -> bool:
        """Stopped by a signal (state T; a debugger's stop, t, is not this)."""
        try:
            return psutil.Process(self.proc.pid).status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        kill_group(self.proc.pid)  # whatever the worker forked and left behind

    def retire(self) -> None:
        """Tell the worker to exit (its stdin closes); ``close`` waits for it."""
        self.retired = True  # closed on purpose: its runners re-open elsewhere when used
        try:
            self._requests.close()
        except OSError:
            pass

    def close(self) -> None:
        self.retire()
        if self._stopped():  # it cannot exit: waiting would cost 30 s a worker
            self.kill()
        if self.alive:
            try:
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._kill_group()


class WorkerPool:
    """Workers reused across tests, one per model (its weights and exports load once); at
    most ``size`` alive, the least recently used closed first. A dead worker is replaced.
    One spare starts ahead, on the other core, so the next model's worker is ready."""

    # A worker costs its start (~2 s: torch, the runtimes) and its memory (torch plus one
    # model, 0.3-1.5 GB); four cover the smoke tier's models, so each starts once.
    def __init__(self, size: int = 4):
        self.size = size
        self._workers: collections.OrderedDict[str, Worker] = collections.OrderedDict()
        self._spare: Worker | None = None
        # combination label -> the crash or timeout of its prepare, or a timeout at any later
        # step: paid once a run, as a Python exception's failed build already is (the
        # artifact store remembers those). A crash in an inference is not: another input
        # may not crash.
        self._given_up: dict[str, ChildFailure] = {}

    def give_up(self, label: str, failure: ChildFailure) -> None:
        """No later test of the run starts the combination ``label`` again: it gets
        ``failure`` at once, from ``prepare``."""
        self._given_up.setdefault(label, failure)

    def prepare(self, label: str, call, reproduce: str = ""):
        """``call()``, the prepare step of the combination ``label`` in a worker, unless the
        run gave up on it: then that failure again at once."""
        earlier = self._given_up.get(label)
        if earlier is not None:
            raise ChildFailure(earlier.status, earlier.label, earlier.step,
                               f"{earlier.detail} (in an earlier test of this run; not tried "
                               f"again)", earlier.stderr_tail, reproduce)
        try:
            return call()
        except ChildFailure as exc:
            self.give_up(label, exc)
            raise

    def worker(self, key: str) -> Worker:
        worker = self._workers.pop(key, None)
        if worker is None or not worker.alive:
            worker, self._spare = self._spare, None
            if worker is None or not worker.alive:
                worker = Worker()
            self._spare = Worker()
        self._workers[key] = worker
        while len(self._workers) > self.size:
            self._workers.popitem(last=False)[1].close()
        return worker

    def borrow(self) -> Worker:
        """A worker for one job, outside the pool (the caller closes it): the spare, started
        ahead, and a new spare in its place."""
        worker, self._spare = self._spare, None
        if worker is None or not worker.alive:
            worker = Worker()
        self._spare = Worker()
        return worker

    def close(self) -> None:
        workers = [*self._workers.values(), *([self._spare] if self._spare else [])]
        self._workers.clear()
        self._spare = None
        for worker in workers:  # all told at once: they exit in parallel
            worker.retire()
        for worker in workers:
            worker.close()


def known_fingerprint(subject) -> str | None:
    """The subject's fingerprint if this process has it; else None, and the worker computes
    it (building the torch module once there, not in both processes)."""
    return subject.__dict__.get("fingerprint")


def backend_reference(backend) -> tuple[str, str]:
    """(module, class name) a fresh process builds ``backend`` from (``find_backend``)."""
    return type(backend).__module__, type(backend).__qualname__


def combination(subject, backend, precision: str) -> dict:
    """What a worker needs to prepare a combination (``_Server._prepared``'s arguments)."""
    return {"spec": spec_reference(subject.spec), "backend": backend_reference(backend),
            "precision": precision, "cache_dir": str(subject.store.root),
            "fingerprint": known_fingerprint(subject)}


def spec_reference(spec) -> tuple[str, str, str]:
    """(module, name, model file) the worker finds ``spec`` by: the registry's name, or the
    module that built it for a spec from outside the registry; the file where the module was
    loaded from a path (``--infergate-model-file``), "" where it imports by name."""
    from infergate.models import source_file

    return spec.build.__module__, spec.name, source_file(spec)


class IsolatedRunner(Runner):
    """The combination's runner, living in a worker: ``prepare`` happens at activate(). Once
    its worker died, every later call raises the same failure at once; once the pool closed
    its worker (to make room), the next call opens it again in a new one."""

    def __init__(self, pool: WorkerPool, subject, backend, precision: str, limits: Limits,
                 label: str, reproduce: str = ""):
        super().__init__(label, subject.spec.outputs)
        self._pool, self._subject, self._backend = pool, subject, backend
        self._precision, self.limits, self._reproduce = precision, limits, reproduce
        self._worker: Worker | None = None
        self._handle = None
        self._runs = 0
        self.failure: ChildFailure | None = None

    def _call(self, op: str, step: str, limit_s: float, **args):
        __tracebackhide__ = True
        if self.failure is not None:
            raise self.failure
        if op != "open" and self._worker.retired:  # the pool closed it: open here again
            self._open()
            args["handle"] = self._handle
        try:
            return self._worker.call(op, self.label, step, limit_s, **args)
        except ChildFailure as exc:
            self.failure = exc.with_reproduce(self._reproduce)
            if exc.status == "timeout":  # a hang costs the run its limit once, not per test
                self._pool.give_up(self.label, self.failure)
            raise self.failure from None

    def activate_impl(self) -> None:
        __tracebackhide__ = True
        self._open()

    def _open(self) -> None:
        __tracebackhide__ = True
        def prepare():
            self._worker = self._pool.worker(self._subject.spec.name)
            self._handle = self._call(
                "open", "prepare (export, conversion, quantization, compile)",
                self.limits.prepare_s, threads=self.threads,
                **combination(self._subject, self._backend, self._precision))
            self.settings = self._call("activate", "activate (session creation, compile)",
                                       self.limits.prepare_s, handle=self._handle)

        try:
            self._pool.prepare(self.label, prepare, self._reproduce)
        except ChildFailure as exc:
            self.failure = exc
            raise

    def run_impl(self, feed):
        __tracebackhide__ = True
        self._runs += 1
        step, limit = (("first inference", self.limits.first_run_s) if self._runs == 1
                       else (f"inference {self._runs}", self.limits.run_s))
        return self._call("run", step, limit, handle=self._handle, feed=dict(feed))

    def deactivate_impl(self) -> None:
        if self.failure is None and self._handle is not None and not self._worker.retired:
            self._call("close", "deactivate", self.limits.run_s, handle=self._handle)
        self._handle = None


def localise_in_worker(pool: WorkerPool, subject, backend, precision: str, feed,
                       limit_s: float, label: str):
    """``infergate.accuracy.localise.localise`` in a worker of its own (the pool's spare), closed
    after: a crash or hang there costs the localisation (its note says so), never the test's
    verdict or the combination's worker, whose runner is still open."""
    from infergate.accuracy.localise import Localisation, not_available

    unavailable = not_available(backend, label)
    if unavailable:  # said without a worker
        return unavailable
    worker = pool.borrow()
    try:
        return worker.call("localise", label, "localisation", limit_s, feed=dict(feed),
                           **combination(subject, backend, precision))
    except ChildFailure as exc:
        return Localisation.failed(label, f"{exc.status} during {exc.step}: {exc.detail}")
    except WorkerError as exc:
        return Localisation.failed(label, str(exc).split("\nin the worker:", 1)[0])
    finally:
        worker.close()


def prepare_in_worker(pool: WorkerPool, subject, backend, precision: str, limits: Limits,
                      label: str) -> None:
    """Build the combination's artifacts (export, quantization, compile caches) in a worker,
    for a probe that then measures in a fresh process of its own."""
    pool.prepare(label, lambda: pool.worker(subject.spec.name).call(
        "build", label, "prepare (export, conversion, quantization, compile)", limits.prepare_s,
        **combination(subject, backend, precision)))


# --- the worker side -------------------------------------------------------------------------

def find_backend(module: str, qualname: str):
    """A fresh instance of the backend class at ``module:qualname``."""
    return getattr(importlib.import_module(module), qualname)()


def find_spec(module: str, name: str, file: str = ""):
    from infergate.models import all_models, load_file
    from infergate.spec import ModelSpec

    if file:
        loaded = load_file(file)
    else:
        registered = all_models().get(name)
        if registered is not None and registered.build.__module__ == module:
            return registered
        loaded = importlib.import_module(module)
    found = [v for v in vars(loaded).values() if isinstance(v, ModelSpec) and v.name == name]
    if not found:
        raise LookupError(f"no ModelSpec named {name!r} at the top level of module {module!r}: "
                          f"a worker process finds a spec by its module, so define it there "
                          f"(or run with --infergate-isolation off)")
    return found[0]


class _Server:
    def __init__(self):
        self.runners: dict[int, Runner] = {}
        self.subjects: dict[tuple, object] = {}
        self._next = 0

    def open(self, spec, backend, precision, cache_dir, fingerprint, threads) -> int:
        runner = self._prepared(spec, backend, precision, cache_dir, fingerprint)
        runner.threads = threads
        self._next += 1
        self.runners[self._next] = runner
        return self._next

    def activate(self, handle) -> dict:
        return self.runners[handle].activate().settings

    def _prepared(self, spec, backend, precision, cache_dir, fingerprint) -> Runner:
        return find_backend(*backend).prepare(self._subject(spec, cache_dir, fingerprint),
                                              precision)

    def _subject(self, spec, cache_dir, fingerprint):
        from infergate.build.artifacts import ArtifactStore
        from infergate.build.subject import ModelUnderTest

        key = (tuple(spec), cache_dir, fingerprint)
        if key not in self.subjects:  # built once: its torch module and exports are reused
            self.subjects[key] = ModelUnderTest(find_spec(*spec), ArtifactStore(Path(cache_dir)),
                                                fingerprint=fingerprint)
        return self.subjects[key]

    def localise(self, spec, backend, precision, cache_dir, fingerprint, feed):
        from infergate.accuracy.localise import localise

        return localise(self._subject(spec, cache_dir, fingerprint), find_backend(*backend),
                        precision, feed)

    def build(self, **combination) -> None:
        self._prepared(**combination)  # the artifacts stay in the cache; nothing activated

    def run(self, handle, feed):
        return self.runners[handle].run(feed)

    def close(self, handle):
        runner = self.runners.pop(handle)
        if runner.is_active:
            runner.deactivate()


# What CPU backends load on their first use, loaded before the first request instead: a
# worker starts ahead of need (the pool's spare), so this time is off the tests' path. torch
# too, now that the model files import it only when they build (warm smoke equivalence run:
# 30 s without it in the list, 21.5 s with it).
PRELOAD = ("torch", "onnxruntime", "openvino")


def serve() -> int:
    faulthandler.enable()  # a native crash leaves the Python stack in the stderr tail
    for module in PRELOAD:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints, Python's or native, land in stderr, never in the protocol
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    server = _Server()
    while True:
        header = _read_exactly(requests, _HEADER.size)
        if header is None:
            return 0  # the parent closed the pipe: done
        op, args = pickle.loads(_read_exactly(requests, _HEADER.unpack(header)[0]))
        try:
            reply = ("ok", getattr(server, op)(**args))
        except Exception as exc:
            reply = ("error", type(exc).__name__, str(exc), traceback.format_exc())
        _write(channel, reply)


if __name__ == "__main__":
    code = serve()
    sys.stderr.flush()
    os._exit(code)  # skip the frameworks' teardown at exit: slow, and nothing to keep
