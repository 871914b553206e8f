"""Append a benchmark's figures to benchmarks/RESULTS.md, with when and where they were measured."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def report(title: str, table: list[tuple[str, ...]], notes: list[str], width: int = 20) -> None:
    """Print the table and the notes, then append them to RESULTS.md."""
    first = max(len(row[0]) for row in table)
    for row in table:
        print(f"{row[0]:<{first}}  " + "  ".join(f"{cell:>{width}}" for cell in row[1:]))
    for line in notes:
        print(line)
    append(title, table, notes)


def append(title: str, table: list[tuple[str, ...]], notes: list[str]) -> None:
    """Add a section: a Markdown table (first row is the header) and notes, stamped with date and machine."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    lines = [f"## {title}", "", f"_{when}; {machine}; `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`_", ""]
    header, *rows = table
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *notes, ""]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by the script named in it.\n\n")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
