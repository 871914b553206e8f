"""Reproducing the paper: the data set loaders, the answer checking, the agents and the protocol's sampling.

The fixtures in `tests/fixtures/paper/` are small files written here in each data set's published format.
"""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest

import toolforge as tf
from tests.scripted_lm import field, scripted_lm
from toolforge import paper
from toolforge.program import fixed_tool_names

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "paper"
MATH = FIXTURES / "MATH"
TABMWP = FIXTURES / "tabmwp"
GAIA = FIXTURES / "gaia" / "validation"


# ---------------------------------------------------------------------------------------------------- MATH
def test_math_loads_one_type_of_one_split_with_the_boxed_answer_as_label():
    examples = paper.load_math(MATH, "test", "number_theory")
    assert [e.answer for e in examples] == ["36", "6", "\\dfrac{3}{4}", "1"]
    assert set(examples[0].inputs().keys()) == {"problem"}
    assert examples[0].level == 1 and examples[0].type == "Number Theory"


def test_math_keeps_only_the_levels_asked_for():
    examples = paper.load_math(MATH, "train", "number_theory", levels=[3])
    assert [e.answer for e in examples] == ["2", "\\frac{1}{3}"]


def test_math_level_question_mark_is_kept_without_a_filter_and_dropped_by_one():
    everything = paper.load_math(MATH, "train", "number_theory")
    assert [e.level for e in everything].count(None) == 1
    assert None not in [e.level for e in paper.load_math(MATH, "train", "number_theory", levels=[1, 2, 3, 4, 5])]


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first $\\boxed{1}$, then $\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
        ("$\\boxed 5$.", "5"),
        ("the answer is $\\fbox{7}$", "7"),
        ("no box here", None),
    ],
)
def test_boxed_answer_is_the_last_box_with_braces_matched(solution, answer):
    assert paper.boxed_answer(solution) == answer


def test_an_unknown_math_type_names_the_known_ones():
    with pytest.raises(tf.ToolforgeError, match="no problem type 'number-theory'; choose one of prealgebra, algebra"):
        paper.load_math(MATH, "train", "number-theory")


def test_a_math_root_without_the_split_folder_says_what_it_needs(tmp_path):
    with pytest.raises(tf.ToolforgeError, match="point at the MATH data set's root, which holds train/ and test/"):
        paper.load_math(tmp_path, "train", "algebra")


def test_a_file_that_is_not_a_math_problem_is_named(tmp_path):
    folder = tmp_path / "train" / "algebra"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text('{"question": "?"}')
    with pytest.raises(tf.ToolforgeError, match="1.json' is not a MATH problem"):
        paper.load_math(tmp_path, "train", "algebra")


# ------------------------------------------------------------------------------------------------ MATH scoring
@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\frac{1}{2}", "1/2"),
        ("\\frac{1}{2}", "\\dfrac{1}{2}"),
        ("\\frac{1}{2}", "The answer is $\\frac{2}{4}$."),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("[2,5)", "[2, 5)"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\dfrac{3}{4}", "0.75"),
    ],
)
def test_math_verify_accepts_equivalent_answers(gold, predicted):
    assert paper.math_equivalent(gold, predicted)


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("\\frac{1}{2}", "1/3"),
        ("2\\sqrt{3}", "3.46"),
        ("[2,5)", "[2,5]"),
        ("[2,5)", "(2, 5)"),
        ("x^2+2x+1", "x^2+1"),
        ("36", ""),
        ("36", "thirty-six or so"),
    ],
)
def test_math_verify_rejects_wrong_answers(gold, predicted):
    assert not paper.math_equivalent(gold, predicted)


def test_the_math_metric_reads_the_predictions_answer():
    example = dspy.Example(problem="p", answer="\\frac{3}{4}").with_inputs("problem")
    assert paper.math_metric(example, dspy.Prediction(answer="0.75"))
    assert not paper.math_metric(example, dspy.Prediction(answer="0.7"))
    assert not paper.math_metric(example, dspy.Prediction())


def test_math_answers_are_checked_in_worker_threads_too():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(paper.math_equivalent, ["\\frac{1}{2}", "3"], ["0.5", "4"])) == [True, False]


def test_math_without_math_verify_names_the_paper_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(tf.ToolforgeError, match=r"pip install 'toolforge\[paper\]'"):
        paper.metric_for("math")


# -------------------------------------------------------------------------------------------------- TabMWP
def test_tabmwp_loads_the_problems_with_title_table_and_choices():
    examples = paper.load_tabmwp(TABMWP, "test")
    assert [e.id for e in examples] == ["10", "11", "12"]
    cats = examples[1]
    assert cats.table.startswith("Pets\nPet | Number\n") and cats.choices == ["even", "odd"]
    assert cats.question.endswith("Choose from: even; odd.") and set(cats.inputs().keys()) == {"table", "question"}


def test_tabmwp_keeps_only_the_grades_asked_for():
    assert [e.id for e in paper.load_tabmwp(TABMWP, "train", grades=[2, 3])] == ["1", "3"]


