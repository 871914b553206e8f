"""FunctionOptimizer: the training loop with scripted agent and proposer LMs, and exact expectations."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import dspy
import pytest

import toolforge as tf
from tests.evaluation_fixtures import exact, unary
from tests.scripted_lm import field, offers, scripted_lm, tool_agent_script
from toolforge.report import markdown_report, write_report

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = unary("double", "x * 2")
SQUARE = unary("square", "x * x")
SQUARE_DESCRIPTION = SQUARE.description


def offered(system: str, name: str) -> bool:
    return offers(system, name)


def agent_lm():
    """Calls the tool named by the question's first word, if the agent has it; else answers 0."""

    def respond(system: str, user: str) -> dict[str, Any]:
        def choose(question: str):
            kind, number = question.split()
            return (kind, {"x": float(number)}) if offered(system, kind) else None

        return tool_agent_script(choose)(system, user)

    return scripted_lm(respond, name="agent")


def examples(n: int = 10, kinds=("double", "double", "double", "double", "square")) -> list[dspy.Example]:
    """Questions 1..n; every fifth asks for a square (20%), the others for a double."""
    out = []
    for i in range(1, n + 1):
        kind = kinds[(i - 1) % len(kinds)]
        answer = float(i * i) if kind == "square" else float(2 * i)
        out.append(dspy.Example(question=f"{kind} {i}", answer=answer).with_inputs("question"))
    return out


def action(kind: str, function: tf.ForgedFunction | None = None, name: str | None = None, **overrides) -> dict:
    if kind == "remove_function":
        return {"action": kind, "name": name}
    arguments = overrides.pop("example_arguments", {"x": 3})
    data = tf.ProposedAction.of(kind, function, arguments).model_dump()
    data.update(overrides)
    return data


def proposer_lm(policy):
    """A proposer whose reply is `policy(inputs)`, with inputs the proposer's rendered input fields."""

    def respond(system: str, user: str) -> dict[str, Any]:
        names = ("current_functions", "failure_list", "trajectories", "rejected", "fixed_tools")
        inputs = {name: field(user, name) for name in names}
        return {"reasoning": "Looking at the failures.", "actions": policy(inputs)}

    return scripted_lm(respond, name="proposer")


def add_square_once(inputs):
    return [] if "### square" in inputs["current_functions"] else [action("add_function", SQUARE)]


@pytest.fixture
def cache(tmp_path):
    with tf.EvaluationCache(tmp_path / "cache") as c:
        yield c


def compile_with(policy, toolset, *, trainset=None, valset=None, cache=None, agent=None, proposer=None, **kwargs):
    agent_model, agent_engine = agent or agent_lm()
    proposer_model, proposer_engine = proposer or proposer_lm(policy)
    student = tf.ToolAgent("question -> answer: float", toolset=toolset)
    # the scripted task is solved after one step; these tests are about the steps after it
    settings = dict(
        max_epochs=3, patience=2, num_threads=4, display_progress=False, cache=cache or False, stop_when_solved=False
    )
    settings.update(kwargs)
    optimizer = tf.FunctionOptimizer(exact, proposer_lm=proposer_model, **settings)
    with dspy.context(lm=agent_model):
        trained = optimizer.compile(student, trainset=trainset or examples(), valset=valset)
    return student, trained, trained.toolforge_report, agent_engine, proposer_engine


def test_an_add_that_raises_the_score_is_accepted(cache):
    _, trained, report, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache)
    assert report.initial_score == 0.8 and report.best_score == 1.0
    step = report.steps[0]
    assert (step.outcome, step.score_before, step.score_after, step.improved) == ("accepted", 0.8, 1.0, True)
    assert [(a.summary, a.status) for a in step.actions] == [("add square", "accepted")]
    assert trained.toolset.names == ["double", "square"]
    assert trained.toolset["square"].code == SQUARE.code
    assert report.accepted_steps == [0, 1]


def test_a_sandbox_with_a_process_per_call_trains_the_same_toolset(cache):
    with tf.Sandbox(workers=2, isolation="call") as box:
        agent_model, _ = agent_lm()
        proposer_model, _ = proposer_lm(add_square_once)
        student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]), sandbox=box)
        optimizer = tf.FunctionOptimizer(
            exact, proposer_lm=proposer_model, max_epochs=2, cache=cache, sandbox=box, display_progress=False
        )
        with dspy.context(lm=agent_model):
            trained = optimizer.compile(student, trainset=examples())
    report = trained.toolforge_report
    assert (report.initial_score, report.best_score) == (0.8, 1.0)
    assert trained.toolset.names == ["double", "square"]


def test_the_proposer_is_told_how_the_training_runs_used_each_function(cache):
    seen = []

    def policy(inputs):
        seen.append(inputs["current_functions"])
        return add_square_once(inputs)

    compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=2, patience=2)
    assert "### double\n" in seen[0] and "usage: called in 8 of 10 training runs\n" in seen[0]
    assert "usage: called in 2 of 10 training runs\n" in seen[1]  # square, accepted in step 1


def test_an_empty_reply_while_examples_fail_is_asked_again_within_the_step(cache):
    rejected = []

    def policy(inputs):  # says nothing the first time it is asked in a step, proposes square when told why
        rejected.append(inputs["rejected"])
        return [action("add_function", SQUARE)] if "no action was proposed" in inputs["rejected"] else []

    _, trained, report, _, proposer = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1)
    assert rejected[0] == "(none)"
    assert rejected[1] == (
        "- (trial 1) no action was proposed, while 2 of 10 training examples still fail: propose at least one action "
        "that could make some of them succeed"
    )
    assert report.steps[0].outcome == "accepted" and trained.toolset.names == ["double", "square"]
    assert report.steps[0].usage.proposer.calls == 2 and proposer.calls == 2


def test_an_empty_reply_when_every_example_succeeds_ends_the_step():
    calls = []

    def policy(inputs):
        calls.append(inputs["rejected"])
        return []

    _, _, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), max_epochs=1)
    assert report.initial_score == 1.0 and calls == ["(none)"]
    assert report.steps[0].outcome == "no_change"


def test_the_proposer_is_told_what_the_fixed_tools_do():
    from toolforge.program import describe_fixed_tools

    agent = tf.ToolAgent("question -> answer: float", tools=[tf.python_tool()])
    text = describe_fixed_tools(agent)
    assert text.startswith("- python: Run a Python code snippet in a sandbox and return what it prints")
    assert text.endswith("\n- finish: ends the agent's run, once it can answer")
    seen = []

    def policy(inputs):
        seen.append(inputs["fixed_tools"])
        return []

    compile_with(policy, tf.Toolset([DOUBLE]), max_epochs=1)
    assert seen and set(seen) == {"- finish: ends the agent's run, once it can answer"}


