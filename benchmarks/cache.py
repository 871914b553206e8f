"""What toolforge's dependency-keyed cache saves, against the full re-runs other optimizers do.

100 examples; a ToolAgent with four forged functions; a scripted agent LM with a fixed simulated latency (50 ms a
call, 3 calls per example); DSPy's own LM cache on, as usual, in a fresh directory. Measured in one run, repeated
(`--repeats`, fresh caches each time; medians reported):

  (1) the first evaluation (8 threads), and the same with 1 thread (for the thread speed-up);
  (2) the same evaluation again, from the same in-memory `EvaluationCache` object;
  (2b) the same evaluation in a new Python process, from a fresh `EvaluationCache` on the same directory: what a
      second process, or a later day, reuses (records read from the disk; DSPy's LM cache off there, so that any
      request would reach the LM and be counted);
  (3) after a code-only revision of `square` (fixing a bug), which 20% of the examples call;
  (3b) then a refactor of `square` that keeps its results: the records are checked against the new code in the
      sandbox (on the arguments their runs used) and hold, so nothing re-runs;
  (4) the full re-run that a cache keyed on the whole candidate (GEPA's) or no cache (AutoGen's AgentOptimizer)
      does after that revision: every example, no cache.

Targets: (2) and (2b) make 0 LM calls in <= 2% of (1)'s time; (3) calls the LM only for the examples that called the
revised function. "LM calls" are requests that reached the (simulated) LM; "requests made" also count those
DSPy's LM cache answered (each example makes 3).

Usage: python benchmarks/cache.py [--repeats 3] [--latency 0.05] [--examples 100]
       python benchmarks/cache.py --reevaluate DIR [--examples 100]   (what (2b) runs: one JSON line of figures)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import _results  # noqa: E402
import dspy  # noqa: E402

import toolforge as tf  # noqa: E402
from tests.evaluation_fixtures import exact, unary  # noqa: E402
from tests.scripted_lm import scripted_lm, tool_agent_script  # noqa: E402

KINDS = ["square", "double", "triple", "half", "double"]  # square: 1 in 5 examples
# `square` starts with a bug (as a forged function might); the code-only revision fixes it.
FUNCTIONS = [
    unary("square", "x * x + 1", "Return the square of a number x."),
    unary("double", "x * 2"),
    unary("triple", "x * 3"),
    unary("half", "x / 2"),
]
ANSWERS = {"square": lambda x: x * x, "double": lambda x: x * 2, "triple": lambda x: x * 3, "half": lambda x: x / 2}


def choose(question: str):
    kind, number = question.split()
    return kind, {"x": float(number)}


def examples(n: int) -> list[dspy.Example]:
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        out.append(dspy.Example(question=f"{kind} {i}", answer=float(ANSWERS[kind](i))).with_inputs("question"))
    return out


def timed_run(program, data, lm, cache, threads):
    evaluator = tf.Evaluator(exact, cache=cache, num_threads=threads)
    with dspy.context(lm=lm):
        start = time.perf_counter()
        run = evaluator.evaluate(program, data)
        return run, time.perf_counter() - start


def fresh_lm(tmp: str, latency: float):
    """The scripted agent LM, with DSPy's LM cache on, as usual, in a fresh directory under `tmp`."""
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=f"{tmp}/dspy")
    return scripted_lm(tool_agent_script(choose), latency_s=latency)


def reevaluate_in_new_process(directory: str, n: int, latency: float = 0.0) -> dict[str, float]:
    """Evaluate the program of (1) on the same examples in a new Python process, from a fresh `EvaluationCache` on
    `directory`; its figures: `seconds` (the evaluation), `open_seconds` (opening the cache), `process_seconds`
    (the whole process, interpreter start and imports included), `lm_calls` (requests that reached the LM),
    `hits`, `misses`, `score`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--reevaluate", directory, "--examples", str(n)]
    command += ["--latency", str(latency)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the re-evaluating process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures | {"process_seconds": elapsed}


def reevaluate(directory: str, n: int, latency: float) -> dict[str, float]:
    """The new process's side of `reevaluate_in_new_process`: its figures, from a fresh cache object."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm, engine = scripted_lm(tool_agent_script(choose), latency_s=latency)
    program = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(FUNCTIONS))
    data = examples(n)
    start = time.perf_counter()
    with tf.EvaluationCache(directory) as cache:
        opened = time.perf_counter()
        run, seconds = timed_run(program, data, lm, cache, 8)
    return {
        "seconds": seconds,
        "open_seconds": opened - start,
        "lm_calls": engine.calls,
        "hits": run.hits,
        "misses": run.misses,
        "score": run.score,
    }


