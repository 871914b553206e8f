"""A tour of the parts under the optimizer, with no LM: forge functions, change a toolset by actions, run it sandboxed.

Everything shown runs for real: functions are validated, actions applied, code executed in locked-down worker
processes, and hostile code contained. (`make demo` is the main job: the optimizer with the embedded LM.)

Run: .venv/bin/python programs/foundation_demo.py
"""

from __future__ import annotations

import math
from pathlib import Path

import toolforge as tf


def lcm(a: int, b: int) -> int:
    """Least common multiple of two positive integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a * b // math.gcd(a, b)


COLUMN_MEAN = """
def column_mean(table, column):
    rows = [line.split('|') for line in table.strip().splitlines()]
    header = [h.strip() for h in rows[0]]
    index = header.index(column)
    values = [float(r[index]) for r in rows[1:]]
    return sum(values) / len(values)
"""

TABLE = "name | score\nana | 3\nbo | 5\ncy | 10"


def main() -> None:
    out = Path(".toolforge/demo")
    print("1. A hand-written function becomes a forged function (source, docstring and hints read for you):")
    seed = tf.Toolset([tf.ForgedFunction.from_callable(lcm)], max_functions=5)
    print(f"   {seed}")

    print("\n2. The optimizer's actions are typed; an invalid one is refused with the fix:")
    schema = {
        "type": "object",
        "properties": {"table": {"type": "string"}, "column": {"type": "string"}},
        "required": ["table", "column"],
    }
    bad = tf.AddFunction(
        name="column_mean",
        description="Mean of a column.",
        parameters=schema,
        code=COLUMN_MEAN.replace("def column_mean", "def mean_of_column"),
    )
    try:
        seed.apply([bad])
    except tf.FunctionError as exc:
        print(f"   FunctionError: {exc}")
    trained = seed.apply(
        [
            tf.AddFunction(
                name="column_mean",
                description="Mean of a numeric column of a '|'-separated table.",
                parameters=schema,
                code=COLUMN_MEAN,
            )
        ]
    )
    print(f"   accepted: {trained}")

    print("\n3. Each call runs in a process of its own (never in this process):")
    with tf.Sandbox(workers=1, timeout_s=1.0, memory_mb=128) as sandbox:
        for name, arguments in (("lcm", {"a": 4, "b": 6}), ("column_mean", {"table": TABLE, "column": "score"})):
            result = sandbox.call(trained[name], arguments)
            print(f"   {name}({arguments}) -> {result.value!r} in {result.duration_s * 1e3:.2f} ms")

        print("\n4. Hostile code is contained, and the next call still works:")
        hostile = {
            "loops forever": "while True:\n        pass",
            "opens a socket": "import socket\n    socket.create_connection(('1.1.1.1', 80))",
            "writes to /etc": "open('/etc/passwd', 'a').write('x')",
            "allocates 4 GB": "return len(bytearray(4 * 1024**3))",
        }
        for label, body in hostile.items():
            function = tf.ForgedFunction(
                "evil", "Hostile code.", {"type": "object", "properties": {}}, f"def evil():\n    {body}\n"
            )
            result = sandbox.call(function, {})
            print(f"   {label:15} -> ok={result.ok}: {result.error.splitlines()[0]}")
        print(f"   then lcm(21, 6) -> {sandbox.call(trained['lcm'], {'a': 21, 'b': 6}).value}")
        print("\n   Protections in force here:")
        for key, what in sandbox.enforced.items():
            print(f"     {key:13} {what}")

    revised = trained.apply(
        [
            tf.ReviseFunction(
                name="column_mean",
                description=trained["column_mean"].description,
                parameters=schema,
                code=COLUMN_MEAN.replace("sum(values) / len(values)", "round(sum(values) / len(values), 4)"),
            )
        ]
    )
    print("\n5. A revision, as the optimizer will propose it, and its diff:")
    print("   " + str(trained.diff(revised)).replace("\n", "\n   "))
    path = revised.save(out / "toolset.json")
    print(f"\n6. Saved the toolset (code included) to {path}; fingerprint {revised.fingerprint[:16]}…")
    agent = tf.ToolAgent("table, question -> answer: float", toolset=revised, tools=[tf.python_tool()])
    print("   A ToolAgent holding it offers its LM these tools:", ", ".join(agent.current_tools()))
    print("\nNext: `make demo` trains these functions with the embedded LM; `toolforge --help` for the rest.")


if __name__ == "__main__":
    main()
