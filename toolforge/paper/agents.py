"""The paper's two agent kinds, for MATH, TabMWP and GAIA, each starting with no forged function.

- `assistant`: like the paper's GPT-4+ agent (an assistant that writes code and calls functions): a `ToolAgent`
  told to solve the problem by writing Python and running it, and to call its functions where they fit; its
  function calls are schema-constrained, as GPT-4's function calling is.
- `react`: DSPy's own ReAct loop (thought, tool, observation), as `toolforge.ReAct`: its prompt lists the current
  toolset at each call, and its predictors are DSPy's, so a prompt optimizer can tune it before or after training.

Both have the `python` tool, the one function the paper's agents start with. A GAIA agent's `python` tool also
puts the question's attached file into the working directory of the snippet that names it: the sandbox sees
nothing of this machine's files, so the file travels with the call, and the agent reads it by its name.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import dspy

from toolforge.agent import ToolAgent, python_tool
from toolforge.errors import ToolforgeError
from toolforge.react import ReAct
from toolforge.sandbox import Sandbox
from toolforge.toolset import Toolset

__all__ = ["AGENT_KINDS", "ReActAgent", "attachment_python_tool", "build_agent"]

logger = logging.getLogger(__name__)

AgentKind = Literal["assistant", "react"]
AGENT_KINDS: tuple[AgentKind, ...] = ("assistant", "react")
Task = Literal["math", "tabmwp", "gaia"]

_AGENT_FORMAT = 2  # in the react agent's cache keys: toolforge's source is not, so a change of its behaviour bumps it
_MAX_ATTACHMENT_BYTES = 32 * 1024 * 1024  # under the sandbox's 64 MB file cap, with room for the encoded request

SIGNATURES: dict[str, tuple[str, str]] = {
    "math": (
        "problem -> answer: str",
        "Solve the competition math problem. Give only the final answer, simplified, written as it would appear "
        "inside \\boxed{} (e.g. \\frac{3}{4}, 2\\sqrt{3}, [1, 5)).",
    ),
    "tabmwp": (
        "table, question -> answer: str",
        "Answer the question about the table (one row per line, cells separated by '|'). Give only the final "
        "answer: a number, or, when choices are given, one of them.",
    ),
    "gaia": (
        "question, attachment -> answer: str",
        "Answer the question. `attachment` names a file attached to it (empty when there is none); a Python "
        "snippet that names the file finds it in its working directory. Give only the final answer: a number, a "
        "few words, or a comma-separated list, as the question asks.",
    ),
}
_ASSISTANT = (
    "Work like a programmer: write Python code that computes the answer and run it with the python tool, reading "
    "what it prints; call the other functions where they fit."
)


class ReActAgent(ReAct):
    """The paper's ReAct agent: `toolforge.ReAct` over fixed tools and a trainable `Toolset` (10 steps by default).

    Args:
        signature: The task, e.g. `"problem -> answer: str"` or a `dspy.Signature` class.
        tools: Fixed tools (`dspy.Tool`s), such as `python_tool()`.
        toolset: The forged functions (default: an empty toolset, ready to be trained).
        max_iters: The most tool calls in one run.
        sandbox: Where forged functions run (default: the process-wide sandbox).
    """

    def __init__(
        self,
        signature: str | type[dspy.Signature],
        *,
        tools: Sequence[dspy.Tool] = (),
        toolset: Toolset | None = None,
        max_iters: int = 10,
        sandbox: Sandbox | None = None,
    ) -> None:
        super().__init__(signature, tools=tools, max_iters=max_iters, toolset=toolset, sandbox=sandbox)

    def cache_settings(self) -> dict[str, Any]:
        """`toolforge.ReAct`'s settings and this agent's format, for what its prompts do not show (how its GAIA python
        tool stages files): toolforge's source is not in cache keys (toolforge's hook)."""
        return {**super().cache_settings(), "agent_format": _AGENT_FORMAT}


class _AttachmentSnippet:
    """The callable behind `attachment_python_tool`: the python tool, with named attachments staged first."""

    def __init__(self, folder: Path, names: frozenset[str]) -> None:
        self.folder = folder
        self.names = names
        self.run = python_tool().func

    def __call__(self, code: str) -> str:
        staged = []
        for name in sorted(n for n in self.names if n in code):
            data = (self.folder / name).read_bytes()
            if len(data) > _MAX_ATTACHMENT_BYTES:
                return (
                    f"The attached file {name} has {len(data)} bytes, more than the sandbox takes; it cannot be read."
                )
            staged.append(
                f"__import__('pathlib').Path({name!r}).write_bytes(__import__('base64').b64decode("
                f"{base64.b64encode(data).decode()!r}))"
            )
        # one line of staging, so that a traceback's line numbers are off by one only when a file is staged
        prefix = "; ".join(staged) + "\n" if staged else ""
        result: str = self.run(prefix + code)
        return result


def attachment_python_tool(folder: str | Path, names: Iterable[str]) -> dspy.Tool:
    """The `python` tool, which also writes into the snippet's working directory each attachment it names.

    Args:
        folder: Where the attachments are on this machine (a GAIA split's folder).
        names: The files of `folder` a snippet may have (GAIA's `file_name`s); no other file is ever read.
    """
    tool = python_tool()
    return dspy.Tool(
        func=_AttachmentSnippet(Path(folder), frozenset(n for n in names if n)),
        name=tool.name,
        desc=tool.desc + " A file attached to the question is in the working directory: open it by its name.",
        args=tool.args,
        arg_types={"code": str},
    )


def build_agent(
    kind: AgentKind, task: Task, *, max_iters: int = 10, python: dspy.Tool | None = None
) -> ToolAgent | ReActAgent:
    """A paper agent for a task, with the `python` tool and an empty toolset.

    Args:
        kind: "assistant" (the paper's GPT-4+ agent) or "react".
        task: "math", "tabmwp" or "gaia".
        max_iters: The most tool calls in one run.
        python: The python tool to give it (default: `python_tool()`; GAIA: `attachment_python_tool(...)`).
    """
    if task not in SIGNATURES:
        raise ToolforgeError(f"no paper task {task!r}; choose one of {', '.join(SIGNATURES)}")
    signature, instructions = SIGNATURES[task]
    tools = [python or python_tool()]
    if kind == "assistant":
        return ToolAgent(dspy.Signature(signature, f"{instructions}\n{_ASSISTANT}"), tools=tools, max_iters=max_iters)
    if kind == "react":
        return ReActAgent(dspy.Signature(signature, instructions), tools=tools, max_iters=max_iters)
    raise ToolforgeError(f"no paper agent {kind!r}; choose one of {', '.join(AGENT_KINDS)}")