def test_a_metric_s_feedback_reaches_the_proposer(cache):
    """A GEPA-style metric, `dspy.Prediction(score=..., feedback=...)`: its text is shown with each scored run."""

    def graded(example, prediction, trace=None):
        ok = exact(example, prediction)
        return dspy.Prediction(score=float(ok), feedback="" if ok else f"expected {example.answer}: square it")

    seen = []

    def policy(inputs):
        seen.append(inputs["trajectories"])
        return add_square_once(inputs)

    agent_model, _ = agent_lm()
    proposer_model, _ = proposer_lm(policy)
    optimizer = tf.FunctionOptimizer(
        graded, proposer_lm=proposer_model, max_epochs=1, cache=cache, display_progress=False
    )
    with dspy.context(lm=agent_model):
        trained = optimizer.compile(
            tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])), trainset=examples()
        )
    assert "feedback: expected 25.0: square it" in seen[0]  # question 5 asks for a square
    assert seen[0].count("feedback:") == 2  # the two failures; a success's empty feedback is not shown
    assert trained.toolforge_report.best_score == 1.0


class ReActWithToolset(dspy.Module):
    """Any program may train a toolset: this one builds DSPy's own ReAct over `toolset.as_tools()` on each call."""

    def __init__(self):
        super().__init__()
        self.toolset = tf.Toolset([DOUBLE])

    def forward(self, question):
        return dspy.ReAct("question -> answer: float", tools=self.toolset.as_tools(), max_iters=3)(question=question)


def react_lm(name="react"):
    """DSPy ReAct's format: calls the tool named by the question's first word if it is offered, then finishes."""

    def respond(system: str, user: str) -> dict[str, Any]:
        kind, number = field(user, "question").split()
        if "next_tool_name" in system:
            if "[[ ## tool_name_0 ## ]]" not in user and f") {kind}, whose description" in system:
                return {"next_thought": "Call it.", "next_tool_name": kind, "next_tool_args": {"x": float(number)}}
            return {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}}
        observation = field(user, "observation_0")
        return {"reasoning": "From the trajectory.", "answer": observation if observation[:1].isdigit() else "0"}

    return scripted_lm(respond, name=name)


def test_a_program_that_is_not_a_tool_agent_trains_its_toolset_too(cache):
    agent_model, _ = react_lm()
    proposer_model, _ = proposer_lm(add_square_once)
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=2, cache=cache, display_progress=False
    )
    with dspy.context(lm=agent_model):
        trained = optimizer.compile(ReActWithToolset(), trainset=examples())
    report = trained.toolforge_report
    assert (report.initial_score, report.best_score) == (0.8, 1.0)
    assert trained.toolset.names == ["double", "square"]
    with dspy.context(lm=react_lm(name="another-model")[0]):  # the LM is part of the key, even for predictors
        run = tf.Evaluator(exact, cache=cache).evaluate(trained, examples())  # made inside forward()
    assert (run.hits, run.score) == (0, 1.0)


def test_the_student_is_never_changed(cache):
    original = tf.Toolset([DOUBLE])
    student, trained, _, _, _ = compile_with(add_square_once, original, cache=cache)
    assert student.toolset is original and student.toolset.names == ["double"]
    assert trained is not student and trained.toolset.names == ["double", "square"]


def test_a_revision_that_lowers_the_score_is_rolled_back_and_shown_in_the_failure_list(cache):
    buggy = unary("square", "x * x + 1", SQUARE_DESCRIPTION)
    seen: list[dict] = []

    def policy(inputs):
        seen.append(inputs)
        if inputs["failure_list"] == "(none)" and len(seen) == 1:
            return [action("revise_function", buggy)]
        return []

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), cache=cache)
    first = report.steps[0]
    assert (first.outcome, first.score_before, first.score_after) == ("rolled_back", 1.0, 0.8)
    assert first.actions[0].status == "rolled_back"
    assert trained.toolset["square"].code == SQUARE.code
    assert "Step 1: scored 0.800 (the current functions score 1.000)" in seen[1]["failure_list"]
    assert "return x * x + 1" in seen[1]["failure_list"]


def test_proposing_a_failed_function_set_again_is_sent_back_without_an_evaluation(cache):
    buggy = unary("square", "x * x + 1", SQUARE_DESCRIPTION)
    seen: list[dict] = []

    def policy(inputs):
        seen.append(inputs)
        return [] if "together, the actions give" in inputs["rejected"] else [action("revise_function", buggy)]

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), cache=cache, max_epochs=2)
    first, second = report.steps
    assert first.outcome == "rolled_back"
    assert second.outcome == "no_change" and second.candidate_fingerprint is None
    assert (second.usage.agent.calls, second.cache_misses) == (0, 0)  # no evaluation of the repeated set
    assert [(a.status, a.trial) for a in second.actions] == [("rejected", 1)]
    assert second.actions[0].reason == (
        "together, the actions give the function set that scored 0.800 at step 1 (see the failure list); propose "
        "something different"
    )
    assert (
        "- revise square (trial 1): together, the actions give the function set that scored 0.800"
        in (seen[-1]["rejected"])
    )
    assert trained.toolset["square"].code == SQUARE.code


def test_actions_that_change_nothing_are_sent_back(cache):
    same = unary("square", "x * x", SQUARE_DESCRIPTION)

    def policy(inputs):
        return [] if inputs["rejected"] != "(none)" else [action("revise_function", same)]

    _, _, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), cache=cache, max_epochs=1)
    step = report.steps[0]
    assert step.outcome == "no_change"
    assert step.actions[0].reason == (
        "revising 'square' changes nothing: the description, parameters and code given are the ones it has; propose "
        "a different change, or none"
    )


def test_a_reply_with_something_to_evaluate_is_not_asked_again_and_its_rejections_reach_the_next_step(cache):
    """A proposer call costs more than a check: a step whose reply left an action to evaluate evaluates it, and
    the proposer hears why the others were rejected at its next call. The same revision proposed again after it
    was rolled back builds a failed candidate again: it is sent back within that step, not judged twice."""
    wrong = unary("square", "x * 3", SQUARE_DESCRIPTION)
    seen: list[dict] = []

    def policy(inputs):  # a wrong revision and a crashing add, every time
        seen.append(inputs)
        return [action("revise_function", wrong), action("add_function", unary("boom", "1 / 0"))]

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), cache=cache, max_epochs=2)
    first, second = report.steps
    assert [(a.summary, a.status, a.trial) for a in first.actions] == [
        ("revise square", "rolled_back", 1),
        ("add boom", "rejected", 1),
    ]
    assert first.usage.proposer.calls == 1 and seen[0]["rejected"] == "(none)"
    assert seen[1]["rejected"].startswith("- add boom (step 1, trial 1): ")
    assert [(a.summary, a.status, a.trial) for a in second.actions] == [
        ("revise square", "rejected", 1),
        ("add boom", "rejected", 1),
        ("revise square", "rejected", 2),
        ("add boom", "rejected", 2),
        ("revise square", "dropped", 3),
        ("add boom", "dropped", 3),
    ]
    assert second.outcome == "no_change" and "see the failure list" in second.actions[0].reason
    assert trained.toolset["square"].code == SQUARE.code


