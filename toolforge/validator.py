"""Checking a proposed action before it costs an evaluation: its own validation, the toolset's rules, no copy of
another function under a new name, no table of the training set's answers, a smoke call in the sandbox, and whether
its function is deterministic.

The optimizer calls `check_proposal` for each action the proposer returns, in order, each on the candidate the
accepted ones before it built; a rejected action goes back to the proposer with its reason. Nothing here needs an
LM: a test builds a `ProposedAction` by hand and checks it against a real `Sandbox`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import NamedTuple

import dspy
from pydantic import ValidationError

from toolforge._text import one_line
from toolforge.actions import RemoveFunction, ReviseFunction, validation_reasons
from toolforge.errors import FunctionCallError, FunctionError, ToolsetError
from toolforge.function import ForgedFunction
from toolforge.memorised import memorised_answers
from toolforge.proposer import ProposedAction
from toolforge.sandbox import Sandbox, default_sandbox
from toolforge.toolset import Toolset

__all__ = ["Check", "check_proposal"]

logger = logging.getLogger("toolforge.optimizer")  # its messages are the compile's, as they were


class Check(NamedTuple):
    """The verdict on one proposal: no reason and the candidate with the action applied, or the reason it is
    rejected and the candidate unchanged."""

    reason: str | None
    toolset: Toolset


def check_proposal(
    proposal: ProposedAction,
    candidate: Toolset,
    *,
    fixed: Collection[str] = (),
    sandbox: Sandbox | None = None,
    step: int | None = None,
    examples: Sequence[dspy.Example] = (),
) -> Check:
    """Check `proposal` against `candidate`.

    Args:
        proposal: The action as the proposer gave it (a malformed reply's record is rejected with its reason).
        candidate: The toolset the action applies to.
        fixed: Names of the program's fixed tools, which a function must not take.
        sandbox: Where the smoke calls run (default: the process-wide sandbox).
        step: The step, for the log line that says a function was found not deterministic.
        examples: The training examples: a function whose code is a table of their answers is rejected.

    Returns:
        `Check(None, updated)` for an accepted action, `Check(reason, candidate)` for a rejected one. An action
        whose function gives different results for the same arguments in two smoke calls is accepted, with the
        function marked not deterministic (its results are then never cached).
    """
    if proposal.malformed:
        return Check(f"the action is malformed: {proposal.malformed}", candidate)
    try:
        action = proposal.to_action()
    except ValidationError as exc:
        return Check(f"the action is malformed: {validation_reasons(exc)}", candidate)
    if action.name in fixed:
        return Check(f"{action.name!r} is the name of a fixed tool of the agent; choose another name", candidate)
    try:
        updated = candidate.apply([action])
    except (ToolsetError, FunctionError) as exc:
        return Check(str(exc), candidate)
    if isinstance(action, RemoveFunction):
        return Check(None, updated)
    function = updated[action.name]
    if isinstance(action, ReviseFunction) and function.fingerprint == candidate[action.name].fingerprint:
        # else a repeated revision is judged, and reported, as a change of its own, with the first one's evidence
        return Check(
            f"revising {action.name!r} changes nothing: the description, parameters and code given are the ones it "
            "has; propose a different change, or none",
            candidate,
        )
    # a revision that keeps the code (a new description) is not made a copy by a twin the toolset already had
    keeps_code = isinstance(action, ReviseFunction) and candidate[action.name].code_shape == function.code_shape
    copy = None if keeps_code else _copy_of(function, updated)
    if copy:
        return Check(copy, candidate)
    memorised = memorised_answers(function.code, examples)
    if memorised:
        return Check(memorised, candidate)
    try:
        arguments = function.validate_arguments(proposal.arguments())
    except FunctionCallError as exc:
        return Check(f"example_arguments do not fit: {exc}", candidate)
    box = sandbox or default_sandbox()
    result = box.call(function, arguments)
    if not result.ok:
        return Check(
            f"the smoke call {action.name}({json.dumps(arguments)}) failed: {result.error}"
            + (f" (it printed: {result.stdout[-300:]})" if result.stdout else ""),
            candidate,
        )
    if function.deterministic:  # a second call tells randomness, the clock or state apart, before any caching
        again = box.call(function, arguments)
        if (again.ok, again.value, again.error) != (result.ok, result.value, result.error):
            logger.info(
                "step %s: %s: two smoke calls with the same arguments gave %s and %s; it is marked not "
                "deterministic, so its results are never cached",
                step if step is not None else "?",
                proposal.summary(),
                one_line(repr(result.value), 80),
                one_line(repr(again.value) if again.ok else again.error, 80),
            )
            updated = candidate.apply([action.model_copy(update={"deterministic": False})])
    return Check(None, updated)


def _copy_of(function: ForgedFunction, toolset: Toolset) -> str | None:
    """Why `function` is a copy of another function of `toolset` (the same code under another name), if it is.

    A copy can only tie with the function it copies, and a tie that grows the toolset is not kept: refusing it here
    saves the evaluation that would find that out, and tells the proposer what would help instead."""
    shape = function.code_shape
    twin = next((f.name for f in toolset.functions if f.name != function.name and f.code_shape == shape), None)
    if twin is None:
        return None
    return (
        f"{function.name!r} has the code of {twin!r} under another name: a copy adds a function to the prompt and no "
        f"behaviour; if the agent does not call {twin!r} where it should, revise {twin!r} (its description or "
        "parameters) instead, or write code that does something it does not"
    )
