"""Loading examples from JSONL files, with field names mapped to a program's own."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import dspy

from toolforge.errors import ToolforgeError

__all__ = ["load_jsonl"]


def load_jsonl(
    path: str | os.PathLike[str],
    *,
    input_keys: Sequence[str] | None = None,
    label_key: str | None = None,
    fields: Sequence[str] | None = None,
    label: str = "answer",
    limit: int | None = None,
) -> list[dspy.Example]:
    """Examples from a JSON Lines file (one JSON object per line), inputs marked.

    Args:
        path: The file.
        input_keys: The keys of each line that are inputs. Default: `fields`.
        label_key: The key of the expected output. Default: `label`.
        fields: The program's input field names; `input_keys[i]` is renamed to `fields[i]`. Default: `input_keys`.
        label: The program's output field name; `label_key` is renamed to it.
        limit: Keep only the first `limit` examples.

    Raises:
        ToolforgeError: the file is missing, a line is not a JSON object (with its line number), or a key is missing.

    Examples:
        >>> load_jsonl("problems.jsonl", input_keys=["problem"], label_key="solution", fields=["question"])
        ...     # doctest: +SKIP
    """
    path = Path(path)
    inputs = list(input_keys or fields or [])
    if not inputs:
        raise ToolforgeError(f"load_jsonl({str(path)!r}): say which keys are inputs (input_keys=[...])")
    names = list(fields or inputs)
    if len(names) != len(inputs):
        raise ToolforgeError(
            f"{len(inputs)} input keys ({', '.join(inputs)}) for {len(names)} program inputs ({', '.join(names)}); "
            "give one input key per program input, in order"
        )
    source_label = label_key or label
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ToolforgeError(f"data file {str(path)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolforgeError(f"cannot read data file {str(path)!r}: {exc}") from None
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ToolforgeError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise ToolforgeError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
        missing = [k for k in [*inputs, source_label] if k not in row]
        if missing:
            raise ToolforgeError(
                f"{path}:{number}: no {', '.join(repr(k) for k in missing)} field (it has: {', '.join(row)}); "
                "map your field names with load_jsonl(input_keys=..., label_key=...)"
            )
        data = {name: row[key] for name, key in zip(names, inputs, strict=True)}
        data[label] = row[source_label]
        data.update({k: v for k, v in row.items() if k not in data and k not in inputs and k != source_label})
        examples.append(dspy.Example(**data).with_inputs(*names))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise ToolforgeError(f"data file {str(path)!r} holds no examples")
    return examples
