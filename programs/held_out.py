"""Score a compile's program as built (untrained, or seeded) and trained on held-out examples; record both.

    python -m programs.held_out RUN_DIR programs/table_agent.py --lm local --limit 5 --threads 2

A compile never sees its program's test split, so its report cannot hold the score there. This evaluates the
program as `build_program()` makes it (its seed functions only) and with `RUN_DIR/toolset-final.json`, on the first
`--limit` examples of `load_dataset("test")`, prints both, and records them in `RUN_DIR/report.json`
(`toolforge.report.record_held_out`), where `toolforge report RUN_DIR` shows them. Evaluations come from the
cache that `toolforge evaluate` uses, so a second run costs nothing. `make demo` runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dspy
from dspy.primitives.module import set_attribute_by_name

import toolforge as tf
from toolforge.cli import load_program
from toolforge.program import find_toolset
from toolforge.report import record_held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the compile's run directory (its --out)")
    parser.add_argument("program", help="the PROGRAM the compile trained (a file or package.module:attr)")
    parser.add_argument("--lm", default="local", help="the agent's LM, as for toolforge compile (default: local)")
    parser.add_argument("--limit", type=int, default=5, help="held-out examples to score (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    loaded = load_program(args.program)
    if loaded.load_dataset is None:
        raise tf.ToolforgeError(f"{loaded.name!r} has no load_dataset(split) to take held-out examples from")
    examples = loaded.load_dataset("test", limit=args.limit)
    lm = tf.resolve_lm(args.lm, role="--lm")
    # as `toolforge evaluate` sets it up, so that the two share their cached records
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter() if isinstance(lm, tf.LocalLM) else dspy.settings.adapter)
    evaluator = tf.Evaluator(loaded.metric, cache=tf.EvaluationCache(), num_threads=args.threads)

    given, trained = loaded.build(), loaded.build()
    name, seeds = find_toolset(trained)
    set_attribute_by_name(trained, name, tf.Toolset.load(Path(args.run_dir) / "toolset-final.json"))
    before = evaluator.evaluate(given, examples).score
    after = evaluator.evaluate(trained, examples).score
    label = "seeded" if len(seeds) else "untrained"
    print(f"held-out ({len(examples)} examples of load_dataset('test')): {label} {before:.3f}, trained {after:.3f}")
    source = f"load_dataset('test'), first {len(examples)}"
    record_held_out(args.run_dir, before=before, after=after, examples=len(examples), source=source)
    print(f"recorded in {Path(args.run_dir) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
