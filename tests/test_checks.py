"""The shared range check of integer constructor arguments."""

from __future__ import annotations

import pytest

from toolforge._checks import check_int
from toolforge.errors import SandboxError, ToolforgeError


def test_check_int_words_a_refusal_by_class_argument_and_bound():
    check_int("Sandbox", "workers", 1, 1)
    for value in (0, True, 1.0, "1", None):
        with pytest.raises(SandboxError) as caught:
            check_int("Sandbox", "workers", value, 1, error=SandboxError)
        assert str(caught.value) == f"Sandbox(workers={value!r}): workers must be an integer >= 1"


def test_check_int_keeps_what_each_class_has_taken():
    check_int("Evaluator", "num_threads", True, 1, allow_bool=True)  # taken as 1, as it always was
    check_int("X", "limit", None, 0, optional=True)
    with pytest.raises(ToolforgeError, match=r"^EvaluationCache\(size_limit_mb=0\) must be an integer >= 1$"):
        check_int(
            "EvaluationCache", "size_limit_mb", 0, 1, message="{owner}({name}={value!r}) must be an integer >= {low}"
        )
