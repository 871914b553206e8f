"""`ToolAgent`: a ReAct-style DSPy module whose tools are fixed tools plus the current `Toolset`.

DSPy's own `dspy.ReAct` writes its tool list into its prompt when it is constructed. `ToolAgent` renders the
tools for the current toolset instead (once per toolset version, `toolforge.prompt`), so assigning a new toolset
(`agent.toolset = trained`) changes what the LM sees on the very next call, which is what lets an optimizer train
the toolset. The LM sees each function's name, description and arguments, once, never its code; the code runs in
the sandbox. With `max_tools=k` it sees only the k functions most relevant to the inputs (`toolforge.retrieval`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import typing
from collections import OrderedDict
from itertools import compress, count, repeat
from operator import attrgetter, is_
from typing import Any

import dspy
from dspy.signatures.signature import Signature, ensure_signature
from dspy.utils.exceptions import AdapterParseError, ContextWindowExceededError

from toolforge._checks import check_int
from toolforge.errors import FunctionCallError, ToolforgeError
from toolforge.prompt import (
    ToolView,
    call_type_of,
    function_view,
    listing,
    register_step_signature,
    render_once,
    step_adapter,
)
from toolforge.prompt import tool_view as _tool_view
from toolforge.retrieval import BM25Ranker, ToolIndex, ToolRanker, top_k
from toolforge.sandbox import Sandbox, default_sandbox
from toolforge.schema import rebuild_call as _rebuild_call  # noqa: F401  (pickled calls name it here)
from toolforge.tools import FINISH, fixed_tools, forged_tools
from toolforge.toolset import Toolset

__all__ = ["ToolAgent", "python_tool"]

logger = logging.getLogger(__name__)

# 4: each tool once, as one line, and no tool-call schema in the prompt; 3: object arguments keep their
# properties, mappings are entry lists; 2: args inlined
_PROMPT_FORMAT = 4
_SELECTIONS = 4096  # remembered tool selections (inputs -> functions shown) per agent
_RENDERINGS = 1024  # remembered step signatures (one per set of tools shown) per agent


class ToolAgent(dspy.Module):
    """An agent that reasons, calls tools, and answers; its forged functions are a trainable `Toolset`.

    Args:
        signature: The task, e.g. `"question -> answer: float"` or a `dspy.Signature` class.
        toolset: The forged functions (default: an empty toolset, ready to be trained).
        tools: Fixed tools: callables or `dspy.Tool`s, such as `python_tool()`. Forged functions cannot shadow them.
        max_iters: The most tool calls in one run before the agent must answer.
        max_observation_chars: The most characters of a tool's result the LM sees (as JSON, for a value that is not
            text); a longer one is cut, and the observation says by how much. A function that returns a megabyte
            would otherwise fill the context window and end the run.
        sandbox: Where forged functions run (default: the process-wide sandbox).
        max_tools: Show the LM only this many forged functions per run, those most relevant to its inputs (fixed
            tools and `finish` are always shown); None shows them all. For toolsets too large for every prompt,
            e.g. several trained toolsets merged. The functions shown are part of each example's cache key.
        ranker: What ranks functions for `max_tools` (a `toolforge.retrieval.ToolRanker`; default: BM25 over
            names, descriptions and argument docs, from the `retrieval` extra).

    Examples:
        >>> agent = ToolAgent("question -> answer: float", tools=[python_tool()])   # doctest: +SKIP
        >>> agent.toolset = Toolset([ForgedFunction.from_callable(compound_interest)])
        >>> agent(question="...").trajectory
    """

    def __init__(
        self,
        signature: str | type[Signature],
        *,
        toolset: Toolset | None = None,
        tools: tuple[Any, ...] | list[Any] = (),
        max_iters: int = 10,
        sandbox: Sandbox | None = None,
        max_observation_chars: int = 8000,
        max_tools: int | None = None,
        ranker: ToolRanker | None = None,
    ) -> None:
        super().__init__()
        check_int("ToolAgent", "max_iters", max_iters, 1, allow_bool=True)
        if max_tools is not None:
            check_int(
                "ToolAgent", "max_tools", max_tools, 1, allow_bool=True,
                message="{owner}({name}={value!r}): give an integer >= {low}, or None to show every function",
            )  # fmt: skip
        if ranker is not None and not callable(getattr(ranker, "index", None)):
            raise ToolforgeError(
                f"ToolAgent(ranker={ranker!r:.60}): give an object with index(documents) returning an index with "
                "scores(query), such as toolforge.retrieval.BM25Ranker()"
            )
        self.max_tools = max_tools
        self.ranker = ranker if ranker is not None or max_tools is None else BM25Ranker()
        if not (isinstance(signature, str) or (isinstance(signature, type) and issubclass(signature, Signature))):
            raise ToolforgeError(
                f"ToolAgent(signature={signature!r:.60}): give a signature string such as 'question -> answer: float'"
                " or a dspy.Signature class"
            )
        sig: type[Signature] = ensure_signature(signature)
        self.signature = signature = sig
        check_int(
            "ToolAgent", "max_observation_chars", max_observation_chars, 100, allow_bool=True,
            message="{owner}({name}={value!r}): give an integer >= {low}",
        )  # fmt: skip
        self.max_iters = max_iters
        self.max_observation_chars = max_observation_chars
        self.sandbox = sandbox
        if callable(tools) or not isinstance(tools, list | tuple):
            raise ToolforgeError(
                f"ToolAgent(tools={tools!r:.60}): give a list of tools, e.g. tools=[python_tool()], or () for none"
            )
        bad = [f"{i}: {type(t).__name__} {t!r:.40}" for i, t in enumerate(tools) if not callable(t)]
        if bad:
            raise ToolforgeError(
                f"ToolAgent(tools=...): each tool is a function or a dspy.Tool; not so item {'; item '.join(bad)}"
            )
        fixed = fixed_tools(tools)
        self.tools = fixed
        self.toolset = toolset if toolset is not None else Toolset()

        inputs = ", ".join(f"`{k}`" for k in sig.input_fields)
        outputs = ", ".join(f"`{k}`" for k in sig.output_fields)
        instructions = [sig.instructions] if sig.instructions else []
        instructions += [
            f"You are an Agent. In each episode, you are given the fields {inputs} as input, and you can see your "
            "past trajectory so far.",
            f"Your goal is to use the supplied tools to collect the information needed to produce {outputs}.",
            "In each turn, give next_thought and next_tool_call: the name of one tool and its arguments. After each "
            "tool call you receive an observation, which is appended to your trajectory.",
            f"Call `{FINISH}` (with no arguments) once the outputs can be produced.",
        ]
        react_signature = (
            dspy.Signature({**sig.input_fields}, "\n".join(instructions))
            .append("trajectory", dspy.InputField(), type_=str)
            .append("next_thought", dspy.OutputField(), type_=str)
            .append(
                "next_tool_call",
                dspy.OutputField(desc="the tool to call and its arguments"),
                type_=dict[str, Any],
            )
        )
        extract_signature = dspy.Signature({**sig.input_fields, **sig.output_fields}, sig.instructions).append(
            "trajectory", dspy.InputField(), type_=str
        )
        self.react = dspy.Predict(react_signature)
        # The agent's thoughts are already in the trajectory, so extracting the outputs needs no reasoning of its
        # own (DSPy's ReAct adds a chain of thought here, which costs a long generation per example).
        self.extract = dspy.Predict(extract_signature)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "toolset":
            if not isinstance(value, Toolset):
                raise ToolforgeError(
                    f"ToolAgent.toolset must be a Toolset, got {type(value).__name__}; wrap functions with "
                    "Toolset([...])"
                )
            shadowed = sorted(set(value.names) & ({t.name for t in self.__dict__.get("tools", ())} | {FINISH}))
            if shadowed:
                raise ToolforgeError(
                    f"toolset functions {shadowed} shadow fixed tools of this agent; rename the functions"
                )
        super().__setattr__(name, value)

    def cache_settings(self) -> dict[str, Any]:
        """The settings besides prompts and tools that shape a run; evaluation records are keyed on them too.
        `prompt_format` changes when a new version of ToolAgent renders the same agent's prompt differently."""
        return {
            "max_iters": self.max_iters,
            "max_observation_chars": self.max_observation_chars,
            "max_tools": self.max_tools,
            "prompt_format": _PROMPT_FORMAT,
        }

    def tool_selection(self, inputs: dict[str, Any]) -> list[str] | None:
        """The forged functions a run on `inputs` is shown, in toolset order; None when every one is shown (no
        `max_tools`, or no more functions than it). The hook the evaluator keys each example's record on."""
        if self.max_tools is None or len(self.toolset) <= self.max_tools:
            return None
        return list(self._selection(inputs))

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_caches", None)  # rebuilt on use: a copy or a pickle does not carry the renderings
        return state

    def tool_settings(self) -> dict[str, Any]:
        """Where this agent's forged functions run, and the tool it offers besides its fixed ones (`finish`);
        the hook `toolforge.program` reads."""
        return {"sandbox": self.sandbox, "builtin_tools": {FINISH: "ends the agent's run, once it can answer"}}

    # ---------------------------------------------------------------------------------------------- tools
    def current_tools(self) -> dict[str, dspy.Tool]:
        """The tools of the current toolset, in order: fixed tools, forged functions, then `finish`."""
        return dict(self._tools())

    def _state(self) -> _Caches:
        caches: _Caches | None = self.__dict__.get("_caches")
        if caches is None:
            caches = self.__dict__.setdefault("_caches", _Caches())
        return caches

    def _tools(self) -> dict[str, dspy.Tool]:
        """All tools, built once per toolset version; a function unchanged since the last version keeps its tool."""
        caches = self._state()
        key = (self.toolset.fingerprint, tuple(id(t) for t in self.tools), id(self.sandbox))
        with caches.lock:
            if caches.tools_key == key:
                return caches.tools
            reused = caches.forged if caches.sandbox is self.sandbox else {}
        functions = list(self.toolset)
        fingerprints = list(map(_FINGERPRINT, functions))
        built: list[Any] = list(map(reused.get, fingerprints))  # a None where the function is new
        missing = _missing(built)
        for i, tool in zip(missing, forged_tools([functions[i] for i in missing], self.sandbox), strict=True):
            built[i] = tool
        forged = dict(zip(fingerprints, built, strict=True))
        tools = {t.name: t for t in self.tools}
        tools.update(zip(map(_NAME, functions), built, strict=True))
        tools[FINISH] = _FINISH_TOOL
        with caches.lock:
            caches.tools_key, caches.tools, caches.forged, caches.sandbox = key, tools, forged, self.sandbox
        return tools

    def _views(self) -> tuple[list[ToolView], list[ToolView], list[ToolView]]:
        """What the LM may be shown: the fixed tools', the forged functions' and `finish`'s views, once per
        interface of the toolset."""
        caches = self._state()
        key = (self.toolset.interface_fingerprint, tuple(id(t) for t in self.tools))
        with caches.lock:
            if caches.views_key == key:
                return caches.views
        # The last version's views, by interface: a revision makes the revised function's view alone.
        known, (fixed, *_) = caches.forged_views, caches.views
        if caches.views_key is None or caches.views_key[1] != key[1]:
            fixed = [_tool_view(t) for t in self.tools]
        functions = list(self.toolset)
        hashes = list(map(_INTERFACE, functions))
        forged: list[Any] = list(map(known.get, hashes))  # a None where the interface is new
        for i in _missing(forged):
            forged[i] = function_view(functions[i])
        views = (fixed, forged, [_FINISH_VIEW])
        with caches.lock:
            caches.views_key, caches.views = key, views
            caches.forged_views = dict(zip(hashes, forged, strict=True))
            caches.index = None
        return views

    def _selection(self, inputs: dict[str, Any]) -> tuple[str, ...]:
        """The names of the `max_tools` functions most relevant to `inputs`, in toolset order."""
        assert self.max_tools is not None and self.ranker is not None
        _, forged, _ = self._views()
        caches = self._state()
        query = _query(inputs, self.signature)
        key = (self.toolset.interface_fingerprint, id(self.ranker), self.max_tools, query)
        with caches.lock:
            found = caches.selections.get(key)
            if found is not None:
                caches.selections.move_to_end(key)
                return found
            index = caches.index if caches.index_key == key[:2] else None
        if index is None:
            index = self.ranker.index([view.document for view in forged])
            with caches.lock:
                caches.index_key, caches.index = key[:2], index
        chosen = set(top_k(_names(forged), index.scores(query), self.max_tools))
        selection = tuple(view.name for view in forged if view.name in chosen)
        with caches.lock:
            caches.selections[key] = selection
            while len(caches.selections) > _SELECTIONS:
                caches.selections.popitem(last=False)
        return selection

    def _rendered(self, inputs: dict[str, Any] | None = None) -> tuple[dict[str, dspy.Tool], type[Signature]]:
        """The tools and the step signature that lists those the LM is shown (for `inputs`, with `max_tools`).

        The tools are built once per toolset (they run its code), the signature once per set of tools shown and
        prompt (what the LM sees): a code-only revision reuses the signature.
        """
        tools = self._tools()
        fixed, forged, finish = self._views()
        selection = self.tool_selection(inputs) if inputs is not None else None
        if selection is not None:
            chosen = set(selection)
            forged = [view for view in forged if view.name in chosen]
            shown = [*(t.name for t in self.tools), *selection, FINISH]
            tools = {name: tools[name] for name in shown}
        base = self.react.signature
        # Keyed on the identity of the fixed tools and the base signature (which a prompt optimizer replaces);
        # each entry holds those objects, so that no id in a live key can be reused by a new object.
        key = (self.toolset.interface_fingerprint, selection and tuple(selection), id(base), tuple(map(id, self.tools)))
        caches = self._state()
        with caches.lock:
            entry = caches.signatures.get(key)
            if entry is not None:
                caches.signatures.move_to_end(key)
        if entry is None:
            shown = [*fixed, *forged, *finish]
            signature = _step_signature(base, shown)
            entry = (signature, (base, tuple(self.tools)))
            with caches.lock:
                caches.signatures[key] = entry
                while len(caches.signatures) > _RENDERINGS:
                    caches.signatures.popitem(last=False)
        return tools, entry[0]

    # -------------------------------------------------------------------------------------------- running
    def forward(self, **input_args: Any) -> dspy.Prediction:
        max_iters = input_args.pop("max_iters", self.max_iters)
        self._check_inputs(input_args)
        tools, step_signature = self._rendered(input_args)
        adapter = step_adapter(dspy.settings.adapter or dspy.ChatAdapter())  # one copy for the run's requests
        trajectory: dict[str, Any] = {}
        for idx in range(max_iters):
            try:
                with dspy.context(adapter=adapter):
                    pred = self._call(self.react, trajectory, input_args, signature=step_signature)
            except (ContextWindowExceededError, AdapterParseError, ValueError) as err:
                _log_end(err)  # e.g. a small LM's reply cut at its token limit: answer from what there is
                break
            call = _next_call(pred, trajectory, idx)
            if call is None:
                break
            trajectory[f"observation_{idx}"] = _clip(self._observe(tools, *call), self.max_observation_chars)
            if call[0] == FINISH:
                break
        render_once(self.extract.signature)  # its system message is the same for every example
        with dspy.context(adapter=adapter):
            extract = self._call(self.extract, trajectory, input_args)
        return dspy.Prediction(trajectory=trajectory, **extract)

    async def aforward(self, **input_args: Any) -> dspy.Prediction:
        """`forward` for `await agent.acall(...)`: LM requests go through DSPy's async path, and tool calls
        (sandbox round trips, or a fixed tool's sync code) run in a worker thread, so the event loop is never
        blocked; a fixed tool that is a coroutine function is awaited."""
        max_iters = input_args.pop("max_iters", self.max_iters)
        self._check_inputs(input_args)
        tools, step_signature = self._rendered(input_args)
        adapter = step_adapter(dspy.settings.adapter or dspy.ChatAdapter())  # one copy for the run's requests
        trajectory: dict[str, Any] = {}
        for idx in range(max_iters):
            try:
                with dspy.context(adapter=adapter):
                    pred = await self._acall(self.react, trajectory, input_args, signature=step_signature)
            except (ContextWindowExceededError, AdapterParseError, ValueError) as err:
                _log_end(err)  # e.g. a small LM's reply cut at its token limit: answer from what there is
                break
            call = _next_call(pred, trajectory, idx)
            if call is None:
                break
            trajectory[f"observation_{idx}"] = _clip(await self._aobserve(tools, *call), self.max_observation_chars)
            if call[0] == FINISH:
                break
        render_once(self.extract.signature)
        with dspy.context(adapter=adapter):
            extract = await self._acall(self.extract, trajectory, input_args)
        return dspy.Prediction(trajectory=trajectory, **extract)

    def _check_inputs(self, input_args: dict[str, Any]) -> None:
        """Refuse a call that misses an input of the signature (DSPy would only warn, and the LM would guess)."""
        missing = [
            name
            for name, field in self.signature.input_fields.items()
            if name not in input_args
            and type(None) not in typing.get_args(field.annotation)  # Optional: may be left out
        ]
        if missing:
            raise ToolforgeError(
                f"ToolAgent: input {', '.join(map(repr, missing))} is missing (given: "
                f"{', '.join(map(repr, input_args)) or 'nothing'}); call it with "
                f"{', '.join(f'{name}=...' for name in self.signature.input_fields)}, or, for dspy.Examples, mark "
                "those fields with .with_inputs(...)"
            )

    @staticmethod
    def _observe(tools: dict[str, dspy.Tool], name: str, args: dict[str, Any]) -> Any:
        try:
            return tools[name](**args)
        except Exception as err:  # a fixed tool is the user's code; its failure is an observation too
            return _failure(name, err)

    @staticmethod
    async def _aobserve(tools: dict[str, dspy.Tool], name: str, args: dict[str, Any]) -> Any:
        func = getattr(tools.get(name), "func", None)
        if not (inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)):
            return await asyncio.to_thread(ToolAgent._observe, tools, name, args)  # the context (trace) goes along
        try:
            return await tools[name].acall(**args)
        except Exception as err:
            return _failure(name, err)

    def _call(self, module: dspy.Module, trajectory: dict[str, Any], input_args: dict[str, Any], **extra: Any) -> Any:
        for _ in range(3):
            try:
                return module(**input_args, trajectory=_format_trajectory(trajectory), **extra)
            except ContextWindowExceededError:
                if not _truncate(trajectory):
                    raise
        raise ContextWindowExceededError(message="the context window is exceeded even after truncating the trajectory")

    async def _acall(
        self, module: dspy.Module, trajectory: dict[str, Any], input_args: dict[str, Any], **extra: Any
    ) -> Any:
        for _ in range(3):
            try:
                return await module.acall(**input_args, trajectory=_format_trajectory(trajectory), **extra)
            except ContextWindowExceededError:
                if not _truncate(trajectory):
                    raise
        raise ContextWindowExceededError(message="the context window is exceeded even after truncating the trajectory")