def test_accepting_a_candidate_clears_the_failure_list(cache):
    seen: list[dict] = []

    def policy(inputs):
        seen.append(inputs)
        return [
            [action("add_function", unary("square", "x * x + 1", SQUARE_DESCRIPTION))],
            [action("add_function", SQUARE)],
            [],
        ][min(len(seen) - 1, 2)]

    _, _, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, patience=3)
    assert [s.outcome for s in report.steps[:2]] == ["rolled_back", "accepted"]
    assert seen[1]["failure_list"] != "(none)"
    assert seen[2]["failure_list"] == "(none)"  # the correct square of step 2 was accepted


def test_ties_are_rolled_back_without_accept_ties(cache):
    triple = unary("triple", "x * 3")
    policy = lambda inputs: [] if "### triple" in inputs["current_functions"] else [action("add_function", triple)]  # noqa: E731
    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE, SQUARE]), cache=cache, accept_ties=False)
    assert report.steps[0].outcome == "rolled_back" and "triple" not in trained.toolset


def test_early_stop_fires_after_patience(cache):
    _, _, report, _, proposer = compile_with(
        lambda inputs: [], tf.Toolset([DOUBLE]), cache=cache, max_epochs=10, patience=3
    )
    assert report.stop_reason == "early_stop"
    assert [s.outcome for s in report.steps] == ["no_change"] * 3
    assert proposer.calls == 3 * 3  # an empty reply while examples fail is asked again, up to max_trials (3)


def test_a_solved_training_set_stops_the_compile_without_more_proposals(cache):
    _, trained, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE]), cache=cache, max_epochs=10, patience=5, stop_when_solved=True
    )
    assert (report.best_score, report.stop_reason) == (1.0, "solved")
    assert [s.outcome for s in report.steps] == ["accepted"]
    assert proposer.calls == 1 and trained.toolset.names == ["double", "square"]


def test_a_training_set_the_student_already_solves_costs_no_proposal(cache):
    _, trained, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE, SQUARE]), cache=cache, max_epochs=10, stop_when_solved=True
    )
    assert (report.initial_score, report.stop_reason, report.steps) == (1.0, "solved", [])
    assert proposer.calls == 0 and trained.toolset.names == ["double", "square"]


def test_stop_when_solved_off_goes_on_until_patience(cache):
    _, _, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE]), cache=cache, max_epochs=10, patience=2, stop_when_solved=False
    )
    assert report.stop_reason == "early_stop"
    assert [s.outcome for s in report.steps] == ["accepted", "no_change", "no_change"]
    assert proposer.calls == 3


def test_a_solved_training_set_does_not_stop_while_the_valset_has_failures(cache):
    valset = examples(4, kinds=("triple",))  # nothing the agent has or will get answers these
    _, _, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE]), cache=cache, max_epochs=10, patience=2, stop_when_solved=True,
        valset=valset,
    )  # fmt: skip
    assert report.best_score == 1.0 and report.stop_reason == "early_stop"
    assert proposer.calls == 3


def test_a_compile_that_stopped_solved_goes_on_when_resumed_with_stop_when_solved_off(tmp_path):
    settings = dict(max_epochs=10, patience=2, log_dir=tmp_path / "run")
    _, _, first, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), stop_when_solved=True, **settings)
    _, _, again, _, proposer = compile_with(add_square_once, tf.Toolset([DOUBLE]), stop_when_solved=False, **settings)
    assert first.stop_reason == "solved" and len(first.steps) == 1
    assert again.stop_reason == "early_stop" and [s.outcome for s in again.steps][1:] == ["no_change", "no_change"]
    assert proposer.calls == 2  # only the steps after the checkpoint


def test_invalid_proposals_are_retried_with_their_reasons_and_then_dropped(cache):
    seen: list[str] = []

    def policy(inputs):
        seen.append(inputs["rejected"])
        if len(seen) == 1:
            return [action("add_function", SQUARE, code="def square(x):\n    return x *\n")]
        if len(seen) == 2:
            return [action("add_function", SQUARE, code="def sq(x):\n    return x * x\n")]
        if len(seen) == 3:
            return [action("add_function", SQUARE, code="def square(y):\n    return y * y\n")]
        return []

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1)
    outcomes = report.steps[0].actions
    assert [(o.trial, o.status) for o in outcomes] == [(1, "rejected"), (2, "rejected"), (3, "dropped")]
    assert "code does not compile" in outcomes[0].reason
    assert "does not define a top-level function 'square'" in outcomes[1].reason
    assert "parameters disagree with the def" in outcomes[2].reason
    assert seen[0] == "(none)"
    assert "add square (trial 1): function 'square': code does not compile" in seen[1]
    assert "add square (trial 2): function 'square': code does not define" in seen[2]
    assert report.steps[0].outcome == "no_change" and trained.toolset.names == ["double"]


def test_a_function_that_crashes_in_its_smoke_call_is_rejected(cache):
    crashing = action("add_function", SQUARE, code="def square(x):\n    return x * x / 0\n")
    calls = []

    def policy(inputs):
        calls.append(inputs)
        return [crashing] if len(calls) == 1 else [action("add_function", SQUARE)]

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1)
    first, second = report.steps[0].actions
    assert first.status == "rejected"
    assert first.reason.startswith('the smoke call square({"x": 3}) failed: ZeroDivisionError')
    assert second.status == "accepted" and trained.toolset.names == ["double", "square"]


def test_a_proposal_written_loosely_reaches_its_smoke_call_as_meant(cache):
    """As LMs write them: a verb for the action, Python type names, example values as JSON (integers, objects)."""
    code = "import math\n\n\ndef lcm_of(numbers, weights):\n    return math.lcm(*numbers) * weights['scale']\n"
    loose = {
        "action": "add",
        "name": "lcm_of",
        "description": "The least common multiple of the integers, times weights['scale'].",
        "parameters": [{"name": "numbers", "type": "list[int]"}, {"name": "weights", "type": "dict"}],
        "code": code,
        "example_arguments": [{"name": "numbers", "value": "[4, 6]"}, {"name": "weights", "value": {"scale": 2}}],
    }
    _, _, report, _, _ = compile_with(lambda inputs: [loose], tf.Toolset([DOUBLE]), cache=cache, max_epochs=1)
    outcome = report.steps[0].actions[0]
    assert outcome.summary == "add lcm_of"
    # its smoke call ran (24), so it was evaluated; the agent never calls it, so it is not kept
    assert outcome.status == "rolled_back" and outcome.reason.startswith("no evidence that it helps")


