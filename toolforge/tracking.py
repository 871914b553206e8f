"""MLflow for a compile: what `FunctionOptimizer(use_mlflow=True)` and `mlflow.dspy.autolog(log_compiles=True)` record.

Two ways in, one record:

- `mlflow.dspy.autolog(log_compiles=True, log_evals=True)`: MLflow patches the `compile` of the Teleprompter
  subclasses that exist when autolog is called, so a `FunctionOptimizer` imported later would be missed.
  `adopt_autolog` applies MLflow's own patch at the first compile after that (`FunctionOptimizer.compile` calls it),
  so the compile run exists whatever the import order. Every evaluation the optimizer makes fires DSPy's evaluate
  callbacks (`toolforge.evaluate`), which MLflow logs as nested runs and as the compile run's `<metric_key>`
  series (`train_best`, `train_candidate`, `val_best`, `val_candidate`, in percent as `dspy.Evaluate` reports;
  and `train_touched_candidate`: a step of removals run first on the training examples that called what it removes).
- `FunctionOptimizer(use_mlflow=True)`, as GEPA's `use_mlflow`: the run active at compile time (autolog's compile
  run, or one of your own), or else a new run named "toolforge compile", which the compile ends.

Either way, while a run is active the compile logs into it (`MlflowTracker`): its settings as parameters; per step
(MLflow's `step` is toolforge's step; 0 is the baseline) `train_score` (the best toolset's training score after the
step), `candidate_train_score`, `val_score` and `candidate_val_score` (where the step evaluated them),
`accepted`, `functions`, `agent_lm_calls`, `proposer_lm_calls` and `lm_calls` (cumulative); each accepted
toolset as `toolsets/toolset-<step>.json`; and at the end `report.json`, `report.md` (with `log_dir`) and
`toolset-final.json`. Logging never ends a compile: a failure to log is a warning.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolforge.errors import ToolforgeError

if TYPE_CHECKING:
    from toolforge.optimizer import OptimizationReport, StepReport
    from toolforge.toolset import Toolset

__all__ = ["MlflowTracker", "adopt_autolog", "autolog_compiles", "require_mlflow"]

logger = logging.getLogger(__name__)

_FLAVOR = "dspy"  # MLflow's name for its DSPy integration
RUN_NAME = "toolforge compile"


def require_mlflow(owner: str) -> None:
    """Raise, naming the extra to install, if MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise ToolforgeError(
            f"{owner} needs MLflow, which is not installed: pip install 'toolforge[mlflow]' (or pip install mlflow)"
        ) from exc


def _autolog_config(key: str) -> Any:
    """A setting of MLflow's DSPy autologging, or None when MLflow was never imported or autolog never called."""
    if "mlflow" not in sys.modules:  # autolog imports it: not imported, not enabled (and no import cost here)
        return None
    from mlflow.utils.autologging_utils import autologging_is_disabled, get_autologging_config

    if autologging_is_disabled(_FLAVOR):
        return None
    return get_autologging_config(_FLAVOR, key)


def autolog_compiles() -> bool:
    """Whether `mlflow.dspy.autolog(log_compiles=True)` is in force."""
    return bool(_autolog_config("log_compiles"))


def adopt_autolog(cls: type) -> bool:
    """Apply MLflow's DSPy autolog patch to `cls.compile` if autolog is on and missed the class (it was imported
    after autolog was called). True if it patched now: the caller then calls `cls.compile` again, through the patch.
    """
    if _autolog_config("log_traces") is None:  # every autolog config has it: None means autolog is off
        return False
    try:
        from mlflow.dspy.autolog import _patched_compile
        from mlflow.utils.autologging_utils import get_autologging_config, safe_patch
        from mlflow.utils.autologging_utils.safety import _AUTOLOGGING_PATCHES

        if any(p.destination is cls and p.name == "compile" for p in _AUTOLOGGING_PATCHES.get(_FLAVOR, ())):
            return False
        # the patch MLflow's autolog applies to the Teleprompter subclasses it finds, kept in MLflow's own registry,
        # so that `mlflow.dspy.autolog(disable=True)` reverts it as it does theirs
        safe_patch(
            _FLAVOR,
            cls,
            "compile",
            _patched_compile,
            manage_run=get_autologging_config(_FLAVOR, "log_compiles"),
        )
    except Exception as exc:  # an MLflow whose internals moved: the compile goes on, unlogged
        logger.warning("MLflow's DSPy autologging is on but could not be applied to %s: %s", cls.__name__, exc)
        return False
    logger.debug("applied MLflow's DSPy autolog patch to %s.compile (imported after autolog)", cls.__name__)
    return True


