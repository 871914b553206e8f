"""ToolAgent and as_tools: the LM sees the current toolset's interfaces (never code) and calls run sandboxed."""

from __future__ import annotations

import asyncio
import gc
import pickle
import re
import threading

import dspy
import pytest
from dspy.utils import DummyLM
from pydantic import TypeAdapter, ValidationError

import toolforge as tf
from tests.conftest import make_function

COMPOUND_CODE = "def compound(principal, rate, years):\n    return round(principal * (1 + rate) ** years, 2)\n"
COMPOUND = tf.ForgedFunction(
    "compound",
    "Amount after compounding yearly at a rate given as a fraction.",
    {
        "type": "object",
        "properties": {"principal": {"type": "number"}, "rate": {"type": "number"}, "years": {"type": "integer"}},
        "required": ["principal", "rate", "years"],
    },
    COMPOUND_CODE,
)
QUESTION = "What does 100 grow to at 10% for 2 years?"


def script(*steps, answer="121.0"):
    return DummyLM(
        [
            *[
                {"next_thought": f"step {i}", "next_tool_call": {"name": n, "args": a}}
                for i, (n, a) in enumerate(steps)
            ],
            {"reasoning": "from the trajectory", "answer": answer},
        ]
    )


def system_prompt(lm, index=0):
    return lm.history[index]["messages"][0]["content"]


def tool_lines(prompt):
    """The names of the tools the prompt lists, in order (one line each: `name(args): description`)."""
    return re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\([^\n]*\): ", prompt.split("Tools (", 1)[1], re.M)


def test_agent_calls_a_forged_function_and_uses_its_result(sandbox):
    lm = script(("compound", {"principal": 100, "rate": 0.1, "years": 2}), ("finish", {}))
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    with dspy.context(lm=lm), tf.record_calls() as calls:
        prediction = agent(question=QUESTION)
    assert prediction.answer == 121.0
    assert prediction.trajectory["tool_name_0"] == "compound"
    assert prediction.trajectory["tool_args_0"] == {"principal": 100, "rate": 0.1, "years": 2}
    assert prediction.trajectory["observation_0"] == 121.0
    assert "121.0" in lm.history[1]["messages"][-1]["content"]  # the observation reached the next prompt
    assert [(c.name, c.code_hash, c.ok) for c in calls] == [("compound", COMPOUND.code_hash, True)]


def test_acall_runs_the_same_loop_without_blocking_the_event_loop(sandbox):
    async def lookup(key: str) -> str:
        """Look a key up (an async fixed tool)."""
        return f"value of {key}"

    threads = []

    def shout(text: str) -> str:
        """Upper-case a text (a sync fixed tool)."""
        threads.append(threading.get_ident())
        return text.upper()

    lm = script(
        ("compound", {"principal": 100, "rate": 0.1, "years": 2}),
        ("lookup", {"key": "rate"}),
        ("shout", {"text": "done"}),
        ("finish", {}),
    )
    agent = tf.ToolAgent(
        "question -> answer: float", toolset=tf.Toolset([COMPOUND]), tools=[lookup, shout], sandbox=sandbox
    )

    async def run():
        threads.append(threading.get_ident())  # the event loop's thread
        with dspy.context(lm=lm), tf.record_calls() as calls:
            prediction = await agent.acall(question=QUESTION)
        return prediction, calls

    prediction, calls = asyncio.run(run())
    assert prediction.answer == 121.0
    assert [prediction.trajectory[f"observation_{i}"] for i in range(4)] == [
        121.0,
        "value of rate",
        "DONE",
        "Completed.",
    ]
    assert [(c.name, c.ok) for c in calls] == [("compound", True)]  # recorded from the worker thread too
    loop_thread, tool_thread = threads
    assert tool_thread != loop_thread  # a sync tool never blocks the event loop


def test_a_huge_result_is_cut_before_the_lm_sees_it(sandbox):
    huge = make_function("huge", code="def huge(a, b):\n    return 'x' * 100_000\n")
    lm = script(("huge", {"a": 1, "b": 2}), ("finish", {}))
    agent = tf.ToolAgent(
        "question -> answer: float", toolset=tf.Toolset([huge]), sandbox=sandbox, max_observation_chars=500
    )
    with dspy.context(lm=lm):
        prediction = agent(question=QUESTION)
    observation = prediction.trajectory["observation_0"]
    assert observation.startswith("x" * 420) and len(observation) < 600
    assert observation.endswith("(cut: the result has 100000 characters; the first 420 are shown)")
    assert "x" * 1000 not in lm.history[1]["messages"][-1]["content"]
    small = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    with dspy.context(lm=script(("compound", {"principal": 100, "rate": 0.1, "years": 2}), ("finish", {}))):
        assert small(question=QUESTION).trajectory["observation_0"] == 121.0  # a short result stays a value
    with pytest.raises(tf.ToolforgeError, match="max_observation_chars=10\\): give an integer >= 100"):
        tf.ToolAgent("question -> answer", max_observation_chars=10)


def test_prompt_shows_interface_but_never_code(sandbox):
    lm = script(("finish", {}))
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    with dspy.context(lm=lm):
        agent(question=QUESTION)
    prompt = system_prompt(lm)
    assert "\n        compound(principal: number, rate: number, years: integer): Amount after compounding" in prompt
    assert "round(principal" not in prompt


def test_assigning_a_new_toolset_changes_the_very_next_prompt(sandbox):
    agent = tf.ToolAgent("question -> answer: float", tools=[tf.python_tool(sandbox)], sandbox=sandbox)
    first = script(("finish", {}))
    with dspy.context(lm=first):
        agent(question=QUESTION)
    assert "compound" not in system_prompt(first)
    assert tool_lines(system_prompt(first)) == ["python", "finish"]
    assert "python(code: string (Python source code to run)): Run a Python code snippet" in system_prompt(first)

    agent.toolset = tf.Toolset([COMPOUND])
    second = script(("compound", {"principal": 100, "rate": 0.1, "years": 2}), ("finish", {}))
    with dspy.context(lm=second):
        prediction = agent(question=QUESTION)
    assert tool_lines(system_prompt(second)) == ["python", "compound", "finish"]
    assert prediction.trajectory["observation_0"] == 121.0


def test_new_instructions_reach_the_very_next_prompt_every_time(sandbox):
    """As a prompt optimizer (MIPROv2, GEPA) sets them: a new signature object each time, the old one freed, so
    that a new one may get the address of an old one (a cache keyed on `id()` alone would then show stale text)."""
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    base = agent.react.signature
    for i in range(40):
        agent.react.signature = base.with_instructions(f"Instructions, version {i}.")
        gc.collect()
        lm = script(("finish", {}))
        with dspy.context(lm=lm):
            agent(question=QUESTION)
        prompt = system_prompt(lm)
        assert f"Instructions, version {i}." in prompt
        assert tool_lines(prompt) == ["compound", "finish"]


def test_a_failing_function_becomes_an_observation(sandbox):
    broken = make_function("div", "def div(a, b):\n    return a / b\n", description="Divide a by b.")
    lm = script(("div", {"a": 1, "b": 0}), ("div", {"a": 1}), ("finish", {}))
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([broken]), sandbox=sandbox)
    with dspy.context(lm=lm), tf.record_calls() as calls:
        prediction = agent(question="1/0?")
    assert prediction.trajectory["observation_0"].startswith("Execution error in div: div failed: ZeroDivisionError")
    assert "'b' is a required property" in prediction.trajectory["observation_1"]
    assert [c.ok for c in calls] == [False, False]


