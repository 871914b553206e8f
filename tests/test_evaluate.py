"""Evaluator and EvaluationCache: re-evaluating unchanged functions is free, and exactly what changed re-runs."""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import subprocess
import sys
import threading

import dspy
import numpy as np
import pytest

import toolforge as tf
from tests.evaluation_fixtures import (
    DOUBLE,
    SQUARE,
    CountingSandbox,
    exact,
    make_examples,
    make_lm,
    make_program,
    unary,
)
from toolforge.keys import _user_code
from toolforge.program import fixed_tools, named_modules

N = 10
N_SQUARE = 2  # examples 0 and 5
CALLS_PER_EXAMPLE = 3  # a tool step, a finish step, the extraction


@pytest.fixture(scope="module")
def counting_sandbox():
    with CountingSandbox(workers=2) as box:
        yield box


@pytest.fixture
def cache(tmp_path):
    with tf.EvaluationCache(tmp_path / "cache") as c:
        yield c


@pytest.fixture
def lm():
    return make_lm()


def evaluate(program, lm, cache, examples=None, metric=exact, **kwargs):
    lm_obj, _ = lm
    with dspy.context(lm=lm_obj):
        return tf.Evaluator(metric, cache=cache, num_threads=4, **kwargs).evaluate(
            program, examples or make_examples(N)
        )


def test_first_run_scores_every_example_and_records_what_it_called(lm, cache, counting_sandbox):
    run = evaluate(make_program(sandbox=counting_sandbox), lm, cache)
    assert run.score == 1.0 and (run.hits, run.misses) == (0, N)
    assert lm[1].calls == N * CALLS_PER_EXAMPLE == run.lm_calls
    square = run.records[0]
    assert square.prediction["answer"] == 0.0 and square.trajectory["tool_name_0"] == "square"
    assert [(c.name, c.code_hash, c.ok) for c in square.calls] == [("square", SQUARE.code_hash, True)]
    assert run.records[1].calls[0].name == "double"
    assert all(r.lm_calls == CALLS_PER_EXAMPLE and r.wall_time_s > 0 and not r.cached for r in run.records)
    assert run.records[1].prompt_tokens > 0 and run.records[1].completion_tokens > 0
    assert [r.example_id for r in run.records] == [tf.keys.example_id(e) for e in make_examples(N)]


def test_second_run_makes_no_lm_and_no_sandbox_calls_and_returns_the_same(lm, cache, counting_sandbox):
    program = make_program(sandbox=counting_sandbox)
    first = evaluate(program, lm, cache)
    lm_calls, sandbox_calls = lm[1].calls, counting_sandbox.calls
    second = evaluate(program, lm, cache)
    assert (lm[1].calls, counting_sandbox.calls) == (lm_calls, sandbox_calls)
    assert (second.hits, second.misses, second.lm_calls) == (N, 0, 0)
    assert second.lm_calls_saved == N * CALLS_PER_EXAMPLE
    assert [r.score for r in second.records] == [r.score for r in first.records]
    assert [r.prediction for r in second.records] == [r.prediction for r in first.records]
    assert [r.trajectory for r in second.records] == [r.trajectory for r in first.records]
    assert all(r.cached for r in second.records)
    assert second.records[3].to_prediction().answer == first.records[3].prediction["answer"]


def test_example_id_follows_fields_changed_in_place():
    example = dspy.Example(question="q", table=[[1, 2], [3, 4]], answer=1.0).with_inputs("question", "table")
    first = tf.keys.example_id(example)
    assert tf.keys.example_id(example) == first
    example.table[1][0] = 30  # deep inside a field: the memo must not hand back the old id
    changed = tf.keys.example_id(example)
    assert changed != first
    assert changed == tf.keys.example_id(dspy.Example(example.toDict()).with_inputs("question", "table"))
    example.table[1][0] = 3
    assert tf.keys.example_id(example) == first
    tagged = dspy.Example(question="q", tags={"a"}, answer=1.0).with_inputs("question", "tags")
    before = tf.keys.example_id(tagged)
    tagged.tags.add("b")  # toDict() copies lists and dicts, not other containers
    assert tf.keys.example_id(tagged) != before
    assert tf.keys.example_id(example.with_inputs("question")) != first  # which fields are inputs counts too


