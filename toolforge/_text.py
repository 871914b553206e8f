"""Text on one line within a limit: an error inside another message, a value in a rendered trajectory."""

from __future__ import annotations

from typing import Any


def one_line(value: Any, limit: int) -> str:
    """`value` (a string, or anything `str()` turns into one) with its whitespace collapsed, cut to `limit`
    characters with "..." at the end when it is longer."""
    line = " ".join(str(value).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
