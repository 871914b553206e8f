"""`Sandbox`: forged code runs in a process of its own for every call, never in the caller's process.

Each worker is a separate Python interpreter (`toolforge/_worker.py`, standard library only) started with a clean
environment. It is a fork server: it never runs forged code and never sees a call. For every call it forks a *call
process* ahead of time (three are kept on hand, so that a call does not wait for a fork), in new PID, mount and IPC
namespaces; the caller writes the request to that process and reads its reply over two pipes of its own, and then
the process is killed, and with it its PID namespace (everything it started), its mount namespace (its scratch
directory and /proc) and its IPC namespace. So every call starts from the same clean state, in a copy of a worker
that holds nothing of any other call: no code, no arguments, no output. The caller gets
`CallResult(ok=False, error=...)` with the reason for anything the code does: an exception, a timeout, a crash by
any signal, an exit, exhausted memory, a reply of the wrong shape, size or depth. Nothing forged raises in the
caller, and a call that fails does not cost the worker.

What is enforced, on Linux (each layer is attempted; `Sandbox.enforced` says which held on this machine and
`Sandbox.missing` which could not, with the reason):

* **Filesystem (the worker)**: a mount namespace whose root is a new, read-only one holding only the system
  directories (/usr, /bin, /lib*, /etc) and Python's own (its prefixes and library directories), each bind-mounted
  read-only; a /dev of null, zero, full, random and urandom; /etc's secrets (shadow, gshadow, sudoers, ssh, ssl/private)
  hidden under empty ones. Home directories, /root (but Python's directory inside it, where Python lives there),
  /tmp, /var, /run, /sys, other users' files and the caller's project are not there at all: not unreadable, absent.
  The same kernel calls as bubblewrap's (unshare, bind mounts, pivot_root), made directly (no system tool needed).
* **Scratch (each call)**: a tmpfs of `max_scratch_mb` of its own, the working directory and TMPDIR, the only
  writable place; gone with the call. Files are capped at `max_file_mb` (RLIMIT_FSIZE), 256 open descriptors.
* **No write of any kind outside scratch**: the read-only mounts refuse data and metadata alike (EROFS); as a second
  layer a seccomp filter refuses chmod, chown, utime(s), xattr changes everywhere (scratch included: use
  `shutil.copyfile`, not `shutil.copy`, there), and Landlock forbids creating, writing, truncating, renaming or
  removing anything outside scratch and /dev/null; the audit hook refuses the same at the Python level with a
  readable reason.
* **No processes**: the seccomp filter refuses fork, vfork, clone without CLONE_THREAD (clone3 answers ENOSYS, so
  that threads fall back to clone), execve and execveat, below Python (ctypes, `_posixsubprocess`) as above it;
  threads work and end with the call. The call process is the init of its own PID namespace, so nothing could
  outlive it, and its /proc shows itself alone: no other process (the caller, the worker, another call) can be seen
  or signalled. (As the init of its namespace, it ignores a signal it sends itself with the default action:
  `abort()` ends it with SIGSEGV, `raise_signal` of another signal does nothing.)
* **Memory**: `RLIMIT_AS` caps the call's address space at its start-up size plus `memory_mb` (Python-level
  allocations then fail with MemoryError, "exceeded 128 MB"; a C extension may crash instead, which is a crash).
  What an address space does not count is refused: memfd_create and SysV shared memory (seccomp), /dev/shm (absent),
  and passing descriptors (sendmsg), which could keep a call's scratch files alive after it in a socket's queue.
  Where this process may create cgroups (v1 memory hierarchy, or v2 with the memory controller), each call process
  sits in a memory cgroup of its own with `memory_mb + max_scratch_mb + 64` MB, which charges everything it holds
  (anonymous memory, its tmpfs, page cache); past it the kernel kills the call ("exceeded ... memory cgroup").
  Without one, kernel buffers (pipes, sockets from socketpair) are bounded only by the descriptor limit.
* **Network**: the worker enters a new, empty network namespace (as non-root inside a user namespace), so every
  connect fails; seccomp refuses socket(2) and io_uring for every address family (socketpair(2) stays: it reaches
  nothing outside); Landlock (ABI >= 4) denies TCP bind/connect; the audit hook refuses sockets at Python level.
* **Privileges**: the call process drops every capability, bounding set included, and sets no_new_privs; seccomp
  also refuses ptrace, process_vm_*, pidfd_*, mount and namespace calls, keyctl, bpf, perf_event_open and
  userfaultfd. The worker is not dumpable.
* **Environment**: built from scratch (PATH, HOME and TMPDIR in scratch, a fixed PYTHONHASHSEED): none of the
  caller's variables, API keys included, reach it.
* **Wall time**: the caller waits `timeout_s` for a reply, then kills the call process (its namespace with it);
  the worker stays.
* **Output**: stdout and stderr, Python-level and descriptor-level, go to a file of the call's own and are capped
  at `max_output_bytes`; a return value that JSON cannot hold comes back as its repr, and the result says so; a value
  over `max_value_bytes` of JSON comes back as a truncated repr. The caller holds every reply to these caps, one
  forged code wrote itself included.

What is not enforced: CPU time beyond the wall-time limit; reading what the root shows (the system and Python
directories: installed packages' files, /etc without its secrets); POSIX record locks (fcntl F_SETLK, which SQLite
needs for a database file in scratch) on files it can read, which may make another process that locks the same
file wait until the call ends (leases and flock are refused). Where the kernel refuses namespaces, seccomp,
Landlock or cgroups (`Sandbox.missing` says which), the layers that remain hold; without mount namespaces the call
sees the real filesystem (Landlock then hides /proc of others and home directories, but Python's files), and without
a PID namespace /proc shows every process. Not Linux: only the audit hook, the rlimits and the wall-time limit.
seccomp filters are written for x86_64 and aarch64 (tested on x86_64).

Cost, measured by `benchmarks/sandbox_overhead.py` on two cores: 0.8 to 1.0 ms a call with 2 ms between calls,
1.4 to 1.6 ms after 20 ms idle (waking processes up), 2.6 to 2.9 ms back to back, where forking and warming up the
next call's process (copy-on-write faults, about 3 ms of CPU) competes with the calls; a fresh `python -c` per call,
the reference implementation's way, costs about 25 ms.

Guarantees: `Sandbox` is thread-safe; calls run in parallel up to `workers`; a fault in one call never affects the
caller's process or another call. The process-wide default sandbox (`default_sandbox()`) is created on first use
and closed at interpreter exit; any other sandbox that is never closed kills its workers and removes its
directories when it is garbage-collected, or at exit; what a killed caller left behind (directories, cgroups) is
removed when the next sandbox starts. A sandbox pickles as its settings (a whole program saved with
`save_program=True` loads with a new sandbox of the same limits).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from toolforge import _worker as protocol
from toolforge._checks import check_int
from toolforge.errors import SandboxError
from toolforge.function import ForgedFunction

__all__ = ["CallResult", "Sandbox", "default_sandbox"]

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = Path(protocol.__file__)
_START_TIMEOUT_S = 30.0
_GRACE_S = 10.0  # how long the worker may take to say how a call process ended
_CGROUP_HEADROOM_MB = 64  # a call process's own pages (copied on write from the worker) beside what it may allocate
_LEFTOVER_DIRECTORY = re.compile(r"^toolforge-sandbox-(\d+)-")
_LEFTOVER_CGROUP = re.compile(r"^toolforge-(\d+)-")


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


_LOST_REPLY = "the code wrote to the sandbox's pipe; its reply was lost"


def parse_reply(body: bytes, *, max_value_bytes: int = 1 << 20, max_output_bytes: int = 64 * 1024) -> dict[str, Any]:
    """A call process's reply as the fields of a `CallResult`; anything else (forged code can write its own pipe:
    garbage, a wrong shape, JSON nested beyond any parser's depth) as a failed call saying so. A reply forged code
    wrote itself gets no more than a true one: output, value, error and notes are held to the sandbox's caps. Never
    raises."""
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError, MemoryError):
        reply = None
    if not (
        isinstance(reply, dict)
        and set(reply) == set(protocol.REPLY_FIELDS)
        and isinstance(reply["ok"], bool)
        and isinstance(reply["value_is_repr"], bool)
        and isinstance(reply["error"], str | None)
        and isinstance(reply["stdout"], str)
        and isinstance(reply["notes"], list)
        and all(isinstance(note, str) for note in reply["notes"])
        and (reply["ok"] or reply["error"])  # a failed call says why
    ):
        return {"ok": False, "error": _LOST_REPLY}
    notes = reply["notes"] = [note[:_NOTE_CHARS] for note in reply["notes"][:_MAX_NOTES]]
    if reply["error"] is not None:
        reply["error"] = reply["error"][:_ERROR_CHARS]
    if len(reply["stdout"]) > max_output_bytes:
        reply["stdout"] = reply["stdout"][:max_output_bytes]
        notes.append(f"output truncated to {max_output_bytes} bytes")
    if len(json.dumps(reply["value"])) > max_value_bytes:  # it parsed from JSON, so it is JSON again
        text = json.dumps(reply["value"]) if not reply["value_is_repr"] else str(reply["value"])
        reply["value"], reply["value_is_repr"] = text[: max_value_bytes // 12], True
        notes.append(f"the return value was over {max_value_bytes} bytes of JSON; it is given truncated")
    for key in ("stdout", "error"):  # lone surrogates (printed undecodable names) would fail whoever encodes them
        if reply[key] is not None:
            reply[key] = reply[key].encode("utf-8", "replace").decode("utf-8")
    return reply


_MAX_NOTES, _NOTE_CHARS, _ERROR_CHARS = 20, 500, 8000


def _signal_name(number: int) -> str:
    """SIGSEGV for 11, SIGRTMIN+6 for 40, "signal 99" for what no name fits (real-time signals have no enum)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", 34), getattr(signal, "SIGRTMAX", 64)
        if low <= number <= high:
            return f"SIGRTMIN+{number - low}"
        return f"signal {number}"


