"""A scripted `dspy.LM` for tests and benchmarks: answers come from a Python function, calls are counted.

Built on DSPy's supported engine route (`dspy.LM(model, engine=...)`), so DSPy's own caching, callbacks and
usage tracking apply as they do to a real LM. `latency_s` simulates a remote LM's response time.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import dspy
from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

Respond = Callable[[str, str], dict[str, Any]]


class ScriptedEngine:
    """Answers each request with the fields `respond(system_prompt, last_user_message)` returns."""

    def __init__(self, respond: Respond, latency_s: float = 0.0) -> None:
        self.respond = respond
        self.latency_s = latency_s
        self.finish_reason = "stop"  # "length": each reply says it stopped at the token limit
        self.calls = 0
        self.requests: list[tuple[str, str]] = []
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each call, for overhead accounting
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Response:
        started = time.perf_counter()
        validate_request(request)
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system or [])
        user = request.messages[-1].text or ""
        with self._lock:
            self.requests.append((system, user))
        text = chat_adapter_reply(self.respond(system, user))
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            self.calls += 1
            self.intervals.append((started, time.perf_counter()))
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(text)]),
            finish_reason=self.finish_reason,
            usage=Usage(input_tokens=len(system + user) // 4, output_tokens=len(text) // 4, total_tokens=0),
        )

    def stream(self, request: Any) -> Any:
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def chat_adapter_reply(fields: dict[str, Any]) -> str:
    """The text of a reply that DSPy's ChatAdapter parses into `fields`."""
    return "".join(f"[[ ## {k} ## ]]\n{_render(v)}\n\n" for k, v in fields.items()) + "[[ ## completed ## ]]"


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def scripted_lm(
    respond: Respond, *, name: str = "agent", latency_s: float = 0.0, temperature: float = 0.0, cache: bool = True
) -> tuple[dspy.LM, ScriptedEngine]:
    engine = ScriptedEngine(respond, latency_s)
    return dspy.LM(f"local/{name}", engine=engine, temperature=temperature, cache=cache), engine


def field(user: str, name: str) -> str:
    """The text of input field `name` in a ChatAdapter user message."""
    marker = f"[[ ## {name} ## ]]\n"
    if marker not in user:
        return ""
    rest = user.split(marker, 1)[1]
    return rest.split("\n\n[[ ## ", 1)[0].strip()


def listed_tools(system: str) -> list[str]:
    """The names of the tools a ToolAgent step's system prompt lists, in order (a line `name(args): description`
    each, after the `Tools (` header)."""
    if "Tools (" not in system:
        return []
    return re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\([^\n]*?\): ", system.split("Tools (", 1)[1], re.M)


def offers(system: str, name: str) -> bool:
    """Whether a ToolAgent step's system prompt lists the tool `name`."""
    return name in listed_tools(system)


def tool_agent_script(choose: Callable[[str], tuple[str, dict[str, Any]] | None]) -> Respond:
    """A ToolAgent policy: on the first step call `choose(question)` (a tool and its arguments, or None to
    finish at once), then finish, then answer with the last observation."""

    def respond(system: str, user: str) -> dict[str, Any]:
        question = field(user, "question")
        if "next_tool_call" in system:
            choice = None if "[[ ## tool_name_0 ## ]]" in user else choose(question)
            if choice is None:
                return {"next_thought": "I can answer now.", "next_tool_call": {"name": "finish", "args": {}}}
            return {"next_thought": f"Use {choice[0]}.", "next_tool_call": {"name": choice[0], "args": choice[1]}}
        observation = field(user, "observation_0").split("\n")[0]
        if observation.startswith("Execution error") or field(user, "tool_name_0") == "finish":
            observation = ""
        return {"reasoning": "From the observation.", "answer": observation or "0"}

    return respond
