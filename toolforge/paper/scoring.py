"""Answer checking as each benchmark defines it: MATH by math-verify, TabMWP by its own rules, GAIA by its scorer.

Each metric has DSPy's signature, `metric(example, prediction, trace=None) -> bool`, and reads the prediction's
`answer` field and the example's `answer` label.

- MATH: Hugging Face's `math-verify` (the `paper` extra) parses both answers into SymPy and compares them, so
  equivalent forms count (`\\frac{1}{2}`, `0.5`, `1/2`; `2\\sqrt{3}`, `\\sqrt{12}`; intervals; polynomials).
- TabMWP: numbers as its evaluation normalises them (`$`, commas and a trailing period dropped, fractions
  divided, rounded to 3 decimals); a multiple-choice answer is first mapped to the most similar choice; other text
  compared without its unit, case and surrounding space.
- GAIA: the official `question_scorer`: a number compared as a float after `$`, `%` and `,` are dropped; a list
  (split on `,` and `;`) compared element by element, each as a number or as a string lower-cased and without white
  space; any other string compared lower-cased, without white space and punctuation.
"""

from __future__ import annotations

import difflib
import logging
import re
import string
import threading
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import dspy

from toolforge.errors import ToolforgeError

__all__ = [
    "gaia_metric",
    "gaia_scorer",
    "math_equivalent",
    "math_metric",
    "require_math_verify",
    "tabmwp_correct",
    "tabmwp_metric",
]

logger = logging.getLogger(__name__)

_TIMEOUT_S = 5  # math-verify's own limit for parsing and comparing one answer


def require_math_verify() -> Any:
    """The math_verify module; a `ToolforgeError` naming the `paper` extra when it is not installed."""
    try:
        import math_verify
    except ImportError:
        raise ToolforgeError(
            "checking MATH answers needs the math-verify package, which is not installed; install the paper extra: "
            "pip install 'toolforge[paper]'"
        ) from None
    return math_verify


def _parse(text: str, timeout: int | None) -> list[Any]:
    """math-verify's parse of an answer. A bare answer (`\\frac{1}{2}`, `[2, 5)`) is read as LaTeX math: without
    `$` or `\\boxed` around it math-verify's LaTeX extraction finds nothing and its fallback misreads it."""
    mv = require_math_verify()
    text = text.strip()
    anchored = "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text
    parsed: list[Any] = [] if anchored else mv.parse(f"${text}$", parsing_timeout=timeout)
    return parsed or mv.parse(text, parsing_timeout=timeout)


def math_equivalent(gold: str, predicted: str) -> bool:
    """Whether `predicted` is the same mathematical answer as `gold` (LaTeX or plain), by math-verify.

    math-verify bounds its work with `signal.alarm`, which works only in the main thread; elsewhere (an
    evaluation's worker threads) it runs without that bound, so only answers of bounded size are given to it.

    Raises:
        ToolforgeError: math-verify is not installed (the message names the `paper` extra).
    """
    mv = require_math_verify()
    timeout = _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold_parsed = _parse(gold, timeout)
    predicted_parsed = _parse(predicted[-_MAX_ANSWER_CHARS:], timeout)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(mv.verify(gold_parsed, predicted_parsed, timeout_seconds=timeout))


# A final answer is short; an answer this long is an agent's whole reply, of which the end holds the answer, and
# sympy on an unbounded expression can take minutes where math-verify's timeout cannot apply.
_MAX_ANSWER_CHARS = 500


def math_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    """MATH: the predicted answer is equivalent to the boxed answer of the reference solution."""
    predicted = getattr(prediction, "answer", None)
    if predicted is None or not str(predicted).strip():
        return False
    return math_equivalent(str(example.answer), str(predicted))


# ------------------------------------------------------------------------------------------------- TabMWP
_TABMWP_NUMBER = re.compile(r"^[-+]?[\d,./]+$")


def _tabmwp_normalise(text: str, unit: str) -> str:
    """An answer as TabMWP's evaluation normalises it: a number as its rounded value, text without its unit."""
    text = re.sub(r"^\$", "", text.strip())
    text = re.sub(r"[,./]$", "", text)
    if _TABMWP_NUMBER.match(text) and any(c.isdigit() for c in text):
        text = text.replace(",", "")
        try:
            number = Fraction(text)
        except (ValueError, ZeroDivisionError):
            return text.lower()
        value = round(float(number), 3)
        return str(int(value)) if value == int(value) else str(value)
    if unit:
        text = text.replace(unit, "")
    return text.strip().lower()


def _closest_choice(text: str, choices: Sequence[str]) -> str:
    """The choice most similar to `text`, as TabMWP's evaluation maps a free answer onto its choices."""
    return max(choices, key=lambda choice: difflib.SequenceMatcher(None, text.lower(), choice.lower()).ratio())


def tabmwp_correct(gold: str, predicted: str, *, choices: Sequence[str] | None = None, unit: str = "") -> bool:
    """Whether `predicted` is TabMWP's `gold` answer by its rules (numbers, choices, text; see the module)."""
    predicted = str(predicted).strip()
    if not predicted:
        return False
    if choices:
        predicted = _closest_choice(predicted, choices)
    return _tabmwp_normalise(predicted, unit) == _tabmwp_normalise(str(gold), unit)


def tabmwp_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    """TabMWP: the predicted answer is the expected one by TabMWP's rules."""
    predicted = getattr(prediction, "answer", None)
    if predicted is None:
        return False
    return tabmwp_correct(
        str(example.answer), str(predicted), choices=example.get("choices") or None, unit=example.get("unit") or ""
    )


# --------------------------------------------------------------------------------------------------- GAIA
def _gaia_number(text: str) -> float | None:
    cleaned = text
    for char in ("$", "%", ","):
        cleaned = cleaned.replace(char, "")
    try:
        return float(cleaned.strip())
    except ValueError:
        return None


def _gaia_string(text: str, *, punctuation: bool = False) -> str:
    """Lower-cased, without white space, and (unless `punctuation`) without punctuation."""
    text = re.sub(r"\s", "", text).lower()
    return text if punctuation else text.translate(str.maketrans("", "", string.punctuation))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def gaia_scorer(predicted: str, gold: str) -> bool:
    """GAIA's `question_scorer`: normalised exact match of a number, a list or a string (see the module)."""
    predicted = "" if predicted is None else str(predicted)
    if _is_number(gold):
        return _gaia_number(predicted) == float(gold)
    if any(sep in gold for sep in (",", ";")):
        gold_items = re.split(r"[,;]", gold)
        predicted_items = re.split(r"[,;]", predicted)
        if len(gold_items) != len(predicted_items):
            return False
        for gold_item, predicted_item in zip(gold_items, predicted_items, strict=True):
            if _is_number(gold_item):
                if _gaia_number(predicted_item) != float(gold_item):
                    return False
            # the scorer keeps punctuation inside list items ("3.5 m" and "35m" differ)
            elif _gaia_string(predicted_item, punctuation=True) != _gaia_string(gold_item, punctuation=True):
                return False
        return True
    return _gaia_string(predicted) == _gaia_string(gold)


def gaia_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    """GAIA: the predicted answer matches the final answer by GAIA's scorer."""
    predicted = getattr(prediction, "answer", None)
    return predicted is not None and gaia_scorer(str(predicted), str(example.answer))
