"""Which forged functions a program called: the record that cached evaluation keys its reuse on.

The tools built by `Toolset.as_tools` append a `FunctionCall` to the innermost active `record_calls()` block of
the current context (thread or task). Blocks nest; an inner block's calls are also seen by the outer ones.

    >>> with record_calls() as calls:          # doctest: +SKIP
    ...     program(question="...")
    >>> [(c.name, c.ok) for c in calls]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["FunctionCall", "record_calls"]


class FunctionCall(BaseModel):
    """One call of a forged function: which version ran, with what, and how it ended.

    `arguments` (None when too large to keep) and `outcome_hash` (a hash of what the caller saw: the value, or the
    error it raised) let the evaluation cache check a revised function against the calls a record made: if the new
    code gives the same outcomes on them, the record still holds.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    code_hash: str
    ok: bool
    error: str | None = None
    duration_s: float = 0.0
    cached: bool = False
    arguments: dict[str, Any] | None = None
    outcome_hash: str | None = None


_recorders: ContextVar[tuple[list[FunctionCall], ...]] = ContextVar("toolforge_recorders", default=())


@contextlib.contextmanager
def record_calls() -> Iterator[list[FunctionCall]]:
    """Collect the forged-function calls made inside the block, in order."""
    calls: list[FunctionCall] = []
    token = _recorders.set((*_recorders.get(), calls))
    try:
        yield calls
    finally:
        _recorders.reset(token)


def _record(call: FunctionCall) -> None:
    for calls in _recorders.get():
        calls.append(call)