class _Caches:
    """A ToolAgent's renderings (not copied with the agent: a copy rebuilds what it uses)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tools_key: Any = None
        self.tools: dict[str, dspy.Tool] = {}
        self.forged: dict[str, dspy.Tool] = {}
        self.sandbox: Sandbox | None = None
        self.views_key: Any = None
        self.views: tuple[list[ToolView], list[ToolView], list[ToolView]] = ([], [], [])
        self.forged_views: dict[str, ToolView] = {}
        self.index_key: Any = None
        self.index: ToolIndex | None = None
        self.selections: OrderedDict[Any, tuple[str, ...]] = OrderedDict()
        self.signatures: OrderedDict[Any, tuple[type[Signature], Any]] = OrderedDict()


_FINISH_TOOL = dspy.Tool(
    func=lambda: "Completed.",
    name=FINISH,
    desc="Marks the task as complete: all information needed for the outputs is in the trajectory.",
    args={},
)
_FINISH_VIEW = _tool_view(_FINISH_TOOL)


def _step_signature(base: type[Signature], views: list[ToolView]) -> type[Signature]:
    """The step signature: the base instructions, the listing of the tools shown, and their `ToolCall` type."""
    fields = {name: (field.annotation, field) for name, field in base.fields.items()}
    fields["next_tool_call"] = (call_type_of(views), base.fields["next_tool_call"])
    signature: type[Signature] = dspy.Signature(fields, listing(views, before=base.instructions + "\n\n"))
    register_step_signature(signature, base, views)
    return signature


# What a new toolset version takes from each of its functions, gathered by `map` (in C, not a Python loop per
# function): with a thousand functions, the loops were most of what a revision cost beyond its own function.
_FINGERPRINT, _INTERFACE, _NAME = attrgetter("fingerprint"), attrgetter("interface_hash"), attrgetter("name")


def _missing(items: list[Any]) -> list[int]:
    """The positions of the Nones in `items`."""
    return list(compress(count(), map(is_, items, repeat(None))))


def _names(views: list[ToolView]) -> list[str]:
    return [view.name for view in views]


def _query(inputs: dict[str, Any], signature: type[Signature]) -> str:
    """The text tools are ranked against: the run's inputs, in the signature's order."""
    parts = []
    for name in signature.input_fields:
        value = inputs.get(name)
        if value is not None:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))
    return "\n".join(parts)


def _next_call(pred: dspy.Prediction, trajectory: dict[str, Any], idx: int) -> tuple[str, dict[str, Any]] | None:
    """The tool call the agent chose at step `idx`, entered into `trajectory`; None if it repeats the last one."""
    call = pred.next_tool_call
    name, args = call.name, call.args.model_dump(exclude_unset=True, by_alias=True)
    if idx and name == trajectory[f"tool_name_{idx - 1}"] and args == trajectory[f"tool_args_{idx - 1}"]:
        logger.info("ending the trajectory: the agent repeated its last call to %s", name)
        return None  # the same call would give the same observation: nothing new to learn
    trajectory[f"thought_{idx}"] = pred.next_thought
    trajectory[f"tool_name_{idx}"] = name
    trajectory[f"tool_args_{idx}"] = args
    return name, args


def _clip(observation: Any, limit: int) -> Any:
    """`observation` as it is, or, if its text (JSON for a value) is over `limit` characters, its start and a note."""
    text = observation if isinstance(observation, str) else json.dumps(observation, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return observation
    return text[: limit - 80] + f"\n... (cut: the result has {len(text)} characters; the first {limit - 80} are shown)"


def _failure(name: str, err: Exception) -> str:
    """The observation of a tool call that failed: a forged function's reason as it is, anything else typed."""
    reason = str(err) if isinstance(err, FunctionCallError) else f"{type(err).__name__}: {err}"
    return f"Execution error in {name}: {reason}"


