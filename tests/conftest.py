"""Shared fixtures: isolation from the user's DSPy cache, a small sandbox, and function factories."""

from __future__ import annotations

import os

# LiteLLM, when a test imports it, would try to fetch its price list from GitHub: tests make no network requests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import pytest

import toolforge as tf

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}


@pytest.fixture(autouse=True)
def _isolated_dspy_cache():
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    yield


@pytest.fixture(scope="session")
def sandbox():
    with tf.Sandbox(workers=2, timeout_s=2.0, memory_mb=128) as box:
        yield box


def make_function(name: str = "add", code: str | None = None, **overrides) -> tf.ForgedFunction:
    fields = {
        "name": name,
        "description": f"Return a + b ({name}).",
        "parameters": ADD_SCHEMA,
        "code": code if code is not None else f"def {name}(a, b):\n    return a + b\n",
    }
    fields.update(overrides)
    return tf.ForgedFunction(**fields)


def snippet_function(body: str, name: str = "hostile") -> tf.ForgedFunction:
    """A no-argument forged function whose body is `body` (indented for you)."""
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return tf.ForgedFunction(
        name=name,
        description="A function under test.",
        parameters={"type": "object", "properties": {}, "required": []},
        code=f"def {name}():\n{indented}\n",
    )