def test_code_only_revision_reruns_only_the_examples_that_called_it(lm, cache):
    program = make_program()
    evaluate(program, lm, cache)
    before = lm[1].calls
    program.toolset = program.toolset.apply(tf.ReviseFunction.of(unary("square", "x ** 2 + 1", SQUARE.description)))
    run = evaluate(program, lm, cache)
    assert (run.hits, run.misses) == (N - N_SQUARE, N_SQUARE)
    assert lm[1].calls - before == N_SQUARE * CALLS_PER_EXAMPLE
    assert run.score == (N - N_SQUARE) / N  # the revision broke the squares
    assert [r.cached for r in run.records] == [i % 5 != 0 for i in range(N)]


def test_a_revision_that_keeps_the_outcomes_reruns_nothing(lm, cache, counting_sandbox):
    program = make_program(sandbox=counting_sandbox)
    evaluate(program, lm, cache)
    lm_calls, sandbox_calls = lm[1].calls, counting_sandbox.calls
    refactor = unary("square", "(lambda y: y * y)(x)", SQUARE.description)  # other code, same results
    program.toolset = program.toolset.apply(tf.ReviseFunction.of(refactor))
    run = evaluate(program, lm, cache)
    assert (run.hits, run.misses, run.revalidated, run.lm_calls) == (N, 0, N_SQUARE, 0)
    assert lm[1].calls == lm_calls  # not one LM request
    assert counting_sandbox.calls - sandbox_calls == N_SQUARE  # the new code, on the arguments the records kept
    assert run.score == 1.0
    square_calls = [c for r in run.records for c in r.calls if c.name == "square"]
    assert {c.code_hash for c in square_calls} == {program.toolset["square"].code_hash}
    sandbox_calls = counting_sandbox.calls
    again = evaluate(program, lm, cache)  # stored under the new code: plain hits now
    assert (again.hits, again.revalidated, counting_sandbox.calls) == (N, 0, sandbox_calls)


def test_a_revision_reruns_exactly_the_examples_whose_outcomes_changed(lm, cache):
    program = make_program()
    evaluate(program, lm, cache)
    before = lm[1].calls
    partial = unary("square", "x * x if x < 3 else -1.0", SQUARE.description)  # same for x = 0, not for x = 5
    program.toolset = program.toolset.apply(tf.ReviseFunction.of(partial))
    run = evaluate(program, lm, cache)
    assert (run.hits, run.misses, run.revalidated) == (N - 1, 1, 1)
    assert lm[1].calls - before == CALLS_PER_EXAMPLE
    assert [r.cached for r in run.records] == [i != 5 for i in range(N)]
    assert run.score == (N - 1) / N


def test_non_deterministic_functions_are_not_checked_but_rerun(lm, cache):
    noisy = unary("square", "x * x", SQUARE.description, deterministic=False)
    program = make_program(tf.Toolset([DOUBLE, noisy]))
    evaluate(program, lm, cache)
    refactor = unary("square", "(lambda y: y * y)(x)", SQUARE.description, deterministic=False)
    program.toolset = program.toolset.apply(tf.ReviseFunction.of(refactor))
    run = evaluate(program, lm, cache)
    assert (run.hits, run.misses, run.revalidated) == (N - N_SQUARE, N_SQUARE, 0)


def test_rolling_back_a_revision_finds_the_earlier_records_again(lm, cache):
    program = make_program()
    evaluate(program, lm, cache)
    original = program.toolset
    program.toolset = original.apply(tf.ReviseFunction.of(unary("square", "x ** 2 + 1", SQUARE.description)))
    evaluate(program, lm, cache)
    before = lm[1].calls
    program.toolset = original
    run = evaluate(program, lm, cache)
    assert (run.hits, lm[1].calls) == (N, before)


