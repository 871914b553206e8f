"""What a ToolAgent's LM reads about its tools: each tool once, as one line, built once per tool and per set shown.

A tool is written as `name(arg: type, opt?: type = default): description`, with an argument's own description in
parentheses after its type. Its tool-call schema (`toolforge.schema`) still constrains a structured-output LM's reply,
but it is no longer written into the prompt as well: DSPy's adapters write an output field's whole JSON schema into
the system message, which for ToolAgent's union of call models repeated every tool (about 510 characters a tool,
half of a prompt). So the step's system message is rendered from a copy of the step signature whose `next_tool_call`
has a small fixed type, once per step signature and adapter class (`step_adapter`), and reused by every request;
the request's own signature, the one structured outputs and parsing use, keeps the full `ToolCall` type.

Built once and shared: a forged function's view (its line, its retrieval document, its call model) is kept per
interface in a weak-value map, so that every rendering, agent copy and thread that shows the function reuses it,
and a revision of one function rebuilds that function's view alone.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import dspy
from pydantic import BaseModel, GetJsonSchemaHandler

from toolforge.schema import tool_call_model, union_of

if TYPE_CHECKING:
    from dspy.signatures.signature import Signature

    from toolforge.function import ForgedFunction

__all__ = ["ToolView", "function_view", "render_once", "step_adapter", "tool_line", "tool_view", "type_text"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ToolView:
    """One tool as the LM sees it: its listing line, the text retrieval ranks it by, and its call model."""

    name: str
    line: str
    document: str
    call_model: Any


def function_view(function: ForgedFunction) -> ToolView:
    """The view of a forged function, made once per interface while anything holds it."""
    key = function.interface_hash
    with _LOCK:
        view = _VIEWS.get(key)
    if view is None:
        properties = function.parameters["properties"]
        view = _make_view(function.name, function.description, properties, function.parameters.get("required", []))
        with _LOCK:
            view = _VIEWS.setdefault(key, view)
    return view


def tool_view(tool: dspy.Tool) -> ToolView:
    """The view of a fixed tool (a `dspy.Tool`): its arguments without a default are required."""
    forged = getattr(tool.func, "function", None)
    if forged is not None and getattr(forged, "interface_hash", None) is not None:
        return function_view(forged)
    args = tool.args or {}
    required = [name for name, schema in args.items() if not (isinstance(schema, dict) and "default" in schema)]
    return _make_view(tool.name, tool.desc or "", args, required)


_LOCK = threading.Lock()
_VIEWS: weakref.WeakValueDictionary[str, ToolView] = weakref.WeakValueDictionary()


def _make_view(name: str, description: str, args: dict[str, Any], required: list[str]) -> ToolView:
    docs = " ".join(
        f"{arg} {schema.get('description', '')}" if isinstance(schema, dict) else arg for arg, schema in args.items()
    )
    return ToolView(
        name=name,
        line=tool_line(name, description, args, required),
        document=f"{name} {name.replace('_', ' ')} {description} {docs.replace('_', ' ')}",
        call_model=tool_call_model(name, json.dumps(args, sort_keys=True)),
    )


def tool_line(name: str, description: str, args: dict[str, Any], required: list[str]) -> str:
    """`name(a: number, b?: string = "x" (what b is)): description`, on one line."""
    parts = []
    for arg, schema in args.items():
        schema = schema if isinstance(schema, dict) else {}
        text = f"{arg}{'' if arg in required else '?'}: {type_text(schema)}"
        if "default" in schema:
            text += f" = {json.dumps(schema['default'], ensure_ascii=False)}"
        doc = " ".join(str(schema.get("description", "")).split())
        parts.append(f"{text} ({doc})" if doc else text)
    return f"{name}({', '.join(parts)}): {' '.join(description.split())}"


def type_text(schema: Any) -> str:
    """A JSON Schema as a short type: `number`, `list[string]`, `dict[string, number]`, `{x: number}`, `"a"|"b"`."""
    if not isinstance(schema, dict):
        return "any"
    if schema.get("enum"):
        return "|".join(json.dumps(value, ensure_ascii=False) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return "|".join(dict.fromkeys(type_text(member) for member in schema[key]))
    if isinstance(schema.get("$ref"), str):
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(type_text({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"list[{type_text(schema.get('items', {}))}]"
    if kind == "object":
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            required = schema.get("required", [])
            return (
                "{"
                + ", ".join(
                    f"{key}{'' if key in required else '?'}: {type_text(value)}" for key, value in properties.items()
                )
                + "}"
            )
        values = schema.get("additionalProperties")
        return f"dict[string, {type_text(values)}]" if isinstance(values, dict) and values else "object"
    return kind if isinstance(kind, str) else "any"


def listing(views: list[ToolView]) -> str:
    """The tools section of the step instructions."""
    lines = ["Tools (call exactly one per turn, by name, with its arguments; `?` marks an optional argument):"]
    lines += [view.line for view in views]
    lines.append('next_tool_call is {"name": <a tool name>, "args": {<that tool\'s arguments>}}.')
    return "\n".join(lines)


def call_type_of(views: list[ToolView]) -> Any:
    """The `ToolCall` type of the tools shown (shared by every rendering of the same tools)."""
    return union_of([view.call_model for view in views])


# ----------------------------------------------------------------------------------- the step's system message
class PromptToolCall(BaseModel):
    """The type of `next_tool_call` as the system message shows it: the listing says each tool's arguments."""

    name: str
    args: dict[str, Any]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"name": {"type": "string"}, "args": {"type": "object"}},
            "required": ["name", "args"],
        }


