"""`Evaluator`: parallel, cached evaluation of a DSPy program on examples, one `ExampleRecord` per example.

An example's record is stored under a key that hashes the program's prompts and demos (every predictor's
state), the fixed tools' interfaces, the source files of the user's code that a run executes (the program's module
classes and its fixed tools' functions, helpers in those files included), the interface fingerprint of every
Toolset in the program, the example, the
LM settings (model and sampling parameters, per predictor, and the configured LM, which predictors made inside
`forward()` use), the DSPy adapter, the settings of any module that defines `cache_settings() -> dict` (a
ToolAgent's `max_iters` and `max_observation_chars`), the metric (its source, or `metric_version`), and the cache
format. The record is reused while every forged function its run called still has the same code
(see `toolforge.cache`). So evaluating an unchanged program again runs nothing at all, and a code-only revision
of one function re-runs only the examples that called it. Fewer still: before re-running such an example, the
revised function is called again on the arguments the record's run gave it (in the sandbox, no LM involved); if
every outcome is the same as before, nothing the program saw has changed, and the record holds for the new code
(counted in `EvaluationRun.revalidated`). A refactor that keeps behaviour re-runs nothing.

A program that raises scores `failure_score` and never ends the run; such records are not cached (the failure
may be passing, e.g. a network error), so they are tried again next time.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import hashlib
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import dspy
import tqdm

from toolforge._hashing import content_hash
from toolforge._text import one_line
from toolforge._usage import count_lm_usage
from toolforge.cache import CACHE_FORMAT, EvaluationCache, as_cache, use_call_cache
from toolforge.errors import FunctionCallError, ToolforgeError
from toolforge.function import ForgedFunction
from toolforge.records import EvaluationRun, ExampleRecord
from toolforge.sandbox import Sandbox
from toolforge.tools import ForgedToolCall
from toolforge.toolset import Toolset
from toolforge.trace import record_calls

__all__ = [
    "Evaluator",
    "check_examples",
    "describe_fixed_tools",
    "example_id",
    "fixed_tool_names",
    "program_fingerprint",
]

logger = logging.getLogger(__name__)

Metric = Callable[..., Any]
_WRITE_BATCH = 16  # records per cache transaction: few disk commits, little lost if the process dies
_SECRET_KWARGS = {"api_key", "api_token", "access_token", "headers", "extra_headers", "client", "credentials"}


class Evaluator:
    """Evaluate programs on examples, in parallel, reusing every record whose dependencies did not change.

    Args:
        metric: `metric(example, prediction, trace=None)` returning a bool, a number in [0, 1], or an object with a
            `score` attribute (such as a `dspy.Prediction(score=..., feedback=...)`).
        cache: Where records live (an `EvaluationCache`, or a directory path for one); None evaluates without a
            cache.
        num_threads: Examples run at once.
        failure_score: The score of an example whose program (or metric) raised.
        metric_version: Identifies the metric in cache keys instead of its source (for metrics whose source
            cannot be read, or to keep records across cosmetic edits).
        display_progress: Show a tqdm progress bar.
        warn_errors: Log a warning after an evaluation in which examples raised: how many, and the first error.

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
    ) -> None:
        if not callable(metric):
            raise ToolforgeError(f"metric must be callable as metric(example, prediction, trace=None), got {metric!r}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ToolforgeError(f"Evaluator(num_threads={num_threads!r}): num_threads must be an integer >= 1")
        if not 0.0 <= failure_score <= 1.0:
            raise ToolforgeError(f"Evaluator(failure_score={failure_score!r}): failure_score must be in [0, 1]")
        self.metric = metric
        self.cache = as_cache(cache, "Evaluator")
        self.num_threads = num_threads
        self.failure_score = float(failure_score)
        self.display_progress = display_progress
        self.warn_errors = warn_errors
        self.metric_id = metric_version if metric_version is not None else _metric_source(metric)

    def evaluate(
        self, program: dspy.Module, examples: Sequence[dspy.Example], *, display_progress: bool | None = None
    ) -> EvaluationRun:
        """Run `program` on every example (or reuse its record), score it, and return the records in order."""
        start = time.perf_counter()
        if not isinstance(program, dspy.Module):
            raise ToolforgeError(
                f"Evaluator.evaluate needs a dspy.Module as program, got {type(program).__name__} {program!r:.60}"
            )
        examples = list(examples)
        check_examples(examples)
        base = program_fingerprint(program, metric_id=self.metric_id)
        functions = _forged_functions(program)
        code_hashes = {name: function.code_hash for name, function in functions.items()}
        ids = [example_id(example) for example in examples]
        keys = [content_hash([base, eid]) for eid in ids]

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
        with tqdm.tqdm(total=len(examples), disable=not show, desc="toolforge evaluate", leave=False) as bar:
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
        sandbox = _sandbox_of(program)
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
                result = self.metric(example, prediction)
                score = _as_score(result)
                feedback = _feedback(result)
            except Exception as exc:
                error = f"metric: {type(exc).__name__}: {exc}"
        tokens = usage.tokens
        fields = dict(prediction.items()) if isinstance(prediction, dspy.Prediction) else {}
        trajectory = fields.pop("trajectory", None)
        return ExampleRecord(
            example_id=eid,
            score=score,
            prediction=_jsonable(fields),
            trajectory=_jsonable(trajectory) if isinstance(trajectory, dict) else None,
            calls=tuple(calls),
            lm_calls=usage.calls,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            wall_time_s=time.perf_counter() - start,
            error=error,
            feedback=feedback,
        )


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


def _sandbox_of(program: dspy.Module) -> Sandbox | None:
    """The sandbox the program's forged functions run in (a ToolAgent's own), or None for the default one."""
    from toolforge.agent import ToolAgent

    for _, module in _modules(program):
        if isinstance(module, ToolAgent) and module.sandbox is not None:
            sandbox: Sandbox = module.sandbox
            return sandbox
    return None


# ------------------------------------------------------------------------------------------------ keys
def example_id(example: dspy.Example) -> str:
    """Content hash of an example: its fields and which of them are inputs.

    Remembered per example object while its fields and inputs stay equal to a deep snapshot taken when it was
    hashed (comparing them is much cheaper than hashing them, and an optimizer asks for the same training examples
    every step); a field changed in place, even deep inside a list, gives a new id.
    """
    fields = example.toDict()
    inputs = sorted(example._input_keys) if example._input_keys else []
    with _ID_LOCK:
        memo = _IDS.get(id(example))
    if memo is not None and memo[0] is example and memo[1] == fields and memo[2] == inputs:
        return memo[3]
    eid = content_hash({"fields": _jsonable(fields), "inputs": inputs})
    try:
        snapshot = copy.deepcopy(fields)
    except Exception:  # a field that cannot be copied: hash this example every time
        return eid
    with _ID_LOCK:
        if len(_IDS) >= 100_000:
            _IDS.clear()
        _IDS[id(example)] = (example, snapshot, inputs, eid)  # holding the example keeps its id from being reused
    return eid


_IDS: dict[int, tuple[dspy.Example, dict[str, Any], list[str], str]] = {}
_ID_LOCK = threading.Lock()


def program_fingerprint(program: dspy.Module, *, metric_id: str) -> str:
    """Hash of everything an evaluation depends on except the examples and the code of forged functions."""
    predictors = []
    for name, predictor in program.named_predictors():
        state = predictor.dump_state()
        state.pop("lm", None)
        lm = predictor.lm or dspy.settings.lm
        if lm is None:
            raise ToolforgeError(
                f"no LM is configured for predictor {name!r}; call dspy.configure(lm=...), use "
                "dspy.context(lm=...), or set the predictor's lm"
            )
        predictors.append({"name": name, "state": _jsonable(state), "lm": _lm_identity(lm)})
    toolsets = [
        {"name": name, "interface": p.interface_fingerprint}
        for name, p in program.named_parameters()
        if isinstance(p, Toolset)
    ]
    adapter = dspy.settings.adapter
    modules = _modules(program)
    tools = _fixed_tools(modules)
    settings = [  # what else shapes a run: e.g. a ToolAgent's max_iters
        {"module": name, "settings": module.cache_settings()}
        for name, module in modules
        if callable(getattr(module, "cache_settings", None))
    ]
    default_lm = dspy.settings.lm  # also what predictors made inside forward() (not attributes) would use
    return content_hash(
        {
            "format": CACHE_FORMAT,
            "program": type(program).__qualname__,
            "predictors": predictors,
            "lm": _lm_identity(default_lm) if default_lm is not None else None,
            "settings": settings,
            "fixed_tools": [
                {"module": module_name, "name": tool.name, "desc": tool.desc, "args": _jsonable(tool.args)}
                for module_name, tool in tools
            ],
            "code": _user_code(modules, tools),
            "toolsets": toolsets,
            "adapter": type(adapter).__qualname__ if adapter is not None else None,
            "metric": metric_id,
        }
    )


def _forged_functions(program: dspy.Module) -> dict[str, ForgedFunction]:
    """The program's forged functions by name (the first toolset holding a name wins, as its tool would)."""
    functions: dict[str, ForgedFunction] = {}
    for _, parameter in program.named_parameters():
        if isinstance(parameter, Toolset):
            for function in parameter:
                functions.setdefault(function.name, function)
    return functions


def fixed_tool_names(program: dspy.Module) -> set[str]:
    """Names a forged function must not take: the program's fixed tools (and `finish` for a ToolAgent)."""
    return set(_fixed_tool_lines(program))


def describe_fixed_tools(program: dspy.Module) -> str:
    """The program's fixed tools, a line each with what it does, for the proposer: it should know what the agent
    already has before it forges more (and which names are taken)."""
    return "\n".join(_fixed_tool_lines(program).values())


def _fixed_tool_lines(program: dspy.Module) -> dict[str, str]:
    """Each fixed tool's name and its line for the proposer (with `finish` for a ToolAgent)."""
    from toolforge.agent import FINISH, ToolAgent

    modules = _modules(program)
    lines = {
        tool.name: f"- {tool.name}: {one_line(tool.desc or '(no description)', 200)}"
        for _, tool in _fixed_tools(modules)
    }
    if any(isinstance(m, ToolAgent) for _, m in modules):
        lines.setdefault(FINISH, f"- {FINISH}: ends the agent's run, once it can answer")
    return lines


def _modules(program: dspy.Module) -> list[tuple[str, dspy.Module]]:
    """The program and its sub-modules, found through attributes, lists and dicts (without walking their data)."""
    found: list[tuple[str, dspy.Module]] = []
    seen: set[int] = set()

    def visit(name: str, module: dspy.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        found.append((name, module))
        for attribute, value in module.__dict__.items():
            items = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, list | tuple)
                else [(None, value)]
            )
            for key, item in items:
                if isinstance(item, dspy.Module):
                    visit(f"{name}.{attribute}" + ("" if key is None else f"[{key}]"), item)

    visit("self", program)
    return found