@pytest.mark.parametrize(
    "change",
    [
        "description",
        "add_function",
        "remove_function",
        "reorder",
        "lm_model",
        "temperature",
        "metric",
        "instructions",
        "max_iters",
        "max_observation_chars",
    ],
)
def test_changes_outside_function_code_rerun_everything(lm, cache, change):
    triple = unary("triple", "x * 3")
    program = make_program(tf.Toolset([DOUBLE, SQUARE, triple]) if change == "remove_function" else None)
    evaluate(program, lm, cache, metric_version="v1")
    lm_obj, engine = lm
    metric_version = "v1"
    if change == "description":
        program.toolset = program.toolset.apply(tf.ReviseFunction.of(unary("square", "x * x", "Square of x.")))
    elif change == "add_function":
        program.toolset = program.toolset.apply(tf.AddFunction.of(triple))
    elif change == "remove_function":
        program.toolset = program.toolset.apply(tf.RemoveFunction("triple"))
    elif change == "reorder":
        program.toolset = tf.Toolset([SQUARE, DOUBLE])
    elif change == "lm_model":
        lm = make_lm(name="another-model")
        engine = lm[1]
    elif change == "temperature":
        lm = (lm_obj.copy(temperature=0.7), engine)
    elif change == "metric":
        metric_version = "v2"
    elif change == "instructions":
        program.react.signature = program.react.signature.with_instructions("Be brief.")
    elif change == "max_iters":
        program.max_iters = 5
    elif change == "max_observation_chars":
        program.max_observation_chars = 1000
    before = engine.calls
    run = evaluate(program, lm, cache, metric_version=metric_version)
    assert (run.hits, run.misses) == (0, N)
    assert engine.calls - before == N * CALLS_PER_EXAMPLE


def test_editing_the_metric_source_reruns_everything(lm, cache):
    def metric_a(example, prediction, trace=None):
        return abs(float(prediction.answer) - example.answer) < 1e-9

    def metric_b(example, prediction, trace=None):
        return abs(float(prediction.answer) - example.answer) < 1e-3

    evaluate(make_program(), lm, cache, metric=metric_a)
    assert evaluate(make_program(), lm, cache, metric=metric_a).hits == N
    assert evaluate(make_program(), lm, cache, metric=metric_b).misses == N


def test_deterministic_calls_are_answered_from_the_function_call_cache(lm, cache, tmp_path):
    with CountingSandbox(workers=1) as sandbox:
        program = make_program(sandbox=sandbox)
        evaluate(program, lm, cache)
        assert sandbox.calls == N
        program.toolset = program.toolset.apply(tf.ReviseFunction.of(unary("square", "x * x", "Square of a number.")))
        run = evaluate(program, lm, cache)  # the interface changed: every example runs again ...
        assert run.misses == N
        assert sandbox.calls == N  # ... but no function runs again: same code, same arguments
        assert all(c.cached for r in run.records for c in r.calls)
        assert cache.stats().call_hits == N


def test_non_deterministic_functions_are_not_cached(lm, cache):
    noisy = unary("noisy", "x", deterministic=False)
    examples = [dspy.Example(question="noisy 2", answer=2.0).with_inputs("question")]
    with CountingSandbox(workers=1) as sandbox:
        program = make_program(tf.Toolset([noisy]), sandbox=sandbox)
        evaluate(program, lm, cache, examples=examples)
        program.toolset = tf.Toolset([unary("noisy", "x", "Noisy x.", deterministic=False)])
        evaluate(program, lm, cache, examples=examples)
        assert sandbox.calls == 2


def test_a_program_error_scores_failure_score_never_ends_the_run_and_is_not_cached(lm, cache, caplog):
    examples = [*make_examples(3), dspy.Example(question="crash 1", answer=1.0).with_inputs("question")]
    with caplog.at_level("WARNING", logger="toolforge"):
        run = evaluate(make_program(), lm, cache, examples=examples, failure_score=0.25)
    assert [r.score for r in run.records] == [1.0, 1.0, 1.0, 0.25]
    assert "the LM service is down" in run.records[3].error
    assert run.errors == [run.records[3]]
    assert (
        "1 of 4 examples raised (each scored 0.25), e.g.: " in caplog.text and "the LM service is down" in caplog.text
    )
    again = evaluate(make_program(), lm, cache, examples=examples, failure_score=0.25)
    assert (again.hits, again.misses) == (3, 1)


