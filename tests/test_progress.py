"""Progress inside a compile: a nested bar for each evaluation (examples done, running score), and `verbose`
proposals and decisions through the optimizer's logger."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dspy

import toolforge as tf
from tests.evaluation_fixtures import exact
from tests.test_optimizer import DOUBLE, SQUARE, action, add_square_once, agent_lm, examples, proposer_lm

ROOT = Path(__file__).resolve().parent.parent
OPTIMIZER_LOGGER = "toolforge.optimizer"


def compile_square(policy=add_square_once, **settings: Any) -> dspy.Module:
    """Step 1 adds `square` to `double` on 10 questions (0.8 -> 1.0, accepted); step 2 proposes nothing (the solved
    set does not stop it)."""
    agent_model, _ = agent_lm()
    proposer_model, _ = proposer_lm(policy)
    options = dict(max_epochs=2, cache=False, num_threads=2, stop_when_solved=False) | settings
    optimizer = tf.FunctionOptimizer(exact, proposer_lm=proposer_model, **options)
    with dspy.context(lm=agent_model):
        return optimizer.compile(tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])),
                                 trainset=examples(10))  # fmt: skip


def last_state(stderr: str, label: str) -> str:
    """The last thing the bar labelled `label` showed (tqdm redraws a bar in place, after a carriage return)."""
    states = [part for part in re.split(r"[\r\n]", stderr) if part.startswith(label + ":")]
    assert states, f"no bar {label!r} in {stderr[-2000:]!r}"
    return states[-1]


def test_the_baseline_shows_a_bar_of_examples_done_and_running_score(capsys):
    compile_square()
    state = last_state(capsys.readouterr().err, "baseline (train)")
    assert "10/10" in state and "score=0.800" in state


def test_each_candidate_evaluation_shows_its_own_bar(capsys):
    compile_square()
    err = capsys.readouterr().err
    state = last_state(err, "step 1: candidate (train)")
    assert "10/10" in state and "score=1.000" in state
    assert "10/10" in last_state(err, "step 1: best (train)")  # the step's look at the best toolset again
    assert "toolforge compile" in err  # the outer bar over steps


def test_display_progress_false_shows_no_bar(capsys):
    compile_square(display_progress=False)
    err = capsys.readouterr().err
    assert "baseline" not in err and "candidate" not in err and "it/s" not in err


def test_verbose_logs_each_proposal_and_decision_as_it_happens(caplog):
    caplog.set_level(logging.INFO, logger=OPTIMIZER_LOGGER)
    compile_square(display_progress=False, verbose=True)
    messages = [r.getMessage() for r in caplog.records if r.name == OPTIMIZER_LOGGER]
    assert "step 1, trial 1: proposed add square: checked" in messages
    (decision,) = [m for m in messages if m.startswith("step 1: accepted")]
    assert decision.startswith("step 1: accepted (train score 0.800 -> 1.000): ")
    assert [m for m in messages if m.startswith("step 2:")] == [
        "step 2: no change (train score 1.000): the proposer proposed no action"
    ]


def test_verbose_logs_a_rejected_proposal_with_its_reason(caplog):
    caplog.set_level(logging.INFO, logger=OPTIMIZER_LOGGER)
    broken = action("add_function", SQUARE, code="def square(x):\n    return x *\n")
    compile_square(lambda inputs: [broken], display_progress=False, verbose=True, max_epochs=1, max_trials=1)
    (rejected,) = [r.getMessage() for r in caplog.records if "proposed add square" in r.getMessage()]
    assert rejected.startswith("step 1, trial 1: proposed add square: ") and "checked" not in rejected
    assert "syntax" in rejected.lower()


def test_without_verbose_proposals_and_decisions_stay_at_debug(caplog):
    caplog.set_level(logging.INFO, logger=OPTIMIZER_LOGGER)
    compile_square(display_progress=False)
    assert not [r for r in caplog.records if "proposed" in r.getMessage() or "accepted (train" in r.getMessage()]


SCRIPT = """
import dspy
from tests.test_progress import compile_square
dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
compile_square(display_progress=False, verbose=True)
"""


def test_verbose_shows_on_stderr_when_logging_is_not_configured():
    env = os.environ | {"PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO toolforge.optimizer: step 1, trial 1: proposed add square: checked" in done.stderr
    assert "INFO toolforge.optimizer: step 1: accepted (train score 0.800 -> 1.000)" in done.stderr
