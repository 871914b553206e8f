"""What a ToolAgent's LM reads about its tools (toolforge.prompt), built once, and tool retrieval (max_tools)."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils import DummyLM

import toolforge as tf
from tests.conftest import make_function
from tests.scripted_lm import listed_tools, scripted_lm, tool_agent_script
from tests.test_agent import COMPOUND, PICK, QUESTION, script, system_prompt
from toolforge import prompt, schema
from toolforge.retrieval import BM25Ranker, top_k


def unary(name: str, description: str) -> tf.ForgedFunction:
    parameters = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    return make_function(name, f"def {name}(x):\n    return x\n", description=description, parameters=parameters)


def test_the_prompt_shows_each_tool_once_on_one_line(sandbox):
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND, PICK]), sandbox=sandbox)
    for adapter in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        lm = script(("finish", {}))
        with dspy.context(lm=lm, adapter=adapter):
            try:
                agent(question=QUESTION)
            except Exception:  # DummyLM answers in the chat format; only the first (step) request matters here
                pass
        system = system_prompt(lm)
        assert listed_tools(system) == ["compound", "pick", "finish"]
        assert system.count("compound(") == 1 and system.count("The sum of the prices") == 1
        assert "pick(prices: dict[string, number], names: list[string], fee: {amount: number}): The sum" in system
        assert "`next_tool_call` (ToolCall)" in system and "anyOf" not in system


def test_argument_types_defaults_and_docs_are_written_compactly():
    parameters = {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["cm", "in"], "description": "the length unit"},
            "scale": {"type": "number", "default": 1.5},
            "tags": {"type": ["string", "null"]},
        },
        "required": ["unit"],
    }
    line = prompt.tool_line("measure", "Measure  a\nthing.", parameters["properties"], parameters["required"])
    assert line == (
        'measure(unit: "cm"|"in" (the length unit), scale?: number = 1.5, tags?: string|null): Measure a thing.'
    )


def test_the_structured_output_schema_still_ties_each_tool_to_its_arguments():
    """The prompt no longer carries it, but the request's schema (what llama.cpp constrains decoding to) does."""
    from dspy.adapters.json_adapter import _get_structured_outputs_response_format

    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), tools=[tf.python_tool()])
    _, signature = agent._rendered()
    calls = _get_structured_outputs_response_format(signature).model_json_schema()["properties"]["next_tool_call"]
    by_name = {call["properties"]["name"]["const"]: call["properties"]["args"] for call in calls["anyOf"]}
    assert sorted(by_name) == ["compound", "finish", "python"]
    assert by_name["compound"]["required"] == ["principal", "rate", "years"]
    assert by_name["python"]["properties"]["code"]["type"] == "string"


def test_one_rendering_per_toolset_version(sandbox, monkeypatch):
    built = []
    real = prompt.register_step_signature
    monkeypatch.setattr("toolforge.agent.register_step_signature", lambda s, *a: (built.append(s), real(s, *a)))
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    lm, _ = scripted_lm(tool_agent_script(lambda q: ("compound", {"principal": 100, "rate": 0.1, "years": 2})))
    with dspy.context(lm=lm):
        for i in range(3):
            agent(question=f"{QUESTION} ({i})")
        copy = agent.deepcopy()  # an agent copy (as an optimizer's candidate) renders for itself, once
        copy(question=QUESTION)
        assert len(built) == 2
        recoded = COMPOUND.model_copy(update={"code": COMPOUND.code.replace("round(", "1 * round(")})
        agent.toolset = tf.Toolset([recoded])  # a code-only revision: the same prompt
        agent(question=QUESTION)
        assert len(built) == 2
        agent.toolset = tf.Toolset([COMPOUND, PICK])  # a new interface: one more rendering
        agent(question=QUESTION)
        agent(question=QUESTION + "?")
    assert len(built) == 3


