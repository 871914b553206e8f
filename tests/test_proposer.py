"""The proposer's inputs (rendered within a budget) and its closed output schema."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.adapters.json_adapter import _get_structured_outputs_response_format
from pydantic import ValidationError

import toolforge as tf
from tests.evaluation_fixtures import unary
from toolforge.proposer import ParameterSpec, ProposeActions, render_functions, render_trajectories, usage_notes


def record(i: int, score: float, observation: str = "ok") -> tf.ExampleRecord:
    return tf.ExampleRecord(
        example_id=f"id{i}",
        score=score,
        prediction={"answer": i},
        trajectory={
            "thought_0": "think",
            "tool_name_0": "double",
            "tool_args_0": {"x": i},
            "observation_0": observation,
        },
    )


def examples(n: int) -> list[dspy.Example]:
    return [dspy.Example(question=f"q{i}", answer=i).with_inputs("question") for i in range(n)]


def test_failures_come_first_and_the_budget_holds():
    records = [record(i, 1.0 if i % 2 else 0.0, observation="x" * 2000) for i in range(40)]
    text = render_trajectories(records, examples(40), budget_chars=6000, seed=1)
    assert len(text) <= 6000 + 200
    shown = text.split("--- score ")[1:]
    assert shown and all(part.startswith("0.00 (failure)") for part in shown)
    assert "40 runs, 20 not fully successful (mean score 0.500); showing" in text
    assert "..." in text  # long observations are truncated


def test_successes_are_shown_too_when_there_is_room():
    records = [record(0, 0.0), record(1, 1.0)]
    text = render_trajectories(records, examples(2), budget_chars=5000, seed=0)
    assert "(failure)" in text and "(success)" in text
    assert 'call: double({"x": 1}) -> ok' in text


def test_the_proposer_sees_how_the_runs_used_each_function():
    call = lambda name, ok: tf.FunctionCall(name=name, code_hash="h", ok=ok)  # noqa: E731
    records = [
        tf.ExampleRecord(example_id="a", score=1.0, calls=(call("double", True), call("double", False))),
        tf.ExampleRecord(example_id="b", score=0.0, calls=(call("double", True),)),
        tf.ExampleRecord(example_id="c", score=0.0),
    ]
    notes = usage_notes(records, ["double", "square"])
    assert notes == {
        "double": "usage: called in 2 of 3 training runs; 1 of its 3 calls failed",
        "square": "usage: called in 0 of 3 training runs",
    }
    text = render_functions(tf.Toolset([unary("double", "x * 2")]), notes)
    assert "### double\nReturn x * 2 for a number x.\nusage: called in 2 of 3 training runs;" in text


def test_functions_are_shown_with_their_full_code():
    text = render_functions(tf.Toolset([unary("double", "x * 2")]))
    assert "### double" in text and "def double(x):\n    return x * 2" in text
    assert "not deterministic" not in text
    noisy = render_functions(tf.Toolset([unary("jitter", "x", deterministic=False)]))
    assert "not deterministic: equal arguments gave different results\n" in noisy
    assert render_functions(tf.Toolset()) == "(none yet)"


def test_the_output_schema_is_closed_for_constrained_decoding():
    schema = _get_structured_outputs_response_format(dspy.Predict(ProposeActions).signature).model_json_schema()
    text = json.dumps(schema)
    assert '"additionalProperties": true' not in text
    action = schema["$defs"]["ProposedActionReply"]
    assert action["properties"]["parameters"]["type"] == "array"


def test_a_proposal_round_trips_a_function():
    function = unary("double", "x * 2")
    proposal = tf.ProposedAction.of("add_function", function, {"x": 3})
    action = proposal.to_action()
    assert isinstance(action, tf.AddFunction)
    assert action.to_function() == function
    assert proposal.arguments() == {"x": 3}
    assert tf.ProposedAction(action="remove_function", name="double").to_action() == tf.RemoveFunction("double")


def test_a_table_input_keeps_its_rows():
    table = "town | rainy days\nDent | 24\nBrill | 6"
    example = dspy.Example(table=table, question="What is the median?", answer=6).with_inputs("table", "question")
    text = render_trajectories([record(0, 0.0)], [example], budget_chars=5000, seed=0)
    assert "  table:\n    town | rainy days\n    Dent | 24\n    Brill | 6\n  question: What is the median?" in text

    long = dspy.Example(table="\n".join(f"row {i} | {i}" for i in range(200)), question="q").with_inputs("table")
    text = render_trajectories([record(0, 0.0)], [long], budget_chars=5000, seed=0)
    assert "    row 0 | 0\n" in text and "more lines)" in text and "row 199" not in text


def test_example_arguments_keep_their_json_types():
    proposal = tf.ProposedAction(
        action="add_function",
        name="f",
        parameters=[
            {"name": "numbers", "type": "array"},
            {"name": "weights", "type": "object"},
            {"name": "label", "type": "string"},
            {"name": "quoted", "type": "string"},
            {"name": "count", "type": "integer"},
            {"name": "rows", "type": "array"},
        ],
        example_arguments=[
            {"name": "numbers", "value": [4, 6]},  # a JSON value, as a scripted proposer or old checkpoint gives it
            {"name": "weights", "value": '{"a": 1, "b": [2.5]}'},  # JSON text, as the schema asks
            {"name": "label", "value": "12"},  # a string argument's text stays text
            {"name": "quoted", "value": '"Ana"'},
            {"name": "count", "value": "3"},
            {"name": "rows", "value": "[[1, 2], [3, 4]]"},
        ],
    )
    assert proposal.arguments() == {
        "numbers": [4, 6],
        "weights": {"a": 1, "b": [2.5]},
        "label": "12",
        "quoted": "Ana",
        "count": 3,
        "rows": [[1, 2], [3, 4]],
    }
    assert isinstance(proposal.arguments()["numbers"][0], int)  # not 4.0: math.lcm(*numbers) must work
    # text that holds no JSON value is passed on as text, for the argument check to refuse with its reason
    loose = tf.ProposedAction(
        action="add_function",
        name="f",
        parameters=[{"name": "x", "type": "number"}],
        example_arguments=[{"name": "x", "value": "three"}],
    )
    assert loose.arguments() == {"x": "three"}


def test_python_type_names_and_action_verbs_are_read_as_meant():
    proposal = tf.ProposedAction(
        action="update",
        name="f",
        parameters=[
            {"name": "a", "type": "float"},
            {"name": "b", "type": "list[int]"},
            {"name": "c", "type": "Dict"},
            {"name": "d", "type": "str"},
            {"name": "e", "type": "int"},
            {"name": "f", "type": "bool"},
        ],
    )
    assert proposal.action == "revise_function"
    assert [p.type for p in proposal.parameters] == ["number", "array", "object", "string", "integer", "boolean"]
    assert tf.ProposedAction(action="Add", name="f").action == "add_function"
    assert tf.ProposedAction(action="delete_function", name="f").action == "remove_function"
    with pytest.raises(ValidationError, match="add_function"):
        tf.ProposedAction(action="rename", name="f")
    with pytest.raises(ValidationError, match="string"):
        ParameterSpec(name="a", type="complex")


def test_the_proposer_inputs_are_gathered_in_one_place():
    from toolforge.optimizer import FailedCandidate
    from toolforge.proposer import proposer_inputs

    triple = unary("triple", "x * 3")
    failure = FailedCandidate(
        step=2,
        score=0.5,
        best_score=0.8,
        actions=[tf.ProposedAction.of("add_function", triple).model_dump(mode="json")],
        fingerprint="f",
    )
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([triple]))
    inputs = proposer_inputs(
        program=agent,
        fixed_tools="",
        toolset=agent.toolset,
        notes={"triple": "usage: called in 1 of 2 training runs"},
        failures=[failure],
        trajectories="2 runs",
        rejected=[],
        max_actions=2,
    )
    assert set(inputs) == set(ProposeActions.input_fields)
    assert inputs["task"].startswith("question -> answer\n")
    assert (inputs["fixed_tools"], inputs["rejected"], inputs["max_actions"]) == ("(none)", "(none)", 2)
    assert "### triple\n" in inputs["current_functions"] and "usage: called in 1 of 2" in inputs["current_functions"]
    assert inputs["failure_list"].startswith("Step 2: scored 0.500 (the current functions score 0.800) after:\n")
    assert "- add_function triple\n  ```python\n  def triple(x):\n      return x * 3\n  ```" in inputs["failure_list"]
