"""What checking an answer costs: math-verify (MATH), TabMWP's rules and GAIA's scorer, beside a float compare.

The paper's protocol scores every test problem twice (untrained, trained) and every training problem at every
step, so the metric runs once per example evaluated; this measures it per answer, against the plain float compare
the ready programs use (`programs._common.numeric_metric`), in the same run. math-verify is timed in the main
thread (its `signal.alarm` timeout on) and in a worker thread (off, as in a threaded evaluation). Each figure is the
median over `--repeats` passes of the mean time per answer over a fixed set of answer pairs (right and wrong,
equivalent forms). math-verify keeps a parse cache (`functools.lru_cache`); it is cleared before every pass, so no
pass is served by the one before.

Usage: python benchmarks/answer_checking.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import _results  # noqa: E402
import dspy  # noqa: E402
import math_verify.parser  # noqa: E402

from programs._common import numeric_metric  # noqa: E402
from toolforge import paper  # noqa: E402

MATH_PAIRS = [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/3"), ("2\\sqrt{3}", "\\sqrt{12}"), ("2\\sqrt{3}", "3.46"),
    ("[2,5)", "[2, 5)"), ("[2,5)", "(2, 5)"), ("x^2+2x+1", "(x+1)^2"), ("36", "36"), ("36", "35"),
    ("\\dfrac{3}{4}", "The answer is $\\frac{3}{4}$."),
]  # fmt: skip
TABMWP_PAIRS = [("3.75", "$3.75"), ("1/4", "0.25"), ("odd", "the number is odd"), ("12", "13"), ("1,000", "1000")]
GAIA_PAIRS = [("13,312", "13312"), ("2; 3; 5", "2, 3, 5"), ("  PARIS. ", "Paris"), ("New-York", "new york")]


def per_answer_s(check: Callable[[str, str], object], pairs: list[tuple[str, str]]) -> float:
    math_verify.parser.parse_latex_cached.cache_clear()
    math_verify.parser.parse_expr_cached.cache_clear()
    start = time.perf_counter()
    for gold, predicted in pairs:
        check(gold, predicted)
    return (time.perf_counter() - start) / len(pairs)


def float_compare(gold: str, predicted: str) -> bool:
    example = dspy.Example(answer=float(gold.replace(",", "")))
    return numeric_metric(example, dspy.Prediction(answer=predicted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    numbers = [(g, p) for g, p in TABMWP_PAIRS + GAIA_PAIRS if g.replace(",", "").replace(".", "").isdigit()]
    cases: dict[str, Callable[[], float]] = {
        "float compare (baseline)": lambda: per_answer_s(float_compare, numbers),
        "math-verify, main thread": lambda: per_answer_s(paper.math_equivalent, MATH_PAIRS),
        "math-verify, worker thread": lambda: (
            ThreadPoolExecutor(1).submit(per_answer_s, paper.math_equivalent, MATH_PAIRS).result()
        ),
        "TabMWP rules": lambda: per_answer_s(lambda g, p: paper.tabmwp_correct(g, p), TABMWP_PAIRS),
        "GAIA scorer": lambda: per_answer_s(lambda g, p: paper.gaia_scorer(p, g), GAIA_PAIRS),
    }
    paper.math_equivalent("1", "1")  # imports SymPy and the LaTeX grammar once, outside the timings
    medians = {}
    for name, run in cases.items():
        medians[name] = statistics.median(run() for _ in range(args.repeats))
    base = medians["float compare (baseline)"]
    table = [("checker", "median per answer (ms)", "vs float compare")]
    table += [(name, f"{value * 1e3:.3f}", f"{value / base:.0f}x") for name, value in medians.items()]
    notes = [
        f"Medians of {args.repeats} passes; answer pairs: {len(MATH_PAIRS)} MATH, {len(TABMWP_PAIRS)} TabMWP, "
        f"{len(GAIA_PAIRS)} GAIA, {len(numbers)} numeric for the baseline. An agent's run of one example costs seconds "
        "of LM time (benchmarks/local_lm.py), so even math-verify's check is a small part of an evaluation.",
    ]
    _results.report("Answer checking for the paper's data sets (benchmarks/answer_checking.py)", table, notes, 24)


if __name__ == "__main__":
    main()
