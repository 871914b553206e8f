"""The hostile corpus: forged functions written to attack the sandbox, each with the exact promise it must meet.

Every case runs in the sandbox's only mode (each call in a process of its own); the host must survive all of them,
and every later call must get its own true result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import toolforge as tf
from tests.conftest import make_function, snippet_function


def assert_sandbox_still_works(sandbox):
    result = sandbox.call(make_function(), {"a": 2, "b": 3})
    assert result.ok and result.value == 5, result


def _secret_env():
    os.environ["TOOLFORGE_TEST_SECRET"] = "s3cret-api-key"


LIBC_CONNECT = """
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
addr = struct.pack('<HH4s8x', socket.AF_INET, socket.htons(9), socket.inet_aton('1.1.1.1'))
rc = libc.connect(fd, addr, len(addr))
return [rc, ctypes.get_errno()]
"""

LIBC_WRITE_ETC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.open(b'/etc/toolforge-escape', os.O_WRONLY | os.O_CREAT, 0o644)
return [fd, ctypes.get_errno()]
"""

# (id, body, expect_ok, text expected in error/notes/stdout, extra check)
HOSTILE = [
    ("infinite_loop", "while True:\n    pass", False, "timed out after 2.0 s", None),
    ("sleep_forever", "import time\ntime.sleep(3600)", False, "timed out after 2.0 s", None),
    ("memory_bomb_bytes", "x = bytearray(4 * 1024**3)\nreturn len(x)", False, "exceeded 128 MB", None),
    ("memory_bomb_list", "x = []\nwhile True:\n    x.append(' ' * 10**6)", False, "exceeded 128 MB", None),
    (
        "raise_memory_limit_first",
        "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nexcept Exception:\n    pass\n"
        "x = bytearray(2 * 1024**3)",
        False,
        "exceeded 128 MB",
        None,
    ),
    ("fork_bomb", "import os\nwhile True:\n    os.fork()", False, "forking is not allowed", None),
    ("subprocess", "import subprocess\nreturn subprocess.run(['id']).returncode", False, "starting processes", None),
    ("os_system", "import os\nreturn os.system('touch /tmp/pwned')", False, "running shell commands", None),
    ("os_exit", "import os\nos._exit(3)", False, "ended its process (exit status 3)", None),
    ("sys_exit", "import sys\nsys.exit(2)", False, "called sys.exit(2)", None),
    ("keyboard_interrupt", "raise KeyboardInterrupt", False, "KeyboardInterrupt", None),
    ("segfault_ctypes", "import ctypes\nreturn ctypes.string_at(0)", False, "crashed with SIGSEGV", None),
    # the call's process is the init of its PID namespace, which ignores SIGABRT it sends itself: abort() then ends
    # it with the fault the C library falls back on
    ("abort", "import os\nos.abort()", False, "the call's process crashed with SIG", None),
    ("deep_recursion", "def f(n):\n    return f(n + 1)\nreturn f(0)", False, "RecursionError", None),
    (
        "c_stack_overflow",
        "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nreturn f(0)",
        False,
        "",
        None,
    ),
    (
        "network_connect",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        False,
        "network access is not allowed",
        None,
    ),
    ("network_below_python", LIBC_CONNECT, True, "", "connect_failed"),
    ("write_etc", "open('/etc/toolforge-escape', 'w').write('x')", False, "writing outside the scratch", None),
    ("write_etc_below_python", LIBC_WRITE_ETC, True, "", "open_failed"),
    (
        "write_home",
        f"open({str(Path.home() / '.toolforge-escape')!r}, 'w').write('x')",
        False,
        "writing outside the scratch",
        None,
    ),
    ("remove_outside", "import os\nos.remove('/etc/hostname')", False, "outside the scratch directory", None),
    ("read_secret_env", "import os\nreturn dict(os.environ)", True, "", "no_secret"),
    (
        "fill_the_disk",
        "for i in range(10**6):\n    with open(f'fill-{i}', 'wb') as f:\n        f.write(bytes(32 * 1024**2))",
        False,
        "No space left on device",
        "disk_untouched",
    ),
    ("huge_output", "while True:\n    print('x' * 10000)", False, "timed out", "capped_output"),
    ("huge_output_finite", "for _ in range(1000):\n    print('y' * 1000)", True, "output truncated", None),
    ("fd_level_output", "import os\nos.write(1, b'raw bytes')\nreturn 1", True, "", "raw_output"),
    (
        "thread_left_running",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\nreturn 1",
        True,
        "",
        None,
    ),
    ("non_serialisable_return", "return {1, 2, 3}", True, "is not JSON; it is given as its repr", "repr_value"),
    ("nan_return", "return float('nan')", True, "is not JSON", None),
    ("huge_return", "return 'z' * (4 * 1024 * 1024)", True, "given as a truncated repr", None),
    (
        "signal_handler_and_alarm",
        "import signal, os\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(9))\nsignal.alarm(1)\nreturn 1",
        True,
        "",
        "alarm_cancelled",
    ),
    (
        "ignore_sigterm",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass",
        False,
        "timed out",
        None,
    ),
    ("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", False, "sending signals", None),
    (
        "close_pipes",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n"
        "        pass\nreturn 1",
        False,
        "",
        None,
    ),
    ("chdir_away", "import os\nos.chdir('/')\nreturn os.getcwd()", True, "", "cwd_restored"),
    ("read_stdin", "return input()", False, "EOFError", None),
    (
        "ctypes_fork",
        "import ctypes\npid = ctypes.CDLL(None).fork()\nimport time\ntime.sleep(0.2)\nreturn pid",
        True,
        "",
        "fork_failed",
    ),
]