PromptToolCall.__name__ = PromptToolCall.__qualname__ = "ToolCall"


def register_step_signature(signature: type[Signature]) -> None:
    """Mark `signature` as a ToolAgent step: its system message is then rendered from a copy whose `next_tool_call`
    is `PromptToolCall`, once per adapter class."""
    fields = {
        name: (PromptToolCall if name == "next_tool_call" else field.annotation, field)
        for name, field in signature.fields.items()
    }
    shown = dspy.Signature(fields, signature.instructions)  # not `with_updated_fields`, which deep-copies them all
    with _LOCK:
        _SHOWN[signature] = (shown, {})


def render_once(signature: type[Signature]) -> None:
    """Let a step adapter render `signature`'s system message once per adapter class (a signature with no tool
    call, e.g. the agent's extract step, shown as it is). A predictor whose signature is replaced (a prompt
    optimizer's new instructions) has a new signature class, which is rendered afresh."""
    with _LOCK:
        if signature in _SHOWN:
            return
        _SHOWN[signature] = (signature, {})


_SHOWN: weakref.WeakKeyDictionary[type, tuple[type, dict[type, str]]] = weakref.WeakKeyDictionary()


class _RenderedOnce:
    """Mixed into a copy of the configured adapter for a ToolAgent step (see `step_adapter`)."""

    _base_class: ClassVar[type] = object

    def format_system_message(self, signature: type[Signature]) -> str:
        with _LOCK:
            found = _SHOWN.get(signature)
        if found is None:
            rendered: str = super().format_system_message(signature)  # type: ignore[misc]
            return rendered
        shown, texts = found
        text = texts.get(self._base_class)  # a plain read: the dict only grows, and a race renders twice
        if text is None:
            text = texts[self._base_class] = super().format_system_message(shown)  # type: ignore[misc]
        return text


_STEP_CLASSES: dict[type, type] = {}


def step_adapter(adapter: Any) -> Any:
    """A copy of `adapter` that renders a ToolAgent step's system message once per step signature; the adapter
    itself where it cannot be copied so (then the prompt shows the tool-call schema too, as DSPy writes it)."""
    base = type(adapter)
    if not callable(getattr(adapter, "format_system_message", None)):
        return adapter
    cls = _STEP_CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (_RenderedOnce, base), {"_base_class": base, "__module__": base.__module__})
        _STEP_CLASSES[base] = cls
    try:
        step = copy.copy(adapter)
        step.__class__ = cls
    except TypeError:  # a layout that does not take the mixin (__slots__, a C type)
        logger.debug("adapter %s cannot render the step prompt once; DSPy's rendering is used", base.__qualname__)
        return adapter
    return step
