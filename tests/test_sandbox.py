"""Sandbox: calls in worker processes, limits, and a hostile-function corpus the host must survive."""

from __future__ import annotations

import gc
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import toolforge as tf
from tests.conftest import make_function, snippet_function


def assert_sandbox_still_works(sandbox):
    result = sandbox.call(make_function(), {"a": 2, "b": 3})
    assert result.ok and result.value == 5, result


def test_call_returns_value_and_output(sandbox):
    f = make_function(code="def add(a, b):\n    print('adding', a, b)\n    return a + b\n")
    result = sandbox.call(f, {"a": 2, "b": 40})
    assert (result.ok, result.value, result.error, result.stdout) == (True, 42, None, "adding 2 40\n")
    assert result.duration_s > 0 and not result.value_is_repr


def test_code_never_runs_in_the_callers_process(sandbox):
    result = sandbox.call(snippet_function("import os\nreturn os.getpid()"), {})
    assert result.ok and result.value != os.getpid()


def test_exception_becomes_an_error_with_the_line(sandbox):
    f = snippet_function("x = 1\nreturn x / 0")
    result = sandbox.call(f, {})
    assert not result.ok
    assert result.error.startswith("ZeroDivisionError: division by zero")
    assert "line 3 in hostile: return x / 0" in result.error


def test_failure_while_defining_the_function_is_reported(sandbox):
    code = "raise ValueError('broken at import')\n\ndef f():\n    return 1\n"
    f = tf.ForgedFunction("f", "d", {"type": "object", "properties": {}}, code)
    result = sandbox.call(f, {})
    assert not result.ok and "defining 'f' failed: broken at import" in result.error


def test_code_is_compiled_once_per_worker_and_module_state_persists(sandbox):
    code = "CALLS = []\n\ndef counter():\n    CALLS.append(1)\n    return len(CALLS)\n"
    f = tf.ForgedFunction("counter", "Count calls.", {"type": "object", "properties": {}}, code)
    with tf.Sandbox(workers=1) as box:
        assert [box.call(f, {}).value for _ in range(3)] == [1, 2, 3]


def test_run_code_returns_printed_output_and_final_expression(sandbox):
    result = sandbox.run_code("x = 6\nprint('x is', x)\nx * 7")
    assert (result.ok, result.stdout, result.value) == (True, "x is 6\n", 42)


def test_non_json_arguments_are_refused_before_running(sandbox):
    result = sandbox.call(make_function(), {"a": object(), "b": 1})
    assert not result.ok and "arguments are not JSON" in result.error


def test_a_call_that_is_not_one_is_refused_by_name(sandbox):
    with pytest.raises(tf.SandboxError, match="Sandbox.call runs a ForgedFunction, got str 'add'"):
        sandbox.call("add", {"a": 1, "b": 2})
    with pytest.raises(tf.SandboxError, match=r"Sandbox.call\('add', ...\): arguments must be a dict of named"):
        sandbox.call(make_function(), [1, 2])


def test_parallel_calls_from_threads_are_correct(sandbox):
    f = make_function(code="import time\n\ndef add(a, b):\n    time.sleep(0.01)\n    return a + b\n")
    results = {}

    def run(i):
        results[i] = sandbox.call(f, {"a": i, "b": 1}).value

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i + 1 for i in range(16)}


def test_closed_sandbox_says_so():
    box = tf.Sandbox(workers=1)
    box.close()
    with pytest.raises(tf.SandboxError, match="this Sandbox is closed; create a new one"):
        box.run_code("1")


def test_a_sandbox_never_closed_still_kills_its_workers_and_removes_its_directory():
    box = tf.Sandbox(workers=1)
    assert box.run_code("print(1)").ok
    (worker,) = box._all
    pid, root = worker.process.pid, box.root
    del box, worker
    gc.collect()
    assert not root.exists()
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(pid, os.WNOHANG)


def test_a_sandbox_pickles_as_its_settings():
    box = tf.Sandbox(workers=1, timeout_s=3.0, memory_mb=200, max_output_bytes=1000, max_processes=8)
    try:
        copy = pickle.loads(pickle.dumps(box))
        with copy:
            assert (copy.workers, copy.timeout_s, copy.memory_mb, copy.max_output_bytes, copy.max_processes) == (
                1,
                3.0,
                200,
                1000,
                8,
            )
            assert copy.root != box.root
            assert copy.run_code("print(6 * 7)").stdout == "42\n"
    finally:
        box.close()


