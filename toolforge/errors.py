"""The exceptions toolforge raises. Every message names the thing, the value and the fix."""

from __future__ import annotations

__all__ = ["FunctionCallError", "FunctionError", "SandboxError", "ToolforgeError", "ToolsetError"]


class ToolforgeError(Exception):
    """Base class of every error toolforge raises on purpose."""


class FunctionError(ToolforgeError):
    """A forged function is not valid: bad name, code that does not compile, schema mismatch, missing package."""


class ToolsetError(ToolforgeError):
    """A toolset operation cannot be done: duplicate or missing name, over `max_functions`, unreadable file.

    `conflicts` names the functions a `merge` found defined differently on both sides (empty otherwise).
    """

    def __init__(self, message: str, conflicts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class SandboxError(ToolforgeError):
    """The sandbox cannot be used: it is closed, or its worker processes cannot start."""


class FunctionCallError(ToolforgeError):
    """A call of a forged function failed: bad arguments, or the code raised, timed out or crashed.

    Raised by the tools that `Toolset.as_tools` builds, so that any DSPy program (ReAct included) sees the
    failure as an observation with its reason.
    """
