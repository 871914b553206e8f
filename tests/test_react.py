"""toolforge.ReAct: a user's own ReAct trains in place (its functions by FunctionOptimizer, its prompts by GEPA), and
the frozen `dspy.ReAct(sig, tools=toolset.as_tools())` pattern is refused before anything is paid for."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

import toolforge as tf
from tests.evaluation_fixtures import exact
from tests.scripted_lm import field, scripted_lm
from tests.test_optimizer import DOUBLE, SQUARE, add_square_once, examples, proposer_lm
from toolforge.program import fixed_tool_names

ROOT = Path(__file__).resolve().parent.parent
HINT = "CUBE-HINT"


def search(query: str) -> str:
    """Look a query up."""
    return query


class Solver(dspy.Module):
    """A user's program, as one holding `dspy.ReAct` is written, with toolforge's ReAct in its place."""

    def __init__(self, toolset: tf.Toolset | None = None) -> None:
        super().__init__()
        toolset = toolset if toolset is not None else tf.Toolset([DOUBLE])
        self.react = tf.ReAct("question -> answer: float", toolset=toolset, max_iters=3)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)


def agent_lm(name: str = "react"):
    """DSPy ReAct's format. Calls the tool named by the question's first word if it is offered, then finishes. A
    cube, which no tool computes, it answers itself only when its instructions carry the hint."""

    def respond(system: str, user: str) -> dict[str, Any]:
        kind, number = field(user, "question").split()
        x = float(number)
        if "next_tool_name" in system:
            if "[[ ## tool_name_0 ## ]]" in user:
                return {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}}
            if kind == "cube" and HINT in system:
                return {"next_thought": f"The cube is {x**3}.", "next_tool_name": "finish", "next_tool_args": {}}
            if f") {kind}, whose description" in system:
                return {"next_thought": "Call it.", "next_tool_name": kind, "next_tool_args": {"x": x}}
            return {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}}
        if kind == "cube":
            known = HINT in system or "The cube is" in field(user, "thought_0")
            return {"reasoning": "A cube.", "answer": str(x**3) if known else "0"}
        observation = field(user, "observation_0")
        return {"reasoning": "From the trajectory.", "answer": observation if observation[:1].isdigit() else "0"}

    return scripted_lm(respond, name=name)


def reflection_lm(replies: int = 50) -> DummyLM:
    """GEPA's reflection LM (which DSPy's GEPA asks through its JSONAdapter): proposes instructions with the hint."""
    new = f"Use the tools to answer. {HINT}: a cube you compute yourself, as x * x * x."
    return DummyLM([{"new_instruction": new}] * replies, adapter=dspy.JSONAdapter())


def cubes(numbers=(2, 3, 4)) -> list[dspy.Example]:
    return [dspy.Example(question=f"cube {i}", answer=float(i**3)).with_inputs("question") for i in numbers]


def gepa_metric(gold: dspy.Example, pred: dspy.Prediction, trace=None, pred_name=None, pred_trace=None) -> float:
    return float(exact(gold, pred))


def function_optimizer(policy=add_square_once, **kwargs: Any) -> tf.FunctionOptimizer:
    settings: dict[str, Any] = dict(max_epochs=2, cache=False, display_progress=False)
    settings.update(kwargs)
    return tf.FunctionOptimizer(exact, proposer_lm=proposer_lm(policy)[0], **settings)


def lists(system: str, name: str) -> bool:
    return f") {name}, whose description" in system


# ------------------------------------------------------------------------------------------------ the module
def test_with_the_toolset_it_was_built_with_the_prompt_is_the_one_dspy_react_builds():
    ours = tf.ReAct("question -> answer: float", tools=[search], toolset=tf.Toolset([DOUBLE]), max_iters=3)
    theirs = dspy.ReAct("question -> answer: float", tools=[search, *tf.Toolset([DOUBLE]).as_tools()], max_iters=3)
    signature = ours._rendered()[1]
    assert signature.instructions == theirs.react.signature.instructions
    assert signature.fields["next_tool_name"].annotation == theirs.react.signature.fields["next_tool_name"].annotation
    assert list(ours.tools) == list(theirs.tools) == ["search", "double", "finish"]


def test_the_instructions_a_prompt_optimizer_tunes_do_not_list_the_tools():
    react = tf.ReAct("question -> answer: float", tools=[search], toolset=tf.Toolset([DOUBLE]))
    assert [name for name, _ in react.named_predictors()] == ["react", "extract.predict"]
    assert "(1) search" not in react.react.signature.instructions
    assert react.react.signature.instructions.endswith("plan for future steps.")


def test_a_new_toolset_is_listed_and_keeps_the_tuned_instructions_and_demos():
    react = tf.ReAct("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    react.react.signature = react.react.signature.with_instructions("Tuned by an optimizer.")
    react.react.demos = [dspy.Example(question="double 1", next_tool_name="double")]
    react.toolset = tf.Toolset([DOUBLE, SQUARE])
    signature = react._rendered()[1]
    assert signature.instructions.startswith("Tuned by an optimizer.\nWhen selecting the next_tool_name")
    assert lists(signature.instructions, "square") and list(react.tools) == ["double", "square", "finish"]
    assert react.react.signature.instructions == "Tuned by an optimizer."
    assert react.react.demos[0].next_tool_name == "double"


def test_a_toolset_loaded_in_place_is_seen_at_the_next_call(tmp_path):
    Solver(tf.Toolset([DOUBLE, SQUARE])).save(tmp_path / "solver.json")
    program = Solver()
    program.load(tmp_path / "solver.json")  # DSPy loads a parameter's state into the object the module holds
    model, engine = agent_lm()
    with dspy.context(lm=model):
        prediction = program(question="square 3")
    assert prediction.answer == 9.0
    assert lists(engine.requests[0][0], "square")


def test_acall_offers_the_current_toolset_too():
    react = tf.ReAct("question -> answer: float", toolset=tf.Toolset([DOUBLE]))
    react.toolset = tf.Toolset([DOUBLE, SQUARE])
    lm = DummyLM(
        [
            {"next_thought": "Square it.", "next_tool_name": "square", "next_tool_args": {"x": 4}},
            {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "From the trajectory.", "answer": "16"},
        ]
    )
    with dspy.context(lm=lm):
        prediction = asyncio.run(react.acall(question="square 4"))
    assert prediction.answer == 16.0 and prediction.trajectory["observation_0"] == 16.0
    assert lists(lm.history[0]["messages"][0]["content"], "square")


def test_a_step_reply_that_does_not_parse_ends_the_trajectory_and_the_agent_answers():
    def respond(system: str, user: str) -> dict[str, Any]:
        if "next_tool_name" in system:
            return {"next_thought": "cut off at the token limit"}  # no tool: the reply does not parse
        return {"reasoning": "From what there is.", "answer": "5"}

    model, _ = scripted_lm(respond, name="small")
    with dspy.context(lm=model):
        prediction = Solver()(question="double 3")
    assert prediction.answer == 5.0 and prediction.trajectory == {}


def test_its_forged_functions_are_not_fixed_tools():
    react = tf.ReAct("question -> answer: float", tools=[search], toolset=tf.Toolset([DOUBLE]))
    assert fixed_tool_names(react) == {"search", "finish"}


def test_forged_functions_given_as_fixed_tools_are_refused_with_the_fix():
    with pytest.raises(tf.ToolforgeError, match=r"holds forged functions \(double\).*pass their toolset instead"):
        tf.ReAct("question -> answer", tools=tf.Toolset([DOUBLE]).as_tools())


def test_a_function_may_not_shadow_a_fixed_tool_or_finish():
    react = tf.ReAct("question -> answer", tools=[search])
    shadow = tf.ForgedFunction.from_callable(search)
    with pytest.raises(tf.ToolforgeError, match=r"toolset functions \['search'\] shadow fixed tools"):
        react.toolset = tf.Toolset([shadow])


# --------------------------------------------------------------------------------------- training in place
def test_a_program_holding_toolforge_react_trains_and_the_lm_is_shown_the_trained_function():
    agent, engine = agent_lm()
    with dspy.context(lm=agent):
        trained = function_optimizer().compile(Solver(), trainset=examples())
        report = trained.toolforge_report
        assert (report.initial_score, report.best_score) == (0.8, 1.0)
        assert trained.react.toolset.names == ["double", "square"]
        engine.requests.clear()
        assert trained(question="square 7").answer == 49.0
    assert lists(engine.requests[0][0], "square")


def test_its_evaluations_are_cached_and_a_new_function_or_new_instructions_are_not_taken_from_the_cache(tmp_path):
    program = Solver()
    with tf.EvaluationCache(tmp_path / "cache") as cache, dspy.context(lm=agent_lm()[0]):
        evaluator = tf.Evaluator(exact, cache=cache, display_progress=False)
        first = evaluator.evaluate(program, examples(5))
        again = evaluator.evaluate(program, examples(5))
        program.react.toolset = tf.Toolset([DOUBLE, SQUARE])
        with_square = evaluator.evaluate(program, examples(5))
        program.react.react.signature = program.react.react.signature.with_instructions("Tuned.")
        tuned = evaluator.evaluate(program, examples(5))
    assert (first.hits, first.score, again.hits, again.score) == (0, 0.8, 5, 0.8)
    assert (with_square.hits, with_square.score) == (0, 1.0)
    assert tuned.hits == 0


def test_gepa_tunes_the_trained_program_and_the_toolset_and_instructions_survive_save_and_load(tmp_path):
    agent, engine = agent_lm()
    reflection = reflection_lm()
    with dspy.context(lm=agent):
        trained = function_optimizer().compile(Solver(), trainset=examples())
        gepa = dspy.GEPA(
            metric=gepa_metric,
            reflection_lm=reflection,
            max_metric_calls=30,
            reflection_minibatch_size=2,
            log_dir=str(tmp_path / "gepa"),
        )
        tuned = gepa.compile(trained, trainset=cubes(), valset=cubes((5, 6)) + examples(5))
    assert reflection.history  # GEPA asked it
    tuned.save(tmp_path / "solver.json")
    loaded = Solver(tf.Toolset())
    loaded.load(tmp_path / "solver.json")
    assert loaded.react.toolset.names == ["double", "square"]
    instructions = [predictor.signature.instructions for _, predictor in loaded.named_predictors()]
    assert any(HINT in text for text in instructions)
    engine.requests.clear()
    with dspy.context(lm=agent):
        assert loaded(question="cube 7").answer == 343.0  # the instructions GEPA found
        assert loaded(question="square 8").answer == 64.0  # the function FunctionOptimizer forged
    assert lists(engine.requests[-2][0], "square")


def test_bootstrap_few_shot_gives_the_trained_program_demos_and_keeps_its_functions():
    agent, engine = agent_lm()
    with dspy.context(lm=agent):
        trained = function_optimizer().compile(Solver(), trainset=examples())
        bootstrap = dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0)
        tuned = bootstrap.compile(trained, trainset=examples(5))
        engine.requests.clear()
        assert tuned(question="square 6").answer == 36.0
    assert tuned.react.toolset.names == ["double", "square"]
    assert [demo.next_tool_name for demo in tuned.react.react.demos] == ["double", "double"]  # questions 1 and 2
    assert lists(engine.requests[0][0], "square")


def test_a_trained_program_inside_a_larger_one_leaves_its_toolset_and_predictors_to_optimize():
    class Pipeline(dspy.Module):
        def __init__(self, solver: dspy.Module) -> None:
            super().__init__()
            self.solver = solver

    with dspy.context(lm=agent_lm()[0]):
        trained = function_optimizer().compile(Solver(), trainset=examples())
    names = [name for name, _ in Pipeline(trained).named_parameters()]
    assert sorted(names) == ["solver.react.extract.predict", "solver.react.react", "solver.react.toolset"]


def mipro_prompt_lm():
    """MIPROv2's prompt model (ChatAdapter): every output field it is asked for, with instructions that carry the
    hint wherever an instruction is asked for."""

    def respond(system: str, user: str) -> dict[str, Any]:
        listed = system.split("Your output fields are:\n", 1)[1].split("\nAll interactions", 1)[0]
        names = re.findall(r"^\d+\. `(\w+)`", listed, re.M)
        new = f"Use the tools to answer. {HINT}: a cube you compute yourself, as x * x * x."
        return {name: new if "instruction" in name else "Questions about numbers." for name in names}

    return scripted_lm(respond, name="prompt-model")


def test_miprov2_tunes_the_trained_program_and_the_toolset_and_instructions_survive_save_and_load(tmp_path):
    pytest.importorskip("optuna", reason="MIPROv2 needs optuna (the dev extra installs it)")
    agent, engine = agent_lm()
    prompt_model, proposals = mipro_prompt_lm()
    with dspy.context(lm=agent):
        trained = function_optimizer().compile(Solver(), trainset=examples())
        mipro = dspy.MIPROv2(
            metric=exact,
            prompt_model=prompt_model,
            task_model=agent,
            auto=None,
            num_candidates=2,
            max_bootstrapped_demos=0,
            max_labeled_demos=0,
            num_threads=1,
            verbose=False,
        )
        tuned = mipro.compile(
            trained, trainset=cubes() + examples(3), valset=cubes((5, 6)), num_trials=4, minibatch=False
        )
    assert proposals.calls > 0  # MIPROv2 asked it for instructions
    tuned.save(tmp_path / "solver.json")
    loaded = Solver(tf.Toolset())
    loaded.load(tmp_path / "solver.json")
    assert loaded.react.toolset.names == ["double", "square"]
    assert HINT in loaded.react.react.signature.instructions
    engine.requests.clear()
    with dspy.context(lm=agent):
        assert loaded(question="cube 7").answer == 343.0  # the instructions MIPROv2 chose
        assert loaded(question="square 8").answer == 64.0  # the function FunctionOptimizer forged
    assert lists(engine.requests[-2][0], "square")


# ------------------------------------------------------------------------------------------ the frozen pattern
class FrozenReAct(dspy.Module):
    """The usual DSPy pattern, which fixes the functions in ReAct's prompt when it is built."""

    def __init__(self) -> None:
        super().__init__()
        self.toolset = tf.Toolset([DOUBLE])
        self.react = dspy.ReAct("question -> answer: float", tools=self.toolset.as_tools(), max_iters=3)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)