def test_a_missing_tabmwp_file_says_which_folder_to_give(tmp_path):
    with pytest.raises(tf.ToolforgeError, match="problems_train.json' does not exist; point at the folder holding"):
        paper.load_tabmwp(tmp_path, "train")


@pytest.mark.parametrize(
    ("gold", "predicted", "choices", "unit", "correct"),
    [
        ("3.75", "$3.75", None, "$", True),
        ("1,000", "1000", None, "", True),
        ("1/4", "0.25", None, "", True),
        ("6", "6.0", None, "", True),
        ("0.333", "1/3", None, "", True),
        ("3.75", "3.7", None, "", False),
        ("odd", "Odd", ["even", "odd"], "", True),
        ("odd", "the number is odd", ["even", "odd"], "", True),
        ("odd", "even", ["even", "odd"], "", False),
        ("pine", "pine tree", None, "", False),
        ("12 m", "12", None, "m", True),
    ],
)
def test_tabmwp_rules(gold, predicted, choices, unit, correct):
    assert paper.tabmwp_correct(gold, predicted, choices=choices, unit=unit) is correct


# ---------------------------------------------------------------------------------------------------- GAIA
def test_gaia_loads_questions_with_their_attachment_by_name_and_path():
    examples = paper.load_gaia(GAIA)
    assert len(examples) == 4 and set(examples[0].inputs().keys()) == {"question", "attachment"}
    attached = examples[0]
    assert attached.attachment.endswith(".csv") and Path(attached.attachment_path).parent == GAIA
    assert [e.attachment for e in examples[1:]] == ["", "", ""]


def test_gaia_keeps_only_the_levels_asked_for():
    assert [e.answer for e in paper.load_gaia(GAIA, levels=[2])] == ["Paris"]


def test_gaia_hidden_answers_point_at_the_validation_split(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"task_id": "t", "Question": "q", "Level": 1, "Final answer": "?"}\n')
    with pytest.raises(tf.ToolforgeError, match="answer of task t is hidden .*point at the validation split"):
        paper.load_gaia(tmp_path)


def test_gaia_attachments_must_be_in_the_folder(tmp_path):
    row = '{"task_id": "t", "Question": "q", "Level": 1, "Final answer": "1", "file_name": "../secret.txt"}\n'
    (tmp_path / "metadata.jsonl").write_text(row)
    with pytest.raises(tf.ToolforgeError, match="attached file '../secret.txt' is not in"):
        paper.load_gaia(tmp_path)


@pytest.mark.parametrize(
    ("predicted", "gold", "correct"),
    [
        ("13,312", "13312", True),
        ("$1,000", "1000", True),
        ("45%", "45", True),
        ("13313", "13312", False),
        ("2,3,5", "2, 3, 5", True),
        ("2; 3; 5", "2, 3, 5", True),
        ("2, 3", "2, 3, 5", False),
        ("apple, Banana", "apple, banana", True),
        ("St. Petersburg", "Saint Petersburg", False),
        ("  PARIS. ", "Paris", True),
        ("New-York", "new york", True),
    ],
)
def test_gaia_scorer(predicted, gold, correct):
    assert paper.gaia_scorer(predicted, gold) is correct


# -------------------------------------------------------------------------------------------------- agents
@pytest.mark.parametrize("task", ["math", "tabmwp", "gaia"])
def test_both_agent_kinds_start_with_the_python_tool_and_no_function(task):
    for kind in paper.AGENT_KINDS:
        agent = paper.build_agent(kind, task)
        assert fixed_tool_names(agent) == {"python", "finish"} and len(agent.toolset) == 0


def test_the_assistant_is_a_tool_agent_told_to_write_code_and_react_is_toolforge_react():
    assert isinstance(paper.build_agent("assistant", "math"), tf.ToolAgent)
    assert "write Python code" in paper.build_agent("assistant", "math").signature.instructions
    react = paper.build_agent("react", "math", max_iters=7)
    assert isinstance(react, paper.ReActAgent) and isinstance(react, tf.ReAct) and react.max_iters == 7


def test_the_react_agent_exposes_its_predictors_to_prompt_optimizers():
    agent = paper.build_agent("react", "math")
    assert [name for name, _ in agent.named_predictors()] == ["react", "extract.predict"]
    assert "Solve the competition math problem." in agent.react.signature.instructions


def test_the_react_agent_lists_a_new_toolset_at_its_next_call():
    def respond(system: str, user: str) -> dict:
        if "next_tool_name" in system:
            return {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}}
        return {"reasoning": "Nothing to compute.", "answer": "2"}

    lm, engine = scripted_lm(respond)
    agent = paper.build_agent("react", "math")
    with dspy.context(lm=lm):
        agent(problem="What is 1 + 1?")
        agent.toolset = tf.Toolset([tf.ForgedFunction.from_callable(_double)])
        agent(problem="What is 1 + 1?")
    steps = [system for system, _ in engine.requests if "next_tool_name" in system]
    assert [") _double, whose description" in system for system in steps] == [False, True]


def test_the_react_agents_cache_settings_carry_its_steps_prompt_format_and_agent_format():
    settings = paper.build_agent("react", "math", max_iters=7).cache_settings()
    assert set(settings) == {"max_iters", "prompt_format", "agent_format"} and settings["max_iters"] == 7