def _log_end(err: Exception) -> None:
    if isinstance(err, ContextWindowExceededError):
        logger.warning("ending the trajectory: the context window is exceeded (%s)", err)
    else:
        logger.warning("ending the trajectory: the agent did not choose a valid tool (%s)", err)


def _truncate(trajectory: dict[str, Any]) -> bool:
    """Drop the oldest tool call (thought, name, arguments, observation), unless it is the only one."""
    if len(trajectory) <= 4:
        return False
    logger.warning("the trajectory exceeds the context window; dropping its oldest tool call")
    for key in list(trajectory)[:4]:
        trajectory.pop(key)
    return True


def _format_trajectory(trajectory: dict[str, Any]) -> str:
    """The trajectory as `[[ ## key ## ]]` sections, as DSPy's ChatAdapter renders input fields."""
    parts = []
    for key, value in trajectory.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"[[ ## {key} ## ]]\n{text}")
    return "\n\n".join(parts)


class _PythonSnippet:
    """The callable behind `python_tool()`."""

    def __init__(self, sandbox: Sandbox | None) -> None:
        self.sandbox = sandbox

    def __call__(self, code: str) -> str:
        result = (self.sandbox or default_sandbox()).run_code(code)
        printed = result.stdout
        if result.ok and result.value is not None:
            printed += ("" if not printed or printed.endswith("\n") else "\n") + (
                result.value if result.value_is_repr else json.dumps(result.value)
            )
        if not result.ok:
            raise FunctionCallError(f"{result.error}" + (f"\nIt printed: {printed[-1000:]}" if printed else ""))
        return printed or "(the code printed nothing; print the result you need)"


def python_tool(sandbox: Sandbox | None = None) -> dspy.Tool:
    """A fixed tool that runs a Python snippet in the sandbox and returns what it prints.

    This is the one function the paper's agents start with. The value of a final expression is shown too, as in a
    notebook cell.
    """
    return dspy.Tool(
        func=_PythonSnippet(sandbox),
        name="python",
        desc="Run a Python code snippet in a sandbox and return what it prints (and the value of a final "
        "expression). Use print() to see results.",
        args={"code": {"type": "string", "description": "Python source code to run"}},
        arg_types={"code": str},
    )
