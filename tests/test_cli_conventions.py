"""Command-line conventions and the options a user tunes: `--version`, `--json`, diff's exit status, global flags in
either position, `--val-split`, what `evaluate` calls the functions it scored, the budget presets (`auto`), every
training flag reaching the optimizer, and a refused resume that names what differs."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import dspy
import pytest

import toolforge as tf
from tests.evaluation_fixtures import exact, unary
from tests.test_cli import AGENT, PROPOSER, ROOT, toolforge
from tests.test_optimizer import DOUBLE, SQUARE, add_square_once, compile_with, examples
from toolforge.cli import LoadedProgram, _dataset, _optimizer, _parser, main


@pytest.fixture(autouse=True)
def _logging_restored():
    """`main` sets the levels of toolforge's and DSPy's loggers, as a command does for its process."""
    loggers = [logging.getLogger(name) for name in ("toolforge", "dspy")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def saved(tmp_path: Path, name: str, *functions: tf.ForgedFunction) -> str:
    path = tmp_path / f"{name}.json"
    tf.Toolset(list(functions)).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------ --version
def test_version_prints_toolforge_dspy_and_python_versions(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"toolforge {tf.__version__} (DSPy {dspy.__version__}, Python 3.")


# ------------------------------------------------------------------------------------------------ diff
def test_diff_exits_0_when_the_toolsets_are_equal(tmp_path, capsys):
    a, b = saved(tmp_path, "a", DOUBLE), saved(tmp_path, "b", DOUBLE)
    assert main(["diff", a, b]) == 0
    assert capsys.readouterr().out == "(no changes)\n"


def test_diff_exits_1_when_the_toolsets_differ(tmp_path, capsys):
    a, b = saved(tmp_path, "a", DOUBLE), saved(tmp_path, "b", DOUBLE, SQUARE)
    assert main(["diff", a, b]) == 1
    assert capsys.readouterr().out == "+ square\n"


def test_diff_exits_2_when_a_toolset_cannot_be_read(tmp_path, capsys):
    a = saved(tmp_path, "a", DOUBLE)
    assert main(["diff", a, str(tmp_path / "missing.json")]) == 2
    assert "toolforge: error: toolset file" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`toolforge show T.json | head -1`: no error line, status 141 (128 + SIGPIPE) as a shell reports for it."""
    padding = "\n".join(f"    # {'x' * 100}" for _ in range(20))  # 2 kB a function: more than a pipe holds
    functions = [
        unary(f"f{i}", "x").model_copy(update={"code": f"def f{i}(x):\n{padding}\n    return x\n"}) for i in range(60)
    ]
    path = saved(tmp_path, "big", *functions)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLFORGE_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "toolforge.cli", "show", path]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(path.encode())
        process.stdout.close()
        assert process.wait(timeout=120) == 141
        assert process.stderr.read() == b""


