"""`Evaluator`: parallel, cached evaluation of a DSPy program on examples, one `ExampleRecord` per example.

An example's record is stored under its cache key (`toolforge.keys`: the program's prompts, LM settings, fixed
tools, user code and metric, and the example; not the code of forged functions). The record is reused while every
forged function its run called still has the same code (see `toolforge.cache`). So evaluating an unchanged program
again runs nothing at all, and a code-only revision of one function re-runs only the examples that called it. Fewer
still: before re-running such an example, the revised function is called again on the arguments the record's run
gave it (in the sandbox, no LM involved); if every outcome is the same as before, nothing the program saw has
changed, and the record holds for the new code (counted in `EvaluationRun.revalidated`). A refactor that keeps
behaviour re-runs nothing.

A program that raises scores `failure_score` and never ends the run; such records are not cached (the failure
may be passing, e.g. a network error), so they are tried again next time.

Every evaluation fires DSPy's evaluate callbacks (`on_evaluate_start` / `on_evaluate_end` of the callbacks in
`dspy.settings`), as `dspy.Evaluate` does, with a `dspy.evaluate.EvaluationResult` (score in percent, as DSPy
reports it) and the caller's `callback_metadata`: so MLflow's DSPy autologging and any other DSPy callback see
toolforge's evaluations as they see DSPy's own.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import dspy
import tqdm
from dspy.evaluate.evaluate import EvaluationResult
from dspy.utils.callback import with_callbacks

from toolforge._checks import check_int
from toolforge._text import one_line
from toolforge._usage import count_lm_usage
from toolforge.cache import EvaluationCache, as_cache, use_call_cache
from toolforge.errors import FunctionCallError, ToolforgeError
from toolforge.function import ForgedFunction
from toolforge.keys import example_id, jsonable, metric_source, program_fingerprint, record_key, tool_selections
from toolforge.program import check_examples, forged_functions, sandbox_of
from toolforge.records import EvaluationRun, ExampleRecord
from toolforge.sandbox import Sandbox
from toolforge.tools import ForgedToolCall
from toolforge.trace import record_calls

__all__ = ["Evaluator"]

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]
_WRITE_BATCH = 16  # records per cache transaction: few disk commits, little lost if the process dies


class Evaluator:
    """Evaluate programs on examples, in parallel, reusing every record whose dependencies did not change.

    Args:
        metric: `metric(example, prediction, trace=None)`, as DSPy's optimizers call it, or a GEPA feedback metric
            `metric(gold, pred, trace, pred_name, pred_trace)` (called with None for the last three: it scores the
            whole program). It returns a bool (1 or 0), a number in `metric_range`, or an object with such a `score`
            attribute (a `dspy.Prediction(score=..., feedback=...)`, as GEPA's metrics return).
        cache: Where records live (an `EvaluationCache`, or a directory path for one); None evaluates without a
            cache.
        num_threads: Examples run at once.
        failure_score: The score of an example whose program (or metric) raised.
        metric_version: Identifies the metric in cache keys instead of its source (for metrics whose source
            cannot be read, or to keep records across cosmetic edits).
        display_progress: Show a tqdm progress bar.
        warn_errors: Log a warning after an evaluation in which examples raised: how many, and the first error.
        metric_range: The scale of the metric's numbers, `(low, high)`; a score `s` counts as
            `(s - low) / (high - low)`, so every score is in [0, 1] (a bool is 1 or 0 on any scale). A number
            outside the range is a set-up mistake: the evaluation stops, naming the example, the value and this fix.

    Examples:
        >>> evaluator = Evaluator(metric, cache=EvaluationCache(), num_threads=8)      # doctest: +SKIP
        >>> run = evaluator.evaluate(program, devset)
        >>> run.score, run.hits, run.misses
    """

    def __init__(
        self,
        metric: Metric,
        *,
        cache: EvaluationCache | str | os.PathLike[str] | None = None,
        num_threads: int = 8,
        failure_score: float = 0.0,
        metric_version: str | None = None,
        display_progress: bool = False,
        warn_errors: bool = True,
        metric_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if not callable(metric):
            raise ToolforgeError(f"metric must be callable as metric(example, prediction, trace=None), got {metric!r}")
        self._metric_args = _metric_arity(metric)
        self.metric_range = _check_range(metric_range)
        check_int("Evaluator", "num_threads", num_threads, 1, allow_bool=True)
        if not 0.0 <= failure_score <= 1.0:
            raise ToolforgeError(f"Evaluator(failure_score={failure_score!r}): failure_score must be in [0, 1]")
        self.metric = metric
        self.cache = as_cache(cache, "Evaluator")
        self.num_threads = num_threads
        self.failure_score = float(failure_score)
        self.display_progress = display_progress
        self.warn_errors = warn_errors
        self.metric_id = metric_version if metric_version is not None else metric_source(metric)
        if self.metric_range != (0.0, 1.0):  # another scale gives other scores: records of one are not the other's
            self.metric_id += f"\n# metric_range={self.metric_range!r}"

    def evaluate(
        self,
        program: dspy.Module,
        examples: Sequence[dspy.Example],
        *,
        display_progress: bool | None = None,
        description: str = "toolforge evaluate",
        callback_metadata: dict[str, Any] | None = None,
    ) -> EvaluationRun:
        """Run `program` on every example (or reuse its record), score it, and return the records in order.

        Args:
            program: The DSPy program to run.
            examples: The examples, with inputs marked.
            display_progress: Show a tqdm bar (examples done, running score); None: the evaluator's setting.
            description: The bar's label.
            callback_metadata: Passed to DSPy's evaluate callbacks, as `dspy.Evaluate(...)(callback_metadata=...)`
                does (MLflow reads `metric_key` from it).
        """
        if not isinstance(program, dspy.Module):
            raise ToolforgeError(
                f"Evaluator.evaluate needs a dspy.Module as program, got {type(program).__name__} {program!r:.60}"
            )
        examples = list(examples)
        check_examples(examples)
        event = _EvaluateEvent(self, examples, display_progress, description)
        event(program, examples, callback_metadata=callback_metadata)
        assert event.run is not None  # set by the call, or it raised
        return event.run

    def _evaluate(
        self, program: dspy.Module, examples: list[dspy.Example], display_progress: bool | None, description: str
    ) -> EvaluationRun:
        start = time.perf_counter()
        base = program_fingerprint(program, metric_id=self.metric_id)
        functions = forged_functions(program)
        code_hashes = {name: function.code_hash for name, function in functions.items()}
        ids = [example_id(example) for example in examples]
        keys = [record_key(base, eid, tool_selections(program, e)) for e, eid in zip(examples, ids, strict=True)]

        records: list[ExampleRecord | None] = [None] * len(examples)
        if self.cache is not None:
            for index, key in enumerate(keys):
                records[index] = self.cache.get_record(key, code_hashes.get)
        todo = [i for i, record in enumerate(records) if record is None]
        revalidated: list[tuple[str, ExampleRecord]] = []
        if self.cache is not None and todo:
            stale = [(i, keys[i]) for i in todo]
            for index, record in self._revalidate(program, stale, functions, code_hashes):
                records[index] = record
                revalidated.append((keys[index], record))
            todo = [i for i in todo if records[i] is None]
        show = self.display_progress if display_progress is None else display_progress
        with tqdm.tqdm(total=len(examples), disable=not show, desc=description, leave=False) as bar:
            bar.update(len(examples) - len(todo))
            pending = list(revalidated)  # stored under the new code, so that next time they are plain hits

            def finished(index: int, record: ExampleRecord) -> None:
                nonlocal pending
                records[index] = record
                if self.cache is not None and record.error is None:
                    pending.append((keys[index], record))
                    if len(pending) >= _WRITE_BATCH:
                        self.cache.put_records(pending)
                        pending = []
                bar.update(1)
                if show:
                    done = [r.score for r in records if r is not None]
                    bar.set_postfix(score=f"{sum(done) / len(done):.3f}")

            try:
                self._run_all(program, examples, ids, todo, finished)
            finally:  # also on Ctrl-C: what finished is kept, and counted
                run = _summary(records, len(revalidated), start)
                if self.cache is not None:
                    self.cache.put_records(pending)
                    self.cache.record_run(
                        hits=run.hits,
                        misses=run.misses,
                        lm_calls_saved=run.lm_calls_saved,
                        seconds_saved=run.seconds_saved,
                    )
        if run.errors and self.warn_errors:
            logger.warning(
                "%d of %d examples raised (each scored %s), e.g.: %s",
                len(run.errors),
                len(run.records),
                self.failure_score,
                one_line(run.errors[0].error, 300),
            )
        logger.info(
            "evaluated %d examples: score %.3f, %d from cache (%d of them checked against revised code), %d run, "
            "%d LM calls",
            len(run.records),
            run.score,
            run.hits,
            run.revalidated,
            run.misses,
            run.lm_calls,
        )
        return run

    def _run_all(
        self,
        program: dspy.Module,
        examples: list[dspy.Example],
        ids: list[str],
        todo: list[int],
        finished: Callable[[int, ExampleRecord], None],
    ) -> None:
        """Run the examples at `todo`, handing each (index, record) to `finished` as it finishes.

        On Ctrl-C (or any exception) the examples not yet started are dropped rather than run to the end, the
        records of those that finished meanwhile are still handed over, and the exception goes on; examples still
        running finish their current LM request in the background, unrecorded.
        """
        if self.num_threads == 1 or len(todo) <= 1:
            for index in todo:
                finished(index, self._run_one(program, examples[index], ids[index]))
            return
        context = contextvars.copy_context()  # so that dspy.context(lm=...) of the caller reaches the threads
        pool = ThreadPoolExecutor(max_workers=min(self.num_threads, len(todo)))
        futures = {pool.submit(context.copy().run, self._run_one, program, examples[i], ids[i]): i for i in todo}
        handed: set[Future[ExampleRecord]] = set()
        try:
            for future in as_completed(futures):
                handed.add(future)
                finished(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for future, index in futures.items():
                if future not in handed and future.done() and not future.cancelled() and future.exception() is None:
                    finished(index, future.result())
            raise
        finally:
            pool.shutdown(wait=False)

    def _revalidate(
        self,
        program: dspy.Module,
        todo: list[tuple[int, str]],
        functions: dict[str, ForgedFunction],
        code_hashes: dict[str, str],
    ) -> Iterator[tuple[int, ExampleRecord]]:
        """(index, record) for each example whose stored record holds for the new code of the functions it called."""
        assert self.cache is not None
        sandbox = sandbox_of(program)
        with use_call_cache(self.cache):
            for index, key in todo:
                for record in self.cache.stale_records(key, code_hashes.get):
                    holding = _still_holds(record, functions, sandbox)
                    if holding is not None:
                        yield index, holding
                        break

    def _run_one(self, program: dspy.Module, example: dspy.Example, eid: str) -> ExampleRecord:
        start = time.perf_counter()
        prediction: Any = None
        error: str | None = None
        with count_lm_usage() as usage, record_calls() as calls, use_call_cache(self.cache):
            try:
                prediction = program(**example.inputs())
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.debug("program raised on example %s: %s", eid[:12], error)
        score = self.failure_score
        feedback = None
        if error is None:
            try:
                result = self.metric(example, prediction, *(None,) * (self._metric_args - 2))
            except Exception as exc:
                error = f"metric: {type(exc).__name__}: {exc}"
            else:  # outside the try: a score on the wrong scale is the user's set-up, not this example's fault
                score = _as_score(result, self.metric_range, example)
                feedback = _feedback(result)
        tokens = usage.tokens
        fields = dict(prediction.items()) if isinstance(prediction, dspy.Prediction) else {}
        trajectory = fields.pop("trajectory", None)
        return ExampleRecord(
            example_id=eid,
            score=score,
            prediction=jsonable(fields),
            trajectory=jsonable(trajectory) if isinstance(trajectory, dict) else None,
            calls=tuple(calls),
            lm_calls=usage.calls,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            wall_time_s=time.perf_counter() - start,
            error=error,
            feedback=feedback,
        )


class _EvaluateEvent(dspy.Evaluate):
    """One evaluation as DSPy's callbacks see it: a `dspy.Evaluate` (DSPy dispatches `on_evaluate_*` on that type)
    whose call runs the toolforge evaluation and returns what `dspy.Evaluate` returns. Made per evaluation, so
    concurrent evaluations share nothing; MLflow's patch of `dspy.Evaluate.__call__` (traces of DSPy's own
    evaluations) does not reach this override."""

    def __init__(
        self, evaluator: Evaluator, examples: list[dspy.Example], display_progress: bool | None, description: str
    ) -> None:
        super().__init__(
            devset=examples,
            metric=evaluator.metric,
            num_threads=evaluator.num_threads,
            display_progress=bool(display_progress),
            failure_score=evaluator.failure_score,
        )
        self.evaluator = evaluator
        self.progress = display_progress
        self.description = description
        self.run: EvaluationRun | None = None

    @with_callbacks
    def __call__(  # the arguments DSPy's evaluate callbacks read, and no others
        self,
        program: dspy.Module,
        devset: list[dspy.Example],
        callback_metadata: dict[str, Any] | None = None,
    ) -> EvaluationResult:
        self.run = self.evaluator._evaluate(program, devset, self.progress, self.description)
        results = [
            (example, dspy.Prediction(dict(record.prediction)), record.score)  # a dict base: any field name
            for example, record in zip(devset, self.run.records, strict=False)
        ]
        return EvaluationResult(score=round(100 * self.run.score, 2), results=results)


def _summary(records: list[ExampleRecord | None], revalidated: int, start: float) -> EvaluationRun:
    """The run of the records there are (all of them, unless the evaluation was interrupted)."""
    final = [r for r in records if r is not None]
    hits = [r for r in final if r.cached]
    return EvaluationRun(
        score=sum(r.score for r in final) / len(final) if final else 0.0,
        records=tuple(final),
        hits=len(hits),
        misses=len(final) - len(hits),
        revalidated=revalidated,
        lm_calls=sum(r.lm_calls for r in final if not r.cached),
        lm_calls_saved=sum(r.lm_calls for r in hits),
        seconds_saved=sum(r.wall_time_s for r in hits),
        wall_time_s=time.perf_counter() - start,
    )


def _still_holds(
    record: ExampleRecord, functions: dict[str, ForgedFunction], sandbox: Sandbox | None
) -> ExampleRecord | None:
    """`record` under the current code, if every call it made of a changed function gives the same outcome now.

    Only deterministic functions qualify, and only calls whose arguments and outcome the record kept.
    """
    calls = []
    for call in record.calls:
        function = functions.get(call.name)
        if function is None:
            return None
        if function.code_hash != call.code_hash:
            if not function.deterministic or call.arguments is None or call.outcome_hash is None:
                return None
            with record_calls() as seen:
                try:
                    ForgedToolCall(function, sandbox)(**call.arguments)
                except FunctionCallError:
                    pass  # an error is an outcome too: its message is compared
            if not seen or seen[-1].outcome_hash != call.outcome_hash:
                return None
            call = call.model_copy(update={"code_hash": function.code_hash})
        calls.append(call)
    return record.model_copy(update={"calls": tuple(calls)})


# ------------------------------------------------------------------------------------------- helpers
def _metric_arity(metric: Metric) -> int:
    """How many positional arguments to pass `metric`: 2 (example, prediction) for DSPy's `metric(example,
    prediction, trace=None)`, up to 5 for a metric that requires more, as GEPA's `(gold, pred, trace, pred_name,
    pred_trace)` does (the extra ones get None: the whole program is scored, outside a trace)."""
    try:
        parameters = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable without a signature: call it as DSPy does
        return 2
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    keyword_only = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    name = getattr(metric, "__qualname__", None) or type(metric).__name__
    if keyword_only or len(required) > 5 or (len(positional) < 2 and not variadic):
        raise ToolforgeError(
            f"metric {name}{inspect.signature(metric)} cannot be called as metric(example, prediction, trace=None) "
            "or as GEPA's metric(gold, pred, trace, pred_name, pred_trace); give it one of those signatures"
        )
    return max(2, len(required))


def _check_range(value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or isinstance(value, str):
        raise ToolforgeError(
            f"metric_range={value!r}: give the metric's scale as (low, high), two numbers with low < high, "
            "e.g. (0, 100) for a percentage"
        )
    return low, high


def _as_score(value: Any, scale: tuple[float, float] = (0.0, 1.0), example: dspy.Example | None = None) -> float:
    """The score in [0, 1] of what a metric returned: a bool (1 or 0), or a number on the metric's `scale` (NumPy's
    included, as `np.isclose` gives), or an object with such a `score`; anything else raises, naming the
    example."""
    raw = getattr(value, "score", value)
    score = None
    if not isinstance(raw, str | bytes) and raw is not None:
        try:
            score = float(raw)
        except (TypeError, ValueError):
            pass
    low, high = scale
    if score is not None and type(raw).__name__ not in ("bool", "bool_"):  # True is a pass on any scale
        score = (score - low) / (high - low)
    if score is None or not 0.0 <= score <= 1.0:  # NaN fails this too
        on = f" on example {one_line(repr(dict(example.inputs())), 160)}" if example is not None else ""
        if score is None:
            fix = "return a bool or a number"
        elif scale == (0.0, 1.0):
            fix = "return a bool or a number in [0, 1], or give the metric's scale as metric_range=(low, high)"
        else:
            fix = f"return a bool or a number in metric_range={scale!r}, or widen metric_range"
        raise ToolforgeError(f"the metric returned {raw!r} ({type(raw).__name__}){on}; {fix}")
    return score


def _feedback(result: Any) -> str | None:
    """The text a metric gave beside its score (`dspy.Prediction(score=..., feedback=...)`), if any."""
    if isinstance(result, bool | int | float):
        return None
    feedback = getattr(result, "feedback", None)
    if feedback is None or (isinstance(feedback, str) and not feedback.strip()):
        return None
    return feedback if isinstance(feedback, str) else json.dumps(jsonable(feedback))