def test_a_malformed_action_goes_back_without_losing_the_valid_ones_beside_it(cache):
    calls = []

    def policy(inputs):
        calls.append(inputs)
        if len(calls) > 1:
            return []
        return [action("add_function", SQUARE), {"action": "rename_function", "name": "double"}, "cube it"]

    _, trained, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=2)
    square, rename, text = report.steps[0].actions
    assert (square.summary, square.status) == ("add square", "accepted")
    assert (rename.summary, rename.status) == ("rename double", "rejected")
    assert rename.reason.startswith("the action is malformed: action: Input should be 'add_function'")
    assert (text.summary, text.status) == ("? ?", "rejected")
    assert text.reason == "the action is malformed: an action must be a JSON object, got str: cube it"
    assert "- rename double (step 1, trial 1): the action is malformed" in calls[1]["rejected"]  # at the next step
    assert trained.toolset.names == ["double", "square"]


def test_a_function_whose_smoke_calls_disagree_is_marked_not_deterministic(cache, caplog):
    base = unary("jitter", "x + random.random()")
    jitter = tf.ForgedFunction(base.name, base.description, base.parameters, "import random\n\n\n" + base.code)
    policy = lambda inputs: [] if "### jitter" in inputs["current_functions"] else [action("add_function", jitter)]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="toolforge.optimizer"):
        _, trained, report, _, _ = compile_with(
            policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1, prune_unused=False, rollback=False
        )
    assert report.steps[0].actions[0].status == "accepted"  # unused, but accepted unweighed (rollback=False)
    assert trained.toolset["jitter"].deterministic is False  # so its results are never cached
    assert trained.toolset["double"].deterministic is True
    assert "add jitter: two smoke calls with the same arguments gave" in caplog.text


def test_a_reply_cut_at_the_token_limit_is_named_as_the_cause(cache):
    calls = []

    def policy(inputs):
        calls.append(inputs)
        cut_short = {"action": "add_function", "name": "cube", "parameters": [{"name": "x"}]}  # "type" never came
        return [action("add_function", SQUARE), cut_short] if len(calls) == 1 else []

    proposer = proposer_lm(policy)
    proposer[1].finish_reason = "length"
    _, _, report, _, _ = compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=2, proposer=proposer)
    square, cube = report.steps[0].actions
    assert square.status == "accepted" and cube.status == "rejected"
    assert cube.reason == (
        "the action is malformed: parameters.0.type: Field required; the reply was cut at the proposer LM's token "
        "limit (max_tokens): propose fewer or shorter actions"
    )
    assert "propose fewer or shorter actions" in calls[1]["rejected"]


@pytest.mark.parametrize(
    ("proposal", "reason"),
    [
        (action("add_function", DOUBLE), "function 'double' already exists; use ReviseFunction"),
        (action("remove_function", name="cube"), "cannot remove 'cube': no such function"),
        (action("add_function", unary("finish", "x")), "'finish' is the name of a fixed tool"),
        (action("add_function", SQUARE, example_arguments={"y": 1}), "example_arguments do not fit"),
        ({"action": "add_function", "name": "square"}, "function 'square': description is empty"),
    ],
)
def test_toolset_rules_reject_actions(cache, proposal, reason):
    _, _, report, _, _ = compile_with(
        lambda inputs: [proposal], tf.Toolset([DOUBLE]), cache=cache, max_epochs=1, max_trials=1
    )
    assert report.steps[0].actions[0].status == "dropped"
    assert reason in report.steps[0].actions[0].reason


def test_max_functions_holds(cache):
    triple = unary("triple", "x * 3")
    policy = lambda inputs: [action("add_function", SQUARE), action("add_function", triple)]  # noqa: E731
    _, trained, report, _, _ = compile_with(
        policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1, max_functions=2, max_trials=1
    )
    outcomes = report.steps[0].actions
    assert [o.status for o in outcomes] == ["accepted", "rejected"]
    assert "adding 'triple' would exceed max_functions=2" in outcomes[1].reason
    assert len(trained.toolset) == 2 and trained.toolset.max_functions == 2


def test_max_actions_per_step_holds(cache):
    triple, half = unary("triple", "x * 3"), unary("half", "x / 2")
    policy = lambda inputs: [action("add_function", f) for f in (SQUARE, triple, half)]  # noqa: E731
    _, _, report, _, _ = compile_with(
        policy, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1, max_actions_per_step=2, max_trials=1
    )
    # two actions checked and evaluated; the third over the limit. Triple is never called: rolled back on its own
    assert [o.status for o in report.steps[0].actions] == ["accepted", "rolled_back", "rejected"]
    assert report.steps[0].actions[1].reason.startswith("no evidence that it helps")
    assert "over the limit" in report.steps[0].actions[2].reason


def test_pruning_drops_functions_no_trajectory_called(cache):
    unused = unary("cube", "x ** 3")
    _, trained, report, _, _ = compile_with(
        lambda inputs: [], tf.Toolset([DOUBLE, unused]), cache=cache, prune_seeds=True
    )
    assert report.pruned == ["cube"] and trained.toolset.names == ["double"]
    assert (report.pruned_score, report.best_score, report.unused_kept) == (0.8, 0.8, [])
    _, kept, _, _, _ = compile_with(lambda inputs: [], tf.Toolset([DOUBLE, unused]), cache=cache, prune_unused=False)
    assert kept.toolset.names == ["double", "cube"]


