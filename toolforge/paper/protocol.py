"""The paper's protocol: sample a training and a test set with a seed, train, test without and with the functions.

The published protocol is incomplete; what is not published is our reading, and every part of it is a parameter:

- MATH follows CRAFT's subset setting: per problem type a small training set from MATH's train split and a test set
  from its test split. The paper's MATH cells are multiples of 1.25, consistent with 80 test problems per type:
  default 20 training and 80 test problems per type, all levels.
- TabMWP: small samples of its train and test splits, default 20 and 100 (the paper's cells are whole numbers).
- GAIA: only the validation split has answers; both sets are drawn from it without overlap, default 20 and 100.
- 10 epochs, at most 3 actions per step (`FunctionOptimizer`'s settings, given by the caller).

Sampling sorts each pool (the loaders' fixed order), then draws with `random.Random(seed)`: the same data, sizes and
seed give the same problems on every machine.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict

from toolforge._io import read_json, write_json
from toolforge.errors import ToolforgeError
from toolforge.evaluate import Evaluator
from toolforge.optimizer import FunctionOptimizer
from toolforge.paper import datasets, scoring
from toolforge.program import find_toolset

__all__ = [
    "DEFAULT_SIZES",
    "PAPER_RESULTS",
    "CellResult",
    "Split",
    "load_results",
    "metric_for",
    "results_table",
    "run_cell",
    "split",
    "trained_functions",
]

logger = logging.getLogger(__name__)

Task = Literal["math", "tabmwp", "gaia"]

DEFAULT_SIZES: dict[str, tuple[int, int]] = {"math": (20, 80), "tabmwp": (20, 100), "gaia": (20, 100)}

# The paper's Table (test accuracy, %): (task, cell) -> agent -> (without training, with training).
PAPER_RESULTS: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("math", "prealgebra"): {"assistant": (78.8, 82.6), "react": (87.5, 87.5)},
    ("math", "algebra"): {"assistant": (66.3, 65.0), "react": (83.8, 82.5)},
    ("math", "intermediate_algebra"): {"assistant": (30.0, 38.8), "react": (50.0, 51.3)},
    ("math", "geometry"): {"assistant": (40.0, 42.5), "react": (53.8, 58.8)},
    ("math", "counting_and_probability"): {"assistant": (72.5, 76.3), "react": (73.8, 78.8)},
    ("math", "precalculus"): {"assistant": (32.5, 35.0), "react": (53.8, 62.5)},
    ("math", "number_theory"): {"assistant": (56.3, 67.5), "react": (68.8, 72.5)},
    ("gaia", "gaia"): {"assistant": (16.0, 23.0), "react": (12.0, 18.0)},
    ("tabmwp", "tabmwp"): {"assistant": (51.0, 56.0), "react": (59.0, 70.0)},
}
_RERUN = "delete it and run that cell again"
_AGENT_NAMES = {"assistant": "GPT-4+", "react": "ReAct"}
_TASK_NAMES = {"math": "MATH", "tabmwp": "TabMWP", "gaia": "GAIA"}

_METRICS: dict[str, Callable[..., Any]] = {
    "math": scoring.math_metric,
    "tabmwp": scoring.tabmwp_metric,
    "gaia": scoring.gaia_metric,
}


def metric_for(task: str) -> Callable[..., Any]:
    """The task's metric (`toolforge.paper.scoring`).

    Raises:
        ToolforgeError: an unknown task, or MATH without math-verify installed (naming the `paper` extra), which
            is said here rather than at the first answer checked, after the LM has been paid.
    """
    if task not in _METRICS:
        raise ToolforgeError(f"no paper task {task!r}; choose one of {', '.join(_METRICS)}")
    if task == "math":
        scoring.require_math_verify()
    return _METRICS[task]


@dataclass(frozen=True)
class Split:
    """The sampled problems of one cell."""

    train: list[dspy.Example]
    test: list[dspy.Example]


def _sample(pool: Sequence[dspy.Example], size: int, rng: random.Random, what: str, parameter: str) -> list[Any]:
    if size > len(pool):
        raise ToolforgeError(
            f"{parameter}={size}, but there are only {len(pool)} {what}; lower {parameter}, or point at the whole "
            "data set"
        )
    return rng.sample(list(pool), size)


def split(
    task: Task,
    data: str | os.PathLike[str],
    *,
    cell: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    levels: Iterable[int] | None = None,
) -> Split:
    """Sample one cell's training and test problems from a data set on disk.

    Args:
        task: "math", "tabmwp" or "gaia".
        data: The data set's folder: MATH's root (train/, test/), TabMWP's (problems_*.json), a GAIA split's.
        cell: The MATH problem type (`number_theory`, ...); None for the other tasks.
        train_size: Training problems (default: `DEFAULT_SIZES`).
        test_size: Test problems (default: `DEFAULT_SIZES`).
        seed: The seed of the draw.
        levels: MATH levels (1-5), GAIA levels (1-3) or TabMWP grades (1-8) to draw from; default all.

    Raises:
        ToolforgeError: the data cannot be read, or holds fewer problems than asked for (naming the size).
    """
    default_train, default_test = DEFAULT_SIZES.get(task, (0, 0))
    train_size = default_train if train_size is None else train_size
    test_size = default_test if test_size is None else test_size
    rng = random.Random(seed)
    if task == "math":
        if cell is None:
            raise ToolforgeError(f"MATH is sampled per problem type; give one of {', '.join(datasets.MATH_TYPES)}")
        train_pool = datasets.load_math(data, "train", cell, levels=levels)
        test_pool = datasets.load_math(data, "test", cell, levels=levels)
        what = f"MATH {cell} problems in the"
        return Split(
            _sample(train_pool, train_size, rng, f"{what} train split", "train_size"),
            _sample(test_pool, test_size, rng, f"{what} test split", "test_size"),
        )
    if task == "tabmwp":
        train_pool = datasets.load_tabmwp(data, "train", grades=levels)
        test_pool = datasets.load_tabmwp(data, "test", grades=levels)
        return Split(
            _sample(train_pool, train_size, rng, "TabMWP problems in its train split", "train_size"),
            _sample(test_pool, test_size, rng, "TabMWP problems in its test split", "test_size"),
        )
    if task == "gaia":
        pool = datasets.load_gaia(data, levels=levels)
        drawn = _sample(pool, train_size + test_size, rng, "GAIA questions", "train_size + test_size")
        return Split(drawn[:train_size], drawn[train_size:])
    raise ToolforgeError(f"no paper task {task!r}; choose one of math, tabmwp, gaia")


class CellResult(BaseModel):
    """One cell of the results table: test accuracy (%) without and with the trained functions."""

    model_config = ConfigDict(frozen=True)

    task: str
    cell: str
    agent: str
    lm: str
    proposer_lm: str
    embedded_lm: bool = False
    train_size: int
    test_size: int
    seed: int
    levels: list[int] | None = None
    without: float
    with_functions: float
    test_errors_without: int = 0
    test_errors_with: int = 0
    functions: list[str] = []

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.model_dump(mode="json"))


def run_cell(
    program: dspy.Module,
    data: Split,
    *,
    optimizer: FunctionOptimizer,
    evaluator: Evaluator,
) -> tuple[dspy.Module, float, float, int, int]:
    """Test the program untrained, train its functions on the training set, and test it again.

    Returns:
        The trained program, the test accuracy (%) without and with its functions, and the number of test examples
        that raised in each evaluation (scored as wrong).
    """
    before = evaluator.evaluate(program, data.test)
    trained = optimizer.compile(program, trainset=data.train)
    after = evaluator.evaluate(trained, data.test)
    return trained, 100 * before.score, 100 * after.score, len(before.errors), len(after.errors)


def trained_functions(program: dspy.Module) -> list[str]:
    """The names of the functions a trained program holds."""
    return list(find_toolset(program, None)[1].names)


def load_results(folder: str | os.PathLike[str]) -> list[CellResult]:
    """Every `result.json` under `folder` (one per cell a run finished), in the paper's table order."""
    results = [
        CellResult.model_validate(read_json(path, "cell result", _RERUN))
        for path in sorted(Path(folder).rglob("result.json"))
    ]
    order = {key: index for index, key in enumerate(PAPER_RESULTS)}
    return sorted(results, key=lambda r: (order.get((r.task, r.cell), len(order)), r.agent))


