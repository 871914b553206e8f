"""ToolAgent's tool-call schema: each tool's JSON Schema `parameters` compiled into a pydantic call model.

`call_type(tools)` is one type per set of tools, `ToolCall`, whose JSON schema is the closed union of one model per
tool, `{"name": Literal[tool], "args": <its arguments>}`, and which parses a call into that tool's model. ToolAgent
gives its step signature this type for `next_tool_call`, so that a schema-constrained LM can only write a call that
names a tool with that tool's arguments; it is one class (not a `Union`), so DSPy's adapters name it `ToolCall` in
the prompt and build it with no per-request work (its schema is made once, as text). The schemas compiled here are
the ones `ForgedFunction` (function.py) has already checked; a fixed tool's come from `dspy.Tool.args`.

An argument name may be any string (each field is keyed by its alias), an object argument with declared properties
becomes a model of its own, and an open mapping is written as a list of `{"key": ..., "value": ...}` entries (see
`docs/design-notes.md`). Models live in weak-value maps keyed by interface: as long as a rendering holds a tool's
model, any other rendering of the same interface reuses it, with no size limit (an `lru_cache` of 512 models rebuilt
every model of a toolset of 1,000 functions on each revision).
"""

from __future__ import annotations

import functools
import json
import keyword
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic_core import core_schema as cs

if TYPE_CHECKING:
    import dspy

__all__ = ["call_type", "rebuild_call"]


_JSON_TYPES: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool, "null": type(None)}


def _python_type(schema: dict[str, Any]) -> Any:
    """A Python type for a JSON Schema (the common cases; anything else is `Any`)."""
    if schema.get("enum"):
        return Literal[tuple(schema["enum"])]
    kind = schema.get("type")
    if isinstance(kind, list):
        members = tuple(_python_type({**schema, "type": k}) for k in kind)
        return Union[members] if len(members) > 1 else members[0]  # noqa: UP007
    if kind == "array":
        items = schema.get("items")
        return list[_python_type(items if isinstance(items, dict) else {})]  # type: ignore[misc]
    if kind == "object":
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            return _object_model(json.dumps(properties, sort_keys=True))
        values = schema.get("additionalProperties")
        return _mapping_type(json.dumps(values if isinstance(values, dict) else {}, sort_keys=True))
    return _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any


@functools.lru_cache(maxsize=256)
def _object_model(properties_json: str) -> Any:
    """An object argument with declared properties, as a model of its own (so that its schema lists them)."""
    return _keyed_model("Object", json.loads(properties_json))


def _keyed_model(model_name: str, properties: dict[str, Any]) -> Any:
    """A model with a field per property, each named by its key as an alias: a key is any string (`rainy days`,
    `_x`, `model_config`), which a pydantic field name cannot always be (such a field gets a name of its own; the
    others keep the key, so `args.principal` reads as expected). Dumps use the keys.

    No field is required when parsing: a missing argument reaches the tool, whose error the agent sees as an
    observation. DSPy's structured-output schema still requires every property.
    """
    fields: dict[str, Any] = {}
    for index, (key, schema) in enumerate(properties.items()):
        schema = schema if isinstance(schema, dict) else {}
        field = Field(default=None, alias=key, description=schema.get("description"))
        usable = key.isidentifier() and not keyword.iskeyword(key) and not key.startswith("_")
        name = key if usable and not hasattr(BaseModel, key) else f"field_{index}"
        while name in fields or (name != key and name in properties):  # a key may itself be "field_0"
            name += "_"
        fields[name] = (_python_type(schema), field)
    config = ConfigDict(extra="allow", serialize_by_alias=True)  # DSPy dumps demos without by_alias
    return create_model(model_name, __config__=config, **fields)


