"""Checking a proposal (`toolforge.validator`) directly: hand-built actions, a real Sandbox, no LM."""

from __future__ import annotations

import logging

import pytest

import toolforge as tf
from tests.evaluation_fixtures import DOUBLE, SQUARE, X_SCHEMA, unary
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


def test_a_copy_of_a_function_under_another_name_is_rejected_before_any_evaluation(sandbox):
    copy = tf.ForgedFunction(
        "twice",
        "Twice x: a better description does not make it another function.",
        DOUBLE.parameters,
        'def twice(x):\n    """Double it."""\n    return x * 2\n',
    )
    check = check_proposal(proposed("add_function", copy), START, sandbox=sandbox)
    assert check.reason.startswith("'twice' has the code of 'double' under another name")
    assert "revise 'double'" in check.reason and check.toolset is START


def test_a_revision_that_turns_a_function_into_a_copy_of_another_is_rejected(sandbox):
    start = tf.Toolset([DOUBLE, SQUARE])
    check = check_proposal(proposed("revise_function", unary("square", "x * 2")), start, sandbox=sandbox)
    assert check.reason.startswith("'square' has the code of 'double' under another name")


@pytest.mark.parametrize(
    "code",
    [
        "def twice(x):\n    return 2 * x\n",  # other code with the same results is not a copy by its text
        "def twice(x):\n    return double(x)\n",  # calls another name: not the same tree
        "def twice(y):\n    return y * 2\n",  # another parameter name: the agent calls it differently
    ],
)
def test_code_that_differs_in_its_tree_is_not_a_copy(sandbox, code):
    name = "twice"
    parameter = "y" if "(y)" in code else "x"
    schema = {"type": "object", "properties": {parameter: {"type": "number"}}, "required": [parameter]}
    function = tf.ForgedFunction(name, "Return twice the number.", schema, code)
    assert function.code_shape != DOUBLE.code_shape
    assert not (check_proposal(ProposedAction.of("add_function", function, {parameter: 3}), START, sandbox=sandbox)
                .reason or "").startswith("'twice' has the code of")  # fmt: skip


def test_a_recursive_function_and_its_renamed_copy_have_one_shape():
    fact = tf.ForgedFunction("fact", "n!", X_SCHEMA, "def fact(x):\n    return 1 if x <= 1 else x * fact(x - 1)\n")
    again = tf.ForgedFunction(
        "factorial", "The factorial.", X_SCHEMA, "def factorial(x):\n    return 1 if x <= 1 else x * factorial(x - 1)\n"
    )
    assert fact.code_shape == again.code_shape


def test_code_too_deep_to_walk_is_never_a_copy_and_never_raises(sandbox):
    branches = "".join(f"    elif x == {i}:\n        return {i * 7}\n" for i in range(1, 400))
    code = f"def deep(x):\n    if x == 0:\n        return 0\n{branches}    return -1\n"
    deep = tf.ForgedFunction("deep", "A long chain of cases.", X_SCHEMA, code)
    assert deep.code_shape.startswith("unshaped:")
    check = check_proposal(proposed("add_function", deep), START, sandbox=sandbox)
    assert check.reason is None or not check.reason.startswith("'deep' has the code of")


def test_a_helper_named_like_the_placeholder_does_not_make_a_copy():
    helper = "def _(x):\n    return x + 1\n\ndef foo(x):\n    return _(x)\n"
    recursive = "def _(x):\n    return x + 1\n\ndef bar(x):\n    return bar(x)\n"
    foo = tf.ForgedFunction("foo", "Add one.", X_SCHEMA, helper)
    bar = tf.ForgedFunction("bar", "Recurse.", X_SCHEMA, recursive)
    assert foo.code_shape != bar.code_shape


def test_a_new_description_of_a_function_the_toolset_already_holds_twice_is_not_a_copy(sandbox):
    twin = tf.ForgedFunction("twice", "Twice x.", DOUBLE.parameters, "def twice(x):\n    return x * 2\n")
    start = tf.Toolset([DOUBLE, twin])
    redescribed = tf.ForgedFunction("twice", "Two times the number x.", DOUBLE.parameters, twin.code)
    check = check_proposal(proposed("revise_function", redescribed), start, sandbox=sandbox)
    assert check.reason is None and check.toolset["twice"].description == "Two times the number x."