def test_a_toolset_frozen_into_a_plain_react_fails_at_once_naming_the_pattern_and_the_fix():
    agent, engine = agent_lm()
    proposer, proposals = proposer_lm(add_square_once)
    optimizer = tf.FunctionOptimizer(exact, proposer_lm=proposer, cache=False, display_progress=False)
    with dspy.context(lm=agent), pytest.raises(tf.ToolsetError) as caught:
        optimizer.compile(FrozenReAct(), trainset=examples())
    assert str(caught.value) == (
        "self.react (ReAct) holds the functions of toolset 'toolset' (double) as fixed tools, frozen when it was "
        "built, so training would change a toolset it never sees; build it as toolforge.ReAct(signature, "
        "tools=[fixed tools], toolset=...) instead of dspy.ReAct(signature, tools=toolset.as_tools() + [...])"
    )
    assert (engine.calls, proposals.calls) == (0, 0)


def test_a_toolset_held_under_two_names_is_refused():
    class Shared(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.toolset = tf.Toolset([DOUBLE])
            self.react = tf.ReAct("question -> answer: float", toolset=self.toolset)

    with pytest.raises(tf.ToolsetError, match=r"held under 2 names \(toolset, react.toolset\); compile replaces"):
        function_optimizer().compile(Shared(), trainset=examples())


def test_a_plain_react_beside_an_empty_toolset_is_warned_about(caplog):
    class Empty(FrozenReAct):
        def __init__(self) -> None:
            dspy.Module.__init__(self)
            self.toolset = tf.Toolset()
            self.react = dspy.ReAct("question -> answer: float", tools=self.toolset.as_tools(), max_iters=3)

    with dspy.context(lm=agent_lm()[0]), caplog.at_level(logging.WARNING, logger="toolforge.program"):
        function_optimizer(lambda inputs: [], max_epochs=1).compile(Empty(), trainset=examples())
    assert "self.react is a dspy.ReAct beside the toolset 'toolset' being trained" in caplog.text


def test_as_tools_in_a_plain_dspy_react_still_works_for_inference():
    model, engine = agent_lm()
    with dspy.context(lm=model):
        prediction = FrozenReAct()(question="double 21")
    assert prediction.answer == 42.0 and lists(engine.requests[0][0], "double")


# ---------------------------------------------------------------------------------------------- the README
def readme_snippet(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the example's files go
    namespace: dict[str, Any] = {
        "metric": gepa_metric,
        "reflection_lm": reflection_lm(),
        "proposer_lm": proposer_lm(add_square_once)[0],
        "train": examples() + cubes(),
        "val": cubes((5, 6)) + examples(5),
    }
    with dspy.context(lm=agent_lm()[0]):
        exec(compile(readme_snippet("Your own dspy.ReAct"), "README.md", "exec"), namespace)
    loaded = namespace["program"]
    assert loaded.react.toolset.names == ["square"]  # the one function the scripted proposer forges
    assert any(HINT in predictor.signature.instructions for _, predictor in loaded.named_predictors())