def test_python_tool_runs_code_in_the_sandbox(sandbox):
    lm = script(("python", {"code": "print(17 * 23)"}), ("finish", {}), answer="391")
    agent = tf.ToolAgent("question -> answer: int", tools=[tf.python_tool(sandbox)], sandbox=sandbox)
    with dspy.context(lm=lm):
        prediction = agent(question="17 * 23?")
    assert prediction.trajectory["observation_0"] == "391\n"
    assert prediction.answer == 391


def test_python_tool_reports_errors_and_final_expressions(sandbox):
    tool = tf.python_tool(sandbox)
    assert tool(code="x = 2\nx ** 10") == "1024"
    assert tool(code="x = 1") == "(the code printed nothing; print the result you need)"
    with pytest.raises(tf.FunctionCallError, match="NameError: name 'y' is not defined"):
        tool(code="print('before')\ny")


def test_max_iters_bounds_the_tool_calls(sandbox):
    lm = script(*[("compound", {"principal": 1, "rate": 0, "years": y}) for y in (1, 2)])  # then the extract step
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), max_iters=2, sandbox=sandbox)
    with dspy.context(lm=lm):
        prediction = agent(question=QUESTION)
    assert "tool_name_1" in prediction.trajectory and "tool_name_2" not in prediction.trajectory