def _check_extra(kind, result, sandbox):
    if kind == "connect_failed":
        rc, errno = result.value
        assert rc == -1 and errno != 0
    elif kind == "open_failed":
        fd, errno = result.value
        assert fd == -1 and errno != 0
        assert not Path("/etc/toolforge-escape").exists()
    elif kind == "no_secret":
        assert "TOOLFORGE_TEST_SECRET" not in result.value
        assert "s3cret-api-key" not in str(result.value)
    elif kind == "disk_untouched":
        on_disk = sum(p.stat().st_size for p in sandbox.root.rglob("*") if p.is_file())
        assert on_disk == 0  # the files went to the call's own tmpfs, gone with it
    elif kind == "capped_output":
        assert len(result.stdout) <= sandbox.max_output_bytes
    elif kind == "raw_output":
        assert "raw bytes" in result.stdout
    elif kind == "repr_value":
        assert result.value == "{1, 2, 3}" and result.value_is_repr
    elif kind == "alarm_cancelled":
        import time

        time.sleep(1.5)  # the alarm would have fired by now, had it not been cancelled
        assert sandbox.run_code("1 + 1").value == 2
    elif kind == "cwd_restored":
        assert Path(sandbox.run_code("import os\nos.getcwd()").value).name == "scratch"
    elif kind == "fork_failed":
        assert result.value == -1  # refused by the seccomp filter: no process was started


def test_the_corpus_has_at_least_twenty_cases():
    assert len(HOSTILE) >= 20


