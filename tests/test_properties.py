"""Properties that must hold for every input, checked with hypothesis: hashes, toolset algebra, and the values
that pass between the LM, the proposer and the sandbox."""

from __future__ import annotations

import json
from typing import Any

import dspy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolforge as tf
from tests.evaluation_fixtures import unary
from toolforge._hashing import content_hash
from toolforge.keys import example_id, jsonable
from toolforge.proposer import ExampleArgument, render_trajectories

# The same examples on every run (CI must not turn red by chance); explored with thousands more when written.
FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, allow_infinity=False)
) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
python_values = st.recursive(  # what a prediction or an example may hold besides JSON: NaN, infinities, tuples, sets
    json_scalars | st.floats() | st.frozensets(st.integers(), max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["double", "square", "cube", "half", "negate", "triple"])
expressions = st.sampled_from(["x * 2", "x * x", "x ** 3", "x / 2", "-x", "x * 3", "x + 1"])


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


@FAST
@given(json_values)
def test_content_hashes_ignore_key_order(value):
    assert content_hash(value) == content_hash(reordered(value))


@FAST
@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), json_values, min_size=1, max_size=4))
def test_example_ids_follow_content_not_identity_or_key_order(fields):
    keys = list(fields)
    first = dspy.Example(**fields).with_inputs(keys[0])
    second = dspy.Example(**reordered(fields)).with_inputs(keys[0])
    assert example_id(first) == example_id(second)
    changed = dspy.Example(**{**fields, keys[0]: ["changed", fields[keys[0]]]}).with_inputs(keys[0])
    assert example_id(changed) != example_id(first)


@FAST
@given(json_values)
def test_example_argument_values_survive_their_json_text(value):
    """What the smoke call gets is what the proposer meant, for every JSON value of a non-string argument."""
    json_type = {bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}.get(type(value))
    argument = ExampleArgument(name="a", value=value)
    assert isinstance(argument.value, str)
    if isinstance(value, str):  # plain text stays as it is, unless it is itself JSON (then it is read as JSON)
        try:
            json.loads(value)
        except ValueError:
            assert argument.decoded("string") == value
        return
    assert argument.decoded(json_type) == value


@FAST
@given(python_values)
def test_record_values_are_plain_json_and_stable(value):
    plain = jsonable(value)
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
    assert jsonable(plain) == plain
    content_hash(plain)  # and hashable, as keys need


@FAST
@given(st.lists(st.tuples(names, expressions), max_size=6), st.lists(st.tuples(names, expressions), max_size=6))
def test_diff_names_exactly_what_changed_and_merge_takes_theirs(ours, theirs):
    left = tf.Toolset([unary(n, e) for n, e in dict(ours).items()])
    right = tf.Toolset([unary(n, e) for n, e in dict(theirs).items()])
    diff = left.diff(right)
    assert set(diff.added) == set(right.names) - set(left.names)
    assert set(diff.removed) == set(left.names) - set(right.names)
    revised = {r.name for r in diff.revised}
    assert revised == {n for n in set(left.names) & set(right.names) if left[n].code != right[n].code}
    assert bool(diff) == (left.fingerprint != right.fingerprint or left.names != right.names)
    merged = left.merge(right, on_conflict="theirs")
    assert set(merged.names) == set(left.names) | set(right.names)
    assert all(merged[n] == right[n] for n in right.names)
    assert all(merged[n] == left[n] for n in left.names if n not in right)


@FAST
@given(st.lists(st.tuples(names, expressions), min_size=1, max_size=6), st.data())
def test_applying_actions_gives_the_toolset_they_describe(start, data):
    toolset = tf.Toolset([unary(n, e) for n, e in dict(start).items()])
    expected = {f.name: f for f in toolset}
    actions: list[Any] = []
    for _ in range(data.draw(st.integers(0, 4))):
        name, expression = data.draw(names), data.draw(expressions)
        if name in expected and data.draw(st.booleans()):
            actions.append(tf.RemoveFunction(name))
            del expected[name]
        elif name in expected:
            actions.append(tf.ReviseFunction.of(unary(name, expression)))
            expected[name] = unary(name, expression)
        else:
            actions.append(tf.AddFunction.of(unary(name, expression)))
            expected[name] = unary(name, expression)
    result = toolset.apply(actions)
    assert set(result.names) == set(expected)
    assert all(result[n].code == expected[n].code for n in expected)
    assert tf.Toolset.from_dict(result.to_dict()).fingerprint == result.fingerprint


