"""`FunctionOptimizer`: the AgentOptimizer training loop (arXiv 2402.11359) as a DSPy optimizer.

One *step* per epoch: evaluate the best toolset on the training set (cached, so free after the first time); ask
the proposer LM for typed actions given the current functions, the failure list and the scored trajectories;
check each action (its own validation, the toolset's rules, a smoke call in the sandbox, no table of training
answers); when none passes, sending the rejected ones back with their reason, up to `max_trials` calls (the
reasons of those rejected beside an action that passed reach the proposer at the next step); apply the actions
that passed and evaluate the candidate.

**Acceptance by evidence** (see `toolforge.evidence`): a candidate is compared with the best toolset example by
example, on the examples its actions touch (whose runs called a function they add, revise or remove), on the
training set and then on the validation examples (the valset, or a share of the training set held out when there is
none). It is *better* when those flips favour it by `min_net_flips` or more (and, with `significance`, an exact sign
test agrees); *harmful* when they go against it, when it raises the training side and lowers the validation side,
or when the flips over all examples are significantly against it. A better candidate is accepted and resets
`patience`; a harmful one is rolled back (the failure list shows it). A candidate that is neither is accepted as a
tie only if it does not add a function (the smaller toolset, then the one with fewer literals, wins ties) and does
not remove a seed function. **Credit per action**: when a step has several actions, each is judged on the examples
it touches; those that do not earn their place are rolled back with their own evidence, and the rest, when they
differ from the whole, are evaluated together once more before they are accepted. **Early-stop**: after
`patience` steps without a better candidate (or, with `stop_when_solved`, once the best toolset answers every
training and validation example). At the end the last accepted toolset is the
result; functions no training trajectory called successfully are pruned (never the seed functions, by default), if
the smaller toolset, judged like any other change, does no harm.

Unlike the reference implementation, removals really remove, every function runs its own code, proposals are
checked before they cost an evaluation, nothing runs in the caller's process, unchanged work is never paid for
twice, the prompt has a size budget, and with `log_dir` a compile resumes after a crash where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import dspy
import tqdm
from dspy.primitives.module import set_attribute_by_name
from dspy.teleprompt.teleprompt import Teleprompter
from dspy.utils.exceptions import (
    ContextWindowExceededError,
    LMAuthError,
    LMBillingError,
    LMConfigurationError,
    LMUnsupportedModelError,
)
from dspy.utils.usage_tracker import UsageTracker
from pydantic import BaseModel, Field, ValidationError, model_serializer, model_validator

from toolforge._checks import check_int
from toolforge._hashing import content_hash
from toolforge._io import read_json, write_json
from toolforge._text import one_line
from toolforge._usage import count_lm_usage
from toolforge.actions import Action, AddFunction, RemoveFunction, ReviseFunction, validation_reasons
from toolforge.cache import EvaluationCache, as_cache
from toolforge.errors import ToolforgeError
from toolforge.evaluate import Evaluator
from toolforge.evidence import HARM_SIGNIFICANCE, Flips, flips, sign_test, touched_by
from toolforge.keys import example_id, program_fingerprint
from toolforge.lm import resolve_lm
from toolforge.memorised import literal_count
from toolforge.program import (
    check_examples,
    check_toolset_reaches_agent,
    describe_fixed_tools,
    find_toolset,
    fixed_tool_names,
)
from toolforge.proposer import (
    ProposedAction,
    ProposedActionReply,
    Proposer,
    proposer_inputs,
    render_trajectories,
    usage_notes,
)
from toolforge.records import EvaluationRun
from toolforge.sandbox import Sandbox
from toolforge.toolset import Toolset
from toolforge.tracking import MlflowTracker, adopt_autolog, require_mlflow
from toolforge.validator import check_proposal

__all__ = [
    "AcceptedToolset",
    "ActionEvidence",
    "ActionOutcome",
    "Checkpoint",
    "FailedCandidate",
    "FunctionOptimizer",
    "HeldOutScores",
    "OptimizationReport",
    "StepEvidence",
    "StepReport",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT: Final = "toolforge.checkpoint"
CHECKPOINT_VERSION = 1
LEDGER = "lm-calls.jsonl"  # in log_dir: the LM requests made since the last checkpoint (see `_Ledger`)


class ActionEvidence(BaseModel):
    """What one action of an evaluated step did: the flips on the training examples it touched (with the step's
    other actions beside it), and the training scores of the step's candidate with all its actions and with only
    those kept (where some were rolled back). A candidate refused on the examples run first (those that called what
    its removals remove, or those that could get better) was not run on the others, so it has no score: the step
    has no score with all its actions when that candidate was refused, whole or some of its actions."""

    flips: Flips  # where the action was refused, on the examples of the candidate that refused it
    score_together: float | None  # None: the candidate with all the actions was not run on every example
    score_kept: float | None = None


class StepEvidence(BaseModel):
    """The paired comparison a step's decision rests on (see `toolforge.evidence`): flips on the examples the
    accepted (or, when none were, all the step's) actions touched, on the training and validation examples, and
    over all examples compared; the verdict it gave."""

    touched: Flips
    val_touched: Flips | None = None
    overall: Flips
    verdict: Literal["better", "neutral", "harmful"]
    why: str | None = None  # what made it harmful


class ActionOutcome(BaseModel):
    """What became of one proposed action."""

    summary: str
    proposal: dict[str, Any]
    status: Literal["accepted", "rolled_back", "rejected", "dropped"]
    reason: str | None = None
    trial: int
    evidence: ActionEvidence | None = None


class LMUsage(BaseModel):
    """The LM requests of one role in a step, and their tokens."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt: int, completion: int, calls: int = 1) -> None:
        self.calls += calls
        self.prompt_tokens += prompt
        self.completion_tokens += completion


class StepUsage(BaseModel):
    """A step's LM usage: the agent's (evaluations) and the proposer's."""

    agent: LMUsage = Field(default_factory=LMUsage)
    proposer: LMUsage = Field(default_factory=LMUsage)

    def flat(self) -> dict[str, int]:
        """As report.json and checkpoints write it: `agent_lm_calls`, `agent_prompt_tokens`, ..."""
        return {
            f"{role}_{name}": getattr(getattr(self, role), field)
            for role in ("agent", "proposer")
            for name, field in (("lm_calls", "calls"), ("prompt_tokens", "prompt_tokens"),
                                ("completion_tokens", "completion_tokens"))
        }  # fmt: skip

    @classmethod
    def from_flat(cls, data: dict[str, Any]) -> StepUsage:
        return cls(
            **{
                role: LMUsage(
                    calls=data.pop(f"{role}_lm_calls", 0),
                    prompt_tokens=data.pop(f"{role}_prompt_tokens", 0),
                    completion_tokens=data.pop(f"{role}_completion_tokens", 0),
                )
                for role in ("agent", "proposer")
            }
        )


class StepReport(BaseModel):
    """One step of the training loop. Its LM usage is `usage.agent` / `usage.proposer` (calls and tokens), written
    flat in JSON as `agent_lm_calls`, `agent_prompt_tokens`, ... (the format report.json and checkpoints have)."""

    step: int
    outcome: Literal["accepted", "rolled_back", "no_change", "proposal_failed"]
    score_before: float
    score_after: float | None = None
    improved: bool = False
    actions: list[ActionOutcome] = Field(default_factory=list)
    candidate_fingerprint: str | None = None
    best_fingerprint: str
    usage: StepUsage = Field(default_factory=lambda: StepUsage())
    cache_hits: int = 0
    cache_misses: int = 0
    cache_revalidated: int = 0  # of the hits: records that held for revised code (same outcomes on their calls)
    interrupted_lm_calls: int = 0  # of the LM calls above, those an interrupted run of this step made (see below)
    wall_time_s: float = 0.0
    evidence: StepEvidence | None = None
    reason: str | None = None  # why the candidate was accepted or rolled back

    @model_validator(mode="before")
    @classmethod
    def _usage_from_flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "usage" not in data and any(k.endswith("_lm_calls") for k in data):
            data = dict(data)
            data["usage"] = StepUsage.from_flat(data)
        return data

    @model_serializer(mode="wrap")
    def _usage_as_flat(self, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in handler(self).items():
            if key == "usage":
                out.update(self.usage.flat())
            else:
                out[key] = value
        return out

    note: str | None = None


class HeldOutScores(BaseModel):
    """The program's score on examples the compile never saw (a test split), before and after training; a compile
    does not know them: whoever evaluates writes them into the report (`toolforge.report.record_held_out`)."""

    examples: int
    before: float  # the student as it came
    after: float  # the trained program
    source: str = ""  # which examples, e.g. "load_dataset('test'), first 5"


class OptimizationReport(BaseModel):
    """What a compile did: every step, why it stopped, and what it kept.

    LM calls are the requests that reached an LM (DSPy's cache answers the others, free), counted across every
    run of the compile: those a run made before it was interrupted (a crash, `kill -9`, Ctrl-C) are logged as they
    are made (`log_dir/lm-calls.jsonl`) and added when it resumes, so with DSPy's cache on, a resumed compile
    reports what an uninterrupted one does. Not counted: a request in flight when its process died (no answer came
    back). With DSPy's cache off, requests a resumed step repeats are made, and counted, again.
    `interrupted_lm_calls` says how many came from interrupted runs.
    """

    initial_score: float
    best_score: float
    stop_reason: Literal["max_epochs", "early_stop", "solved", "budget"]
    initial_errors: int = 0  # training examples on which the program (or the metric) raised at the start
    initial_error: str | None = None  # the first of those errors, e.g. an LM that cannot be reached
    held_out: int = 0  # training examples held out for acceptance (no valset was given)
    seed_functions: list[str] = Field(default_factory=list)  # the functions the student came with
    steps: list[StepReport] = Field(default_factory=list)
    accepted_steps: list[int] = Field(default_factory=list)
    val_scores: dict[int, float] = Field(default_factory=dict)
    selected_step: int = 0
    pruned: list[str] = Field(default_factory=list)  # functions dropped as unused
    pruned_score: float | None = None  # training score without the unused functions, where that was tried
    pruned_val_score: float | None = None  # and validation score, where there is a valset and training held
    unused_kept: list[str] = Field(default_factory=list)  # unused, but the score fell without them: kept
    final_functions: list[str] = Field(default_factory=list)
    final_fingerprint: str = ""
    agent_lm_calls: int = 0
    proposer_lm_calls: int = 0
    interrupted_lm_calls: int = 0  # of the LM calls above, those made by runs that were interrupted (see below)
    resumed_after_step: int | None = None
    wall_time_s: float = 0.0
    agent_prompt_tokens: int = 0  # tokens of the LM calls above, per role (a checkpoint from before they were
    agent_completion_tokens: int = 0  # counted adds its steps' tokens, not its baseline's)
    proposer_prompt_tokens: int = 0
    proposer_completion_tokens: int = 0
    agent_lm: str | None = None  # the model the agent's requests went to (DSPy's configured LM at compile time)
    proposer_lm: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)  # the optimizer's settings for this compile
    final_code: dict[str, str] = Field(default_factory=dict)  # name -> code of every final function
    held_out_scores: HeldOutScores | None = None  # written afterwards (`toolforge.report.record_held_out`)


class FailedCandidate(BaseModel):
    """An entry of the failure list: a candidate that scored lower than the best toolset, and the actions that
    built it. The proposer sees the list until a candidate is accepted; a step that would rebuild one is sent back."""

    step: int
    score: float | None  # None: refused on the examples its removals touched, before the others were run
    best_score: float  # what the best toolset scored then
    actions: list[dict[str, Any]]  # the proposals (`ProposedAction` dumps) that built the candidate
    fingerprint: str | None  # the candidate's; None only in an entry migrated from an early version-1 checkpoint


class AcceptedToolset(BaseModel):
    """An accepted toolset (step 0: the initial one) with its training score; the final one is chosen among them."""

    step: int
    score: float
    toolset: dict[str, Any]  # `Toolset.to_dict()`


class Checkpoint(BaseModel):
    """What `log_dir/checkpoint.json` holds after each step: everything a compile needs to resume after it.

    Written as this model's JSON (field order is the file's); read through `_MIGRATIONS`, by `version`."""

    format: Literal["toolforge.checkpoint"]
    version: int
    signature: str  # the compile's: program, data, metric, LM, settings (see `_RunState._signature`)
    settings: dict[str, Any] | None = None  # what the signature is made of, readably (None: an earlier toolforge's)
    mark: int  # checkpoints written by every run of the compile, which tags the ledger's lines
    interrupted_lm_calls: int
    step: int
    best: dict[str, Any]  # `Toolset.to_dict()`
    best_score: float
    initial_score: float
    stale: int  # steps since the last improvement
    failure_list: list[FailedCandidate]
    accepted: list[AcceptedToolset]
    steps: list[StepReport]
    agent_lm_calls: int
    proposer_lm_calls: int
    stop_reason: Literal["max_epochs", "early_stop", "solved", "budget"] | None
    initial_errors: int
    initial_error: str | None
    trajectory_budget: int
    tokens: dict[str, list[int]] = Field(default_factory=dict)  # role -> [prompt, completion], every run's
    # function fingerprint -> ids of the training examples whose run called it successfully when a toolset with it
    # was accepted (see `_RunState._prune`); empty in a checkpoint of an earlier toolforge
    callers: dict[str, list[str]] = Field(default_factory=dict)


def _complete_v1(data: dict[str, Any], *, trajectory_budget: int) -> dict[str, Any]:
    """A version-1 checkpoint in the current layout. Version 1 gained fields without a version bump (the ledger's
    `mark` and `interrupted_lm_calls`, `initial_errors` and `initial_error`, `trajectory_budget`, a failure's
    `fingerprint`); one written before has none of them, and gets the values its run had: no ledger yet, no
    errors counted, the configured trajectory budget, and no fingerprint (so no step is sent back as repeating it)."""
    early = {"mark": 0, "interrupted_lm_calls": 0, "initial_errors": 0, "initial_error": None}
    completed = early | {"trajectory_budget": trajectory_budget} | data
    failures = data.get("failure_list")
    if isinstance(failures, list):
        completed["failure_list"] = [{"fingerprint": None} | f if isinstance(f, dict) else f for f in failures]
    return completed


# The checkpoint versions this toolforge reads, each with the step that brings it to the current layout; any other
# version is refused, with the fix.
_MIGRATIONS = {1: _complete_v1}


# The settings a compile's signature holds (besides its program, data and proposer): one that differs makes another
# compile, which a checkpoint does not resume. In this order: the signature hashes their values as a list.
_SIGNED_SETTINGS: Final = (
    "max_actions_per_step",
    "max_trials",
    "patience",
    "accept_ties",
    "prune_unused",
    "prune_seeds",
    "min_net_flips",
    "significance",
    "rollback",
    "progressive",
    "seed",
    "trajectory_budget_chars",
)


class _Labels(NamedTuple):
    """Example id -> how reasons and reports name it (`trainset[3]`, `valset[0]`), for each side's flips."""

    train: dict[str, str]
    val: dict[str, str]


class _Gathered(NamedTuple):
    """What a step's proposals came to, before the candidate is evaluated."""

    outcomes: list[ActionOutcome]
    kept: list[int]  # indices into outcomes of the accepted actions
    candidate: Toolset  # the toolset they build
    note: str | None
    last_call_failed: bool  # the last proposer call raised


class _Look(NamedTuple):
    """A candidate run on the training examples that could get better (see `_FunctionOptimization._first_look`)."""

    evidence: dict[int, ActionEvidence]  # by index into the actions judged
    reasons: dict[int, str]  # the actions refused for good on those examples, and why
    weighed: StepEvidence  # the candidate's evidence there, judged whole


class _BudgetExhausted(Exception):
    pass


_Kind = Literal["better", "neutral", "harmful"]
# A change that helps on the training examples it touched is refused when the validation examples it touched lean
# against it at least this much (one-sided sign test: two losses and no win reach it; one loss does not, since a
# noisy agent loses one example now and then whatever the change).
_VAL_AGAINST = 0.25


class _Decision(NamedTuple):
    accept: bool
    improved: bool  # better by the evidence: resets patience
    reason: str


def _action_of(outcome: ActionOutcome) -> Action:
    return ProposedAction.model_validate(outcome.proposal).to_action()


def _apply_subset(base: Toolset, together: Toolset, actions: list[Action]) -> Toolset | None:
    """`base` (the toolset the step's actions applied to) with only `actions` applied, each function as the checks
    left it in `together` (a function found not deterministic by its smoke calls stays marked so); None when they
    need an action left out (a revision of a function another action of the step added)."""
    if any(not isinstance(a, AddFunction) and a.name not in base for a in actions):
        return None
    removed = {a.name for a in actions if isinstance(a, RemoveFunction)}
    revised = {a.name for a in actions if not isinstance(a, RemoveFunction | AddFunction)}
    functions = [together[f.name] if f.name in revised else f for f in base.functions if f.name not in removed]
    functions += [together[a.name] for a in actions if isinstance(a, AddFunction)]
    return Toolset(functions, max_functions=base.max_functions)


def _changed(best: Toolset, candidate: Toolset, only: set[str] | None = None) -> set[str]:
    """The functions that differ from `best` to `candidate` (added, revised or removed), among `only` if given.
    Taken from the toolsets, not the actions: without progressive update a step's actions apply to the initial
    toolset, and what the candidate drops of the best one is a change too."""
    names = {
        name
        for name in {*best.names, *candidate.names}
        if name not in best or name not in candidate or best[name].fingerprint != candidate[name].fingerprint
    }
    return names if only is None else names & only


def _sides(best: Toolset, candidate: Toolset, names: set[str]) -> tuple[set[str], set[str]]:
    """Of the changed functions `names`, those the candidate has (added or revised), and those it takes away."""
    return {name for name in names if name in candidate}, {name for name in names if name not in candidate}


def _literals(toolset: Toolset) -> int:
    return sum(literal_count(f.code) for f in toolset.functions)


def _acceptance(evidence: StepEvidence, grows: bool) -> str:
    val = f"; validation: {_shown(evidence.val_touched)}" if evidence.val_touched is not None else ""
    if evidence.verdict == "better":
        kind = "better"
    elif grows:  # a tie keeps a new function only when it answered what the agent had only guessed
        carried = (evidence.touched + (evidence.val_touched or Flips())).carried
        kind = f"a tie, kept: the new function answered {carried} example(s) the agent had answered with no function"
    else:
        kind = "a tie that does not grow the toolset"
    return f"{kind}: on the examples it touched, training: {_shown(evidence.touched)}{val}"


def _shown(evidence: Flips) -> str:
    """The flips as a reason gives them: counts, then the examples that flipped."""
    which = evidence.which()
    return f"{evidence.describe()}; {which}" if which else evidence.describe()


_OVER_LIMIT = "over the limit"  # an action past `max_actions_per_step`: not checked
_MIN_FOR_HOLDOUT = 20  # training examples: below this, a held-out share is too small to tell anything


def _hold_out(trainset: list[dspy.Example], share: float, seed: int) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """Split off `share` of the training set (at least one example), chosen by `seed`, keeping the order of both."""
    size = max(1, round(len(trainset) * share))
    picked = set(random.Random(seed).sample(range(len(trainset)), size))
    return (
        [e for i, e in enumerate(trainset) if i not in picked],
        [e for i, e in enumerate(trainset) if i in picked],
    )


class _Pruning(NamedTuple):
    toolset: Toolset  # the final toolset
    pruned: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated
    unused_kept: list[str] = []  # noqa: RUF012
    score: float | None = None  # training score without the unused functions, where that was tried
    val_score: float | None = None  # and validation score


# LM errors of set-up, not of the moment (no key, a model the provider does not have, an unpaid account): every
# later request would fail alike.
_LM_SETUP_ERRORS = (LMConfigurationError, LMAuthError, LMBillingError, LMUnsupportedModelError)
_CUT = "; the reply was cut at the proposer LM's token limit (max_tokens): propose fewer or shorter actions"
_MIN_TRAJECTORY_BUDGET = 500  # characters: below this, no trajectory is shown whole enough to learn from

# How far a compile searches, by name, as GEPA's `auto`: GEPA's presets propose about 6, 12 and 18 candidates, and
# a step here evaluates one, so they bound the steps alike; with them, how long to wait for a better candidate, how
# much a step may change and how often its rejected actions go back to the proposer. A preset bounds the search, not
# its price (an example's LM calls are the program's own): `max_lm_calls` caps that. Without a preset, _DEFAULTS.
AUTO_PRESETS: Final[dict[str, dict[str, int]]] = {
    "light": {"max_epochs": 6, "patience": 3, "max_actions_per_step": 2, "max_trials": 2},
    "medium": {"max_epochs": 12, "patience": 5, "max_actions_per_step": 3, "max_trials": 3},
    "heavy": {"max_epochs": 18, "patience": 8, "max_actions_per_step": 3, "max_trials": 4},
}
_DEFAULTS: Final = {"max_epochs": 10, "patience": 5, "max_actions_per_step": 3, "max_trials": 3}


def _budget(auto: str | None, given: dict[str, int | None]) -> dict[str, int]:
    """The budget options: those given explicitly, the rest from the preset `auto`, or the defaults without one."""
    if auto is not None and (not isinstance(auto, str) or auto not in AUTO_PRESETS):
        raise ToolforgeError(
            f"FunctionOptimizer(auto={auto!r}): no such preset; give one of {', '.join(map(repr, AUTO_PRESETS))}, "
            "or None and set max_epochs, patience, max_actions_per_step and max_trials yourself"
        )
    return (AUTO_PRESETS[auto] if auto else _DEFAULTS) | {
        name: value for name, value in given.items() if value is not None
    }


class FunctionOptimizer(Teleprompter):
    """Train the functions (a `Toolset`) of a DSPy program: the AgentOptimizer method.

    Args:
        metric: `metric(example, prediction, trace=None)` (DSPy's) or `metric(gold, pred, trace, pred_name,
            pred_trace)` (GEPA's, called with None for the last three), returning a bool, a number in
            `metric_range`, or a `dspy.Prediction(score=..., feedback=...)`: the proposer reads the feedback.
        proposer_lm: The LM that proposes actions: a `dspy.BaseLM`, any `dspy.LM` model string, or "local" (the
            embedded model). None uses the configured LM, or the embedded model when none is configured.
        auto: A budget preset, as GEPA's: "light" (6 steps, patience 3, 2 actions and 2 proposer calls a step),
            "medium" (12, 5, 3, 3) or "heavy" (18, 8, 3, 4). Any of `max_epochs`, `patience`,
            `max_actions_per_step` and `max_trials` given explicitly wins over the preset. `max_lm_calls` caps cost.
        max_epochs: Steps to run at most (one evaluation of a candidate each). Default 10 (or the preset's).
        max_actions_per_step: Actions the proposer may take in one step. Default 3 (or the preset's).
        max_trials: Proposer calls per step at most: while a reply leaves no action to evaluate (all rejected,
            or none proposed while training examples fail), the rejected ones go back with their reason and the
            proposer is asked again; a reply with an action to evaluate ends the asking, and the reasons of its
            rejected actions reach the proposer at the next step. Default 3 (or the preset's).
        patience: Stop after this many consecutive steps without a better candidate (see above). Default 5 (or the
            preset's).
        accept_ties: Accept a candidate that the evidence finds neither better nor harmful, when it does not add a
            function (a candidate with fewer functions, or with fewer literals, is accepted as a tie regardless).
        max_functions: The most functions the toolset may hold (default: the toolset's own limit).
        prune_unused: At the end, drop functions that no training trajectory called successfully (not the seed
            functions, the ones the student came with, unless `prune_seeds`; nor a function whose examples, which
            called it when it was accepted, are now answered with no function at all: a skipped call).
        prune_seeds: Let pruning drop unused seed functions too.
        min_net_flips: The evidence a better candidate needs: touched examples that got better minus those that
            got worse, training and validation together. 1 (the default) suits the tens of examples this method
            trains on; raise it for large or very noisy training sets.
        significance: Also require the exact one-sided sign test on those flips to reach this level (e.g. 0.05) for
            a candidate to count as better; None (the default) uses `min_net_flips` alone.
        holdout: Without a valset, the share of the training set held out for acceptance (the proposer never sees
            it; every candidate that holds on training is checked on it), when the training set has at least
            20 examples; 0 holds out nothing. Like DSPy's optimizers, a valset given replaces it.
        rollback: False accepts every checked candidate and never stops early: the paper's ablation "without
            roll-back and early-stop", an accept-everything loop as AG2's AgentOptimizer runs.
        progressive: False applies each step's actions to the student's initial toolset instead of the best so far
            (the paper's ablation without progressive function update): each step builds a toolset afresh.
        stop_when_solved: Stop once the best toolset answers every training and validation example (then no
            candidate can be better, only tie). Off by default: the ties accepted after that point replace
            special-cased code with general code, which the training set cannot tell apart (see the design notes).
        max_lm_calls: Budget of LM requests (agent and proposer; DSPy's cache hits are free); checked between
            phases, so an evaluation that has started finishes. Stops cleanly, keeping the best so far.
        num_threads: Examples evaluated at once.
        cache: Evaluation cache (or a directory path for one); None uses `EvaluationCache()`
            (`$TOOLFORGE_CACHE_DIR` or `.toolforge/cache`), False uses none.
        log_dir: Where to write `report.json`, `toolset-<step>.json` for every accepted toolset, and a checkpoint
            after every step; a compile with the same `log_dir` resumes after the last finished step. One compile
            at a time holds it (a second one is refused while the first runs).
        resume: With `log_dir`, continue the compile whose checkpoint is there (the default). False starts afresh,
            first deleting what an earlier compile wrote there (checkpoint, report, toolsets); cached evaluations
            and DSPy's LM cache still make the work done before free.
        seed: Seeds which trajectories the proposer sees.
        display_progress: Show a tqdm bar over steps, and a nested one over each evaluation (examples done, running
            score).
        verbose: Log each proposal and each decision as it happens (at INFO, through this module's logger; shown on
            stderr for the compile when logging is not configured).
        use_mlflow: Log the compile to MLflow, as GEPA's `use_mlflow` does (needs the `mlflow` extra): per-step
            scores and LM calls, each accepted toolset and the report (see `toolforge.tracking`). Logs into the active
            run if there is one (e.g. `mlflow.dspy.autolog(log_compiles=True)`'s, which is logged to without this
            too), else into a new run it ends.
        mlflow_tracking_uri: With `use_mlflow`, the tracking URI to set first (None: MLflow's own setting).
        mlflow_experiment_name: With `use_mlflow`, the experiment to set first (None: MLflow's own setting).
        sandbox: Where smoke calls run (default: the process-wide sandbox).
        failure_score: Score of an example whose program raised.
        metric_version: Identifies the metric in cache keys instead of its source.
        metric_range: The scale of the metric's numbers, `(low, high)` (default `(0, 1)`): a score `s` counts as
            `(s - low) / (high - low)`, a bool as 1 or 0. A number outside it stops the compile, naming the example.
        trajectory_budget_chars: Size budget of the trajectories shown to the proposer; halved (down to 500) for the
            rest of the compile whenever the proposer's prompt exceeds its LM's context window.
        proposer: The module that proposes actions (default: `Proposer()`); it is called with the inputs of
            `ProposeActions` and must return a prediction with `actions`.

    Examples:
        >>> optimizer = FunctionOptimizer(metric, max_epochs=5, log_dir="runs/math")      # doctest: +SKIP
        >>> trained = optimizer.compile(ToolAgent("question -> answer: float"), trainset=train)
        >>> trained.toolset, trained.toolforge_report.best_score
    """

    def __init__(
        self,
        metric: Any,
        *,
        proposer_lm: dspy.BaseLM | str | None = None,
        auto: Literal["light", "medium", "heavy"] | None = None,
        max_epochs: int | None = None,
        max_actions_per_step: int | None = None,
        max_trials: int | None = None,
        patience: int | None = None,
        accept_ties: bool = True,
        max_functions: int | None = None,
        prune_unused: bool = True,
        prune_seeds: bool = False,
        min_net_flips: int = 1,
        significance: float | None = None,
        holdout: float = 0.2,
        rollback: bool = True,
        progressive: bool = True,
        stop_when_solved: bool = False,
        max_lm_calls: int | None = None,
        num_threads: int = 8,
        cache: EvaluationCache | str | os.PathLike[str] | Literal[False] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        seed: int = 0,
        display_progress: bool = True,
        verbose: bool = False,
        use_mlflow: bool = False,
        mlflow_tracking_uri: str | None = None,
        mlflow_experiment_name: str | None = None,
        sandbox: Sandbox | None = None,
        failure_score: float = 0.0,
        metric_version: str | None = None,
        trajectory_budget_chars: int = 12_000,
        proposer: dspy.Module | None = None,
        metric_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        budget = _budget(
            auto,
            {
                "max_epochs": max_epochs,
                "patience": patience,
                "max_actions_per_step": max_actions_per_step,
                "max_trials": max_trials,
            },
        )
        for name, value, low in (
            ("max_epochs", budget["max_epochs"], 0),
            ("max_actions_per_step", budget["max_actions_per_step"], 1),
            ("max_trials", budget["max_trials"], 1),
            ("patience", budget["patience"], 1),
            ("num_threads", num_threads, 1),
            ("min_net_flips", min_net_flips, 1),
            ("trajectory_budget_chars", trajectory_budget_chars, _MIN_TRAJECTORY_BUDGET),
        ):
            check_int("FunctionOptimizer", name, value, low)
        for name, limit in (("max_functions", max_functions), ("max_lm_calls", max_lm_calls)):
            check_int(
                "FunctionOptimizer", name, limit, 0, allow_bool=True, optional=True,
                message="{owner}({name}={value!r}): {name} must be a non-negative integer",
            )  # fmt: skip
        for name, share, low_open in (("significance", significance, True), ("holdout", holdout, False)):
            if share is None and name == "significance":
                continue
            if (
                isinstance(share, bool)
                or not isinstance(share, int | float)
                or not ((0 < share if low_open else 0 <= share) and share < 1)
            ):
                raise ToolforgeError(
                    f"FunctionOptimizer({name}={share!r}): {name} must be a number in "
                    f"{'(0, 1)' if low_open else '[0, 1)'}" + (", or None" if name == "significance" else "")
                )
        self.metric = metric
        self.proposer_lm = resolve_lm(proposer_lm, role="proposer_lm") if isinstance(proposer_lm, str) else proposer_lm
        self.auto = auto
        self.max_epochs: int = budget["max_epochs"]
        self.max_actions_per_step: int = budget["max_actions_per_step"]
        self.max_trials: int = budget["max_trials"]
        self.patience: int = budget["patience"]
        self.accept_ties = accept_ties
        self.max_functions = max_functions
        self.prune_unused = prune_unused
        self.prune_seeds = prune_seeds
        self.min_net_flips = min_net_flips
        self.significance = significance
        self.holdout = holdout
        self.rollback = rollback
        self.progressive = progressive
        self.stop_when_solved = stop_when_solved
        self.max_lm_calls = max_lm_calls
        self.num_threads = num_threads
        if cache is False:
            self.cache: EvaluationCache | None = None
        elif cache is None:
            self.cache = EvaluationCache()
        else:
            self.cache = as_cache(cache, "FunctionOptimizer")
        if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
            raise ToolforgeError(
                f"FunctionOptimizer(log_dir={log_dir!r}): give a directory path (str or Path), or None"
            )
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.resume = resume
        self.seed = seed
        self.display_progress = display_progress
        self.verbose = verbose
        if use_mlflow:
            require_mlflow("FunctionOptimizer(use_mlflow=True)")
        self.use_mlflow = use_mlflow
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.mlflow_experiment_name = mlflow_experiment_name
        self.sandbox = sandbox
        self.trajectory_budget_chars = trajectory_budget_chars
        self.evaluator = Evaluator(
            metric,
            cache=self.cache,
            num_threads=num_threads,
            failure_score=failure_score,
            metric_version=metric_version,
            metric_range=metric_range,
            warn_errors=False,  # the compile says it itself, with the step (and stops if the baseline all raised)
        )
        self.proposer = proposer if proposer is not None else Proposer()

    # ------------------------------------------------------------------------------------------- compile
    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: list[dspy.Example],
        teacher: dspy.Module | Toolset | None = None,
        valset: list[dspy.Example] | None = None,
        toolset: str | None = None,
        **kwargs: Any,
    ) -> dspy.Module:
        """Train the student's toolset; return a copy of the student holding the best one.

        Args:
            student: A DSPy program holding a `Toolset` (e.g. a `ToolAgent`). It is never changed.
            trainset: Examples with inputs marked; every step evaluates on them.
            teacher: What the student starts from, as DSPy's teleprompters take a teacher: a program holding a
                `Toolset` (a trained one, say), or a `Toolset`. Its functions the student lacks are added to the
                student's before training, as seed functions (kept unless the evidence says they hurt); where both
                have a function of one name, the student's is kept (a warning names them). A teacher holding no
                toolset has nothing to give here (this optimizer learns functions, not demos): it is ignored, with
                a warning.
            valset: Optional examples every candidate that holds on the training set must hold on too (see
                `holdout` for what happens without one). The proposer never sees them.
            toolset: The name (as in `named_parameters()`) of the toolset to train, when the student holds several.
            **kwargs: Accepted by the signature of `dspy.teleprompt.Teleprompter.compile`; any given is refused
                with a `TypeError` that names it (the optimizer's settings are `FunctionOptimizer(...)`'s).

        Returns:
            A copy of `student` with the trained toolset, and the report as `.toolforge_report`.

        Raises:
            TypeError: For a keyword argument `compile` does not take.
            ToolforgeError: For settings that cannot work (no toolset, an empty trainset, ...), and when the student
                raises on every training example with its initial toolset (an LM that cannot be reached, say):
                nothing could be learned; and when the proposer LM is not set up (no API key, a model its provider
                does not have), which no retry mends. Examples that raise among others that run are recorded and
                score `failure_score`; after the start, no program error, bad proposal, failing function or passing
                LM failure ends a compile.
        """
        if adopt_autolog(FunctionOptimizer):  # MLflow's autolog, called before toolforge was imported, missed us
            return FunctionOptimizer.compile(
                self, student, trainset=trainset, teacher=teacher, valset=valset, toolset=toolset, **kwargs
            )
        start = time.perf_counter()
        if kwargs:
            raise TypeError(
                f"FunctionOptimizer.compile() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}; it "
                "takes student, trainset, teacher, valset and toolset (the optimizer's settings go to "
                "FunctionOptimizer(...))"
            )
        for name, given in (("trainset", trainset), ("valset", valset)):
            if (given is None and name == "trainset") or isinstance(given, str | dict | dspy.Example | int | float):
                raise ToolforgeError(f"{name} must be a list of dspy.Example, got {type(given).__name__}")
        trainset = list(trainset)
        valset = list(valset) if valset is not None else None
        if not trainset:
            raise ToolforgeError("trainset is empty; pass the examples to train on")
        check_examples(trainset, "trainset item")
        check_examples(valset or [], "valset item")
        labels = _labels(trainset, valset)
        held_out = 0
        if valset is None and self.holdout and len(trainset) >= _MIN_FOR_HOLDOUT:
            trainset, valset = _hold_out(trainset, self.holdout, self.seed)
            held_out = len(valset)
        param_name, initial = find_toolset(student, toolset)
        check_toolset_reaches_agent(student, param_name)
        work = student.deepcopy()
        limit = self.max_functions if self.max_functions is not None else initial.max_functions
        initial = Toolset(_with_teacher(initial, teacher, param_name).functions, max_functions=limit)
        set_attribute_by_name(work, param_name, initial)
        proposer_lm = self.proposer_lm
        if proposer_lm is None and dspy.settings.lm is None:
            proposer_lm = resolve_lm("local", role="proposer_lm")
        run = _RunState(self, work, param_name, trainset, valset, proposer_lm)
        run.held_out = held_out
        run.labels = labels
        with _exclusive(self.log_dir), _verbose_logging(self.verbose):
            if self.log_dir is not None and not self.resume:
                _discard_run(self.log_dir)
            run.tracker = MlflowTracker.for_compile(
                use_mlflow=self.use_mlflow,
                tracking_uri=self.mlflow_tracking_uri,
                experiment_name=self.mlflow_experiment_name,
            )
            failed = True
            try:
                if run.tracker is not None:
                    run.tracker.params(self.get_params())
                run.restore_or_start(initial)
                try:
                    run.train()
                except _BudgetExhausted:
                    run.stop_reason = "budget"
                    run.checkpoint()
                final, report = run.finish(start)
                if run.tracker is not None:
                    run.tracker.finish(report, final, self.log_dir)
                failed = False
            finally:
                run.close()
                if run.tracker is not None:
                    run.tracker.close(failed)
        trained = student.deepcopy()
        set_attribute_by_name(trained, param_name, final)
        trained.toolforge_report = report
        # Not marked `_compiled`, as GEPA's and MIPROv2's results are not: DSPy freezes a compiled module's
        # parameters inside a parent program and BootstrapFewShot (which MIPROv2 runs) refuses it as a student,
        # so a prompt optimizer could not go on from here.
        return trained


def _labels(trainset: list[dspy.Example], valset: list[dspy.Example] | None) -> _Labels:
    """How a report names each example, by its id: its place in the trainset or valset the user gave (a held-out
    example keeps its trainset place). One map per side, so that an example given in both is named by the side it
    flipped on."""

    def places(name: str, examples: list[dspy.Example]) -> dict[str, str]:
        found: dict[str, str] = {}
        for index, example in enumerate(examples):
            found.setdefault(example_id(example), f"{name}[{index}]")
        return found

    train = places("trainset", trainset)
    return _Labels(train, places("valset", valset) if valset is not None else train)


def _with_teacher(initial: Toolset, teacher: dspy.Module | Toolset | None, param_name: str) -> Toolset:
    """The student's toolset with the functions of the teacher's it lacks (see `FunctionOptimizer.compile`)."""
    if teacher is None:
        return initial
    if isinstance(teacher, Toolset):
        given = teacher
    elif isinstance(teacher, dspy.Module):
        found = dict((n, p) for n, p in teacher.named_parameters() if isinstance(p, Toolset))
        if not found:
            logger.warning(
                "compile(teacher=%s): the teacher holds no Toolset, so it is ignored; FunctionOptimizer learns "
                "functions, not demos: a teacher's toolset (or a Toolset given as teacher) seeds the student's",
                type(teacher).__name__,
            )
            return initial
        if param_name not in found and len(found) > 1:
            raise ToolforgeError(
                f"compile(teacher=...): the teacher holds several toolsets ({', '.join(found)}) and none is named "
                f"{param_name!r} as the student's is; pass the one to start from: teacher=<program>.<toolset>"
            )
        given = found.get(param_name) or next(iter(found.values()))
    else:
        raise ToolforgeError(
            f"compile(teacher=...) takes a dspy.Module holding a Toolset, or a Toolset; got {type(teacher).__name__}"
        )
    differ = [f.name for f in given if f.name in initial and initial[f.name].fingerprint != f.fingerprint]
    if differ:
        logger.warning(
            "compile(teacher=...): the student and the teacher define %s differently; the student's are kept",
            ", ".join(differ),
        )
    return initial.merge(given, on_conflict="ours")


class _RunState:
    """The state of one compile: what a checkpoint holds, and the steps that move it. The optimizer holds only
    its settings, which a run reads and never writes: one optimizer can compile again, or in two threads at once."""

    def __init__(
        self,
        optimizer: FunctionOptimizer,
        program: dspy.Module,
        param_name: str,
        trainset: list[dspy.Example],
        valset: list[dspy.Example] | None,
        proposer_lm: dspy.BaseLM | None,
    ) -> None:
        self.opt = optimizer
        self.program = program
        self.proposer_lm = proposer_lm  # None: the configured LM
        self.fixed = fixed_tool_names(program)  # names a function must not take
        self.fixed_text = describe_fixed_tools(program)  # and what those tools do, for the proposer
        self.param_name = param_name
        self.trainset = list(trainset)
        self.valset = list(valset) if valset else None
        self.best: Toolset = Toolset()
        self.best_score = 0.0
        self.initial_score = 0.0
        self.step = 0
        self.stale = 0
        self._history_mark: dict[str, Any] | None = None  # the proposer LM's newest history entry before a proposal
        self.failure_list: list[FailedCandidate] = []
        self.accepted: list[AcceptedToolset] = []
        self._toolsets: dict[int, Toolset] = {}  # accepted toolsets by step, as objects (the checkpoint has dicts)
        self.steps: list[StepReport] = []
        self.agent_lm_calls = 0
        self.proposer_lm_calls = 0
        self.tokens = {"agent": [0, 0], "proposer": [0, 0]}  # role -> [prompt, completion]
        self.stop_reason: Literal["max_epochs", "early_stop", "solved", "budget"] | None = None
        self.initial_errors = 0
        self.initial_error: str | None = None
        self.resumed_after: int | None = None
        self.trajectory_budget = optimizer.trajectory_budget_chars  # halved when the proposer's window overflows
        self.log_dir = optimizer.log_dir
        self.mark = 0  # checkpoints written (by every run of this compile)
        self.interrupted_lm_calls = 0
        self._ledger: _Ledger | None = None
        self._carried: _StepCounts | None = None  # LM calls an interrupted run of the next step made
        self.initial_toolset = Toolset()  # the student's: the seed functions
        self.seeds: set[str] = set()
        self.callers: dict[str, set[str]] = {}  # see `Checkpoint.callers`
        self.held_out = 0  # training examples moved to the valset (no valset was given)
        self.labels = _Labels({}, {})
        self.tracker: MlflowTracker | None = None
        self._say = logger.info if optimizer.verbose else logger.debug  # proposals and decisions, as they happen

    # ---------------------------------------------------------------------------------------- lifecycle
    def restore_or_start(self, initial: Toolset) -> None:
        self.initial_toolset, self.seeds = initial, set(initial.names)
        self.signature, self.settings = self._signature(initial)
        checkpoint = self._load_checkpoint()
        self._open_ledger(checkpoint)
        if checkpoint is not None:
            finished = checkpoint.stop_reason is not None  # as it was written: a run that reached its end
            self.best = Toolset.from_dict(checkpoint.best, source="checkpoint")
            self.best_score = checkpoint.best_score
            self.initial_score = checkpoint.initial_score
            self.step = checkpoint.step
            self.stale = checkpoint.stale
            self.failure_list = checkpoint.failure_list
            self.accepted = checkpoint.accepted
            self.steps = checkpoint.steps
            self.agent_lm_calls = checkpoint.agent_lm_calls
            self.proposer_lm_calls = checkpoint.proposer_lm_calls
            self.tokens = _tokens_of(checkpoint)
            self.stop_reason = checkpoint.stop_reason
            if self.stop_reason == "max_epochs" and self.step < self.opt.max_epochs:
                self.stop_reason = None  # asked for more epochs this time: continue
            if self.stop_reason == "solved" and not self.opt.stop_when_solved:
                self.stop_reason = None  # asked to go on past a solved training set this time
            self.initial_errors = checkpoint.initial_errors
            self.initial_error = checkpoint.initial_error
            self.trajectory_budget = checkpoint.trajectory_budget
            self.callers = {fingerprint: set(ids) for fingerprint, ids in checkpoint.callers.items()}
            self.interrupted_lm_calls += checkpoint.interrupted_lm_calls
            self._carry(step_runs_next=not finished)
            self.resumed_after = self.step
            logger.info("resuming the compile in %s after step %d", self.log_dir, self.step)
            return
        self._carry(step_runs_next=False)  # the calls of an interrupted baseline
        self.best = initial
        baseline = self._evaluate(initial, self.trainset)
        self.initial_score = self.best_score = baseline.score
        self._note_callers(initial, baseline)
        self.initial_errors = len(baseline.errors)
        if baseline.records and self.initial_errors == len(baseline.records):
            raise ToolforgeError(
                f"every one of the {self.initial_errors} training examples raised with the initial toolset, e.g.: "
                f"{one_line(baseline.errors[0].error, 400)}; nothing can be learned from that: make the program, its "
                "LM and the metric work on one example, then compile again"
            )
        if baseline.errors:
            self.initial_error = baseline.errors[0].error
            logger.warning(
                "%d of %d training examples raised with the initial toolset, e.g.: %s",
                self.initial_errors,
                len(baseline.records),
                self.initial_error,
            )
        self.accepted = [AcceptedToolset(step=0, score=baseline.score, toolset=initial.to_dict())]
        self._toolsets[0] = initial
        self._save_toolset(0, initial)
        self.checkpoint()

    def train(self) -> None:
        opt = self.opt
        with tqdm.tqdm(
            total=opt.max_epochs,
            initial=min(self.step, opt.max_epochs),
            desc="toolforge compile",
            disable=not opt.display_progress,
        ) as bar:
            bar.set_postfix(best=f"{self.best_score:.3f}")
            self._track_history()
            while self.stop_reason is None:
                if self.step >= opt.max_epochs:
                    self.stop_reason = "max_epochs"
                elif opt.rollback and self.stale >= opt.patience:
                    self.stop_reason = "early_stop"
                elif opt.rollback and opt.stop_when_solved and self._solved():
                    self.stop_reason = "solved"
                else:
                    self._budget_check()
                    report = self._one_step(self.step + 1)
                    self.steps.append(report)
                    self.step += 1
                    self._tell(report)
                    bar.update(1)
                    bar.set_postfix(best=f"{self.best_score:.3f}", last=report.outcome)
                self.checkpoint()

    def finish(self, start: float) -> tuple[Toolset, OptimizationReport]:
        candidates = [
            (
                entry.step,
                self._toolsets.get(entry.step) or Toolset.from_dict(entry.toolset, source="checkpoint"),
                entry.score,
            )
            for entry in self.accepted
        ]
        # Every accepted toolset held on the validation examples when it was accepted, so the last one is the
        # result; choosing again among them by validation score alone would let the re-draws of a small valset undo
        # what the evidence of each step established. Their scores (cached) go into the report.
        val_scores: dict[int, float] = {}
        if self.valset and self.opt.rollback:
            for step, toolset, _ in candidates:
                val_scores[step] = self._evaluate(toolset, self.valset).score
        selected = next(step for step, toolset, _ in reversed(candidates) if toolset == self.best)
        chosen = self.best
        pruning = self._checked_prune(chosen) if self.opt.prune_unused else _Pruning(chosen)
        final = pruning.toolset
        report = OptimizationReport(
            initial_score=self.initial_score,
            best_score=self.best_score,
            stop_reason=self.stop_reason or "max_epochs",
            initial_errors=self.initial_errors,
            initial_error=self.initial_error,
            held_out=self.held_out,
            seed_functions=self.initial_toolset.names,
            steps=self.steps,
            accepted_steps=[c[0] for c in candidates],
            val_scores=val_scores,
            selected_step=selected,
            pruned=pruning.pruned,
            pruned_score=pruning.score,
            pruned_val_score=pruning.val_score,
            unused_kept=pruning.unused_kept,
            final_functions=final.names,
            final_fingerprint=final.fingerprint,
            agent_lm_calls=self.agent_lm_calls,
            proposer_lm_calls=self.proposer_lm_calls,
            interrupted_lm_calls=self.interrupted_lm_calls,
            resumed_after_step=self.resumed_after,
            wall_time_s=time.perf_counter() - start,
            agent_prompt_tokens=self.tokens["agent"][0],
            agent_completion_tokens=self.tokens["agent"][1],
            proposer_prompt_tokens=self.tokens["proposer"][0],
            proposer_completion_tokens=self.tokens["proposer"][1],
            agent_lm=_model_name(dspy.settings.lm),
            proposer_lm=_model_name(self.proposer_lm or dspy.settings.lm),
            settings=self._settings(),
            final_code={f.name: f.code for f in final.functions},
        )
        if self.log_dir is not None:
            final.save(self.log_dir / "toolset-final.json")
            write_json(self.log_dir / "report.json", report.model_dump(mode="json"))
        logger.info(
            "compile finished (%s): train score %.3f -> %.3f, functions %s",
            report.stop_reason,
            report.initial_score,
            report.best_score,
            report.final_functions,
        )
        return final, report

    # -------------------------------------------------------------------------------------------- a step
    def _one_step(self, step: int) -> StepReport:
        start = time.perf_counter()
        counts, self._carried = self._carried or _StepCounts(), None
        best_run = self._evaluate(self.best, self.trainset, counts)
        if best_run.score != self.best_score:
            # Examples that raised before (records of errors are not kept) ran again; a candidate is compared with
            # what the best toolset scores now, or a passing fault would count as the candidate's improvement.
            logger.info(
                "step %d: the best toolset now scores %.3f (was %.3f): examples that raised before ran again",
                step,
                best_run.score,
                self.best_score,
            )
            self.best_score = best_run.score
        gathered = self._gather_actions(step, best_run, counts)
        return self._judge(step, best_run, gathered, counts, start)

    def _gather_actions(self, step: int, best_run: EvaluationRun, counts: _StepCounts) -> _Gathered:
        """Ask the proposer for actions and check each, sending rejected ones back with their reason, up to
        `max_trials` calls: the candidate the accepted actions build, and what became of every action."""
        opt = self.opt
        outcomes: list[ActionOutcome] = []
        kept: list[int] = []  # indices into outcomes
        candidate = self.best if opt.progressive else self.initial_toolset
        feedback = self._rejected_last_step()
        note = None
        last_call_failed = False

        def render() -> str:
            seed = opt.seed * 100_003 + step
            return render_trajectories(best_run.records, self.trainset, budget_chars=self.trajectory_budget, seed=seed)

        trajectories = render()
        notes = usage_notes(best_run.records, self.best.names)
        for trial in range(1, opt.max_trials + 1):
            need = opt.max_actions_per_step - len(kept)
            if need <= 0:
                break
            self._budget_check()
            try:
                last_call_failed = True
                proposals = self._propose(candidate, notes, trajectories, feedback, need, counts)
                last_call_failed = False
            except _LM_SETUP_ERRORS as exc:  # no retry or later step would fare better: stop, and say what to fix
                kept_work = [f"it resumes after step {step - 1}"] if self.log_dir else []
                kept_work += ["its evaluations come from the cache"] if opt.evaluator.cache is not None else []
                raise ToolforgeError(
                    f"the proposer LM cannot be used: {type(exc).__name__}: {one_line(exc, 400)}; fix its set-up and "
                    f"compile again{' (' + ', and '.join(kept_work) + ')' if kept_work else ''}"
                ) from exc
            except ContextWindowExceededError as exc:
                if self.trajectory_budget <= _MIN_TRAJECTORY_BUDGET:
                    note = f"the proposer failed: {type(exc).__name__}: {one_line(exc, 400)}"
                    logger.warning("step %d: %s", step, note)
                    break
                # the prompt outgrew the proposer LM's window: show fewer trajectories, from now on
                self.trajectory_budget = max(_MIN_TRAJECTORY_BUDGET, self.trajectory_budget // 2)
                note = (
                    "the proposer's prompt exceeded its LM's context window; the trajectories it sees are cut to "
                    f"{self.trajectory_budget} characters"
                )
                logger.warning("step %d: %s", step, note)
                trajectories = render()
                continue
            except Exception as exc:
                cut = _CUT if self._reply_cut() else ""
                note = f"the proposer failed: {type(exc).__name__}: {exc}{cut}"
                logger.warning("step %d: %s", step, note)
                feedback.append(
                    f"Your previous reply could not be used ({type(exc).__name__}: {exc}); reply again "
                    f"with valid actions.{cut}"
                )
                continue
            if not proposals:
                failing = sum(1 for record in best_run.records if record.score < 1)
                if kept or not failing:
                    break
                # an empty reply while examples fail leaves the step with nothing to judge: ask again, as for a
                # rejected action (it would otherwise spend a step, and a step of patience, on nothing)
                feedback.append(
                    f"- (trial {trial}) no action was proposed, while {failing} of {len(best_run.records)} training "
                    "examples still fail: propose at least one action that could make some of them succeed"
                )
                continue
            rejected_now = 0
            before_trial, kept_before = candidate, len(kept)
            cut_short = self._reply_cut()
            for index, proposal in enumerate(proposals):
                reason = None
                if index >= need:
                    reason = f"{_OVER_LIMIT} of {need} more action(s) in this step"
                else:
                    reason, candidate = self._check(proposal, candidate)
                    if reason and proposal.malformed and cut_short:
                        reason += _CUT
                outcome = ActionOutcome(
                    summary=proposal.summary(),
                    proposal=proposal.model_dump(mode="json"),
                    status="rejected" if reason else "accepted",
                    reason=reason,
                    trial=trial,
                )
                outcomes.append(outcome)
                self._say("step %d, trial %d: proposed %s: %s", step, trial, outcome.summary, reason or "checked")
                if reason:
                    rejected_now += 1
                    feedback.append(f"- {proposal.summary()} (trial {trial}): {reason}")
                else:
                    kept.append(len(outcomes) - 1)
            repeat = self._repeat(candidate) if len(kept) > kept_before else None
            if repeat is not None:  # nothing new to evaluate: send the actions back, as any rejected ones
                for i in kept[kept_before:]:
                    outcomes[i] = outcomes[i].model_copy(update={"status": "rejected", "reason": repeat})
                    feedback.append(f"- {outcomes[i].summary} (trial {trial}): {repeat}")
                rejected_now += len(kept) - kept_before
                del kept[kept_before:]
                candidate = before_trial
            if not rejected_now or kept:  # another call is asked for only when nothing is left to evaluate
                break
        else:
            last = opt.max_trials
            outcomes = [
                o.model_copy(update={"status": "dropped"}) if o.status == "rejected" and o.trial == last else o
                for o in outcomes
            ]

        return _Gathered(outcomes, kept, candidate, note, last_call_failed)

    def _judge(
        self, step: int, best_run: EvaluationRun, gathered: _Gathered, counts: _StepCounts, start: float
    ) -> StepReport:
        """Evaluate the candidate the step's actions built, weigh the evidence for each action and for the whole,
        and accept what earns its place (it becomes the best toolset) or roll it back (it joins the failure list)."""
        opt = self.opt
        outcomes, kept, candidate, note, last_call_failed = gathered
        base = dict(step=step, score_before=best_run.score, actions=outcomes, note=note)
        if not kept:
            self.stale += 1
            no_change = "proposal_failed" if last_call_failed and not outcomes else "no_change"
            if no_change == "proposal_failed":
                why = note or "the proposer failed"
            elif outcomes:
                why = f"none of the {len(outcomes)} proposed action(s) passed the checks (each says why)"
            else:
                why = note or "the proposer proposed no action"
            return self._step_report(
                base | {"outcome": no_change, "best_fingerprint": self.best.fingerprint, "reason": why}, counts, start
            )
        self._budget_check()
        actions = [_action_of(outcomes[i]) for i in kept]
        if opt.rollback and opt.progressive and all(isinstance(a, RemoveFunction) for a in actions):
            early = self._refused_removals(step, base, outcomes, kept, actions, candidate, best_run, counts, start)
            if early is not None:
                return early
        if not opt.rollback:  # the ablation: every checked candidate is accepted
            unweighed = self._evaluate(candidate, self.trainset, counts)
            decision = _Decision(True, unweighed.score > best_run.score, "accepted unweighed (rollback=False)")
            return self._settle(step, base, outcomes, kept, list(range(len(kept))), candidate, unweighed, decision,
                                None, counts, start)  # fmt: skip
        # Credit per action, as a narrowing: the candidate is run first on the examples that could get better (with
        # a cache, see `_first_look`), then on all; each time, the actions the evidence refuses on their own are
        # dropped and the toolset of the others is judged in turn. What is left is judged whole, with the
        # validation examples. Every candidate is smaller than the last, so a step runs at most one per action.
        origin = self.best if opt.progressive else self.initial_toolset
        whole, active = candidate, list(range(len(kept)))
        together: float | None = None  # the whole candidate's training score, once it is run on every example
        evidence: dict[int, ActionEvidence] = {}
        reasons: dict[int, str] = {}
        refused: dict[int, str]
        while True:
            self._budget_check()
            look = self._first_look(candidate, [actions[j] for j in active], best_run, counts)
            if look is not None:
                refused = {active[k]: why for k, why in look.reasons.items()}
                evidence |= {active[k]: e for k, e in look.evidence.items() if active[k] in refused}
                if len(refused) == len(active):  # refused on the examples that could speak for it
                    reasons |= refused
                    reason = refused[0] if len(kept) == 1 else "no action earned its place on its own evidence"
                    return self._settle(
                        step, base, outcomes, kept, [], candidate, None, _Decision(False, False, reason), look.weighed,
                        counts, start, self._scored(evidence, together, None), reasons,
                    )  # fmt: skip
                subset = self._narrowed(origin, whole, actions, active, refused)
                if subset is not None:
                    reasons |= refused
                    candidate, active = subset, [j for j in active if j not in refused]
                    continue
            self._budget_check()
            run = self._evaluate(candidate, self.trainset, counts)
            if candidate is whole:
                together = run.score
            overall = flips(best_run, run, labels=self.labels.train)
            refused = {}
            for j in active:
                names = _changed(self.best, candidate, only={actions[j].name})
                own = self._touched(names, best_run, run, candidate)
                evidence[j] = ActionEvidence(flips=own, score_together=together)
                if len(active) > 1:
                    refusal = self._refusal(self._verdict(own, None, overall), own, [actions[j]])
                    if refusal:
                        refused[j] = refusal
            if refused and len(refused) == len(active):
                reasons |= refused
                weighed = self._weigh(candidate, best_run, run, counts, with_val=False)
                decision = _Decision(False, False, "no action earned its place on its own evidence")
                return self._settle(
                    step, base, outcomes, kept, [], candidate, run, decision, weighed, counts, start,
                    self._scored(evidence, together, None if candidate is whole else run.score), reasons,
                )  # fmt: skip
            subset = self._narrowed(origin, whole, actions, active, refused) if refused else None
            if subset is None:
                break
            reasons |= refused
            candidate, active = subset, [j for j in active if j not in refused]
        weighed = self._weigh(candidate, best_run, run, counts, with_val=True)
        refusal = self._refusal(
            (weighed.verdict, weighed.why), weighed.touched + (weighed.val_touched or Flips()),
            [actions[j] for j in active], candidate=candidate,
        )  # fmt: skip
        decision = _Decision(
            refusal is None,
            weighed.verdict == "better",
            refusal or _acceptance(weighed, len(candidate) > len(self.best)),
        )
        return self._settle(
            step, base, outcomes, kept, active, candidate, run, decision, weighed, counts, start,
            self._scored(evidence, together, None if candidate is whole else run.score), reasons,
            whole=(whole, together),
        )  # fmt: skip

    @staticmethod
    def _scored(
        evidence: dict[int, ActionEvidence], together: float | None, kept: float | None
    ) -> dict[int, ActionEvidence]:
        """The actions' evidence with the step's scores: with all its actions (None: that candidate was refused on
        the examples run first, so the others were not run), and with only the actions kept when some were not."""
        return {j: e.model_copy(update={"score_together": together, "score_kept": kept}) for j, e in evidence.items()}

    @staticmethod
    def _narrowed(
        origin: Toolset, whole: Toolset, actions: list[Action], active: list[int], refused: dict[int, str]
    ) -> Toolset | None:
        """The toolset of the `active` actions less the `refused` ones, or None when there is none to judge (none
        refused, or the others need one of them: a revision of a function a refused action adds)."""
        if not refused or len(refused) == len(active):
            return None
        return _apply_subset(origin, whole, [actions[j] for j in active if j not in refused])

    def _refused_removals(
        self,
        step: int,
        base: dict[str, Any],
        outcomes: list[ActionOutcome],
        kept: list[int],
        actions: list[Action],
        candidate: Toolset,
        best_run: EvaluationRun,
        counts: _StepCounts,
        start: float,
    ) -> StepReport | None:
        """The report of a step of removals that the examples calling what they remove already refuse, or None.

        A removal touches only the examples whose run with the best toolset called a function it removes: the
        candidate cannot call a function it does not have. Its evidence (flips on those examples, seeds, reliance
        on the LM's guesses) is therefore complete once they are run, and the other examples could only add harm
        (the sign test over all examples). So they are run first; when every removal is refused on them, the step
        is rolled back without running the rest. Otherwise this returns None, and the full evaluation reuses
        their records from the cache.

        Only with progressive update (without it, the candidate is the initial toolset less the removals, which may
        hold functions the best one lacks). A lone removal with validation examples is refused here only on harm:
        its full judgement pools the validation flips with these, which can overturn a tie's refusal (a seed's,
        or one the LM's guesses carried)."""
        removed = _changed(self.best, candidate)
        index = [i for i, hit in enumerate(touched_by(removed, best_run, best_run)) if hit]
        if not index or len(index) == len(best_run.records):
            return None
        before = best_run.model_copy(update={"records": tuple(best_run.records[i] for i in index)})
        part = self._evaluate(candidate, [self.trainset[i] for i in index], counts, part=True)
        evidence: dict[int, ActionEvidence] = {}
        reasons: dict[int, str] = {}
        for j, action in enumerate(actions):
            taken = removed & {action.name}
            own = flips(before, part, touched_by(taken, before, part), (), taken, labels=self.labels.train)
            evidence[j] = ActionEvidence(flips=own, score_together=None)
            judged = self._verdict(own, None, own)
            if len(actions) == 1 and self.valset and judged[0] != "harmful":
                return None
            refusal = self._refusal(judged, own, [action], candidate=candidate)
            if refusal is None:
                return None
            reasons[j] = refusal
        touched = flips(before, part, None, (), removed, labels=self.labels.train)
        verdict, why = self._verdict(touched, None, touched)
        weighed = StepEvidence(touched=touched, overall=touched, verdict=verdict, why=why)
        reason = (
            reasons[0]
            if len(actions) == 1
            else "no action earned its place on its own evidence (the examples that called what the step removes)"
        )
        return self._settle(
            step, base, outcomes, kept, [], candidate, None, _Decision(False, False, reason), weighed, counts, start,
            evidence, reasons,
        )  # fmt: skip

    def _first_look(
        self, candidate: Toolset, actions: list[Action], best_run: EvaluationRun, counts: _StepCounts
    ) -> _Look | None:
        """Run `candidate` first on the training examples that could get better, and say which of `actions` the
        evidence there already refuses for good; None where there is nothing to split (no evaluation cache: the
        other examples would be run again; every example could get better; or none could).

        An example the best toolset answered with full marks through a function call cannot get better, nor count
        as `carried` (the best toolset's run called a function): with the candidate it can only stay or get worse.
        The refusals that such examples cannot overturn are the ones that only grow with losses: harm (net flips
        below zero, or the sign test over all examples), an added function with no evidence, a removal the LM's
        guesses carried, a tie with `accept_ties` off. Two are left open: a revision that no example called yet
        (the others may call it), and, for a lone action (judged whole) with validation examples, anything but harm
        (its judgement pools the validation flips, which are run only for a candidate the training evidence does
        not refuse). The records run here come from the cache when the candidate is run on every example."""
        records = best_run.records
        index = [i for i, record in enumerate(records) if not (record.score >= 1 and record.calls)]
        if self.opt.evaluator.cache is None or not index or len(index) == len(records):
            return None
        before = best_run.model_copy(update={"records": tuple(records[i] for i in index)})
        part = self._evaluate(candidate, [self.trainset[i] for i in index], counts, part=True)
        overall = flips(before, part, labels=self.labels.train)
        lone = len(actions) == 1
        evidence: dict[int, ActionEvidence] = {}
        reasons: dict[int, str] = {}
        for k, action in enumerate(actions):
            names = _changed(self.best, candidate) if lone else _changed(self.best, candidate, only={action.name})
            own = self._touched(names, before, part, candidate)
            evidence[k] = ActionEvidence(flips=own, score_together=None)
            judged = self._verdict(own, None, overall)
            refusal = self._refusal(judged, own, actions if lone else [action], candidate=candidate if lone else None)
            if refusal is None:
                continue
            if not own.examples and isinstance(action, ReviseFunction):
                continue  # the examples not run yet may call the revised function
            if lone and self.valset and judged[0] != "harmful":
                continue
            reasons[k] = refusal
        touched = self._touched(_changed(self.best, candidate), before, part, candidate)
        verdict, why = self._verdict(touched, None, overall)
        return _Look(evidence, reasons, StepEvidence(touched=touched, overall=overall, verdict=verdict, why=why))

    def _touched(
        self,
        names: set[str],
        before: EvaluationRun,
        after: EvaluationRun,
        candidate: Toolset,
        labels: Mapping[str, str] | None = None,
    ) -> Flips:
        """The flips from the best toolset's run to `candidate`'s on the examples whose run called one of the changed
        functions `names` (training examples, unless `labels` says otherwise)."""
        return flips(before, after, touched_by(names, before, after), *_sides(self.best, candidate, names),
                     labels=self.labels.train if labels is None else labels)  # fmt: skip

    def _weigh(
        self,
        candidate: Toolset,
        best_run: EvaluationRun,
        run: EvaluationRun,
        counts: _StepCounts | None,
        *,
        with_val: bool,
    ) -> StepEvidence:
        """The evidence on `candidate` (`run` is its training run) against the best toolset: its training flips,
        and, unless those already show harm, its validation flips."""
        names = _changed(self.best, candidate)
        touched = self._touched(names, best_run, run, candidate)
        overall = flips(best_run, run, labels=self.labels.train)
        verdict, why = self._verdict(touched, None, overall)
        if not with_val or not self.valset or verdict == "harmful":
            return StepEvidence(touched=touched, overall=overall, verdict=verdict, why=why)
        self._budget_check()
        best_val = self._evaluate(self.best, self.valset, counts)
        val = self._evaluate(candidate, self.valset, counts)
        val_touched = self._touched(names, best_val, val, candidate, labels=self.labels.val)
        overall = overall + flips(best_val, val, labels=self.labels.val)
        verdict, why = self._verdict(touched, val_touched, overall)
        return StepEvidence(touched=touched, val_touched=val_touched, overall=overall, verdict=verdict, why=why)

    def _verdict(self, touched: Flips, val: Flips | None, overall: Flips) -> tuple[_Kind, str | None]:
        """better / neutral / harmful, and why, when harmful."""
        pooled = touched + (val or Flips())
        if pooled.net < 0:
            return "harmful", f"more of the examples it touched got worse than better ({_shown(pooled)})"
        if overall.worse_p() <= HARM_SIGNIFICANCE:
            return "harmful", (
                f"over all {overall.examples} examples compared it is significantly worse ({overall.wins} better, "
                f"{overall.losses} worse; sign test p = {overall.worse_p():.3f}; {overall.which()})"
            )
        if val is not None and touched.net > 0 and val.net < 0 and val.worse_p() <= _VAL_AGAINST:
            return "harmful", (
                f"it helps on the training examples it touched ({_shown(touched)}) and hurts on the validation "
                f"ones ({_shown(val)})"
            )
        significant = self.opt.significance is None or (
            sign_test(pooled.wins, pooled.wins + pooled.losses) <= self.opt.significance
        )
        return ("better" if pooled.net >= self.opt.min_net_flips and significant else "neutral"), None

    def _refusal(
        self,
        verdict: tuple[_Kind, str | None],
        evidence: Flips,
        actions: list[Action],
        candidate: Toolset | None = None,
    ) -> str | None:
        """Why actions with this verdict are not accepted, or None. `candidate`: the toolset they build, when they
        are judged whole (a tie is then weighed by its size and literals against the best toolset's)."""
        shown = f"on the examples it touched: {_shown(evidence)}"
        kind, why = verdict
        if kind == "harmful":
            return f"the evidence is against it: {why}"
        if kind == "better":
            return None
        seeds = sorted(a.name for a in actions if isinstance(a, RemoveFunction) and a.name in self.seeds)
        if seeds:
            return f"{', '.join(seeds)} came with the program; seed functions are removed only when the evidence " \
                f"says they hurt ({shown})"  # fmt: skip
        grows = sum(isinstance(a, AddFunction) for a in actions) > sum(isinstance(a, RemoveFunction) for a in actions)
        if candidate is not None:
            grows = len(candidate) > len(self.best)
        if evidence.relied and not evidence.wins:
            return (
                f"no evidence that it does no harm ({shown}): {evidence.relied} of them were answered through what it "
                "takes away, and are answered without it only by the agent's LM, with no function"
            )
        if grows and not (evidence.carried and not evidence.losses):
            return (
                f"no evidence that it helps ({shown}, none answered through it where the agent had used no function);"
                " a function is added only when it helps"
            )
        if (
            not evidence.examples
            and any(isinstance(a, ReviseFunction) for a in actions)
            and not (candidate is not None and len(candidate) < len(self.best))
        ):
            return "no example called the revised function, so nothing says the revision is right; it is not kept"
        if candidate is None or len(candidate) < len(self.best) or self.opt.accept_ties:
            return None
        if _literals(candidate) < _literals(self.best):
            return None  # fewer literals: the more general code wins a tie
        return f"it ties with the best toolset ({shown}) and accept_ties is off"

    def _settle(
        self,
        step: int,
        base: dict[str, Any],
        outcomes: list[ActionOutcome],
        kept: list[int],
        chosen: list[int],
        candidate: Toolset,
        run: EvaluationRun | None,
        decision: _Decision,
        weighed: StepEvidence | None,
        counts: _StepCounts,
        start: float,
        evidence: dict[int, ActionEvidence] | None = None,
        reasons: dict[int, str] | None = None,
        whole: tuple[Toolset, float | None] | None = None,
    ) -> StepReport:
        """Record the decision: the best toolset, the failure list, patience, and what became of each action.
        `kept` indexes the step's checked actions in `outcomes`, `chosen` indexes `kept`; `whole` is the
        candidate of all the checked actions and its training score, where only some were chosen; `run` is None
        for a candidate refused before all the training examples were run (it is then not accepted)."""
        evidence, reasons = evidence or {}, reasons or {}
        accepted = {kept[j] for j in chosen} if decision.accept else set()
        for j, i in enumerate(kept):
            status: Literal["accepted", "rolled_back"] = "accepted" if i in accepted else "rolled_back"
            reason = reasons.get(j) or (None if i in accepted else decision.reason)
            update = {"status": status, "reason": reason, "evidence": evidence.get(j)}
            outcomes[i] = outcomes[i].model_copy(update=update)
        rolled = [i for i in kept if i not in accepted]
        score = run.score if run is not None else None
        failed, failed_score = whole if whole is not None and decision.accept else (candidate, score)
        score_before = base["score_before"]
        if decision.accept:
            assert run is not None and score is not None  # a candidate is accepted only on all its examples
            self.best, self.best_score = candidate, run.score
            self._note_callers(candidate, run)
            self.failure_list = []
            self.accepted.append(AcceptedToolset(step=step, score=run.score, toolset=candidate.to_dict()))
            self._toolsets[step] = candidate
            self._save_toolset(step, candidate)
        if rolled:
            self.failure_list.append(
                FailedCandidate(
                    step=step,
                    score=failed_score,
                    best_score=score_before,
                    actions=[outcomes[i].proposal for i in rolled],
                    fingerprint=failed.fingerprint,
                )
            )
        self.stale = 0 if decision.improved else self.stale + 1
        return self._step_report(
            base
            | {
                "actions": outcomes,
                "outcome": "accepted" if decision.accept else "rolled_back",
                "score_after": score,
                "improved": decision.improved,
                "candidate_fingerprint": candidate.fingerprint,
                "best_fingerprint": self.best.fingerprint,
                "evidence": weighed,
                "reason": decision.reason,
            },
            counts,
            start,
        )

    def _step_report(self, fields: dict[str, Any], counts: _StepCounts, start: float) -> StepReport:
        return StepReport(
            **fields,
            usage=counts.usage,
            cache_hits=counts.hits,
            cache_misses=counts.misses,
            cache_revalidated=counts.revalidated,
            interrupted_lm_calls=counts.interrupted,
            wall_time_s=time.perf_counter() - start,
        )

    def _rejected_last_step(self) -> list[str]:
        """The actions the last step's checks rejected, a line each with the reason: a step that had actions left
        to evaluate does not ask again, so the proposer hears why the others were rejected at its next call. Taken
        from the step's report, so a resumed compile sends the same."""
        last = self.steps[-1] if self.steps else None
        if last is None:
            return []
        return [
            f"- {o.summary} (step {last.step}, trial {o.trial}): {o.reason}"
            for o in last.actions
            if o.status in ("rejected", "dropped") and o.reason and not o.reason.startswith(_OVER_LIMIT)
        ]

    def _propose(
        self,
        toolset: Toolset,
        notes: dict[str, str],
        trajectories: str,
        feedback: list[str],
        need: int,
        counts: _StepCounts,
    ) -> list[ProposedAction]:
        opt = self.opt
        context: dict[str, Any] = {} if self.proposer_lm is None else {"lm": self.proposer_lm}
        self._history_mark = _last_entry(self.proposer_lm or dspy.settings.lm)
        usage = None
        try:
            with dspy.context(**context), self._logged("proposer"), count_lm_usage() as usage:
                prediction = opt.proposer(
                    **proposer_inputs(
                        program=self.program,
                        fixed_tools=self.fixed_text,
                        toolset=toolset,
                        notes=notes,
                        failures=self.failure_list,
                        trajectories=trajectories,
                        rejected=feedback,
                        max_actions=need,
                    )
                )
        finally:
            calls = usage.calls if usage is not None else 0
            self.proposer_lm_calls += calls
            if usage is not None:
                self._add_tokens("proposer", *usage.tokens)
            counts.usage.proposer.calls += calls
        tokens = usage.tokens
        counts.usage.proposer.add(tokens[0], tokens[1], calls=0)
        actions = prediction.actions or []
        return [a if isinstance(a, ProposedAction) else ProposedActionReply.model_validate(a) for a in actions]

    def _reply_cut(self) -> bool:
        """Whether the proposer LM's last reply, made by the last `_propose`, stopped at its token limit (which
        leaves its last action, or the whole reply, incomplete)."""
        lm = self.proposer_lm or dspy.settings.lm
        entry = _last_entry(lm)
        if entry is None or entry is self._history_mark:  # the call made no request (it failed before)
            return False
        response = entry.get("response")
        reason = getattr(response, "finish_reason", None)
        if reason is None:  # LiteLLM's reply: the reason is its first choice's
            choices = getattr(response, "choices", None) or [None]
            reason = getattr(choices[0], "finish_reason", None)
        return reason == "length"

    def _repeat(self, candidate: Toolset) -> str | None:
        """Why `candidate` is not worth an evaluation, if it is the current toolset or one that already failed."""
        if candidate.fingerprint == self.best.fingerprint:
            return "together, the actions leave the functions exactly as they are; change something"
        for failure in self.failure_list:
            if failure.fingerprint == candidate.fingerprint:
                scored = "was refused" if failure.score is None else f"scored {failure.score:.3f}"
                return (
                    f"together, the actions give the function set that {scored} at step {failure.step} (see the "
                    "failure list); propose something different"
                )
        return None

    def _check(self, proposal: ProposedAction, candidate: Toolset) -> tuple[str | None, Toolset]:
        """None and the new candidate, or the reason the proposal is rejected and the unchanged candidate."""
        return check_proposal(
            proposal, candidate, fixed=self.fixed, sandbox=self.opt.sandbox, step=self.step + 1, examples=self.trainset
        )

    # ------------------------------------------------------------------------------------------ helpers
    def _solved(self) -> bool:
        """Whether the best toolset answers every training and validation example: no later candidate can then be
        better on the evidence (no example is left to flip its way), only tie, so the steps left would be paid for
        to change nothing that can be measured."""
        if self.best_score < 1.0:
            return False
        return not self.valset or self._evaluate(self.best, self.valset).score >= 1.0

    def _evaluate(
        self, toolset: Toolset, examples: list[dspy.Example], counts: _StepCounts | None = None, *, part: bool = False
    ) -> EvaluationRun:
        """Evaluate `toolset` on `examples` (`part`: a few of the training examples, see `_refused_removals`)."""
        set_attribute_by_name(self.program, self.param_name, toolset)
        # the baseline is step 0; every later evaluation (the final ones too) belongs to the step that made it
        step = self.step + 1 if self.accepted and self.stop_reason is None else self.step
        split = "val" if examples is self.valset else "train_touched" if part else "train"
        role = "best" if toolset == self.best else "candidate"
        metadata = {"metric_key": f"{split}_{role}", "toolforge_step": step, "toolforge_split": split,
                    "toolforge_role": role, "toolforge_fingerprint": toolset.fingerprint}  # fmt: skip
        label = f"baseline ({split})" if not self.accepted else f"step {step}: {role} ({split})"
        with self._logged("agent"):
            run = self.opt.evaluator.evaluate(
                self.program,
                examples,
                display_progress=self.opt.display_progress,
                description=label,
                callback_metadata=metadata,
            )
        if self.tracker is not None:
            self.tracker.evaluated(split, role, run.score)
        self.agent_lm_calls += run.lm_calls
        self._add_tokens(
            "agent",
            sum(r.prompt_tokens for r in run.records if not r.cached),
            sum(r.completion_tokens for r in run.records if not r.cached),
        )
        if counts is not None:  # a step's evaluation (the baseline's errors are reported when it is made)
            if run.errors:
                logger.warning(
                    "step %d: %d of %d examples raised, e.g.: %s",
                    self.step + 1,
                    len(run.errors),
                    len(run.records),
                    one_line(run.errors[0].error, 300),
                )
            counts.usage.agent.calls += run.lm_calls
            counts.hits += run.hits
            counts.misses += run.misses
            counts.revalidated += run.revalidated
            prompt = sum(r.prompt_tokens for r in run.records if not r.cached)
            completion = sum(r.completion_tokens for r in run.records if not r.cached)
            counts.usage.agent.add(prompt, completion, calls=0)
        return run

    def _checked_prune(self, toolset: Toolset) -> _Pruning:
        """Drop the functions no training run called successfully, if the toolset without them does no harm.

        Dropping a function changes what the agent's LM sees, so the smaller toolset is evaluated and judged like
        any other change (on the training and validation examples); being smaller, it wins a tie. Seed functions
        stay unless `prune_seeds`.
        """
        run = self._evaluate(toolset, self.trainset)  # from the cache: it was evaluated when it was accepted
        smaller, unused = self._prune(toolset, run)
        if not unused:
            return _Pruning(toolset)
        if self._budget_spent():
            logger.warning(
                "not pruning %s: the LM-call budget is spent, so the smaller toolset cannot be checked", unused
            )
            return _Pruning(toolset, unused_kept=unused)
        smaller_run = self._evaluate(smaller, self.trainset)
        evidence = self._weigh(smaller, run, smaller_run, None, with_val=True)
        smaller_val = None
        if evidence.val_touched is not None and self.valset:
            smaller_val = self._evaluate(smaller, self.valset).score  # cached: the evidence evaluated it
        if evidence.verdict != "harmful":
            logger.info("pruned %s: no training run called them successfully", unused)
            return _Pruning(smaller, pruned=unused, score=smaller_run.score, val_score=smaller_val)
        logger.info("keeping %s although unused: the evidence is against the toolset without them", unused)
        return _Pruning(toolset, unused_kept=unused, score=smaller_run.score, val_score=smaller_val)

    def _prune(self, toolset: Toolset, run: EvaluationRun) -> tuple[Toolset, list[str]]:
        if len(run.errors) == len(run.records):  # no run got far enough to call anything: no evidence either way
            if len(toolset):
                logger.warning("not pruning: every training run raised, so none shows which functions are used")
            return toolset, []
        used: set[str] = set().union(*(r.called for r in run.records))
        keep = used if self.opt.prune_seeds else used | self.seeds
        unused = [name for name in toolset.names if name not in keep]
        # A function is not pruned for one skipped call: when an example that called it as it was accepted is now
        # answered with no function at all, the LM skipped it on this prompt's draw (another function taking that
        # example over is what makes a function unused)
        guessed = {r.example_id for r in run.records if not r.calls}
        skipped = [name for name in unused if self.callers.get(toolset[name].fingerprint, set()) & guessed]
        if skipped:
            logger.info("not pruning %s: examples that called them are now answered with no function", skipped)
        unused = [name for name in unused if name not in skipped]
        if not unused:
            return toolset, []
        return toolset.apply([RemoveFunction(name) for name in unused]), unused

    def _note_callers(self, toolset: Toolset, run: EvaluationRun) -> None:
        """Remember which examples called each function of an accepted toolset (see `_prune`)."""
        for record in run.records:
            for name in record.called & set(toolset.names):
                self.callers.setdefault(toolset[name].fingerprint, set()).add(record.example_id)

    def _add_tokens(self, role: str, prompt: int, completion: int) -> None:
        self.tokens[role] = [self.tokens[role][0] + prompt, self.tokens[role][1] + completion]

    def _settings(self) -> dict[str, Any]:
        """The optimizer's settings as the report shows them: what a user set or would tune."""
        opt = self.opt
        names = ("max_epochs", *_SIGNED_SETTINGS, "max_functions", "holdout", "max_lm_calls", "num_threads",
                 "stop_when_solved")  # fmt: skip
        settings: dict[str, Any] = {name: getattr(opt, name) for name in names}
        settings["metric_range"] = list(opt.evaluator.metric_range)
        settings["failure_score"] = opt.evaluator.failure_score
        settings["cache"] = str(opt.cache.directory) if opt.cache is not None else None
        settings["log_dir"] = str(opt.log_dir) if opt.log_dir is not None else None
        return settings

    def _budget_spent(self) -> bool:
        limit = self.opt.max_lm_calls
        return limit is not None and self.agent_lm_calls + self.proposer_lm_calls >= limit

    def _budget_check(self) -> None:
        if self._budget_spent():
            raise _BudgetExhausted()

    def _signature(self, initial: Toolset) -> tuple[str, dict[str, Any]]:
        """The compile's identity (a checkpoint of another is not resumed), and what it is made of, readably, by the
        names a user sets them with: a refused resume names those that differ."""
        opt = self.opt
        program = program_fingerprint(self.program, metric_id=opt.evaluator.metric_id)
        train = [example_id(e) for e in self.trainset]
        val = [example_id(e) for e in self.valset] if self.valset else None
        signature = content_hash(
            {
                "program": program,
                "initial": initial.fingerprint,
                "max_functions": initial.max_functions,
                "train": train,
                "val": val,
                "proposer": _lm_name(self.proposer_lm),
                "settings": [getattr(opt, name) for name in _SIGNED_SETTINGS],
            }
        )
        readable = {
            "program": program[:12],  # its prompts, LMs, fixed tools and code, and the metric
            "seed functions": f"{', '.join(initial.names) or 'none'} ({initial.fingerprint[:12]})",
            "max_functions": initial.max_functions,
            "trainset": f"{len(train)} examples ({content_hash(train)[:12]})",
            "valset": f"{len(val)} examples ({content_hash(val)[:12]})" if val else None,
            "proposer_lm": _lm_name(self.proposer_lm),
            **{name: getattr(opt, name) for name in _SIGNED_SETTINGS},
        }
        return signature, readable

    def checkpoint(self) -> None:
        if self.log_dir is None:
            return
        checkpoint = Checkpoint(
            format=CHECKPOINT_FORMAT,
            version=CHECKPOINT_VERSION,
            signature=self.signature,
            settings=self.settings,
            mark=self.mark + 1,
            interrupted_lm_calls=self.interrupted_lm_calls,
            step=self.step,
            best=self.best.to_dict(),
            best_score=self.best_score,
            initial_score=self.initial_score,
            stale=self.stale,
            failure_list=self.failure_list,
            accepted=self.accepted,
            steps=self.steps,
            agent_lm_calls=self.agent_lm_calls,
            proposer_lm_calls=self.proposer_lm_calls,
            tokens=self.tokens,
            stop_reason=self.stop_reason,
            initial_errors=self.initial_errors,
            initial_error=self.initial_error,
            trajectory_budget=self.trajectory_budget,
            callers={fingerprint: sorted(ids) for fingerprint, ids in sorted(self.callers.items())},
        )
        write_json(
            self.log_dir / "checkpoint.json",
            checkpoint.model_dump(mode="json"),
            indent=None,  # read by the next run, not by people: report.json is the readable record
        )
        self.mark += 1
        if self._ledger is not None:  # the checkpoint counts what the ledger held: empty it
            self._ledger.restart(self.mark)

    # --------------------------------------------------------------------------------- LM-call ledger
    def _open_ledger(self, checkpoint: Checkpoint | None) -> None:
        if self.log_dir is None:
            return
        self.mark = checkpoint.mark if checkpoint is not None else 0
        self._ledger = _Ledger(self.log_dir / LEDGER, self.signature, self.mark)

    def _carry(self, *, step_runs_next: bool) -> None:
        """Add the LM calls an interrupted run made after the last checkpoint (the ledger has them) to the totals,
        and, when they were made by the step that runs next, to that step's counts."""
        carried = self._ledger.carried() if self._ledger is not None else None
        if carried is None or not (carried.usage.agent.calls or carried.usage.proposer.calls):
            return
        carried.interrupted = carried.usage.agent.calls + carried.usage.proposer.calls
        self.agent_lm_calls += carried.usage.agent.calls
        self.proposer_lm_calls += carried.usage.proposer.calls
        for role in ("agent", "proposer"):
            usage = getattr(carried.usage, role)
            self._add_tokens(role, usage.prompt_tokens, usage.completion_tokens)
        self.interrupted_lm_calls += carried.interrupted
        self._carried = carried if step_runs_next else None
        logger.info(
            "an interrupted run of this compile made %d agent and %d proposer LM calls after its last checkpoint; "
            "they are counted",
            carried.usage.agent.calls,
            carried.usage.proposer.calls,
        )

    def _logged(self, role: Literal["agent", "proposer"]) -> contextlib.AbstractContextManager[Any]:
        """Within the block, each LM request the compile counts is also written to the ledger as it is made."""
        if self._ledger is None:
            return contextlib.nullcontext()
        return dspy.context(usage_tracker=_LedgerTracker(self._ledger, role, dspy.settings.usage_tracker))

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def _load_checkpoint(self) -> Checkpoint | None:
        if self.log_dir is None:
            return None
        path = self.log_dir / "checkpoint.json"
        if not path.exists():
            return None
        data = read_json(path, "checkpoint", "delete it to start this compile afresh (resume=False)")
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise ToolforgeError(f"{str(path)!r} is not a toolforge checkpoint of this version; use another log_dir")
        version = data.get("version")
        migrate = _MIGRATIONS.get(version) if type(version) is int else None
        if migrate is None:
            raise ToolforgeError(
                f"{str(path)!r} is a toolforge checkpoint of version {one_line(repr(version), 40)}, which this "
                f"toolforge does not read (it reads version {', '.join(map(str, _MIGRATIONS))}); delete it to start "
                "this compile afresh (resume=False), or use another log_dir"
            )
        if data.get("signature") != self.signature:
            raise ToolforgeError(
                f"log_dir {str(self.log_dir)!r} holds a checkpoint of a different compile "
                f"({_differences(data, self)}); use another log_dir, or start afresh in it with resume=False"
            )
        try:
            return Checkpoint.model_validate(migrate(data, trajectory_budget=self.opt.trajectory_budget_chars))
        except ValidationError as exc:
            raise ToolforgeError(
                f"{str(path)!r} is not a valid toolforge checkpoint of version {version}: {validation_reasons(exc)}; "
                "delete it to start this compile afresh (resume=False)"
            ) from None

    def _save_toolset(self, step: int, toolset: Toolset) -> None:
        if self.log_dir is not None:
            toolset.save(self.log_dir / f"toolset-{step}.json")
        if self.tracker is not None and step:  # the baseline's is logged with the history (`_track_history`)
            self.tracker.toolset(step, toolset)

    def _tell(self, report: StepReport) -> None:
        """Say what the step decided (with `verbose`), and log it to MLflow (with a tracker)."""
        after = "" if report.score_after is None else f" -> {report.score_after:.3f}"
        self._say(
            "step %d: %s (train score %.3f%s)%s",
            report.step,
            report.outcome.replace("_", " "),
            report.score_before,
            after,
            f": {report.reason}" if report.reason else "",
        )
        for action in report.actions:
            if action.status in ("rolled_back", "dropped"):  # rejections were said when they were checked
                self._say("step %d: %s %s: %s", report.step, action.summary, action.status, action.reason or "")
        if self.tracker is not None:
            self.tracker.step(report, self.best_score, len(self.best))

    def _track_history(self) -> None:
        """Log to MLflow what the compile holds before its next step: the baseline and, on resume, the steps done."""
        if self.tracker is None:
            return
        self.tracker.baseline(self.initial_score, len(self.initial_toolset))
        toolsets = {a.step: Toolset.from_dict(a.toolset, source="checkpoint") for a in self.accepted}
        for step, toolset in toolsets.items():
            self.tracker.toolset(step, toolset)
        for report in self.steps:
            best = max((s for s in toolsets if s <= report.step), default=0)
            score = report.score_after if report.outcome == "accepted" and report.score_after is not None else None
            self.tracker.step(report, report.score_before if score is None else score, len(toolsets[best]))


class _StepCounts:
    def __init__(self) -> None:
        self.usage = StepUsage()
        self.hits = 0
        self.misses = 0
        self.revalidated = 0
        self.interrupted = 0  # of the calls, those made by an interrupted run of the step


class _Ledger:
    """The LM requests of a compile since its last checkpoint, a line each, written as each is answered.

    A checkpoint holds the counts of everything before it, and the ledger is emptied after each one. A run that
    dies (a crash, `kill -9`, Ctrl-C) leaves the requests of its unfinished step here; the resumed run adds them, so
    its report counts what an uninterrupted run does, while DSPy's cache answers the requests it repeats for free.
    Each line names the compile (its signature) and the checkpoint it follows (`mark`), so a line is never counted
    twice: not after a checkpoint that holds it (a crash between writing the checkpoint and emptying the ledger),
    and not by another compile in the same directory. One `os.write` to a file opened for appending, per request:
    the line is whole, and the kernel has it, before the next request starts.
    """

    def __init__(self, path: Path, signature: str, mark: int) -> None:
        self.path = path
        self.tag = signature[:16]
        self.mark = mark
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(self, role: str, usage: dict[str, Any]) -> None:
        prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        completion = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
        with self._lock:
            if self._fd is None:
                return
            line = json.dumps({"compile": self.tag, "mark": self.mark, "role": role, "tokens": [prompt, completion]})
            with contextlib.suppress(OSError):  # a full disk costs the count of a crash, not the compile
                os.write(self._fd, (line + "\n").encode())

    def carried(self) -> _StepCounts:
        """The counts of the lines this compile wrote since its last checkpoint (`mark`)."""
        counts = _StepCounts()
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return counts
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                if entry["compile"] != self.tag or entry["mark"] != self.mark:
                    continue
                prompt, completion = (int(t) for t in entry["tokens"])
                role = entry["role"]
            except (ValueError, TypeError, KeyError, RecursionError):
                continue  # a line cut by a crash, or not ours
            if role in ("agent", "proposer"):
                getattr(counts.usage, role).add(prompt, completion)
        return counts

    def restart(self, mark: int) -> None:
        """A checkpoint (number `mark`) now holds every count: empty the ledger."""
        with self._lock:
            self.mark = mark
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _LedgerTracker(UsageTracker):
    """A DSPy usage tracker that writes to the ledger each request the compile counts, and passes every request
    on to the tracker it replaced.

    The compile counts a request when one of toolforge's own counters (`count_lm_usage`: an example's run, a
    proposer call) hands it on to here; a request that reaches this tracker directly was not counted (a metric's
    own LM call, say), and is not written either, so the ledger adds exactly what the counters would have.
    """

    def __init__(self, ledger: _Ledger, role: str, parent: Any) -> None:
        super().__init__()
        self.ledger = ledger
        self.role = role
        self.parent = parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        if dspy.settings.usage_tracker is not self:
            self.ledger.log(self.role, usage_entry)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)

    def __deepcopy__(self, memo: dict[int, Any]) -> _LedgerTracker:
        return self  # one ledger (dspy.Parallel copies the tracker into its threads)


def _last_entry(lm: Any) -> dict[str, Any] | None:
    """The newest entry of an LM's request history, if it keeps one."""
    history = getattr(lm, "history", None)
    return history[-1] if isinstance(history, list) and history else None


def _discard_run(log_dir: Path) -> None:
    """Delete the files a compile writes in `log_dir` (nothing else there), so that a new one starts afresh."""
    written = [log_dir / "checkpoint.json", log_dir / "report.json", log_dir / LEDGER]
    for path in [*written, *log_dir.glob("toolset-*.json")]:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(log_dir: Path | None) -> Iterator[None]:
    """Hold `log_dir` for one compile at a time: two writing one checkpoint would each undo the other's steps.
    The lock (flock on `log_dir/.lock`) goes with the process, so a crashed compile never leaves it held."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        fcntl = None  # type: ignore[assignment]
    if log_dir is None or fcntl is None:
        yield
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / ".lock", "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ToolforgeError(
                f"another compile ({holder}) is running in {str(log_dir)!r}; wait for it to finish, or give this one "
                "another log_dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tokens_of(checkpoint: Checkpoint) -> dict[str, list[int]]:
    """The token totals a checkpoint holds; one written before they were kept has its steps' (not its baseline's)."""
    if checkpoint.tokens:
        return {role: list(checkpoint.tokens.get(role, [0, 0])) for role in ("agent", "proposer")}
    return {
        role: [
            sum(getattr(s.usage, role).prompt_tokens for s in checkpoint.steps),
            sum(getattr(s.usage, role).completion_tokens for s in checkpoint.steps),
        ]
        for role in ("agent", "proposer")
    }


def _model_name(lm: Any) -> str | None:
    """How the report names an LM: its model string (`openai/gpt-4o-mini`, the GGUF of the embedded model)."""
    if lm is None:
        return None
    return str(getattr(lm, "model", None) or type(lm).__name__)


@contextlib.contextmanager
def _verbose_logging(verbose: bool) -> Iterator[None]:
    """With `verbose`, let this module's INFO messages through for the compile, and show them (above any progress
    bars) when logging is not configured at all."""
    if not verbose or (logger.isEnabledFor(logging.INFO) and logger.hasHandlers()):
        yield
        return
    level = logger.level
    handler = None if logger.hasHandlers() else _TqdmHandler()
    logger.setLevel(logging.INFO)
    if handler is not None:
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)


class _TqdmHandler(logging.Handler):
    """Writes records with `tqdm.write`, so that they print above the progress bars instead of through them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _differences(checkpoint: dict[str, Any], run: _RunState) -> str:
    """What differs between the compile that wrote `checkpoint` and `run`: each setting, its old and new value."""
    old = checkpoint.get("settings")
    if isinstance(old, dict):
        changed = [
            f"{_GLOSS.get(name, name)}: {_setting(old.get(name))} -> {_setting(value)}"
            for name, value in run.settings.items()
            if old.get(name) != value
        ]
        if changed:
            return ", ".join(changed)
    return "another program, data, metric, LM, settings or toolforge version"


_GLOSS = {"program": "program (its prompts, LMs, fixed tools or code) or metric"}


def _setting(value: Any) -> str:
    return one_line(value if isinstance(value, str) else repr(value), 60)


def _lm_name(lm: Any) -> str | None:
    return None if lm is None else f"{type(lm).__qualname__}:{getattr(lm, 'model', '')}"