@functools.lru_cache(maxsize=256)
def _mapping_type(values_json: str) -> Any:
    """An open mapping argument (an object without declared properties, such as `dict[str, float]`).

    Structured outputs close every object schema (DSPy's, like OpenAI's strict mode, sets `additionalProperties:
    false` and requires the properties listed), which leaves an open mapping room for `{}` alone. So the LM writes
    it as a list of `{"key": ..., "value": ...}` entries, which any schema can say, and the function gets the dict
    back; a dict written as such (an LM without structured outputs, a demo) is taken too.
    """
    value_type = _python_type(json.loads(values_json))
    entry = create_model("Entry", key=(str, ...), value=(value_type, ...))
    schema = _inline_refs(TypeAdapter(list[entry]).json_schema())  # type: ignore[valid-type]
    schema["description"] = 'a mapping, written as a list of {"key": ..., "value": ...} entries'

    def from_entries(value: Any) -> Any:
        if isinstance(value, list) and all(
            isinstance(item, dict) and {"key", "value"} <= item.keys() for item in value
        ):
            return {str(item["key"]): item["value"] for item in value}
        return value

    return Annotated[dict[str, value_type], BeforeValidator(from_entries), WithJsonSchema(schema)]  # type: ignore[valid-type]


def call_type(tools: dict[str, dspy.Tool]) -> Any:
    """The `ToolCall` type of these tools: one closed model per tool, `{"name": Literal[tool], "args": <its
    arguments>}`, behind one class.

    Tying each tool's name to its own argument model means a schema-constrained LM can only write valid calls.
    """
    return union_of(
        [tool_call_model(tool.name, json.dumps(tool.args or {}, sort_keys=True)) for tool in tools.values()]
    )


def union_of(models: Sequence[Any], names: Sequence[str] | None = None, texts: Sequence[str] | None = None) -> Any:
    """The `ToolCall` class over these call models (in this order), made once while it is in use. `names` and
    `texts` are the models' tool names and JSON schema texts, where the caller holds them already."""
    key = tuple(models)
    with _LOCK:
        found = _UNIONS.get(key)
        if found is None:
            names = [model._interface[0] for model in key] if names is None else names
            texts = tuple(model._json_schema for model in key) if texts is None else tuple(texts)
            found = _UNIONS[key] = _make_union(key, names, texts)
    return found


class ToolCallType:
    """Base of the `ToolCall` classes `union_of` makes: a call is parsed into the model of the tool it names.

    Not a pydantic model itself: pydantic builds a `Union` of many models anew for every `TypeAdapter` (DSPy makes
    one per request), and this class's core schema is a single function, whatever the number of tools.
    """

    _models: ClassVar[dict[str, Any]] = {}
    _texts: ClassVar[Sequence[str]] = ()  # each model's JSON schema, as text
    _json_schema: ClassVar[str | None] = None  # the union's, joined on first use

    @classmethod
    def schema_text(cls) -> str:
        """The closed union's JSON schema as text: the models' schema texts joined as `json.dumps({"anyOf": [...]})`
        writes them, when it is first needed (a request with structured outputs); no model's schema is parsed or
        written again, so a revision of one tool costs that tool's model, and for ChatAdapter's requests, which do
        not carry the schema, no text of every tool at all."""
        text: str | None = cls.__dict__.get("_json_schema")
        if text is None:
            texts = cls._texts
            text = texts[0] if len(texts) == 1 else '{"anyOf": [' + ", ".join(texts) + "]}"
            cls._json_schema = text  # a race joins twice, to the same text
        return text

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return cs.no_info_plain_validator_function(
            cls._validate,
            serialization=cs.plain_serializer_function_ser_schema(_dump_call),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(cls.schema_text())  # a copy per use: DSPy edits schemas in place
        return schema

    @classmethod
    def _validate(cls, value: Any) -> Any:
        if isinstance(value, _ToolCall) and cls._models.get(value._interface[0]) is type(value):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True, by_alias=True)
        if not isinstance(value, dict):
            raise ValueError(f'a tool call is an object {{"name": ..., "args": {{...}}}}, got {value!r:.100}')
        model = cls._models.get(value.get("name"))  # type: ignore[arg-type]
        if model is None:
            raise ValueError(f"no tool is named {value.get('name')!r:.60}; call one of {sorted(cls._models)}")
        return model.model_validate(value)