class MlflowTracker:
    """Logs one compile into an MLflow run (see the module's docstring for what).

    Args:
        start_run: Start a run when none is active (and end it at `close`); False logs only into an active run.
        tracking_uri: Set as MLflow's tracking URI first (None: MLflow's own setting).
        experiment_name: Set as MLflow's experiment first (None: MLflow's own setting).
    """

    def __init__(self, *, start_run: bool, tracking_uri: str | None = None, experiment_name: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        if tracking_uri is not None:
            mlflow.set_tracking_uri(tracking_uri)
        if experiment_name is not None:
            mlflow.set_experiment(experiment_name)
        self._own_run = False
        if mlflow.active_run() is None and start_run:
            mlflow.start_run(run_name=RUN_NAME)
            self._own_run = True
        self.active = mlflow.active_run() is not None
        self._lm_calls = 0
        self._val: dict[str, float] = {}  # "best" / "candidate": the step's last validation score of each

    @classmethod
    def for_compile(
        cls, *, use_mlflow: bool, tracking_uri: str | None, experiment_name: str | None
    ) -> MlflowTracker | None:
        """The tracker of a compile: with `use_mlflow`, or under autolog's compile run; None otherwise."""
        if use_mlflow:
            return cls(start_run=True, tracking_uri=tracking_uri, experiment_name=experiment_name)
        if autolog_compiles():
            tracker = cls(start_run=False)
            return tracker if tracker.active else None
        return None

    # ------------------------------------------------------------------------------------------ events
    def params(self, settings: dict[str, Any]) -> None:
        """The optimizer's settings that are plain values (autolog logs its own; theirs are not repeated)."""
        plain = {f"toolforge.{k}": v for k, v in settings.items() if isinstance(v, bool | int | float | str)}
        self._safely("parameters", lambda: self._mlflow.log_params(plain))

    def evaluated(self, split: str, role: str, score: float) -> None:
        """Note an evaluation of the current step (validation scores are logged with the step)."""
        if split == "val":
            self._val[role] = score

    def baseline(self, score: float, functions: int) -> None:
        self._log({"train_score": score, "functions": functions, "lm_calls": 0}, step=0)
        self._val.clear()

    def step(self, report: StepReport, best_score: float, functions: int) -> None:
        """Log a finished step's metrics."""
        agent, proposer = report.usage.agent.calls, report.usage.proposer.calls
        self._lm_calls += agent + proposer
        metrics = {
            "train_score": best_score,
            "accepted": float(report.outcome == "accepted"),
            "functions": functions,
            "agent_lm_calls": agent,
            "proposer_lm_calls": proposer,
            "lm_calls": self._lm_calls,
        }
        if report.score_after is not None:
            metrics["candidate_train_score"] = report.score_after
        if "candidate" in self._val:
            metrics["candidate_val_score"] = self._val["candidate"]
        # the best toolset's validation score after the step: the candidate's if it was accepted
        best_val = self._val.get("candidate" if report.outcome == "accepted" else "best")
        if best_val is not None:
            metrics["val_score"] = best_val
        self._log(metrics, step=report.step)
        self._val.clear()

    def toolset(self, step: int, toolset: Toolset) -> None:
        """An accepted toolset, as `toolsets/toolset-<step>.json`."""
        self._safely(
            "a toolset", lambda: self._text(json.dumps(toolset.to_dict(), indent=2), f"toolset-{step}.json", "toolsets")
        )

    def finish(self, report: OptimizationReport, final: Toolset, log_dir: Path | None) -> None:
        """The report (JSON, and Markdown when the compile has a `log_dir`) and the final toolset."""
        self._safely("the report", lambda: self._text(report.model_dump_json(indent=2), "report.json"))
        self._safely(
            "the final toolset", lambda: self._text(json.dumps(final.to_dict(), indent=2), "toolset-final.json")
        )
        if log_dir is not None:
            from toolforge.report import markdown_report

            self._safely("the Markdown report", lambda: self._text(markdown_report(report, log_dir), "report.md"))
        self._safely(
            "the final scores",
            lambda: self._mlflow.log_metrics(
                {"best_score": report.best_score, "initial_score": report.initial_score}
                | ({"best_val_score": report.val_scores[report.selected_step]}
                   if report.selected_step in report.val_scores else {})
            ),
        )  # fmt: skip

    def close(self, failed: bool) -> None:
        """End the run this tracker started, if it did."""
        if self._own_run:
            self._safely("the end of the run", lambda: self._mlflow.end_run("FAILED" if failed else "FINISHED"))
            self._own_run = False

    # ------------------------------------------------------------------------------------------ helpers
    def _log(self, metrics: dict[str, float], step: int) -> None:
        self._safely("metrics", lambda: self._mlflow.log_metrics(metrics, step=step))

    def _text(self, text: str, name: str, folder: str | None = None) -> None:
        # log_artifact rather than log_text: the name stays exactly `name`, in every MLflow version
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, name)
            path.write_text(text, encoding="utf-8")
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def _safely(self, what: str, log: Any) -> None:
        if not self.active:
            return
        try:
            log()
        except Exception as exc:  # a tracking server that went away must not cost the compile
            logger.warning("could not log %s to MLflow: %s: %s", what, type(exc).__name__, exc)
