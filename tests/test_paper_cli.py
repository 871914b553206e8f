"""`toolforge paper`, run as a user runs it: the protocol end to end on the fixture data sets, with scripted LMs
and with the embedded LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import toolforge

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "paper"
SCRIPTED = ["--lm", "tests.paper_fixtures:agent", "--proposer-lm", "tests.paper_fixtures:proposer"]


def paper(task: str, data: Path, tmp: Path, *args: str) -> list[str]:
    return ["paper", task, "--data", str(data), "--out", str(tmp / "run"), "--quiet", "--agent", "assistant", *args]


@pytest.fixture(scope="module")
def math_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    args = ["--type", "number_theory", "--train-size", "5", "--test-size", "4", "--epochs", "2", *SCRIPTED]
    first = toolforge(*paper("math", FIXTURES / "MATH", tmp, *args), tmp=tmp)
    return tmp, first


def test_the_math_protocol_trains_and_tests_without_and_with_the_functions(math_run):
    tmp, result = math_run
    assert result.returncode == 0, result.stderr
    cell = json.loads((tmp / "run" / "assistant" / "number_theory" / "result.json").read_text())
    assert (cell["without"], cell["with_functions"], cell["functions"]) == (0.0, 25.0, ["gcd"])
    assert (cell["train_size"], cell["test_size"], cell["seed"]) == (5, 4, 0)


def test_the_table_puts_our_cell_beside_the_papers(math_run):
    tmp, result = math_run
    table = (tmp / "run" / "results.md").read_text()
    assert "| MATH Number Theory | GPT-4+ | 56.3 -> 67.5 | 0.0 -> 25.0 | 5 / 4 | 0 |" in table
    assert table in result.stdout


def test_a_later_cell_joins_the_table_of_the_same_directory(math_run):
    tmp, _ = math_run
    args = ["--type", "algebra", "--train-size", "1", "--test-size", "1", "--epochs", "1", *SCRIPTED]
    result = toolforge(*paper("math", FIXTURES / "MATH", tmp, *args), tmp=tmp)
    assert result.returncode == 0, result.stderr
    rows = [line for line in (tmp / "run" / "results.md").read_text().splitlines() if line.startswith("| MATH")]
    assert [row.split(" | ")[0] for row in rows] == ["| MATH Algebra", "| MATH Number Theory"]


def test_the_react_agent_trains_and_uses_its_function_in_the_same_protocol(tmp_path):
    args = ["--type", "number_theory", "--train-size", "5", "--test-size", "4", "--epochs", "2", *SCRIPTED]
    result = toolforge(*paper("math", FIXTURES / "MATH", tmp_path, *args, "--agent", "react"), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    cell = json.loads((tmp_path / "run" / "react" / "number_theory" / "result.json").read_text())
    assert (cell["without"], cell["with_functions"], cell["functions"]) == (0.0, 25.0, ["gcd"])


def test_tabmwp_runs_on_its_train_and_test_files(tmp_path):
    args = ["--train-size", "2", "--test-size", "2", "--epochs", "1", *SCRIPTED]
    result = toolforge(*paper("tabmwp", FIXTURES / "tabmwp", tmp_path, *args), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| TabMWP | GPT-4+ | 51.0 -> 56.0 | 0.0 -> 0.0 | 2 / 2 | 0 |" in result.stdout


def test_gaia_runs_on_its_validation_folder(tmp_path):
    args = ["--train-size", "2", "--test-size", "2", "--epochs", "1", *SCRIPTED]
    result = toolforge(*paper("gaia", FIXTURES / "gaia" / "validation", tmp_path, *args), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| GAIA | GPT-4+ | 16.0 -> 23.0 |" in result.stdout


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        ("tabmwp", ["--type", "algebra"], "--type 'algebra' is for MATH's problem types; tabmwp has none, drop it"),
        ("math", ["--type", "topology"], "--type 'topology': no MATH type 'topology'; give 'all' or some of"),
        ("math", ["--type", "algebra", "--levels", "hard"], "--levels 'hard': give levels as comma-separated numbers"),
        ("math", ["--type", "algebra", "--test-size", "0"], "--test-size 0: must be a positive number"),
        (
            "math",
            ["--type", "algebra", "--train-size", "1"],
            "--test-size=80, but there are only 1 MATH algebra problems in the test split; lower --test-size",
        ),
    ],
)
def test_set_up_mistakes_are_one_line_naming_the_flag(tmp_path, task, args, message):
    data = FIXTURES / ("MATH" if task == "math" else task)
    result = toolforge(*paper(task, data, tmp_path, *args, *SCRIPTED), tmp=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_protocol_runs_end_to_end_with_the_embedded_lm(tmp_path):
    # The embedded model is the agent, its replies capped at 96 tokens; the proposer is scripted, since one proposal
    # by the embedded model (640 tokens under a JSON schema) takes minutes on two shared cores.
    args = ["--type", "number_theory", "--train-size", "1", "--test-size", "1", "--epochs", "1", "--max-actions", "1"]
    args += ["--trials", "1", "--max-iters", "1", "--lm", "tests.paper_fixtures:short_local"]
    args += ["--proposer-lm", "tests.paper_fixtures:proposer"]
    result = toolforge(*paper("math", FIXTURES / "MATH", tmp_path, *args), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| MATH Number Theory | GPT-4+ | 56.3 -> 67.5 |" in table
    assert "Cells run with the embedded model (Gemma 3 270M) are far below a GPT-4-class model" in table
