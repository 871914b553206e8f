"""The runtime of a forged function: the `dspy.Tool` it becomes, and what happens when that tool is called.

A call validates its arguments against the function's JSON Schema, answers from the active call cache
(`toolforge.cache.use_call_cache`) when the function is deterministic and the cache holds the result, runs the code
in the sandbox otherwise, and records the call for `toolforge.trace.record_calls`. A failure raises
`FunctionCallError` with the reason, which an agent shows its LM as an observation.

`Toolset.as_tools` builds its tools here: importing this module installs `forged_tools` as the toolset's tool
runtime (the package imports it), so that the data model (`toolset.py`, `function.py`, `actions.py`) never
imports the sandbox or the evaluation layer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import dspy

from toolforge._hashing import canonical_json, content_hash
from toolforge.cache import active_call_cache
from toolforge.errors import FunctionCallError, ToolforgeError
from toolforge.function import ForgedFunction
from toolforge.sandbox import Sandbox, default_sandbox
from toolforge.toolset import set_tool_runtime
from toolforge.trace import FunctionCall, _record

__all__ = ["FINISH", "ForgedToolCall", "fixed_tools", "forged_tools"]

FINISH = "finish"  # the tool that ends an agent's run, in ToolAgent and toolforge.ReAct alike


def fixed_tools(tools: Iterable[Any]) -> list[dspy.Tool]:
    """An agent's fixed tools as `dspy.Tool`s, refusing a name given twice or the reserved `finish`."""
    fixed = [t if isinstance(t, dspy.Tool) else dspy.Tool(t) for t in tools]
    names = [t.name for t in fixed]
    clashes = sorted({n for n in names if names.count(n) > 1} | ({FINISH} & set(names)))
    if clashes:
        raise ToolforgeError(f"fixed tool names {clashes} are repeated or reserved; give each tool its own name")
    return fixed


_MAX_KEPT_ARGUMENTS = 16_384  # characters of JSON: larger arguments are not kept in evaluation records


def forged_tools(functions: Iterable[ForgedFunction], sandbox: Sandbox | None = None) -> list[dspy.Tool]:
    """One `dspy.Tool` per function, running its code in `sandbox` (default: the process-wide one)."""
    return [
        ForgedTool(
            func=ForgedToolCall(function, sandbox),
            name=function.name,
            desc=function.description,
            args=dict(function.parameters["properties"]),
            arg_types=dict.fromkeys(function.parameters["properties"], Any),
        )
        for function in functions
    ]


def _kept_arguments(arguments: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments, to keep in the call's record; None when they are large or not JSON."""
    try:
        size = len(canonical_json(arguments))
    except (TypeError, ValueError):
        return None
    return dict(arguments) if size <= _MAX_KEPT_ARGUMENTS else None


def _outcome_hash(ok: bool, outcome: Any) -> str | None:
    """A hash of what the caller of a forged function saw: its value, or the message of the error it raised."""
    try:
        return content_hash([ok, outcome])
    except (TypeError, ValueError):
        return None


class ForgedTool(dspy.Tool):
    """A dspy.Tool whose arguments are checked once, against the whole schema, by the function itself."""

    def _validate_and_parse_args(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs  # ForgedToolCall validates with the function's cached JSON Schema validator


class ForgedToolCall:
    """The callable behind a forged function's `dspy.Tool`."""

    def __init__(self, function: ForgedFunction, sandbox: Sandbox | None) -> None:
        self.function = function
        self.sandbox = sandbox
        self.__name__ = function.name
        self.__doc__ = function.description

    def __call__(self, **arguments: Any) -> Any:
        function = self.function
        start = time.perf_counter()
        kept = _kept_arguments(arguments)

        def record(ok: bool, outcome: Any, error: str | None = None, cached: bool = False) -> None:
            _record(
                FunctionCall(
                    name=function.name,
                    code_hash=function.code_hash,
                    ok=ok,
                    error=error,
                    duration_s=time.perf_counter() - start,
                    cached=cached,
                    arguments=kept,
                    outcome_hash=_outcome_hash(ok, outcome),
                )
            )

        try:
            arguments = function.validate_arguments(arguments)
        except FunctionCallError as exc:
            record(False, str(exc), error=str(exc))
            raise
        cache = active_call_cache() if function.deterministic else None
        if cache is not None:
            value = cache.get_call(function.code_hash, arguments)
            if value is not cache.MISSING:
                record(True, value, cached=True)
                return value
        result = (self.sandbox or default_sandbox()).call(function, arguments)
        if not result.ok:
            printed = f"\nIt printed: {result.stdout[-500:]}" if result.stdout else ""
            message = f"{function.name} failed: {result.error}{printed}"
            record(False, message, error=result.error)
            raise FunctionCallError(message)
        record(True, result.value)
        if cache is not None and not result.value_is_repr:
            cache.put_call(function.code_hash, arguments, result.value)
        return result.value


set_tool_runtime(forged_tools)
