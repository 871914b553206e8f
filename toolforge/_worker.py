"""A sandbox worker: the fork server behind `toolforge.sandbox.Sandbox`. Standard library only.

Started as `python -s -P -B _worker.py CONFIG_JSON` with a clean environment. It locks itself down (a network
namespace; a mount namespace whose root holds only the system's and Python's directories, read-only), reports what
holds, then forks call processes until its channel to the host closes. It never runs forged code, and never sees a
call: each call runs in a process of its own (a *call process*), forked ahead in fresh PID, mount and IPC
namespaces, which mounts its own /proc and its own scratch tmpfs, opens its own output file, and drops every
privilege and installs its Landlock rules, seccomp filter and audit hook before it reads its request. The host
writes the request to the call process and reads its reply directly, over two pipes this worker made and passed on
(and closed, so no later call process inherits them); then the call process is killed, and everything it started or
left behind ends with its PID namespace and its mount namespace.

Protocol. With the host: JSON messages over a SOCK_SEQPACKET socket (one message a datagram):
    worker -> host: {"op": "ready", "ready": true, "enforced": {...}, "missing": {...}} once; then
        {"op": "standby", "pid": N} with two file descriptors (the call process's request and reply pipes), so that
        STANDBY + 1 are always on hand; {"op": "ended", "pid": N, "ended": "signal" | "exit", "code": int,
        "oom": bool} when asked.
    host -> worker: {"op": "done", "pid": N} (replied: end it); {"op": "ended", "pid": N} (it gave no reply: how
        did it end?).
With a call process, over its pipes: `FRAME` (a 4-byte big-endian length) and that much JSON, once each way:
    request {"op": "call", "name": ..., "code": ..., "arguments": {...}} or {"op": "exec", "code": ...};
    reply with the fields `REPLY_FIELDS` (forged code may write its own pipe: the host checks the reply).
"""

import collections
import contextlib
import ctypes
import ctypes.util
import errno as errno_
import gc
import io
import json
import linecache
import os
import resource
import select
import signal
import socket
import struct
import sys
import sysconfig
import traceback
import types

FRAME = struct.Struct(">I")  # a request to a call process, and its reply: the length, then that much JSON
REPLY_FIELDS = ("ok", "value", "value_is_repr", "error", "stdout", "notes")
STANDBY = 2  # call processes forked ahead

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_GIL_LIBC = ctypes.PyDLL(ctypes.util.find_library("c") or None, use_errno=True)  # keeps the GIL across the call
_MB = 1024 * 1024

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_THREAD = 0x10000000, 0x40000000, 0x00010000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 0x4000, 1 << 18


# --------------------------------------------------------------------------------------------- kernel calls
def _libc_call(fn, *args):
    ctypes.set_errno(0)
    result = fn(*args)
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _mount(source, target, fstype, flags, data=None):
    mount = _LIBC.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _libc_call(mount, enc(source), enc(target), enc(fstype), flags, enc(data))


def _bind_read_only(source, target):
    _mount(source, target, None, _MS_BIND | _MS_REC)
    _mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


# (audit arch, syscall numbers) by machine. A name missing on a machine (aarch64 has only the *at calls) is skipped.
# fmt: off
# syscall numbers on x86_64 and aarch64 (None: the machine has only the *at form), and each machine's audit arch
_SYSCALL_NUMBERS = {
    "socket": (41, 198), "sendmsg": (46, 211), "sendmmsg": (307, 269),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "fcntl": (72, 25), "flock": (73, 32), "clone": (56, 220), "clone3": (435, 435), "fork": (57, None),
    "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281), "prctl": (157, 167), "chmod": (90, None),
    "fchmod": (91, 52), "fchmodat": (268, 53), "fchmodat2": (452, 452), "chown": (92, None), "fchown": (93, 55),
    "lchown": (94, None), "fchownat": (260, 54), "utime": (132, None), "utimes": (235, None),
    "futimesat": (261, None), "utimensat": (280, 88), "setxattr": (188, 5), "lsetxattr": (189, 6),
    "fsetxattr": (190, 7), "removexattr": (197, 14), "lremovexattr": (198, 15), "fremovexattr": (199, 16),
    "setxattrat": (463, 463), "removexattrat": (466, 466), "memfd_create": (319, 279), "memfd_secret": (447, 447),
    "shmget": (29, 194), "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "kcmp": (312, 272), "pidfd_open": (434, 434), "pidfd_getfd": (438, 438), "pidfd_send_signal": (424, 424),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "mount_setattr": (442, 442), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433), "keyctl": (250, 219),
    "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265),
}
# fmt: on
_ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}