IDENTITY = tf.ForgedFunction(
    "echo",
    "Return the value given.",
    {"type": "object", "properties": {"value": {}}, "required": ["value"]},
    "def echo(value):\n    return value\n",
)


@FAST
@given(value=json_values)
def test_every_json_value_crosses_the_sandbox_unchanged(sandbox, value):
    result = sandbox.call(IDENTITY, {"value": value})
    assert result.ok and not result.value_is_repr
    assert result.value == value


@FAST
@given(
    scores=st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=30),
    observation=st.text(max_size=3000),
    budget=st.integers(500, 8000),
)
def test_trajectories_fit_their_budget_and_failures_come_first(scores, observation, budget):
    records = [
        tf.ExampleRecord(
            example_id=str(i),
            score=score,
            trajectory={"thought_0": "t", "tool_name_0": "f", "tool_args_0": {"x": i}, "observation_0": observation},
        )
        for i, score in enumerate(scores)
    ]
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(len(scores))]
    text = render_trajectories(records, examples, budget_chars=budget, seed=0)
    header, *runs = text.split("\n\n--- score ")
    assert runs and len(text) - len(header) <= budget + 30 * len(runs)  # the budget, give or take separators
    shown = [float(run.split(" ", 1)[0]) for run in runs]
    assert shown == sorted(shown)  # lowest scores first
    assert f"showing {len(runs)}." in header


ARGUMENT_KINDS = {
    "text": ({"type": "string"}, st.text(max_size=20)),
    "count": ({"type": "integer"}, st.integers(-1000, 1000)),
    "amount": ({"type": "number"}, st.floats(-1e6, 1e6)),
    "flag": ({"type": "boolean"}, st.booleans()),
    "numbers": ({"type": "array", "items": {"type": "number"}}, st.lists(st.floats(-1e6, 1e6), max_size=4)),
    "prices": (
        {"type": "object", "additionalProperties": {"type": "number"}},
        st.dictionaries(st.text(max_size=6), st.floats(-1e6, 1e6), max_size=4),
    ),
    "point": (
        {"type": "object", "properties": {"x": {"type": "number"}, "label": {"type": "string"}}},
        st.fixed_dictionaries({"x": st.floats(-1e6, 1e6), "label": st.text(max_size=6)}),
    ),
}


@FAST
@given(st.lists(st.sampled_from(sorted(ARGUMENT_KINDS)), min_size=1, max_size=4, unique=True), st.data())
def test_a_tool_call_written_to_its_schema_reaches_the_function_as_written(kinds, data):
    """Whatever arguments fit a function's schema, the agent's call model (the schema the LM writes to) parses
    them back to the same values, a mapping written as key/value entries included."""
    from pydantic import TypeAdapter

    from toolforge.agent import ToolAgent

    parameters = {"type": "object", "properties": {k: ARGUMENT_KINDS[k][0] for k in kinds}, "required": kinds}
    function = tf.ForgedFunction("f", "A function.", parameters, f"def f({', '.join(kinds)}):\n    return 0\n")
    _, signature = ToolAgent("q -> a", toolset=tf.Toolset([function]))._rendered()
    call_type = TypeAdapter(signature.output_fields["next_tool_call"].annotation)
    arguments = {k: data.draw(ARGUMENT_KINDS[k][1]) for k in kinds}
    written = dict(arguments)
    if "prices" in written and data.draw(st.booleans()):  # as the structured-output schema asks for it
        written["prices"] = [{"key": key, "value": value} for key, value in written["prices"].items()]
    parsed = call_type.validate_python({"name": "f", "args": written}).args.model_dump(exclude_unset=True)
    assert parsed == arguments
    function.validate_arguments(parsed)