def _fixed_tools(modules: list[tuple[str, dspy.Module]]) -> list[tuple[str, dspy.Tool]]:
    """The fixed tools (`dspy.Tool`s in a `tools` list or dict) of the modules `_modules()` found."""
    found = []
    for module_name, module in modules:
        tools = getattr(module, "tools", None)
        items = tools.values() if isinstance(tools, dict) else tools if isinstance(tools, list | tuple) else ()
        found += [(module_name, tool) for tool in items if isinstance(tool, dspy.Tool)]
    return found


def _user_code(modules: list[tuple[str, dspy.Module]], tools: list[tuple[str, dspy.Tool]]) -> list[list[str]]:
    """The user's source that a run executes, as (module, content hash) pairs: the files that define the
    program's module classes and its fixed tools' functions, dspy's and toolforge's own left out (their changes
    are versioned by `CACHE_FORMAT` and `cache_settings()`).

    A whole file, so that an edited helper that `forward()` or a tool calls counts too. An edit re-runs the
    program's examples; LM requests that did not change are answered by DSPy's cache, so that costs no LM calls.
    """
    targets: list[Any] = [type(module) for _, module in modules]
    targets += [tool.func for _, tool in tools]
    identities: dict[str, str] = {}
    for target in targets:
        identity = _source_identity(target)
        if identity is not None:
            identities[identity[0]] = identity[1]
    return [list(item) for item in sorted(identities.items())]