def _syscalls():
    """(audit arch, {name: number}) of this machine, or (None, None) where there is no table for it."""
    arch, column = _ARCHES.get(os.uname().machine, (None, 0))
    if arch is None:
        return None, None
    return arch, {name: numbers[column] for name, numbers in _SYSCALL_NUMBERS.items() if numbers[column] is not None}


_NO_SOCKETS = ("socket", "io_uring_setup", "io_uring_enter", "io_uring_register")
# sendmsg is how descriptors travel (SCM_RIGHTS): queued on a socketpair that only refers to itself, they would keep
# the call's scratch files, and the memory they hold, alive after the call; send/recv on a socketpair stay allowed
_NO_PASSING_DESCRIPTORS = ("sendmsg", "sendmmsg")
# fmt: off
_NO_PROCESSES = ("fork", "vfork", "execve", "execveat")  # and clone without CLONE_THREAD, clone3 (see below)
_NO_METADATA = (
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
    "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat",
)
_NO_HIDDEN_MEMORY = ("memfd_create", "memfd_secret", "shmget")
_NO_BLOCKING_OTHERS = ("flock",)  # a lock on a shared file (read-only fds included) would make others wait
_NO_REACHING_OUT = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "name_to_handle_at", "open_by_handle_at",
)
# fmt: on
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 38, 22, 1, 4
_F_SETLEASE = 1024


