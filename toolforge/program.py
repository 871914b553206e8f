"""Looking inside a DSPy program: its modules, its fixed tools, its forged functions, its toolsets, its sandbox.

Nothing here runs the program. What toolforge needs to know of a module it learns from what any `dspy.Module`
has (attributes, `named_parameters()`) and from two duck-typed hooks a module may define; no class is special:

- `cache_settings() -> dict`: the settings besides prompts and tools that shape a run (a ToolAgent's
  `max_iters`); cache keys include them (`toolforge.keys`).
- `tool_settings() -> dict`: how the module runs tools, with two keys, both optional:
  `"sandbox"`, the `Sandbox` its forged functions run in (None: the process-wide one), which is where a revised
  function is checked against a cached record's calls; and `"builtin_tools"`, `{name: what it does}` for tools
  the module offers besides its `tools` (a ToolAgent's `finish`), which the proposer is shown and which no
  forged function may be named; and `"renders_toolset"`, True for a module (a `toolforge.ReAct`) whose `tools`
  are rebuilt from its own `toolset` on every call, so that the forged functions among them are not fixed tools.
  Not part of cache keys.

Fixed tools are the `dspy.Tool`s in a module's `tools` list or dict (a `toolforge.ReAct`'s forged ones aside).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dspy

from toolforge._text import one_line
from toolforge.errors import ToolforgeError, ToolsetError
from toolforge.function import ForgedFunction
from toolforge.toolset import Toolset

if TYPE_CHECKING:
    from toolforge.sandbox import Sandbox

logger = logging.getLogger(__name__)

__all__ = [
    "check_examples",
    "check_toolset_reaches_agent",
    "describe_fixed_tools",
    "find_toolset",
    "fixed_tool_names",
    "fixed_tools",
    "forged_functions",
    "named_modules",
    "sandbox_of",
]


def named_modules(program: dspy.Module) -> list[tuple[str, dspy.Module]]:
    """The program and its sub-modules, found through attributes, lists and dicts (without walking their data)."""
    found: list[tuple[str, dspy.Module]] = []
    seen: set[int] = set()

    def visit(name: str, module: dspy.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        found.append((name, module))
        for attribute, value in module.__dict__.items():
            if attribute == "history" and isinstance(value, list):  # DSPy's log of the module's LM calls (up to
                continue  # 10,000 of them), never a module; a sub-module the user named `history` is still found
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


def fixed_tools(modules: list[tuple[str, dspy.Module]]) -> list[tuple[str, dspy.Tool]]:
    """The fixed tools (`dspy.Tool`s in a `tools` list or dict) of the modules `named_modules()` found."""
    found = []
    for module_name, module in modules:
        live = _tool_settings(module).get("renders_toolset", False)
        found += [(module_name, tool) for tool in _tools(module) if not (live and _forged_function(tool))]
    return found


def _tools(module: dspy.Module) -> list[dspy.Tool]:
    """The `dspy.Tool`s in the module's `tools` list or dict."""
    tools = getattr(module, "tools", None)
    items = tools.values() if isinstance(tools, dict) else tools if isinstance(tools, list | tuple) else ()
    return [tool for tool in items if isinstance(tool, dspy.Tool)]


def _forged_function(tool: dspy.Tool) -> ForgedFunction | None:
    """The forged function a tool of `Toolset.as_tools()` runs; None for any other tool."""
    function = getattr(tool.func, "function", None)
    return function if isinstance(function, ForgedFunction) else None


def _tool_settings(module: dspy.Module) -> dict[str, Any]:
    """What the module's `tool_settings()` hook says, or nothing for a module without one."""
    hook = getattr(module, "tool_settings", None)
    return hook() if callable(hook) else {}


def fixed_tool_names(program: dspy.Module) -> set[str]:
    """Names a forged function must not take: the program's fixed tools and its modules' built-in tools."""
    return set(_fixed_tool_lines(program))


def describe_fixed_tools(program: dspy.Module) -> str:
    """The program's fixed tools, a line each with what it does, for the proposer: it should know what the agent
    already has before it forges more (and which names are taken)."""
    return "\n".join(_fixed_tool_lines(program).values())


def _fixed_tool_lines(program: dspy.Module) -> dict[str, str]:
    """Each fixed tool's name and its line for the proposer, then the modules' built-in tools (`finish`)."""
    modules = named_modules(program)
    lines = {
        tool.name: f"- {tool.name}: {one_line(tool.desc or '(no description)', 200)}"
        for _, tool in fixed_tools(modules)
    }
    for _, module in modules:
        for name, desc in _tool_settings(module).get("builtin_tools", {}).items():
            lines.setdefault(name, f"- {name}: {desc}")
    return lines


