"""The reference training loop: AG2's `AgentOptimizer` (the paper's code) on toolforge's parts, without its cache.

The baseline `optimizer_overhead.py` measures toolforge against. It follows AG2's loop
(`autogen/agentchat/contrib/agent_optimizer.py` and its notebook, `agentchat_agentoptimizer.ipynb`) step for step:

    for epoch in range(max_epochs):
        for example in trainset: run the agent, record whether it succeeded     # every example, every epoch
        optimizer.step()                                                       # judge, then propose

where `step()` compares the mean score of the epoch's runs with the best so far: lower is rolled back (the trial
functions go to the failure list, and the next proposal starts from the best functions), equal or higher is
accepted (the failure list is cleared). It then asks the proposer LM `max_actions_per_step` times for an action on
the best functions, each up to `max_trials` (3) times until the reply is a valid action; the next epoch runs the
functions so built. The paper's early stop (no improvement for `patience` epochs) is an option; AG2's code has none
(`patience=None`, the default).

What is toolforge's here, so that both loops see the same agent and the same proposer LM: the agent (a program
holding a `Toolset`, e.g. a `ToolAgent`), evaluation by `tf.Evaluator` with `cache=None` (no record is reused, no
forged-function call is answered from a cache), the proposer module (`tf.Proposer`) and the text it reads
(`toolforge.proposer.proposer_inputs`), and the validation of a proposal (building the typed action and applying it,
AG2's JSON, syntax and "the function to remove exists" checks). Whether the LMs cache their requests is up to the
LMs the caller passes (AG2's `OpenAIWrapper` caches by `cache_seed`; `dspy.LM(cache=False)` does not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from pydantic import ValidationError

import toolforge as tf
from toolforge.program import describe_fixed_tools
from toolforge.proposer import proposer_inputs, render_trajectories, usage_notes

__all__ = ["ReferenceEpoch", "ReferenceFailure", "ReferenceResult", "reference_loop"]

logger = logging.getLogger(__name__)

_TRAJECTORY_BUDGET = 12_000  # characters of scored runs the proposer reads, as toolforge's default


@dataclass(frozen=True)
class ReferenceFailure:
    """An entry of AG2's failure list: functions that scored lower than the best ones (a `FailedCandidateLike`)."""

    step: int
    score: float
    best_score: float
    actions: list[dict[str, Any]]


@dataclass(frozen=True)
class ReferenceEpoch:
    """One epoch: the functions it ran, their score, what `step()` decided, and the LM calls it made."""

    epoch: int
    functions: tuple[str, ...]
    score: float
    outcome: Literal["accepted", "rolled_back"]
    examples_run: int
    agent_lm_calls: int  # requests the evaluation made (DSPy counts those its cache answered too)
    proposer_calls: int  # calls of the proposer module, retries included
    proposed: tuple[str, ...]  # the actions the next epoch runs, e.g. "add square"


@dataclass
class ReferenceResult:
    """What the loop did, epoch by epoch, and the best functions it found."""

    best: tf.Toolset
    best_score: float
    epochs: list[ReferenceEpoch] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def examples_run(self) -> int:
        return sum(e.examples_run for e in self.epochs)

    @property
    def proposer_calls(self) -> int:
        return sum(e.proposer_calls for e in self.epochs)


