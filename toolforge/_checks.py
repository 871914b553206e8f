"""The range check of integer constructor arguments, shared so that every class checks and words it alike."""

from __future__ import annotations

from typing import Any

from toolforge.errors import ToolforgeError

AT_LEAST = "{owner}({name}={value!r}): {name} must be an integer >= {low}"


def check_int(
    owner: str,
    name: str,
    value: Any,
    low: int,
    *,
    error: type[ToolforgeError] = ToolforgeError,
    allow_bool: bool = False,
    optional: bool = False,
    message: str = AT_LEAST,
) -> None:
    """Raise `error` unless `value` is an integer >= `low` (or None, if `optional`).

    `message` is a `str.format` template over `owner` (the class), `name`, `value` and `low`; by default
    "Sandbox(workers=0): workers must be an integer >= 1". A bool is refused unless `allow_bool` (some classes have
    always taken `True` as 1; they say so, so that nothing changes until it is decided).
    """
    if optional and value is None:
        return
    if isinstance(value, int) and (allow_bool or not isinstance(value, bool)) and value >= low:
        return
    raise error(message.format(owner=owner, name=name, value=value, low=low))
