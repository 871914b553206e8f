"""Telling a function that computes its answers from one that remembers the training set's.

A proposer that sees training questions and their answers can write a function that returns those answers from a
literal table keyed by the questions' inputs (or a chain of `if x == 12: return 3`), and a default elsewhere. It
raises the training score and nothing else. `memorised_answers` finds such a table by reading the code (no call,
no LM): pairs of literals in the code (a dict item, a 2-tuple, an `if` comparing with a literal and returning a
literal) whose key is one of a training example's inputs (a whole input value, or a number or word in it) and whose
value is that example's label (a small label too: `{289: 2}` keyed by a training input is an answer). It is a table
of answers when at least two training examples are in it and they make up at least half of the code's literal
pairs, or when its only literal pairs are training answers (one is enough: a special case for the one training
question of its kind); a table of domain facts (units, capitals) that happens to hold a training answer or two is
general code, and passes. Two trivial literals (-1, 0, 1, 2, empty, booleans) never make a pair, so base cases are
not answers.

`literal_count` measures how much of a function's behaviour is constants, for ties: of two toolsets that score the
same, the one with fewer literals is the more general.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import dspy

__all__ = ["literal_count", "memorised_answers"]

_TRIVIAL = {-1.0, 0.0, 1.0, 2.0, "", "true", "false", "none"}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z_]{4,}")
_MIN_EXAMPLES = 2  # training examples found in a table before it counts as one
_MIN_SHARE = 0.5  # of the code's literal pairs, the share that must be training answers


def memorised_answers(code: str, examples: Sequence[dspy.Example]) -> str | None:
    """Why `code` looks like a table of the training answers, or None."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None  # the function's own validation says what is wrong with it
    pairs = [(k, v) for k, v in _literal_pairs(tree) if not (_norm(k) in _TRIVIAL and _norm(v) in _TRIVIAL)]
    if not pairs:
        return None
    found: list[tuple[Any, Any]] = []
    matched_pairs: set[int] = set()
    for example in examples:
        inputs, labels = _input_atoms(example), _label_atoms(example)
        if not labels:
            continue
        for index, (key, value) in enumerate(pairs):
            if _norm(key) in inputs and _norm(value) in labels:
                matched_pairs.add(index)
                found.append((key, value))
                break
    examples_in_table = len(found)
    whole = len(matched_pairs) == len(pairs)  # every literal pair of the code is a training answer
    if not examples_in_table or (examples_in_table < _MIN_EXAMPLES and not whole):
        return None
    if len(matched_pairs) < _MIN_SHARE * len(pairs):
        return None
    shown = ", ".join(f"{k!r} -> {v!r}" for k, v in found[:3])
    return (
        f"its code holds the answers of {examples_in_table} training examples as literals ({shown}"
        f"{', ...' if examples_in_table > 3 else ''}), so it would score on the training set and nowhere else; "
        "compute the answer from the arguments instead"
    )


def literal_count(code: str) -> int:
    """Literals in `code` other than docstrings and trivial ones (-1, 0, 1, 2, empty strings, booleans, None)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return 0
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) not in docstrings and _norm(node.value) not in _TRIVIAL
    )


def _literal_pairs(tree: ast.AST) -> Iterator[tuple[Any, Any]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                for k in _constants(key):
                    for v in _constants(value):
                        yield k, v
        elif isinstance(node, ast.Tuple | ast.List) and len(node.elts) == 2 and not _is_tuple(node.elts[0]):
            for k in _constants(node.elts[0]):
                for v in _constants(node.elts[1]):
                    yield k, v
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            keys = [c for part in (node.test.left, *node.test.comparators) for c in _constants(part)]
            values = [c for stmt in node.body for c in _returned(stmt)]
            for k in keys:
                for v in values:
                    yield k, v


def _is_tuple(node: ast.AST) -> bool:
    return isinstance(node, ast.Tuple | ast.List)


def _returned(statement: ast.stmt) -> list[Any]:
    if isinstance(statement, ast.Return) and statement.value is not None:
        return _constants(statement.value)
    if isinstance(statement, ast.Assign):
        return _constants(statement.value)
    return []


def _constants(node: ast.AST | None) -> list[Any]:
    """The literal(s) `node` is: a constant, or the constants of a tuple of constants (a composite key)."""
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        return [-value] if isinstance(value, int | float) and not isinstance(value, bool) else []
    if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
        return [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return []


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return repr(value)


def _input_atoms(example: dspy.Example) -> set[Any]:
    atoms: set[Any] = set()
    for value in example.inputs().values():
        atoms.add(_norm(value) if isinstance(value, str | int | float | bool) or value is None else repr(value))
        if isinstance(value, str):
            atoms.update(_norm(n) for n in _NUMBER.findall(value))
            atoms.update(w.lower() for w in _WORD.findall(value))
    return atoms


def _label_atoms(example: dspy.Example) -> set[Any]:
    # Trivial labels (0, 1, 2, ...) count: `{289: 2}` keyed by a training input is that example's answer. A pair of
    # two trivial literals (a base case) was never a pair, so this does not take `if n == 0: return 1` for one.
    return {
        _norm(value)
        for value in example.labels().values()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
