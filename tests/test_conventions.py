"""FunctionOptimizer.compile follows dspy.Teleprompter's: `compile(student, *, trainset, teacher=None,
valset=None, **kwargs)`; what a teacher means here; unknown arguments refused by name."""

from __future__ import annotations

import inspect
import logging

import dspy
import pytest
from dspy.teleprompt.teleprompt import Teleprompter

import toolforge as tf
from tests.scripted_lm import field, scripted_lm, tool_agent_script
from tests.test_optimizer import DOUBLE, SQUARE, action, agent_lm, examples, offered, proposer_lm
from tests.test_react import readme_snippet


def optimizer(policy=lambda inputs: [], **kwargs) -> tf.FunctionOptimizer:
    settings = dict(max_epochs=1, num_threads=2, display_progress=False, cache=False) | kwargs
    return tf.FunctionOptimizer(lambda e, p, t=None: float(p.answer) == e.answer, proposer_lm=proposer_lm(policy)[0],
                                **settings)  # fmt: skip


def compile_(opt, student, **kwargs):
    with dspy.context(lm=agent_lm()[0]):
        return opt.compile(student, trainset=examples(), **kwargs)


def test_compile_takes_the_parameters_of_teleprompter_compile_in_their_order():
    ours = inspect.signature(tf.FunctionOptimizer.compile).parameters
    theirs = inspect.signature(Teleprompter.compile).parameters
    assert list(theirs) == ["self", "student", "trainset", "teacher", "valset", "kwargs"]
    assert [name for name in ours if name in theirs] == list(theirs)
    assert all(ours[name].kind == theirs[name].kind for name in theirs)
    assert ours["teacher"].default is None and ours["valset"].default is None


def test_an_unknown_keyword_argument_is_a_type_error_naming_it():
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): max_bootstrapped_demos, num_trials; it "):
        optimizer().compile(student, trainset=examples(), num_trials=3, max_bootstrapped_demos=2)


def test_a_teacher_s_functions_seed_the_student():
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    teacher = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE, SQUARE]))
    trained = compile_(optimizer(), student, teacher=teacher)
    report = trained.toolforge_report
    assert report.seed_functions == ["double", "square"] and report.initial_score == 1.0
    assert trained.toolset.names == ["double", "square"]
    assert student.toolset.names == ["double"]  # the student is not changed


def test_a_toolset_is_a_teacher_too():
    student = tf.ToolAgent("question -> answer: float")
    trained = compile_(optimizer(), student, teacher=tf.Toolset([SQUARE]))
    assert trained.toolforge_report.seed_functions == ["square"]


def test_where_student_and_teacher_differ_the_student_s_function_is_kept(caplog):
    other = tf.ForgedFunction("double", DOUBLE.description, DOUBLE.parameters, "def double(x):\n    return x + x\n")
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    with caplog.at_level(logging.WARNING, logger="toolforge.optimizer"):
        trained = compile_(optimizer(), student, teacher=tf.Toolset([other, SQUARE]))
    assert trained.toolset["double"].code == DOUBLE.code
    assert "the student and the teacher define double differently; the student's are kept" in caplog.text


def test_a_teacher_without_a_toolset_is_ignored_with_a_warning(caplog):
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    with caplog.at_level(logging.WARNING, logger="toolforge.optimizer"):
        trained = compile_(optimizer(), student, teacher=dspy.Predict("question -> answer: float"))
    assert trained.toolforge_report.seed_functions == ["double"]
    assert "compile(teacher=Predict): the teacher holds no Toolset, so it is ignored" in caplog.text


def test_a_teacher_that_is_no_program_is_refused():
    student = tf.ToolAgent("question -> answer: float")
    with pytest.raises(tf.ToolforgeError, match=r"teacher=\.\.\.\) takes a dspy.Module holding a Toolset.*got str"):
        optimizer().compile(student, trainset=examples(), teacher="gpt-4o")


def test_the_readme_in_python_example_runs_as_written(tmp_path, monkeypatch):
    def respond(system: str, user: str) -> dict:  # one LM, as the example configures: the agent and the proposer
        if "[[ ## current_functions ## ]]" in user:
            known = "### double" in field(user, "current_functions")
            return {"reasoning": "Doubling fails.", "actions": [] if known else [action("add_function", DOUBLE)]}

        def choose(question: str):
            return ("double", {"x": float(question.split()[1])}) if offered(system, "double") else None

        return tool_agent_script(choose)(system, user)

    def example(i: int) -> dspy.Example:
        return dspy.Example(table="a | b\n1 | 2", question=f"double {i}", answer=2.0 * i).with_inputs(
            "table", "question"
        )

    monkeypatch.chdir(tmp_path)  # where the example's files go
    namespace: dict = {
        "metric": lambda example, prediction, trace=None: float(prediction.answer) == example.answer,
        "train": [example(i) for i in range(1, 9)],
        "val": [example(i) for i in range(20, 23)],
        "devset": [example(i) for i in range(30, 34)],
    }
    with dspy.context(lm=scripted_lm(respond, name="readme")[0]):
        exec(compile(readme_snippet("In Python"), "README.md", "exec"), namespace)
    assert namespace["trained"].toolset.names == namespace["again"].toolset.names == ["double"]
    assert namespace["trained"].toolforge_report.best_score == 1.0
    assert [tool.name for tool in namespace["react"].tools.values()] == ["double", "finish"]
    assert namespace["run"].score == 1.0
