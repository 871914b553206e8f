"""Every roll-back and refusal says why, with the examples that flipped (by their place in the trainset or valset)
and the action whose touched examples they were."""

from __future__ import annotations

import re

import dspy
import pytest

import toolforge as tf
from tests.evaluation_fixtures import unary
from tests.test_acceptance import TRIPLE, fitting_compile, mixed, scripted
from tests.test_optimizer import DOUBLE, SQUARE, action, compile_with, examples


@pytest.fixture
def cache(tmp_path):
    with tf.EvaluationCache(tmp_path / "cache") as c:
        yield c


def harmful_removal(cache):
    """double is added at step 1 (a seed function's removal is refused before its harm is measured)."""
    policy, _ = scripted(
        [
            [action("add_function", DOUBLE)],
            [action("add_function", SQUARE), action("add_function", TRIPLE), action("remove_function", name="double")],
        ]
    )
    train = mixed(("double", "square", "triple", "square", "triple"))
    return compile_with(policy, tf.Toolset(), trainset=train, cache=cache, max_epochs=2)[2]


def wrong_revision(cache):
    policy, _ = scripted([[action("revise_function", unary("double", "x * 2 + 1", DOUBLE.description))]])
    return compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1)[2]


def irrelevant_and_rejected(cache):
    bad = dict(action("add_function", SQUARE), code="def square(x):\n    return x *\n")
    policy, _ = scripted([[bad], [action("add_function", unary("cube", "x ** 3"))], []])
    return compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=3, max_trials=1, patience=5)[2]


def seed_removal(cache):
    policy, _ = scripted([[action("remove_function", name="cube")]])
    return compile_with(policy, tf.Toolset([DOUBLE, unary("cube", "x ** 3")]), cache=cache, max_epochs=1)[2]


def held_out_fit(cache):
    return fitting_compile(cache)[2]


COMPILES = [harmful_removal, wrong_revision, irrelevant_and_rejected, seed_removal, held_out_fit]


def test_no_roll_back_refusal_or_unchanged_step_is_left_without_a_reason(cache):
    seen: dict[str, int] = {}
    for run in COMPILES:
        report = run(cache)
        for step in report.steps:
            if step.outcome != "accepted":
                assert step.reason and step.reason.strip(), (run.__name__, step.step, step.outcome)
                seen[step.outcome] = seen.get(step.outcome, 0) + 1
            for outcome in step.actions:
                if outcome.status != "accepted":
                    assert outcome.reason and outcome.reason.strip(), (run.__name__, outcome.summary, outcome.status)
                    seen[outcome.status] = seen.get(outcome.status, 0) + 1
                if outcome.status in ("accepted", "rolled_back"):
                    assert outcome.evidence is not None, (run.__name__, outcome.summary)
    # the walk covered every kind there is to explain
    assert {"rolled_back", "no_change", "dropped"} <= seen.keys() and seen["rolled_back"] >= 5


def test_a_harmful_action_names_the_examples_it_made_worse(cache):
    report = harmful_removal(cache)
    remove = report.steps[1].actions[2]
    assert (remove.status, remove.evidence.flips.worse) == ("rolled_back", ["trainset[0]", "trainset[5]"])
    assert remove.reason == (
        "the evidence is against it: more of the examples it touched got worse than better (2 example(s), 0 better, "
        "2 worse; worse: trainset[0], trainset[5])"
    )
    square = report.steps[1].actions[0]
    assert square.evidence.flips.better == ["trainset[1]", "trainset[3]", "trainset[6]", "trainset[8]"]


def test_a_lone_rolled_back_action_carries_its_own_evidence(cache):
    report = wrong_revision(cache)
    (revise,) = report.steps[0].actions
    assert revise.status == "rolled_back"
    doubles = [f"trainset[{i}]" for i in range(10) if i % 5 != 4]
    assert (revise.evidence.flips.worse, revise.evidence.flips.better) == (doubles, [])
    assert revise.reason.endswith(f"8 worse; worse: {', '.join(doubles)})")
    assert report.steps[0].evidence.touched.worse == doubles


def test_held_out_examples_are_named_by_their_place_in_the_trainset(cache):
    report = held_out_fit(cache)
    step = report.steps[0]
    val = step.evidence.val_touched
    assert step.outcome == "rolled_back" and val.worse
    assert all(re.fullmatch(r"trainset\[\d+\]", name) for name in val.worse + step.evidence.touched.better)
    assert set(val.worse).isdisjoint(step.evidence.touched.better)  # the proposer never saw the held-out ones
    assert f"hurts on the validation ones ({val.describe()}; worse: {', '.join(val.worse)})" in step.reason


def test_a_valset_example_is_named_by_its_place_in_the_valset(cache):
    from tests.test_optimizer import agent_lm, proposer_lm

    valset = [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in (("double 11", 22.0),
                                                                                     ("square 12", 144.0))]  # fmt: skip
    optimizer = tf.FunctionOptimizer(
        lambda e, p, t=None: float(p.answer) == e.answer, proposer_lm=proposer_lm(lambda i: [action("add_function",
        SQUARE)])[0], max_epochs=1, num_threads=2, display_progress=False, cache=cache,
    )  # fmt: skip
    with dspy.context(lm=agent_lm()[0]):
        trained = optimizer.compile(
            tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])), trainset=examples(), valset=valset
        )
    evidence = trained.toolforge_report.steps[0].evidence
    assert (evidence.touched.better, evidence.val_touched.better) == (["trainset[4]", "trainset[9]"], ["valset[1]"])


def test_an_example_given_in_both_sets_is_named_by_the_side_it_flipped_on(cache):
    train = examples()  # square 5 is trainset[4]
    valset = [train[4], dspy.Example(question="square 12", answer=144.0).with_inputs("question")]
    _, _, report, _, _ = compile_with(
        lambda inputs: [action("add_function", SQUARE)], tf.Toolset([DOUBLE]), trainset=train, valset=valset,
        cache=cache, max_epochs=1,
    )  # fmt: skip
    evidence = report.steps[0].evidence
    assert (evidence.touched.better, evidence.val_touched.better) == (
        ["trainset[4]", "trainset[9]"],
        ["valset[0]", "valset[1]"],
    )


def test_a_step_without_a_checked_action_says_why(cache):
    report = irrelevant_and_rejected(cache)
    first, _, last = report.steps
    assert first.outcome == "no_change" and first.reason == "none of the 1 proposed action(s) passed the checks " \
        "(each says why)"  # fmt: skip
    assert first.actions[0].status == "dropped" and "does not compile" in first.actions[0].reason
    assert (last.outcome, last.reason) == ("no_change", "the proposer proposed no action")
