"""Counting LM requests and tokens inside a block (used by the evaluator and the optimizer).

Counting goes through DSPy's usage tracker rather than a callback: any DSPy callback makes every module, adapter
and tool call inspect its arguments, which costs more than the counting is worth. The tracker sees each request
that reached the LM; DSPy's cache hits cost nothing and are not counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import dspy
from dspy.utils.usage_tracker import UsageTracker


class LMUsage(UsageTracker):
    """A usage tracker that also counts requests, and passes everything on to an enclosing tracker."""

    def __init__(self, parent: UsageTracker | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.parent = parent
        self._lock = threading.Lock()

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1
            super().add_usage(lm, usage_entry)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens, whatever the provider calls them."""
        prompt = completion = 0
        for usage in self.get_total_tokens().values():
            prompt += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            completion += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
        return prompt, completion


@contextlib.contextmanager
def count_lm_usage() -> Iterator[LMUsage]:
    """Count the LM requests (and their tokens) made inside the block, in this thread or context."""
    usage = LMUsage(parent=dspy.settings.usage_tracker)
    with dspy.context(usage_tracker=usage):
        yield usage