def test_pruning_must_hold_on_the_valset_too(cache, tmp_path):
    """The hint is never called, and training (doubles) does as well without it; validation (squares) does not."""
    hint = unary("hint", "x", "Squares: multiply the number by itself.")

    def respond(system: str, user: str) -> dict[str, Any]:
        kind, number = field(user, "question").split()
        if "next_tool_call" in system:
            if kind == "double" and "[[ ## tool_name_0 ## ]]" not in user:
                return {"next_thought": "Use double.", "next_tool_call": {"name": "double", "args": {"x": number}}}
            thought = "The hint says how." if offered(system, "hint") else "No idea."
            return {"next_thought": thought, "next_tool_call": {"name": "finish", "args": {}}}
        observation = field(user, "observation_0")
        if kind == "double":
            answer = observation or "0"
        else:
            answer = str(float(number) ** 2) if "The hint says how." in user else "0"
        return {"reasoning": "From the trajectory.", "answer": answer}

    agent_model, _ = scripted_lm(respond)
    proposer_model, _ = proposer_lm(lambda inputs: [])
    optimizer = tf.FunctionOptimizer(
        exact,
        proposer_lm=proposer_model,
        max_epochs=1,
        cache=cache,
        display_progress=False,
        log_dir=tmp_path,
        prune_seeds=True,
    )
    student = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE, hint]))
    with dspy.context(lm=agent_model):  # 5 validation examples all worse without the hint: significant harm
        trained = optimizer.compile(
            student, trainset=examples(4, kinds=("double",)), valset=examples(5, kinds=("square",))
        )
    report = trained.toolforge_report
    assert (report.best_score, report.val_scores) == (1.0, {0: 1.0})
    assert (report.pruned, report.unused_kept) == ([], ["hint"])
    assert (report.pruned_score, report.pruned_val_score) == (1.0, 0.0)
    assert trained.toolset.names == ["double", "hint"]
    markdown = write_report(tmp_path)[1].read_text()
    assert "- unused but kept: hint (without them the validation score fell to 0.000)" in markdown


def test_no_pruning_once_the_budget_is_spent(cache, caplog):
    unused = unary("cube", "x ** 3")
    with caplog.at_level("WARNING", logger="toolforge"):
        _, trained, report, _, _ = compile_with(
            lambda inputs: [],
            tf.Toolset([DOUBLE, unused]),
            cache=cache,
            max_lm_calls=28,  # the baseline's cost
            prune_seeds=True,
        )
    assert report.stop_reason == "budget"
    assert (report.pruned, report.unused_kept, report.pruned_score) == ([], ["cube"], None)
    assert trained.toolset.names == ["double", "cube"]
    assert "not pruning ['cube']: the LM-call budget is spent" in caplog.text


def test_pruning_that_lowers_the_score_is_not_kept(cache, tmp_path):
    """A function the agent never calls can still help (its description alone steers the LM): dropping it is a
    change like any other, evaluated, and undone when the score falls."""
    hint = unary("hint", "x", "Squares: multiply the number by itself; doubles: add it to itself.")

    def respond(system: str, user: str) -> dict[str, Any]:
        if "next_tool_call" in system:
            thought = "The hint says how." if offered(system, "hint") else "No idea."
            return {"next_thought": thought, "next_tool_call": {"name": "finish", "args": {}}}
        kind, number = field(user, "question").split()
        hinted = "The hint says how." in user
        answer = (float(number) ** 2 if kind == "square" else 2 * float(number)) if hinted else 0.0
        return {"reasoning": "From the trajectory.", "answer": str(answer)}

    _, trained, report, _, _ = compile_with(
        lambda inputs: [],
        tf.Toolset([hint]),
        cache=cache,
        agent=scripted_lm(respond),
        log_dir=tmp_path / "run",
        prune_seeds=True,
    )
    assert report.best_score == 1.0
    assert (report.pruned, report.unused_kept, report.pruned_score) == ([], ["hint"], 0.0)
    assert trained.toolset.names == ["hint"]
    markdown = write_report(tmp_path / "run")[1].read_text()
    assert "- unused but kept: hint (without them the training score fell to 0.000)" in markdown


def test_the_budget_stops_cleanly_keeping_the_best_so_far(cache):
    # the baseline costs 8 x 3 + 2 x 2 = 28 requests; step 1 a proposer call and 10 x 3; later steps 1 each
    _, trained, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE]), cache=cache, max_epochs=10, patience=10, max_lm_calls=61
    )
    assert report.stop_reason == "budget" and len(report.steps) == 3
    assert trained.toolset.names == ["double", "square"]
    assert proposer.calls == 3 and report.agent_lm_calls + report.proposer_lm_calls == 61


def test_the_returned_program_saves_and_loads(cache, tmp_path):
    _, trained, _, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache)
    trained.save(tmp_path / "trained.json")
    fresh = tf.ToolAgent("question -> answer: float")
    fresh.load(tmp_path / "trained.json")
    assert fresh.toolset == trained.toolset


def test_log_dir_holds_the_report_every_accepted_toolset_and_a_checkpoint(cache, tmp_path):
    log_dir = tmp_path / "run"
    _, trained, report, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=log_dir)
    assert {p.name for p in log_dir.iterdir()} == {
        ".lock",  # held while a compile runs here
        "report.json",
        "checkpoint.json",
        "lm-calls.jsonl",  # the LM requests made since the last checkpoint, for the accounting of a resume
        "toolset-0.json",
        "toolset-1.json",
        "toolset-final.json",
    }
    saved = json.loads((log_dir / "report.json").read_text())
    assert saved["best_score"] == 1.0 and len(saved["steps"]) == len(report.steps)
    assert tf.Toolset.load(log_dir / "toolset-1.json").names == ["double", "square"]
    assert tf.Toolset.load(log_dir / "toolset-final.json") == trained.toolset


def test_step_reports_count_lm_calls_and_cache_hits(cache):
    _, _, report, agent, proposer = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache)
    first = report.steps[0]
    # the best toolset was cached; the candidate ran its 10 examples, the 2 that could get better first (the full
    # evaluation took those 2 from the cache)
    assert (first.cache_hits, first.cache_misses) == (10 + 2, 10)
    assert first.usage.agent.calls == 30 and first.usage.proposer.calls == 1
    assert first.usage.proposer.prompt_tokens > 0 and first.usage.agent.prompt_tokens > 0
    assert report.agent_lm_calls == agent.calls == 28 + 30
    assert report.proposer_lm_calls == proposer.calls


def scenario(inputs):
    """A three-step run: add square (accepted), a bad revision (rolled back), then nothing."""
    if "### square" not in inputs["current_functions"]:
        return [action("add_function", SQUARE)]
    if inputs["failure_list"] == "(none)" and "return x * x + 1" not in inputs["failure_list"]:
        return [action("revise_function", unary("double", "x * 2 + 1", DOUBLE.description))]
    return []


def test_resume_after_an_interruption_gives_the_same_result(cache, tmp_path):
    _, reference, ref_report, _, _ = compile_with(
        scenario, tf.Toolset([DOUBLE]), cache=False, max_epochs=4, patience=4, log_dir=tmp_path / "reference"
    )
    proposer_model, engine = proposer_lm(scenario)
    original_respond = engine.respond
    engine.fail_on = 2

    def flaky(system, user):
        if engine.calls + 1 == engine.fail_on:
            engine.fail_on = None
            raise KeyboardInterrupt  # Ctrl-C during step 2
        return original_respond(system, user)

    engine.respond = flaky

    def resumable():
        return compile_with(
            scenario,
            tf.Toolset([DOUBLE]),
            cache=False,
            max_epochs=4,
            patience=4,
            log_dir=tmp_path / "resumed",
            proposer=(proposer_model, engine),
        )

    with pytest.raises(KeyboardInterrupt):
        resumable()
    checkpoint = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    assert checkpoint["step"] == 1
    _, resumed, report, _, _ = resumable()
    assert report.resumed_after_step == 1
    assert resumed.toolset == reference.toolset
    assert [s.outcome for s in report.steps] == [s.outcome for s in ref_report.steps]
    assert report.best_score == ref_report.best_score