def test_ctrl_c_drops_the_examples_not_started_and_keeps_the_finished_ones(cache):
    """A KeyboardInterrupt (Ctrl-C) stops the evaluation at once: queued examples never start, and the records of
    the examples that finished are in the cache, so the next evaluation runs only the rest."""
    started, done = [], []
    interrupt = {"at": "double 6"}
    released = threading.Event()
    lock = threading.Lock()

    class Doubler(dspy.Module):
        def forward(self, question):
            number = int(question.split()[1])
            with lock:
                started.append(number)
            if question == interrupt["at"]:
                raise KeyboardInterrupt
            if interrupt["at"] and number > 6:
                released.wait(10)  # still running when the interrupt arrives
            with lock:
                done.append(number)
            return dspy.Prediction(answer=2.0 * number)

    examples = [dspy.Example(question=f"double {i}", answer=2.0 * i).with_inputs("question") for i in range(40)]
    evaluator = tf.Evaluator(exact, cache=cache, num_threads=2)
    with pytest.raises(KeyboardInterrupt):
        evaluator.evaluate(Doubler(), examples)
    assert len(started) <= 9  # 0..6, and at most one more per thread: the 30-odd queued examples were dropped
    counted = cache.stats().misses  # the interrupted evaluation's finished examples are counted too
    released.set()
    for _ in range(1000):  # the ones still running finish in the background
        with lock:
            if len(done) == len(started) - 1:
                break
        threading.Event().wait(0.01)

    interrupt["at"] = None
    started.clear()
    again = evaluator.evaluate(Doubler(), examples)
    assert again.score == 1.0
    assert again.hits >= 5  # 0..4 had finished before 6 started: their records were kept
    assert counted == again.hits
    assert again.hits + again.misses == 40 and len(started) == again.misses


@pytest.mark.parametrize(
    ("returned", "score"),
    [
        (np.bool_(True), 1.0),
        (np.float64(0.25), 0.25),
        (np.int64(0), 0.0),
        (dspy.Prediction(score=np.float32(0.5)), 0.5),
    ],
)
def test_numpy_scores_are_numbers(lm, cache, returned, score):
    run = evaluate(make_program(), lm, cache, examples=make_examples(1), metric=lambda e, p, t=None: returned)
    assert run.records[0].error is None and run.records[0].score == score


def test_metric_may_return_a_prediction_with_a_score(lm, cache):
    run = evaluate(
        make_program(),
        lm,
        cache,
        examples=make_examples(2),
        metric=lambda e, p, t=None: dspy.Prediction(score=0.5, feedback="half"),
    )
    assert run.score == 0.5


def test_corrupt_entries_are_misses_with_a_warning_never_a_crash(lm, cache, caplog):
    program = make_program()
    evaluate(program, lm, cache, examples=make_examples(2))
    raw = cache._cache
    keys = sorted(k for k in raw.iterkeys() if k.startswith("record:"))
    raw.set(keys[0], "{not json")
    raw.set(keys[1], '[{"dependencies": {}, "record": {"score": "high"}}]')
    with tf.EvaluationCache(cache.directory) as reader:  # a process that has not seen the entries yet
        with caplog.at_level(logging.WARNING, logger="toolforge.cache"):
            run = evaluate(program, lm, reader, examples=make_examples(2))
        assert (run.hits, run.misses, run.score) == (0, 2, 1.0)
        assert "treating it as a miss" in caplog.text
    with tf.EvaluationCache(cache.directory) as reader:
        assert evaluate(program, lm, reader, examples=make_examples(2)).hits == 2  # re-stored correctly


def test_unreadable_cache_value_is_a_miss(lm, cache, caplog, monkeypatch):
    program = make_program()
    evaluate(program, lm, cache, examples=make_examples(1))

    def broken_get(*args, **kwargs):
        raise OSError("disk read error")

    with tf.EvaluationCache(cache.directory) as reader:
        monkeypatch.setattr(reader._cache, "get", broken_get)
        with caplog.at_level(logging.WARNING, logger="toolforge.cache"):
            run = evaluate(program, lm, reader, examples=make_examples(1))
    assert run.misses == 1 and "disk read error" in caplog.text


def test_stats_add_up_hits_misses_and_savings(lm, cache):
    evaluate(make_program(), lm, cache)
    evaluate(make_program(), lm, cache)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.lm_calls_saved) == (N, N, N * CALLS_PER_EXAMPLE)
    assert stats.seconds_saved > 0 and stats.entries > 0 and stats.size_bytes > 0 and stats.hit_rate == 0.5
    cache.reset_stats()
    assert cache.stats().hits == 0


