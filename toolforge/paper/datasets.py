"""Loaders for the paper's data sets in their published formats, read from a local path (nothing is downloaded).

- MATH (Hendrycks et al.): `ROOT/{train,test}/<type>/<id>.json`, each `{"problem", "level": "Level 3", "type",
  "solution"}`; the answer is the last `\\boxed{...}` of the solution.
- TabMWP (Lu et al.): `ROOT/problems_{train,dev,test}.json`, one object mapping ids to problems with `table`
  (pipe-separated text), `table_title`, `question`, `choices` (a list or null), `answer`, `ans_type`, `unit`, `grade`.
- GAIA (Mialon et al.): a split's folder holding `metadata.jsonl` (`task_id`, `Question`, `Level`, `Final answer`,
  `file_name`) and the attached files beside it.

Every loader returns `dspy.Example`s in a fixed order (by file name or id), so that sampling with a seed picks the
same problems on every machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dspy

from toolforge._io import read_json
from toolforge.errors import ToolforgeError

__all__ = ["MATH_TYPES", "boxed_answer", "load_gaia", "load_math", "load_tabmwp"]

logger = logging.getLogger(__name__)

_UNMODIFIED = "point at an unmodified copy of the data set"

# MATH's problem types: its folder names, with the names the paper's table uses.
MATH_TYPES = {
    "prealgebra": "Prealgebra",
    "algebra": "Algebra",
    "intermediate_algebra": "Intermediate Algebra",
    "geometry": "Geometry",
    "counting_and_probability": "Counting & Probability",
    "precalculus": "Precalculus",
    "number_theory": "Number Theory",
}


def _levels(levels: Iterable[int] | None) -> set[int] | None:
    return None if levels is None else set(levels)


# --------------------------------------------------------------------------------------------------- MATH
def boxed_answer(solution: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in a MATH solution, braces matched; None if none."""
    start = max(solution.rfind("\\boxed"), solution.rfind("\\fbox"))
    if start < 0:
        return None
    if solution.startswith("\\boxed ", start):  # `\boxed 5`: the answer runs to the closing `$`
        return solution[start + len("\\boxed ") :].split("$", 1)[0].strip()
    brace = solution.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for index in range(brace, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[index], 0)
        if depth == 0:
            return solution[brace + 1 : index]
    return None


def load_math(
    root: str | os.PathLike[str], split: str, problem_type: str, *, levels: Iterable[int] | None = None
) -> list[dspy.Example]:
    """MATH problems of one type from one split, ordered by file name.

    Args:
        root: The MATH folder, holding `train/` and `test/`.
        split: "train" or "test".
        problem_type: A folder name of MATH's types (`number_theory`, ...; see `MATH_TYPES`).
        levels: Keep only these difficulty levels (1 to 5). Default: all.

    Returns:
        Examples with input `problem` and label `answer` (the boxed answer); `level`, `type`, `solution` and
        `source` (the file) beside them.

    Raises:
        ToolforgeError: an unknown type, a missing folder, a file that is not a MATH problem (each named).
    """
    if problem_type not in MATH_TYPES:
        raise ToolforgeError(
            f"MATH has no problem type {problem_type!r}; choose one of {', '.join(MATH_TYPES)} (its folder names)"
        )
    folder = Path(root) / split / problem_type
    if not folder.is_dir():
        raise ToolforgeError(
            f"MATH folder {str(folder)!r} does not exist; point at the MATH data set's root, which holds train/ and "
            "test/ with one folder per problem type"
        )
    wanted = _levels(levels)
    examples = []
    for path in sorted(folder.glob("*.json")):
        row = read_json(path, "MATH problem", _UNMODIFIED)
        if not isinstance(row, dict) or not all(k in row for k in ("problem", "level", "solution")):
            raise ToolforgeError(
                f"{str(path)!r} is not a MATH problem (it needs 'problem', 'level' and 'solution'); point at the "
                "MATH data set"
            )
        level = _math_level(row["level"])
        if wanted is not None and level not in wanted:
            continue
        answer = boxed_answer(row["solution"])
        if answer is None:  # a handful of MATH solutions box nothing; they cannot be scored
            logger.warning("skipping %s: its solution has no \\boxed{} answer", path)
            continue
        examples.append(
            dspy.Example(
                problem=row["problem"],
                answer=answer,
                level=level,
                type=row.get("type", MATH_TYPES[problem_type]),
                solution=row["solution"],
                source=str(path),
            ).with_inputs("problem")
        )
    if not examples:
        raise ToolforgeError(
            f"no MATH problems in {str(folder)!r}" + (f" at levels {sorted(wanted)}" if wanted else "")
        )
    return examples


def _math_level(level: Any) -> int | None:
    """`"Level 3"` -> 3; MATH marks a few problems `"Level ?"`, which no level filter keeps."""
    text = str(level).removeprefix("Level").strip()
    return int(text) if text.isdigit() else None


