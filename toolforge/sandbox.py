"""`Sandbox`: forged code runs in persistent, locked-down worker processes, never in the caller's process.

Each worker is a separate Python interpreter (`toolforge/_worker.py`, standard library only) started with a clean
environment and its own scratch directory. Workers are reused across calls, and a worker compiles a function's
code once per `code_hash`. With `isolation="worker"` (the default), the worker runs calls itself and undoes what a
call changed. With `isolation="call"`, the worker never runs forged code itself: each call runs in a process of
its own, forked from the worker (two ahead, while earlier replies are read, each warmed up by a call of the
worker's own, so that a call does not wait for either), which ends with the call, so nothing one call leaves
behind (module state, threads, timers, a changed directory) reaches the next. A worker whose call times out,
crashes, exits, or runs out of memory (or, running calls itself, leaves threads or processes behind) is killed
and replaced; the caller gets `CallResult(ok=False, error=...)` with the reason.

What is enforced, on Linux (each layer is attempted; `Sandbox.enforced` says which ones held on this machine):

* **Wall time**: the parent waits `timeout_s` for a reply, then SIGKILLs the worker's whole session (and its
  pids cgroup, where there is one). Forged code cannot catch or delay this.
* **Memory**: `RLIMIT_AS` caps the worker's address space at its start-up size plus `memory_mb`. Python-level
  allocations then fail with MemoryError ("exceeded 512 MB"); a C extension may crash instead, which is a crash.
* **Processes**: forking, exec, `subprocess`, `os.system` and signals raise PermissionError (a Python audit hook).
  Below it, a pids cgroup (when the parent may create one, e.g. as root) or `RLIMIT_NPROC` (non-root) bounds
  what ctypes could start, and the whole session is killed when the worker is replaced.
* **Network**: the worker enters a new, empty network namespace (`unshare(CLONE_NEWNET)`; as non-root inside a
  user namespace), so every connect fails with "Network is unreachable". Landlock (ABI >= 4) also denies TCP
  bind/connect, and the audit hook refuses socket creation, connect, bind and send.
* **Sockets of any kind**: a seccomp filter (x86_64, aarch64) makes socket(2) and io_uring_setup(2) fail with
  EPERM, so that even through ctypes no Unix socket on the filesystem is reachable: a Docker daemon's, an SSH
  agent's or a database's socket, which no network namespace closes. socketpair(2), which reaches nothing
  outside the process, stays allowed.
* **Filesystem writes**: Landlock forbids creating, writing, truncating, renaming or removing anything outside
  the scratch directory (and /dev/null); the audit hook refuses the same at the Python level. Files are capped at
  `max_file_mb` (RLIMIT_FSIZE) and 256 open descriptors, and all of them together at `max_scratch_mb`: the
  scratch directory is a tmpfs of that size in the worker's own mount namespace, so the disk cannot be filled
  (a worker whose scratch holds over half of it after a call is replaced, which gives the memory back).
* **Secrets on disk and in other processes**: Landlock also forbids reading below /proc, except the worker's own
  entries and machine-wide files (cpuinfo, meminfo, ...): another process's environ, cmdline or memory, where
  the caller's API keys live from its start, cannot be read (as root, dropping capabilities already hides
  environ and mem). It forbids reading the caller's home directory, /root and /home (~/.ssh, ~/.aws, ~/.netrc,
  tokens, DSPy's LM cache) too, except Python's own files there (its prefix and every `sys.path` entry).
* **Privileges**: the worker drops every capability (bounding set included), as root or inside the user
  namespace a non-root worker makes for itself, and sets no_new_privs, so that the namespaces, Landlock and
  seccomp cannot be undone from inside. (Checked as root and as a non-root user on this kind of machine.)
* **Environment**: the worker's environment is built from scratch (PATH, HOME and TMPDIR in the scratch
  directory, a fixed PYTHONHASHSEED): none of the caller's variables, API keys included, reach it.
* **The pipe to the caller**: with `isolation="call"`, a call's process holds only its own request and reply
  pipes, and the worker is not dumpable (PR_SET_DUMPABLE), so that no process of the same user, a call's
  included, opens the worker's pipes through /proc: forged code can neither read another request nor answer one;
  what it writes to its own pipe loses only its own reply. With `isolation="worker"`, forged code shares the
  worker's process: a reply must echo the random nonce of its request and have the worker's shape and a bounded
  size, and anything else replaces the worker, but code written to attack the worker can find its objects in
  memory, answer its own call and then every later call on that worker, falsely. "worker" is the default because
  forged code is written by an LM optimizing functions, which makes mistakes, not attacks, and because a call
  costs 0.2 ms there against 0.5 to 1.5 ms (paced, back to back) with "call"; choose "call" where the code
  may be adversarial (`benchmarks/sandbox_overhead.py` measures both).
* **Output**: stdout and stderr, Python-level and file-descriptor-level, are captured and capped at
  `max_output_bytes`; a return value that JSON cannot hold comes back as its repr, and the result says so.

What is not enforced: reading files the caller's user may read outside /proc and the home directories (e.g.
a project's `.env`; what the code reads can only leave through its return value, which the agent's LM sees);
CPU time beyond the wall-time limit; UDP or Unix sockets where neither the network namespace nor the seccomp
filter could be applied; and on kernels without Landlock, namespaces or seccomp, only the Python audit hook
guards writes and the network, which ctypes can bypass (and, as a non-root user, another process's /proc
entries and the home directory stay readable). Not Linux: only the audit hook, the rlimits and the wall-time
limit apply.

Guarantees: `Sandbox` is thread-safe; calls run in parallel up to `workers`; a fault in one call (an exception,
a timeout, a crash, exhausted memory) never affects the caller's process or a later call. Code written to attack
the worker is the exception noted above for `isolation="worker"`: it can answer later calls on its worker. The
process-wide default sandbox (`default_sandbox()`) is created on first use and closed at interpreter exit; any
other sandbox that is never closed kills its workers and removes its directories when it is garbage-collected,
or at exit. A sandbox pickles as its settings (a whole program saved with `save_program=True` loads with a new
sandbox of the same limits).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import json
import logging
import os
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from toolforge.errors import SandboxError
from toolforge.function import ForgedFunction

__all__ = ["CallResult", "Sandbox", "default_sandbox"]

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
_START_TIMEOUT_S = 30.0


class CallResult(BaseModel):
    """What one call in the sandbox gave.

    Attributes:
        ok: True when the code returned normally.
        value: The return value (JSON), or its repr when `value_is_repr`; None when not ok.
        error: Why the call failed ("ZeroDivisionError: ...", "timed out after 10.0 s", "exceeded 512 MB ...").
        stdout: What the code printed (stdout and stderr), capped.
        duration_s: Wall time of the call as the caller saw it.
        value_is_repr: True when the value could not be sent as JSON and is given as its repr.
        notes: Anything else worth knowing: truncated output, a replaced worker.
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    value: Any = None
    error: str | None = None
    stdout: str = ""
    duration_s: float = 0.0
    value_is_repr: bool = False
    notes: tuple[str, ...] = ()