KILLABLE_COMPILE = """
import json, os, signal, sys
import dspy
import toolforge as tf
from tests.test_optimizer import DOUBLE, agent_lm, compile_with, scenario

run, kill_at = sys.argv[1], int(sys.argv[2])
dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=run + "/dspy")
agent = agent_lm()
engine, respond = agent[1], agent[1].respond

def killing(system, user):  # the process dies in the middle of its kill_at-th agent LM request
    if engine.calls + 1 == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return respond(system, user)

engine.respond = killing
with tf.EvaluationCache(run + "/cache") as cache:
    _, _, report, _, _ = compile_with(
        scenario, tf.Toolset([DOUBLE]), cache=cache, agent=agent, max_epochs=4, patience=4, num_threads=1,
        log_dir=run + "/log",
    )
print(json.dumps(report.model_dump(mode="json")))
"""


def test_lm_calls_after_kill_9_and_a_resume_match_an_uninterrupted_compile(tmp_path):
    """A compile killed in the middle of step 2 (after its proposer call and 9 of the candidate's agent requests)
    and resumed reports the LM calls an uninterrupted compile does, step by step: the requests the killed run made
    come from the ledger, and DSPy's cache answers them, free, when the resumed step makes them again."""

    def compile_in_a_process(run: str, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", KILLABLE_COMPILE, str(tmp_path / run), str(kill_at)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    reference = compile_in_a_process("reference")
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout.splitlines()[-1])
    step_calls = [(s["agent_lm_calls"], s["proposer_lm_calls"]) for s in expected["steps"]]
    baseline = expected["agent_lm_calls"] - sum(agent for agent, _ in step_calls)
    assert baseline == 28 and step_calls[:2] == [(22, 1), (16, 1)]  # step 2: the proposer, then the candidate

    killed = compile_in_a_process("interrupted", kill_at=28 + 22 + 10)  # the 10th agent request of step 2
    assert killed.returncode == -9
    log = tmp_path / "interrupted" / "log"
    assert json.loads((log / "checkpoint.json").read_text())["step"] == 1
    assert len((log / "lm-calls.jsonl").read_text().splitlines()) == 1 + 9  # step 2's requests so far

    resumed = compile_in_a_process("interrupted")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout.splitlines()[-1])
    assert report["resumed_after_step"] == 1
    for total in ("agent_lm_calls", "proposer_lm_calls"):
        assert report[total] == expected[total]
    assert [(s["agent_lm_calls"], s["proposer_lm_calls"]) for s in report["steps"]] == step_calls
    for field_name in ("agent_prompt_tokens", "agent_completion_tokens", "proposer_prompt_tokens"):
        assert [s[field_name] for s in report["steps"]] == [s[field_name] for s in expected["steps"]]
    assert report["steps"][1]["interrupted_lm_calls"] == report["interrupted_lm_calls"] == 10
    assert [s["interrupted_lm_calls"] for s in expected["steps"]] == [0] * len(expected["steps"])
    markdown = markdown_report(tf.OptimizationReport.model_validate(report), log)
    assert f"- LM calls: {expected['agent_lm_calls']} agent, {expected['proposer_lm_calls']} proposer; " in markdown
    assert "(including 10 made by runs that were interrupted: a crash, a kill or Ctrl-C; " in markdown
    assert "## Step 2: rolled_back\n\n_10 of this step's LM calls were made by a run of it that was interrupted._" in (
        markdown
    )


def test_a_finished_compile_in_the_same_log_dir_returns_its_result_without_work(cache, tmp_path):
    _, first, _, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=tmp_path / "run")
    _, again, report, _, proposer = compile_with(
        add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=tmp_path / "run"
    )
    assert again.toolset == first.toolset and proposer.calls == 0 and report.resumed_after_step == 3