def test_the_system_message_is_rendered_once_per_step_signature(sandbox, monkeypatch):
    calls = []
    real = dspy.ChatAdapter.format_system_message
    monkeypatch.setattr(dspy.ChatAdapter, "format_system_message", lambda self, s: (calls.append(s), real(self, s))[1])
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    lm, _ = scripted_lm(tool_agent_script(lambda q: ("compound", {"principal": 100, "rate": 0.1, "years": 2})))
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        for i in range(4):
            agent(question=f"{QUESTION} ({i})")
    step_renders = [s for s in calls if "next_tool_call" in s.output_fields]
    assert len(step_renders) == 1  # 4 runs of 3 step requests each
    assert len(calls) - len(step_renders) == 1  # the extract step: 4 requests, one rendering


def test_new_extract_instructions_are_rendered_afresh(sandbox):
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]), sandbox=sandbox)
    lm, engine = scripted_lm(tool_agent_script(lambda q: ("compound", {"principal": 100, "rate": 0.1, "years": 2})))
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        agent(question=QUESTION)
        agent.extract.signature = agent.extract.signature.with_instructions("Tuned: answer with the number only.")
        agent(question=f"{QUESTION} (again)")
    systems = [system for system, _ in engine.requests if "`answer`" in system and "next_tool_call" not in system]
    assert (
        len(systems) == 2 and "Tuned: answer with the number only." not in systems[0] and "Tuned: answer" in systems[-1]
    )


def test_an_unchanged_function_keeps_its_tool_across_versions(sandbox):
    other = make_function("other", "def other(a, b):\n    return a - b\n")
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND, other]), sandbox=sandbox)
    before = agent.current_tools()
    revised = other.model_copy(update={"code": "def other(a, b):\n    return b - a\n"})
    agent.toolset = agent.toolset.apply(tf.ReviseFunction(**_revision(revised)))
    after = agent.current_tools()
    assert after["compound"] is before["compound"]  # not rebuilt
    assert after["other"] is not before["other"] and after["other"](a=1, b=3) == 2


def _revision(function: tf.ForgedFunction) -> dict:
    return {
        "name": function.name,
        "description": function.description,
        "parameters": function.parameters,
        "code": function.code,
    }


def test_call_models_and_types_are_shared_while_in_use():
    first = tf.ToolAgent("q -> a", toolset=tf.Toolset([COMPOUND]))._rendered()[1]
    second = tf.ToolAgent("q -> a", toolset=tf.Toolset([COMPOUND]))._rendered()[1]
    kind = first.output_fields["next_tool_call"].annotation
    assert kind is second.output_fields["next_tool_call"].annotation
    assert kind.__name__ == "ToolCall" and issubclass(kind, schema.ToolCallType)


def _with_x_described(function: tf.ForgedFunction, description: str) -> tf.ForgedFunction:
    parameters = {**function.parameters, "properties": {"x": {"type": "number", "description": description}}}
    return tf.ForgedFunction(function.name, function.description, parameters, function.code)


def test_an_interface_revision_makes_the_revised_tool_s_view_alone(monkeypatch):
    functions = [unary(f"f{i}", f"Function number {i}.") for i in range(30)]
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(functions))
    before = agent._views()[1]
    made = []
    real = prompt._make_view
    monkeypatch.setattr(prompt, "_make_view", lambda name, *rest: (made.append(name), real(name, *rest))[1])
    agent.toolset = tf.Toolset([_with_x_described(f, "revised") if f.name == "f7" else f for f in functions])
    after = agent._views()[1]
    assert made == ["f7"]
    assert [a is b for a, b in zip(after, before, strict=True)] == [name != "f7" for name in agent.toolset.names]


def test_a_revision_reaches_the_next_prompt_and_the_tool_call_schema(sandbox):
    functions = [unary(f"f{i}", f"Function number {i}.") for i in range(5)]
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(functions), sandbox=sandbox)
    lm, engine = scripted_lm(tool_agent_script(lambda q: None))
    with dspy.context(lm=lm):
        agent(question=QUESTION)
        agent.toolset = tf.Toolset([_with_x_described(f, "the revised x") if f.name == "f3" else f for f in functions])
        agent(question=QUESTION)
    systems = [system for system, _ in engine.requests if "next_tool_call" in system]
    assert "the revised x" not in systems[0] and "f3(x: number (the revised x)): Function number 3." in systems[-1]
    union = agent._rendered()[1].fields["next_tool_call"].annotation
    (revised,) = [
        call for call in json.loads(union.schema_text())["anyOf"] if call["properties"]["name"]["const"] == "f3"
    ]
    assert revised["properties"]["args"]["properties"]["x"]["description"] == "the revised x"


