"""Sandbox: calls in worker processes, limits, and a hostile-function corpus the host must survive."""

from __future__ import annotations

import gc
import os
import pickle
import threading

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


def test_every_call_starts_afresh_module_state_does_not_persist(sandbox):
    code = "CALLS = []\n\ndef counter():\n    CALLS.append(1)\n    return len(CALLS)\n"
    f = tf.ForgedFunction("counter", "Count calls.", {"type": "object", "properties": {}}, code)
    with tf.Sandbox(workers=1) as box:
        assert [box.call(f, {}).value for _ in range(3)] == [1, 1, 1]


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


def test_the_removed_worker_mode_is_refused_with_the_fix():
    with pytest.raises(
        tf.SandboxError, match=r"Sandbox\(isolation='worker'\): every call runs in a process of its own"
    ):
        tf.Sandbox(isolation="worker")
    box = tf.Sandbox(isolation="call")
    try:
        assert pickle.loads(pickle.dumps(box)).isolation == "call"
    finally:
        box.close()