def test_two_compiles_cannot_share_a_log_dir_at_once(cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(  # another process holding the run directory, as a compile in progress does
        [sys.executable, "-c", LOCK_HOLDER, str(run / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(tf.ToolforgeError, match=r"another compile \(pid \d+\) is running in .*run'; wait for it"):
            compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=run)
        assert not (run / "checkpoint.json").exists()
    finally:
        holder.kill()
        holder.wait()
    _, trained, _, _, _ = compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=run)
    assert trained.toolset.names == ["double", "square"]  # the lock went with the process that held it


LOCK_HOLDER = """
import fcntl, os, sys, time
lock = open(sys.argv[1], "a+")
fcntl.flock(lock, fcntl.LOCK_EX)
lock.write(f"pid {os.getpid()}"); lock.flush()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_different_compile_in_the_same_log_dir_is_refused(cache, tmp_path):
    compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=tmp_path / "run")
    with pytest.raises(tf.ToolforgeError, match="holds a checkpoint of a different compile.*resume=False"):
        compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=tmp_path / "run", trainset=examples(5))


def test_resume_false_starts_afresh_in_the_log_dir_and_clears_the_earlier_files(cache, tmp_path):
    run = tmp_path / "run"
    compile_with(add_square_once, tf.Toolset([DOUBLE]), cache=cache, log_dir=run, max_epochs=2)
    assert (run / "toolset-1.json").exists()  # step 1 (add square) was accepted
    (run / "notes.txt").write_text("mine")
    _, trained, report, agent, _ = compile_with(
        lambda inputs: [], tf.Toolset([DOUBLE]), cache=cache, log_dir=run, max_epochs=2, resume=False
    )
    assert [s.outcome for s in report.steps] == ["no_change", "no_change"] and report.resumed_after_step is None
    assert trained.toolset.names == ["double"]
    assert sorted(p.name for p in run.glob("toolset-*.json")) == ["toolset-0.json", "toolset-final.json"]
    assert (run / "notes.txt").read_text() == "mine"  # only what a compile writes is cleared
    assert agent.calls == 0  # the baseline's evaluations came from the cache


def test_valset_picks_the_accepted_toolset_that_scores_best_on_it(cache):
    val = examples(5, kinds=("square",))  # only squares
    agent_model, _ = agent_lm()
    proposer_model, _ = proposer_lm(add_square_once)
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=2, display_progress=False, cache=cache, num_threads=2
    )
    with dspy.context(lm=agent_model):
        trained = optimizer.compile(
            tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])), trainset=examples(), valset=val
        )
    report = trained.toolforge_report
    assert report.val_scores == {0: 0.0, 1: 1.0} and report.selected_step == 1


def test_a_proposer_prompt_over_its_context_window_is_retried_with_fewer_trajectories(cache):
    from dspy.lm15 import ContextLengthError

    seen = []

    def respond(system: str, user: str) -> dict[str, Any]:
        shown = field(user, "trajectories")
        seen.append(len(shown))
        if len(shown) > 3000:
            raise ContextLengthError("the prompt is longer than the model's context window")
        return {
            "reasoning": "Squares fail.",
            "actions": add_square_once({"current_functions": field(user, "current_functions")}),
        }

    _, trained, report, _, _ = compile_with(
        None,
        tf.Toolset([DOUBLE]),
        trainset=examples(40),
        cache=cache,
        proposer=scripted_lm(respond, name="proposer"),
        trajectory_budget_chars=4000,
        max_epochs=2,
    )
    first, second = report.steps
    assert first.outcome == "accepted" and trained.toolset.names == ["double", "square"]
    assert first.note == (
        "the proposer's prompt exceeded its LM's context window; the trajectories it sees are cut to 2000 characters"
    )
    assert seen[0] > 3000 and 0 < seen[1] <= 3000  # the retry fitted
    assert second.usage.proposer.calls == 1 and seen[2] <= 3000 and second.note is None  # and so does the next step


def test_a_proposer_reply_that_does_not_parse_is_recorded_not_raised(cache):
    def respond(system, user):
        return {"reasoning": "hm", "actions": "this is not a list of actions"}

    _, trained, report, _, _ = compile_with(
        None, tf.Toolset([DOUBLE]), cache=cache, max_epochs=1, proposer=scripted_lm(respond, name="broken")
    )
    assert report.steps[0].outcome == "proposal_failed"
    assert "the proposer failed" in report.steps[0].note
    assert trained.toolset.names == ["double"]


def test_students_without_exactly_one_toolset_are_refused():
    class NoToolset(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predict = dspy.Predict("question -> answer")

    class TwoToolsets(dspy.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = tf.Toolset(), tf.Toolset()

    optimizer = tf.FunctionOptimizer(exact, cache=False, display_progress=False)
    with pytest.raises(tf.ToolforgeError, match="holds no Toolset to train; use tf.ToolAgent"):
        optimizer.compile(NoToolset(), trainset=examples(1))
    several = r"several toolsets \(a, b\); choose one by name: compile\(\.\.\., toolset='<name>'\)"
    with pytest.raises(tf.ToolforgeError, match=several):
        optimizer.compile(TwoToolsets(), trainset=examples(1))
    with pytest.raises(tf.ToolforgeError, match="no toolset named 'c' in the student; it has: a, b"):
        optimizer.compile(TwoToolsets(), trainset=examples(1), toolset="c")
    with pytest.raises(tf.ToolforgeError, match="trainset is empty"):
        optimizer.compile(TwoToolsets(), trainset=[])


def test_bad_settings_are_refused():
    with pytest.raises(tf.ToolforgeError, match="patience must be an integer >= 1"):
        tf.FunctionOptimizer(exact, patience=0, cache=False)
    with pytest.raises(tf.ToolforgeError, match="max_lm_calls must be a non-negative integer"):
        tf.FunctionOptimizer(exact, max_lm_calls=-1, cache=False)
    with pytest.raises(tf.ToolforgeError, match=r"FunctionOptimizer\(cache=3\): give an EvaluationCache, a directory"):
        tf.FunctionOptimizer(exact, cache=3)
    with pytest.raises(tf.ToolforgeError, match=r"FunctionOptimizer\(log_dir=123\): give a directory path"):
        tf.FunctionOptimizer(exact, log_dir=123, cache=False)


def test_a_cache_may_be_given_as_its_directory(tmp_path):
    optimizer = tf.FunctionOptimizer(exact, cache=tmp_path / "cache")
    assert isinstance(optimizer.cache, tf.EvaluationCache) and optimizer.cache.directory == tmp_path / "cache"
    assert tf.Evaluator(exact, cache=str(tmp_path / "other")).cache.directory == tmp_path / "other"


def test_a_proposer_lm_that_is_not_set_up_stops_the_compile_and_resume_keeps_the_work(cache, tmp_path):
    from dspy.utils.exceptions import LMNotConfiguredError

    setup = {"key": None}

    def policy(inputs):
        if setup["key"] is None:
            raise LMNotConfiguredError(
                "no API key found for provider 'openai'.\n  Set OPENAI_API_KEY", model="openai/x"
            )
        return add_square_once(inputs)

    proposer = proposer_lm(policy)
    agent = agent_lm()
    run = tmp_path / "run"
    with pytest.raises(
        tf.ToolforgeError,
        match=r"the proposer LM cannot be used: LMNotConfiguredError: \[openai/x\] no API key found for provider "
        r"'openai'\. Set OPENAI_API_KEY; fix its set-up and compile again \(it resumes after step 0, and its "
        r"evaluations come from the cache\)",
    ):
        compile_with(policy, tf.Toolset([DOUBLE]), cache=cache, agent=agent, proposer=proposer, log_dir=run)
    assert proposer[1].calls == 0  # not tried three times: no retry would fare better
    baseline_calls = agent[1].calls

    setup["key"] = "set"
    _, trained, report, _, _ = compile_with(
        policy, tf.Toolset([DOUBLE]), cache=cache, agent=agent, proposer=proposer, log_dir=run
    )
    assert trained.toolset.names == ["double", "square"]
    assert report.resumed_after_step == 0
    assert report.steps[0].cache_hits == 10 + 2  # the baseline's records, not run again (and the 2 run first)
    assert agent[1].calls - baseline_calls == 10 * 3  # only the candidate's evaluation (a new interface) ran


def test_training_examples_that_are_not_examples_are_refused_before_anything_runs():
    proposer_model, proposer = proposer_lm(lambda inputs: [])
    optimizer = tf.FunctionOptimizer(exact, proposer_lm=proposer_model, cache=False, display_progress=False)
    agent = tf.ToolAgent("question -> answer: float")
    with pytest.raises(tf.ToolforgeError, match=r"trainset item 1 is a dict, not a dspy.Example; build it as"):
        optimizer.compile(agent, trainset=[*examples(1), {"question": "double 2", "answer": 4.0}])
    unmarked = dspy.Example(question="double 2", answer=4.0)
    with pytest.raises(tf.ToolforgeError, match=r"valset item 0 has no inputs marked; build it as .*with_inputs"):
        optimizer.compile(agent, trainset=examples(2), valset=[unmarked])
    with pytest.raises(tf.ToolforgeError, match=r"trainset must be a list of dspy.Example, got NoneType"):
        optimizer.compile(agent, trainset=None)
    with pytest.raises(tf.ToolforgeError, match=r"valset must be a list of dspy.Example, got Example"):
        optimizer.compile(agent, trainset=examples(2), valset=unmarked)
    assert proposer.calls == 0


def test_proposer_lm_takes_what_the_command_line_takes():
    assert tf.FunctionOptimizer(exact, proposer_lm="openai/gpt-4o-mini", cache=False).proposer_lm.model == (
        "openai/gpt-4o-mini"
    )
    assert isinstance(tf.FunctionOptimizer(exact, proposer_lm="local", cache=False).proposer_lm, tf.LocalLM)
    with pytest.raises(tf.ToolforgeError, match="proposer_lm 'banana' is not a known LM"):
        tf.FunctionOptimizer(exact, proposer_lm="banana", cache=False)


class Flaky(dspy.Module):
    """Raises on the examples whose number is in `failing`; answers the rest with the toolset's `double`."""

    def __init__(self, failing):
        super().__init__()
        self.toolset = tf.Toolset([DOUBLE])
        self.failing = failing

    def forward(self, question):
        if int(question.split()[-1]) in self.failing:
            raise ConnectionError("the LM at http://localhost:1 refused the connection")
        return dspy.Prediction(answer=float(question.split()[-1]) * 2)


def test_a_program_that_raises_on_some_examples_is_reported_not_hidden(caplog, tmp_path):
    proposer_model, _ = proposer_lm(lambda inputs: [])
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=1, cache=False, display_progress=False, log_dir=tmp_path
    )
    with caplog.at_level("WARNING", logger="toolforge"):
        report = optimizer.compile(Flaky(failing={1, 2}), trainset=examples(4)).toolforge_report
    assert report.initial_errors == 2
    assert report.initial_error == "ConnectionError: the LM at http://localhost:1 refused the connection"
    assert "2 of 4 training examples raised with the initial toolset, e.g.: ConnectionError" in caplog.text
    assert "step 1: 2 of 4 examples raised, e.g.: ConnectionError: the LM at http" in caplog.text  # tried again
    assert caplog.text.count("examples raised") == 2  # once for the baseline, once for step 1: not twice each
    markdown = write_report(tmp_path)[1].read_text()
    assert "**2 training example(s) raised with the initial toolset**, e.g.: `ConnectionError: the LM" in markdown


class PassingFault(Flaky):
    """Raises on example 3 the first time only, as a program behind an LM with a passing outage does."""

    raised: ClassVar[list[str]] = []

    def forward(self, question):
        if question.endswith(" 3") and not self.raised:
            self.raised.append(question)
            raise ConnectionError("the LM is briefly unreachable")
        return super().forward(question)


def test_a_candidate_is_compared_with_what_the_best_toolset_scores_now_not_before_a_passing_fault(cache):
    triple = unary("triple", "x * 3")  # never called: the candidate scores what the best toolset does
    proposer_model, _ = proposer_lm(lambda inputs: [action("add_function", triple)])
    optimizer = tf.FunctionOptimizer(
        exact,
        proposer_lm=proposer_model,
        max_epochs=1,
        accept_ties=False,
        prune_unused=False,  # the program answers without calling its functions
        cache=cache,
        display_progress=False,
    )
    PassingFault.raised.clear()
    report = optimizer.compile(PassingFault(failing=set()), trainset=examples(4)).toolforge_report
    assert PassingFault.raised == ["double 3"] and report.initial_score == 0.75 and report.initial_errors == 1
    step = report.steps[0]
    assert (step.score_before, step.score_after, step.outcome, step.improved) == (1.0, 1.0, "rolled_back", False)
    assert report.best_score == 1.0 and report.final_functions == ["double"]


def test_a_program_that_raises_on_every_example_stops_the_compile_before_any_proposal(tmp_path):
    proposer_model, proposer = proposer_lm(lambda inputs: [])
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=3, cache=False, display_progress=False, log_dir=tmp_path
    )
    with pytest.raises(
        tf.ToolforgeError,
        match=r"every one of the 4 training examples raised with the initial toolset, e\.g\.: ConnectionError: the "
        r"LM at http://localhost:1 refused the connection; nothing can be learned from that: make the "
        r"program, its LM and the metric work on one example",
    ):
        optimizer.compile(Flaky(failing={1, 2, 3, 4}), trainset=examples(4))
    assert proposer.calls == 0
    assert not (tmp_path / "checkpoint.json").exists()


