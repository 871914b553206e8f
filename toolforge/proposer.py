"""The optimizer LM's step: from the training history to typed actions on the toolset.

`Proposer` is a `dspy.Module` with a typed signature, so any DSPy LM and adapter drive it, and its prompt can
itself be optimized. This module also renders everything the proposer reads (`proposer_inputs`: the task, the
fixed tools, the functions, the failure list, scored trajectories, rejected actions) into text within a size
budget: failures first, long trajectories truncated, never the whole history raw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import dspy
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from toolforge._text import one_line
from toolforge.actions import Action, parse_action, validation_reasons
from toolforge.records import ExampleRecord
from toolforge.toolset import Toolset

__all__ = [
    "ExampleArgument",
    "ParameterSpec",
    "ProposeActions",
    "ProposedAction",
    "ProposedActionReply",
    "Proposer",
    "describe_task",
    "proposer_inputs",
    "render_failures",
    "render_functions",
    "render_record",
    "render_trajectories",
    "usage_notes",
]


_TYPE_SYNONYMS = {
    "str": "string",
    "text": "string",
    "float": "number",
    "double": "number",
    "decimal": "number",
    "int": "integer",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "sequence": "array",
    "dict": "object",
    "mapping": "object",
}
_ACTION_SYNONYMS = {
    "add": "add_function",
    "create": "add_function",
    "new": "add_function",
    "revise": "revise_function",
    "update": "revise_function",
    "modify": "revise_function",
    "edit": "revise_function",
    "replace": "revise_function",
    "fix": "revise_function",
    "remove": "remove_function",
    "delete": "remove_function",
    "drop": "remove_function",
}


# The docstrings and field descriptions of the models below are part of the proposer's prompt (its output schema):
# they are written for the LM.
class ParameterSpec(BaseModel):
    """One argument of a proposed function."""

    name: str = Field(description="the argument's name, as in the def")
    type: Literal["string", "number", "integer", "boolean", "array", "object"] = Field(description="its JSON type")
    description: str = Field(default="", description="what the argument is")
    required: bool = Field(default=True, description="false only if the def gives it a default")

    @field_validator("type", mode="before")
    @classmethod
    def _json_type(cls, value: Any) -> Any:
        """Python's name for a type (`float`, `list[int]`, `dict`) read as its JSON type, as LMs often write it."""
        if isinstance(value, str):
            key = value.strip().lower().split("[")[0]
            return _TYPE_SYNONYMS.get(key, key)
        return value


# An example argument's value is JSON text, so that any value fits (an integer stays an integer; a list of lists,
# an object) under any LM's structured outputs, whose closed schemas cannot say "any JSON value"; a string argument
# may be plain text. Given a JSON value instead (a scripted proposer, an older checkpoint), it is written as text.
class ExampleArgument(BaseModel):
    """One argument value for the test call of a proposed function."""

    name: str
    value: str = Field(description='the value as JSON (12, 2.5, true, [4, 6], {"a": 1}); a string argument as its text')

    @field_validator("value", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"an example argument must be a JSON value, got {type(value).__name__}") from exc

    def decoded(self, json_type: str | None = None) -> Any:
        """The value for an argument of `json_type`: a string argument takes the text as it is (or the string it
        quotes); any other takes the JSON value the text holds, or the text itself if it holds none, for the
        argument check to refuse with its reason."""
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return self.value
        if json_type == "string" and not isinstance(parsed, str):
            return self.value
        return parsed