code_fragments = st.sampled_from(
    [
        "def f(x):\n    return x\n",
        "def f(x, y=1):\n    return x + y\n",
        "import os\n",
        "import nonexistent_package_xyz\n",
        "from . import x\n",
        "def g():\n    pass\n",
        "async def f(x):\n    return x\n",
        "class f:\n    pass\n",
        "f = lambda x: x\n",
        "def f(*args, **kwargs):\n    return 1\n",
        "def f(x, /, y):\n    return 1\n",
        "def f(x, *, y):\n    return 1\n",
        "return 1\n",
        "def f(x):\n  return (\n",
        "\x00",
        "if True:\n    def f(x):\n        return x\n",
        "@staticmethod\ndef f(x):\n    return x\n",
    ]
)
parameter_schemas = st.one_of(
    st.just({"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}),
    st.just({"type": "object", "properties": {"x": {}, "y": {"type": "integer"}}, "required": ["x"]}),
    st.just({"type": "object", "properties": {}, "required": []}),
    st.just({"type": "array"}),
    st.just({"type": "object", "properties": {"x": {"type": "bogus"}}, "required": ["x"]}),
    st.just({"type": "object", "properties": {"x": {"type": "number"}}, "required": ["z"]}),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
    json_values,
)


@FAST
@given(
    name=st.one_of(st.just("f"), st.text(max_size=8)),
    description=st.text(max_size=20),
    parameters=parameter_schemas,
    code=st.lists(code_fragments, min_size=0, max_size=3).map("".join) | st.text(max_size=40),
    packages=st.lists(st.sampled_from(["json", "numpy", "no_such_pkg", "", "os.path"]), max_size=2),
)
def test_a_function_is_valid_or_refused_with_a_function_error(name, description, parameters, code, packages):
    """Whatever an LM writes, construction either succeeds or raises FunctionError (a reason), nothing else."""
    try:
        function = tf.ForgedFunction(name, description, parameters, code, packages=packages)
    except tf.FunctionError as exc:
        assert str(exc)
        return
    assert function.name == name and function.code_hash and function.interface_hash


proposal_like = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["add_function", "revise", "remove_function", "rename", ""]) | st.integers(),
        "name": st.text(max_size=6) | st.none(),
        "description": st.text(max_size=10),
        "parameters": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=4)},
                optional={
                    "type": st.sampled_from(["string", "float", "list[int]", "complex"]),
                    "required": st.booleans(),
                },
            ),
            max_size=3,
        )
        | json_values,
        "code": st.text(max_size=30),
        "example_arguments": st.lists(
            st.fixed_dictionaries({"name": st.text(max_size=4), "value": json_values}), max_size=3
        )
        | json_values,
    },
)


@FAST
@given(st.one_of(proposal_like, json_values))
def test_any_reply_item_becomes_a_proposal_valid_or_malformed_never_an_exception(item):
    from pydantic import ValidationError

    from toolforge.proposer import ProposedActionReply

    proposal = ProposedActionReply.model_validate(item)
    assert isinstance(proposal.summary(), str)
    proposal.model_dump(mode="json")
    if proposal.malformed:
        return
    proposal.arguments()
    try:
        proposal.to_action()
    except ValidationError:
        pass


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "format": st.sampled_from(["toolforge.toolset", "other"]) | json_scalars,
                "version": st.integers(0, 3) | json_scalars,
                "functions": st.lists(st.dictionaries(st.sampled_from(["name", "code", "parameters"]), json_values))
                | json_values,
                "max_functions": st.integers(-1, 3) | json_scalars,
            },
        ),
    )
)
def test_any_saved_toolset_data_loads_or_is_refused_with_a_toolset_error(data):
    try:
        toolset = tf.Toolset.from_dict(data)
    except tf.ToolsetError as exc:
        assert str(exc)
        return
    assert tf.Toolset.from_dict(toolset.to_dict()).fingerprint == toolset.fingerprint
