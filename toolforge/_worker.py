"""A sandbox worker: a persistent process that runs forged code for `toolforge.sandbox.Sandbox`.

Started as `python -s -P -B _worker.py CONFIG_JSON` with a clean environment and its scratch directory as working
directory. It imports only the standard library (toolforge's own package, and DSPy with it, are never loaded here),
locks itself down, reports what it could enforce, then answers requests until its stdin closes.

Protocol: 4-byte big-endian length + UTF-8 JSON, over the pipes the worker was started with (they are moved off
fds 0/1 at once, so that forged code printing to fd 1 cannot corrupt it). Requests:
    {"op": "call", "name": ..., "code_hash": ..., "code": ... (omitted when this worker has it), "arguments": {...}}
    {"op": "exec", "code": ...}
Replies: {"ok", "value", "value_is_repr", "error", "stdout", "notes", "recycle"}; `recycle` asks the parent to
replace this worker (memory exhausted, threads or processes left running).
"""

import collections
import contextlib
import ctypes
import ctypes.util
import gc
import io
import json
import linecache
import os
import resource
import signal
import struct
import sys
import threading
import traceback
import types

_ERRNO_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_MB = 1024 * 1024


# --------------------------------------------------------------------------------------------- lock-down
def _libc_call(fn, *args):
    ctypes.set_errno(0)
    result = fn(*args)
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _isolate_network():
    """A new, empty network namespace: no interface but a down loopback, so every connect fails."""
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    if os.geteuid() == 0:
        _libc_call(_ERRNO_LIBC.unshare, clone_newnet)
        return "network namespace"
    uid, gid = os.geteuid(), os.getegid()
    _libc_call(_ERRNO_LIBC.unshare, clone_newuser | clone_newnet)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    return "user + network namespace"


def _private_scratch(scratch, size_mb):
    """Mount a tmpfs of `size_mb` on the scratch directory, in a mount namespace of this worker's own.

    RLIMIT_FSIZE caps one file; this caps them all, so that forged code cannot fill the caller's disk. The files
    live in memory while the worker lives, and vanish with it.
    """
    clone_newns, ms_nosuid, ms_nodev, ms_rec, ms_private = 0x00020000, 2, 4, 0x4000, 1 << 18
    _libc_call(_ERRNO_LIBC.unshare, clone_newns)
    mount = _ERRNO_LIBC.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _libc_call(mount, None, b"/", None, ms_rec | ms_private, None)  # nothing we mount reaches the caller
    options = f"size={size_mb}m,mode=0700".encode()
    _libc_call(mount, b"toolforge", os.fsencode(scratch), b"tmpfs", ms_nosuid | ms_nodev, options)
    os.chdir(scratch)  # into the new mount (the working directory still pointed below it)
    return f"a {size_mb} MB tmpfs of its own"


# /proc files about the machine, not about another process: forged code may read them (CPU counts, memory)
_PROC_READABLE = ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "version", "filesystems", "sys")


def _readable_paths(hidden, exceptions):
    """Paths whose trees, together, cover everything but the `hidden` trees, plus the `exceptions` inside them.

    Landlock only allows: to hide /home while /usr stays readable, every sibling on the way to a hidden directory
    is allowed by name.
    """
    hidden = {os.path.realpath(h) for h in hidden} - {"/"}  # a home of "/" (service accounts) hides nothing
    paths = []

    def visit(directory):
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return
        for name in names:
            path = os.path.join(directory, name)
            real = os.path.realpath(path)  # a rule follows links: judge where it lands
            if any(real == h or real.startswith(h + "/") for h in hidden):
                continue
            if any(h.startswith(real.rstrip("/") + "/") for h in hidden):
                if not os.path.islink(path) and os.path.isdir(path):
                    visit(path)  # a link to an ancestor of a hidden tree is covered where it really is
                continue
            paths.append(path)

    visit("/")
    return paths + [e for e in exceptions if any(e == h or e.startswith(h + "/") for h in hidden)]