def _seccomp_program(denied, *, processes=False):
    """A seccomp filter, built once (installed by `_install_seccomp` in each call process): the `denied` syscalls
    fail with EPERM; with `processes`, so do new processes (clone without CLONE_THREAD; clone3, whose flags a filter
    cannot read, fails with ENOSYS so that the C library falls back to clone for threads), un-setting the
    parent-death signal and taking a lease on a file. Syscalls of another ABI (x32, 32-bit) fail too."""
    arch, numbers = _syscalls()
    if arch is None or numbers is None:
        raise OSError(f"no seccomp filter for machine {os.uname().machine}")
    deny, allow, nosys = 0x00050000 | errno_.EPERM, 0x7FFF0000, 0x00050000 | errno_.ENOSYS
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, JMP|JEQ, JMP|JGE, JMP|JSET, RET
    arg0 = 16  # offsetof(struct seccomp_data, args[0]), its low 32 bits on a little-endian machine
    program = [(load, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, deny), (load, 0, 0, 0), (jge, 0, 1, 0x40000000)]
    program.append((ret, 0, 0, deny))
    if processes:
        program += [
            (jeq, 0, 4, numbers["clone"]),
            (load, 0, 0, arg0),
            (jset, 0, 1, _CLONE_THREAD),
            (ret, 0, 0, allow),  # a thread
            (ret, 0, 0, deny),  # a process
            (jeq, 0, 1, numbers["clone3"]),
            (ret, 0, 0, nosys),
            (jeq, 0, 4, numbers["prctl"]),
            (load, 0, 0, arg0),
            (jeq, 0, 1, _PR_SET_PDEATHSIG),
            (ret, 0, 0, deny),
            (ret, 0, 0, allow),
            (jeq, 0, 4, numbers["fcntl"]),  # a lease on a file it can read would block whoever opens it
            (load, 0, 0, arg0 + 8),
            (jeq, 0, 1, _F_SETLEASE),
            (ret, 0, 0, deny),
            (ret, 0, 0, allow),
        ]
    for name in denied:
        if name in numbers:
            program += [(jeq, 0, 1, numbers[name]), (ret, 0, 0, deny)]
    program.append((ret, 0, 0, allow))
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    return filters, _SockFprog(len(program), ctypes.cast(filters, ctypes.c_void_p))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(program):
    _libc_call(_LIBC.prctl, _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # needed without CAP_SYS_ADMIN
    _libc_call(_LIBC.prctl, _PR_SET_SECCOMP, 2, ctypes.byref(program[1]), 0, 0)  # SECCOMP_MODE_FILTER


# ------------------------------------------------------------------------------------- the worker's lock-down
def _isolate_network():
    """A new, empty network namespace: no interface but a down loopback, so every connect fails. As non-root,
    inside a user namespace of its own, which also gives the worker the rights the other namespaces need."""
    if os.geteuid() == 0:
        _libc_call(_LIBC.unshare, _CLONE_NEWNET)
        return "network namespace"
    uid, gid = os.geteuid(), os.getegid()
    _libc_call(_LIBC.unshare, _CLONE_NEWUSER | _CLONE_NEWNET)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    return "user + network namespace"


_ROOT_DIRECTORIES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# secrets /etc holds, readable by root even without capabilities: hidden under an empty file or directory
_ETC_SECRETS = ("shadow", "shadow-", "gshadow", "gshadow-", "sudoers", "sudoers.d", "ssh", "ssl/private")
_DEVICES = ("null", "zero", "full", "random", "urandom")


def _python_paths():
    """The directories Python needs: its prefixes and its library directories (never a project directory that
    happens to be on sys.path)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {p for key, p in sysconfig.get_paths().items() if key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages", "lib-dynload"))}
    return {os.path.realpath(p) for p in paths if p and os.path.isdir(p)} | {p for p in paths if p and os.path.isdir(p)}


def _private_root(new_root, scratch):
    """Make this process's root a new one that holds only the system directories (/usr, /etc, ...) and Python's,
    each read-only; a /dev of five harmless devices; an empty /proc and the scratch mount point, both mounted per
    call. Home directories, /tmp, /var, /run, /sys, other users' files and the caller's project are not there at all.
    The same kernel calls as bubblewrap's (a mount namespace, bind mounts, pivot_root), made directly."""
    _libc_call(_LIBC.unshare, _CLONE_NEWNS)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing mounted here reaches the caller
    _mount("toolforge", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    bound = []
    for name in _ROOT_DIRECTORIES:
        path = "/" + name
        if os.path.islink(path):
            os.symlink(os.readlink(path), new_root + path)
        elif os.path.isdir(path):
            os.mkdir(new_root + path)
            _bind_read_only(path, new_root + path)
            bound.append(path)
    for path in sorted(_python_paths()):
        if any(path == b or path.startswith(b + "/") for b in bound):
            continue
        os.makedirs(new_root + path, exist_ok=True)
        _bind_read_only(path, new_root + path)
        bound.append(path)
    for name in _ETC_SECRETS:
        path = new_root + "/etc/" + name
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("toolforge", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=4k,mode=0555")
        elif os.path.isfile(path):
            _bind_read_only("/dev/null", path)
    os.mkdir(new_root + "/dev")
    _mount("toolforge", new_root + "/dev", "tmpfs", _MS_NOSUID, "size=4k,mode=0755")
    for name in _DEVICES:
        open(new_root + "/dev/" + name, "w").close()
        _mount("/dev/" + name, new_root + "/dev/" + name, None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "fd/0"), ("stdout", "fd/1"), ("stderr", "fd/2")):
        os.symlink(target, new_root + "/dev/" + name)
    _mount(None, new_root + "/dev", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID, "size=4k,mode=0755")
    os.mkdir(new_root + "/proc")
    if os.geteuid() != 0:  # in a user namespace a new /proc may be mounted only where one is fully visible
        _mount("/proc", new_root + "/proc", None, _MS_BIND | _MS_REC)
    os.mkdir(new_root + "/tmp", 0o1777)
    os.makedirs(new_root + scratch)
    os.chdir(new_root)
    os.mkdir(".old-root")
    syscall = _LIBC.syscall
    _libc_call(syscall, _syscalls()[1]["pivot_root"], b".", b".old-root")
    os.chdir("/")
    _libc_call(_LIBC.umount2, b"/.old-root", 2)  # MNT_DETACH
    os.rmdir("/.old-root")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    return "a root of its own, read-only: system and Python directories only; no home, /tmp, /var or /sys"


def _status_field(fd, name):
    """A field (e.g. `VmSize`) of the /proc/<pid>/status file open at `fd`, or None."""
    for line in os.pread(fd, 1 << 14, 0).decode(errors="replace").splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    return None


def _drop_bounding_set():
    """Empty the capability bounding set (what an exec could gain), once in the worker: the call processes inherit
    it. The worker keeps the capabilities it holds, which it needs to give each call its namespaces and mounts."""
    for cap in range(64):
        if _LIBC.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP until EINVAL past the last capability
            break


def _drop_capabilities():
    """Give up every capability (as root, or inside the user namespace a non-root worker made for itself), so
    that namespaces, limits and Landlock cannot be undone."""
    _LIBC.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _libc_call(_LIBC.capset, ctypes.byref(Header(0x20080522, 0)), data)
    return "all capabilities dropped"


# /proc files about the machine, not about another process: readable where the call has no /proc of its own
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


def _landlock_rules(scratch, private_root, homes):
    """(path, access) pairs for Landlock, computed once in the worker. In a root of its own, everything visible may
    be read; otherwise reads below /proc (but the process's own entries and machine-wide files) and in home
    directories (but Python's own files there) are refused, and every other top-level tree is allowed by name."""
    rules = [(scratch, "all"), ("/dev/null", "write")]
    if private_root:
        return [("/", "read"), *rules]
    python = _python_paths() | {os.path.dirname(os.path.abspath(__file__))}
    exceptions = sorted(python) + ["/proc/self"] + [f"/proc/{name}" for name in _PROC_READABLE]
    hidden = ["/proc", "/root", "/home", *homes]
    return [("/", "read_dir"), *rules] + [(path, "read") for path in _readable_paths(hidden, exceptions)]


def _landlock(rules):
    """Apply Landlock rules to this process: no write of any kind outside the `all` paths (and /dev/null), no read
    outside the `read` ones; with ABI >= 4 no TCP bind/connect, with ABI >= 6 no signal or abstract socket outside."""
    syscall = _LIBC.syscall
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
    access = {
        "all": fs | read,
        "read": read,
        "read_dir": read_dir,
        "write": write_file | (truncate if abi >= 3 else 0),
    }
    try:
        for path, kind in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a dangling link or a file that vanished: nothing to allow
            try:
                rights = access[kind]
                if not os.path.isdir(f"/proc/self/fd/{fd}") and not os.path.isdir(path):
                    rights &= write_file | read_file | (truncate if abi >= 3 else 0)  # what a file can be granted
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
                if syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        _libc_call(_LIBC.prctl, _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    parts = ["no write outside scratch", "reads only where allowed"]
    if net:
        parts.append("no TCP bind/connect")
    if scoped:
        parts.append("no signal or abstract socket outside")
    return f"Landlock ABI {abi}: " + ", ".join(parts)


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


def _install_audit_hook(scratch):
    """Python-level guard (portable, in addition to the OS-level ones, and the one that gives a readable reason):
    no processes, no signals, no network, no writes outside the scratch directory."""
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

    def hook(event, args):
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


# ------------------------------------------------------------------------------------------------- calls
# Standard-library modules forged functions commonly import, loaded once in the worker so that no call pays for
# them. A fixed list, never names read from forged code: importing a module can run code that changes the state
# every later call process starts from (lib2to3.__main__ configures logging), and which modules are loaded would
# tell one function what another imports.
_PRELOADED = (
    "math", "cmath", "fractions", "decimal", "statistics", "random", "itertools", "functools", "collections", "re",
    "json", "datetime", "string", "heapq", "bisect", "operator", "typing", "dataclasses", "enum", "textwrap",
    "unicodedata", "csv", "copy", "numbers", "ast",
)  # fmt: skip
_WARM_UP = {"op": "call", "name": "warm_up", "code": "def warm_up(x):\n    print(x)\n    return [x, str(x)]\n"}


def _compile_forged(name, code):
    filename = f"<forged {name}>"
    _remember_source(filename, code)
    return compile(code, filename, "exec")


def _remember_source(filename, code):
    """So that tracebacks of code compiled from a string show its lines."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)


def _forged_traceback(exc):
    """ "ZeroDivisionError: division by zero" and the lines of forged code it passed, whatever the exception does
    (its __str__ may raise, or its traceback hold anything)."""
    try:
        text = str(exc)
    except BaseException as inner:
        text = f"<its message could not be made: {type(inner).__name__}>"
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
        where = "".join(f"\n  line {f.lineno} in {f.name}" + (f": {f.line}" if f.line else "") for f in frames[-3:])
    except BaseException:
        where = ""
    return f"{type(exc).__name__}: {text}"[:2000] + where


def _fit(text, limit):
    """`text` cut so that its JSON (escapes included: a character outside the basic plane takes 12 bytes) fits in
    `limit` bytes."""
    text = text[:limit]
    while len(json.dumps(text)) > limit:
        text = text[: max(0, len(text) * limit // len(json.dumps(text)) - 1)]
    return text


def write_all(fd, data):
    """Write all of `data` to `fd` (a pipe may take it in parts); the host uses it too."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Call:
    """The call process's side: lock itself down, read one request, run it, reply, end."""

    def __init__(self, config, request_fd, reply_fd):
        self.config = config
        self.scratch = config["scratch"]
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.vm_size = 0  # the worker's address space when it forked this process (then this process's own)

    def lock_down(self, namespaces, private_root, landlock_rules, seccomp):
        """Everything that must hold before forged code runs; what held, and what could not be applied."""
        enforced, missing = {}, {}
        config = self.config
        if namespaces and not private_root:  # a mount of ours must never propagate to the caller's namespace
            _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        if namespaces:
            try:
                _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
                enforced["processes"] = "a PID namespace of its own, ended with the call; its own /proc"
            except OSError as exc:
                enforced["processes"] = "a PID namespace of its own, ended with the call"
                missing["proc"] = f"no /proc of its own: {exc}"
                with contextlib.suppress(OSError):  # then none: never the worker's view of every process
                    _libc_call(_LIBC.umount2, b"/proc", 2)
        if private_root:
            size = config["max_scratch_mb"]
            _mount("toolforge", self.scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={size}m,mode=0700")
            enforced["scratch"] = f"a {size} MB tmpfs of its own, gone with the call"
        os.makedirs(os.path.join(self.scratch, "tmp"), exist_ok=True)
        os.chdir(self.scratch)
        output = os.memfd_create("toolforge-output") if hasattr(os, "memfd_create") else None
        if output is None:
            import tempfile

            output = os.dup(tempfile.TemporaryFile(dir=self.scratch).fileno())
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        sys.stdout = sys.stderr = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        self.handle(_WARM_UP)  # the pages a call writes to are copied now, not while the caller waits
        for key, step in (
            ("filesystem", lambda: _landlock(landlock_rules)),
            ("capabilities", _drop_capabilities),
        ):
            try:
                enforced[key] = step()
            except Exception as exc:
                missing[key] = f"{type(exc).__name__}: {exc}"
        memory = config["memory_mb"] * _MB
        address_space = self.vm_size + memory + 16 * _MB if self.vm_size else -1  # 16 MB for its warm-up
        if address_space > 0:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
            enforced["memory"] = f"{config['memory_mb']} MB address space beyond the interpreter's own"
        try:
            if isinstance(seccomp, str):
                raise OSError(seccomp)  # why it could not be built
            _install_seccomp(seccomp)
            enforced["seccomp"] = (
                "no new process or exec, no socket(), no change of file metadata (chmod, chown, utime, xattrs), "
                "no memfd or SysV shared memory, no descriptor passing, no lease or flock, no ptrace, mount or "
                "namespace calls"
            )
        except Exception as exc:
            missing["seccomp"] = f"{type(exc).__name__}: {exc}"
        enforced["python"] = _install_audit_hook(self.scratch)
        return enforced, missing

    def serve(self, namespaces, private_root, landlock_rules, seccomp, expected):
        """Lock down, then answer the one request (the first call process answers its lock-down report instead)."""
        try:
            enforced, missing = self.lock_down(namespaces, private_root, landlock_rules, seccomp)
        except BaseException as exc:  # a step that must hold did not: no forged code runs here
            enforced, missing = {}, {"lock-down": f"{type(exc).__name__}: {exc}"}
        if expected is None:  # the probe: report what holds here
            return self.reply(True, {"enforced": enforced, "missing": missing}, None, "", [])
        lost = sorted(set(expected) - set(enforced)) or ("lock-down" in missing)
        header = _read_exact(self.request_fd, FRAME.size)
        if header is None:
            return None  # the worker ended before a call came
        body = _read_exact(self.request_fd, FRAME.unpack(header)[0])
        if lost:  # fail closed: never run forged code with less than the worker reported
            return self.reply(False, None, f"sandbox lock-down failed in this call's process: {missing}", "", [])
        return self.handle(json.loads(body))

    def reply(self, ok, value, error, stdout, notes, value_is_repr=False):
        message = {"ok": ok, "value": value, "value_is_repr": value_is_repr, "error": error, "stdout": stdout}
        message["notes"] = notes
        try:
            body = json.dumps(message).encode(errors="surrogatepass")
        except BaseException as exc:  # a value whose encoding changed between two tries
            message = {"ok": False, "value": None, "value_is_repr": False, "stdout": "", "notes": []}
            message["error"] = f"the return value could not be sent: {type(exc).__name__}"
            body = json.dumps(message).encode()
        write_all(self.reply_fd, FRAME.pack(len(body)) + body)
        return message

    def handle(self, request):
        notes = []
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
        except SystemExit as exc:
            try:
                code = repr(exc.code)[:200]
            except BaseException:
                code = "..."
            error = f"called sys.exit({code}); a forged function must return its result, not exit"
        except BaseException as exc:
            error = _forged_traceback(exc)
        finally:
            sys.stdout, sys.stderr, sys.stdin = saved
        stdout = "".join(out.parts)
        file_output = self._drain_output(cap - len(stdout.encode(errors="surrogatepass")))
        stdout += file_output[0]
        if out.dropped or file_output[1]:
            notes.append(f"output truncated to {cap} bytes")
        value, value_is_repr = self._encode(value, notes) if ok else (None, False)
        if request is _WARM_UP:
            return None
        return self.reply(ok, value, error, stdout, notes, value_is_repr)

    @staticmethod
    def _run(request):
        if request["op"] == "exec":
            return Call._exec_snippet(request["code"])
        name = request["name"]
        module = types.ModuleType(f"forged_{name}")
        module.__dict__["__builtins__"] = __builtins__
        try:
            exec(_compile_forged(name, request["code"]), module.__dict__)
        except BaseException as exc:
            raise type(exc)(f"defining {name!r} failed: {exc}").with_traceback(exc.__traceback__) from None
        fn = module.__dict__.get(name)
        if not callable(fn):
            raise NameError(f"the code does not define a function {name!r}")
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

    @staticmethod
    def _drain_output(room):
        size = os.lseek(1, 0, os.SEEK_END)
        if size == 0:
            return "", False
        os.lseek(1, 0, os.SEEK_SET)
        data = os.read(1, max(room, 0)) if room > 0 else b""
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
        return data.decode(errors="replace"), size > len(data)

    def _encode(self, value, notes):
        limit = self.config["max_value_bytes"]
        try:
            text = json.dumps(value, allow_nan=False)
        except BaseException:  # not JSON, or a container whose methods raise
            try:
                text = repr(value)
            except BaseException as exc:
                text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
            notes.append(f"the return value ({type(value).__name__}) is not JSON; it is given as its repr")
            fitted = _fit(text, limit)
            if len(fitted) < len(text):
                notes.append(f"the repr was truncated to {limit} bytes of JSON")
            return fitted, True
        if len(text) > limit:
            notes.append(
                f"the return value was {len(text)} bytes of JSON, over {limit}; it is given as a truncated repr"
            )
            try:
                return _fit(repr(value), limit), True
            except BaseException:
                return _fit(text, limit), True
        return value, False


# --------------------------------------------------------------------------------------------- fork server
def _clone(flags):
    """fork(2) with `flags` (new namespaces for the child), the way os.fork runs it for Python: the interpreter's
    before/after-fork steps around the raw clone(2), with the GIL held throughout (this process has one thread)."""
    number = _syscalls()[1]["clone"]
    syscall = _GIL_LIBC.syscall
    syscall.restype = ctypes.c_long
    ctypes.pythonapi.PyOS_BeforeFork()
    ctypes.set_errno(0)
    pid = syscall(ctypes.c_long(number), ctypes.c_ulong(flags | signal.SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


class Slot:
    """A memory cgroup that one call process at a time is placed in: its `cgroup.procs` and its OOM counter."""

    def __init__(self, spec):
        self.procs = os.open(spec["procs"], os.O_WRONLY | os.O_CLOEXEC)
        self.events = os.open(spec["events"], os.O_RDONLY | os.O_CLOEXEC)

    def oom_kills(self):
        for line in os.pread(self.events, 4096, 0).decode().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0


class ForkServer:
    """Forks the call processes and hands their pipes to the host; reports how they ended. Never sees a call."""

    def __init__(self, config, channel):
        self.config = config
        self.channel = channel  # a SOCK_SEQPACKET socket to the host: one message a datagram, pipes passed along
        self.slots = [Slot(spec) for spec in config.get("memory_slots", ())]
        self.free_slots = list(range(len(self.slots)))
        self.slot_of = {}  # pid -> slot index
        self.ooms = {}  # pid -> its slot's OOM-kill count when it started
        self.outstanding = set()  # call processes handed to the host and not yet given back
        try:  # kept open: after pivot_root this process has no /proc of its own
            self.status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.status_fd = None
        self.ended = collections.deque()  # call processes given back after their reply, to reap
        self.namespaces = True
        self.private_root = False
        self.landlock_rules = []
        self.seccomp = None
        self.expected = None

    def send(self, message, fds=()):
        self.channel.sendmsg(
            [json.dumps(message).encode()],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else [],
        )

    def receive(self):
        data = self.channel.recv(1 << 16)
        return json.loads(data) if data else None

    def prefork(self):
        """Keep STANDBY + 1 call processes with the host (one may be serving a call), each locked down and waiting
        for its request; then collect the ones that ended since."""
        while len(self.outstanding) < STANDBY + 1:
            pid, request_end, reply_end = self.fork_call()
            try:
                self.send({"op": "standby", "pid": pid}, (request_end, reply_end))
            finally:
                os.close(request_end)  # the host holds them now: no later call process inherits them
                os.close(reply_end)
            self.outstanding.add(pid)
        self.reap()

    def fork_call(self, expected=True):
        request_in, request_end = os.pipe()
        reply_end, reply_out = os.pipe()
        flags = _CLONE_NEWPID | _CLONE_NEWNS | _CLONE_NEWIPC if self.namespaces else 0
        if "random" in sys.modules:  # each call its own random numbers, not one state copied to all
            sys.modules["random"].seed()
        vm_size = int(_status_field(self.status_fd, "VmSize") or 0) * 1024 if self.status_fd is not None else 0
        gc.freeze()  # the child's collector then leaves this process's objects (and their pages) alone
        pid = _clone(flags)
        if pid == 0:  # the call's process: it keeps only its own two pipes
            try:
                _libc_call(_LIBC.prctl, _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                low, high = sorted((request_in, reply_out))
                os.closerange(3, low)
                os.closerange(low + 1, high)
                os.closerange(high + 1, 1 << 16)
                call = Call(self.config, request_in, reply_out)
                call.vm_size = vm_size
                call.serve(
                    self.namespaces,
                    self.private_root,
                    self.landlock_rules,
                    self.seccomp,
                    self.expected if expected else None,
                )
            finally:
                os._exit(0)
        os.close(request_in)
        os.close(reply_out)
        if self.slots:  # into a memory cgroup of its own before its request comes
            if not self.free_slots:
                self.reap(block=True)
            try:
                slot = self.free_slots.pop()
                self.slot_of[pid] = slot
                os.write(self.slots[slot].procs, str(pid).encode())
                self.ooms[pid] = self.slots[slot].oom_kills()
            except (IndexError, OSError):
                for fd in (request_end, reply_end):
                    os.close(fd)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self._free(pid)
                raise
        return pid, request_end, reply_end

    def give_back(self, pid):
        """The host is done with this call process (it replied, or was never used): end it, reap it later."""
        if pid in self.outstanding:
            self.outstanding.discard(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # its PID namespace, and all in it, ends with it
            self.ended.append(pid)

    def report_end(self, pid):
        """How a call process the host got no reply from ended (the host killed it at its timeout)."""
        if pid not in self.outstanding:
            return {"op": "ended", "pid": pid, "ended": "unknown", "code": 0, "oom": False}
        self.outstanding.discard(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        slot = self.slot_of.get(pid)
        oom = slot is not None and self.slots[slot].oom_kills() > self.ooms.get(pid, 0)
        self._free(pid)
        if os.WIFSIGNALED(status):
            return {"op": "ended", "pid": pid, "ended": "signal", "code": os.WTERMSIG(status), "oom": oom}
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        return {"op": "ended", "pid": pid, "ended": "exit", "code": code, "oom": oom}

    def probe(self):
        """Start one call process that reports what its lock-down achieved here, instead of serving a call."""
        pid, request_end, reply_end = self.fork_call(expected=False)
        os.close(request_end)
        report = None
        if select.select([reply_end], [], [], 30)[0]:
            header = _read_exact(reply_end, FRAME.size)
            body = _read_exact(reply_end, FRAME.unpack(header)[0]) if header else None
            report = json.loads(body)["value"] if body else None
        os.close(reply_end)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self._free(pid)
        return report

    def _free(self, pid):
        self.ooms.pop(pid, None)
        slot = self.slot_of.pop(pid, None)
        if slot is not None:
            self.free_slots.append(slot)

    def reap(self, block=False):
        """Collect the call processes that ended since (each was killed once it replied)."""
        while self.ended:
            pid = self.ended[0]
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                done = pid
            if not done:
                return
            self.ended.popleft()
            self._free(pid)
            block = False


def _lock_down_worker(config):
    """The worker's own lock-down: what every call process inherits."""
    enforced, missing = {}, {}
    private_root = False
    steps = [("network", _isolate_network), ("root", lambda: _private_root(config["root"], config["scratch"]))]
    for key, step in steps:
        try:
            enforced[key] = step()
            private_root |= key == "root"
        except Exception as exc:
            missing[key] = f"{type(exc).__name__}: {exc}"
    _drop_bounding_set()
    try:  # not dumpable: no process of the same user opens our pipes or memory through /proc
        _libc_call(_LIBC.prctl, _PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError as exc:
        missing["dumpable"] = f"PR_SET_DUMPABLE: {exc}"
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    file_limit = config["max_file_mb"] * _MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing us
    nofile = min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    enforced["files"] = f"files up to {config['max_file_mb']} MB, {nofile} open"
    return enforced, missing, private_root


def main():
    config = json.loads(sys.argv[1])
    channel = socket.socket(fileno=config["channel_fd"])
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    server = ForkServer(config, channel)  # opens the memory cgroups while they are still visible
    enforced, missing, private_root = _lock_down_worker(config)
    server.private_root = private_root
    server.landlock_rules = _landlock_rules(config["scratch"], private_root, config.get("homes", ()))
    try:
        denied = (
            _NO_SOCKETS
            + _NO_PASSING_DESCRIPTORS
            + _NO_PROCESSES
            + _NO_METADATA
            + _NO_HIDDEN_MEMORY
            + _NO_BLOCKING_OTHERS
            + _NO_REACHING_OUT
        )
        server.seccomp = _seccomp_program(denied, processes=True)
    except Exception as exc:
        server.seccomp = f"{type(exc).__name__}: {exc}"
    for name in _PRELOADED:
        with contextlib.suppress(ImportError):
            __import__(name)
    Call(config, -1, -1).handle(_WARM_UP)  # once here: each call process then copies fewer pages to warm up
    report = None
    try:
        report = server.probe()
    except OSError as exc:
        missing["namespaces"] = f"{exc}; each call runs in a plain child process"
    if report is None:
        server.namespaces = False
        report = server.probe()
    if report is None:
        server.send({"op": "ready", "ready": False, "missing": missing})
        return
    if "lock-down" in report["missing"]:  # fail closed: a sandbox that cannot lock a call process down never starts
        server.send({"op": "ready", "ready": False, "missing": report["missing"]})
        return
    enforced.update(report["enforced"])
    missing.update(report["missing"])
    if server.slots:
        held = "everything a call holds (its memory, its tmpfs, page cache)"
        enforced["memory cgroup"] = f"{held} up to {config['cgroup_mb']} MB"
    server.expected = sorted(report["enforced"])
    server.send({"op": "ready", "ready": True, "enforced": enforced, "missing": missing})
    server.prefork()
    while (message := server.receive()) is not None:
        op = message.get("op")
        if op == "done":
            server.give_back(message["pid"])
        elif op == "ended":
            server.send(server.report_end(message["pid"]))
        server.prefork()


if __name__ == "__main__":
    main()