def test_repeating_the_last_call_ends_the_trajectory(sandbox):
    same = ("compound", {"principal": 100, "rate": 0.1, "years": 2})
    lm = script(same, same)
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    with dspy.context(lm=lm):
        prediction = agent(question=QUESTION)
    assert "tool_name_0" in prediction.trajectory and "tool_name_1" not in prediction.trajectory
    assert prediction.answer == 121.0


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_step_reply_that_does_not_parse_ends_the_trajectory_and_the_agent_answers(sandbox, asynchronous):
    """As a small LM's reply cut at its token limit: the run ends with what it has, scored, not raised."""
    good = {
        "next_thought": "step 0",
        "next_tool_call": {"name": "compound", "args": {"principal": 100, "rate": 0.1, "years": 2}},
    }
    bad = {"next_thought": "step 1", "next_tool_call": {"name": "no_such_tool", "args": {}}}
    lm = DummyLM([good, bad, bad, {"answer": "121.0"}])  # the second bad reply: the JSON adapter's retry
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    with dspy.context(lm=lm):
        prediction = asyncio.run(agent.acall(question=QUESTION)) if asynchronous else agent(question=QUESTION)
    assert prediction.answer == 121.0
    assert prediction.trajectory["observation_0"] == 121.0 and "tool_name_1" not in prediction.trajectory


def test_the_step_schema_ties_each_tool_to_its_own_arguments(sandbox):
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), tools=[tf.python_tool(sandbox)])
    _, signature = agent._rendered()
    schema = TypeAdapter(signature.output_fields["next_tool_call"].annotation).json_schema()
    calls = {d["properties"]["name"]["const"]: d for d in schema["anyOf"]}
    assert set(calls) == {"python", "compound", "finish"}
    args = calls["compound"]["properties"]["args"]  # inlined: one schema per tool, no chain of references
    assert {k: v["type"] for k, v in args["properties"].items()} == {
        "principal": "number",
        "rate": "number",
        "years": "integer",
    }
    call_type = TypeAdapter(signature.output_fields["next_tool_call"].annotation)
    with pytest.raises(ValidationError):
        call_type.validate_python({"name": "compound", "args": {"years": "many"}})
    with pytest.raises(ValidationError):
        call_type.validate_python({"name": "nonexistent", "args": {}})


def test_structured_output_schema_requires_every_argument_of_the_chosen_tool(sandbox):
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format

    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]))
    _, signature = agent._rendered()
    schema = _get_structured_outputs_response_format(signature).model_json_schema()
    (compound,) = schema["properties"]["next_tool_call"]["anyOf"][:1]
    assert compound["required"] == ["name", "args"] and compound["additionalProperties"] is False
    compound_args = compound["properties"]["args"]
    assert compound_args["required"] == ["principal", "rate", "years"]
    assert compound_args["additionalProperties"] is False
    # an edit of one request's schema stays in it: each use gets its own copy of the text made once
    schema["properties"]["next_tool_call"]["anyOf"][0]["properties"]["args"]["required"].pop()
    again = _get_structured_outputs_response_format(signature).model_json_schema()
    assert again["properties"]["next_tool_call"]["anyOf"][0]["properties"]["args"]["required"] == [
        "principal",
        "rate",
        "years",
    ]


PICK = tf.ForgedFunction(
    "pick",
    "The sum of the prices of the named items, plus a fee.",
    {
        "type": "object",
        "properties": {
            "prices": {"type": "object", "additionalProperties": {"type": "number"}},
            "names": {"type": "array", "items": {"type": "string"}},
            "fee": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
        },
        "required": ["prices", "names", "fee"],
    },
    "def pick(prices, names, fee):\n    return sum(prices[n] for n in names) + fee['amount']\n",
)


def test_structured_outputs_can_write_a_mapping_argument_and_an_object_s_properties(sandbox):
    """Structured outputs close every object schema, so an open mapping (`dict[str, float]`) would admit only `{}`:
    it is written as a list of key/value entries; an object with declared properties lists them."""
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format

    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([PICK]))
    _, signature = agent._rendered()
    schema = _get_structured_outputs_response_format(signature).model_json_schema()
    args = schema["properties"]["next_tool_call"]["anyOf"][0]["properties"]
    prices, fee = args["args"]["properties"]["prices"], args["args"]["properties"]["fee"]
    assert prices["type"] == "array" and prices["items"]["required"] == ["key", "value"]
    assert prices["items"]["properties"]["value"]["type"] == "number"
    assert fee["type"] == "object" and fee["required"] == ["amount"]

    entries = [{"key": "pen", "value": 5.5}, {"key": "ink", "value": 2}]
    for written in (entries, {"pen": 5.5, "ink": 2}):  # entries, as the schema asks; a mapping, as an LM may write
        lm = DummyLM(
            [
                {
                    "next_thought": "add",
                    "next_tool_call": {
                        "name": "pick",
                        "args": {"prices": written, "names": ["pen", "ink"], "fee": {"amount": 1}},
                    },
                },
                {"next_thought": "done", "next_tool_call": {"name": "finish", "args": {}}},
                {"answer": "8.5"},
            ]
        )
        agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([PICK]), sandbox=sandbox)
        with dspy.context(lm=lm):
            prediction = agent(question="What do a pen and ink cost with the fee?")
        assert prediction.trajectory["tool_args_0"]["prices"] == {"pen": 5.5, "ink": 2.0}
        assert prediction.trajectory["observation_0"] == 8.5


