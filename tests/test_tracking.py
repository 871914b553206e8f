"""DSPy's evaluate callbacks and MLflow: what a compile fires and logs, read back from a real MLflow store.

The store is an SQLite tracking database in a temporary directory (one per module: creating its tables takes
seconds), each test with an experiment of its own whose artifacts go to the temporary directory too. Autologging
patches classes process-wide, so the autolog tests run their compile in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils.callback import BaseCallback

import toolforge as tf
from tests.evaluation_fixtures import exact, make_examples, make_lm, make_program
from tests.test_optimizer import DOUBLE, add_square_once, agent_lm, examples, proposer_lm

mlflow = pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parent.parent
TRAIN = examples(10)  # 80% answered by `double` alone; `square` answers the rest
VAL = examples(15)[10:]


class Recorder(BaseCallback):
    """Every evaluate event, in order: ("start", callback_metadata, devset size) and ("end", score)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("start", inputs["callback_metadata"], len(inputs["devset"]), type(inputs["program"])))

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append(("end", outputs.score, len(outputs.results)))


def compile_square(**settings: Any) -> dspy.Module:
    """Step 1 adds `square` (0.8 -> 1.0, accepted); step 2 proposes nothing (the solved set does not stop it)."""
    agent_model, _ = agent_lm()
    proposer_model, _ = proposer_lm(add_square_once)
    options = dict(max_epochs=2, cache=False, display_progress=False, num_threads=2, stop_when_solved=False) | settings
    optimizer = tf.FunctionOptimizer(exact, proposer_lm=proposer_model, **options)
    with dspy.context(lm=agent_model):
        return optimizer.compile(tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([DOUBLE])),
                                 trainset=TRAIN, valset=VAL)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().search_experiments()  # creates the tables, once
    yield uri, folder
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def experiment(store, request):
    uri, folder = store
    name = request.node.name
    mlflow.MlflowClient(uri).create_experiment(name, artifact_location=(folder / name).as_uri())
    return name


def runs_of(uri: str, experiment: str) -> list[Any]:
    client = mlflow.MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def history(uri: str, run: Any, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, key)]


def artifact_text(uri: str, run: Any, path: str) -> str:
    return Path(mlflow.MlflowClient(uri).download_artifacts(run.info.run_id, path)).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ DSPy's callbacks
def test_an_evaluation_fires_dspys_evaluate_callbacks_with_its_score_in_percent():
    recorder = Recorder()
    lm, _ = make_lm()
    with dspy.context(lm=lm, callbacks=[recorder]):
        run = tf.Evaluator(exact).evaluate(make_program(), make_examples(5), callback_metadata={"metric_key": "dev"})
    assert run.score == 1.0
    assert recorder.events == [("start", {"metric_key": "dev"}, 5, tf.ToolAgent), ("end", 100.0, 5)]


def test_every_evaluation_of_a_compile_fires_the_callbacks_tagged_with_its_step_split_and_role():
    recorder = Recorder()
    with dspy.context(callbacks=[recorder]):
        compile_square()
    starts = [(e[1]["toolforge_step"], e[1]["metric_key"], e[2]) for e in recorder.events if e[0] == "start"]
    ends = [e[1] for e in recorder.events if e[0] == "end"]
    assert starts == [
        (0, "train_best", 10),  # the baseline
        (1, "train_best", 10),  # step 1: the best toolset again, then the candidate (with square) on both splits
        (1, "train_candidate", 10),
        (1, "val_best", 5),
        (1, "val_candidate", 5),
        (2, "train_best", 10),  # step 2 proposes nothing
        (2, "val_candidate", 5),  # the end: each accepted toolset on the valset (step 0's, then the best)
        (2, "val_best", 5),
        (2, "train_best", 10),  # and the best on the training set, to see which functions went unused
    ]
    assert ends == [80.0, 80.0, 100.0, 80.0, 100.0, 100.0, 80.0, 100.0, 100.0]