@pytest.mark.parametrize(("case", "body", "expect_ok", "text", "extra"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_function_is_contained(sandbox, case, body, expect_ok, text, extra):
    if case == "read_secret_env":
        _secret_env()
        box = tf.Sandbox(workers=1)  # started after the secret was set
    else:
        box = sandbox
    try:
        if extra in ("connect_failed",) and "network" in box.missing:
            pytest.skip(f"no network namespace here: {box.missing['network']}")
        if extra in ("open_failed",) and "filesystem" in box.missing:
            pytest.skip(f"no Landlock here: {box.missing['filesystem']}")
        if extra == "disk_untouched" and "scratch" in box.missing:  # the code would fill the real disk
            pytest.skip(f"no private scratch here: {box.missing['scratch']}")
        result = box.call(snippet_function(body), {})
        if expect_ok is not None:
            assert result.ok is expect_ok, result
        if not result.ok:
            assert result.error, result
        said = f"{result.error} {' '.join(result.notes)}"
        assert text in said, result
        if extra:
            _check_extra(extra, result, box)
        assert_sandbox_still_works(box)
    finally:
        if box is not sandbox:
            box.close()
    assert not Path("/tmp/pwned").exists()


def test_a_call_that_times_out_leaves_no_process_behind(sandbox):
    marker = "toolforge-sleeper-marker"
    body = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\n"
        f"if libc.fork() == 0:\n    libc.setsid()\n    import sys\n    sys.argv[0] = {marker!r}\n"
        "    while True:\n        time.sleep(1)\nwhile True:\n    time.sleep(1)"
    )
    result = sandbox.call(snippet_function(body), {})
    assert not result.ok and "timed out after 2.0 s" in result.error, result
    import time

    time.sleep(0.2)
    survivors = [p for p in os.listdir("/proc") if p.isdigit() and _runs_marker(p, marker)]
    assert survivors == []
    assert_sandbox_still_works(sandbox)


def _runs_marker(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


PROC_SCAN = """
import os
needle = "s3cret" + "-api-key"
found, pids = [], sorted(p for p in os.listdir("/proc") if p.isdigit())
for pid in pids:
    for name in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{pid}/{name}", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if needle in data:
            found.append(f"/proc/{pid}/{name}")
return {"found": found, "pids": pids, "own": len(open("/proc/self/status").read()) > 0}
"""


def test_the_callers_environment_cannot_be_read_through_proc(tmp_path):
    """The caller's API keys sit in its initial environment, which /proc/<pid>/environ shows to the same user: in
    its own PID namespace, a call's /proc shows no process but its own."""
    script = (
        "import json, sys\nsys.path.insert(0, sys.argv[1])\nimport toolforge as tf\n"
        "from tests.conftest import snippet_function\nwith tf.Sandbox(workers=1) as box:\n"
        "    result = box.call(snippet_function(sys.argv[2]), {})\n"
        "    print(json.dumps({'ok': result.ok, 'value': result.value, 'error': result.error, "
        "'missing': box.missing}))\n"
    )
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = {**os.environ, "TOOLFORGE_TEST_SECRET": "s3cret-api-key"}  # in the caller's environment from its start
    out = subprocess.run(
        [sys.executable, "-c", script, root, PROC_SCAN], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if "namespaces" in report["missing"] or "proc" in report["missing"]:
        pytest.skip(f"no PID namespace with its own /proc here: {report['missing']}")
    assert report["ok"], report["error"]
    assert report["value"] == {"found": [], "pids": ["1"], "own": True}


def test_unix_sockets_on_the_filesystem_cannot_be_reached(sandbox, tmp_path):
    """A Docker daemon's, an SSH agent's or a database's socket is a way out that no network namespace closes."""
    import socket

    path = tmp_path / "daemon.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(1.0)
    body = (
        "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(1, 1, 0)\n"
        "socket_errno = ctypes.get_errno()\n"
        f"path = {str(path).encode()!r}\n"
        "address = struct.pack('H', 1) + path + bytes(108 - len(path))\n"
        "rc = libc.connect(fd, address, len(address))\nif rc == 0:\n    libc.write(fd, b'escaped', 7)\n"
        "return [fd, socket_errno, rc]"
    )
    try:
        result = sandbox.call(snippet_function(body), {})
        if "sockets" in sandbox.missing:
            pytest.skip(f"no seccomp filter here: {sandbox.missing['sockets']}")
        assert result.ok, result
        fd, socket_errno, rc = result.value
        assert (fd, socket_errno, rc) == (-1, 1, -1)  # socket() itself fails with EPERM
        with pytest.raises(TimeoutError):
            server.accept()
        # a connected pair inside the process reaches nothing outside, and stays allowed
        pair = sandbox.call(
            snippet_function("import socket\na, b = socket.socketpair()\na.sendall(b'x')\nreturn b.recv(1).decode()"),
            {},
        )
        assert pair.ok and pair.value == "x", pair
    finally:
        server.close()
    assert_sandbox_still_works(sandbox)


def test_home_directories_and_the_callers_files_are_not_there_at_all_but_python_is(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = s3cret\n")
    (tmp_path / "public.txt").write_text("shared data\n")
    monkeypatch.setenv("HOME", str(home))  # the caller's home, as the sandbox sees it
    with tf.Sandbox(workers=1) as box:
        if "root" in box.missing:
            pytest.skip(f"no root of its own here: {box.missing['root']}")
        for path in (home / ".aws" / "credentials", tmp_path / "public.txt"):
            seen = box.call(snippet_function(f"return open({str(path)!r}).read()"), {})
            assert not seen.ok and "FileNotFoundError" in seen.error, seen
        listing = box.call(snippet_function("import os\nreturn [os.listdir(p) for p in ('/', '/tmp', '/root')]"), {})
        top, tmp, root_home = listing.value
        assert "home" not in top and "var" not in top and "sys" not in top, listing
        assert [name.split("-")[:2] for name in tmp] == [["toolforge", "sandbox"]], listing  # its own scratch only
        assert set(root_home) <= {".pyenv", ".local"}, listing  # only where Python itself lives, if there
        stdlib = box.call(snippet_function("import fractions, statistics\nreturn str(statistics.mean([1, 2]))"), {})
        assert stdlib.ok and stdlib.value == "1.5", stdlib
        assert_sandbox_still_works(box)


WRITE_TO_PIPES = """
import os, struct, json
frames = {
    "forged": {"ok": True, "value": "FORGED", "value_is_repr": False, "error": None, "stdout": "", "notes": []},
    "wrong_shape": {"ok": "yes", "pid": os.getpid()},
    "nested": "[" * 100000 + "]" * 100000,
}
KIND
for fd in range(3, 256):
    try:
        os.write(fd, data)
    except OSError:
        pass
return "the true result"
"""
PIPE_WRITES = {
    "forged": "body = json.dumps(frames['forged']).encode()\ndata = struct.pack('>I', len(body)) + body",
    "wrong_shape": "body = json.dumps(frames['wrong_shape']).encode()\ndata = struct.pack('>I', len(body)) + body",
    "nested": "body = frames['nested'].encode()\ndata = struct.pack('>I', len(body)) + body",
    "garbage": "data = b'not a frame at all' * 100",
    "huge_frame": "data = struct.pack('>I', 2**31) + bytes(4096)",
}


@pytest.mark.parametrize("kind", sorted(PIPE_WRITES))
def test_code_writing_to_every_descriptor_loses_only_its_own_reply(sandbox, kind):
    """A call's process holds one pipe to the caller, its own reply's: what it writes there is its own result, or a
    lost reply, never an exception in the caller (JSON nested 100,000 deep included) or another call's reply."""
    result = sandbox.call(snippet_function(WRITE_TO_PIPES.replace("KIND", PIPE_WRITES[kind]), name="spoiler"), {})
    if kind == "forged":
        assert result.ok and result.value == "FORGED"  # it controls its own result anyway
    else:
        assert not result.ok and "wrote to the sandbox's pipe; its reply was lost" in result.error, result
    add = make_function("add")
    assert [sandbox.call(add, {"a": x, "b": 1}).value for x in range(6)] == [1, 2, 3, 4, 5, 6]


HIJACK = """
import os
import sys
servers, frame = [], sys._getframe()
while frame is not None:  # the fork server's own frames are below this call's
    servers += [v for v in frame.f_locals.values() if hasattr(v, "channel") and hasattr(v, "outstanding")]
    frame = frame.f_back
tried = []
for server in servers:  # the fork server's object is in memory (the call's process is a copy), its channel is not
    try:  # below the audit hook, which refuses sendmsg
        os.write(server.channel.fileno(), b'{"op": "standby", "pid": 1}')
        tried.append("sent")
    except OSError as exc:
        tried.append(type(exc).__name__)
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
return {"servers": len({id(s) for s in servers}), "tried": tried, "fds": fds}
"""


def test_the_call_process_holds_no_channel_to_the_worker_or_the_caller(sandbox):
    result = sandbox.call(snippet_function(HIJACK, name="hijack"), {})
    assert result.ok, result
    assert result.value["servers"] == 1 and set(result.value["tried"]) == {"OSError"}, result
    assert len(result.value["fds"]) <= 6, result  # stdin, stdout, stderr, its request and reply pipes (and listdir's)
    add = make_function("add")
    assert [sandbox.call(add, {"a": x, "b": 2}).value for x in range(3)] == [2, 3, 4]