def reference_loop(
    program: dspy.Module,
    trainset: list[dspy.Example],
    metric: Any,
    *,
    proposer_lm: dspy.LM,
    max_epochs: int,
    patience: int | None = None,
    max_actions_per_step: int = 1,
    max_trials: int = 3,
    num_threads: int = 8,
    proposer: tf.Proposer | None = None,
) -> ReferenceResult:
    """Train `program`'s toolset (its `toolset` attribute) as AG2's AgentOptimizer loop does; the agent's LM is
    the configured one (`dspy.context(lm=...)`).

    Args:
        program: The agent; a copy is trained, `program` is left as it is.
        trainset: Every example runs in every epoch.
        metric: `metric(example, prediction, trace=None)`.
        proposer_lm: The optimizer's LM.
        max_epochs: Epochs (each: run every example, then `step()`).
        patience: Stop after this many epochs in a row without a higher score (the paper's early stop); None
            runs every epoch, as AG2's code does.
        max_actions_per_step: Proposer calls per step, each for one action on the functions so far.
        max_trials: Calls per action until the reply is valid (AG2's `_max_trials`).
        num_threads: Examples run at once.
        proposer: The proposer module (default `tf.Proposer()`, as `FunctionOptimizer`'s).
    """
    agent = program.deepcopy()
    proposer = proposer if proposer is not None else tf.Proposer()
    evaluator = tf.Evaluator(metric, cache=None, num_threads=num_threads)
    trial: tf.Toolset = agent.toolset
    trial_actions: list[dict[str, Any]] = []
    best, best_score, best_run = trial, -1.0, None
    failures: list[ReferenceFailure] = []
    result = ReferenceResult(best=best, best_score=best_score)
    since_better = 0
    for epoch in range(max_epochs):
        agent.toolset = trial
        run = evaluator.evaluate(agent, trainset)
        if run.score < best_score:
            failures.append(ReferenceFailure(epoch, run.score, best_score, trial_actions))
            failures.sort(key=lambda f: f.score)
            outcome: Literal["accepted", "rolled_back"] = "rolled_back"
            since_better += 1
        else:
            since_better = 0 if run.score > best_score else since_better + 1
            failures = []
            best, best_score, best_run = trial, run.score, run
            outcome = "accepted"
        assert best_run is not None  # the first epoch is always accepted (best_score starts at -1)
        stop = patience is not None and since_better >= patience
        proposals: list[tf.ProposedAction] = []
        calls = 0
        trial = best  # the next epoch runs the best functions with the actions proposed on them
        if not stop:
            inputs = {"program": agent, "fixed_tools": describe_fixed_tools(agent), "failures": failures}
            trajectories = render_trajectories(best_run.records, trainset, budget_chars=_TRAJECTORY_BUDGET, seed=epoch)
            notes = usage_notes(best_run.records, best.names)
            inputs |= {"trajectories": trajectories, "notes": notes, "rejected": [], "max_actions": 1}
            proposals, trial, calls = _propose(proposer, proposer_lm, inputs, best, max_actions_per_step, max_trials)
        trial_actions = [p.model_dump() for p in proposals]
        result.epochs.append(
            ReferenceEpoch(
                epoch=epoch,
                functions=tuple(agent.toolset.names),
                score=run.score,
                outcome=outcome,
                examples_run=run.misses,
                agent_lm_calls=run.lm_calls,
                proposer_calls=calls,
                proposed=tuple(p.summary() for p in proposals),
            )
        )
        logger.info("reference epoch %d: score %.3f, %s; proposed %s", epoch, run.score, outcome, trial_actions)
        if stop:
            result.stopped_early = True
            break
    result.best, result.best_score = best, best_score
    return result


def _propose(
    proposer: tf.Proposer,
    proposer_lm: dspy.LM,
    inputs: dict[str, Any],
    best: tf.Toolset,
    max_actions_per_step: int,
    max_trials: int,
) -> tuple[list[tf.ProposedAction], tf.Toolset, int]:
    """AG2's proposal half of `step()`: the actions on `best` the proposer LM gives (one call per action, again while
    the reply is not valid, at most `max_trials` times), the functions they build, and the proposer calls made."""
    incumbent = best
    accepted: list[tf.ProposedAction] = []
    calls = 0
    for _ in range(max_actions_per_step):
        for _ in range(max_trials):
            with dspy.context(lm=proposer_lm):
                prediction = proposer(**proposer_inputs(toolset=incumbent, **inputs))
            calls += 1
            valid = _valid(prediction.actions or [], incumbent)
            if valid is not None:
                accepted += valid[0]
                incumbent = valid[1]
                break
    return accepted, incumbent, calls


def _valid(replies: list[Any], incumbent: tf.Toolset) -> tuple[list[tf.ProposedAction], tf.Toolset] | None:
    """The actions and the functions they build, or None if one of them is not a valid action on `incumbent`."""
    proposals = [r if isinstance(r, tf.ProposedAction) else tf.ProposedAction.model_validate(r) for r in replies]
    try:
        if any(getattr(p, "malformed", None) for p in proposals):
            return None
        built = incumbent
        for proposal in proposals:
            built = built.apply(proposal.to_action())
    except (ValidationError, tf.ToolforgeError) as exc:
        logger.info("reference: invalid proposal (%s), asking again", exc)
        return None
    return proposals, built
