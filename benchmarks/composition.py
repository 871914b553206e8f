"""Composing trained toolsets: an agent over 1,000+ merged functions, shown all of them or the 10 most relevant.

Five toolsets of 220 functions each (as if trained on five tasks: unit conversions, statistics of lists, text
measures, dates, geometry; every function a real forged function with a description and documented arguments)
are merged with `Toolset.merge` into one of 1,100. A ToolAgent answers questions that each name what one function
does; its LM is scripted (it calls the function the question names if the prompt lists it, then finishes).

Measured in one run:
  * prompt tokens of one step's system message, and prompt tokens per example (every request of a run), with
    `max_tools=10` against showing all 1,100 (tokens with the embedded model's tokenizer, the Gemma 3 270M GGUF's
    vocabulary; characters / 4 without it); and how often the function a question needs was among the 10 shown;
  * forward cost (wall time per example with an LM that answers at once, uncached, every example a new question)
    with 1,100 functions and `max_tools=10`, against a toolset of 10 functions shown whole.

Goal (issue 16): forward cost with 1,000+ functions and k = 10 within 2x of 10 functions.

Usage: python benchmarks/composition.py [--repeats 5] [--examples 60]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import _results  # noqa: E402
import dspy  # noqa: E402

import toolforge as tf  # noqa: E402
from tests.scripted_lm import field, listed_tools, scripted_lm  # noqa: E402
from toolforge import retrieval  # noqa: E402

TASKS = {
    "convert": (
        "unit",
        [
            "meters",
            "feet",
            "inches",
            "miles",
            "kilograms",
            "pounds",
            "liters",
            "gallons",
            "celsius",
            "fahrenheit",
            "kelvin",
        ],
    ),
    "stat": (
        "list",
        ["mean", "median", "mode", "variance", "range", "minimum", "maximum", "total", "product", "count", "spread"],
    ),
    "text": (
        "word",
        [
            "vowels",
            "consonants",
            "syllables",
            "letters",
            "capitals",
            "digits",
            "spaces",
            "punctuation",
            "palindromes",
            "anagrams",
            "rhymes",
        ],
    ),
    "date": (
        "day",
        [
            "weekday",
            "leap",
            "quarter",
            "week",
            "month",
            "season",
            "holiday",
            "decade",
            "century",
            "fortnight",
            "semester",
        ],
    ),
    "shape": (
        "figure",
        [
            "circle",
            "square",
            "triangle",
            "hexagon",
            "sphere",
            "cube",
            "cone",
            "cylinder",
            "ellipse",
            "pyramid",
            "prism",
        ],
    ),
}
VARIANTS = [
    "area",
    "ratio",
    "score",
    "index",
    "weight",
    "rank",
    "scale",
    "offset",
    "limit",
    "share",
    "delta",
    "norm",
    "gap",
    "peak",
    "floor",
    "ceiling",
    "bias",
    "trend",
    "level",
    "mark",
]


def toolset_for(task: str) -> tf.Toolset:
    """220 functions of one task: every topic word with every variant."""
    noun, topics = TASKS[task]
    functions = []
    for topic in topics:
        for variant in VARIANTS:
            name = f"{task}_{topic}_{variant}"
            functions.append(
                tf.ForgedFunction(
                    name,
                    f"The {variant} of the {topic} of a {noun}, as a number.",
                    {
                        "type": "object",
                        "properties": {"x": {"type": "number", "description": f"the {noun}'s value"}},
                        "required": ["x"],
                    },
                    f"def {name}(x):\n    return x\n",
                )
            )
    return tf.Toolset(functions)


def respond(system: str, user: str) -> dict[str, Any]:
    question = field(user, "question")
    if "next_tool_call" in system:
        wanted = question.split(":")[0]
        if wanted in listed_tools(system) and "[[ ## tool_name_0 ## ]]" not in user:
            return {"next_thought": "Use it.", "next_tool_call": {"name": wanted, "args": {"x": 2.0}}}
        return {"next_thought": "Done.", "next_tool_call": {"name": "finish", "args": {}}}
    return {"reasoning": "From the observation.", "answer": field(user, "observation_0") or "0"}


def question(name: str) -> str:
    task, topic, variant = name.split("_")
    return f"{name}: what is the {variant} of the {topic} for this {TASKS[task][0]}, 2?"


def counter():
    try:
        import llama_cpp

        from toolforge.lm import default_model_path

        vocab = llama_cpp.Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
        return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False)), "Gemma 3 tokenizer"
    except Exception as exc:
        print(f"no tokenizer ({exc}); characters / 4 instead")
        return lambda text: len(text) // 4, "characters / 4"


def run(agent: tf.ToolAgent, questions: list[str]) -> tuple[list[float], list[tuple[str, str]], list[bool]]:
    lm, engine = scripted_lm(respond)
    walls, found = [], []
    with dspy.context(lm=lm):
        for q in questions:
            start = time.perf_counter()
            prediction = agent(question=q)
            walls.append(time.perf_counter() - start)
            found.append(prediction.trajectory.get("tool_name_0") == q.split(":")[0])
    return walls, engine.requests, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=60)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    merged = tf.Toolset()
    for task in TASKS:
        merged = merged.merge(toolset_for(task))
    names = merged.names
    picks = [names[(i * 97) % len(names)] for i in range(args.examples)]
    small = tf.Toolset([merged[name] for name in picks[:10]])
    count, unit = counter()

    with tf.Sandbox(workers=1) as sandbox:
        all_shown = tf.ToolAgent("question -> answer", toolset=merged, sandbox=sandbox)
        retrieving = tf.ToolAgent("question -> answer", toolset=merged, sandbox=sandbox, max_tools=10)
        ten = tf.ToolAgent("question -> answer", toolset=small, sandbox=sandbox)
        # tokens: one run per question with all shown and with k = 10
        _, requests_all, found_all = run(all_shown, [question(n) for n in picks[:10]])
        _, requests_k, found_k = run(retrieving, [question(n) for n in picks])
        step_all = statistics.median(count(s) for s, u in requests_all if "next_tool_call" in s)
        step_k = statistics.median(count(s) for s, u in requests_k if "next_tool_call" in s)
        per_example_all = sum(count(s) + count(u) for s, u in requests_all) / 10
        per_example_k = sum(count(s) + count(u) for s, u in requests_k) / len(picks)
        # forward cost: a fresh agent every repeat, so that each example ranks and renders its tools anew (the
        # index of the toolset is built first, once per agent, and timed on its own)
        cost_k, cost_ten, index_s, shared_s = [], [], [], []
        for r in range(args.repeats):
            retrieval._INDEXES.clear()  # the first agent of a toolset version builds its index
            fresh = tf.ToolAgent("question -> answer", toolset=merged, sandbox=sandbox, max_tools=10)
            start = time.perf_counter()
            fresh.tool_selection({"question": "warm up"})
            index_s.append(time.perf_counter() - start)
            copy = fresh.deepcopy()  # an optimizer's candidate: the same toolset, the index found built
            start = time.perf_counter()
            copy.tool_selection({"question": "warm up"})
            shared_s.append(time.perf_counter() - start)
            cost_k.append(statistics.median(run(fresh, [question(n) + f" ({r})" for n in picks])[0]))
            cost_ten.append(statistics.median(run(ten, [question(n) + f" ({r})" for n in picks[:10]] * 6)[0]))
    k_ms, ten_ms = statistics.median(cost_k) * 1e3, statistics.median(cost_ten) * 1e3
    rows = [
        ("measure", f"all {len(merged)} shown", "max_tools=10", "ratio", "goal"),
        (
            f"prompt tokens of a step's system message ({unit})",
            f"{step_all:,.0f}",
            f"{step_k:,.0f}",
            f"{step_k / step_all:.1%}",
            "",
        ),
        (
            "prompt tokens per example (every request)",
            f"{per_example_all:,.0f}",
            f"{per_example_k:,.0f}",
            f"{per_example_k / per_example_all:.1%}",
            "",
        ),
        (
            "the needed function was shown",
            f"{sum(found_all)}/{len(found_all)}",
            f"{sum(found_k)}/{len(found_k)}",
            "",
            "",
        ),
        (
            "forward per example, LM answering at once (ms)",
            f"10 functions: {ten_ms:.2f}",
            f"{k_ms:.2f}",
            f"{k_ms / ten_ms:.2f}x",
            "<= 2x",
        ),
        (
            "index of the toolset, built once per toolset version (ms)",
            "",
            f"{statistics.median(index_s) * 1e3:.1f}",
            "",
            "",
        ),
        (
            "an agent copy's first selection, the index shared (ms)",
            "",
            f"{statistics.median(shared_s) * 1e3:.2f}",
            "",
            "",
        ),
    ]
    notes = [
        f"{len(TASKS)} toolsets of 220 functions merged into {len(merged)}; {args.examples} questions, each naming one "
        f"function; forward cost: median over {args.repeats} repeats of the median example, each repeat with a fresh "
        "agent and new questions, so every example ranks and renders its tools anew (the per-tool lines and call "
        "models are shared, as they are between an optimizer's candidates); ranking with bm25s (`retrieval` extra).",
    ]
    _results.report(
        "Composing toolsets: 1,000+ functions with tool retrieval (benchmarks/composition.py)", rows, notes, width=18
    )


if __name__ == "__main__":
    main()