def _landlock(scratch, homes=()):
    """Forbid writes outside `scratch` (and /dev/null), reading other processes' /proc entries and home
    directories (but Python's own files there), TCP bind/connect, and signals to outside processes."""
    syscall = _ERRNO_LIBC.syscall
    syscall.restype = ctypes.c_long
    create_ruleset, add_rule, restrict_self = 444, 445, 446
    abi = syscall(create_ruleset, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not supported by this kernel")
    write_file, read_file, read_dir, truncate = 1 << 1, 1 << 2, 1 << 3, 1 << 14
    fs = write_file | sum(1 << bit for bit in range(4, 13))  # remove_dir .. make_sym
    if abi >= 2:
        fs |= 1 << 13  # refer
    if abi >= 3:
        fs |= truncate
    read = read_file | read_dir
    net = (1 << 0 | 1 << 1) if abi >= 4 else 0  # bind_tcp | connect_tcp
    scoped = (1 << 0 | 1 << 1) if abi >= 6 else 0  # abstract unix sockets | signals
    attr = struct.pack("=QQQ", fs | read, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = syscall(create_ruleset, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    # Reads stay allowed everywhere but below /proc, where only this process's own entries and the machine-wide
    # files are readable (another process's environ, cmdline or mem hold the caller's API keys), and in home
    # directories (~/.ssh, ~/.aws, ~/.netrc, tokens), where only Python's own files stay readable.
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(__file__)}
    python |= {entry for entry in sys.path if entry}
    exceptions = [os.path.realpath(p) for p in sorted(python)] + ["/proc/self"]
    exceptions += [f"/proc/{name}" for name in _PROC_READABLE]
    hidden = ["/proc", "/root", "/home", *homes]
    rules = [("/", read_dir), (scratch, fs | read), ("/dev/null", write_file | (truncate if abi >= 3 else 0))]
    rules += [(path, read) for path in _readable_paths(hidden, exceptions)]
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a dangling link or a file that vanished: nothing to allow
            try:
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    rights &= write_file | read_file | (truncate if abi >= 3 else 0)  # what a file can be granted
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
                if syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        _libc_call(_ERRNO_LIBC.prctl, 38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        if syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    parts = ["filesystem writes", "reading other processes' /proc entries and home directories"]
    if net:
        parts.append("TCP bind/connect")
    if scoped:
        parts.append("signals and abstract sockets outside the sandbox")
    return f"Landlock ABI {abi}: " + ", ".join(parts)


# (audit arch, socket syscall number) by machine; io_uring_setup is 425 on both
_SECCOMP_ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}


def _seccomp_no_sockets():
    """A seccomp filter: socket(2) and io_uring_setup(2) fail with EPERM, for every address family.

    The network namespace stops TCP and UDP, but not Unix sockets on the filesystem (a Docker daemon's, an SSH
    agent's, a database's), and the audit hook can be bypassed with ctypes. socketpair(2) stays allowed: it makes
    a connected pair inside the process, reaching nothing outside. Syscalls of another ABI (x32, 32-bit) fail too.
    """
    arch, socket_nr = _SECCOMP_ARCHES.get(os.uname().machine, (None, None))
    if arch is None:
        raise OSError(f"no seccomp filter for machine {os.uname().machine}")
    deny, allow = 0x00050000 | 1, 0x7FFF0000  # SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    program = [
        (load, 0, 0, 4),  # 0: the arch
        (jeq, 1, 0, arch),  # 1: native: go on at 3
        (ret, 0, 0, deny),  # 2: another ABI
        (load, 0, 0, 0),  # 3: the syscall number
        (jge, 3, 0, 0x40000000),  # 4: x32 syscalls: deny
        (jeq, 2, 0, socket_nr),  # 5: socket: deny
        (jeq, 1, 0, 425),  # 6: io_uring_setup (it can open and connect sockets itself): deny
        (ret, 0, 0, allow),  # 7
        (ret, 0, 0, deny),  # 8
    ]
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(program), ctypes.cast(filters, ctypes.c_void_p))
    _libc_call(_ERRNO_LIBC.prctl, 38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (needed without CAP_SYS_ADMIN)
    _libc_call(_ERRNO_LIBC.prctl, 22, 2, ctypes.byref(prog), 0, 0)  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return "seccomp: socket() and io_uring fail, for every address family"


def _status_field(name):
    """A field of /proc/self/status (e.g. `VmSize`, `CapEff`), or None."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    return None


def _drop_capabilities():
    """Give up every capability (as root, or inside the user namespace a non-root worker made for itself), so
    that namespaces, limits and Landlock cannot be undone."""
    if os.geteuid() != 0 and not int(_status_field("CapEff") or "0", 16):
        return "none held"
    for cap in range(64):
        if _ERRNO_LIBC.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP until EINVAL past the last capability
            break
    _ERRNO_LIBC.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _libc_call(_ERRNO_LIBC.capset, ctypes.byref(Header(0x20080522, 0)), data)
    return "all capabilities dropped"


def _vm_size_bytes():
    return int(_status_field("VmSize") or 0) * 1024


_FORBIDDEN_EVENTS = {
    "os.system": "running shell commands",
    "os.exec": "replacing the process",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.fork": "forking",
    "os.forkpty": "forking",
    "subprocess.Popen": "starting processes",
    "os.kill": "sending signals",
    "os.killpg": "sending signals",
    "pty.spawn": "starting processes",
}
_PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _install_audit_hook(scratch, forks_calls):
    """Python-level guard (portable, in addition to the OS-level ones): no processes, no signals, no network,
    no writes outside the scratch directory. With `forks_calls`, the worker's own process (where forged code
    then never runs) may fork the process of each call, and end it."""
    scratch = os.path.realpath(scratch)
    devnull = os.path.realpath(os.devnull)
    realpath, fspath, isinstance_, str_, bytes_, int_ = (
        os.path.realpath,
        os.fspath,
        isinstance,
        str,
        bytes,
        int,
    )

    def inside(path):
        if isinstance_(path, int_):
            return True  # an already open descriptor
        try:
            path = fspath(path)
            if isinstance_(path, bytes_):
                path = path.decode(errors="replace")
            resolved = realpath(path)
        except Exception:
            return False
        return resolved == scratch or resolved.startswith(scratch + os.sep) or resolved == devnull

    zygote, getpid = os.getpid(), os.getpid

    def hook(event, args):
        if forks_calls and event in ("os.fork", "os.kill") and getpid() == zygote:
            return  # the worker forking (and ending) the process a call runs in; forged code never runs here
        if event in _FORBIDDEN_EVENTS:
            raise PermissionError(f"toolforge sandbox: {_FORBIDDEN_EVENTS[event]} is not allowed ({event})")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance_(mode, str_) and any(c in mode for c in "wax+")) or (
                isinstance_(flags, int_) and flags & _WRITE_FLAGS
            )
            if writing and path is not None and not inside(path):
                raise PermissionError(
                    f"toolforge sandbox: writing outside the scratch directory is not allowed: {path}"
                )
        elif event in _PATH_EVENTS:
            for path in args[:2] if event in ("os.rename", "os.symlink", "os.link") else args[:1]:
                if isinstance_(path, str_ | bytes_) and not inside(path):
                    raise PermissionError(f"toolforge sandbox: changing files outside the scratch directory: {path}")
        elif event == "socket.__new__":
            if args[1] != 1:  # AF_UNIX passes here for socketpair(); the seccomp filter refuses socket() itself
                raise PermissionError("toolforge sandbox: network access is not allowed")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            raise PermissionError("toolforge sandbox: network access is not allowed")

    sys.addaudithook(hook)
    return "audit hook: processes, signals, network, writes outside scratch"


def _lock_down(config):
    scratch = config["scratch"]
    enforced, missing = {}, {}
    steps = [
        ("network", _isolate_network),
        ("scratch", lambda: _private_scratch(scratch, config["max_scratch_mb"])),
        ("filesystem", lambda: _landlock(scratch, config.get("homes", ()))),
        ("capabilities", _drop_capabilities),
        ("sockets", _seccomp_no_sockets),
    ]
    for key, step in steps:
        try:
            enforced[key] = step()
        except Exception as exc:
            missing[key] = f"{type(exc).__name__}: {exc}"
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file_limit = config["max_file_mb"] * _MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing us
    nofile = min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    enforced["files"] = f"files up to {config['max_file_mb']} MB, {nofile} open"
    if os.geteuid() != 0 and config.get("max_processes"):
        limit = config["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        enforced["processes"] = f"RLIMIT_NPROC {limit}"
    enforced["python"] = _install_audit_hook(scratch, forks_calls=config.get("isolation", "worker") == "call")
    return enforced, missing


# ------------------------------------------------------------------------------------------------- calls
class _CappedText(io.TextIOBase):
    """What forged code prints, kept up to a cap; the rest is counted and dropped."""

    def __init__(self, cap):
        self.cap, self.parts, self.size, self.dropped = cap, [], 0, 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.cap - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def flush(self):
        pass


_NOT_PRELOADED = {"this", "antigravity"}  # importing them prints, or opens a browser
_WARM_UP = {"op": "call", "name": "warm_up", "code_hash": "<warm-up>", "arguments": {"x": 1}}
_STANDBY = 2  # call processes forked ahead, per worker
_WARM_UP_CODE = "def warm_up(x):\n    print(x)\n    return [x, str(x)]\n"


def _compile_forged(name, code):
    filename = f"<forged {name}>"
    _remember_source(filename, code)
    return compile(code, filename, "exec")


def _remember_source(filename, code):
    """So that tracebacks of code compiled from a string show its lines."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)