_SIGNAL_HINTS = {
    "SIGSEGV": " (a segmentation fault, or the memory limit hit inside C code)",
    "SIGABRT": " (aborted; often the memory limit hit inside C code)",
    "SIGKILL": " (killed from outside)",
    "SIGBUS": " (a bus error)",
}


def ended_reason(report: Any, timeout_s: float, memory_mb: int) -> str:
    """Why a call has no reply, from the worker's report of how its process ended. Never raises."""
    if not isinstance(report, dict):
        return "the sandbox worker sent a report it should not have; the worker was replaced"
    ended, code = report.get("ended"), report.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else -1
    if ended == "timeout":
        return f"timed out after {timeout_s} s"
    if ended == "garbage":
        return _LOST_REPLY
    if report.get("oom") is True:
        return f"exceeded {memory_mb} MB memory limit (the call's memory cgroup)"
    if ended == "signal":
        name = _signal_name(code)
        return f"the call's process crashed with {name}{_SIGNAL_HINTS.get(name, '')}"
    if ended == "exit":
        if code == 0:
            return "the code closed the sandbox's pipe; its reply was lost"
        return f"the code ended its process (exit status {code}); forged functions must return, not exit"
    return "the sandbox worker sent a report it should not have; the worker was replaced"


class _Worker:
    """One worker (a fork server that never runs forged code or sees a call), its channel, and the call processes
    it has handed over: each answers one call, over pipes of its own, and is then ended."""

    def __init__(self, sandbox: Sandbox, index: int) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"worker{index}-", dir=sandbox.root))
        root = self.directory / "root"  # the mount point of the worker's own root; empty here
        root.mkdir()
        self.scratch = self.directory / "scratch"  # each call's own tmpfs, inside; the scratch itself without one
        self.scratch.mkdir()
        self.cgroups = sandbox._cgroups.create(index, sandbox)
        self.memory_mb = sandbox.memory_mb
        self.timeout_s = sandbox.timeout_s
        self.max_value_bytes, self.max_output_bytes = sandbox.max_value_bytes, sandbox.max_output_bytes
        self.max_reply = 8 * (sandbox.max_value_bytes + sandbox.max_output_bytes) + (1 << 20)
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {
            "channel_fd": theirs.fileno(),
            "root": str(root),
            "scratch": str(self.scratch),
            "memory_mb": sandbox.memory_mb,
            "max_output_bytes": sandbox.max_output_bytes,
            "max_value_bytes": sandbox.max_value_bytes,
            "max_file_mb": sandbox.max_file_mb,
            "max_scratch_mb": sandbox.max_scratch_mb,
            "memory_slots": self.cgroups.slots,
            "cgroup_mb": sandbox._cgroup_mb,
            "homes": [str(Path.home())],  # hidden where the worker has no root of its own (Landlock)
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
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-s", "-P", "-B", str(_WORKER_SCRIPT), json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
                env=env,
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self.cgroups.admit(self.process.pid)
        self.standby: collections.deque[tuple[int, int, int]] = collections.deque()  # (pid, request, reply)
        self.reports: dict[int, dict[str, Any]] = {}
        try:
            ready = self._receive(time.monotonic() + _START_TIMEOUT_S)
            if ready.get("ready") is not True:
                raise _WorkerLost(f"it could not lock itself down: {ready.get('missing')}")
        except _WorkerLost as exc:
            self.kill()
            raise SandboxError(f"a sandbox worker could not start: {exc}; check that {sys.executable} runs") from None
        self.pid: int = self.process.pid
        self.enforced: dict[str, str] = ready["enforced"]
        self.missing: dict[str, str] = ready["missing"]

    # ------------------------------------------------------------------------------------------------ calls
    def request(self, body: bytes) -> dict[str, Any]:
        """Run one request (its JSON) in a call process; the fields of its `CallResult` (its reply, or why it has
        none)."""
        pid, request_end, reply_end = self._next_call_process()
        try:
            with contextlib.suppress(OSError):  # it ended already: why is asked below
                protocol.write_all(request_end, protocol.FRAME.pack(len(body)) + body)
            os.close(request_end)
            request_end = -1
            outcome, reply = self._read_reply(reply_end, time.monotonic() + self.timeout_s)
        finally:
            for fd in (request_end, reply_end):
                if fd >= 0:
                    os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # nothing of the call outlives its reply: its PID namespace ends with it
        if outcome == "replied":
            self._send({"op": "done", "pid": pid})
            return parse_reply(reply, max_value_bytes=self.max_value_bytes, max_output_bytes=self.max_output_bytes)
        if outcome == "garbage":
            self._send({"op": "done", "pid": pid})
            return {"ok": False, "error": _LOST_REPLY}
        self._send({"op": "ended", "pid": pid})
        report = self._report_for(pid)
        if outcome == "timeout":
            report = {**report, "ended": "timeout"}
        return {"ok": False, "error": ended_reason(report, self.timeout_s, self.memory_mb)}

    def _read_reply(self, fd: int, deadline: float) -> tuple[str, bytes]:
        """("replied", body), or ("garbage" | "timeout" | "none", b"") when the call process gave no reply."""
        data, size = b"", None
        while size is None or len(data) < protocol.FRAME.size + size:
            chunk = _read_some(fd, deadline)
            if not chunk:
                return ("timeout" if time.monotonic() >= deadline else "none"), b""
            data += chunk
            if size is None and len(data) >= protocol.FRAME.size:
                size = protocol.FRAME.unpack(data[: protocol.FRAME.size])[0]
                if size > self.max_reply:  # no true reply is this long: forged code wrote to its pipe
                    return "garbage", b""
        return "replied", data[protocol.FRAME.size : protocol.FRAME.size + size]

    def _next_call_process(self) -> tuple[int, int, int]:
        self._drain()
        while not self.standby:
            self._handle(self._receive(time.monotonic() + _START_TIMEOUT_S))
        return self.standby.popleft()

    def _report_for(self, pid: int) -> dict[str, Any]:
        deadline = time.monotonic() + _GRACE_S
        while pid not in self.reports:
            self._handle(self._receive(deadline))
        return self.reports.pop(pid)

    # ----------------------------------------------------------------------------------------- the channel
    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.channel.sendall(json.dumps(message).encode())
        except OSError:
            raise _WorkerLost(self._death_reason()) from None

    def _drain(self) -> None:
        """Take in what the worker sent meanwhile (call processes it forked), without waiting."""
        while select.select([self.channel], [], [], 0)[0]:
            self._handle(self._receive(time.monotonic() + _GRACE_S))

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("op") == "standby":
            self.standby.append((message["pid"], *message["fds"]))
        elif message.get("op") == "ended":
            self.reports[message["pid"]] = message

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.channel], [], [], remaining)[0]:
            raise _WorkerLost("the sandbox worker stopped answering")
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, 1 << 16, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            raise _WorkerLost(self._death_reason())
        message = json.loads(data)
        message["fds"] = fds
        return message

    def _death_reason(self) -> str:
        try:
            code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "the sandbox worker stopped answering"
        if code < 0:
            return f"the sandbox worker crashed with {_signal_name(-code)}"
        return f"the sandbox worker ended (exit status {code})"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.cgroups.kill()
        for pid, request_end, reply_end in self.standby:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # it dies with the worker anyway (parent-death signal)
            os.close(request_end)
            os.close(reply_end)
        self.standby.clear()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)
        self.channel.close()
        self.cgroups.remove()
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_some(fd: int, deadline: float) -> bytes:
    """What `fd` holds (up to 1 MB), waiting until the deadline; b"" at its end or past the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        return b""
    return os.read(fd, 1 << 20)


class _WorkerCgroups:
    """The cgroups of one worker: a pids cgroup for its processes and a memory cgroup per call process (slots
    that call processes take in turn). Either may be missing where this process may not create cgroups."""

    def __init__(self, pids: Path | None, memory: Path | None, slots: list[dict[str, str]]) -> None:
        self.pids, self.memory, self.slots = pids, memory, slots

    def admit(self, pid: int) -> None:
        if self.pids is not None:
            with contextlib.suppress(OSError):
                (self.pids / "cgroup.procs").write_text(str(pid))

    def kill(self) -> None:
        if self.pids is not None:
            _kill_cgroup(self.pids)

    def remove(self) -> None:
        for group in (self.pids, self.memory):
            if group is not None:
                _remove_cgroup(group)


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


def _remove_cgroup(cgroup: Path) -> None:
    """Remove a cgroup and the ones below it (empty ones: their processes have ended)."""
    if not cgroup.is_dir():
        return
    for child in sorted((p for p in cgroup.iterdir() if p.is_dir()), reverse=True):
        _remove_cgroup(child)
    for _ in range(20):  # a memory cgroup may take a moment to let go of its last process
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    logger.debug("could not remove cgroup %s", cgroup)


class _Cgroups:
    """Where this process may create cgroups: the pids hierarchy (v1) and a memory controller (v1 or v2)."""

    def __init__(self) -> None:
        self.pids_base = _cgroup_base("pids")
        self.memory_base, self.memory_version = _memory_cgroup_base()

    def create(self, index: int, sandbox: Sandbox) -> _WorkerCgroups:
        name = f"toolforge-{os.getpid()}-{id(sandbox):x}-{index}"
        pids = self._make(self.pids_base, name, {"pids.max": str(sandbox.max_processes)}) if self.pids_base else None
        if pids is None:
            self.pids_base = None
        memory: Path | None = None
        slots: list[dict[str, str]] = []
        if self.memory_base is not None:
            memory = self._make(self.memory_base, name, {})
            limit = str(sandbox._cgroup_mb * 1024 * 1024)
            if self.memory_version == 2:
                settings, events = {"memory.max": limit, "memory.swap.max": "0"}, "memory.events"
                if memory is not None:
                    with contextlib.suppress(OSError):
                        (memory / "cgroup.subtree_control").write_text("+memory")
            else:
                settings = {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit}
                events = "memory.oom_control"
            for k in range(protocol.STANDBY + 3) if memory is not None else ():  # on hand, serving, being reaped
                slot = self._make(memory, f"call-{k}", settings)  # type: ignore[arg-type]
                if slot is None:
                    slots = []
                    break
                slots.append({"procs": str(slot / "cgroup.procs"), "events": str(slot / events)})
            if not slots:
                if memory is not None:
                    _remove_cgroup(memory)
                memory, self.memory_base = None, None
        return _WorkerCgroups(pids, memory, slots)

    @staticmethod
    def _make(base: Path, name: str, settings: dict[str, str]) -> Path | None:
        path = base / name
        try:
            path.mkdir(exist_ok=True)
            for key, value in settings.items():
                if (path / key).exists() or key in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                    (path / key).write_text(value)
        except OSError as exc:
            logger.debug("no cgroup %s: %s", path, exc)
            _remove_cgroup(path)
            return None
        return path


def _cgroup_base(controller: str) -> Path | None:
    """The caller's own cgroup directory in the v1 hierarchy of `controller`, if this process may create children."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            if os.access(base, os.W_OK) and (base / "cgroup.procs").exists():
                return base
    return None


