"""Scripted LMs for the `toolforge paper` command tests (loaded by the command as module:attr).

The agent (either kind) answers a MATH problem "greatest common divisor of $a$ and $b$" by calling a `gcd` function
when its prompt lists one, and answers 0 otherwise; the proposer adds `gcd` once.
"""

from __future__ import annotations

import re
from typing import Any

import dspy

import toolforge as tf
from tests.scripted_lm import field, offers, scripted_lm

GCD = tf.ForgedFunction(
    name="gcd",
    description="The greatest common divisor of two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
    code="import math\n\ndef gcd(a, b):\n    return math.gcd(a, b)\n",
)
_GCD_PROBLEM = re.compile(r"greatest common divisor of \$(\d+)\$ and \$(\d+)\$")


def agent_policy(system: str, user: str) -> dict[str, Any]:
    """Either agent kind: the assistant (a ToolAgent, `next_tool_call`) or ReAct (`next_tool_name`, and an answer
    with its reasoning)."""
    problem = field(user, "problem")
    match = _GCD_PROBLEM.search(problem)
    first_step = "[[ ## tool_name_0 ## ]]" not in user
    if "next_tool_call" in system:
        if match and offers(system, "gcd") and first_step:
            args = {"a": int(match.group(1)), "b": int(match.group(2))}
            return {"next_thought": "Use gcd.", "next_tool_call": {"name": "gcd", "args": args}}
        return {"next_thought": "I can answer now.", "next_tool_call": {"name": "finish", "args": {}}}
    if "next_tool_name" in system:
        if match and ") gcd, whose description" in system and first_step:
            args = {"a": int(match.group(1)), "b": int(match.group(2))}
            return {"next_thought": "Use gcd.", "next_tool_name": "gcd", "next_tool_args": args}
        return {"next_thought": "I can answer now.", "next_tool_name": "finish", "next_tool_args": {}}
    observation = field(user, "observation_0") if field(user, "tool_name_0") == "gcd" else ""
    answer = {"answer": observation or "0"}
    return {"reasoning": "From the trajectory.", **answer} if "`reasoning`" in system else answer


def proposer_policy(system: str, user: str) -> dict[str, Any]:
    if "### gcd" in field(user, "current_functions"):
        return {"reasoning": "Nothing to add.", "actions": []}
    action = tf.ProposedAction.of("add_function", GCD, {"a": 12, "b": 18}).model_dump()
    return {"reasoning": "gcd problems fail.", "actions": [action]}


def agent() -> dspy.LM:
    return scripted_lm(agent_policy, name="paper-agent")[0]


def short_local() -> tf.LocalLM:
    """The embedded model with replies capped at 96 tokens, so that a test with it stays within a minute."""
    return tf.LocalLM(max_tokens=96)


def proposer() -> dspy.LM:
    return scripted_lm(proposer_policy, name="paper-proposer")[0]