def _cell_name(task: str, cell: str) -> str:
    if task == "math":
        return f"MATH {datasets.MATH_TYPES.get(cell, cell)}"
    return _TASK_NAMES.get(task, task)


def results_table(results: Sequence[CellResult]) -> str:
    """A Markdown table of our cells beside the paper's numbers for the same cells (test accuracy, %)."""
    lines = [
        "| cell | agent | paper: without -> with | ours: without -> with | train / test | seed | LM (proposer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = PAPER_RESULTS.get((r.task, r.cell), {}).get(r.agent)
        paper_text = f"{paper[0]:.1f} -> {paper[1]:.1f}" if paper else "-"
        errors = r.test_errors_without + r.test_errors_with
        ours = f"{r.without:.1f} -> {r.with_functions:.1f}" + (f" ({errors} raised)" if errors else "")
        levels = f", levels {','.join(map(str, r.levels))}" if r.levels else ""
        lines.append(
            f"| {_cell_name(r.task, r.cell)} | {_AGENT_NAMES.get(r.agent, r.agent)} | {paper_text} | {ours} | "
            f"{r.train_size} / {r.test_size}{levels} | {r.seed} | {r.lm} ({r.proposer_lm}) |"
        )
    text = "\n".join(lines) + "\n"
    if any(r.embedded_lm for r in results):
        text += (
            "\nCells run with the embedded model (Gemma 3 270M) are far below a GPT-4-class model: they show that "
            "the protocol runs end to end, not the paper's result. Point --lm at a capable model for that.\n"
        )
    return text
