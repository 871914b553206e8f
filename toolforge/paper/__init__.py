"""Reproducing the paper (arXiv 2402.11359): MATH, TabMWP and GAIA loaders, their answer checking, its two agent
kinds, the train/test protocol and a results table beside the paper's numbers.

    toolforge paper math --data MATH --type number_theory --lm openai/gpt-4o --proposer-lm openai/gpt-4o

MATH answers are checked by math-verify, installed with the `paper` extra (`pip install 'toolforge[paper]'`).
"""

from toolforge.paper.agents import AGENT_KINDS, ReActAgent, attachment_python_tool, build_agent
from toolforge.paper.datasets import MATH_TYPES, boxed_answer, load_gaia, load_math, load_tabmwp
from toolforge.paper.protocol import (
    DEFAULT_SIZES,
    PAPER_RESULTS,
    CellResult,
    Split,
    load_results,
    metric_for,
    results_table,
    run_cell,
    split,
    trained_functions,
)
from toolforge.paper.scoring import (
    gaia_metric,
    gaia_scorer,
    math_equivalent,
    math_metric,
    tabmwp_correct,
    tabmwp_metric,
)

__all__ = [
    "AGENT_KINDS",
    "DEFAULT_SIZES",
    "MATH_TYPES",
    "PAPER_RESULTS",
    "CellResult",
    "ReActAgent",
    "Split",
    "attachment_python_tool",
    "boxed_answer",
    "build_agent",
    "gaia_metric",
    "gaia_scorer",
    "load_gaia",
    "load_math",
    "load_results",
    "load_tabmwp",
    "math_equivalent",
    "math_metric",
    "metric_for",
    "results_table",
    "run_cell",
    "split",
    "tabmwp_correct",
    "tabmwp_metric",
    "trained_functions",
]