# ------------------------------------------------------------------------------------------ use_mlflow
def test_use_mlflow_logs_per_step_scores_lm_calls_toolsets_and_the_report(store, experiment):
    uri, _ = store
    trained = compile_square(use_mlflow=True, mlflow_tracking_uri=uri, mlflow_experiment_name=experiment)
    (run,) = runs_of(uri, experiment)
    assert run.info.run_name == "toolforge compile" and run.info.status == "FINISHED"
    assert mlflow.active_run() is None  # the run it started, it ended
    assert history(uri, run, "train_score") == [(0, 0.8), (1, 1.0), (2, 1.0)]
    assert history(uri, run, "candidate_train_score") == [(1, 1.0)]
    assert history(uri, run, "val_score") == [(1, 1.0)] and history(uri, run, "candidate_val_score") == [(1, 1.0)]
    assert history(uri, run, "accepted") == [(1, 1.0), (2, 0.0)]
    assert history(uri, run, "functions") == [(0, 1.0), (1, 2.0), (2, 2.0)]
    report = trained.toolforge_report
    assert history(uri, run, "proposer_lm_calls") == [(1, 1.0), (2, 1.0)]
    assert [v for _, v in history(uri, run, "agent_lm_calls")] == [s.usage.agent.calls for s in report.steps]
    assert run.data.params["toolforge.max_epochs"] == "2" and run.data.params["toolforge.use_mlflow"] == "True"
    step1 = tf.Toolset.from_dict(json.loads(artifact_text(uri, run, "toolsets/toolset-1.json")))
    assert step1.names == ["double", "square"] and step1 == trained.toolset
    assert tf.Toolset.from_dict(json.loads(artifact_text(uri, run, "toolsets/toolset-0.json"))).names == ["double"]
    assert json.loads(artifact_text(uri, run, "report.json"))["best_score"] == 1.0
    assert tf.Toolset.from_dict(json.loads(artifact_text(uri, run, "toolset-final.json"))) == trained.toolset


def test_use_mlflow_logs_into_the_run_already_active_and_leaves_it_open(store, experiment):
    uri, _ = store
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="mine") as mine:
        compile_square(use_mlflow=True)
        assert mlflow.active_run().info.run_id == mine.info.run_id
    (run,) = runs_of(uri, experiment)
    assert run.info.run_name == "mine" and history(uri, run, "train_score") == [(0, 0.8), (1, 1.0), (2, 1.0)]


def test_with_log_dir_the_markdown_report_is_logged_too(store, experiment, tmp_path):
    uri, _ = store
    compile_square(use_mlflow=True, mlflow_experiment_name=experiment, log_dir=tmp_path / "run")
    (run,) = runs_of(uri, experiment)
    markdown = artifact_text(uri, run, "report.md")
    assert markdown.startswith("# toolforge compile report") and "training score: 0.800 -> 1.000" in markdown


def test_without_use_mlflow_or_autolog_a_compile_logs_nothing(store, experiment):
    uri, _ = store
    mlflow.set_experiment(experiment)
    compile_square()
    assert runs_of(uri, experiment) == [] and mlflow.active_run() is None


def test_use_mlflow_without_mlflow_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` does when it is not installed
    with pytest.raises(tf.ToolforgeError, match=r"use_mlflow=True\) needs MLflow.*pip install 'toolforge\[mlflow\]'"):
        tf.FunctionOptimizer(exact, use_mlflow=True)


# ------------------------------------------------------------------------------------------ autolog
AUTOLOG = """
import mlflow
mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment({experiment!r})
mlflow.dspy.autolog(log_compiles=True, log_evals=True)
"""

COMPILE = """
import json
import dspy
from tests.test_tracking import compile_square
dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
print(json.dumps([step.outcome for step in compile_square().toolforge_report.steps]))
"""


@pytest.mark.parametrize("order", ["autolog_first", "toolforge_first"])
def test_autolog_records_a_compile_run_with_per_step_scores_whatever_the_import_order(store, experiment, order):
    uri, _ = store
    autolog = AUTOLOG.format(uri=uri, experiment=experiment)
    script = autolog + "import toolforge\n" if order == "autolog_first" else "import toolforge\n" + autolog
    env = os.environ | {"PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script + COMPILE)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["accepted", "no_change"]
    runs = runs_of(uri, experiment)
    (compile_run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    evaluations = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == compile_run.info.run_id]
    assert history(uri, compile_run, "train_score") == [(0, 0.8), (1, 1.0), (2, 1.0)]
    # each evaluation: a nested run, and a point of its series on the compile run (in percent, as DSPy's)
    assert [v for _, v in history(uri, compile_run, "train_best")] == [80.0, 80.0, 100.0, 100.0]
    assert history(uri, compile_run, "train_candidate") == [(0, 100.0)]
    assert len(evaluations) == 9 and sorted(r.data.metrics["eval"] for r in evaluations)[:3] == [80.0, 80.0, 80.0]
    names = [f.path for f in mlflow.MlflowClient(uri).list_artifacts(compile_run.info.run_id)]
    assert {"best_model.json", "report.json", "toolset-final.json", "toolsets"} <= set(names)
