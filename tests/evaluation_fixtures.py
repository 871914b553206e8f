"""A small ToolAgent task for evaluation tests: questions like "double 3" answered through forged functions."""

from __future__ import annotations

from typing import Any

import dspy

import toolforge as tf
from tests.scripted_lm import scripted_lm, tool_agent_script

X_SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def unary(name: str, expression: str, description: str | None = None, deterministic: bool = True) -> tf.ForgedFunction:
    return tf.ForgedFunction(
        name,
        description or f"Return {expression} for a number x.",
        X_SCHEMA,
        f"def {name}(x):\n    return {expression}\n",
        deterministic=deterministic,
    )


DOUBLE = unary("double", "x * 2")
SQUARE = unary("square", "x * x")


def choose(question: str) -> tuple[str, dict[str, Any]] | None:
    kind, number = question.split()
    if kind in ("double", "square", "triple", "noisy"):
        return kind, {"x": float(number)}
    if kind == "crash":
        raise RuntimeError("the LM service is down")
    return None


def make_lm(**kwargs: Any) -> tuple[dspy.LM, Any]:
    return scripted_lm(tool_agent_script(choose), **kwargs)


def make_program(toolset: tf.Toolset | None = None, sandbox: tf.Sandbox | None = None) -> tf.ToolAgent:
    return tf.ToolAgent(
        "question -> answer: float",
        toolset=toolset if toolset is not None else tf.Toolset([DOUBLE, SQUARE]),
        sandbox=sandbox,
    )


def make_examples(n: int = 10) -> list[dspy.Example]:
    """Every fifth example asks for a square (20%); the others for a double."""
    examples = []
    for i in range(n):
        kind = "square" if i % 5 == 0 else "double"
        answer = float(i * i) if kind == "square" else float(i * 2)
        examples.append(dspy.Example(question=f"{kind} {i}", answer=answer).with_inputs("question"))
    return examples


def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return abs(float(prediction.answer) - float(example.answer)) < 1e-9


class CountingSandbox(tf.Sandbox):
    """A real sandbox that counts the calls it runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, function: tf.ForgedFunction, arguments: dict[str, Any]) -> tf.CallResult:
        self.calls += 1
        return super().call(function, arguments)
