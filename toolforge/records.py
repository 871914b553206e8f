"""What an evaluation leaves behind: one `ExampleRecord` per example, and the `EvaluationRun` that holds them."""

from __future__ import annotations

from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field

from toolforge.trace import FunctionCall

__all__ = ["EvaluationRun", "ExampleRecord"]


class ExampleRecord(BaseModel):
    """The outcome of running a program on one example.

    Attributes:
        example_id: Content hash of the example (inputs and labels).
        score: The metric's score in [0, 1] (`failure_score` when the program or the metric raised).
        prediction: The prediction's fields, as JSON (the trajectory is kept apart).
        trajectory: The agent's trajectory (thoughts, tool names, arguments, observations), where there is one.
        calls: The forged functions called, in order, with the `code_hash` that ran and whether it succeeded.
        lm_calls: LM requests that reached the LM (those DSPy's cache answered are free and not counted).
        prompt_tokens, completion_tokens: Tokens of the requests that reached the LM.
        wall_time_s: Wall time of the program and the metric.
        error: What the program (or the metric) raised, if anything.
        feedback: What the metric said about the prediction, for a metric that returns an object with a `feedback`
            text beside its `score` (as DSPy's GEPA metrics do: `dspy.Prediction(score=..., feedback=...)`). The
            optimizer's proposer reads it with the run.
        cached: True when this record came from the cache rather than a run.
    """

    model_config = ConfigDict(frozen=True)

    example_id: str
    score: float
    prediction: dict[str, Any] = Field(default_factory=dict)
    trajectory: dict[str, Any] | None = None
    calls: tuple[FunctionCall, ...] = ()
    lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time_s: float = 0.0
    error: str | None = None
    feedback: str | None = None
    cached: bool = False

    @property
    def dependencies(self) -> dict[str, str]:
        """Function name -> code_hash of every forged function this record's run called."""
        return {call.name: call.code_hash for call in self.calls}

    @property
    def called(self) -> set[str]:
        """Names of the forged functions called successfully."""
        return {call.name for call in self.calls if call.ok}

    def to_prediction(self) -> dspy.Prediction:
        """The prediction as a `dspy.Prediction` (with `trajectory` where there was one)."""
        fields = dict(self.prediction)
        if self.trajectory is not None:
            fields["trajectory"] = self.trajectory
        return dspy.Prediction(**fields)


class EvaluationRun(BaseModel):
    """A program evaluated on a list of examples.

    Attributes:
        score: Mean score in [0, 1] (0.0 for no examples).
        records: One record per example, in the order of the examples.
        hits, misses: Examples answered from the cache, and examples run.
        revalidated: Of the hits, records that called a function whose code has changed, and hold because the
            new code gave the same outcomes on the calls they made (checked in the sandbox, without the LM).
        lm_calls: LM requests made in this run (0 for cached records).
        lm_calls_saved, seconds_saved: What the cached records had cost when they were made.
        wall_time_s: Wall time of the whole evaluation.
    """

    model_config = ConfigDict(frozen=True)

    score: float
    records: tuple[ExampleRecord, ...]
    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    lm_calls: int = 0
    lm_calls_saved: int = 0
    seconds_saved: float = 0.0
    wall_time_s: float = 0.0

    @property
    def errors(self) -> list[ExampleRecord]:
        """Records of examples where the program or the metric raised."""
        return [r for r in self.records if r.error is not None]