def test_any_argument_name_or_object_key_parses(sandbox):
    """Keys a pydantic field could not be named by (leading underscore, BaseModel's own attributes, spaces)."""
    weird = tf.ForgedFunction(
        "weird",
        "Echo the arguments.",
        {
            "type": "object",
            "properties": {
                "_hidden": {"type": "string"},
                "field_0": {"type": "string"},  # the name a key that cannot be a field's name would get
                "model_config": {"type": "integer"},
                "schema": {
                    "type": "object",
                    "properties": {"rainy days": {"type": "number"}, "_x": {"type": "string"}},
                },
            },
            "required": ["_hidden", "field_0", "model_config", "schema"],
        },
        "def weird(_hidden, field_0, model_config, schema):\n    return [_hidden, model_config, schema, field_0]\n",
    )
    arguments = {"_hidden": "h", "field_0": "f", "model_config": 3, "schema": {"rainy days": 2.5, "_x": "x"}}
    lm = DummyLM(
        [
            {"next_thought": "call", "next_tool_call": {"name": "weird", "args": arguments}},
            {"next_thought": "done", "next_tool_call": {"name": "finish", "args": {}}},
            {"answer": "1"},
        ]
    )
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([weird]), sandbox=sandbox)
    with dspy.context(lm=lm):
        prediction = agent(question="q")
    assert prediction.trajectory["tool_args_0"] == arguments
    assert prediction.trajectory["observation_0"] == ["h", 3, {"rainy days": 2.5, "_x": "x"}, "f"]
    _, signature = agent._rendered()
    call = TypeAdapter(signature.output_fields["next_tool_call"].annotation).validate_python(
        {"name": "weird", "args": arguments}
    )
    assert pickle.loads(pickle.dumps(call)) == call  # DSPy's optimizers copy demos with pickle


def test_toolset_cannot_shadow_fixed_tools(sandbox):
    agent = tf.ToolAgent("question -> answer", tools=[tf.python_tool(sandbox)])
    python_fn = make_function("python", "def python(a, b):\n    return a\n")
    with pytest.raises(tf.ToolforgeError, match=r"toolset functions \['python'\] shadow fixed tools"):
        agent.toolset = tf.Toolset([python_fn])
    with pytest.raises(tf.ToolforgeError, match="ToolAgent.toolset must be a Toolset, got list"):
        agent.toolset = [COMPOUND]


def test_a_missing_input_is_refused_with_the_fix(sandbox):
    agent = tf.ToolAgent("table, question -> answer", sandbox=sandbox)
    lm = script(("finish", {}))
    with (
        dspy.context(lm=lm),
        pytest.raises(
            tf.ToolforgeError,
            match=r"ToolAgent: input 'table' is missing \(given: 'question', 'q'\); call it with table=\.\.\., "
            r"question=\.\.\., or, for dspy.Examples, mark those fields with .with_inputs",
        ),
    ):
        agent(question="What is the total?", q="x")
    assert lm.history == []  # refused before any LM request

    class WithHint(dspy.Signature):
        question: str = dspy.InputField()
        hint: str | None = dspy.InputField()
        answer: float = dspy.OutputField()

    optional = tf.ToolAgent(WithHint, sandbox=sandbox)
    with dspy.context(lm=script(("finish", {}), answer="2.0")):
        assert optional(question="1 + 1?").answer == 2.0  # an Optional input may be left out


def test_bad_agent_arguments_are_refused():
    with pytest.raises(tf.ToolforgeError, match="max_iters must be an integer >= 1"):
        tf.ToolAgent("question -> answer", max_iters=0)
    with pytest.raises(tf.ToolforgeError, match=r"fixed tool names \['finish'\] are repeated or reserved"):
        tf.ToolAgent("question -> answer", tools=[dspy.Tool(lambda: 1, name="finish")])
    with pytest.raises(tf.ToolforgeError, match=r"ToolAgent\(signature=123\): give a signature string"):
        tf.ToolAgent(123)
    with pytest.raises(tf.ToolforgeError, match="each tool is a function or a dspy.Tool; not so item 1: int 7"):
        tf.ToolAgent("question -> answer", tools=[len, 7])
    with pytest.raises(tf.ToolforgeError, match=r"give a list of tools, e.g. tools=\[python_tool\(\)\]"):
        tf.ToolAgent("question -> answer", tools=tf.python_tool())