def _source_identity(target: Any) -> tuple[str, str] | None:
    """(module, hash of its file) for the code of `target`, None for dspy's and toolforge's own code or a builtin;
    (qualified name, hash of its own source, or nothing) when its file cannot be read. The module's name, not the
    file's path, so that a project moved elsewhere keeps its cache."""
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(getattr(target, "__func__", target))
    if not (inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target)  # a callable object: the code is its class's
    module = inspect.getmodule(target)
    package = (module.__name__ if module is not None else getattr(target, "__module__", "") or "").split(".")[0]
    if package in _LIBRARY_PACKAGES:
        return None
    try:
        path = inspect.getsourcefile(target)
    except TypeError:  # a builtin
        return None
    if path:
        try:
            stat = os.stat(path)
            with _SOURCE_LOCK:
                memo = _SOURCES.get(path)
            if memo is None or memo[0] != (stat.st_mtime_ns, stat.st_size):
                with open(path, "rb") as file:
                    digest = hashlib.sha256(file.read()).hexdigest()
                memo = ((stat.st_mtime_ns, stat.st_size), digest)
                with _SOURCE_LOCK:
                    _SOURCES[path] = memo
            return module.__name__ if module is not None else os.path.basename(path), memo[1]
        except OSError:
            pass
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    try:
        return name, content_hash(inspect.getsource(target))
    except (OSError, TypeError):
        logger.debug("cannot read the source of %s; cached records will not see edits to it", name)
        return name, ""