class ShoutedInstructions(dspy.ChatAdapter):
    """An adapter that writes instructions its own way (so a step's message cannot come from a template)."""

    def format_task_description(self, signature):
        return signature.instructions.upper()


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter(), dspy.JSONAdapter(), dspy.XMLAdapter(), ShoutedInstructions()])
def test_a_step_s_message_is_the_adapter_s_own_rendering(adapter):
    fixed = dspy.Tool(lambda text: text, name="echo", desc="  Say it\n\tback. ", args={"text": {"type": "string"}})
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND, PICK]), tools=[fixed])
    _, signature = agent._rendered()
    shown = prompt._shown_signature(agent.react.signature, signature.instructions)  # what DSPy would render
    assert prompt.step_adapter(adapter).format_system_message(signature) == adapter.format_system_message(shown)


def test_a_listing_line_that_breaks_is_rendered_whole(sandbox):
    """A line the adapter would split (here, an enum value with a Unicode line separator) is not templated."""
    parameters = {"type": "object", "properties": {"x": {"type": "string", "enum": ["a\u2028b"]}}, "required": ["x"]}
    odd = tf.ForgedFunction("odd", "Odd.", parameters, "def odd(x):\n    return x\n")
    agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([odd]), sandbox=sandbox)
    _, signature = agent._rendered()
    shown = prompt._shown_signature(agent.react.signature, signature.instructions)
    adapter = dspy.ChatAdapter()
    assert prompt.step_adapter(adapter).format_system_message(signature) == adapter.format_system_message(shown)


@pytest.mark.parametrize(
    "inputs", [{"question": "double 3", "trajectory": ""}, {"question": ["a", "b"], "trajectory": "t"}]
)
def test_a_step_s_user_message_is_chat_adapter_s(inputs):
    _, signature = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([COMPOUND]))._rendered()
    for adapter in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        expected = adapter.format_user_message_content(signature, inputs, main_request=True)
        assert prompt.step_adapter(adapter).format_user_message_content(signature, inputs, main_request=True) == (
            expected
        )


# ---------------------------------------------------------------------------------------------- retrieval
TOOLS = [
    unary("digit_sum", "The sum of the decimal digits of a whole number."),
    unary("square", "The square of a number."),
    unary("celsius", "A temperature in Fahrenheit converted to Celsius."),
    unary("vowels", "How many vowels a word has."),
    unary("reverse_digits", "A whole number with its decimal digits in reverse order."),
]


class Shortest:
    """A ranker that prefers the shortest document, whatever the query."""

    def index(self, documents):
        return ByLength(documents)


class ByLength:
    def __init__(self, documents):
        self.documents = documents

    def scores(self, query):
        return [-len(d) for d in self.documents]


def test_max_tools_shows_the_most_relevant_functions_in_toolset_order(sandbox):
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS), max_tools=2, sandbox=sandbox)
    question = "What is the sum of the digits of 4821?"
    assert agent.tool_selection({"question": question}) == ["digit_sum", "reverse_digits"]
    # one relevant function; the other seat goes to the first name among those scoring 0
    assert agent.tool_selection({"question": "Convert 100 Fahrenheit to Celsius"}) == ["digit_sum", "celsius"]
    lm = script(("finish", {}))
    with dspy.context(lm=lm):
        agent(question=question)
    assert listed_tools(system_prompt(lm)) == ["digit_sum", "reverse_digits", "finish"]