def _forged_traceback(exc):
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
    where = "".join(f"\n  line {f.lineno} in {f.name}" + (f": {f.line}" if f.line else "") for f in frames[-3:])
    return f"{type(exc).__name__}: {exc}"[:2000] + where


class Worker:
    def __init__(self, config, proto_in, proto_out, output_fd, private_scratch=False):
        self.config = config
        self.private_scratch = private_scratch
        self.scratch = config["scratch"]
        self.proto_in, self.proto_out, self.output_fd = proto_in, proto_out, output_fd
        self.isolated = config.get("isolation", "worker") == "call"  # each call in a process of its own
        self.functions = {}  # code_hash -> (name, code object): compiled once per worker
        self.defined = {}  # code_hash -> function, where the worker runs calls itself (isolation="worker")
        self.functions[_WARM_UP["code_hash"]] = ("warm_up", _compile_forged("warm_up", _WARM_UP_CODE))
        self.children = []  # call processes that replied, to reap
        self.sources = {}  # code_hash -> code, for a call's process forked before its code came
        # (pid, request pipe, reply pipe, code_hashes it has compiled) of the processes that will run the next calls
        self.standby = collections.deque()
        self.max_reply = 8 * (config["max_value_bytes"] + config["max_output_bytes"]) + (1 << 20)
        self.signals = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, 19)}
        self.recursion_limit = sys.getrecursionlimit()

    # protocol
    def read(self):
        header = self._read_exact(4)
        if header is None:
            return None
        body = self._read_exact(struct.unpack(">I", header)[0])
        return None if body is None else json.loads(body)

    def _read_exact(self, n):
        chunks, got = [], 0
        while got < n:
            chunk = os.read(self.proto_in, n - got)
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def write(self, message):
        body = json.dumps(message).encode()
        data = struct.pack(">I", len(body)) + body
        while data:
            data = data[os.write(self.proto_out, data) :]

    # work
    def serve(self, request):
        """The reply to `request`, run in a process of its own forked from this one.

        Forged code never runs in the worker's own process, which holds the pipes to the caller: the call's
        process has only a pipe in (its request) and a pipe out (its reply). So forged code can neither read the
        caller's next request nor answer it; at most it spoils its own reply, whose result it controls anyway;
        and the worker is not dumpable, so no process of the same user opens its pipes through /proc. A call's
        process that ends without a reply (os._exit, a crash) takes the worker with it, the same way, so that the
        caller sees why and replaces the worker. The processes of the next calls are forked ahead, while the caller
        reads this reply, so that a call does not wait for a fork. Each knows the functions compiled before it was
        forked; a call of a later one brings its code along.
        """
        self._reap()
        try:
            self._prepare(request)
        except BaseException as exc:  # code that does not compile: its error is the call's result
            return self._reply(False, None, _forged_traceback(exc), "", [], False)
        if not self.standby:
            self.prefork(1)
        pid, request_end, reply_end, known = self.standby.popleft()
        if request.get("op") == "call" and request["code_hash"] not in known:  # it predates the code
            request = {**request, "code": self.sources[request["code_hash"]]}
        data = json.dumps(request).encode()
        try:
            while data:
                data = data[os.write(request_end, data) :]
        except OSError:
            pass  # it ended already: what it said (or its exit status) is read below
        os.close(request_end)
        chunks, size = [], 0
        while chunk := os.read(reply_end, 1 << 20):
            if size <= self.max_reply:  # past that, drained and dropped: no true reply is so long
                chunks.append(chunk)
            size += len(chunk)
        os.close(reply_end)
        if not size:  # no reply: how did the call's process end? (if it runs on, the caller's timeout ends it)
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                return self._reply(False, None, "the code closed the sandbox's pipe; its reply was lost", "", [], False)
            if os.WIFSIGNALED(status):  # end as the call's process did (a crash), so that the caller can tell why
                signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
                signal.raise_signal(os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it replied (or wrote): nothing of the call may outlive its reply
        self.children.append(pid)
        try:
            reply = json.loads(b"".join(chunks)) if size <= self.max_reply else None
        except ValueError:
            reply = None
        if not isinstance(reply, dict):  # the code wrote to its reply pipe: the reply is lost, the worker is fine
            return self._reply(False, None, "the code wrote to the sandbox's pipe; its reply was lost", "", [], False)
        reply["pid"] = os.getpid()
        return reply

    def prefork(self, depth=_STANDBY):
        """Fork processes for the next calls until `depth` wait, each for its request. Two, so that calls back to
        back find one forked and warmed up while the worker forks the next."""
        while len(self.standby) < depth:
            self._fork_one()

    def _fork_one(self):
        request_in, request_end = os.pipe()
        reply_end, reply_out = os.pipe()
        gc.freeze()  # the child's collector then leaves the worker's objects (and their pages) alone
        known = frozenset(self.functions)  # the new process has every function compiled so far
        pid = os.fork()
        if pid == 0:  # the call's process: it keeps only its own two pipes
            try:
                for fd in (self.proto_in, self.proto_out, request_end, reply_end):
                    os.close(fd)
                for _, other_request, other_reply, _ in self.standby:  # the other waiting processes' pipes
                    os.close(other_request)
                    os.close(other_reply)
                # a call of our own first: the pages a call writes to are copied now, not while the caller waits
                json.dumps(self.handle(_WARM_UP))
                chunks = []
                while chunk := os.read(request_in, 1 << 20):
                    chunks.append(chunk)
                os.close(request_in)
                if chunks:  # none: the worker ended before a call came
                    data = json.dumps(self.handle(json.loads(b"".join(chunks)))).encode()
                    while data:
                        data = data[os.write(reply_out, data) :]
                    os.close(reply_out)  # the reply is complete now, not when the exit has torn the process down
            finally:
                os._exit(0)
        os.close(request_in)
        os.close(reply_out)
        self.standby.append((pid, request_end, reply_end, known))

    def _prepare(self, request):
        """Compile a function's code once per worker, and import the standard-library modules the code imports
        here, so that each call's process finds them loaded (running nothing the code itself defines)."""
        if request["op"] == "exec":
            code = request["code"]
        elif request["code_hash"] in self.functions or "code" not in request:
            return
        else:
            code = request["code"]
            self.sources[request["code_hash"]] = code
            self.functions[request["code_hash"]] = (request["name"], _compile_forged(request["name"], code))
        try:
            import ast

            tree = ast.parse(code)
        except SyntaxError:
            return
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names and top not in _NOT_PRELOADED and name not in sys.modules:
                    try:
                        __import__(name)
                    except BaseException:
                        pass

    def _reap(self):
        """Collect the call processes that have ended since (each was killed once it replied)."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.remove(pid)

    def handle(self, request):
        notes, recycle = [], False
        cap = self.config["max_output_bytes"]
        out = _CappedText(cap)
        saved = sys.stdout, sys.stderr, sys.stdin
        sys.stdout = sys.stderr = out
        sys.stdin = io.StringIO()
        ok, value, error = False, None, None
        try:
            value = self._run(request)
            ok = True
        except MemoryError:
            error = f"exceeded {self.config['memory_mb']} MB memory limit"
            notes.append("the worker was replaced")
            recycle = True
        except SystemExit as exc:
            error = f"called sys.exit({exc.code!r}); a forged function must return its result, not exit"
        except RecursionError as exc:
            error = _forged_traceback(exc)
        except BaseException as exc:
            error = _forged_traceback(exc)
        finally:
            sys.stdout, sys.stderr, sys.stdin = saved
            # a call's own process ends with it; a worker that ran the code itself must undo what it changed
            recycle |= self._scratch_full(notes) if self.isolated else self._restore(notes)
        stdout = "".join(out.parts)
        file_output = self._drain_output(cap - len(stdout.encode()))
        stdout += file_output[0]
        if out.dropped or file_output[1]:
            notes.append(f"output truncated to {cap} bytes")
        value, value_is_repr = self._encode(value, notes) if ok else (None, False)
        return self._reply(ok, value, error, stdout, notes, recycle, value_is_repr)

    @staticmethod
    def _reply(ok, value, error, stdout, notes, recycle, value_is_repr=False):
        return {
            "ok": ok,
            "value": value,
            "value_is_repr": value_is_repr,
            "error": error,
            "stdout": stdout,
            "notes": notes,
            "recycle": recycle,
            "pid": os.getpid(),
        }

    def _run(self, request):
        if request["op"] == "exec":
            return self._exec_snippet(request["code"])
        if request["code_hash"] not in self.functions:  # compiled after this process was forked
            if "code" not in request:
                raise RuntimeError("worker lost the function's code; call again")
            self.functions[request["code_hash"]] = (request["name"], _compile_forged(request["name"], request["code"]))
        fn = self.defined.get(request["code_hash"])
        if fn is None:
            name, code = self.functions[request["code_hash"]]
            module = types.ModuleType(f"forged_{name}")
            module.__dict__["__builtins__"] = __builtins__
            try:
                exec(code, module.__dict__)
            except BaseException as exc:
                raise type(exc)(f"defining {name!r} failed: {exc}").with_traceback(exc.__traceback__) from None
            fn = module.__dict__.get(name)
            if not callable(fn):
                raise NameError(f"the code does not define a function {name!r}")
            if not self.isolated:  # defined once, in the worker that runs the calls itself
                self.defined[request["code_hash"]] = fn
        return fn(**request["arguments"])

    @staticmethod
    def _exec_snippet(code):
        """Run a snippet like a notebook cell: its printed output, plus the value of a final expression."""
        import ast

        _remember_source("<python>", code)
        tree = ast.parse(code, "<python>", "exec")
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<python>", "exec"), namespace)
        if last is None:
            return None
        return eval(compile(ast.Expression(last.value), "<python>", "eval"), namespace)

    def _scratch_full(self, notes):
        """Whether the scratch directory, which outlives the call, holds so much that the worker must go."""
        if not self.private_scratch:
            return False
        usage = os.statvfs(self.scratch)
        used_mb = (usage.f_blocks - usage.f_bfree) * usage.f_frsize / _MB
        if used_mb > self.config["max_scratch_mb"] / 2:  # the tmpfs holds memory: give it back
            notes.append(f"its scratch directory held {used_mb:.0f} MB; the worker was replaced")
            return True
        return False

    def _restore(self, notes):
        """Undo what forged code may have changed in this process; say whether the worker must be replaced."""
        recycle = False
        try:
            os.chdir(self.scratch)
        except OSError:
            recycle = True
            notes.append("the scratch directory was removed; the worker was replaced")
        for sig, handler in self.signals.items():
            try:
                if signal.getsignal(sig) is not handler:
                    signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
        signal.alarm(0)  # a pending alarm or timer would fire during a later call
        for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            signal.setitimer(timer, 0)
        sys.setrecursionlimit(self.recursion_limit)
        recycle |= self._scratch_full(notes)
        threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
        if threads > 1:
            recycle = True
            notes.append(f"left {threads - 1} thread(s) running; the worker was replaced")
        try:
            while os.waitpid(-1, os.WNOHANG) != (0, 0):
                pass  # reap children that already ended
            recycle = True
            notes.append("left child processes running; the worker was replaced")
        except ChildProcessError:
            pass  # no children: the usual case
        return recycle

    def _drain_output(self, room):
        size = os.lseek(self.output_fd, 0, os.SEEK_END)
        if size == 0:
            return "", False
        os.lseek(self.output_fd, 0, os.SEEK_SET)
        data = os.read(self.output_fd, max(room, 0)) if room > 0 else b""
        os.ftruncate(self.output_fd, 0)
        os.lseek(self.output_fd, 0, os.SEEK_SET)
        return data.decode(errors="replace"), size > len(data)

    def _encode(self, value, notes):
        limit = self.config["max_value_bytes"]
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError, OverflowError):
            try:
                text = repr(value)
            except Exception as exc:
                text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
            notes.append(f"the return value ({type(value).__name__}) is not JSON; it is given as its repr")
            if len(text) > limit:
                text = text[:limit]
                notes.append(f"the repr was truncated to {limit} characters")
            return text, True
        if len(text) > limit:
            notes.append(
                f"the return value was {len(text)} bytes of JSON, over {limit}; it is given as a truncated repr"
            )
            return repr(value)[:limit], True
        return value, False


def main():
    config = json.loads(sys.argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    output_fd = os.memfd_create("toolforge-output") if hasattr(os, "memfd_create") else None
    if output_fd is None:
        import tempfile

        output_fd = tempfile.TemporaryFile().fileno()
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    sys.stdout = sys.stderr = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    enforced, missing = _lock_down(config)
    if config.get("isolation", "worker") == "call":
        try:  # not dumpable: no process of the same user (a call's, included) can open our pipes through /proc
            _libc_call(_ERRNO_LIBC.prctl, 4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
            enforced["isolation"] = "each call in a process of its own, apart from the pipes to the caller"
        except OSError as exc:
            missing["isolation"] = f"PR_SET_DUMPABLE: {exc}"
    os.makedirs(os.path.join(config["scratch"], "tmp"), exist_ok=True)  # in the tmpfs, where there is one
    memory = config["memory_mb"] * _MB
    address_space = _vm_size_bytes() + memory
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    enforced["memory"] = f"{config['memory_mb']} MB address space beyond the interpreter's own"
    worker = Worker(config, proto_in, proto_out, output_fd, private_scratch="scratch" in enforced)
    worker.write({"ready": True, "pid": os.getpid(), "enforced": enforced, "missing": missing})
    if worker.isolated:
        worker.prefork()
    while True:
        request = worker.read()
        if request is None:
            return
        reply = worker.serve(request) if worker.isolated else worker.handle(request)
        reply["nonce"] = request.get("nonce")  # so that the parent can tell this reply from one forged code wrote
        worker.write(reply)
        if reply["recycle"]:
            os._exit(0)  # without waiting for threads that forged code left behind
        if worker.isolated:
            worker.prefork()  # while the caller reads the reply


if __name__ == "__main__":
    main()
