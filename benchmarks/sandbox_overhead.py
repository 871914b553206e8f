"""Per-call wall time of a trivial forged function through a warm sandbox, beside two baselines.

Baselines, measured in the same run, interleaved in rounds so that machine noise hits all of them alike:
  (a) a direct in-process call of the same function (no isolation at all);
  (b) a fresh `python -c` subprocess per call, which is what the reference AgentOptimizer executor does
      (before it even adds its `pip install`).
The sandbox (its only mode: each call in a process of its own, forked ahead from the worker) is measured three
ways: calls in a tight loop ("back to back"), which leave the worker no time to fork the next call's process between
calls, so forking competes with the calls on this machine's cores; calls with a 2 ms pause before each (not counted);
and calls with a 20 ms pause, closer to an agent, whose calls come between LM steps of seconds (an idle machine also
takes longer to wake the processes up). Also shown: the same call through the `dspy.Tool` that `Toolset.as_tools`
builds (schema validation and call recording on top of the sandbox).

Targets: warm sandbox median <= 1 ms back to back, and >= 20x faster than a subprocess per call.

Usage: python benchmarks/sandbox_overhead.py [--rounds 5] [--calls 400] [--subprocess-calls 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

import _results

import toolforge as tf

CODE = "def add(a, b):\n    return a + b\n"
FUNCTION = tf.ForgedFunction(
    "add",
    "Return a + b.",
    {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    CODE,
)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400, help="sandbox and direct calls per round")
    parser.add_argument("--subprocess-calls", type=int, default=10, help="subprocess calls per round")
    args = parser.parse_args()

    namespace: dict = {}
    exec(compile(CODE, "<bench>", "exec"), namespace)
    direct = namespace["add"]
    keys = ("direct", "sandbox", "paced", "agent", "tool", "subprocess")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    with tf.Sandbox(workers=1) as sandbox:
        tool = tf.Toolset([FUNCTION]).as_tools(sandbox)[0]
        for i in range(50):  # warm up: start the worker
            assert sandbox.call(FUNCTION, {"a": i, "b": 1}).value == i + 1
        for _ in range(args.rounds):
            for i in range(args.calls):
                start = time.perf_counter()
                direct(a=i, b=1)
                samples["direct"].append(time.perf_counter() - start)
            schedule = [("sandbox", 0.0, args.calls), ("paced", 0.002, args.calls), ("agent", 0.02, args.calls // 4)]
            for key, pause, calls in schedule:
                for i in range(calls):
                    if pause:
                        time.sleep(pause)
                    start = time.perf_counter()
                    result = sandbox.call(FUNCTION, {"a": i, "b": 1})
                    samples[key].append(time.perf_counter() - start)
                    assert result.value == i + 1, result
            for i in range(args.calls):
                time.sleep(0.002)
                start = time.perf_counter()
                tool(a=i, b=1)
                samples["tool"].append(time.perf_counter() - start)
            for i in range(args.subprocess_calls):
                script = f"{CODE}\nimport json\nprint(json.dumps(add(**{json.dumps({'a': i, 'b': 1})})))"
                start = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                samples["subprocess"].append(time.perf_counter() - start)
                assert json.loads(out.stdout) == i + 1
        enforced = sandbox.enforced

    medians = {k: statistics.median(v) for k, v in samples.items()}
    rows = [("path", "calls", "median (ms)", "p95 (ms)", "vs back to back")]
    labels = {
        "direct": "(a) direct in-process call",
        "sandbox": "sandbox, calls back to back",
        "paced": "sandbox, 2 ms between calls",
        "agent": "sandbox, 20 ms between calls",
        "tool": "sandbox via dspy.Tool (validate + record), 2 ms between",
        "subprocess": "(b) fresh `python -c` subprocess per call",
    }
    for key in keys:
        ratio = medians[key] / medians["sandbox"]
        rows.append(
            (
                labels[key],
                str(len(samples[key])),
                f"{medians[key] * 1e3:.4f}",
                f"{percentile(samples[key], 0.95) * 1e3:.4f}",
                f"{ratio:.3g}x",
            )
        )
    verdict = []
    for key in ("sandbox", "paced", "agent"):
        speedup = medians["subprocess"] / medians[key]
        verdict.append(
            f"Sandbox ({labels[key].split(', ')[1]}) median {medians[key] * 1e3:.3f} ms (target <= 1 ms): "
            f"{'met' if medians[key] <= 1e-3 else 'NOT met'}; subprocess per call / it = {speedup:.1f}x "
            f"(target >= 20x): {'met' if speedup >= 20 else 'NOT met'}."
        )
    verdict.append(f"Protections in force during the run: {', '.join(sorted(enforced))}.")
    _results.report("Sandbox overhead per call (benchmarks/sandbox_overhead.py)", rows, verdict, width=14)


if __name__ == "__main__":
    main()