def forged_functions(program: dspy.Module) -> dict[str, ForgedFunction]:
    """The program's forged functions by name (the first toolset holding a name wins, as its tool would)."""
    functions: dict[str, ForgedFunction] = {}
    for _, parameter in program.named_parameters():
        if isinstance(parameter, Toolset):
            for function in parameter:
                functions.setdefault(function.name, function)
    return functions


def sandbox_of(program: dspy.Module) -> Sandbox | None:
    """The sandbox the program's forged functions run in (the first a module's `tool_settings()` names), or None
    for the default one."""
    for _, module in named_modules(program):
        sandbox: Sandbox | None = _tool_settings(module).get("sandbox")
        if sandbox is not None:
            return sandbox
    return None


def find_toolset(student: dspy.Module, name: str | None = None) -> tuple[str, Toolset]:
    """The (name, toolset) the program holds: the only one, or the one called `name`; a clear error otherwise."""
    if not isinstance(student, dspy.Module):
        raise ToolforgeError(f"compile needs a dspy.Module as student, got {type(student).__name__}")
    found = [(n, p) for n, p in student.named_parameters() if isinstance(p, Toolset)]
    if not found:
        raise ToolforgeError(
            f"the student ({type(student).__name__}) holds no Toolset to train; use tf.ToolAgent(...) or add "
            "`self.toolset = tf.Toolset()` in its __init__ and pass `self.toolset.as_tools()` to its tools"
        )
    if name is None:
        if len(found) > 1:
            raise ToolforgeError(
                f"the student holds several toolsets ({', '.join(n for n, _ in found)}); choose one by name: "
                "compile(..., toolset='<name>')"
            )
        return found[0]
    for n, p in found:
        if n == name:
            return n, p
    raise ToolforgeError(f"no toolset named {name!r} in the student; it has: {', '.join(n for n, _ in found)}")


def check_toolset_reaches_agent(program: dspy.Module, param_name: str) -> None:
    """Refuse, at once, a program in which training the toolset `param_name` would change nothing its agent sees.

    Two patterns do that: a module whose `tools` hold the toolset's functions as fixed tools (`dspy.ReAct(sig,
    tools=self.toolset.as_tools())` in `__init__`: DSPy's ReAct fixes its tools and prompt when it is built), and a
    toolset held under two names (the optimizer replaces the one it trains, and a module reading the other never
    sees it). A plain `dspy.ReAct` beside an empty toolset may be the first pattern too, which nothing in the
    program shows: that is only warned about.

    Raises:
        ToolsetError: Naming the module, the functions or names, and the fix (`toolforge.ReAct`).
    """
    toolset = dict(program.named_parameters())[param_name]
    modules = named_modules(program)
    for module_name, module in modules:
        if _tool_settings(module).get("renders_toolset", False):
            continue
        frozen = [f.name for tool in _tools(module) if (f := _forged_function(tool)) is not None and f.name in toolset]
        if frozen:
            raise ToolsetError(
                f"{module_name} ({type(module).__name__}) holds the functions of toolset {param_name!r} "
                f"({', '.join(frozen)}) as fixed tools, frozen when it was built, so training would change a toolset "
                f"it never sees; build it as toolforge.ReAct(signature, tools=[fixed tools], toolset=...) instead of "
                "dspy.ReAct(signature, tools=toolset.as_tools() + [...])"
            )
    holders = [
        f"{module_name.removeprefix('self').lstrip('.')}.{attribute}".lstrip(".")
        for module_name, module in modules
        for attribute, value in module.__dict__.items()
        if value is toolset
    ]
    if len(holders) > 1:
        raise ToolsetError(
            f"the toolset {param_name!r} is held under {len(holders)} names ({', '.join(holders)}); compile replaces "
            f"{param_name!r} only, so a module reading another never sees a trained function; hold it in one place "
            "(e.g. only in toolforge.ReAct(..., toolset=...), read back as self.react.toolset)"
        )
    owner = next((m for _, m in modules if any(v is toolset for v in m.__dict__.values())), None)
    react = [a for a, v in owner.__dict__.items() if type(v) is dspy.ReAct] if owner is not None else []
    if react and not len(toolset):
        logger.warning(
            "self.%s is a dspy.ReAct beside the toolset %r being trained: if it was built over toolset.as_tools(), "
            "it never sees a trained function (DSPy's ReAct fixes its tools when it is built); use "
            "toolforge.ReAct(signature, tools=[fixed tools], toolset=...) instead",
            ".".join(filter(None, [param_name.rpartition(".")[0], react[0]])),
            param_name,
        )


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