def test_size_limit_is_enforced(tmp_path):
    with tf.EvaluationCache(tmp_path / "small", size_limit_mb=1) as small:
        for i in range(60):
            small.put_call(f"hash{i}", {"i": i}, "x" * 100_000)
            small.flush()  # 6 MB written in all
        assert small._cache.volume() < 2 * 1024 * 1024
        assert small.get_call("hash59", {"i": 59}) == "x" * 100_000  # the newest survive


def test_cache_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLFORGE_CACHE_DIR", str(tmp_path / "from-env"))
    with tf.EvaluationCache() as from_env:
        assert from_env.directory == tmp_path / "from-env"
    with tf.EvaluationCache(tmp_path / "explicit") as explicit:
        assert explicit.directory == tmp_path / "explicit"


def test_unusable_cache_directory_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tf.ToolforgeError, match="cannot open the evaluation cache at .*choose a writable directory"):
        tf.EvaluationCache(blocker / "cache")


def test_evaluation_under_dspy_context_from_another_thread(cache):
    lm_obj, engine = make_lm()
    results = {}

    def work():
        with dspy.context(lm=lm_obj):
            results["run"] = tf.Evaluator(exact, cache=cache, num_threads=4).evaluate(make_program(), make_examples(N))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results["run"].score == 1.0 and engine.calls == N * CALLS_PER_EXAMPLE


def test_without_a_cache_everything_runs_every_time(lm):
    evaluate(make_program(), lm, None)
    assert evaluate(make_program(), lm, None).misses == N


def test_progress_bar_is_shown_when_asked(lm, cache, capsys):
    evaluate(make_program(), lm, cache, examples=make_examples(2), display_progress=True)
    assert "toolforge evaluate" in capsys.readouterr().err


def test_bad_input_is_refused_with_the_fix(lm, cache):
    with pytest.raises(tf.ToolforgeError, match="example 0 has no inputs marked; .*with_inputs"):
        evaluate(make_program(), lm, cache, examples=[dspy.Example(question="double 1", answer=2.0)])
    with pytest.raises(tf.ToolforgeError, match="example 0 is a dict, not a dspy.Example"):
        evaluate(make_program(), lm, cache, examples=[{"question": "double 1"}])
    with pytest.raises(tf.ToolforgeError, match="num_threads must be an integer >= 1"):
        tf.Evaluator(exact, num_threads=0)
    with pytest.raises(tf.ToolforgeError, match="Evaluator.evaluate needs a dspy.Module as program, got str"):
        tf.Evaluator(exact).evaluate("programs/table_agent.py", make_examples(1))
    with pytest.raises(tf.ToolforgeError, match=r"Evaluator\(cache=True\): give an EvaluationCache, a directory"):
        tf.Evaluator(exact, cache=True)
    with pytest.raises(tf.ToolforgeError, match=r"EvaluationCache\(directory=123\): give a directory path"):
        tf.EvaluationCache(123)
    with pytest.raises(tf.ToolforgeError, match="cannot read the source of metric .* pass metric_version="):
        tf.Evaluator(max)
    with pytest.raises(tf.ToolforgeError, match="no LM is configured for predictor 'react'"):
        tf.Evaluator(exact).evaluate(make_program(), make_examples(1))


def test_two_processes_writing_one_directory_at_once(tmp_path):
    directory = tmp_path / "shared"
    script = "import sys; from tests.cache_writer import main; main(sys.argv[1], int(sys.argv[2]))"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(directory), str(seed)], stdout=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    with tf.EvaluationCache(directory) as shared:
        lm_obj, engine = make_lm()
        with dspy.context(lm=lm_obj):
            run = tf.Evaluator(exact, cache=shared).evaluate(make_program(), make_examples(40))
        assert (run.hits, engine.calls) == (40, 0)
        assert shared.stats().misses + shared.stats().hits >= 80 + 40


PROGRAM_SOURCE = '''
import dspy


def scale(number):
    return {factor} * number


def tool(x: float) -> float:
    """Scale x."""
    return scale(x)


class Scaler(dspy.Module):
    def forward(self, question):
        return dspy.Prediction(answer=scale(float(question.split()[1])))
'''