def test_retrieval_is_deterministic_and_breaks_ties_by_name(sandbox):
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS), max_tools=3, sandbox=sandbox)
    question = {"question": "nothing in common with any tool"}
    # every score is 0: the first three by name, shown in toolset order
    assert agent.tool_selection(question) == ["digit_sum", "celsius", "reverse_digits"]
    again = tf.ToolAgent("question -> answer", toolset=tf.Toolset(list(reversed(TOOLS))), max_tools=3)
    assert sorted(again.tool_selection(question)) == sorted(agent.tool_selection(question))
    assert top_k(["b", "a", "c"], [1.0, 1.0, float("nan")], 2) == ["a", "b"]


def test_agent_copies_with_the_same_toolset_share_one_bm25_index(sandbox):
    """An optimizer's candidates are agent copies: the index of a toolset is built once, and equal selections follow."""
    ranker = BM25Ranker()
    documents = ["digit sum of a number", "reverse the digits", "celsius from fahrenheit"]
    assert ranker.index(documents) is BM25Ranker().index(list(documents))
    assert ranker.index(documents) is not ranker.index([*documents, "square a number"])
    assert ranker.index(documents) is not BM25Ranker(stopwords=None).index(documents)
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS), max_tools=2, sandbox=sandbox)
    question = {"question": "What is the sum of the digits of 4821?"}
    assert (
        agent.deepcopy().tool_selection(question) == agent.tool_selection(question) == ["digit_sum", "reverse_digits"]
    )


def test_a_toolset_within_max_tools_is_shown_whole_and_keyed_as_before(sandbox):
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS[:2]), max_tools=2, sandbox=sandbox)
    assert agent.tool_selection({"question": "square 3"}) is None


def test_the_selected_tools_are_part_of_an_example_s_cache_key(sandbox, tmp_path):
    from toolforge.keys import program_fingerprint, record_key, tool_selections

    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS), max_tools=1, sandbox=sandbox)
    digits = dspy.Example(question="the digit sum of 12").with_inputs("question")
    vowels = dspy.Example(question="the vowels of banana").with_inputs("question")
    assert tool_selections(agent, digits) == [{"module": "self", "tools": ["digit_sum"]}]
    with dspy.context(lm=DummyLM([{"answer": "1"}])):
        base = program_fingerprint(agent, metric_id="m")
    keys = [record_key(base, "e", tool_selections(agent, example)) for example in (digits, vowels)]
    assert keys[0] != keys[1] and record_key(base, "e", []) == record_key(base, "e")

    lm, _ = scripted_lm(tool_agent_script(lambda q: None))
    evaluator = tf.Evaluator(lambda e, p, trace=None: 1.0, cache=tmp_path / "cache", num_threads=1)
    with dspy.context(lm=lm):
        assert evaluator.evaluate(agent, [digits, vowels]).misses == 2
        assert evaluator.evaluate(agent, [digits, vowels]).hits == 2
        agent.ranker = Shortest()  # nothing else in the program changes: only the tools shown (now `square`)
        assert evaluator.evaluate(agent, [digits, vowels]).misses == 2


def test_a_custom_ranker_is_used_and_a_bad_one_is_refused(sandbox):
    agent = tf.ToolAgent("question -> answer", toolset=tf.Toolset(TOOLS), max_tools=1, ranker=Shortest())
    assert agent.tool_selection({"question": "anything"}) == ["square"]
    with pytest.raises(tf.ToolforgeError, match=r"ToolAgent\(ranker=.*\): give an object with index\(documents\)"):
        tf.ToolAgent("question -> answer", max_tools=1, ranker=object())
    with pytest.raises(tf.ToolforgeError, match=r"max_tools=0\): give an integer >= 1, or None"):
        tf.ToolAgent("question -> answer", max_tools=0)


def test_a_missing_bm25s_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bm25s(name, *args, **kwargs):
        if name == "bm25s":
            raise ImportError("No module named 'bm25s'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bm25s)
    with pytest.raises(tf.ToolforgeError, match=r"install the retrieval extra: pip install 'toolforge\[retrieval\]'"):
        BM25Ranker()
