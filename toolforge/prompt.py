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
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

import dspy
from dspy.adapters.base import Adapter
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
    schema: str = "{}"  # the call model's JSON schema, as text
    plain: bool = True  # one line, not starting with whitespace: it can be written into a rendered template


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
    line = tool_line(name, description, args, required)
    call_model = tool_call_model(name, json.dumps(args, sort_keys=True))
    return ToolView(
        name=name,
        line=line,
        document=f"{name} {name.replace('_', ' ')} {description} {docs.replace('_', ' ')}",
        call_model=call_model,
        schema=call_model._json_schema,
        plain=len(line.splitlines()) == 1 and not line[:1].isspace(),
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


_LISTING_HEAD = "Tools (call exactly one per turn, by name, with its arguments; `?` marks an optional argument):"
_LISTING_TAIL = 'next_tool_call is {"name": <a tool name>, "args": {<that tool\'s arguments>}}.'


def listing(views: list[ToolView], before: str = "") -> str:
    """The tools section of the step instructions, after the text `before` (joined at once: for a thousand tools
    the section is a large string, and each concatenation would copy it again)."""
    return "\n".join([before + _LISTING_HEAD, *map(_LINE, views), _LISTING_TAIL])


def call_type_of(views: list[ToolView]) -> Any:
    """The `ToolCall` type of the tools shown (shared by every rendering of the same tools)."""
    return union_of(list(map(_CALL_MODEL, views)), list(map(_NAME, views)), list(map(_SCHEMA, views)))


# A view's parts, gathered by `map` over a toolset's views (in C: a Python loop per tool was most of what a revision
# of one tool in a thousand cost beyond that tool).
_LINE, _NAME, _CALL_MODEL, _SCHEMA, _PLAIN = map(attrgetter, ("line", "name", "call_model", "schema", "plain"))


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


def register_step_signature(signature: type[Signature], base: type[Signature], views: list[ToolView]) -> None:
    """Mark `signature` (made from `base`, whose instructions it extends with the listing of `views`) as a ToolAgent
    step: its system message is then rendered once per adapter class, as that of a copy whose `next_tool_call` is
    `PromptToolCall`."""
    with _LOCK:
        _SHOWN[signature] = _Shown(base=base, views=views)


def render_once(signature: type[Signature]) -> None:
    """Let a step adapter render `signature`'s system message once per adapter class (a signature with no tool
    call, e.g. the agent's extract step, shown as it is). A predictor whose signature is replaced (a prompt
    optimizer's new instructions) has a new signature class, which is rendered afresh."""
    with _LOCK:
        if signature in _SHOWN:
            return
        _SHOWN[signature] = _Shown()


@dataclass(slots=True)
class _Shown:
    """A registered signature: a step's base signature and tools (None: shown as it is), and its system message
    per adapter class (the dict only grows; a race renders twice)."""

    base: type[Signature] | None = None
    views: list[ToolView] | None = None
    texts: dict[type, str] = field(default_factory=dict)


_SHOWN: weakref.WeakKeyDictionary[type, _Shown] = weakref.WeakKeyDictionary()

# A step's system message is its base's, rendered once per adapter class with two marker lines where the listing
# goes, and the listing's lines written in between as the adapter writes any line of the instructions. So a new
# toolset version costs the joining of its lines, not a rendering by DSPy of a prompt of every tool (for 1,000 tools,
# DSPy's `textwrap.dedent` of the instructions alone took milliseconds).
_MARKS = ("@@toolforge-listing-start@@", "@@toolforge-listing-end@@")
_TEMPLATES: weakref.WeakKeyDictionary[type, tuple[type[Signature], dict[type, tuple[str, str, str] | None]]] = (
    weakref.WeakKeyDictionary()
)


def _shown_signature(base: type[Signature], instructions: str) -> type[Signature]:
    """`base` with `instructions`, and `next_tool_call` of type `PromptToolCall`."""
    fields = {
        name: (PromptToolCall if name == "next_tool_call" else info.annotation, info)
        for name, info in base.fields.items()
    }
    return dspy.Signature(fields, instructions)  # not `with_updated_fields`, which deep-copies them all


def _templated(adapter_class: type) -> bool:
    """Whether this adapter class writes instructions into the system message line by line, as ChatAdapter does:
    the only form whose rendering a template can stand for exactly."""
    return (
        getattr(adapter_class, "format_system_message", None) is Adapter.format_system_message
        and getattr(adapter_class, "format_task_description", None) is dspy.ChatAdapter.format_task_description
    )


def _template(base: type[Signature], adapter_class: type, render: Any) -> tuple[str, str, str] | None:
    """(before, line separator, after) of the base's step message with the listing cut out; None if the markers do
    not come out once each, joined by a separator (then the whole message is rendered)."""
    with _LOCK:
        found = _TEMPLATES.get(base)
        if found is None:
            instructions = f"{base.instructions}\n\n{_MARKS[0]}\n{_MARKS[1]}"
            found = _TEMPLATES[base] = (_shown_signature(base, instructions), {})
    shown, parts = found
    if adapter_class not in parts:
        text: str = render(shown)
        start, end = text.find(_MARKS[0]), text.find(_MARKS[1])
        if text.count(_MARKS[0]) == 1 and text.count(_MARKS[1]) == 1 and start < end:
            parts[adapter_class] = (text[:start], text[start + len(_MARKS[0]) : end], text[end + len(_MARKS[1]) :])
        else:
            parts[adapter_class] = None
    return parts[adapter_class]


class _RenderedOnce:
    """Mixed into a copy of the configured adapter for a ToolAgent step (see `step_adapter`)."""

    _base_class: ClassVar[type] = object
    _text_inputs_as_chat: ClassVar[bool] = False  # the base formats input fields as ChatAdapter does

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        names = [name for name in signature.input_fields if name in inputs]
        if not (self._text_inputs_as_chat and all(type(inputs[name]) is str for name in names)):
            formatted: str = super().format_user_message_content(  # type: ignore[misc]
                signature, inputs, prefix=prefix, suffix=suffix, main_request=main_request
            )
            return formatted
        # ChatAdapter's message, for inputs that are all text: its `format_field_value` writes a text as it is, after
        # making a pydantic `TypeAdapter(str)` for each value to find that out (a third of a step's CPU time).
        parts = [prefix, *(f"[[ ## {name} ## ]]\n{inputs[name]}" for name in names)]
        if main_request:
            requirements = self.user_message_output_requirements(signature)  # type: ignore[attr-defined]
            if requirements is not None:
                parts.append(requirements)
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def format_system_message(self, signature: type[Signature]) -> str:
        with _LOCK:
            found = _SHOWN.get(signature)
        render = super().format_system_message  # type: ignore[misc]
        if found is None:
            rendered: str = render(signature)
            return rendered
        text = found.texts.get(self._base_class)  # a plain read: the dict only grows, and a race renders twice
        if text is None:
            text = found.texts[self._base_class] = self._render(signature, found, render)
        return text

    def _render(self, signature: type[Signature], found: _Shown, render: Any) -> str:
        if found.base is None or found.views is None:
            text: str = render(signature)
            return text
        parts = None
        if _templated(self._base_class) and all(map(_PLAIN, found.views)):
            parts = _template(found.base, self._base_class, render)
        if parts is None:
            text = render(_shown_signature(found.base, signature.instructions))
            return text
        before, separator, after = parts
        return separator.join([before + _LISTING_HEAD, *map(_LINE, found.views), _LISTING_TAIL + after])


_STEP_CLASSES: dict[type, type] = {}


def step_adapter(adapter: Any) -> Any:
    """A copy of `adapter` that renders a ToolAgent step's system message once per step signature; the adapter
    itself where it cannot be copied so (then the prompt shows the tool-call schema too, as DSPy writes it)."""
    base = type(adapter)
    if not callable(getattr(adapter, "format_system_message", None)):
        return adapter
    cls = _STEP_CLASSES.get(base)
    if cls is None:
        as_chat = getattr(base, "format_user_message_content", None) is dspy.ChatAdapter.format_user_message_content
        namespace = {"_base_class": base, "_text_inputs_as_chat": as_chat, "__module__": base.__module__}
        cls = type(base.__name__, (_RenderedOnce, base), namespace)
        _STEP_CLASSES[base] = cls
    try:
        step = copy.copy(adapter)
        step.__class__ = cls
    except TypeError:  # a layout that does not take the mixin (__slots__, a C type)
        logger.debug("adapter %s cannot render the step prompt once; DSPy's rendering is used", base.__qualname__)
        return adapter
    return step
