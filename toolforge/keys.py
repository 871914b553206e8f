"""Cache keys: the content identities under which evaluation records are stored and found again.

An example's record is stored under a key that hashes the program's prompts and demos (every predictor's
state), the fixed tools' interfaces, the source files of the user's code that a run executes (the program's module
classes and its fixed tools' functions, helpers in those files included), the interface fingerprint of every
Toolset in the program, the example, the
LM settings (model and sampling parameters, per predictor, and the configured LM, which predictors made inside
`forward()` use), the DSPy adapter, the settings of any module that defines `cache_settings() -> dict` (a
ToolAgent's `max_iters` and `max_observation_chars`), the metric (its source, or `metric_version`), and the cache
format. The code of forged functions is not in the key: `toolforge.cache` checks it per record.

`program_fingerprint` hashes the program, `example_id` the example; a record's key (`record_key`) hashes the two,
and, for a program that shows its LM only some of its functions per example (a module with a
`tool_selection(inputs)` hook, such as `ToolAgent(max_tools=k)`), the functions each such module selected for the
example: which tools a run was shown is then part of what its record depends on, whatever ranked them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import dspy

from toolforge._hashing import content_hash
from toolforge.cache import CACHE_FORMAT
from toolforge.errors import ToolforgeError
from toolforge.program import fixed_tools, named_modules
from toolforge.toolset import Toolset

__all__ = ["example_id", "jsonable", "metric_source", "program_fingerprint", "record_key", "tool_selections"]

logger = logging.getLogger(__name__)

_SECRET_KWARGS = {"api_key", "api_token", "access_token", "headers", "extra_headers", "client", "credentials"}


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
    eid = content_hash({"fields": jsonable(fields), "inputs": inputs})
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
        predictors.append({"name": name, "state": jsonable(state), "lm": _lm_identity(lm)})
    toolsets = [
        {"name": name, "interface": p.interface_fingerprint}
        for name, p in program.named_parameters()
        if isinstance(p, Toolset)
    ]
    adapter = dspy.settings.adapter
    found = named_modules(program)
    tools = fixed_tools(found)
    settings = [  # what else shapes a run: e.g. a ToolAgent's max_iters
        {"module": name, "settings": module.cache_settings()}
        for name, module in found
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
                {"module": module_name, "name": tool.name, "desc": tool.desc, "args": jsonable(tool.args)}
                for module_name, tool in tools
            ],
            "code": _user_code(found, tools),
            "toolsets": toolsets,
            "adapter": type(adapter).__qualname__ if adapter is not None else None,
            "metric": metric_id,
        }
    )


def tool_selections(program: dspy.Module, example: dspy.Example) -> list[dict[str, Any]]:
    """The forged functions each module that selects them per example shows on `example`, by module name; empty
    when no module selects (every function is shown)."""
    inputs = example.inputs().toDict()
    selections = []
    for name, module in named_modules(program):
        select = getattr(module, "tool_selection", None)
        if callable(select):
            chosen = select(inputs)
            if chosen is not None:
                selections.append({"module": name, "tools": list(chosen)})
    return selections


def record_key(base: str, eid: str, selections: list[dict[str, Any]] | None = None) -> str:
    """The key of an example's record: the program's fingerprint, the example's id, and the tools selected for it
    (left out when there are none, so that a program showing all its functions keeps the key it had)."""
    return content_hash([base, eid, selections]) if selections else content_hash([base, eid])


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
        "kwargs": jsonable(kwargs),
    }


def metric_source(metric: Callable[..., Any]) -> str:
    """The source of a metric, which identifies it in cache keys; raises, naming `metric_version`, if unreadable."""
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


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data (pydantic models dumped, unknown objects as their repr)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(v) for v in items]
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if isinstance(value, dspy.Example):
        return jsonable(value.toDict())
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