def load_program_module(directory, factor, monkeypatch):
    """The module `user_program` from a file in `directory`, written with `factor`, imported afresh."""
    path = directory / "user_program.py"
    path.write_text(PROGRAM_SOURCE.format(factor=factor))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no .pyc that a same-size edit in the same second reuses
    monkeypatch.syspath_prepend(str(directory))
    sys.modules.pop("user_program", None)
    importlib.invalidate_caches()
    return importlib.import_module("user_program")


def test_editing_the_program_s_code_re_runs_it_and_an_identical_file_does_not(cache, tmp_path, monkeypatch):
    """A record is keyed on the files that define the program's module classes (and fixed tools), helpers included:
    an edited helper that forward() calls gives other answers, so the examples run again."""
    examples = [dspy.Example(question=f"double {i}", answer=2.0 * i).with_inputs("question") for i in range(6)]
    evaluator = tf.Evaluator(exact, cache=cache, num_threads=2)
    first = evaluator.evaluate(load_program_module(tmp_path, 2, monkeypatch).Scaler(), examples)
    assert (first.score, first.hits, first.misses) == (1.0, 0, 6)
    assert evaluator.evaluate(load_program_module(tmp_path, 2, monkeypatch).Scaler(), examples).hits == 6

    edited = evaluator.evaluate(load_program_module(tmp_path, "3.0", monkeypatch).Scaler(), examples)
    assert (edited.hits, edited.misses) == (0, 6)
    assert edited.score == pytest.approx(1 / 6)  # only 0 * 3 == 0 * 2: the helper's new code ran

    module = load_program_module(tmp_path, "3.0", monkeypatch)  # the same text again, with a new modification time
    assert evaluator.evaluate(module.Scaler(), examples).hits == 6
    # a fixed tool's file counts the same way
    assert ["user_program", _file_hash(tmp_path / "user_program.py")] in user_code(
        tf.ToolAgent("q -> a", tools=[module.tool])
    )
    assert user_code(tf.ToolAgent("q -> a", tools=[tf.python_tool()])) == []  # toolforge's own code is versioned
    partial = functools.partial(module.tool)  # the function inside counts, not functools
    assert user_code(tf.ToolAgent("q -> a", tools=[dspy.Tool(partial, name="t", desc="d")]))[0][0] == "user_program"


def user_code(program):
    modules = named_modules(program)
    return _user_code(modules, fixed_tools(modules))


def _file_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_metric_s_feedback_is_kept_with_the_record(cache):
    def graded(example, prediction, trace=None):
        return dspy.Prediction(score=0.5, feedback={"hint": f"half of {example.answer}"})

    class Doubler(dspy.Module):
        def forward(self, question):
            return dspy.Prediction(answer=2.0 * int(question.split()[1]))

    examples = [dspy.Example(question=f"double {i}", answer=2.0 * i).with_inputs("question") for i in range(3)]
    first = tf.Evaluator(graded, cache=cache, num_threads=1).evaluate(Doubler(), examples)
    assert first.score == 0.5 and [r.feedback for r in first.records][1] == '{"hint": "half of 2.0"}'
    again = tf.Evaluator(graded, cache=cache, num_threads=1).evaluate(Doubler(), examples)
    assert again.hits == 3 and again.records[1].feedback == '{"hint": "half of 2.0"}'
    plain = tf.Evaluator(exact, cache=cache, num_threads=1).evaluate(Doubler(), examples)
    assert [r.feedback for r in plain.records] == [None, None, None]


def test_named_modules_does_not_walk_dspy_s_call_history():
    """A module's `history` is DSPy's log of its LM calls (up to 10,000 entries), read for every example's key."""
    agent = tf.ToolAgent("question -> answer")
    agent.react.history.extend([{"messages": [], "outputs": []}] * 3 + [dspy.Predict("a -> b")])
    assert [name for name, _ in named_modules(agent)] == ["self", "self.react", "self.extract"]


def test_a_sub_module_the_user_named_history_is_still_found():
    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.history = tf.ToolAgent("question -> answer")

    names = [name for name, _ in named_modules(Program())]
    assert "self.history" in names and "self.history.react" in names
