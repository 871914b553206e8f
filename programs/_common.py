"""What the ready programs share: their data files and a numeric metric."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import dspy

import toolforge as tf

DATA = Path(__file__).resolve().parent / "data"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def as_number(value: Any) -> float | None:
    """A number from a prediction: a float, or the first number in a string ("$1,234.50" -> 1234.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    match = _NUMBER.search(str(value))
    return float(match.group().replace(",", "")) if match else None


def numeric_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    """True when the predicted answer equals the expected one within 0.01 (absolute) or 0.1% (relative)."""
    got = as_number(getattr(prediction, "answer", None))
    if got is None:
        return False
    expected = float(example.answer)
    return math.isclose(got, expected, rel_tol=1e-3, abs_tol=1e-2)


def load(name: str, split: str, fields: list[str], limit: int | None = None) -> list[dspy.Example]:
    if split not in ("train", "test"):
        raise tf.ToolforgeError(f"split {split!r} does not exist; use 'train' or 'test'")
    return tf.load_jsonl(DATA / f"{name}_{split}.jsonl", fields=fields, limit=limit)
