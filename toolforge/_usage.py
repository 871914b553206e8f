"""Counting LM requests and tokens inside a block (used by the evaluator and the optimizer)."""

from __future__ import annotations

import threading
from typing import Any

from dspy.utils.callback import BaseCallback


class LMCallCounter(BaseCallback):
    """A DSPy callback that counts LM requests (DSPy cache hits included)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1


def token_totals(totals: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(prompt, completion) tokens from DSPy's usage tracker totals, whatever the provider calls them."""
    prompt = completion = 0
    for usage in totals.values():
        prompt += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        completion += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    return prompt, completion