def test_a_program_with_its_own_sandbox_saves_whole_and_loads(tmp_path):
    import dspy

    with tf.Sandbox(workers=1) as box:
        agent = tf.ToolAgent(
            "question -> answer", toolset=tf.Toolset([make_function()]), tools=[tf.python_tool(box)], sandbox=box
        )
        agent.save(str(tmp_path / "whole"), save_program=True)
    loaded = dspy.load(str(tmp_path / "whole"), allow_pickle=True)
    tools = loaded.current_tools()
    assert loaded.sandbox is loaded.tools[0].func.sandbox  # still one sandbox, shared
    assert tools["add"](a=2, b=3) == 5
    assert tools["python"](code="print(2 + 3)") == "5\n"
    loaded.sandbox.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds > 0"),
        ({"memory_mb": "lots"}, "memory_mb must be an integer >= 16"),
    ],
)
def test_bad_limits_are_refused(kwargs, message):
    with pytest.raises(tf.SandboxError, match=message):
        tf.Sandbox(**kwargs)


def test_default_sandbox_is_shared_and_works():
    assert tf.default_sandbox() is tf.default_sandbox()
    assert tf.default_sandbox().run_code("2 + 2").value == 4


def test_enforced_protections_are_reported(sandbox):
    enforced = sandbox.enforced
    assert {"memory", "python", "files"} <= set(enforced)
    if os.name == "posix" and os.uname().sysname == "Linux" and "network" not in sandbox.missing:
        assert "namespace" in enforced["network"]


# ------------------------------------------------------------------------------------ the hostile corpus
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
    ("os_exit", "import os\nos._exit(3)", False, "ended the worker process (exit status 3)", None),
    ("sys_exit", "import sys\nsys.exit(2)", False, "called sys.exit(2)", None),
    ("keyboard_interrupt", "raise KeyboardInterrupt", False, "KeyboardInterrupt", None),
    ("segfault_ctypes", "import ctypes\nreturn ctypes.string_at(0)", False, "crashed with SIGSEGV", None),
    ("abort", "import os\nos.abort()", False, "crashed with SIGABRT", None),
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
        "thread(s) running; the worker was replaced",
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
        None,
        "",
        None,
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
        assert on_disk == 0  # the files went to the worker's own tmpfs
        assert "its scratch directory held" in " ".join(result.notes) and "the worker was replaced" in str(result.notes)
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
        assert Path(sandbox.run_code("import os\nos.getcwd()").value).name.startswith("worker")


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


def test_worker_killed_by_timeout_takes_its_children_along(sandbox):
    marker = "toolforge-sleeper-marker"
    body = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\n"
        f"if libc.fork() == 0:\n    libc.setsid()\n    import sys\n    sys.argv[0] = {marker!r}\n"
        "    while True:\n        time.sleep(1)\nwhile True:\n    time.sleep(1)"
    )
    result = sandbox.call(snippet_function(body), {})
    assert not result.ok
    if sandbox.enforced.get("processes", "").startswith("pids cgroup"):
        import time

        time.sleep(0.2)
        survivors = [p for p in os.listdir("/proc") if p.isdigit() and _children_of_gone_worker(p, marker)]
        assert survivors == []
    assert_sandbox_still_works(sandbox)