class ProposedAction(BaseModel):
    """One action on the agent's functions."""

    # A flat, closed record that any LM (even a small one under schema-constrained decoding) can fill in;
    # `to_action()` turns it into a typed `Action`.

    action: Literal["add_function", "revise_function", "remove_function"] = Field(
        description="add_function a new function, revise_function an existing one, or remove_function one"
    )

    @field_validator("action", mode="before")
    @classmethod
    def _action_name(cls, value: Any) -> Any:
        """`add`, `update`, `delete` and the like read as the actions they mean, as LMs often write them."""
        if isinstance(value, str):
            key = value.strip().lower().removesuffix("_function").removesuffix("function").strip("_ ")
            return _ACTION_SYNONYMS.get(key, value)
        return value

    name: str = Field(description="the function's name: a Python identifier, also the name of its def")
    description: str = Field(default="", description="what the function does and returns (for add and revise)")
    parameters: list[ParameterSpec] = Field(
        default_factory=list, description="the def's arguments, in order (for add and revise)"
    )
    code: str = Field(default="", description="Python source defining `def <name>(<arguments>):` at top level")
    packages: list[str] = Field(default_factory=list, description="modules beyond the standard library it imports")
    example_arguments: list[ExampleArgument] = Field(
        default_factory=list, description="argument values for a test call (for add and revise)"
    )

    @classmethod
    def of(
        cls,
        action: Literal["add_function", "revise_function", "remove_function"],
        function: Any,
        example_arguments: dict[str, Any] | None = None,
    ) -> ProposedAction:
        """The proposal that carries `function` (a ForgedFunction), e.g. to script a proposer in tests."""
        required = set(function.parameters.get("required", []))
        return cls(
            action=action,
            name=function.name,
            description=function.description,
            parameters=[
                ParameterSpec(
                    name=arg,
                    type=schema.get("type", "string"),
                    description=schema.get("description", ""),
                    required=arg in required,
                )
                for arg, schema in function.parameters["properties"].items()
            ],
            code=function.code,
            packages=list(function.packages),
            example_arguments=[ExampleArgument(name=k, value=v) for k, v in (example_arguments or {}).items()],
        )

    _malformed: str | None = PrivateAttr(default=None)

    @property
    def malformed(self) -> str | None:
        """Why the LM's record of this action does not validate, for a `ProposedActionReply` read from a reply;
        None for a valid one."""
        return self._malformed

    def arguments(self) -> dict[str, Any]:
        """The example arguments as a dict of values, each read for its parameter's type."""
        types = {p.name: p.type for p in self.parameters}
        return {a.name: a.decoded(types.get(a.name)) for a in self.example_arguments}

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON Schema of the proposed parameters."""
        properties: dict[str, Any] = {}
        for p in self.parameters:
            properties[p.name] = {"type": p.type, **({"description": p.description} if p.description else {})}
        return {"type": "object", "properties": properties, "required": [p.name for p in self.parameters if p.required]}

    def to_action(self) -> Action:
        """The typed action. Raises pydantic's ValidationError when fields are missing."""
        if self.action == "remove_function":
            data: dict[str, Any] = {"action": self.action, "name": self.name}
        else:
            data = {
                "action": self.action,
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters_schema(),
                "code": self.code,
                "packages": self.packages,
            }
        return parse_action(data)

    def summary(self) -> str:
        verb = self.action.replace("_function", "")
        return f"{verb} {self.name}"