def _memory_cgroup_base() -> tuple[Path | None, int]:
    """A directory below which memory cgroups can be made: v1's memory hierarchy, else cgroup v2 where the memory
    controller can be enabled for children."""
    v1 = _cgroup_base("memory")
    if v1 is not None:
        return v1, 1
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, 0
    for line in lines:
        if line.startswith("0::"):
            for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                base = mount / line[3:].lstrip("/")
                try:
                    available = (mount / "cgroup.controllers").read_text().split()
                except OSError:
                    continue
                if "memory" in available and os.access(base, os.W_OK):
                    return base, 2
    return None, 0


def _clean_leftovers(cgroups: _Cgroups) -> None:
    """Remove what sandboxes of processes that no longer run left behind (a `kill -9` gives them no chance):
    their scratch directories and their cgroups."""
    places: list[tuple[Path, re.Pattern[str], Callable[[Path], None]]] = [
        (Path(tempfile.gettempdir()), _LEFTOVER_DIRECTORY, functools.partial(shutil.rmtree, ignore_errors=True))
    ]
    places += [(base, _LEFTOVER_CGROUP, _remove_cgroup) for base in (cgroups.pids_base, cgroups.memory_base) if base]
    for place, pattern, remove in places:
        try:
            entries = list(place.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry.name)
            if match and not _alive(int(match.group(1))):
                remove(entry)
                logger.info("removed %s, left behind by a sandbox whose process has ended", entry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        max_processes: Cap on the threads of a worker's processes together (pids cgroup, where there is one).
        isolation: "call", the only mode: each call in a process of its own (see the module docstring). The
            former "worker" mode, which ran calls in the worker itself, was removed: code written to attack it
            could answer later calls.

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
        isolation: Literal["call"] = "call",
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
            check_int("Sandbox", name, value, low, error=SandboxError)
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not timeout_s > 0:
            raise SandboxError(f"Sandbox(timeout_s={timeout_s!r}): timeout_s must be a number of seconds > 0")
        if isolation != "call":
            raise SandboxError(
                f"Sandbox(isolation={isolation!r}): every call runs in a process of its own now, the only mode "
                "('worker', which ran calls in a shared process, was removed as unsafe); drop the argument"
            )
        self.workers = workers
        self.isolation = isolation
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_output_bytes = max_output_bytes
        self.max_value_bytes = max_value_bytes
        self.max_file_mb = max_file_mb
        self.max_scratch_mb = max_scratch_mb
        self.max_processes = max_processes
        self._cgroup_mb = memory_mb + max_scratch_mb + _CGROUP_HEADROOM_MB
        self._cgroups = _Cgroups()
        _clean_leftovers(self._cgroups)
        self.root = Path(tempfile.mkdtemp(prefix=f"toolforge-sandbox-{os.getpid()}-"))
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._started = 0
        self._starting = 0
        self._closed = False
        self._cond = threading.Condition()
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
        return self._submit({**request, "code": function.code})

    def run_code(self, code: str) -> CallResult:
        """Run a Python snippet in a worker; `stdout` holds what it printed and `value` its final expression."""
        return self._submit({"op": "exec", "code": code})

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
            f"{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------------------------------ private
    def _submit(self, request: dict[str, Any]) -> CallResult:
        start = time.perf_counter()
        try:
            body = json.dumps(request, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            return CallResult(ok=False, error=f"arguments are not JSON ({exc}); pass numbers, strings, lists, dicts")
        worker = self._acquire()
        healthy = False
        try:
            reply = worker.request(body)
            healthy = True
            return CallResult(
                ok=reply["ok"],
                value=reply.get("value"),
                error=reply.get("error"),
                stdout=reply.get("stdout", ""),
                duration_s=time.perf_counter() - start,
                value_is_repr=reply.get("value_is_repr", False),
                notes=tuple(reply.get("notes", ())),
            )
        except _WorkerLost as exc:
            logger.info("sandbox worker replaced: %s", exc)
            return CallResult(
                ok=False, error=str(exc), duration_s=time.perf_counter() - start, notes=("the worker was replaced",)
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
                        if worker.cgroups.pids is not None:
                            self._enforced["process count"] = f"pids cgroup: at most {self.max_processes} per worker"
                        if worker.cgroups.memory is None:
                            self._missing["memory cgroup"] = (
                                "no cgroup can be made here (needs root or a delegated cgroup v2): RLIMIT_AS, the "
                                "scratch tmpfs size and seccomp (no memfd, no SysV shared memory) bound what a call "
                                "holds; kernel buffers are bounded only by the descriptor limit"
                            )
                        if self._missing:
                            logger.warning("sandbox protections not available here: %s", self._missing)
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


def _release_all(workers: set[_Worker], root: Path) -> None:
    """Kill `workers` and remove `root`: what `Sandbox.close` does, for a sandbox that was never closed."""
    for worker in list(workers):
        worker.kill()
    workers.clear()
    shutil.rmtree(root, ignore_errors=True)


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox: created on first use with default limits, closed at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Sandbox()
            atexit.register(_default.close)
        return _default