def test_agent_toolset_is_a_parameter_and_round_trips_through_program_save(sandbox, tmp_path):
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    assert dict(agent.named_parameters())["toolset"] is agent.toolset
    path = tmp_path / "agent.json"
    agent.save(path)
    fresh = tf.ToolAgent("question -> answer: float", sandbox=sandbox)
    fresh.load(path)
    assert fresh.toolset == agent.toolset and fresh.toolset["compound"].code == COMPOUND_CODE
    lm = script(("compound", {"principal": 100, "rate": 0.1, "years": 2}), ("finish", {}))
    with dspy.context(lm=lm):
        assert fresh(question=QUESTION).trajectory["observation_0"] == 121.0


def test_deepcopy_shares_the_sandbox_and_copies_the_toolset(sandbox):
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    copy = agent.deepcopy()
    assert copy.sandbox is sandbox and copy.toolset == agent.toolset and copy.toolset is not agent.toolset


def test_as_tools_works_in_dspy_react(sandbox):
    tools = tf.Toolset([COMPOUND]).as_tools(sandbox)
    lm = DummyLM(
        [
            {
                "next_thought": "t",
                "next_tool_name": "compound",
                "next_tool_args": {"principal": 100, "rate": 0.1, "years": 2},
            },
            {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "r", "answer": "121.0"},
        ]
    )
    react = dspy.ReAct("question -> answer: float", tools=tools)
    with dspy.context(lm=lm), tf.record_calls() as calls:
        prediction = react(question=QUESTION)
    assert prediction.trajectory["observation_0"] == 121.0
    assert [c.name for c in calls] == ["compound"]


def test_dspy_optimizers_bootstrap_demos_for_a_tool_agent(sandbox, tmp_path):
    """Composition the other way: a DSPy optimizer (BootstrapFewShot hashes and copies demos with pickle) compiles
    a ToolAgent, whose tool-call values are instances of models made at run time."""
    from tests.scripted_lm import scripted_lm, tool_agent_script

    lm, engine = scripted_lm(tool_agent_script(lambda q: ("compound", {"principal": 100, "rate": 0.1, "years": 2})))
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    train = [dspy.Example(question=f"{QUESTION} ({i})", answer=121.0).with_inputs("question") for i in range(3)]
    optimizer = dspy.BootstrapFewShot(
        metric=lambda example, prediction, trace=None: float(prediction.answer) == example.answer,
        max_bootstrapped_demos=2,
        max_labeled_demos=0,
    )
    with dspy.context(lm=lm):
        compiled = optimizer.compile(agent, trainset=train)
        assert [len(predictor.demos) for _, predictor in compiled.named_predictors()] == [2, 2]
        with dspy.context(trace=[]):
            assert compiled(question=QUESTION).answer == 121.0
            call = dspy.settings.trace[0][2].next_tool_call  # the first step's call: a model made at run time
        assert (call.name, call.args.principal) == ("compound", 100)
        assert pickle.loads(pickle.dumps(call)) == call
    demo_turns = "\n".join(m["content"] for m in lm.history[-2]["messages"][1:-1])
    assert "Use compound." in demo_turns and '{"name": "finish", "args": {}}' in demo_turns

    compiled.save(str(tmp_path / "agent.json"))
    loaded = tf.ToolAgent("question -> answer: float", sandbox=sandbox)  # rebuilt untrained, then loaded
    loaded.load(str(tmp_path / "agent.json"))
    assert loaded.toolset.names == ["compound"]
    assert loaded.react.demos[1]["next_tool_call"] == {"name": "finish", "args": {}}
    with dspy.context(lm=lm):
        assert loaded(question=QUESTION).answer == 121.0
    assert engine.calls > 0
    # and through a DSPy optimizer again: its student (reset_copy) keeps the functions its demos call
    with dspy.context(lm=lm):
        again = optimizer.compile(loaded, trainset=train)
        assert again.toolset.names == ["compound"] and again(question=QUESTION).answer == 121.0


def test_record_calls_blocks_nest():
    tool = tf.Toolset([COMPOUND]).as_tools()[0]
    with tf.record_calls() as outer:
        tool(principal=1, rate=0, years=1)
        with tf.record_calls() as inner:
            tool(principal=2, rate=0, years=1)
    assert len(outer) == 2 and len(inner) == 1