# ------------------------------------------------------------------------------------------------ --json
def test_show_json_lists_each_function_with_its_interface_and_code(tmp_path, capsys):
    path = saved(tmp_path, "t", DOUBLE, unary("jitter", "x", deterministic=False))
    assert main(["show", path, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    toolset = tf.Toolset.load(path)
    assert {k: shown[k] for k in ("format", "version", "path", "fingerprint", "max_functions")} == {
        "format": "toolforge.show",
        "version": 1,
        "path": path,
        "fingerprint": toolset.fingerprint,
        "max_functions": toolset.max_functions,
    }
    assert shown["functions"][0] == {
        "name": "double",
        "description": DOUBLE.description,
        "parameters": DOUBLE.parameters,
        "code": DOUBLE.code,
        "packages": [],
        "deterministic": True,
        "signature": "double(x: number)",
        "fingerprint": DOUBLE.fingerprint,
    }
    assert [(f["name"], f["deterministic"]) for f in shown["functions"]] == [("double", True), ("jitter", False)]


def test_json_output_escapes_control_characters_from_the_file(tmp_path, capsys):
    path = saved(tmp_path, "t", unary("double", "x * 2", description="Doubles \x1b[2J x."))
    assert main(["show", path, "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\u001b[2J" in out
    assert json.loads(out)["functions"][0]["description"] == "Doubles \x1b[2J x."


def test_diff_json_gives_what_was_added_removed_and_revised(tmp_path, capsys):
    a = saved(tmp_path, "a", DOUBLE, SQUARE)
    b = saved(tmp_path, "b", unary("double", "x + x", DOUBLE.description), unary("cube", "x ** 3"))
    assert main(["diff", a, b, "--json"]) == 1
    diff = json.loads(capsys.readouterr().out)
    assert {k: diff[k] for k in ("format", "version", "a", "b", "equal", "added", "removed", "reordered")} == {
        "format": "toolforge.diff",
        "version": 1,
        "a": a,
        "b": b,
        "equal": False,
        "added": ["cube"],
        "removed": ["square"],
        "reordered": [],
    }
    [revision] = diff["revised"]
    assert (revision["name"], revision["interface_changed"], revision["code_changed"]) == ("double", False, True)
    assert "-    return x * 2\n+    return x + x\n" in revision["code_diff"]


def test_diff_json_of_equal_toolsets_says_equal(tmp_path, capsys):
    a, b = saved(tmp_path, "a", DOUBLE), saved(tmp_path, "b", DOUBLE)
    assert main(["diff", a, b, "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert (diff["equal"], diff["added"], diff["removed"], diff["revised"]) == (True, [], [], [])


def test_cache_stats_json_gives_the_counters(tmp_path, capsys):
    with tf.EvaluationCache(tmp_path / "cache") as cache:
        expected = cache.stats()
    assert main(["cache", "stats", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == {"format": "toolforge.cache-stats", "version": 1, **expected.model_dump(mode="json")} | {
        "hit_rate": 0.0
    }
    assert set(stats) >= {"directory", "entries", "size_bytes", "hits", "misses", "lm_calls_saved", "call_hits"}


def test_cache_clear_refuses_json_naming_the_command_that_takes_it(tmp_path, capsys):
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 2
    assert "--json is for `toolforge cache stats`" in capsys.readouterr().err


def test_report_json_gives_the_files_written_and_the_report(tmp_path, capsys):
    run = tmp_path / "run"
    compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=run)
    assert main(["report", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["version"]) == ("toolforge.report", 1)
    assert (out["learning_curve"], out["markdown"]) == (str(run / "learning-curve.png"), str(run / "report.md"))
    assert Path(out["learning_curve"]).read_bytes()[:4] == b"\x89PNG"
    assert out["report"] == json.loads((run / "report.json").read_text())
    assert out["report"]["final_functions"] == ["double", "square"]


# ------------------------------------------------------------------------------------------------ global flags
def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    a = saved(tmp_path, "a", DOUBLE)
    with pytest.raises(tf.ToolsetError, match="missing.json"):
        main(["diff", a, str(tmp_path / "missing.json"), "--debug"])


@pytest.mark.parametrize("position", ["before", "after"])
def test_global_flags_are_accepted_before_or_after_the_subcommand(position):
    flags = ["--debug", "--quiet", "--verbose"]
    argv = [*flags, "show", "t.json"] if position == "before" else ["show", "t.json", *flags]
    args = _parser().parse_args(argv)
    assert (args.debug, args.quiet, args.verbose) == (True, True, True)


def test_global_flags_given_before_the_subcommand_are_not_reset_by_it():
    args = _parser().parse_args(["--quiet", "compile", "p.py", "--debug"])
    assert (args.quiet, args.debug, getattr(args, "verbose", False)) == (True, True, False)


@pytest.fixture(scope="module")
def verbose_run(tmp_path_factory):
    """A compile with --verbose before the subcommand, --quiet after it, and the valset from load_dataset("test")."""
    tmp = tmp_path_factory.mktemp("verbose")
    args = ["--epochs", "2", "--val-split", "test", "--out", str(tmp / "run"), "--quiet"]
    return toolforge("--verbose", "compile", "tests/cli_fixtures.py", *AGENT, *PROPOSER, *args, tmp=tmp)


def test_verbose_logs_what_the_compile_does(verbose_run):
    assert verbose_run.returncode == 0, verbose_run.stderr
    assert "INFO toolforge.optimizer: compile finished (max_epochs): train score 0.500 -> 1.000" in verbose_run.stderr


def test_quiet_shows_no_progress_bar(verbose_run):
    assert "toolforge compile:" not in verbose_run.stderr and "it/s" not in verbose_run.stderr


# ------------------------------------------------------------------------------------------------ --val-split
def test_val_split_takes_the_valset_from_the_programs_load_dataset(verbose_run):
    assert verbose_run.returncode == 0, verbose_run.stderr
    assert "validation scores of the accepted toolsets: step 0 0.500, step 1 1.000; kept step 1's" in (
        verbose_run.stdout
    )


def test_val_split_train_is_refused_when_compile_trains_on_that_split(capsys):
    assert main(["compile", "tests/cli_fixtures.py", "--val-split", "train"]) == 2
    assert "--val-split train is the split compile trains on; name another, e.g. --val-split test" in (
        capsys.readouterr().err
    )


def test_val_and_val_split_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["compile", "p.py", "--val", "v.jsonl", "--val-split", "test"])
    assert exit_.value.code == 2
    assert "argument --val-split: not allowed with argument --val" in capsys.readouterr().err


def _loaded(load_dataset) -> LoadedProgram:
    return LoadedProgram(name="mine", build=dspy.Module, metric=exact, load_dataset=load_dataset)


def test_a_split_the_programs_loader_does_not_have_is_named_with_its_error():
    def load_dataset(split, limit=None):
        return {"train": [], "test": []}[split]

    program = tf.ToolAgent("question -> answer")
    args = _parser().parse_args(["compile", "p.py"])
    with pytest.raises(tf.ToolforgeError, match=r"'mine': load_dataset\('val'\) raised KeyError: 'val'; check the"):
        _dataset(_loaded(load_dataset), program, None, "val", args, None)


def test_a_split_with_no_examples_is_refused():
    program = tf.ToolAgent("question -> answer")
    args = _parser().parse_args(["compile", "p.py"])
    with pytest.raises(tf.ToolforgeError, match=r"load_dataset\('val'\) returned no examples; name another split"):
        _dataset(_loaded(lambda split, limit=None: []), program, None, "val", args, None)


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_calls_a_program_without_functions_untrained(tmp_path):
    result = toolforge("evaluate", "tests.cli_fixtures:HalfBroken", "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tests.cli_fixtures:HalfBroken, untrained (no functions): score 0.500")


def test_evaluate_calls_a_toolset_equal_to_the_programs_own_seeded(tmp_path):
    seeds = saved(tmp_path, "seeds", unary("double", "x * 2"))  # what cli_fixtures' program holds
    result = toolforge("evaluate", "tests/cli_fixtures.py", "--toolset", seeds, *AGENT, "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"cli_fixtures with {seeds}, seeded (its own functions: double): score 0.500" in result.stdout


def test_evaluate_calls_an_empty_toolset_file_untrained(tmp_path):
    empty = saved(tmp_path, "empty")
    result = toolforge("evaluate", "tests/cli_fixtures.py", "--toolset", empty, *AGENT, "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"cli_fixtures with {empty}, untrained (no functions): score 0.000" in result.stdout


def test_evaluate_calls_the_functions_of_every_toolset_a_program_holds_seeded(tmp_path):
    result = toolforge("evaluate", "tests.cli_fixtures:TwoAgents", *AGENT, "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tests.cli_fixtures:TwoAgents, seeded (its own functions: double, triple): score 0.500" in result.stdout


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize(
    ("auto", "budget"),
    [(None, (10, 5, 3, 3)), ("light", (6, 3, 2, 2)), ("medium", (12, 5, 3, 3)), ("heavy", (18, 8, 3, 4))],
)
def test_auto_presets_set_the_budget(auto, budget):
    optimizer = tf.FunctionOptimizer(exact, auto=auto, cache=False)
    assert (optimizer.max_epochs, optimizer.patience, optimizer.max_actions_per_step, optimizer.max_trials) == budget


def test_options_given_explicitly_win_over_the_preset():
    optimizer = tf.FunctionOptimizer(exact, auto="heavy", max_epochs=2, max_trials=1, cache=False)
    budget = (optimizer.max_epochs, optimizer.patience, optimizer.max_actions_per_step, optimizer.max_trials)
    assert budget == (2, 8, 3, 1)


def test_an_unknown_preset_is_refused_with_the_ones_there_are():
    with pytest.raises(tf.ToolforgeError, match=r"auto='fast'\): no such preset; give one of 'light', 'medium', 'hea"):
        tf.FunctionOptimizer(exact, auto="fast", cache=False)  # type: ignore[arg-type]


def test_a_presets_budget_is_checked_like_explicit_options():
    with pytest.raises(tf.ToolforgeError, match="patience"):
        tf.FunctionOptimizer(exact, auto="light", patience=0, cache=False)


def test_a_compile_with_a_preset_stops_at_the_presets_patience():
    _, _, report, _, _ = compile_with(
        lambda inputs: [], tf.Toolset([DOUBLE]), max_epochs=None, patience=None, auto="light"
    )
    assert (report.stop_reason, len(report.steps)) == ("early_stop", 3)  # light: patience 3 of its 6 steps


# ------------------------------------------------------------------------------------------------ training flags
def _optimizer_of(tmp_path: Path, *flags: str) -> tf.FunctionOptimizer:
    args = _parser().parse_args(["compile", "p.py", "--cache-dir", str(tmp_path / "cache"), *flags])
    for flag in ("debug", "quiet", "verbose"):
        setattr(args, flag, getattr(args, flag, False))
    return _optimizer(args, exact, dspy.LM("openai/any"), tmp_path / "run")


def test_every_training_flag_reaches_the_optimizer(tmp_path):
    optimizer = _optimizer_of(
        tmp_path,
        *("--epochs", "7", "--patience", "4", "--max-actions", "2", "--trials", "5", "--max-lm-calls", "300"),
        *("--max-functions", "6", "--no-accept-ties", "--no-prune", "--prune-seeds", "--min-net-flips", "2"),
        *("--significance", "0.05", "--holdout", "0.3", "--no-rollback", "--no-progressive", "--seed", "3"),
        *("--stop-when-solved", "--verbose"),
    )
    assert {
        name: getattr(optimizer, name)
        for name in (
            "max_epochs", "patience", "max_actions_per_step", "max_trials", "max_lm_calls", "max_functions",
            "accept_ties", "prune_unused", "prune_seeds", "min_net_flips", "significance", "holdout", "rollback",
            "progressive", "seed", "stop_when_solved", "verbose",
        )
    } == {
        "max_epochs": 7, "patience": 4, "max_actions_per_step": 2, "max_trials": 5, "max_lm_calls": 300,
        "max_functions": 6, "accept_ties": False, "prune_unused": False, "prune_seeds": True, "min_net_flips": 2,
        "significance": 0.05, "holdout": 0.3, "rollback": False, "progressive": False, "seed": 3,
        "stop_when_solved": True, "verbose": True,
    }  # fmt: skip


def test_without_training_flags_the_library_defaults_hold_and_compile_runs_5_epochs(tmp_path):
    optimizer = _optimizer_of(tmp_path)
    library = tf.FunctionOptimizer(exact, cache=False)
    assert optimizer.max_epochs == 5
    for name in ("patience", "max_actions_per_step", "max_trials", "accept_ties", "prune_unused", "prune_seeds",
                 "min_net_flips", "significance", "holdout", "rollback", "progressive", "max_functions",
                 "stop_when_solved", "verbose"):  # fmt: skip
        assert getattr(optimizer, name) == getattr(library, name), name


def test_auto_on_the_command_line_sets_the_budget_and_flags_win_over_it(tmp_path):
    light = _optimizer_of(tmp_path, "--auto", "light")
    assert (light.max_epochs, light.patience, light.max_actions_per_step, light.max_trials) == (6, 3, 2, 2)
    heavy = _optimizer_of(tmp_path, "--auto", "heavy", "--epochs", "3")
    assert (heavy.max_epochs, heavy.patience, heavy.max_trials) == (3, 8, 4)


def test_accept_ties_can_be_turned_on_explicitly(tmp_path):
    assert _optimizer_of(tmp_path, "--accept-ties").accept_ties is True


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--significance", "1.5"], "--significance 1.5: must be between 0 and 1 (exclusive), e.g. 0.05"),
        (["--holdout", "1"], "--holdout 1.0: must be a share from 0 (hold out nothing) to below 1, e.g. 0.2"),
        (["--min-net-flips", "0"], "--min-net-flips 0: must be a positive number"),
        (["--max-functions", "-1"], "--max-functions -1: must be a non-negative number"),
    ],
)
def test_bad_training_numbers_are_refused_in_the_flags_terms(capsys, flags, message):
    assert main(["compile", "tests/cli_fixtures.py", *flags]) == 2
    assert capsys.readouterr().err == f"toolforge: error: {message}\n"


def test_an_unknown_auto_preset_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", "tests/cli_fixtures.py", "--auto", "fast"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --auto: invalid choice: 'fast' (choose from " in err
    assert all(name in err.rsplit("choose from", 1)[1] for name in ("light", "medium", "heavy"))


# ------------------------------------------------------------------------------------------------ refused resume
def test_a_refused_resume_names_each_setting_that_differs_with_old_and_new_value(tmp_path):
    compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=tmp_path / "run", patience=2)
    with pytest.raises(tf.ToolforgeError) as refused:
        compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=tmp_path / "run", patience=3, trainset=examples(5))
    message = str(refused.value)
    assert "holds a checkpoint of a different compile (trainset: 10 examples (" in message
    assert ") -> 5 examples (" in message and ", patience: 2 -> 3); use another log_dir" in message
    assert "max_trials" not in message and "resume=False" in message


def test_a_refused_resume_of_a_checkpoint_that_predates_its_settings_gives_the_general_reason(tmp_path):
    run = tmp_path / "run"
    compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=run)
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    del checkpoint["settings"]  # as toolforge wrote it before it recorded them
    (run / "checkpoint.json").write_text(json.dumps(checkpoint))
    with pytest.raises(tf.ToolforgeError, match=r"different compile \(another program, data, metric, LM, settings"):
        compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=run, patience=3)
    _, trained, report, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), log_dir=run)  # same: resumes
    assert report.resumed_after_step is not None and trained.toolset.names == ["double", "square"]


def test_the_command_names_the_flag_of_each_setting_that_differs(tmp_path):
    base = ["compile", "tests/cli_fixtures.py", *AGENT, *PROPOSER, "--epochs", "1", "--out", str(tmp_path / "r")]
    assert toolforge(*base, "--quiet", tmp=tmp_path).returncode == 0
    other = toolforge(*base, "--limit", "3", "--patience", "2", "--no-accept-ties", "--quiet", tmp=tmp_path)
    assert other.returncode == 2
    assert "different compile (trainset (--train, --limit): 6 examples (" in other.stderr
    assert "patience (--patience): 5 -> 2, accept_ties (--accept-ties / --no-accept-ties): True -> False)" in (
        other.stderr
    )
    assert "start afresh in it with resume=False (--restart)" in other.stderr


# ------------------------------------------------------------------------------------------------ README
def readme_commands() -> list[list[str]]:
    """The `toolforge ...` lines of README's bash blocks in "The command" section, as argument lists."""
    section = (ROOT / "README.md").read_text().split("## The command\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line.split("  #")[0].split(" | ")[0] for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("toolforge ")]


def test_readme_shows_the_new_flags():
    flags = {arg for argv in readme_commands() for arg in argv if arg.startswith("--")}
    assert {"--auto", "--val-split", "--no-prune", "--max-functions", "--json", "--version"} <= flags


@pytest.mark.parametrize("argv", [a for a in readme_commands() if a != ["--version"]], ids=" ".join)
def test_every_command_in_the_readme_parses_as_written(argv):
    args = _parser().parse_args(argv)
    assert callable(args.func)
