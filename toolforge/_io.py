"""Writing files so that a crash never leaves a half-written one; reading JSON files that may have been planted."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from toolforge.errors import ToolforgeError

MAX_JSON_DEPTH = 100  # a toolset, report or checkpoint nests about ten levels deep
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """Write `data` as JSON to `path` atomically (a temporary file, then a rename). Returns the path.

    `indent=None` writes it compact, for files only programs read (about twice as fast to write).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike[str], what: str, fix: str, error: type[ToolforgeError] = ToolforgeError) -> Any:
    """The JSON value in the file `path`, or one `error` naming `what` and the file, with `fix` where that helps.

    Refused with a reason: a missing or unreadable file, text that is not UTF-8, JSON nested deeper than
    `MAX_JSON_DEPTH` (checked before parsing, since the parser recurses), and text that is not JSON.
    """
    path = Path(path)
    name = f"{what} {str(path)!r}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{name} does not exist; check the path") from None
    except OSError as exc:
        raise error(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{name} is not UTF-8 text (byte {data[exc.start : exc.start + 1]!r} at offset {exc.start}, line {line}); "
            f"{fix}"
        ) from None
    if json_text_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{name} nests JSON more than {MAX_JSON_DEPTH} levels deep; {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {fix}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more digits than Python converts
        raise error(f"{name} is not JSON toolforge reads ({exc.__class__.__name__}: {str(exc)[:200]}); {fix}") from None


def json_text_depth(text: str) -> int:
    """How deep the arrays and objects in JSON `text` nest (brackets inside strings are not counted)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_depth(value: Any) -> int:
    """How deep the lists and dicts in `value` nest (without recursion, so any depth can be measured)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
