"""`ReAct`: DSPy's own `dspy.ReAct`, with a trainable `Toolset` whose functions it offers as they are now.

`dspy.ReAct` writes its tool list into its react predictor's instructions (and the tool names into the type of
`next_tool_name`) when it is built, so a `dspy.ReAct(sig, tools=toolset.as_tools())` never sees a function trained
after that: the optimizer would train a toolset the agent does not use. This subclass keeps the tool list out of
the instructions a prompt optimizer tunes: its react predictor holds the instructions without the list, and each
call renders the list of the current tools (fixed tools, the toolset's functions, `finish`) after them, in DSPy's
own words. So:

- assigning a new toolset (`react.toolset = trained`, which is what `FunctionOptimizer` does on its copy) or
  loading one (`program.load(...)`) changes what the LM sees on the next call;
- the predictors (`react`, `extract.predict`) are DSPy's, found by `named_predictors()`: GEPA, MIPROv2 and
  BootstrapFewShot tune their instructions and demos, and a new toolset keeps what they learned;
- with the toolset it was built with, the prompt is the one `dspy.ReAct` would have built, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import dspy
from dspy.signatures.signature import Signature, ensure_signature
from dspy.utils.exceptions import AdapterParseError

from toolforge.errors import ToolforgeError
from toolforge.sandbox import Sandbox
from toolforge.tools import FINISH, fixed_tools
from toolforge.toolset import Toolset

__all__ = ["ReAct"]

logger = logging.getLogger(__name__)

_PROMPT_FORMAT = 1  # changes when this module renders the same agent's prompt differently (cache keys hold it)


# How dspy.ReAct lists its tools at the end of its instructions (dspy/predict/react.py); checked at construction.
_LIST_HEAD = "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n"
_LIST_TAIL = "When providing `next_tool_args`, the value inside the field must be in JSON format"


def _listing(tools: dict[str, dspy.Tool]) -> str:
    return "\n".join([_LIST_HEAD, *(f"({i}) {tool}" for i, tool in enumerate(tools.values(), 1)), _LIST_TAIL])


def _forged_names(tools: Sequence[Any]) -> list[str]:
    """Names of the tools in `tools` that a toolset's `as_tools()` built (their callable carries the function)."""
    return [tool.name for tool in tools if isinstance(tool, dspy.Tool) and hasattr(tool.func, "function")]