def _children_of_gone_worker(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


PROC_SCAN = """
import os
needle = "s3cret" + "-api-key"
found, parent = [], {}
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{pid}/{name}", "rb").read().decode(errors="replace")
        except OSError as exc:
            if pid == str(os.getppid()):
                parent[name] = type(exc).__name__
            continue
        if needle in data:
            found.append(f"/proc/{pid}/{name}")
return {"found": found, "parent": parent, "own": len(open("/proc/self/status").read()) > 0}
"""


def test_the_callers_environment_cannot_be_read_through_proc(tmp_path):
    """The caller's API keys sit in its initial environment, which /proc/<pid>/environ shows to the same user."""
    script = (
        "import json, sys\nsys.path.insert(0, sys.argv[1])\nimport toolforge as tf\n"
        "from tests.conftest import snippet_function\nwith tf.Sandbox(workers=1) as box:\n"
        "    result = box.call(snippet_function(sys.argv[2]), {})\n"
        "    print(json.dumps({'ok': result.ok, 'value': result.value, 'error': result.error, "
        "'missing': box.missing}))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "TOOLFORGE_TEST_SECRET": "s3cret-api-key"}  # in the caller's environment from its start
    out = subprocess.run(
        [sys.executable, "-c", script, root, PROC_SCAN], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if "filesystem" in report["missing"] and "network" in report["missing"]:
        pytest.skip(f"neither Landlock nor namespaces here: {report['missing']}")
    assert report["ok"], report["error"]
    assert report["value"]["found"] == []
    assert report["value"]["parent"]["environ"] == "PermissionError"
    if "filesystem" not in report["missing"]:  # Landlock: no other process's /proc entry, yet its own ones
        assert report["value"]["parent"]["cmdline"] == "PermissionError"
        assert report["value"]["own"] is True


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


def test_the_callers_home_directory_is_unreadable_but_python_is_not(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = s3cret\n")
    (tmp_path / "public.txt").write_text("shared data\n")
    monkeypatch.setenv("HOME", str(home))  # the caller's home, as the sandbox sees it
    with tf.Sandbox(workers=1) as box:
        if "filesystem" in box.missing:
            pytest.skip(f"no Landlock here: {box.missing['filesystem']}")
        secret = box.call(snippet_function(f"return open({str(home / '.aws' / 'credentials')!r}).read()"), {})
        assert not secret.ok and "PermissionError" in secret.error, secret
        beside = box.call(snippet_function(f"return open({str(tmp_path / 'public.txt')!r}).read()"), {})
        assert beside.ok and beside.value == "shared data\n", beside
        stdlib = box.call(snippet_function("import fractions, statistics\nreturn str(statistics.mean([1, 2]))"), {})
        assert stdlib.ok and stdlib.value == "1.5", stdlib
        assert_sandbox_still_works(box)


WRITE_TO_PIPES = """
import os, struct, json, sys
frame, nonce = sys._getframe(), None
while frame is not None:  # the worker's own request, with the nonce its reply must echo
    request = frame.f_locals.get("request")
    if isinstance(request, dict) and "nonce" in request:
        nonce = request["nonce"]
    frame = frame.f_back
frames = {
    "forged": {"ok": True, "value": "FORGED", "value_is_repr": False, "error": None, "stdout": "", "notes": [],
               "recycle": False, "pid": os.getpid(), "nonce": nonce},
    "wrong_shape": {"ok": "yes", "nonce": nonce, "pid": os.getpid()},
}
KIND
for fd in range(3, 16):
    try:
        os.write(fd, data)
    except OSError:
        pass
return "the true result"
"""


@pytest.mark.parametrize(
    ("kind", "make", "first"),
    [
        (
            "forged",
            "body = json.dumps(frames['forged']).encode()\ndata = struct.pack('>I', len(body)) + body",
            "FORGED",
        ),
        (
            "wrong_shape",
            "body = json.dumps(frames['wrong_shape']).encode()\ndata = struct.pack('>I', len(body)) + body",
            None,
        ),
        ("garbage", "data = b'not a frame at all' * 100", None),
        ("huge_frame", "data = struct.pack('>I', 2**31) + bytes(4096)", None),
    ],
    ids=["forged_reply", "wrong_shape", "garbage", "huge_frame"],
)
def test_code_writing_to_the_sandbox_pipe_cannot_spoil_other_calls(sandbox, kind, make, first):
    """Forged code shares the worker's process, so it can write to its pipe; later calls must not notice."""
    spoiler = snippet_function(WRITE_TO_PIPES.replace("KIND", make), name="spoiler")
    result = sandbox.call(spoiler, {})
    if first is not None:
        assert result.value == first  # a forged reply can only answer its own call, whose result it controls anyway
    else:
        assert not result.ok and "wrote to the sandbox's pipe" in result.error, result
    add = make_function("add")
    for x in range(6):  # every later call, on either worker, gets its own true reply
        assert sandbox.call(add, {"a": x, "b": 1}).value == x + 1
    assert_sandbox_still_works(sandbox)


# ------------------------------------------------------------------------- isolation="call": a process per call
@pytest.fixture(scope="module")
def call_sandbox():
    with tf.Sandbox(workers=1, timeout_s=2.0, memory_mb=128, isolation="call") as box:
        yield box


IN_ITS_OWN_PROCESS = {  # with isolation="call", each call runs in a process of its own, which ends with it
    "thread_left_running": (True, ""),
    "chdir_away": (True, ""),
    "signal_handler_and_alarm": (True, ""),
    "os_exit": (False, "ended the worker process (exit status 3)"),
    "infinite_loop": (False, "timed out after 2.0 s"),
    "memory_bomb_list": (False, "exceeded 128 MB memory limit"),
    "segfault_ctypes": (False, "crashed with SIGSEGV"),
    "kill_parent": (False, "sending signals"),
    "ctypes_fork": (None, ""),
}


@pytest.mark.parametrize("case", sorted(IN_ITS_OWN_PROCESS))
def test_hostile_function_is_contained_in_a_process_of_its_own(call_sandbox, case):
    body = next(c[1] for c in HOSTILE if c[0] == case)
    expect_ok, text = IN_ITS_OWN_PROCESS[case]
    result = call_sandbox.call(snippet_function(body), {})
    assert expect_ok is None or result.ok is expect_ok, result
    assert text in f"{result.error} {' '.join(result.notes)}", result
    if case == "chdir_away":
        _check_extra("cwd_restored", result, call_sandbox)
    if case == "signal_handler_and_alarm":
        _check_extra("alarm_cancelled", result, call_sandbox)
    assert_sandbox_still_works(call_sandbox)


def test_with_a_process_per_call_the_code_is_compiled_once_and_every_call_starts_afresh(call_sandbox):
    code = "CALLS = []\n\ndef counter():\n    CALLS.append(1)\n    return len(CALLS)\n"
    f = tf.ForgedFunction("counter", "Count calls.", {"type": "object", "properties": {}}, code)
    assert [call_sandbox.call(f, {}).value for _ in range(3)] == [1, 1, 1]  # no state reaches the next call
    assert all(f.code_hash in worker.known for worker in call_sandbox._all)  # the code was sent once


@pytest.mark.parametrize("kind", ["forged", "wrong_shape", "garbage", "huge_frame"])
def test_with_a_process_per_call_writing_to_the_pipes_loses_only_the_own_reply(call_sandbox, kind):
    make = {
        "forged": "body = json.dumps(frames['forged']).encode()\ndata = struct.pack('>I', len(body)) + body",
        "wrong_shape": "body = json.dumps(frames['wrong_shape']).encode()\ndata = struct.pack('>I', len(body)) + body",
        "garbage": "data = b'not a frame at all' * 100",
        "huge_frame": "data = struct.pack('>I', 2**31) + bytes(4096)",
    }[kind]
    result = call_sandbox.call(snippet_function(WRITE_TO_PIPES.replace("KIND", make), name="spoiler"), {})
    assert not result.ok and "wrote to the sandbox's pipe" in result.error, result  # even a forged reply is lost
    add = make_function("add")
    assert [call_sandbox.call(add, {"a": x, "b": 1}).value for x in range(4)] == [1, 2, 3, 4]


HIJACK = """
import os, sys
frame, worker, request = sys._getframe(), None, None
while frame is not None:  # the worker object, and the request this call answers (with its nonce)
    for value in frame.f_locals.values():
        if worker is None and hasattr(value, "proto_out"):
            worker = value
        if request is None and isinstance(value, dict) and "nonce" in value:
            request = value
    frame = frame.f_back

def fake(req):  # a reply the caller would take for the worker's own
    return {"ok": True, "value": 666, "error": None, "stdout": "", "notes": [], "value_is_repr": False,
            "recycle": False, "pid": os.getpid(), "duration_s": 0.0, "nonce": req.get("nonce")}

worker.write(fake(request))  # answer this call, then every later one on this worker, and never return
while (req := worker.read()) is not None:
    worker.write(fake(req))
"""


def test_code_that_attacks_the_worker_takes_over_its_later_calls_unless_each_call_has_a_process():
    """Code written to attack the worker finds its objects in memory. Where the worker runs calls itself
    (isolation="worker", the default), it can answer every later call on that worker, as the docstring says;
    with isolation="call", the call's process has no pipe to the caller, and the worker's cannot be opened
    through /proc either."""
    attack = snippet_function(HIJACK, name="hijack")
    add = make_function("add")
    with tf.Sandbox(workers=1, isolation="worker") as box:
        taken = box.call(attack, {})
        assert taken.ok and taken.value == 666  # the documented limit of isolation="worker"
        assert box.call(add, {"a": 1, "b": 1}).value == 666
    with tf.Sandbox(workers=1, isolation="call") as box:
        hijack = box.call(attack, {})
        assert not hijack.ok and "OSError" in hijack.error, hijack  # the pipes are not open in the call's process
        assert [box.call(add, {"a": x, "b": 1}).value for x in range(4)] == [1, 2, 3, 4]
        through_proc = box.call(
            snippet_function(
                "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                "return [libc.open(f'/proc/{os.getppid()}/fd/{n}'.encode(), os.O_WRONLY) for n in range(3, 8)]",
                name="through_proc",
            ),
            {},
        )
        if "isolation" in box.enforced:
            assert through_proc.value == [-1] * 5, through_proc  # not even below Python
        assert [box.call(add, {"a": x, "b": 2}).value for x in range(2)] == [2, 3]


def test_the_environment_chooses_the_default_sandboxs_isolation():
    script = "import toolforge as tf\nprint(tf.default_sandbox().isolation)"
    run = lambda value: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script],
        env={**os.environ, "TOOLFORGE_SANDBOX_ISOLATION": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run("call").stdout.strip() == "call"
    bad = run("strict")
    assert (
        bad.returncode != 0
        and "TOOLFORGE_SANDBOX_ISOLATION='strict': give 'worker' (the default) or 'call'" in bad.stderr
    )


def test_isolation_is_a_checked_setting_that_pickles_with_the_sandbox():
    with pytest.raises(tf.SandboxError, match="isolation must be 'call' or 'worker'"):
        tf.Sandbox(isolation="thread")
    box = tf.Sandbox(isolation="call")
    try:
        assert pickle.loads(pickle.dumps(box)).isolation == "call"
    finally:
        box.close()
