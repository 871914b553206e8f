"""A compile keeps its state in a run of its own, not on the optimizer: one optimizer compiles again, or in two
threads at once, and gets what fresh optimizers get."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact
from tests.test_optimizer import DOUBLE, agent_lm, examples, proposer_lm, scenario

SQUARE_TOOL = dspy.Tool(lambda x: x * x, name="square", desc="Return x * x.")


def students():
    """Two different students: one with a fixed tool (whose name a function must not take), one without."""
    plain = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    with_tool = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]), tools=[SQUARE_TOOL])
    return [(plain, examples()), (with_tool, examples(5))]


def optimizer():
    proposer_model, _ = proposer_lm(scenario)
    return tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=3, patience=3, num_threads=2, cache=False, display_progress=False,
        stop_when_solved=False,
    )  # fmt: skip


def compiled(optimizer, student, trainset):
    with dspy.context(lm=agent_lm()[0]):
        trained = optimizer.compile(student, trainset=trainset)
    report = trained.toolforge_report.model_dump(mode="json", exclude={"wall_time_s"})
    for step in report["steps"]:
        del step["wall_time_s"]
    return trained.toolset.to_dict(), report


def test_one_optimizer_compiles_twice_as_two_fresh_ones_do():
    fresh = [compiled(optimizer(), student, trainset) for student, trainset in students()]
    shared = optimizer()
    again = [compiled(shared, student, trainset) for student, trainset in students()]
    assert again == fresh
    assert [len(report["steps"]) for _, report in fresh] == [3, 3]
    assert fresh[0] != fresh[1]  # the two compiles differ (the second student has a fixed tool named square)
    assert not hasattr(shared, "_fixed") and not hasattr(shared, "_fixed_text")


def test_one_optimizer_compiles_in_two_threads_at_once_as_two_fresh_ones_do():
    fresh = [compiled(optimizer(), student, trainset) for student, trainset in students()]
    shared = optimizer()
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda pair: compiled(shared, *pair), students()))
    assert together == fresh