def _dump_call(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value


def _make_union(models: tuple[Any, ...], names: Sequence[str], texts: Sequence[str]) -> Any:
    namespace = {"_models": dict(zip(names, models, strict=True)), "_texts": texts, "__module__": __name__}
    call_type: Any = type("ToolCall", (ToolCallType,), namespace)
    # DSPy makes a `TypeAdapter` of an output field's type for every reply it parses; pydantic builds one from
    # scratch unless the type carries its own core schema, validator and serializer, as a model class does.
    adapter: TypeAdapter[Any] = TypeAdapter(call_type)
    call_type.__pydantic_core_schema__ = adapter.core_schema
    call_type.__pydantic_validator__ = adapter.validator
    call_type.__pydantic_serializer__ = adapter.serializer
    return call_type


class _ToolCall(BaseModel):
    """Base of the per-tool call models. They are made at run time, so pickle cannot find them by name; an instance
    pickles as the tool's interface and its data instead (DSPy's optimizers hash and copy demos with pickle)."""

    model_config = ConfigDict(extra="forbid")
    _interface: ClassVar[tuple[str, str]] = ("", "{}")
    _json_schema: ClassVar[str | None] = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        # DSPy's adapters generate a field type's JSON schema anew for every request; for the union of call models
        # that was most of a request's CPU time. Each model's is made once, with its arguments' model inlined, and
        # kept as JSON text: every use gets its own copy (DSPy's structured-output code edits schemas in place).
        cached = cls.__dict__.get("_json_schema")
        schema: dict[str, Any] = handler(core_schema) if cached is None else json.loads(cached)
        return schema

    def __reduce__(self) -> tuple[Any, tuple[str, str, dict[str, Any]]]:
        name, args_json = self._interface
        return rebuild_call, (name, args_json, self.model_dump(exclude_unset=True, by_alias=True))


def rebuild_call(name: str, args_json: str, data: dict[str, Any]) -> Any:
    """A call model instance from its tool's interface and its data (what a pickled instance holds)."""
    return _tool_call_model(name, args_json).model_validate(data)


# A pickled call names its rebuilder as `toolforge.agent._rebuild_call`, where this code lived first, and agent.py
# holds it under that name. The name is in the pickle's bytes, and DSPy's BootstrapFewShot seeds its choice among a
# ToolAgent's demos with a hash of their pickles: another name would change which demos it picks (and a program
# pickled earlier would not load).
rebuild_call.__module__ = "toolforge.agent"
rebuild_call.__name__ = rebuild_call.__qualname__ = "_rebuild_call"


def tool_call_model(name: str, args_json: str) -> Any:
    """The call model of one tool, made once while any rendering holds it (a revised toolset repeats most tools)."""
    key = (name, args_json)
    with _LOCK:
        found = _MODELS.get(key)
        if found is None:
            found = _MODELS[key] = _make_call_model(name, args_json)
    return found


_tool_call_model = tool_call_model  # the name `rebuild_call` and earlier pickles' readers know
_LOCK = threading.RLock()
_MODELS: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()
_UNIONS: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()


def _make_call_model(name: str, args_json: str) -> Any:
    stem = "".join(part.capitalize() for part in name.split("_")) or "Tool"
    args_model = _keyed_model(f"{stem}Args", json.loads(args_json))
    model = create_model(
        f"{stem}Call",
        __base__=_ToolCall,
        name=(Literal[name], ...),  # type: ignore[arg-type]
        args=(args_model, Field(default_factory=args_model)),
    )
    model._interface = (name, args_json)
    model._json_schema = json.dumps(_closed(_inline_refs(model.model_json_schema())))
    return model


def _closed(node: Any, in_properties: bool = False) -> Any:
    """A schema as structured outputs take it, and small: every object closed, with all its properties required
    (what DSPy's `enforce_required` does, which does not reach into `anyOf`, where each tool's schema now is), and
    no titles (the names pydantic makes up; the prompt's listing says what each tool and argument is)."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # a mapping of property names to schemas: every key is a name, not a keyword
        return {key: _closed(value) for key, value in node.items()}
    out = {
        key: _closed(value, in_properties=key == "properties")
        for key, value in node.items()
        if not (key == "title" and isinstance(value, str))
    }
    if out.get("type") == "object":
        properties = out.setdefault("properties", {})
        out["required"] = list(properties)
        out["additionalProperties"] = False
    return out


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every `{"$ref": "#/$defs/X"}` replaced by X itself (the call models do not recurse)."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):  # with its siblings (a field's default, description) kept beside it
                siblings = {key: inline(value) for key, value in node.items() if key != "$ref"}
                return {**inline(definitions[ref.removeprefix("#/$defs/")]), **siblings}
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