class _WorkerLost(Exception):
    """The worker can no longer answer; the message is the reason for the caller."""


def _well_formed(reply: dict[str, Any]) -> bool:
    """A reply has the worker's fields with their types (one that forged code wrote may not)."""
    return (
        isinstance(reply.get("ok"), bool)
        and isinstance(reply.get("value_is_repr"), bool)
        and isinstance(reply.get("recycle"), bool)
        and isinstance(reply.get("error"), str | None)
        and isinstance(reply.get("stdout"), str)
        and isinstance(reply.get("notes"), list)
        and all(isinstance(note, str) for note in reply["notes"])
        and isinstance(reply.get("pid"), int)
        and "value" in reply
    )


class _StaleReply(_WorkerLost):
    """The pipe held the reply to an earlier request: that request's code wrote a reply of its own before it.

    Forged code runs in the worker's process and can write to its pipe. Each request carries a fresh random nonce
    that the reply must echo, so a forged reply can only answer the request whose code wrote it (its own result,
    which it controls anyway); the worker's true reply then arrives late and is caught here, on the next request,
    which is then run again on a fresh worker.
    """


class _Worker:
    """One worker process and the parent's end of its pipes."""

    def __init__(self, sandbox: Sandbox, index: int) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=f"worker{index}-", dir=sandbox.root))
        config = {
            "scratch": str(self.scratch),
            "memory_mb": sandbox.memory_mb,
            "max_output_bytes": sandbox.max_output_bytes,
            "max_value_bytes": sandbox.max_value_bytes,
            "max_file_mb": sandbox.max_file_mb,
            "max_scratch_mb": sandbox.max_scratch_mb,
            "max_processes": sandbox.max_processes,
            "isolation": sandbox.isolation,
            "homes": [str(Path.home())],  # unreadable, but for Python's own files (Landlock)
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-P", "-B", str(_WORKER_SCRIPT), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.scratch,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        self.cgroup = sandbox._cgroup_for(self.process.pid, index)
        self.known: set[str] = set()
        self._buffer = b""
        self._answered: collections.deque[str] = collections.deque(maxlen=64)  # nonces of past requests
        self._max_reply = 8 * (sandbox.max_value_bytes + sandbox.max_output_bytes) + (1 << 20)
        try:
            ready = self._read(time.monotonic() + _START_TIMEOUT_S, "starting")
        except _WorkerLost as exc:
            self.kill()
            raise SandboxError(f"a sandbox worker could not start: {exc}; check that {sys.executable} runs") from None
        self.pid: int = ready["pid"]
        self.enforced: dict[str, str] = ready["enforced"]
        self.missing: dict[str, str] = ready["missing"]

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        nonce = secrets.token_hex(8)
        body = json.dumps({**message, "nonce": nonce}, allow_nan=False).encode()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(struct.pack(">I", len(body)) + body)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerLost(self._death_reason()) from None
        reply = self._read(time.monotonic() + timeout_s, f"timed out after {timeout_s} s")
        answered = reply.get("nonce")
        if answered != nonce:
            if answered in self._answered:
                raise _StaleReply("an earlier call's code wrote to the sandbox's pipe")
            raise _WorkerLost("the code wrote to the sandbox's pipe; the worker was replaced")
        self._answered.append(nonce)
        if not _well_formed(reply):
            raise _WorkerLost("the code wrote to the sandbox's pipe (a reply of the wrong shape)")
        return reply

    def _read(self, deadline: float, timeout_reason: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            if len(self._buffer) >= 4:
                size = struct.unpack(">I", self._buffer[:4])[0]
                if size > self._max_reply:  # no true reply is this long: the code wrote to the pipe
                    raise _WorkerLost(f"the code wrote to the sandbox's pipe (a {size}-byte frame)")
                if len(self._buffer) >= 4 + size:
                    body, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
                    try:
                        reply = json.loads(body)
                    except ValueError:
                        reply = None
                    if not isinstance(reply, dict):
                        raise _WorkerLost("the code wrote to the sandbox's pipe (a frame that is not a reply)")
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerLost(timeout_reason)
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise _WorkerLost(self._death_reason())
            self._buffer += chunk

    def _death_reason(self) -> str:
        try:
            code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "the worker stopped answering"
        if code < 0:
            name = signal.Signals(-code).name
            hint = {
                "SIGSEGV": " (a segmentation fault, or the memory limit hit inside C code)",
                "SIGABRT": " (aborted; often the memory limit hit inside C code)",
                "SIGKILL": " (killed from outside, e.g. out of memory)",
                "SIGBUS": " (a bus error)",
            }.get(name, "")
            return f"the worker crashed with {name}{hint}"
        return f"the code ended the worker process (exit status {code}); forged functions must return, not exit"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            _kill_cgroup(self.cgroup)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _kill_cgroup(cgroup: Path) -> None:
    for _ in range(50):  # processes may fork while we kill; pids.max bounds how many there can be
        try:
            pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _pids_cgroup_base() -> Path | None:
    """The caller's own pids cgroup directory, if this process may create children in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
            if os.access(base, os.W_OK) and (base / "cgroup.procs").exists():
                return base
    return None


class Sandbox:
    """Persistent worker processes that run forged functions with limits. A context manager; thread-safe.

    Args:
        workers: How many worker processes may run calls at once (started on demand).
        timeout_s: Wall-time limit of one call; the worker is killed and replaced past it.
        memory_mb: Memory a call may allocate, beyond the interpreter's own.
        max_output_bytes: Cap on the captured stdout and stderr of one call.
        max_value_bytes: Cap on the JSON of a return value (larger ones come back as a truncated repr).
        max_file_mb: Cap on the size of a file the code writes in its scratch directory.
        max_scratch_mb: Cap on all the files in a worker's scratch directory (a tmpfs of that size, held in memory
            while the worker lives).
        max_processes: Cap on processes and threads of a worker (pids cgroup, or RLIMIT_NPROC as non-root).
        isolation: "worker" (the default) runs calls in the worker itself (about 0.2 ms a call here), undoing
            what a call changed afterwards; code written to attack the worker can then answer the later calls it
            runs (see the module docstring). "call" runs each call in a process of its own, forked from the
            worker, which never runs forged code: no call can see, spoil or answer another (0.5 to 1.5 ms a call
            here, paced or back to back); for code that may be adversarial, not merely wrong.

    Examples:
        >>> with Sandbox(workers=1) as sandbox:                 # doctest: +SKIP
        ...     sandbox.run_code("print(6 * 7)").stdout
        '42\\n'
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 10.0,
        memory_mb: int = 512,
        *,
        max_output_bytes: int = 64 * 1024,
        max_value_bytes: int = 1024 * 1024,
        max_file_mb: int = 64,
        max_scratch_mb: int = 256,
        max_processes: int = 64,
        isolation: Literal["worker", "call"] = "worker",
    ) -> None:
        for name, value, low in (
            ("workers", workers, 1),
            ("memory_mb", memory_mb, 16),
            ("max_output_bytes", max_output_bytes, 0),
            ("max_value_bytes", max_value_bytes, 64),
            ("max_file_mb", max_file_mb, 1),
            ("max_scratch_mb", max_scratch_mb, 1),
            ("max_processes", max_processes, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SandboxError(f"Sandbox({name}={value!r}): {name} must be an integer >= {low}")
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise SandboxError(f"Sandbox(timeout_s={timeout_s!r}): timeout_s must be a number of seconds > 0")
        if isolation not in ("call", "worker"):
            raise SandboxError(f"Sandbox(isolation={isolation!r}): isolation must be 'call' or 'worker'")
        self.workers = workers
        self.isolation = isolation
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_output_bytes = max_output_bytes
        self.max_value_bytes = max_value_bytes
        self.max_file_mb = max_file_mb
        self.max_scratch_mb = max_scratch_mb
        self.max_processes = max_processes
        self.root = Path(tempfile.mkdtemp(prefix="toolforge-sandbox-"))
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._started = 0
        self._starting = 0
        self._closed = False
        self._cond = threading.Condition()
        self._cgroup_base = _pids_cgroup_base()
        self._enforced: dict[str, str] | None = None
        self._missing: dict[str, str] = {}
        # A sandbox dropped or left open (not closed) still kills its workers and removes its directories: when it
        # is garbage-collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _release_all, self._all, self.root)

    # ------------------------------------------------------------------------------------------- public
    def call(self, function: ForgedFunction, arguments: dict[str, Any]) -> CallResult:
        """Run `function(**arguments)` in a worker. Never raises for anything the code does.

        Raises:
            SandboxError: the sandbox is closed, or a worker cannot start at all; or the call itself is not one
                (`function` not a ForgedFunction, `arguments` not a dict of named arguments).
        """
        if not isinstance(function, ForgedFunction):
            raise SandboxError(
                f"Sandbox.call runs a ForgedFunction, got {type(function).__name__} {function!r:.60}; build one "
                "with ForgedFunction(...) or ForgedFunction.from_callable(fn)"
            )
        if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
            raise SandboxError(
                f"Sandbox.call({function.name!r}, ...): arguments must be a dict of named arguments, got "
                f"{type(arguments).__name__} {arguments!r:.60}"
            )
        request = {"op": "call", "name": function.name, "code_hash": function.code_hash, "arguments": arguments}
        return self._submit(request, function.code)

    def run_code(self, code: str) -> CallResult:
        """Run a Python snippet in a worker; `stdout` holds what it printed and `value` its final expression."""
        return self._submit({"op": "exec", "code": code}, None)

    @property
    def enforced(self) -> dict[str, str]:
        """The protections that held when a worker started here (starts one if none has yet)."""
        if self._enforced is None:
            worker = self._acquire()
            self._release(worker, healthy=True)
        return dict(self._enforced or {})

    @property
    def missing(self) -> dict[str, str]:
        """The protections that could not be applied on this machine, with the reason."""
        _ = self.enforced
        return dict(self._missing)

    def close(self) -> None:
        """Kill every worker and remove the scratch directories. Idempotent."""
        with self._cond:
            self._closed = True
            self._idle = []
            self._cond.notify_all()
            self._finalizer()  # _release_all(self._all, self.root), once; under the lock, so no worker joins meanwhile

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> Sandbox:
        return self  # a shared resource, like an LM client: copies of a program share its workers

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled as its settings (`program.save(..., save_program=True)` pickles the whole program): it loads as
        a new sandbox with the same limits, whose workers start on first use."""
        settings = {
            name: getattr(self, name)
            for name in (
                "workers",
                "timeout_s",
                "memory_mb",
                "max_output_bytes",
                "max_value_bytes",
                "max_file_mb",
                "max_scratch_mb",
                "max_processes",
                "isolation",
            )
        }
        return functools.partial(Sandbox, **settings), ()

    def __repr__(self) -> str:
        return (
            f"Sandbox(workers={self.workers}, timeout_s={self.timeout_s}, memory_mb={self.memory_mb}"
            f"{', isolation=' + repr(self.isolation) if self.isolation != 'worker' else ''}"
            f"{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------------------------------ private
    def _submit(self, request: dict[str, Any], code: str | None) -> CallResult:
        try:
            json.dumps(request, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return CallResult(ok=False, error=f"arguments are not JSON ({exc}); pass numbers, strings, lists, dicts")
        start = time.perf_counter()
        try:
            return self._submit_once(request, code, start)
        except _StaleReply as exc:  # an earlier call spoiled that worker; this call deserves a clean one
            logger.info("sandbox worker replaced: %s; running the call again", exc)
        try:
            return self._submit_once(request, code, start)
        except _StaleReply as exc:
            return CallResult(
                ok=False, error=str(exc), duration_s=time.perf_counter() - start, notes=("the worker was replaced",)
            )

    def _submit_once(self, request: dict[str, Any], code: str | None, start: float) -> CallResult:
        worker = self._acquire()
        healthy = False
        try:
            if code is not None and request["code_hash"] not in worker.known:
                request = {**request, "code": code}
            reply = worker.request(request, self.timeout_s)
            if reply.get("pid") != worker.pid:  # a process the code forked answered in the worker's place
                raise _WorkerLost("the code started a process that wrote to the sandbox's pipe; it was killed")
            if code is not None:
                worker.known.add(request["code_hash"])
            healthy = not reply["recycle"]
            return CallResult(
                ok=reply["ok"],
                value=reply["value"],
                error=reply["error"],
                stdout=reply["stdout"],
                duration_s=time.perf_counter() - start,
                value_is_repr=reply["value_is_repr"],
                notes=tuple(reply["notes"]),
            )
        except _StaleReply:
            raise
        except _WorkerLost as exc:
            logger.info("sandbox worker replaced: %s", exc)
            return CallResult(
                ok=False,
                error=str(exc),
                duration_s=time.perf_counter() - start,
                notes=("the worker was replaced",),
            )
        finally:
            self._release(worker, healthy)

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("this Sandbox is closed; create a new one (or use tf.default_sandbox())")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._starting < self.workers:
                    self._starting += 1
                    self._started += 1
                    index = self._started
                    break
                self._cond.wait()
        worker: _Worker | None = None
        try:
            worker = _Worker(self, index)
        finally:
            with self._cond:
                self._starting -= 1
                if worker is not None:
                    self._all.add(worker)
                    if self._enforced is None:
                        self._enforced, self._missing = dict(worker.enforced), worker.missing
                        if worker.cgroup is not None:
                            self._enforced["processes"] = f"pids cgroup: at most {self.max_processes} tasks per worker"
                        if worker.missing:
                            logger.warning("sandbox protections not available here: %s", worker.missing)
                closed = self._closed
                self._cond.notify()
        if closed:
            self._release(worker, healthy=False)
            raise SandboxError("this Sandbox is closed; create a new one (or use tf.default_sandbox())")
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            keep = healthy and not self._closed and worker in self._all
            if keep:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
            self._cond.notify()
        if not keep:
            worker.kill()

    def _cgroup_for(self, pid: int, index: int) -> Path | None:
        if self._cgroup_base is None:
            return None
        path = self._cgroup_base / f"toolforge-{os.getpid()}-{id(self):x}-{index}"
        try:
            path.mkdir(exist_ok=True)
            (path / "pids.max").write_text(str(self.max_processes))
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            logger.debug("no pids cgroup for sandbox workers: %s", exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            self._cgroup_base = None
            return None
        return path


def _release_all(workers: set[_Worker], root: Path) -> None:
    """Kill `workers` and remove `root`: what `Sandbox.close` does, for a sandbox that was never closed."""
    for worker in list(workers):
        worker.kill()
    workers.clear()
    shutil.rmtree(root, ignore_errors=True)


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox: created on first use with default limits, closed at interpreter exit.
    `TOOLFORGE_SANDBOX_ISOLATION=call` in the environment gives it a process per call (see `Sandbox`)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            isolation = os.environ.get("TOOLFORGE_SANDBOX_ISOLATION", "worker").strip() or "worker"
            if isolation not in ("worker", "call"):
                raise SandboxError(f"TOOLFORGE_SANDBOX_ISOLATION={isolation!r}: give 'worker' (the default) or 'call'")
            _default = Sandbox(isolation=isolation)  # type: ignore[arg-type]
            atexit.register(_default.close)
        return _default