class ProposedActionReply(ProposedAction):
    """One action on the agent's functions."""

    # What the proposer's reply is read into: the same schema, but a record that does not validate (an unknown
    # action, a missing field) becomes a `malformed` action, which the optimizer sends back with its reason, instead
    # of failing the whole reply and with it the valid actions beside it.
    model_config = ConfigDict(title="ProposedAction")

    @model_validator(mode="wrap")
    @classmethod
    def _keep_malformed(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            reason = validation_reasons(exc)
        if not isinstance(data, dict):
            data, reason = {}, f"an action must be a JSON object, got {type(data).__name__}: {one_line(data, 100)}"
        action, name = data.get("action"), data.get("name")
        record = cls.model_construct(
            action=action if isinstance(action, str) and action else "?",
            name=name if isinstance(name, str) and name else "?",
        )
        record._malformed = reason
        return record


class ProposeActions(dspy.Signature):
    """You improve an AI agent by editing the Python functions it can call as tools, as in training: the agent's
    language model stays fixed, its functions are the parameters.

    Study the scored trajectories: where the agent failed, what function would have let it succeed? Propose up to
    the allowed number of actions: `add_function` (a new, reusable function), `revise_function` (fix or improve an
    existing one; give its full new version), or `remove_function`. Propose no actions if no change would help.

    Each function needs: a name (a Python identifier), a description the agent will read (it never sees the code),
    `parameters` listing exactly the def's arguments in order (`required` false only for those with a default),
    and `code` that defines a top-level `def` with that name. Use the standard
    library only unless a package is listed as available. Functions must return their result (JSON-serialisable),
    not print it. Give `example_arguments` for a test call. Do not repeat function sets from the failure list, and
    do not reuse the names of fixed tools."""

    task: str = dspy.InputField(desc="what the agent does: its inputs and outputs")
    fixed_tools: str = dspy.InputField(
        desc="tools the agent always has, and what they do; functions must not reuse their names"
    )
    current_functions: str = dspy.InputField(
        desc="the agent's current functions, with their full code and how the training runs used them"
    )
    failure_list: str = dspy.InputField(desc="function sets tried earlier that scored worse than the current one")
    trajectories: str = dspy.InputField(desc="the agent's recent runs with the current functions, failures first")
    rejected: str = dspy.InputField(
        desc="actions proposed earlier in this step, or in the last step, that were rejected before any evaluation, "
        "and why"
    )
    max_actions: int = dspy.InputField(desc="the most actions to propose")
    actions: list[ProposedActionReply] = dspy.OutputField(desc="the actions, possibly none")


class Proposer(dspy.Module):
    """Proposes actions on a toolset from the training history.

    Args:
        reasoning: Think before answering (`ChainOfThought`); turn it off for small LMs, whose free-text
            reasoning tends to run on until the token limit.
    """

    def __init__(self, reasoning: bool = True) -> None:
        super().__init__()
        self.propose = dspy.ChainOfThought(ProposeActions) if reasoning else dspy.Predict(ProposeActions)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        prediction: dspy.Prediction = self.propose(**inputs)
        return prediction


# --------------------------------------------------------------------------------------------- rendering
class FailedCandidateLike(Protocol):
    """What the failure list shows of a candidate that scored lower (the optimizer's `FailedCandidate`)."""

    @property
    def step(self) -> int: ...
    @property
    def score(self) -> float | None: ...  # None: refused before every training example was run
    @property
    def best_score(self) -> float: ...
    @property
    def actions(self) -> list[dict[str, Any]]: ...


def proposer_inputs(
    *,
    program: dspy.Module,
    fixed_tools: str,
    toolset: Toolset,
    notes: dict[str, str],
    failures: Sequence[FailedCandidateLike],
    trajectories: str,
    rejected: Sequence[str],
    max_actions: int,
) -> dict[str, Any]:
    """The inputs of `ProposeActions`, as text: what the proposer reads in one call.

    Args:
        program: The program being trained (its task is described from its signature or predictors).
        fixed_tools: The program's fixed tools, a line each (empty for none).
        toolset: The candidate's functions; `notes` says how the training runs used each.
        failures: The failure list.
        trajectories: The scored runs, as `render_trajectories` gives them.
        rejected: The actions sent back earlier in this step or in the last one, a line each with the reason.
        max_actions: The most actions to propose.
    """
    return {
        "task": describe_task(program),
        "fixed_tools": fixed_tools or "(none)",
        "current_functions": render_functions(toolset, notes),
        "failure_list": render_failures(failures),
        "trajectories": trajectories,
        "rejected": "\n".join(rejected) or "(none)",
        "max_actions": max_actions,
    }


def describe_task(program: dspy.Module) -> str:
    """What the program does: its signature and instructions, or its predictors' signatures."""
    signature = getattr(program, "signature", None)
    if signature is not None and hasattr(signature, "signature"):
        text = f"{signature.signature}"
        return f"{text}\n{signature.instructions}" if signature.instructions else text
    parts = [f"{name}: {p.signature.signature}" for name, p in program.named_predictors()]
    return f"{type(program).__name__} with predictors " + "; ".join(parts)


def render_failures(failures: Sequence[FailedCandidateLike]) -> str:
    """The failure list: each candidate's score against the best one's then, and the actions that built it."""
    if not failures:
        return "(none)"
    parts = []
    for failure in failures:
        scored = (
            f"scored {failure.score:.3f}"
            if failure.score is not None
            else "was refused before the other training examples were run"
        )
        lines = [f"Step {failure.step}: {scored} (the current functions score {failure.best_score:.3f}) after:"]
        for action in failure.actions:
            lines.append(f"- {action['action']} {action['name']}")
            if action.get("code"):
                code = action["code"].strip()
                lines.append(
                    "  ```python\n  "
                    + (code if len(code) < 1500 else code[:1500] + "\n  ...").replace("\n", "\n  ")
                    + "\n  ```"
                )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def usage_notes(records: Sequence[ExampleRecord], names: Sequence[str]) -> dict[str, str]:
    """For each function in `names`, how the training runs used it: in how many runs, and how many calls failed.
    A function that helps nobody is a candidate for removal; one whose calls fail, for revision."""
    notes = {}
    for name in names:
        calls = [call for record in records for call in record.calls if call.name == name]
        runs = sum(1 for record in records if any(call.name == name for call in record.calls))
        failed = sum(1 for call in calls if not call.ok)
        notes[name] = f"usage: called in {runs} of {len(records)} training runs" + (
            f"; {failed} of its {len(calls)} calls failed" if failed else ""
        )
    return notes


def render_functions(toolset: Toolset, notes: dict[str, str] | None = None) -> str:
    """The functions with their full code, each with its note (e.g. its usage) where there is one."""
    if not len(toolset):
        return "(none yet)"
    parts = []
    for function in toolset:
        note = (notes or {}).get(function.name)
        parts.append(
            f"### {function.name}\n{function.description}\n"
            + (f"{note}\n" if note else "")
            + f"parameters: {json.dumps(function.parameters)}\n"
            + (f"packages: {', '.join(function.packages)}\n" if function.packages else "")
            + ("not deterministic: equal arguments gave different results\n" if not function.deterministic else "")
            + f"```python\n{function.code.rstrip()}\n```"
        )
    return "\n\n".join(parts)


def render_trajectories(
    records: Sequence[ExampleRecord], examples: Sequence[dspy.Example], *, budget_chars: int, seed: int
) -> str:
    """Scored runs, failures first (lowest score first), each truncated, all within `budget_chars`."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)  # which successes and which equal-score failures are shown varies by step
    order.sort(key=lambda i: records[i].score)
    per_item = max(400, budget_chars // 6)
    parts: list[str] = []
    used = 0
    shown = 0
    for i in order:
        text = render_record(records[i], examples[i])
        if len(text) > per_item:
            text = text[: per_item - 30] + "\n... (truncated)"
        if used + len(text) > budget_chars and shown:
            break
        parts.append(text)
        used += len(text) + 2
        shown += 1
    failures = sum(1 for r in records if r.score < 1.0)
    header = (
        f"{len(records)} runs, {failures} not fully successful (mean score "
        f"{sum(r.score for r in records) / max(1, len(records)):.3f}); showing {shown}."
    )
    return "\n\n".join([header, *parts])


def render_record(record: ExampleRecord, example: dspy.Example) -> str:
    """One scored run as text: status, inputs (a table keeps its rows), tool calls and observations, output, the
    metric's feedback (where it gives one), error."""
    status = "success" if record.score >= 1.0 else "failure" if record.score <= 0.0 else "partial"
    lines = [f"--- score {record.score:.2f} ({status})", "inputs:"]
    lines += [f"  {key}:{_block(value, 300)}" for key, value in example.inputs().items()]
    trajectory = record.trajectory or {}
    step = 0
    while f"tool_name_{step}" in trajectory:
        thought = _short(trajectory.get(f"thought_{step}", ""), 200)
        call = f"{trajectory[f'tool_name_{step}']}({json.dumps(trajectory.get(f'tool_args_{step}', {}))})"
        lines.append(f"  thought: {thought}")
        lines.append(f"  call: {_short(call, 300)} -> {_short(trajectory.get(f'observation_{step}', ''), 300)}")
        step += 1
    if record.prediction:
        lines.append("output: " + "; ".join(f"{k}: {_short(v, 200)}" for k, v in record.prediction.items()))
    if record.feedback:
        lines.append(f"feedback: {_short(record.feedback, 400)}")
    if record.error:
        lines.append(f"error: {_short(record.error, 300)}")
    return "\n".join(lines)


def _block(value: Any, limit: int) -> str:
    """An input value within `limit` characters, after its key: on the same line, or, if it has several lines (a
    table), indented below, line by line."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    rows = [" ".join(row.split()) for row in text.strip().splitlines()]
    rows = [row for row in rows if row]
    if len(rows) <= 1:
        return " " + _short(text, limit)
    shown: list[str] = []
    used = 0
    for row in rows:
        if used + len(row) > limit:
            shown.append(f"... ({len(rows) - len(shown)} more lines)")
            break
        shown.append(row)
        used += len(row) + 1
    return "\n" + "\n".join("    " + row for row in shown)


def _short(value: Any, limit: int) -> str:
    """A value of a run (text, or JSON for anything else) on one line."""
    return one_line(value if isinstance(value, str) else json.dumps(value, default=str), limit)
