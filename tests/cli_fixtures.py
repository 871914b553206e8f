"""A tiny program and scripted LMs for the command-line tests (loaded by `toolforge` as module:attr)."""

from __future__ import annotations

from typing import Any

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact, unary
from tests.scripted_lm import field, offers, scripted_lm, tool_agent_script

SQUARE = unary("square", "x * x")


def build_program() -> tf.ToolAgent:
    return tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([unary("double", "x * 2")]))


class TwoAgents(dspy.Module):
    """A program holding two toolsets (`main.toolset`, `helper.toolset`); it answers with `main`."""

    def __init__(self) -> None:
        super().__init__()
        self.main = build_program()
        self.helper = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([unary("triple", "x * 3")]))
        self.signature = self.main.signature

    def forward(self, question: str) -> dspy.Prediction:
        return self.main(question=question)


class _PlainProgram(dspy.Module):
    """A program without an LM: an empty toolset (so the command finds one) and the task's signature."""

    def __init__(self) -> None:
        super().__init__()
        self.toolset = tf.Toolset()
        self.signature = dspy.Signature("question -> answer: float")


class Unreachable(_PlainProgram):
    """A program whose every run fails, as one behind an LM that cannot be reached does."""

    def forward(self, question: str) -> dspy.Prediction:
        raise ConnectionError("the LM at http://localhost:1 refused the connection")


class HalfBroken(_PlainProgram):
    """A program that answers doubles and raises on squares."""

    def forward(self, question: str) -> dspy.Prediction:
        kind, number = question.split()
        if kind == "square":
            raise ValueError(f"no squares here: {question}")
        return dspy.Prediction(answer=2.0 * int(number))


metric = exact


def load_dataset(split: str, limit: int | None = None) -> list[dspy.Example]:
    kinds = ["double", "square"] if split == "train" else ["square", "double"]
    examples = []
    for i in range(1, 7):
        kind = kinds[i % 2]
        answer = float(i * i if kind == "square" else 2 * i)
        examples.append(dspy.Example(question=f"{kind} {i}", answer=answer).with_inputs("question"))
    return examples[:limit]


def agent_policy(system: str, user: str) -> dict[str, Any]:
    """The agent's replies: it calls the function a question names ("square 3") if the prompt lists it."""

    def choose(question: str):
        kind, number = question.split()
        return (kind, {"x": float(number)}) if offers(system, kind) else None

    return tool_agent_script(choose)(system, user)


def agent() -> dspy.LM:
    return scripted_lm(agent_policy, name="cli-agent")[0]


def proposer_policy(system: str, user: str) -> dict[str, Any]:
    """The proposer's replies: add `square` once."""
    if "### square" in field(user, "current_functions"):
        return {"reasoning": "Nothing to add.", "actions": []}
    action = tf.ProposedAction.of("add_function", SQUARE, {"x": 3}).model_dump()
    return {"reasoning": "Squares fail.", "actions": [action]}


def proposer() -> dspy.LM:
    return scripted_lm(proposer_policy, name="cli-proposer")[0]