_LIBRARY_PACKAGES = {"dspy", "toolforge", "builtins"}
_SOURCES: dict[str, tuple[tuple[int, int], str]] = {}  # path -> ((mtime_ns, size), sha256 of its bytes)
_SOURCE_LOCK = threading.Lock()


def _lm_identity(lm: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in (getattr(lm, "kwargs", {}) or {}).items() if k not in _SECRET_KWARGS}
    return {
        "class": f"{type(lm).__module__}.{type(lm).__qualname__}",
        "model": getattr(lm, "model", None),
        "model_type": getattr(lm, "model_type", None),
        "kwargs": _jsonable(kwargs),
    }


def _metric_source(metric: Metric) -> str:
    for target in (metric, getattr(metric, "func", None), type(metric)):
        if target is None:
            continue
        try:
            return inspect.getsource(target)
        except (OSError, TypeError):
            continue
    raise ToolforgeError(
        f"cannot read the source of metric {metric!r} to key the cache on it; pass metric_version='...' "
        "(and change it whenever the metric changes)"
    )


# ------------------------------------------------------------------------------------------- helpers
def check_examples(examples: Sequence[Any], what: str = "example") -> None:
    """Refuse, with the fix, anything that is not a `dspy.Example` with its inputs marked."""
    for index, example in enumerate(examples):
        if not isinstance(example, dspy.Example):
            raise ToolforgeError(
                f"{what} {index} is a {type(example).__name__}, not a dspy.Example; build it as "
                "dspy.Example(question=..., answer=...).with_inputs('question')"
            )
        if not example._input_keys:
            raise ToolforgeError(
                f"{what} {index} has no inputs marked; build it as dspy.Example(...).with_inputs('question', ...)"
            )


def _as_score(value: Any) -> float:
    """The score in [0, 1] of what a metric returned: a bool or a number (NumPy's included, as `np.isclose` gives),
    or an object with such a `score`."""
    raw = getattr(value, "score", value)
    score = None
    if not isinstance(raw, str | bytes) and raw is not None:
        try:
            score = float(raw)
        except (TypeError, ValueError):
            pass
    if score is None or not 0.0 <= score <= 1.0:  # NaN fails this too
        raise ToolforgeError(f"the metric returned {raw!r} ({type(raw).__name__}); return a bool or a number in [0, 1]")
    return score


def _feedback(result: Any) -> str | None:
    """The text a metric gave beside its score (`dspy.Prediction(score=..., feedback=...)`), if any."""
    if isinstance(result, bool | int | float):
        return None
    feedback = getattr(result, "feedback", None)
    if feedback is None or (isinstance(feedback, str) and not feedback.strip()):
        return None
    return feedback if isinstance(feedback, str) else json.dumps(_jsonable(feedback))


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON data (pydantic models dumped, unknown objects as their repr)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump(mode="json"))
    if isinstance(value, dspy.Example):
        return _jsonable(value.toDict())
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
