"""The checkpoint as a typed, versioned model: it round-trips the file exactly, an early version-1 layout resumes
through its migration, and a version this toolforge does not read is refused with the file, the version and the fix.
"""

from __future__ import annotations

import json

import pytest

import toolforge as tf
from tests.test_optimizer import DOUBLE, compile_with, scenario
from toolforge.optimizer import Checkpoint

# Fields version 1 gained without a version bump; a checkpoint written before has none of them.
LATER_FIELDS = ("mark", "interrupted_lm_calls", "initial_errors", "initial_error", "trajectory_budget")


def two_steps(log_dir, **kwargs):
    """Step 1 adds square (accepted), step 2 revises double for the worse (rolled back: a failure-list entry)."""
    settings = dict(cache=False, max_epochs=2, patience=4, log_dir=log_dir) | kwargs
    return compile_with(scenario, tf.Toolset([DOUBLE]), **settings)


def test_the_model_dumps_the_file_it_read_byte_for_byte(tmp_path):
    two_steps(tmp_path / "run")
    text = (tmp_path / "run" / "checkpoint.json").read_text()
    data = json.loads(text)
    checkpoint = Checkpoint.model_validate(data)
    assert checkpoint.failure_list[0].step == 2 and checkpoint.failure_list[0].fingerprint
    assert [entry.step for entry in checkpoint.accepted] == [0, 1]
    assert json.dumps(checkpoint.model_dump(mode="json")) == json.dumps(data)


def test_an_early_version_1_checkpoint_resumes_through_its_migration(tmp_path):
    _, reference, ref_report, _, _ = two_steps(tmp_path / "reference", max_epochs=4)
    run = tmp_path / "run"
    two_steps(run)
    path = run / "checkpoint.json"
    data = json.loads(path.read_text())
    for name in LATER_FIELDS:
        del data[name]
    for failure in data["failure_list"]:
        del failure["fingerprint"]
    path.write_text(json.dumps(data))

    _, resumed, report, _, _ = two_steps(run, max_epochs=4)
    assert report.resumed_after_step == 2
    assert resumed.toolset == reference.toolset
    assert [s.outcome for s in report.steps] == [s.outcome for s in ref_report.steps]
    rewritten = json.loads(path.read_text())
    assert list(rewritten) == list(Checkpoint.model_fields)  # written back in the current layout
    assert rewritten["failure_list"][0]["fingerprint"] is None  # a migrated entry: its fingerprint is not known
    assert rewritten["trajectory_budget"] == 12_000 and rewritten["initial_errors"] == 0


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_a_version_this_toolforge_does_not_read_is_refused_naming_the_file_the_version_and_the_fix(tmp_path, version):
    run = tmp_path / "run"
    two_steps(run)
    path = run / "checkpoint.json"
    data = json.loads(path.read_text())
    data["version"] = version
    path.write_text(json.dumps(data))
    with pytest.raises(tf.ToolforgeError) as raised:
        two_steps(run, max_epochs=3)
    message = str(raised.value)
    assert str(path) in message and f"checkpoint of version {version!r}" in message
    assert "it reads version 1" in message and "delete it to start this compile afresh (resume=False)" in message


def test_a_checkpoint_that_does_not_fit_its_version_is_refused_with_the_reason(tmp_path):
    run = tmp_path / "run"
    two_steps(run)
    path = run / "checkpoint.json"
    data = json.loads(path.read_text())
    del data["step"]
    data["failure_list"][0]["score"] = "low"
    path.write_text(json.dumps(data))
    with pytest.raises(tf.ToolforgeError) as raised:
        two_steps(run, max_epochs=3)
    message = str(raised.value)
    assert f"{str(path)!r} is not a valid toolforge checkpoint of version 1" in message
    assert "step: Field required" in message and "failure_list.0.score" in message
    assert "delete it to start this compile afresh (resume=False)" in message


def test_a_steps_lm_usage_is_one_nested_model_that_json_writes_flat():
    from toolforge.optimizer import LMUsage, StepReport, StepUsage

    usage = StepUsage(agent=LMUsage(calls=3, prompt_tokens=10, completion_tokens=2), proposer=LMUsage(calls=1))
    step = StepReport(step=1, outcome="accepted", score_before=0.5, best_fingerprint="f", usage=usage)
    data = step.model_dump(mode="json")
    assert "usage" not in data
    assert [data[k] for k in ("agent_lm_calls", "agent_prompt_tokens", "agent_completion_tokens")] == [3, 10, 2]
    assert [data[k] for k in ("proposer_lm_calls", "proposer_prompt_tokens", "proposer_completion_tokens")] == [1, 0, 0]
    assert list(data).index("agent_lm_calls") == list(data).index("best_fingerprint") + 1  # where the fields were
    assert StepReport.model_validate(data) == step
