"""The baselines the benchmarks measure: the reference training loop (AG2's AgentOptimizer loop) and re-evaluation
from the disk in a new process. A benchmark's figure is only as good as its baseline, so both are specified here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact, unary
from tests.scripted_lm import field, scripted_lm, tool_agent_script

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
CALLS_PER_EXAMPLE = 3  # the scripted agent: a tool call, `finish`, then the answer


def load_benchmark(name: str) -> ModuleType:
    """A benchmarks/ module, loaded from its file (benchmarks/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reference = load_benchmark("_reference_loop")
cache_benchmark = load_benchmark("cache")

DOUBLE = unary("double", "x * 2")
BROKEN_DOUBLE = unary("double", "x * 2 + 1", DOUBLE.description)
REFACTORED_DOUBLE = unary("double", "x + x", DOUBLE.description)


def agent_lm() -> tuple[dspy.LM, Any]:
    return scripted_lm(tool_agent_script(lambda question: ("double", {"x": float(question.split()[1])})), cache=False)


def proposer_lm(actions: Any) -> tuple[dspy.LM, Any]:
    """A scripted proposer: `actions(current_functions, failure_list)` gives the reply's actions."""

    def respond(system: str, user: str) -> dict[str, Any]:
        chosen = actions(field(user, "current_functions"), field(user, "failure_list"))
        return {"reasoning": "Scripted.", "actions": chosen}

    return scripted_lm(respond, name="proposer", cache=False)


def revise(function: tf.ForgedFunction) -> list[dict[str, Any]]:
    return [tf.ProposedAction.of("revise_function", function, {"x": 3}).model_dump()]


def doubles(n: int) -> list[dspy.Example]:
    return [dspy.Example(question=f"double {i}", answer=float(2 * i)).with_inputs("question") for i in range(n)]


def train(sandbox: tf.Sandbox, actions: Any, n: int = 4, **options: Any) -> tuple[Any, Any, Any]:
    """Run the reference loop on `n` doubling examples from a toolset holding `double`; its result and both LMs'
    engines (which count the requests that reached them)."""
    lm, agent_engine = agent_lm()
    plm, proposer_engine = proposer_lm(actions)
    program = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]), sandbox=sandbox)
    with dspy.context(lm=lm):
        result = reference.reference_loop(program, doubles(n), exact, proposer_lm=plm, num_threads=2, **options)
    return result, agent_engine, proposer_engine


def test_reference_loop_reruns_every_example_every_epoch_with_no_cache(sandbox):
    result, agent, proposer = train(sandbox, lambda functions, failures: [], n=4, max_epochs=3)

    assert agent.calls == 3 * 4 * CALLS_PER_EXAMPLE  # epochs x examples x calls per example
    assert [e.examples_run for e in result.epochs] == [4, 4, 4]
    assert [e.agent_lm_calls for e in result.epochs] == [12, 12, 12]
    first_steps = [user for system, user in agent.requests if "next_tool_call" in system and "tool_name_0" not in user]
    assert sorted(field(user, "question") for user in first_steps) == sorted([f"double {i}" for i in range(4)] * 3)
    assert proposer.calls == 3  # one step() per epoch


def test_reference_loop_rolls_back_a_drop_and_shows_it_in_the_failure_list(sandbox):
    def actions(functions: str, failures: str) -> list[dict[str, Any]]:
        return [] if "x * 2 + 1" in failures else revise(BROKEN_DOUBLE)

    result, _, proposer = train(sandbox, actions, max_epochs=3)

    assert [e.score for e in result.epochs] == [1.0, 0.0, 1.0]
    assert [e.outcome for e in result.epochs] == ["accepted", "rolled_back", "accepted"]
    assert result.best["double"].code == DOUBLE.code  # epoch 2 ran the best functions, not the broken ones
    assert "x * 2 + 1" not in field(proposer.requests[1][1], "current_functions")  # proposed on the best
    assert "x * 2 + 1" in field(proposer.requests[1][1], "failure_list")


def test_reference_loop_accepts_an_equal_score_as_ag2_does(sandbox):
    def actions(functions: str, failures: str) -> list[dict[str, Any]]:
        return [] if "x + x" in functions else revise(REFACTORED_DOUBLE)

    result, _, _ = train(sandbox, actions, max_epochs=2)

    assert [e.score for e in result.epochs] == [1.0, 1.0]
    assert [e.outcome for e in result.epochs] == ["accepted", "accepted"]
    assert result.best["double"].code == REFACTORED_DOUBLE.code


def test_reference_loop_stops_after_patience_epochs_without_a_higher_score(sandbox):
    result, agent, proposer = train(sandbox, lambda functions, failures: [], max_epochs=10, patience=2)

    assert result.stopped_early
    assert len(result.epochs) == 3  # the first epoch sets the score; two more without a higher one
    assert agent.calls == 3 * 4 * CALLS_PER_EXAMPLE
    assert proposer.calls == 2  # the epoch that stops proposes nothing


def test_reference_loop_runs_every_epoch_without_patience(sandbox):
    result, _, _ = train(sandbox, lambda functions, failures: [], max_epochs=4)

    assert not result.stopped_early
    assert len(result.epochs) == 4


def test_reference_loop_asks_again_for_an_invalid_proposal_at_most_max_trials_times(sandbox):
    broken = tf.ProposedAction.of("revise_function", DOUBLE, {"x": 3}).model_dump() | {"code": "def double(x:\n"}

    result, _, proposer = train(sandbox, lambda functions, failures: [broken], max_epochs=2)

    assert proposer.calls == 2 * 3  # each step: three trials, none valid
    assert [e.proposed for e in result.epochs] == [(), ()]
    assert [e.functions for e in result.epochs] == [("double",), ("double",)]


# ------------------------------------------------------------------------------ cache benchmark: the disk
def write_records(directory: Path, sandbox: tf.Sandbox, n: int) -> tf.EvaluationRun:
    """Evaluate the cache benchmark's program on its first `n` examples into a cache at `directory`."""
    lm, _ = scripted_lm(tool_agent_script(cache_benchmark.choose))
    program = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(cache_benchmark.FUNCTIONS), sandbox=sandbox)
    with tf.EvaluationCache(directory) as cache, dspy.context(lm=lm):
        return tf.Evaluator(exact, cache=cache, num_threads=2).evaluate(program, cache_benchmark.examples(n))


def test_records_written_by_one_process_are_served_in_another_with_no_lm_call(tmp_path, sandbox):
    written = write_records(tmp_path / "cache", sandbox, 5)
    assert written.misses == 5

    fresh = cache_benchmark.reevaluate_in_new_process(str(tmp_path / "cache"), 5)

    assert (fresh["hits"], fresh["misses"], fresh["lm_calls"]) == (5, 0, 0)
    assert fresh["score"] == written.score


def test_the_new_process_runs_and_counts_what_its_cache_does_not_hold(tmp_path):
    fresh = cache_benchmark.reevaluate_in_new_process(str(tmp_path / "empty"), 5)

    assert (fresh["hits"], fresh["misses"]) == (0, 5)
    assert fresh["lm_calls"] == 5 * CALLS_PER_EXAMPLE