def test_pruning_needs_a_run_that_got_far_enough_to_call_something(caplog):
    class BrokenBySquare(dspy.Module):
        """Raises on every example once its toolset holds `square`; before that, on two, and answers the rest
        wrongly (a score of 0 either way: adding `square` is a tie, accepted here unweighed)."""

        def __init__(self):
            super().__init__()
            self.toolset = tf.Toolset([DOUBLE])

        def forward(self, question):
            if "square" in self.toolset or int(question.split()[-1]) <= 2:
                raise ConnectionError("the LM at http://localhost:1 refused the connection")
            return dspy.Prediction(answer=-1.0)

    proposer_model, _ = proposer_lm(add_square_once)
    optimizer = tf.FunctionOptimizer(
        exact, proposer_lm=proposer_model, max_epochs=1, cache=False, display_progress=False, rollback=False
    )
    with caplog.at_level("WARNING", logger="toolforge"):
        report = optimizer.compile(BrokenBySquare(), trainset=examples(4)).toolforge_report
    assert (report.steps[0].outcome, report.best_score) == ("accepted", 0.0)
    assert (report.pruned, report.final_functions) == ([], ["double", "square"])  # no run shows either unused
    assert "not pruning: every training run raised" in caplog.text


def test_a_refactor_that_keeps_every_outcome_costs_no_agent_lm_call(cache, tmp_path):
    refactor = unary("double", "(lambda y: y + y)(x)", DOUBLE.description)

    def policy(inputs):
        return [] if "y + y" in inputs["current_functions"] else [action("revise_function", refactor)]

    toolset = tf.Toolset([DOUBLE, SQUARE])
    _, _, report, agent, _ = compile_with(policy, toolset, cache=cache, max_epochs=1, log_dir=tmp_path / "run")
    step = report.steps[0]
    assert (step.outcome, step.score_after) == ("accepted", 1.0)
    assert (step.usage.agent.calls, step.cache_misses, step.cache_revalidated) == (0, 0, 8)  # the 8 doubles
    assert agent.calls == 10 * 3  # the baseline only
    markdown = write_report(tmp_path / "run")[1].read_text()
    assert "| 20/20 (8 held for revised code) |" in markdown
