"""The report of a compile (report.json, report.md, learning-curve.png): models and settings, LM calls and tokens
per role, held-out scores, the examples that flipped in each step, the final code with the seeds marked."""

from __future__ import annotations

import json

import pytest

import toolforge as tf
from tests.evaluation_fixtures import unary
from tests.test_acceptance import scripted
from tests.test_optimizer import DOUBLE, SQUARE, action, compile_with
from toolforge.report import curve_figure, learning_curve, load_report, markdown_report, record_held_out, write_report

WRONG_DOUBLE = unary("double", "x * 2 + 1", DOUBLE.description)
CUBE = unary("cube", "x ** 3")


@pytest.fixture
def run_dir(tmp_path):
    """A compile of three steps: square added (accepted), a wrong revision of double (rolled back), nothing."""
    policy, _ = scripted([[action("add_function", SQUARE)], [action("revise_function", WRONG_DOUBLE)]])
    with tf.EvaluationCache(tmp_path / "cache") as cache:
        compile_with(
            policy, tf.Toolset([DOUBLE, CUBE]), cache=cache, max_epochs=3, patience=5, log_dir=tmp_path / "run"
        )
    return tmp_path / "run"


def test_the_report_names_the_models_and_the_settings(run_dir):
    report = load_report(run_dir)
    assert (report.agent_lm, report.proposer_lm) == ("local/agent", "local/proposer")  # the scripted LMs' models
    assert report.settings["max_epochs"] == 3 and report.settings["patience"] == 5
    assert report.settings["metric_range"] == [0.0, 1.0] and report.settings["log_dir"] == str(run_dir)
    text = markdown_report(report, run_dir)
    assert "- models: agent local/agent, proposer local/proposer\n" in text
    assert "max_epochs=3, max_actions_per_step=3, max_trials=3, patience=5, accept_ties=True" in text


def test_token_totals_per_role_add_up_the_steps_and_the_baseline(run_dir):
    report = load_report(run_dir)
    steps_agent = sum(s.usage.agent.prompt_tokens for s in report.steps)
    steps_proposer = sum(s.usage.proposer.prompt_tokens for s in report.steps)
    assert report.agent_prompt_tokens > steps_agent > 0  # the baseline's requests are counted too
    assert report.proposer_prompt_tokens == steps_proposer > 0
    assert report.proposer_completion_tokens == sum(s.usage.proposer.completion_tokens for s in report.steps)
    text = markdown_report(report, run_dir)
    assert (
        f"| agent | {report.agent_lm_calls} | {report.agent_prompt_tokens} | {report.agent_completion_tokens} |"
    ) in text


def test_the_final_code_is_in_the_report_with_the_seeds_marked(run_dir):
    report = load_report(run_dir)
    assert report.final_code == {"double": DOUBLE.code, "cube": CUBE.code, "square": SQUARE.code}
    text = markdown_report(report, run_dir)
    final = text[text.index("## Final functions") :]
    assert f"### double (seed)\n\n```python\n{DOUBLE.code.rstrip()}\n```" in final
    assert "### cube (seed)" in final and "### square (learned)" in final


def test_a_revised_seed_is_marked_so(tmp_path):
    policy, _ = scripted([[action("revise_function", unary("double", "x + x", DOUBLE.description))]])
    compile_with(policy, tf.Toolset([DOUBLE]), max_epochs=1, log_dir=tmp_path / "run")
    report = load_report(tmp_path / "run")
    assert report.steps[0].outcome == "accepted"
    assert "### double (seed, revised)" in markdown_report(report, tmp_path / "run")


def test_each_step_names_the_examples_that_flipped(run_dir):
    text = markdown_report(load_report(run_dir), run_dir)
    step1 = text[text.index("## Step 1") : text.index("## Step 2")]
    assert "  - flipped where it was called: better: trainset[4], trainset[9]\n" in step1
    step2 = text[text.index("## Step 2") : text.index("## Step 3")]
    doubles = ", ".join(f"trainset[{i}]" for i in range(10) if i % 5 != 4)
    assert f"Examples that flipped (any cause): worse: {doubles}." in step2
    assert "  - reason: the evidence is against it: more of the examples it touched got worse than better" in step2
    step3 = text[text.index("## Step 3") :]
    assert "Why: the proposer proposed no action." in step3


