"""Metrics as DSPy users write them: DSPy's `metric(example, prediction, trace=None)`, GEPA's
`metric(gold, pred, trace, pred_name, pred_trace)`, and scores on scales other than [0, 1]."""

from __future__ import annotations

import functools
import re

import dspy
import numpy as np
import pytest

import toolforge as tf
from tests.evaluation_fixtures import make_examples, make_lm, make_program

N = 5


@pytest.fixture
def lm():
    return make_lm()


def evaluate(lm, metric, **kwargs):
    with dspy.context(lm=lm[0]):
        return tf.Evaluator(metric, cache=None, num_threads=2, **kwargs).evaluate(make_program(), make_examples(N))


def right(example, prediction) -> bool:
    return abs(float(prediction.answer) - float(example.answer)) < 1e-9


def test_a_dspy_metric_is_called_with_the_example_and_the_prediction(lm):
    seen = []

    def metric(example, prediction, trace=None):
        seen.append((example.question, trace))
        return right(example, prediction)

    run = evaluate(lm, metric)
    assert run.score == 1.0
    assert sorted(seen) == sorted((e.question, None) for e in make_examples(N))


def test_a_gepa_metric_gets_none_for_trace_pred_name_and_pred_trace(lm):
    seen = []

    def metric(gold, pred, trace, pred_name, pred_trace):
        seen.append((trace, pred_name, pred_trace))
        return dspy.Prediction(score=float(right(gold, pred)), feedback="fine" if right(gold, pred) else "wrong")

    run = evaluate(lm, metric)
    assert run.score == 1.0 and all(r.error is None and r.feedback == "fine" for r in run.records)
    assert seen == [(None, None, None)] * N


def test_a_metric_with_a_required_trace_is_called_with_none(lm):
    run = evaluate(lm, lambda example, prediction, trace: trace is None and right(example, prediction))
    assert run.score == 1.0 and not run.errors


def test_a_metric_s_own_optional_parameters_keep_their_defaults(lm):
    def metric(example, prediction, trace=None, weight=0.5):
        return weight * right(example, prediction)

    assert evaluate(lm, metric).score == 0.5


def test_a_partial_and_a_callable_object_are_metrics_too(lm):
    class Metric:
        def __call__(self, gold, pred, trace, pred_name, pred_trace):
            return right(gold, pred)

    def weighted(weight, example, prediction, trace=None):
        return weight * right(example, prediction)

    assert evaluate(lm, Metric(), metric_version="object").score == 1.0
    assert evaluate(lm, functools.partial(weighted, 0.25), metric_version="partial").score == 0.25


@pytest.mark.parametrize(
    "metric",
    [lambda example: True, lambda a, b, c, d, e, f: True, lambda example, prediction, *, strict: True],
    ids=["one argument", "six arguments", "a required keyword"],
)
def test_a_metric_that_cannot_take_either_convention_is_refused_when_given(metric):
    with pytest.raises(tf.ToolforgeError, match=r"cannot be called as metric\(example, prediction, trace=None\)"):
        tf.Evaluator(metric, cache=None)


def test_a_score_on_another_scale_is_normalised_by_metric_range(lm):
    run = evaluate(lm, lambda e, p, t=None: 80 if right(e, p) else 0, metric_range=(0, 100))
    assert run.score == 0.8 and not run.errors


def test_a_bool_is_a_pass_on_any_scale(lm):
    assert evaluate(lm, lambda e, p, t=None: right(e, p), metric_range=(0, 10)).score == 1.0
    assert evaluate(lm, lambda e, p, t=None: np.bool_(right(e, p)), metric_range=(0, 10)).score == 1.0


def test_the_metric_range_is_part_of_the_cache_key_and_the_default_key_is_unchanged():
    def metric(example, prediction, trace=None):
        return 1

    plain = tf.Evaluator(metric, cache=None)
    assert plain.metric_id == tf.Evaluator(metric, cache=None, metric_range=(0, 1)).metric_id
    assert plain.metric_id != tf.Evaluator(metric, cache=None, metric_range=(0, 100)).metric_id


@pytest.mark.parametrize("scale", [(1, 1), (5, 0), "0-100", (0, float("inf")), (0,)])
def test_a_metric_range_that_is_no_scale_is_refused(scale):
    with pytest.raises(tf.ToolforgeError, match=r"metric_range=.*two numbers with low < high"):
        tf.Evaluator(right, cache=None, metric_range=scale)


def test_a_score_out_of_range_stops_the_evaluation_naming_the_example_the_value_and_the_fix(lm):
    with pytest.raises(tf.ToolforgeError) as raised:
        evaluate(lm, lambda e, p, t=None: 7 if e.question == "double 3" else 1)
    assert str(raised.value) == (
        "the metric returned 7 (int) on example {'question': 'double 3'}; return a bool or a number in [0, 1], or "
        "give the metric's scale as metric_range=(low, high)"
    )


def test_a_score_above_a_given_range_names_that_range(lm):
    with pytest.raises(tf.ToolforgeError, match=re.escape("return a bool or a number in metric_range=(0.0, 10.0)")):
        evaluate(lm, lambda e, p, t=None: 11, metric_range=(0, 10))


@pytest.mark.parametrize("returned", ["1", None, float("nan"), [1]])
def test_a_metric_that_returns_no_number_stops_the_evaluation(lm, returned):
    message = f"the metric returned {returned!r} ({type(returned).__name__}) on example"
    with pytest.raises(tf.ToolforgeError, match=re.escape(message)):
        evaluate(lm, lambda e, p, t=None: returned)


def test_a_metric_that_raises_is_an_error_of_that_example_only(lm):
    def metric(example, prediction, trace=None):
        if example.question == "double 3":
            raise KeyError("answer")
        return right(example, prediction)

    run = evaluate(lm, metric)
    assert [r.error for r in run.records] == [None, None, None, "metric: KeyError: 'answer'", None]
    assert run.score == 0.8


def test_a_gepa_metric_trains_a_toolset(tmp_path):
    from tests.test_optimizer import DOUBLE, add_square_once, agent_lm, examples, proposer_lm

    def metric(gold, pred, trace, pred_name, pred_trace):
        ok = abs(float(pred.answer) - gold.answer) < 1e-9
        return dspy.Prediction(score=float(ok), feedback="right" if ok else f"expected {gold.answer}")

    optimizer = tf.FunctionOptimizer(
        metric, proposer_lm=proposer_lm(add_square_once)[0], max_epochs=1, num_threads=2, display_progress=False,
        cache=False,
    )  # fmt: skip
    with dspy.context(lm=agent_lm()[0]):
        trained = optimizer.compile(tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])),
                                    trainset=examples())  # fmt: skip
    assert (trained.toolforge_report.initial_score, trained.toolforge_report.best_score) == (0.8, 1.0)
    assert trained.toolset.names == ["double", "square"]