# ------------------------------------------------------------------------------------------------- TabMWP
def load_tabmwp(root: str | os.PathLike[str], split: str, *, grades: Iterable[int] | None = None) -> list[dspy.Example]:
    """TabMWP problems of one split, ordered by id.

    Args:
        root: The folder holding `problems_train.json`, `problems_dev.json`, `problems_test.json`.
        split: "train", "dev" or "test".
        grades: Keep only these school grades (1 to 8). Default: all.

    Returns:
        Examples with inputs `table` (its title, then the pipe-separated table) and `question` (with the choices,
        when there are some) and label `answer`; `choices`, `unit`, `ans_type`, `grade` and `id` beside them.

    Raises:
        ToolforgeError: a missing file, or one that is not TabMWP's (each named).
    """
    path = Path(root) / f"problems_{split}.json"
    if not path.is_file():
        raise ToolforgeError(
            f"TabMWP file {str(path)!r} does not exist; point at the folder holding problems_train.json and "
            "problems_test.json (TabMWP's data/tabmwp)"
        )
    problems = read_json(path, "TabMWP file", _UNMODIFIED)
    if not isinstance(problems, dict):
        raise ToolforgeError(f"{str(path)!r} is not TabMWP's problems file (an object of problems by id)")
    wanted = _levels(grades)
    examples = []
    for pid in sorted(problems, key=lambda k: (len(k), k)):
        row = problems[pid]
        if not isinstance(row, dict) or not all(k in row for k in ("table", "question", "answer")):
            raise ToolforgeError(
                f"{str(path)!r}, problem {pid!r}: not a TabMWP problem (it needs 'table', 'question' and 'answer')"
            )
        if wanted is not None and row.get("grade") not in wanted:
            continue
        choices = [str(c) for c in row.get("choices") or []]
        question = row["question"] + (f"\nChoose from: {'; '.join(choices)}." if choices else "")
        title = row.get("table_title")
        examples.append(
            dspy.Example(
                table=(f"{title}\n" if title else "") + row["table"],
                question=question,
                answer=str(row["answer"]),
                choices=choices,
                unit=row.get("unit") or "",
                ans_type=row.get("ans_type", ""),
                grade=row.get("grade"),
                id=pid,
            ).with_inputs("table", "question")
        )
    if not examples:
        raise ToolforgeError(
            f"no TabMWP problems in {str(path)!r}" + (f" of grades {sorted(wanted)}" if wanted else "")
        )
    return examples


# --------------------------------------------------------------------------------------------------- GAIA
def load_gaia(root: str | os.PathLike[str], *, levels: Iterable[int] | None = None) -> list[dspy.Example]:
    """GAIA questions of one split's folder, ordered by task id.

    Args:
        root: The split's folder (e.g. `2023/validation`), holding `metadata.jsonl` and the attached files. Only a
            split with published answers can be scored: the validation split.
        levels: Keep only these levels (1 to 3). Default: all.

    Returns:
        Examples with inputs `question` and `attachment` (the attached file's name, or "" when there is none) and
        label `answer`; `level`, `task_id` and `attachment_path` (where the file is on this machine) beside them.

    Raises:
        ToolforgeError: a missing folder or file, a line that is not a GAIA question, an attachment that is not in
            the folder, or hidden answers (each named).
    """
    folder = Path(root)
    path = folder / "metadata.jsonl"
    if not path.is_file():
        raise ToolforgeError(
            f"GAIA file {str(path)!r} does not exist; point at a split's folder (e.g. GAIA/2023/validation), which "
            "holds metadata.jsonl and the attached files"
        )
    wanted = _levels(levels)
    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolforgeError(f"cannot read {str(path)!r}: {exc}; check the data path") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ToolforgeError(
                f"{path}:{number}: not valid JSON ({exc.msg}); point at GAIA's metadata.jsonl"
            ) from None
        if not isinstance(row, dict) or not all(k in row for k in ("task_id", "Question", "Final answer")):
            raise ToolforgeError(
                f"{path}:{number}: not a GAIA question (it needs 'task_id', 'Question' and 'Final answer')"
            )
        if str(row["Final answer"]).strip() in ("", "?"):
            raise ToolforgeError(
                f"{path}:{number}: the answer of task {row['task_id']} is hidden ({row['Final answer']!r}), as in "
                "GAIA's test split; point at the validation split, whose answers are published"
            )
        level = int(row["Level"]) if str(row.get("Level", "")).isdigit() else None
        if wanted is not None and level not in wanted:
            continue
        name = row.get("file_name") or ""
        attachment_path = ""
        if name:
            attached = folder / name
            if Path(name).name != name or not attached.is_file():
                raise ToolforgeError(
                    f"{path}:{number}: attached file {name!r} is not in {str(folder)!r}; copy the split's files "
                    "beside metadata.jsonl"
                )
            attachment_path = str(attached)
        examples.append(
            dspy.Example(
                question=row["Question"],
                attachment=name,
                answer=str(row["Final answer"]),
                level=level,
                task_id=row["task_id"],
                attachment_path=attachment_path,
            ).with_inputs("question", "attachment")
        )
    examples.sort(key=lambda e: e.task_id)
    if not examples:
        at = f" at levels {sorted(wanted)}" if wanted else ""
        raise ToolforgeError(f"no GAIA questions in {str(path)!r}{at}; check the folder and the levels")
    return examples
