"""Table word problems like TabMWP: a small table as text plus a question, for a ToolAgent.

The agent starts with `python` only; training forges functions such as column sums, means, medians, rates of
change and filters. Data: `programs/data/table_{train,test}.jsonl` (200 each, from `programs/data/generate.py`).
"""

from __future__ import annotations

import dspy

import toolforge as tf
from programs._common import load, numeric_metric

INSTRUCTIONS = (
    "Answer the question about the table. The table is text: one row per line, cells separated by ' | ', "
    "the first line is the header. Give the final answer as a number."
)


def build_program() -> tf.ToolAgent:
    signature = dspy.Signature("table, question -> answer: float", INSTRUCTIONS)
    return tf.ToolAgent(signature, tools=[tf.python_tool()], max_iters=5)


def load_dataset(split: str, limit: int | None = None) -> list[dspy.Example]:
    return load("table", split, ["table", "question"], limit)


metric = numeric_metric
