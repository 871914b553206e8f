"""The embedded LM here, and the demo built on it.

1. Prompt and generation speed of Gemma 3 270M (Q4_K_M) through llama.cpp: tokens per second, medians of
   `--repeats` fresh prompts; generation both free and under a JSON-schema constraint (what DSPy's JSONAdapter asks
   for). Beside them, the figures recorded in ../shared/NOTES.md for this kind of machine.
2. The demo (`make demo` without the install): compile the table agent with the embedded LM, evaluate the untrained
   and the trained agent on held-out problems, write the report; in fresh caches. Wall time, LM calls per step.
3. The same compile again, into a new run directory with the same caches: its wall time, LM calls, and the cache
   hit rate of its evaluations.
4. An upper bound on what forging can buy this agent: the embedded agent on `--upper-bound` held-out problems with
   correct functions written by hand (what a strong proposer would forge), beside the untrained agent on the same
   problems. It tells whether the agent's LM, not only the proposer's, limits the demo.

Usage: python benchmarks/local_lm.py [--repeats 3] [--upper-bound 12]
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
sys.path[:0] = [str(ROOT / "benchmarks")]

import _results  # noqa: E402

NOTES_PROMPT_TPS, NOTES_GEN_TPS = 700.0, 85.0
COMPILE = [
    "compile",
    "programs/table_agent.py",
    "--lm",
    "local",
    "--epochs",
    "2",
    "--limit",
    "4",
    "--trials",
    "1",
    "--max-actions",
    "1",
    "--trajectory-budget",
    "3000",
    "--threads",
    "2",
    "--quiet",
]
EVALUATE = ["evaluate", "programs/table_agent.py", "--lm", "local", "--limit", "5", "--threads", "2", "--quiet"]


def speed(repeats: int) -> dict[str, float]:
    import llama_cpp

    from toolforge.lm import default_model_path

    llm = llama_cpp.Llama(model_path=str(default_model_path()), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    schema = {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "answer": {"type": "number"}},
        "required": ["thought", "answer"],
    }
    prompt_tps, gen_tps, json_tps = [], [], []
    for i in range(repeats):
        system = f"Session {i}. " + "You answer questions about small tables of numbers, carefully. " * 70
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "Write a short story."}]
        start = time.perf_counter()
        out = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
        prompt_tps.append(out["usage"]["prompt_tokens"] / (time.perf_counter() - start))
        # the prompt is now in the KV cache: what follows is generation
        start = time.perf_counter()
        out = llm.create_chat_completion(messages=messages, max_tokens=128, temperature=0)
        gen_tps.append(out["usage"]["completion_tokens"] / (time.perf_counter() - start))
        start = time.perf_counter()
        out = llm.create_chat_completion(
            messages=messages, max_tokens=128, temperature=0, response_format={"type": "json_object", "schema": schema}
        )
        json_tps.append(out["usage"]["completion_tokens"] / (time.perf_counter() - start))
    llm.close()
    return {
        "prompt": statistics.median(prompt_tps),
        "gen": statistics.median(gen_tps),
        "json": statistics.median(json_tps),
        "prompt_tokens": out["usage"]["prompt_tokens"],
    }


# ---- correct functions for the table problems, written by hand: the upper bound of part 4
def column_stat(table: str, column: str, stat: str) -> float:
    """A statistic of one numeric column of the table: stat is 'sum', 'mean', 'median', 'range', 'max' or 'min'.
    The table has one row per line, cells separated by ' | ', and a header line first."""
    import statistics

    rows = [[cell.strip() for cell in line.split("|")] for line in table.strip().splitlines()]
    index = [h.lower() for h in rows[0]].index(column.strip().lower())
    values = [float(r[index].lstrip("$")) for r in rows[1:]]
    stats = {"sum": sum, "mean": statistics.mean, "median": statistics.median, "max": max, "min": min}
    value = max(values) - min(values) if stat == "range" else stats[stat](values)
    return round(value, 2)


def count_above(table: str, column: str, threshold: float) -> int:
    """How many rows of the table have a value above `threshold` in `column`.
    The table has one row per line, cells separated by ' | ', and a header line first."""
    rows = [[cell.strip() for cell in line.split("|")] for line in table.strip().splitlines()]
    index = [h.lower() for h in rows[0]].index(column.strip().lower())
    return sum(1 for r in rows[1:] if float(r[index].lstrip("$")) > threshold)


def row_value(table: str, row: str, column: str) -> float:
    """The number in `column` of the row whose first cell is `row` (e.g. a city's visitors, an item's price).
    The table has one row per line, cells separated by ' | ', and a header line first."""
    rows = [[cell.strip() for cell in line.split("|")] for line in table.strip().splitlines()]
    index = [h.lower() for h in rows[0]].index(column.strip().lower())
    for r in rows[1:]:
        if r[0].lower() == row.strip().lower():
            return float(r[index].lstrip("$"))
    raise ValueError(f"no row {row!r}; rows: {[r[0] for r in rows[1:]]}")


def rate_of_change(table: str, column: str, start: int, end: int) -> float:
    """The change per year of `column` between the years `start` and `end` (first column: the year), rounded to
    two decimals. The table has one row per line, cells separated by ' | ', and a header line first."""
    rows = [[cell.strip() for cell in line.split("|")] for line in table.strip().splitlines()]
    index = [h.lower() for h in rows[0]].index(column.strip().lower())
    by_year = {int(r[0]): float(r[index]) for r in rows[1:]}
    return round((by_year[end] - by_year[start]) / (end - start), 2)


def upper_bound(problems: int, env: dict[str, str], tmp: str) -> tuple[str, str]:
    """The untrained agent and the agent with the hand-written functions, on the same held-out problems."""
    import toolforge as tf

    toolset = tf.Toolset(
        [tf.ForgedFunction.from_callable(f) for f in (column_stat, count_above, row_value, rate_of_change)]
    )
    path = Path(tmp) / "hand-written.json"
    toolset.save(path)
    common = [*EVALUATE[:-5], "--limit", str(problems), *EVALUATE[-3:]]
    _, untrained = toolforge(common, env)
    _, written = toolforge([*common, "--toolset", str(path)], env)
    return untrained.strip(), written.strip()


def toolforge(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "toolforge.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"toolforge {' '.join(args)} failed:\n{result.stderr}")
    return time.perf_counter() - start, result.stdout


def demo(problems: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DSPY_CACHEDIR": f"{tmp}/dspy", "TOOLFORGE_CACHE_DIR": f"{tmp}/toolforge"}
        first = Path(tmp) / "run1"
        t_compile, _ = toolforge([*COMPILE, "--out", str(first)], env)
        t_untrained, out_untrained = toolforge(EVALUATE, env)
        t_trained, out_trained = toolforge([*EVALUATE, "--toolset", str(first / "toolset-final.json")], env)
        t_report, _ = toolforge(["report", str(first)], env)
        report = json.loads((first / "report.json").read_text())
        second = Path(tmp) / "run2"
        t_again, _ = toolforge([*COMPILE, "--out", str(second)], env)
        again = json.loads((second / "report.json").read_text())
        bound = upper_bound(problems, env, tmp) if problems else None
    hits = sum(s["cache_hits"] for s in again["steps"])
    looked_up = hits + sum(s["cache_misses"] for s in again["steps"])
    return {
        "compile": t_compile,
        "demo": t_compile + t_untrained + t_trained + t_report,
        "steps": [(s["step"], s["agent_lm_calls"], s["proposer_lm_calls"], s["outcome"]) for s in report["steps"]],
        "baseline_calls": report["agent_lm_calls"] - sum(s["agent_lm_calls"] for s in report["steps"]),
        "scores": (report["initial_score"], report["best_score"]),
        "untrained": out_untrained.strip(),
        "trained": out_trained.strip(),
        "again": t_again,
        "again_calls": again["agent_lm_calls"] + again["proposer_lm_calls"],
        "hit_rate": hits / looked_up if looked_up else 0.0,
        "upper_bound": bound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upper-bound", type=int, default=12, help="held-out problems for part 4 (0: skip it)")
    args = parser.parse_args()
    s = speed(args.repeats)
    d = demo(args.upper_bound)
    per_step = "; ".join(f"step {n}: {a} agent + {p} proposer ({o})" for n, a, p, o in d["steps"])  # type: ignore[attr-defined]
    rows = [
        ("measure", "here", "NOTES.md (same kind of machine)"),
        (
            f"prompt processing, tokens/s (~{s['prompt_tokens']} token prompts)",
            f"{s['prompt']:.0f}",
            f"{NOTES_PROMPT_TPS:.0f}",
        ),
        ("generation, tokens/s (free text)", f"{s['gen']:.1f}", f"{NOTES_GEN_TPS:.0f}"),
        ("generation, tokens/s (JSON-schema constrained)", f"{s['json']:.1f}", "-"),
        ("demo wall time (compile + 2 evaluations + report), s", f"{d['demo']:.0f}", "target <= 600 with install"),
        ("  of which the compile, s", f"{d['compile']:.0f}", "-"),
        ("same compile again, new run dir, same caches: wall s", f"{d['again']:.1f}", "-"),
        ("  its LM calls / evaluation cache hit rate", f"{d['again_calls']} / {d['hit_rate']:.0%}", "-"),
    ]
    notes = [
        f"LM calls: baseline {d['baseline_calls']} agent; {per_step}.",
        f"Train score {d['scores'][0]:.3f} -> {d['scores'][1]:.3f} (4 examples, 2 steps).",  # type: ignore[index]
        f"Held-out: {d['untrained']}",
        f"Held-out: {d['trained']}",
        "Install (building llama-cpp-python) took about 4 minutes on this machine when measured by hand; "
        "it is not part of these figures.",
    ]
    if d["upper_bound"]:
        untrained, written = d["upper_bound"]  # type: ignore[misc]
        notes += [
            "Upper bound, the same held-out problems: the embedded agent with correct functions written by hand "
            "(column_stat, count_above, row_value, rate_of_change), beside it untrained:",
            f"  {written}",
            f"  {untrained}",
        ]
    _results.report("Embedded LM and the demo (benchmarks/local_lm.py)", rows, notes, width=30)


if __name__ == "__main__":
    main()