def one_repeat(n: int, latency: float, sandbox: tf.Sandbox) -> dict[str, float]:
    data = examples(n)
    revised_square = tf.ReviseFunction.of(unary("square", "x * x", FUNCTIONS[0].description))
    refactored_square = tf.ReviseFunction.of(unary("square", "(lambda y: y * y)(x)", FUNCTIONS[0].description))
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lm, engine = fresh_lm(tmp, latency)
        with tf.EvaluationCache(f"{tmp}/toolforge") as cache:
            program = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(FUNCTIONS), sandbox=sandbox)
            run1, figures["t1"] = timed_run(program, data, lm, cache, 8)
            figures["c1"] = engine.calls
            before = engine.calls
            run2, figures["t2"] = timed_run(program, data, lm, cache, 8)
            figures["c2"] = engine.calls - before
            fresh_process = reevaluate_in_new_process(f"{tmp}/toolforge", n, latency)
            assert fresh_process["score"] == run2.score, (fresh_process["score"], run2.score)
            for key in ("seconds", "open_seconds", "process_seconds", "lm_calls", "hits", "misses"):
                figures[f"fresh_{key}"] = fresh_process[key]
            program.toolset = program.toolset.apply(revised_square)
            before = engine.calls
            run3, figures["t3"] = timed_run(program, data, lm, cache, 8)
            figures["c3"] = engine.calls - before
            figures["rerun3"] = run3.misses
            figures["callers"] = sum(1 for r in run2.records if "square" in r.called)
            figures["score1"], figures["score3"] = run1.score, run3.score
            assert run1.score == run2.score < run3.score == 1.0, (run1.score, run2.score, run3.score)
            program.toolset = program.toolset.apply(refactored_square)
            before = engine.calls
            run3b, figures["t3b"] = timed_run(program, data, lm, cache, 8)
            figures["c3b"] = engine.calls - before
            figures["rerun3b"], figures["checked3b"] = run3b.misses, run3b.revalidated
            assert run3b.score == 1.0
            program.toolset = program.toolset.apply(revised_square)  # (4) runs the fixed toolset of (3)
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        lm4, engine4 = scripted_lm(tool_agent_script(choose), latency_s=latency, cache=False)
        _, figures["t4"] = timed_run(program, data, lm4, None, 8)
        figures["c4"] = engine4.calls
    with tempfile.TemporaryDirectory() as tmp:
        lm1, _ = fresh_lm(tmp, latency)
        with tf.EvaluationCache(f"{tmp}/toolforge") as cache:
            fresh = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset(FUNCTIONS), sandbox=sandbox)
            _, figures["t1_single"] = timed_run(fresh, data, lm1, cache, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--reevaluate", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reevaluate:
        print(json.dumps(reevaluate(args.reevaluate, args.examples, args.latency)))
        return
    with tf.Sandbox(workers=2) as sandbox:
        repeats = [one_repeat(args.examples, args.latency, sandbox) for _ in range(args.repeats)]
    m = {key: statistics.median(r[key] for r in repeats) for key in repeats[0]}
    rows = [
        ("evaluation", "wall time (s, median)", "vs (1)", "LM calls", "requests made", "examples run"),
        (
            "(1) first evaluation, 8 threads",
            f"{m['t1']:.3f}",
            "1",
            f"{m['c1']:.0f}",
            f"{3 * args.examples}",
            str(args.examples),
        ),
        (
            "(1) first evaluation, 1 thread",
            f"{m['t1_single']:.3f}",
            f"{m['t1_single'] / m['t1']:.2f}",
            "-",
            "-",
            str(args.examples),
        ),
        (
            "(2) same evaluation again, same in-memory cache object",
            f"{m['t2']:.4f}",
            f"{m['t2'] / m['t1']:.2%}",
            f"{m['c2']:.0f}",
            "0",
            "0",
        ),
        (
            "(2b) same evaluation in a new process, fresh cache object (disk)",
            f"{m['fresh_seconds']:.4f}",
            f"{m['fresh_seconds'] / m['t1']:.2%}",
            f"{m['fresh_lm_calls']:.0f}",
            "0" if m["fresh_misses"] == 0 else f"{3 * m['fresh_misses']:.0f}",
            f"{m['fresh_misses']:.0f}",
        ),
        (
            "(3) after a code-only revision of `square`",
            f"{m['t3']:.3f}",
            f"{m['t3'] / m['t1']:.2%}",
            f"{m['c3']:.0f}",
            f"{3 * m['rerun3']:.0f}",
            f"{m['rerun3']:.0f}",
        ),
        (
            "(3b) then a refactor of `square` that keeps its results",
            f"{m['t3b']:.3f}",
            f"{m['t3b'] / m['t1']:.2%}",
            f"{m['c3b']:.0f}",
            f"{3 * m['rerun3b']:.0f}",
            f"{m['rerun3b']:.0f}",
        ),
        (
            "(4) baseline: full re-run, no cache (GEPA / AgentOptimizer)",
            f"{m['t4']:.3f}",
            f"{m['t4'] / m['t1']:.2f}",
            f"{m['c4']:.0f}",
            f"{3 * args.examples}",
            str(args.examples),
        ),
    ]
    notes = [
        f"{m['callers']:.0f} of {args.examples} examples call `square`; {args.repeats} repeats, "
        f"{args.latency * 1000:.0f} ms simulated latency per LM call.",
        f"(2) LM calls = {m['c2']:.0f} (target 0); time = {m['t2'] / m['t1']:.2%} of (1) (target <= 2%): "
        f"{'met' if m['c2'] == 0 and m['t2'] <= 0.02 * m['t1'] else 'NOT met'}.",
        f"(2b) in a new process, from a fresh EvaluationCache on the same directory: {m['fresh_hits']:.0f} of "
        f"{args.examples} records read from the disk, LM calls = {m['fresh_lm_calls']:.0f} (target 0); evaluation "
        f"time = {m['fresh_seconds'] / m['t1']:.2%} of (1) (target <= 2%): "
        f"{'met' if m['fresh_lm_calls'] == 0 and m['fresh_seconds'] <= 0.02 * m['t1'] else 'NOT met'}; "
        f"{m['fresh_seconds'] / m['t2']:.1f}x (2)'s time. Opening the cache took {m['fresh_open_seconds']:.4f} s "
        f"more, the whole process (interpreter start and imports included) {m['fresh_process_seconds']:.2f} s.",
        f"(3) re-ran {m['rerun3']:.0f} examples, the {m['callers']:.0f} that called `square`; it made {m['c3']:.0f} LM "
        f"calls (the re-run examples' first steps were answered by DSPy's LM cache): "
        f"{'met' if m['rerun3'] == m['callers'] else 'NOT met'}.",
        f"Score {m['score1']:.2f} before the revision, {m['score3']:.2f} after.",
        f"(3b) checked {m['checked3b']:.0f} records against the refactored code in the sandbox, no LM involved; "
        f"re-ran {m['rerun3b']:.0f} examples with {m['c3b']:.0f} LM calls (without the check: the "
        f"{m['callers']:.0f} callers would re-run, {3 * m['callers']:.0f} requests).",
        f"(3)/(4): wall time {m['t3'] / m['t4']:.3f}, LM calls {m['c3'] / m['c4']:.3f}.",
        f"8 threads over 1 on (1): {m['t1_single'] / m['t1']:.2f}x speed-up.",
    ]
    _results.report("Cached evaluation (benchmarks/cache.py)", rows, notes, width=20)


if __name__ == "__main__":
    main()
