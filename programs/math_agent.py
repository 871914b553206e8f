"""Math word problems (interest, gcd/lcm, counting, unit conversion, dates, ...) for a ToolAgent.

As in the paper, the agent starts with one function, `python` (run a snippet, see what it prints); training forges
the rest. Data: `programs/data/math_{train,test}.jsonl` (200 each, from `programs/data/generate.py`).
"""

from __future__ import annotations

import dspy

import toolforge as tf
from programs._common import load, numeric_metric

INSTRUCTIONS = "Solve the math problem. Give the final answer as a number."


def build_program() -> tf.ToolAgent:
    signature = dspy.Signature("question -> answer: float", INSTRUCTIONS)
    return tf.ToolAgent(signature, tools=[tf.python_tool()], max_iters=5)


def load_dataset(split: str, limit: int | None = None) -> list[dspy.Example]:
    return load("math", split, ["question"], limit)


metric = numeric_metric