class ReAct(dspy.ReAct):
    """`dspy.ReAct` with a trainable toolset: `FunctionOptimizer` trains its functions, and prompt optimizers
    (GEPA, MIPROv2, BootstrapFewShot) tune its predictors, in either order, on the same program.

    Args:
        signature: The task, e.g. `"question -> answer: float"` or a `dspy.Signature` class.
        tools: Fixed tools, as for `dspy.ReAct`: functions, callables or `dspy.Tool`s.
        max_iters: The most tool calls in one run (as `dspy.ReAct`'s).
        toolset: The forged functions (default: an empty toolset, ready to be trained). Pass the toolset itself,
            not `toolset.as_tools()`, and read it back as `react.toolset`.
        sandbox: Where forged functions run (default: the process-wide sandbox).

    Examples:
        >>> self.react = tf.ReAct("question -> answer", tools=[search], toolset=tf.Toolset())   # doctest: +SKIP
        >>> trained = tf.FunctionOptimizer(metric).compile(program, trainset=train)
        >>> tuned = dspy.GEPA(metric=metric, reflection_lm=lm, auto="light").compile(trained, trainset=train)
    """

    tools: dict[str, dspy.Tool]  # what dspy.ReAct.forward calls by name: fixed tools, the toolset's, finish

    def __init__(
        self,
        signature: str | type[Signature],
        tools: Sequence[Callable[..., Any]] = (),
        max_iters: int = 20,
        *,
        toolset: Toolset | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        if callable(tools) or not isinstance(tools, list | tuple):
            raise ToolforgeError(
                f"toolforge.ReAct(tools={tools!r:.60}): give a list of fixed tools, e.g. tools=[search], or () for none"
            )
        forged = _forged_names(tools)
        if forged:
            raise ToolforgeError(
                f"toolforge.ReAct(tools=...) holds forged functions ({', '.join(forged)}), which would be frozen "
                "there; pass their toolset instead: toolforge.ReAct(signature, tools=[fixed tools], toolset=toolset)"
            )
        toolset = toolset if toolset is not None else Toolset()
        if not isinstance(toolset, Toolset):
            raise ToolforgeError(
                f"toolforge.ReAct(toolset=...) must be a Toolset, got {type(toolset).__name__}; wrap functions with "
                "Toolset([...])"
            )
        fixed = fixed_tools(tools)
        self.fixed_tools = fixed
        self.sandbox = sandbox
        super().__init__(ensure_signature(signature), tools=[*fixed, *toolset.as_tools(sandbox)], max_iters=max_iters)
        self._finish = self.tools[FINISH]
        built = self.react.signature
        listing = _listing(self.tools)
        if not built.instructions.endswith("\n" + listing):
            raise ToolforgeError(
                f"toolforge.ReAct does not recognise how DSPy {dspy.__version__} lists ReAct's tools; use "
                "toolforge.ToolAgent, or the DSPy version toolforge is tested with (see pyproject.toml)"
            )
        # The instructions a prompt optimizer tunes: dspy.ReAct's, without the list of tools.
        self.react.signature = built.with_instructions(built.instructions[: -len(listing) - 1])
        self.toolset = toolset

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "toolset":
            if not isinstance(value, Toolset):
                raise ToolforgeError(
                    f"toolforge.ReAct.toolset must be a Toolset, got {type(value).__name__}; wrap functions with "
                    "Toolset([...])"
                )
            self._check_names(value)
        super().__setattr__(name, value)
        if name == "toolset":
            self._refresh()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_render_cache", None)  # keyed on ids of this object's tools, which a copy does not share
        return state

    def _check_names(self, toolset: Toolset) -> None:
        shadowed = sorted(set(toolset.names) & ({t.name for t in self.__dict__.get("fixed_tools", ())} | {FINISH}))
        if shadowed:
            raise ToolforgeError(
                f"toolset functions {shadowed} shadow fixed tools of this ReAct (or its finish); rename the functions"
            )

    # ---------------------------------------------------------------------------------------- the hooks
    def cache_settings(self) -> dict[str, Any]:
        """The settings besides prompts and tools that shape a run (`toolforge.program`'s hook)."""
        return {"max_iters": self.max_iters, "prompt_format": _PROMPT_FORMAT}

    def tool_settings(self) -> dict[str, Any]:
        """Where the forged functions run, and that the forged tools in `tools` are this module's own toolset,
        rendered afresh (`toolforge.program`'s hook): they are not fixed tools."""
        return {"sandbox": self.sandbox, "renders_toolset": True}

    # -------------------------------------------------------------------------------------------- render
    def _rendered(self) -> tuple[dict[str, dspy.Tool], type[Signature]]:
        """The current tools and the react signature that lists them, built once per toolset (the tools run its
        code) and once per toolset interface and react signature (what the LM sees), which a prompt optimizer
        replaces."""
        cache: dict[Any, Any] = self.__dict__.setdefault("_render_cache", {})
        if len(cache) >= 16:
            cache.clear()
        fixed = tuple(id(t) for t in self.fixed_tools)
        tools_key = ("tools", self.toolset.fingerprint, fixed, id(self.sandbox))
        entry = cache.get(tools_key)
        if entry is None:  # each entry holds the objects whose ids key it, so that no id in a live key is reused
            tools = {t.name: t for t in self.fixed_tools}
            tools.update((t.name, t) for t in self.toolset.as_tools(self.sandbox))
            tools[FINISH] = self._finish
            entry = cache[tools_key] = (tools, (tuple(self.fixed_tools), self.sandbox))
        tools = entry[0]
        base = self.react.signature
        signature_key = ("signature", self.toolset.interface_fingerprint, id(base), fixed)
        entry = cache.get(signature_key)
        if entry is None:
            fields = {name: (field.annotation, field) for name, field in base.fields.items()}
            fields["next_tool_name"] = (Literal[tuple(tools)], base.fields["next_tool_name"])
            signature = dspy.Signature(fields, base.instructions + "\n" + _listing(tools))
            entry = cache[signature_key] = (signature, (tuple(self.fixed_tools), base))
        return tools, entry[0]

    def _refresh(self) -> None:
        """Point `tools` (which `dspy.ReAct.forward` calls by name) at the current toolset's: a toolset loaded in
        place (`program.load`) is seen here, at the next call."""
        if "react" in self.__dict__:  # built (a copy being made sets its attributes one by one)
            self._check_names(self.toolset)
            self.tools = self._rendered()[0]

    def forward(self, **input_args: Any) -> dspy.Prediction:
        self._refresh()
        return super().forward(**input_args)

    async def aforward(self, **input_args: Any) -> dspy.Prediction:
        self._refresh()
        return await super().aforward(**input_args)

    # A step reply that does not parse ends the trajectory, as an invalid tool does: dspy.ReAct catches ValueError
    # there, and since DSPy 3.4 a parse failure is an AdapterParseError, which is not one, so a small LM's reply cut
    # at its token limit would otherwise fail the whole example.
    def _call_with_potential_trajectory_truncation(self, module: Any, trajectory: Any, **input_args: Any) -> Any:
        if module is not self.react:
            return super()._call_with_potential_trajectory_truncation(module, trajectory, **input_args)
        try:
            return super()._call_with_potential_trajectory_truncation(
                module, trajectory, signature=self._rendered()[1], **input_args
            )
        except AdapterParseError as err:
            raise ValueError(str(err)) from err

    async def _async_call_with_potential_trajectory_truncation(
        self, module: Any, trajectory: Any, **input_args: Any
    ) -> Any:
        if module is not self.react:
            return await super()._async_call_with_potential_trajectory_truncation(module, trajectory, **input_args)
        try:
            return await super()._async_call_with_potential_trajectory_truncation(
                module, trajectory, signature=self._rendered()[1], **input_args
            )
        except AdapterParseError as err:
            raise ValueError(str(err)) from err
