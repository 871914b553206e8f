"""Text on one line within a limit: an error inside another message, a value in a rendered trajectory; and text
made safe to print on a terminal."""

from __future__ import annotations

import re
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls (CSI, OSC, ... in 8-bit form), bidirectional overrides and
# isolates (which reorder what is shown), and lone surrogates (which no terminal encoding can write)
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` with every control character but newline and tab written as an escape (ESC as `\\x1b`), so that
    text from a file cannot move the cursor, clear the screen, retitle the window or hide a line when printed."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(value: Any, limit: int) -> str:
    """`value` (a string, or anything `str()` turns into one) with its whitespace collapsed, cut to `limit`
    characters with "..." at the end when it is longer."""
    line = " ".join(str(value).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