def _double(x: int) -> int:
    """Twice x."""
    return 2 * x


def test_the_gaia_python_tool_puts_a_named_attachment_in_the_working_directory():
    name = paper.load_gaia(GAIA)[0].attachment
    tool = paper.attachment_python_tool(GAIA, [name])
    printed = tool(code=f"import csv\nprint(sum(int(r['visitors']) for r in csv.DictReader(open({name!r}))))")
    assert printed.strip() == "13312"


def test_the_gaia_react_agent_runs_a_snippet_that_reads_the_attachment():
    name = paper.load_gaia(GAIA)[0].attachment
    code = f"import csv\nprint(sum(int(r['visitors']) for r in csv.DictReader(open({name!r}))))"

    def respond(system: str, user: str) -> dict:
        if "next_tool_name" in system:
            if "[[ ## observation_0 ## ]]" in user:
                return {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}}
            return {"next_thought": "Sum the column.", "next_tool_name": "python", "next_tool_args": {"code": code}}
        return {"reasoning": "Printed.", "answer": field(user, "observation_0").strip()}

    lm, _ = scripted_lm(respond)
    agent = paper.build_agent("react", "gaia", python=paper.attachment_python_tool(GAIA, [name]))
    with dspy.context(lm=lm):
        prediction = agent(question="How many visitors in all?", attachment=name)
    assert prediction.answer == "13312"


def test_the_gaia_python_tool_stages_nothing_a_snippet_does_not_name():
    name = paper.load_gaia(GAIA)[0].attachment
    tool = paper.attachment_python_tool(GAIA, [name])
    assert tool(code=f"import os\nprint({name[:8]!r} in ''.join(os.listdir('.')))").strip() == "False"


# ---------------------------------------------------------------------------------------------------- protocol
def test_sampling_with_a_seed_draws_the_same_problems():
    first = paper.split("math", MATH, cell="number_theory", train_size=2, test_size=2, seed=7)
    again = paper.split("math", MATH, cell="number_theory", train_size=2, test_size=2, seed=7)
    assert [e.source for e in first.train + first.test] == [e.source for e in again.train + again.test]


def test_other_seeds_draw_other_problems():
    splits = [paper.split("math", MATH, cell="number_theory", train_size=2, test_size=1, seed=s) for s in range(6)]
    draws = {tuple(e.source for e in data.train) for data in splits}
    assert len(draws) > 1


def test_math_trains_on_its_train_split_and_tests_on_its_test_split():
    data = paper.split("math", MATH, cell="number_theory", train_size=3, test_size=3)
    assert all("/train/" in e.source for e in data.train) and all("/test/" in e.source for e in data.test)


def test_gaia_draws_train_and_test_from_one_split_without_overlap():
    data = paper.split("gaia", GAIA, train_size=2, test_size=2, seed=1)
    assert not {e.task_id for e in data.train} & {e.task_id for e in data.test}
    assert len(data.train) == len(data.test) == 2


def test_asking_for_more_problems_than_there_are_names_the_size():
    with pytest.raises(tf.ToolforgeError, match="test_size=80, but there are only 4 MATH number_theory problems"):
        paper.split("math", MATH, cell="number_theory", train_size=2)


def test_gaia_counts_both_sets_against_its_one_split():
    with pytest.raises(tf.ToolforgeError, match="train_size \\+ test_size=5, but there are only 4 GAIA questions"):
        paper.split("gaia", GAIA, train_size=2, test_size=3)


def test_the_defaults_are_our_reading_of_the_paper():
    assert paper.DEFAULT_SIZES == {"math": (20, 80), "tabmwp": (20, 100), "gaia": (20, 100)}


def test_the_paper_numbers_cover_every_cell_and_both_agents():
    assert len(paper.PAPER_RESULTS) == 9
    assert paper.PAPER_RESULTS[("math", "number_theory")] == {"assistant": (56.3, 67.5), "react": (68.8, 72.5)}
    assert all(set(cells) == {"assistant", "react"} for cells in paper.PAPER_RESULTS.values())


def test_the_table_puts_ours_beside_the_papers_cell():
    result = paper.CellResult(
        task="tabmwp", cell="tabmwp", agent="react", lm="m", proposer_lm="p", train_size=20, test_size=100, seed=0,
        without=50.0, with_functions=61.0,
    )  # fmt: skip
    row = paper.results_table([result]).splitlines()[2]
    assert row == "| TabMWP | ReAct | 59.0 -> 70.0 | 50.0 -> 61.0 | 20 / 100 | 0 | m (p) |"


def test_a_react_step_reply_that_does_not_parse_ends_the_run_instead_of_failing_it():
    def respond(system: str, user: str) -> dict:
        if "next_tool_name" in system:
            return {"unexpected": "a reply cut at the token limit"}
        return {"reasoning": "Nothing was computed.", "answer": "0"}

    lm, _ = scripted_lm(respond)
    with dspy.context(lm=lm):
        prediction = paper.build_agent("react", "math")(problem="What is 1 + 1?")
    assert prediction.answer == "0" and prediction.trajectory == {}
