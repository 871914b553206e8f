"""Looking inside a DSPy program: its modules, its fixed tools, its forged functions, its toolsets, its sandbox.

Nothing here runs the program. What toolforge needs to know of a module it learns from what any `dspy.Module`
has (attributes, `named_parameters()`) and from two duck-typed hooks a module may define; no class is special:

- `cache_settings() -> dict`: the settings besides prompts and tools that shape a run (a ToolAgent's
  `max_iters`); cache keys include them (`toolforge.keys`).
- `tool_settings() -> dict`: how the module runs tools, with two keys, both optional:
  `"sandbox"`, the `Sandbox` its forged functions run in (None: the process-wide one), which is where a revised
  function is checked against a cached record's calls; and `"builtin_tools"`, `{name: what it does}` for tools
  the module offers besides its `tools` (a ToolAgent's `finish`), which the proposer is shown and which no
  forged function may be named. Not part of cache keys.

Fixed tools are the `dspy.Tool`s in a module's `tools` list or dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dspy

from toolforge._text import one_line
from toolforge.errors import ToolforgeError
from toolforge.function import ForgedFunction
from toolforge.toolset import Toolset

if TYPE_CHECKING:
    from toolforge.sandbox import Sandbox

__all__ = [
    "check_examples",
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
        tools = getattr(module, "tools", None)
        items = tools.values() if isinstance(tools, dict) else tools if isinstance(tools, list | tuple) else ()
        found += [(module_name, tool) for tool in items if isinstance(tool, dspy.Tool)]
    return found


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
