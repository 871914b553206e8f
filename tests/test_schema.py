"""The tool-call models compiled from JSON Schema (toolforge.schema); ToolAgent's tests exercise them end to end."""

from __future__ import annotations

import json
import pickle

import dspy
from pydantic import TypeAdapter

from toolforge import schema
from toolforge.schema import call_type


def _tools() -> dict[str, dspy.Tool]:
    def pick(x: int, weights: dict[str, float]) -> int:
        return x

    return {"pick": dspy.Tool(pick), "finish": dspy.Tool(lambda: "Completed.", name="finish", args={})}


def test_call_models_are_cached_by_interface():
    assert call_type(_tools()) is call_type(_tools())


def test_a_pickled_call_names_its_rebuilder_where_it_first_lived():
    """DSPy's BootstrapFewShot seeds its choice of demos with a hash of their pickles: the bytes must not move."""
    call = TypeAdapter(call_type(_tools())).validate_python(
        {"name": "pick", "args": {"x": 1, "weights": [{"key": "a", "value": 2}]}}
    )
    data = pickle.dumps(call)
    assert data.startswith(b"\x80\x04\x95") and b"\x8c\x0ftoolforge.agent\x94\x8c\r_rebuild_call\x94" in data
    assert pickle.loads(data) == call
    assert call.args.model_dump(by_alias=True) == {"x": 1, "weights": {"a": 2.0}}


def test_a_union_s_schema_is_its_models_schemas_as_json_writes_them():
    models = [schema.tool_call_model(name, json.dumps({"x": {"type": "number"}})) for name in ("a", "b", "c")]
    union = schema.union_of(models)
    expected = {"anyOf": [json.loads(model._json_schema) for model in models]}
    assert union.schema_text() == json.dumps(expected)
    assert TypeAdapter(union).json_schema() == expected


def test_a_union_s_type_adapter_reuses_its_validator():
    union = schema.union_of([schema.tool_call_model("a", json.dumps({"x": {"type": "number"}}))])
    adapter = TypeAdapter(union)
    assert adapter.validator is union.__pydantic_validator__
    assert adapter.validate_python({"name": "a", "args": {"x": 2}}).args.x == 2.0
