"""Checking a proposal (`toolforge.validator`) directly: hand-built actions, a real Sandbox, no LM."""

from __future__ import annotations

import logging

import pytest

import toolforge as tf
from tests.evaluation_fixtures import DOUBLE, SQUARE, unary
from toolforge.proposer import ProposedAction, ProposedActionReply
from toolforge.validator import Check, check_proposal

START = tf.Toolset([DOUBLE])


def proposed(kind, function=None, name=None, **arguments) -> ProposedAction:
    if kind == "remove_function":
        return ProposedAction(action=kind, name=name)
    return ProposedAction.of(kind, function, arguments or {"x": 3})


def test_a_sound_add_is_accepted_with_the_function_applied(sandbox):
    check = check_proposal(proposed("add_function", SQUARE), START, sandbox=sandbox)
    assert isinstance(check, Check) and check.reason is None
    assert check.toolset.names == ["double", "square"] and check.toolset["square"].deterministic
    assert START.names == ["double"]  # the candidate itself is never changed


def test_a_removal_needs_no_smoke_call(sandbox):
    check = check_proposal(proposed("remove_function", name="double"), START, sandbox=sandbox)
    assert check == Check(None, tf.Toolset())


def test_a_revision_replaces_the_code(sandbox):
    faster = unary("double", "x + x")
    check = check_proposal(proposed("revise_function", faster), START, sandbox=sandbox)
    assert check.reason is None and check.toolset["double"].code == faster.code


@pytest.mark.parametrize(
    ("proposal", "reason"),
    [
        (proposed("add_function", DOUBLE), "function 'double' already exists; use ReviseFunction"),
        (proposed("revise_function", DOUBLE), "revising 'double' changes nothing: the description, parameters"),
        (proposed("remove_function", name="cube"), "cannot remove 'cube': no such function"),
        (proposed("add_function", unary("finish", "x")), "'finish' is the name of a fixed tool of the agent"),
        (proposed("add_function", SQUARE, y=1), "example_arguments do not fit"),
        (ProposedAction(action="add_function", name="square"), "function 'square': description is empty"),
    ],
)
def test_the_toolset_rules_and_the_arguments_reject(sandbox, proposal, reason):
    check = check_proposal(proposal, START, fixed={"finish"}, sandbox=sandbox)
    assert reason in check.reason and check.toolset is START


def test_a_malformed_reply_is_rejected_with_its_reason(sandbox):
    record = ProposedActionReply.model_validate({"action": "rename_function", "name": "double"})
    check = check_proposal(record, START, sandbox=sandbox)
    assert check.reason.startswith("the action is malformed: action: Input should be 'add_function'")
    assert check.toolset is START


def test_a_smoke_call_that_raises_rejects_the_action_with_its_error_and_output(sandbox):
    loud = tf.ForgedFunction(
        "square", SQUARE.description, SQUARE.parameters, "def square(x):\n    print('working')\n    return x / 0\n"
    )
    check = check_proposal(proposed("add_function", loud), START, sandbox=sandbox)
    assert check.reason.startswith('the smoke call square({"x": 3}) failed: ZeroDivisionError')
    assert check.reason.endswith("(it printed: working\n)") and check.toolset is START


def test_a_function_whose_two_smoke_calls_disagree_is_kept_but_marked_not_deterministic(sandbox, caplog):
    code = "import random\n\n\ndef jitter(x):\n    return x + random.random()\n"
    jitter = tf.ForgedFunction("jitter", "Return x plus noise.", DOUBLE.parameters, code)
    with caplog.at_level(logging.INFO, logger="toolforge.optimizer"):
        check = check_proposal(proposed("add_function", jitter), START, sandbox=sandbox, step=4)
    assert check.reason is None and check.toolset["jitter"].deterministic is False
    assert "step 4: add jitter: two smoke calls with the same arguments gave" in caplog.text