def test_held_out_scores_go_into_report_json_and_the_markdown(run_dir):
    record_held_out(run_dir, before=0.2, after=0.6, examples=5, source="load_dataset('test'), first 5")
    data = json.loads((run_dir / "report.json").read_text())
    assert data["held_out_scores"] == {
        "examples": 5, "before": 0.2, "after": 0.6, "source": "load_dataset('test'), first 5"
    }  # fmt: skip
    _, md = write_report(run_dir)
    assert (
        "- held-out score (examples the compile never saw: 5, load_dataset('test'), first 5): seeded (double, cube) "
        "0.200 -> trained 0.600\n"
    ) in md.read_text()


def test_held_out_scores_of_a_program_without_seed_functions_say_untrained(tmp_path):
    policy, _ = scripted([[action("add_function", DOUBLE)]])
    compile_with(policy, tf.Toolset(), max_epochs=1, log_dir=tmp_path / "run")
    record_held_out(tmp_path / "run", before=0.0, after=0.8, examples=5)
    _, md = write_report(tmp_path / "run")
    assert "- held-out score (examples the compile never saw: 5): untrained 0.000 -> trained 0.800\n" in md.read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(before=2.0, after=0.5, examples=5),
            r"record_held_out\(before=2.0\): a score must be a number in \[0, 1\]",
        ),
        (dict(before=0.5, after=0.5, examples=0), r"record_held_out\(examples=0\): give the number of examples"),
    ],
)
def test_held_out_scores_out_of_range_are_refused(run_dir, kwargs, message):
    with pytest.raises(tf.ToolforgeError, match=message):
        record_held_out(run_dir, **kwargs)


def test_a_report_from_before_these_fields_still_loads_and_renders(run_dir):
    data = json.loads((run_dir / "report.json").read_text())
    for key in ("agent_lm", "proposer_lm", "settings", "final_code", "held_out_scores", "agent_prompt_tokens"):
        data.pop(key)
    for step in data["steps"]:
        for a in step["actions"]:
            if a["evidence"]:
                for side in ("better", "worse"):
                    a["evidence"]["flips"].pop(side)
    (run_dir / "report.json").write_text(json.dumps(data))
    text = markdown_report(load_report(run_dir), run_dir)
    assert "- models: agent (unknown), proposer (unknown)" in text
    assert "## Final functions\n\n(the code is in toolset-final.json)" in text


def test_the_legend_is_outside_the_axes(run_dir, tmp_path):
    report = record_held_out(run_dir, before=0.2, after=0.6, examples=5)
    fig = curve_figure(report)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # entirely to the right of the plotting area
    assert legend.x1 <= fig.bbox.x1  # and not cut off by the figure's edge
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train (best toolset)", "candidate accepted", "rolled back", "held-out: seeded, trained (5)"]
    path = learning_curve(report, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PROGRAM = """
import dspy
import toolforge as tf
from tests.test_optimizer import DOUBLE, agent_lm, examples

LM = agent_lm()[0]


def build_program():
    return tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE]))


def load_dataset(split, limit=None):
    return examples(10)[:limit]


def metric(example, prediction, trace=None):
    return float(prediction.answer) == example.answer
"""


def test_the_demo_s_held_out_scores_reach_the_report(run_dir, tmp_path, monkeypatch, capsys):
    """programs/held_out.py (run by `make demo`) scores the program as built and the trained one on the test split
    and writes both into report.json, which report.md then shows."""
    import dspy

    from programs.held_out import main

    (tmp_path / "heldout_program.py").write_text(PROGRAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TOOLFORGE_CACHE_DIR", str(tmp_path / "eval-cache"))
    lm, adapter = dspy.settings.lm, dspy.settings.adapter
    try:
        main([str(run_dir), str(tmp_path / "heldout_program.py"), "--lm", "heldout_program:LM", "--limit", "5"])
    finally:
        dspy.configure(lm=lm, adapter=adapter)
    # examples 1..5: the fifth asks for a square, which only the trained toolset (double, cube, square) has
    assert "seeded 0.800, trained 1.000" in capsys.readouterr().out  # the program's own double and cube
    held = load_report(run_dir).held_out_scores
    assert (held.examples, held.before, held.after, held.source) == (5, 0.8, 1.0, "load_dataset('test'), first 5")
    _, md = write_report(run_dir)
    assert "seeded (double, cube) 0.800 -> trained 1.000" in md.read_text()
