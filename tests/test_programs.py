"""The ready programs: deterministic data, loaders and metrics."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import dspy
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from programs import math_agent, table_agent  # noqa: E402
from programs._common import as_number, numeric_metric  # noqa: E402
from programs.data import generate  # noqa: E402


def test_the_generator_is_deterministic_and_matches_the_committed_files(tmp_path):
    for path in generate.write(tmp_path):
        assert path.read_bytes() == (ROOT / "programs" / "data" / path.name).read_bytes(), path.name


@pytest.mark.parametrize("program", [math_agent, table_agent])
def test_splits_have_200_problems_from_many_families(program):
    for split in ("train", "test"):
        examples = program.load_dataset(split)
        assert len(examples) >= 200
        families = collections.Counter(e.family for e in examples)
        assert len(families) >= 8 and min(families.values()) >= 10


def test_train_and_test_do_not_overlap():
    for program in (math_agent, table_agent):
        train = {str(e.inputs().toDict()) for e in program.load_dataset("train")}
        test = {str(e.inputs().toDict()) for e in program.load_dataset("test")}
        assert not train & test


def test_examples_have_their_inputs_marked():
    assert set(table_agent.load_dataset("test", limit=1)[0].inputs().keys()) == {"table", "question"}
    assert set(math_agent.load_dataset("test", limit=1)[0].inputs().keys()) == {"question"}


def test_the_programs_start_with_the_python_tool_only():
    for program in (math_agent, table_agent):
        agent = program.build_program()
        assert [t.name for t in agent.tools] == ["python"] and len(agent.toolset) == 0


def test_answers_are_exact():
    problem = next(e for e in table_agent.load_dataset("train") if e.family == "column_sum")
    values = [int(line.split(" | ")[1]) for line in problem.table.splitlines()[1:]]
    assert problem.answer == sum(values)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), ("$1,234.50", 1234.5), ("The answer is -2.5 meters", -2.5), ("none", None), (True, None)],
)
def test_as_number(value, expected):
    assert as_number(value) == expected


def test_numeric_metric_has_a_tolerance():
    example = dspy.Example(question="q", answer=1234.5).with_inputs("question")
    assert numeric_metric(example, dspy.Prediction(answer="1,234.50"))
    assert numeric_metric(example, dspy.Prediction(answer=1234.504))
    assert not numeric_metric(example, dspy.Prediction(answer=1236))
    assert not numeric_metric(example, dspy.Prediction(answer="unknown"))
    assert not numeric_metric(example, dspy.Prediction())


def test_unknown_split_is_refused():
    with pytest.raises(Exception, match="split 'dev' does not exist; use 'train' or 'test'"):
        table_agent.load_dataset("dev")
