"""The `toolforge` command: compile, evaluate, show, diff, cache and report.

    toolforge compile programs/table_agent.py --epochs 3 --out runs/table
    toolforge evaluate programs/table_agent.py --toolset runs/table/toolset-final.json
    toolforge report runs/table

PROGRAM is a Python file (`programs/table_agent.py`) or `package.module:attr`. Its module provides the program
(`build_program()`, or `attr`: a dspy.Module or a function returning one), `metric(example, prediction,
trace=None)`, and optionally `load_dataset(split, limit=None)` for when no data file is given. An error a user can
make prints one line and exits with status 2; an interrupted compile resumes when the same command runs again.
`diff` exits 1 when the toolsets differ and 0 when they are equal, as diff(1) does. `--json` (show, diff, report,
cache stats) prints one JSON object whose `format` and `version` name its layout (README, "JSON output").
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from toolforge import __version__
from toolforge._text import one_line, printable
from toolforge.cache import CacheError, EvaluationCache, discard_cache_files
from toolforge.data import load_jsonl
from toolforge.errors import ToolforgeError, ToolsetError
from toolforge.evaluate import Evaluator
from toolforge.function import ForgedFunction
from toolforge.lm import LocalLM, resolve_lm
from toolforge.optimizer import AUTO_PRESETS, FunctionOptimizer, OptimizationReport
from toolforge.program import find_toolset
from toolforge.proposer import Proposer, render_record
from toolforge.toolset import Toolset

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _out(text: str = "") -> None:
    """Print a line; control characters other than newline and tab are shown escaped (`\\x1b`), so that text from
    a file (a function's description or code, a trajectory) cannot drive the terminal."""
    sys.stdout.write(printable(text) + "\n")
    sys.stdout.flush()


JSON_VERSION = 1  # of every `--json` layout; a change that removes or renames a key bumps it


def _out_json(kind: str, data: dict[str, Any]) -> None:
    """Print `data` as one JSON object headed by its layout's name and version (ASCII only: JSON escapes control
    characters, so nothing in it drives the terminal)."""
    sys.stdout.write(json.dumps({"format": f"toolforge.{kind}", "version": JSON_VERSION, **data}, indent=2) + "\n")
    sys.stdout.flush()


class _PrintableFormatter(logging.Formatter):
    """Log lines with their control characters escaped, as `_out` prints them."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


# ------------------------------------------------------------------------------------------------ programs
@dataclass
class LoadedProgram:
    name: str
    build: Callable[[], dspy.Module]
    metric: Callable[..., Any]
    load_dataset: Callable[..., list[dspy.Example]] | None

    def fields(self, program: dspy.Module) -> tuple[list[str], str]:
        signature = getattr(program, "signature", None)
        if signature is None:
            predictors = program.named_predictors()
            if not predictors:
                raise ToolforgeError(f"program {self.name!r} has no signature and no predictors")
            signature = predictors[0][1].signature
        return list(signature.input_fields), next(iter(signature.output_fields))


def load_program(spec: str) -> LoadedProgram:
    """The program, metric and dataset loader named by PROGRAM (a .py file or `package.module:attr`)."""
    attr = None
    if spec.endswith(".py") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise ToolforgeError(f"program file {spec!r} does not exist; give a .py file or package.module:attr")
        module = _import_file(path)
        name = path.stem
    else:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ToolforgeError(
                f"cannot import program module {module_name!r} ({exc}); check PROGRAM, and run the command from the "
                "directory that holds the package (or install it)"
            ) from None
        except Exception as exc:
            raise ToolforgeError(f"cannot load program module {module_name!r}: {type(exc).__name__}: {exc}") from None
        name = spec
    if attr:
        target = getattr(module, attr, None)
        if target is None:
            raise ToolforgeError(f"module {module.__name__!r} has no {attr!r}")
        build = (lambda: target) if isinstance(target, dspy.Module) else target
    else:
        build = getattr(module, "build_program", None)
        if build is None:
            raise ToolforgeError(f"{spec!r} defines no build_program(); add one, or name the program as module:attr")
    metric = getattr(module, "metric", None)
    if not callable(metric):
        raise ToolforgeError(f"{spec!r} defines no metric(example, prediction, trace=None); add one")
    return LoadedProgram(name=name, build=build, metric=metric, load_dataset=getattr(module, "load_dataset", None))


def _import_file(path: Path) -> Any:
    path = path.resolve()
    root = path.parent
    parts = [path.stem]
    while (root / "__init__.py").exists():  # a module inside a package: import it by its dotted name
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module(".".join(parts))
    except Exception as exc:
        raise ToolforgeError(f"cannot load program {str(path)!r}: {type(exc).__name__}: {exc}") from None


def _build(loaded: LoadedProgram) -> dspy.Module:
    program = loaded.build()
    if not isinstance(program, dspy.Module):
        raise ToolforgeError(f"{loaded.name!r} built a {type(program).__name__}, not a dspy.Module")
    return program


def _dataset(
    loaded: LoadedProgram,
    program: dspy.Module,
    path: str | None,
    split: str,
    args: argparse.Namespace,
    limit: int | None,
) -> list[dspy.Example]:
    fields, label = loaded.fields(program)
    if path:
        input_keys = [k.strip() for k in args.input_keys.split(",")] if args.input_keys else None
        try:
            return load_jsonl(
                path, input_keys=input_keys, label_key=args.label_key, fields=fields, label=label, limit=limit
            )
        except ToolforgeError as exc:  # the library names its parameters; the command, its flags
            fix = str(exc).replace("load_jsonl(input_keys=..., label_key=...)", "--input-keys and --label-key")
            raise ToolforgeError(fix) from None
    if loaded.load_dataset is None:
        raise ToolforgeError(f"{loaded.name!r} has no load_dataset(split); pass a JSONL file (--train / --data)")
    try:
        examples = list(loaded.load_dataset(split, limit=limit))
    except ToolforgeError:
        raise
    except Exception as exc:  # the user's loader: its error, with the split that was asked for
        raise ToolforgeError(
            f"{loaded.name!r}: load_dataset({split!r}) raised {type(exc).__name__}: {one_line(str(exc), 200)}; check "
            "the split's name, or pass a JSONL file"
        ) from None
    if not examples:
        raise ToolforgeError(f"{loaded.name!r}: load_dataset({split!r}) returned no examples; name another split")
    return examples


def _configure_lm(spec: str | None, api_base: str | None) -> dspy.BaseLM:
    lm = resolve_lm(spec or dspy.settings.lm or "local", role="--lm", api_base=api_base)
    # a small local model needs constrained decoding, which DSPy asks for through its JSON adapter
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter() if isinstance(lm, LocalLM) else dspy.settings.adapter)
    return lm


def _cache(args: argparse.Namespace) -> EvaluationCache:
    try:
        return EvaluationCache(args.cache_dir) if args.cache_dir else EvaluationCache()
    except CacheError as exc:
        raise ToolforgeError(_cache_fix(exc)) from None


def _cache_fix(exc: CacheError) -> str:
    """The library's account of what is wrong with a cache directory, with the fix on the command line."""
    where = str(exc.directory)
    if exc.corrupt:
        fix = (
            f"run `toolforge cache clear --cache-dir {where}` (or delete that directory): it holds only cached "
            "evaluations, which are made again as needed"
        )
    else:
        fix = exc.fix.replace("EvaluationCache(directory)", "--cache-dir")
    return f"{exc.problem}; {fix}"


# The library's messages name its Python parameters; on the command line, the flags that set them are named too.
_FLAGS = (
    ("another log_dir", "another log_dir (--out)"),
    ("resume=False", "resume=False (--restart)"),
    ("compile(..., toolset='<name>')", "compile(..., toolset='<name>'), or --toolset-name on the command line"),
)


# The settings a refused resume names (`name: old -> new`), and the flags that set them.
_SETTING_FLAGS = {
    "max_actions_per_step": "--max-actions",
    "max_trials": "--trials",
    "patience": "--patience",
    "accept_ties": "--accept-ties / --no-accept-ties",
    "prune_unused": "--no-prune",
    "prune_seeds": "--prune-seeds",
    "min_net_flips": "--min-net-flips",
    "significance": "--significance",
    "rollback": "--no-rollback",
    "progressive": "--no-progressive",
    "seed": "--seed",
    "trajectory_budget_chars": "--trajectory-budget",
    "max_functions": "--max-functions",
    "proposer_lm": "--proposer-lm",
    "trainset": "--train, --limit",
    "valset": "--val, --val-split, --val-limit",
}


def _with_flags(message: str) -> str:
    for python, flag in _FLAGS:
        message = message.replace(python, flag)
    if "holds a checkpoint of a different compile" in message:
        names = "|".join(_SETTING_FLAGS)
        message = re.sub(rf"\b({names}): ", lambda m: f"{m[1]} ({_SETTING_FLAGS[m[1]]}): ", message)
    return message


def _set_toolset(program: dspy.Module, toolset: Toolset, name: str | None) -> None:
    from dspy.primitives.module import set_attribute_by_name

    set_attribute_by_name(program, find_toolset(program, name)[0], toolset)


# ------------------------------------------------------------------------------------------------ commands
def cmd_compile(args: argparse.Namespace) -> int:
    loaded = load_program(args.program)
    program = _build(loaded)
    trainset = _dataset(loaded, program, args.train, "train", args, args.limit)
    if args.val_split == "train" and not args.train:
        raise ToolforgeError("--val-split train is the split compile trains on; name another, e.g. --val-split test")
    valset = (
        _dataset(loaded, program, args.val, args.val_split or "test", args, args.val_limit)
        if args.val or args.val_split
        else None
    )
    lm = _configure_lm(args.lm, args.api_base)
    proposer = _configure_proposer(args.proposer_lm, args.proposer_api_base, lm)
    out = Path(args.out or f"runs/{Path(loaded.name.split(':')[0]).stem.replace('.', '_')}")
    _out(
        f"compiling {loaded.name} on {len(trainset)} examples with {lm.model} (proposer: {proposer.model}); "
        f"run directory {out}"
    )
    optimizer = _optimizer(args, loaded.metric, proposer, out)
    trained = optimizer.compile(program, trainset=trainset, valset=valset, toolset=args.toolset_name)
    trained.save(str(out / "program.json"))
    _summary(trained.toolforge_report, find_toolset(trained, args.toolset_name)[1], out)
    return 0


def _optimizer(args: argparse.Namespace, metric: Any, proposer: dspy.BaseLM, out: Path) -> FunctionOptimizer:
    """The optimizer the training flags describe, with its run directory `out` (shared by compile and paper). A flag
    not given leaves its option to the --auto preset, or to the library's default."""
    chosen = {
        "auto": args.auto,
        "max_epochs": args.epochs if args.epochs is not None or args.auto else args.default_epochs,
        "max_actions_per_step": args.max_actions,
        "max_trials": args.trials,
        "patience": args.patience,
        "max_lm_calls": args.max_lm_calls,
        "max_functions": args.max_functions,
        "accept_ties": args.accept_ties,
        "prune_unused": args.prune,
        "prune_seeds": args.prune_seeds,
        "min_net_flips": args.min_net_flips,
        "significance": args.significance,
        "holdout": args.holdout,
        "rollback": args.rollback,
        "progressive": args.progressive,
        "stop_when_solved": args.stop_when_solved,
    }
    return FunctionOptimizer(
        metric,
        proposer_lm=proposer,
        num_threads=args.threads,
        cache=_cache(args),
        log_dir=out,
        resume=not args.restart,
        seed=args.seed,
        display_progress=not args.quiet,
        verbose=args.verbose,
        trajectory_budget_chars=args.trajectory_budget,
        proposer=Proposer(reasoning=not isinstance(proposer, LocalLM)),
        **{name: value for name, value in chosen.items() if value is not None},
    )


def _configure_proposer(spec: str | None, api_base: str | None, lm: dspy.BaseLM) -> dspy.BaseLM:
    if spec is None and api_base is not None:
        raise ToolforgeError("--proposer-api-base needs --proposer-lm, the model that server serves")
    proposer = lm if spec is None else resolve_lm(spec, role="--proposer-lm", api_base=api_base)
    if isinstance(proposer, LocalLM):
        proposer = proposer.copy(max_tokens=640)  # room for a short function; shares the loaded model
    return proposer


def _summary(report: OptimizationReport, toolset: Toolset, out: Path) -> None:
    _out()
    _out(f"{'step':>4}  {'outcome':<16} {'before':>7} {'after':>7}  actions")
    _out(f"{0:>4}  {'baseline':<16} {'':>7} {report.initial_score:>7.3f}")
    for s in report.steps:
        after = f"{s.score_after:.3f}" if s.score_after is not None else "-"
        counts: dict[str, int] = {}
        for a in s.actions:
            counts[a.status] = counts.get(a.status, 0) + 1
        actions = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items()) or "none"
        _out(f"{s.step:>4}  {s.outcome:<16} {s.score_before:>7.3f} {after:>7}  {actions}")
        for a in s.actions:  # what became of each action (a retried rejection is in report.md)
            if a.status != "rejected":
                why = f": {one_line(a.reason, 90)}" if a.reason else ""
                _out(f"{'':>6}{a.status.replace('_', ' ')} {a.summary}{why}")
    _out()
    _out(
        f"stopped: {report.stop_reason}; train score {report.initial_score:.3f} -> {report.best_score:.3f}; "
        f"LM calls: {report.agent_lm_calls} agent, {report.proposer_lm_calls} proposer; {report.wall_time_s:.1f} s"
    )
    if report.initial_errors:
        _out(
            f"warning: {report.initial_errors} training example(s) raised with the initial toolset, e.g.: "
            f"{report.initial_error}"
        )
    if report.val_scores:
        scores = ", ".join(f"step {step} {score:.3f}" for step, score in sorted(report.val_scores.items()))
        _out(f"validation scores of the accepted toolsets: {scores}; kept step {report.selected_step}'s")
    if report.pruned:
        _out(f"pruned (never called successfully): {', '.join(report.pruned)}")
    if report.unused_kept:
        _out(f"kept although never called successfully (the score fell without them): {', '.join(report.unused_kept)}")
    _out(f"final functions ({len(toolset)}):" + ("" if len(toolset) else " none"))
    for function in toolset:
        _out(f"  {function.signature()}  {function.description}")
    _out(f"saved: {out / 'program.json'}, {out / 'toolset-final.json'}, {out / 'report.json'}")
    _out(f"next: toolforge report {out}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    loaded = load_program(args.program)
    program = _build(loaded)
    if args.toolset:
        seeds = list(find_toolset(program, args.toolset_name)[1])
        toolset = Toolset.load(args.toolset)
        _set_toolset(program, toolset, args.toolset_name)
        functions = list(toolset)
    elif args.toolset_name:
        functions = seeds = list(find_toolset(program, args.toolset_name)[1])
    else:  # every toolset the program holds, if any: evaluating needs none
        functions = seeds = [f for _, t in program.named_parameters() if isinstance(t, Toolset) for f in t]
    examples = _dataset(loaded, program, args.data, args.split, args, args.limit)
    _configure_lm(args.lm, args.api_base)
    evaluator = Evaluator(
        loaded.metric,
        cache=_cache(args),
        num_threads=args.threads,
        display_progress=not args.quiet,
        warn_errors=False,  # said below, once
    )
    run = evaluator.evaluate(program, examples)
    correct = sum(1 for r in run.records if r.score >= 1.0)
    label = _toolset_label(functions, seeds, args.toolset)
    _out(
        f"{loaded.name}{label}: score {run.score:.3f} ({correct}/{len(run.records)} correct, "
        f"{len(run.errors)} errors); {run.lm_calls} LM calls, {run.hits} of {len(run.records)} from cache; "
        f"{run.wall_time_s:.1f} s"
    )
    if run.errors:
        example_error = one_line(run.errors[0].error, 300)
        if len(run.errors) == len(run.records):  # a set-up mistake, not a score
            raise ToolforgeError(
                f"every example raised, e.g. {example_error}; check the program and its LM (--lm, --api-base)"
            )
        _out(f"{len(run.errors)} of {len(run.records)} examples raised (scored 0), e.g. {example_error}")
    failed = [(record, example) for record, example in zip(run.records, examples, strict=True) if record.score < 1.0]
    for record, example in failed[: args.failures]:
        _out()
        _out(render_record(record, example))
        _out("expected: " + "; ".join(f"{k}: {v}" for k, v in example.labels().items()))
    if 0 < args.failures < len(failed):
        _out(f"\n({len(failed) - args.failures} more not fully correct; --failures N shows more)")
    return 0


def _toolset_label(functions: list[ForgedFunction], seeds: list[ForgedFunction], path: str | None) -> str:
    """Which functions were evaluated: none (untrained), the program's own (seeded), or others (trained)."""
    where = f" with {path}" if path else ""
    if not functions:
        return f"{where}, untrained (no functions)"
    names = ", ".join(f.name for f in functions)
    if [f.fingerprint for f in functions] == [f.fingerprint for f in seeds]:
        return f"{where}, seeded (its own functions: {names})"
    return f"{where}, trained (functions: {names})"


def cmd_paper(args: argparse.Namespace) -> int:
    """The paper's protocol on one data set: per cell and agent kind, test untrained, train, test trained."""
    from toolforge import paper

    for flag in ("train_size", "test_size", "max_iters"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ToolforgeError(f"--{flag.replace('_', '-')} {value}: must be a positive number")
    metric = paper.metric_for(args.task)  # raises naming the paper extra when math-verify is missing
    if not args.debug:  # math-verify warns that its timeout is off in worker threads; the answer size bound holds
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    cells = _paper_cells(args.task, args.type)
    kinds = list(paper.AGENT_KINDS) if args.agent == "both" else [args.agent]
    levels = _levels(args.levels)
    lm = _configure_lm(args.lm, args.api_base)
    proposer = _configure_proposer(args.proposer_lm, args.proposer_api_base, lm)
    embedded = isinstance(lm, LocalLM)
    out = Path(args.out or f"runs/paper-{args.task}")
    for cell in cells:
        try:
            data = paper.split(
                args.task,
                args.data,
                cell=cell if args.task == "math" else None,
                train_size=args.train_size,
                test_size=args.test_size,
                seed=args.seed,
                levels=levels,
            )
        except ToolforgeError as exc:
            message = str(exc).replace("train_size", "--train-size").replace("test_size", "--test-size")
            raise ToolforgeError(message.replace("levels", "--levels")) from None
        for kind in kinds:
            python = None
            if args.task == "gaia":
                python = paper.attachment_python_tool(args.data, (e.attachment for e in [*data.train, *data.test]))
            program = paper.build_agent(kind, args.task, max_iters=args.max_iters, python=python)
            cell_dir = out / kind / cell
            _out(
                f"{cell} / {kind}: {len(data.train)} training and {len(data.test)} test problems (seed {args.seed}); "
                f"{lm.model} (proposer: {proposer.model}); run directory {cell_dir}"
            )
            evaluator = Evaluator(metric, cache=_cache(args), num_threads=args.threads, display_progress=not args.quiet)
            optimizer = _optimizer(args, metric, proposer, cell_dir / "train")
            trained, without, with_functions, errors_without, errors_with = paper.run_cell(
                program, data, optimizer=optimizer, evaluator=evaluator
            )
            result = paper.CellResult(
                task=args.task,
                cell=cell,
                agent=kind,
                lm=lm.model,
                proposer_lm=proposer.model,
                embedded_lm=embedded,
                train_size=len(data.train),
                test_size=len(data.test),
                seed=args.seed,
                levels=sorted(levels) if levels else None,
                without=without,
                with_functions=with_functions,
                test_errors_without=errors_without,
                test_errors_with=errors_with,
                functions=paper.trained_functions(trained),
            )
            result.save(cell_dir / "result.json")
            _out(f"{cell} / {kind}: test accuracy {without:.1f}% -> {with_functions:.1f}%")
    table = paper.results_table(paper.load_results(out))
    (out / "results.md").write_text(table, encoding="utf-8")
    _out()
    _out(table)
    _out(f"table: {out / 'results.md'}")
    return 0


def _paper_cells(task: str, types: str | None) -> list[str]:
    from toolforge.paper import MATH_TYPES

    if task != "math":
        if types:
            raise ToolforgeError(f"--type {types!r} is for MATH's problem types; {task} has none, drop it")
        return [task]
    if types in (None, "all"):
        return list(MATH_TYPES)
    cells = [t.strip() for t in types.split(",") if t.strip()]
    unknown = [t for t in cells if t not in MATH_TYPES]
    if unknown or not cells:
        raise ToolforgeError(
            f"--type {types!r}: no MATH type {', '.join(map(repr, unknown)) or 'given'}; give 'all' or some of "
            f"{', '.join(MATH_TYPES)}, comma-separated"
        )
    return cells


def _levels(text: str | None) -> set[int] | None:
    if text is None:
        return None
    try:
        levels = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        levels = set()
    if not levels:
        raise ToolforgeError(f"--levels {text!r}: give levels as comma-separated numbers, e.g. --levels 4,5")
    return levels


def cmd_show(args: argparse.Namespace) -> int:
    toolset = Toolset.load(args.toolset)
    if args.json:
        fields = {"name", "description", "parameters", "code", "packages", "deterministic"}
        functions = [
            f.model_dump(mode="json", include=fields) | {"signature": f.signature(), "fingerprint": f.fingerprint}
            for f in toolset
        ]
        _out_json(
            "show",
            {
                "path": args.toolset,
                "fingerprint": toolset.fingerprint,
                "max_functions": toolset.max_functions,
                "functions": functions,
            },
        )
        return 0
    _out(f"{args.toolset}: {len(toolset)} function(s), fingerprint {toolset.fingerprint[:16]}")
    for function in toolset:
        _out()
        _out(f"{function.signature()}")
        _out(f"  {function.description}")
        if function.packages:
            _out(f"  packages: {', '.join(function.packages)}")
        if not function.deterministic:
            _out("  not deterministic: its results are never cached")
        _out("  " + function.code.rstrip().replace("\n", "\n  "))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit status as diff(1)'s: 0 when the toolsets are equal, 1 when they differ (2, an error, is main's)."""
    diff = Toolset.load(args.a).diff(Toolset.load(args.b))
    if args.json:
        _out_json("diff", {"a": args.a, "b": args.b, "equal": not diff} | diff.model_dump(mode="json"))
    else:
        _out(str(diff))
    return 1 if diff else 0


def cmd_merge(args: argparse.Namespace) -> int:
    merged = Toolset.load(args.toolsets[0])
    for index, path in enumerate(args.toolsets[1:], 1):
        try:
            merged = merged.merge(Toolset.load(path), on_conflict=args.on_conflict)
        except ToolsetError as exc:
            if not exc.conflicts:
                raise
            earlier = args.toolsets[0] if index == 1 else f"the {index} toolsets before it"
            raise ToolforgeError(
                f"{path} and {earlier} define {', '.join(exc.conflicts)} differently; pass --on-conflict ours (keep "
                "the earlier) or theirs (take the later), or see the difference with toolforge diff"
            ) from None
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ToolforgeError(f"{args.out!r} exists; choose another --out, or pass --force to replace it")
    merged.save(out)
    _out(f"{args.out}: {len(merged)} function(s) from {len(args.toolsets)} toolsets: {', '.join(merged.names)}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        if args.json:
            raise ToolforgeError("--json is for `toolforge cache stats`; `cache clear` has no data to print, drop it")
        return _clear_cache(args)
    with _cache(args) as cache:
        stats = cache.stats()
    if args.json:
        _out_json("cache-stats", stats.model_dump(mode="json") | {"hit_rate": stats.hit_rate})
        return 0
    _out(f"cache {stats.directory}: {stats.entries} entries, {stats.size_bytes / 1e6:.1f} MB")
    _out(f"  evaluations: {stats.hits} hits, {stats.misses} misses (hit rate {stats.hit_rate:.1%})")
    _out(f"  saved: {stats.lm_calls_saved} LM calls, {stats.seconds_saved:.1f} s")
    _out(f"  function calls: {stats.call_hits} hits, {stats.call_misses} misses")
    return 0


def _clear_cache(args: argparse.Namespace) -> int:
    """Empty the cache; one too damaged to open loses its files instead, and an empty one takes its place."""
    try:
        cache = EvaluationCache(args.cache_dir) if args.cache_dir else EvaluationCache()
    except CacheError as exc:
        if not exc.corrupt:
            raise ToolforgeError(_cache_fix(exc)) from None
        damaged = exc
    else:
        with cache:
            removed = cache.clear()
        _out(f"cleared {removed} entries from {cache.directory}")
        return 0
    files = discard_cache_files(damaged.directory)
    try:
        EvaluationCache(damaged.directory).close()
    except CacheError as exc:
        raise ToolforgeError(_cache_fix(exc)) from None
    _out(f"{damaged.problem}: deleted its {files} cache file(s); {damaged.directory} now holds an empty cache")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from toolforge.report import write_report

    try:
        png, md = write_report(args.run_dir)
    except ToolforgeError as exc:  # the library says how to compile in Python; the command, on the command line
        how = f"`toolforge compile PROGRAM --out {Path(args.run_dir)}`"
        raise ToolforgeError(str(exc).replace("FunctionOptimizer(..., log_dir=...).compile(...)", how)) from None
    if args.json:
        from toolforge.report import load_report

        report = load_report(args.run_dir).model_dump(mode="json")
        _out_json("report", {"learning_curve": str(png), "markdown": str(md), "report": report})
        return 0
    _out(f"learning curve: {png}")
    _out(f"report: {md}")
    return 0


# ------------------------------------------------------------------------------------------------ parsing
def _global_flags() -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name (`toolforge --debug show x`, `toolforge show x
    --debug`). SUPPRESS keeps a subcommand's parser from resetting what was given before its name."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")
    flags.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    flags.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what toolforge does as it happens (proposals, decisions, resumes)",
    )
    return flags


def _version() -> str:
    return f"toolforge {__version__} (DSPy {dspy.__version__}, Python {platform.python_version()})"


def _parser() -> argparse.ArgumentParser:
    flags = _global_flags()
    parser = argparse.ArgumentParser(
        prog="toolforge", description="Train DSPy agents by forging their functions.", parents=[flags]
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[flags], **kwargs)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lm", help="agent LM: 'local' (default), a dspy.LM model string, a .gguf path, module:attr")
        p.add_argument(
            "--api-base",
            metavar="URL",
            help="server for --lm, e.g. an OpenAI-compatible one: --lm hosted_vllm/<model> --api-base http://host/v1",
        )
        p.add_argument("--threads", type=int, default=4, help="examples evaluated at once")
        p.add_argument("--cache-dir", help="evaluation cache directory (default: $TOOLFORGE_CACHE_DIR or .toolforge)")

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input-keys", help="comma-separated JSONL keys of the program's inputs, in order")
        p.add_argument("--label-key", help="JSONL key of the expected answer")
        run_options(p)
        p.add_argument(
            "--toolset-name", help="which toolset, when the program holds several (its name in named_parameters())"
        )

    def training_options(p: argparse.ArgumentParser, epochs: int) -> None:
        p.set_defaults(default_epochs=epochs)
        p.add_argument("--proposer-lm", help="LM that proposes functions (default: the agent LM)")
        p.add_argument("--proposer-api-base", metavar="URL", help="server for --proposer-lm, as --api-base is for --lm")
        p.add_argument(
            "--auto",
            choices=list(AUTO_PRESETS),
            help="budget preset, as GEPA's: "
            + "; ".join(
                f"{name}: {v['max_epochs']} epochs, patience {v['patience']}, {v['max_actions_per_step']} actions "
                f"and {v['max_trials']} trials a step"
                for name, v in AUTO_PRESETS.items()
            )
            + " (the flags below win over it)",
        )
        p.add_argument("--epochs", type=int, help=f"training steps at most (default: {epochs}, or the preset's)")
        p.add_argument(
            "--patience", type=int, help="stop after N steps without a better candidate (default: 5, or the preset's)"
        )
        p.add_argument("--max-actions", type=int, help="actions per step at most (default: 3, or the preset's)")
        p.add_argument("--trials", type=int, help="proposer calls per step at most (default: 3, or the preset's)")
        p.add_argument("--max-lm-calls", type=int, help="budget of LM calls for the whole compile (default: none)")
        p.add_argument(
            "--max-functions", type=int, help="functions the toolset may hold at most (default: the toolset's limit)"
        )
        p.add_argument(
            "--accept-ties",
            action=argparse.BooleanOptionalAction,
            help="accept a change the evidence finds neither better nor harmful when it does not grow the toolset "
            "(default: on)",
        )
        p.add_argument(
            "--no-prune",
            dest="prune",
            action="store_false",
            default=None,
            help="keep functions no training run called successfully (by default they are pruned at the end)",
        )
        p.add_argument(
            "--prune-seeds",
            action="store_true",
            default=None,
            help="let pruning drop unused seed functions, the program's own (by default they are kept)",
        )
        p.add_argument(
            "--min-net-flips",
            type=int,
            help="evidence a better change needs: touched examples that got better minus those that got worse "
            "(default: 1)",
        )
        p.add_argument(
            "--significance",
            type=float,
            help="also require the exact sign test on those flips at this level, e.g. 0.05 (default: off)",
        )
        p.add_argument(
            "--holdout",
            type=float,
            help="without a valset, the share of the training set held out for acceptance (default: 0.2; 0: none)",
        )
        p.add_argument(
            "--no-rollback",
            dest="rollback",
            action="store_false",
            default=None,
            help="the paper's ablation: accept every checked change and never stop early",
        )
        p.add_argument(
            "--no-progressive",
            dest="progressive",
            action="store_false",
            default=None,
            help="the paper's ablation: apply each step's actions to the initial toolset, not the best so far",
        )
        p.add_argument(
            "--stop-when-solved",
            dest="stop_when_solved",
            action="store_true",
            default=None,
            help="stop once the best toolset answers every training and validation example (default: go on)",
        )
        p.add_argument(
            "--trajectory-budget", type=int, default=12_000, help="characters of trajectories the proposer sees"
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--restart",
            action="store_true",
            help="start afresh in the run directory instead of resuming (cached work stays free)",
        )

    p = command("compile", help="train a program's functions with FunctionOptimizer")
    p.add_argument("program", help="a .py file or package.module:attr")
    p.add_argument("--train", help="training JSONL file (default: the program's own train split)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", help="validation JSONL file, to pick among the accepted toolsets")
    val.add_argument(
        "--val-split", metavar="NAME", help="take the valset from the program's own load_dataset(NAME), e.g. val"
    )
    p.add_argument("--limit", type=int, help="use only the first N training examples")
    p.add_argument("--val-limit", type=int, help="use only the first N validation examples")
    p.add_argument("--out", help="run directory (default: runs/<program>); the same directory resumes")
    training_options(p, epochs=5)
    data_options(p)
    p.set_defaults(func=cmd_compile)

    p = command("evaluate", help="score a program, with a trained toolset or with its own functions")
    p.add_argument("program", help="a .py file or package.module:attr")
    p.add_argument("--toolset", help="a toolset JSON file (e.g. RUN_DIR/toolset-final.json)")
    p.add_argument("--data", help="JSONL file (default: the program's own split)")
    p.add_argument("--split", default="test", help="split of the program's own data (default: test)")
    p.add_argument("--limit", type=int, help="use only the first N examples")
    p.add_argument(
        "--failures",
        type=int,
        default=0,
        metavar="N",
        help="also print up to N examples that were not fully correct: inputs, tool calls, output, expected",
    )
    data_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = command(
        "paper",
        help="the paper's experiment on MATH, TabMWP or GAIA: train, test without and with the functions, and a "
        "results table beside the paper's numbers",
    )
    p.add_argument("task", choices=["math", "tabmwp", "gaia"])
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="the data set on this machine: MATH's root (train/, test/), TabMWP's data/tabmwp (problems_*.json), or "
        "GAIA's validation folder (metadata.jsonl and the attached files)",
    )
    p.add_argument("--type", help="MATH problem types, comma-separated, or 'all' (default)")
    p.add_argument("--agent", choices=["assistant", "react", "both"], default="both", help="the paper's agent kinds")
    p.add_argument("--train-size", type=int, help="training problems per cell (default: MATH 20, TabMWP 20, GAIA 20)")
    p.add_argument("--test-size", type=int, help="test problems per cell (default: MATH 80, TabMWP 100, GAIA 100)")
    p.add_argument("--levels", help="MATH levels (1-5), GAIA levels (1-3) or TabMWP grades (1-8), e.g. 4,5")
    p.add_argument("--max-iters", type=int, default=10, help="tool calls in one run of the agent at most")
    p.add_argument("--out", help="results directory (default: runs/paper-<task>); the same directory resumes")
    training_options(p, epochs=10)
    run_options(p)
    p.set_defaults(func=cmd_paper)

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object (README: JSON output)")

    p = command("show", help="print a toolset's functions with signatures and code")
    p.add_argument("toolset")
    json_flag(p, "the toolset")
    p.set_defaults(func=cmd_show)

    p = command("diff", help="what changed from toolset A to toolset B; exit status 1 when they differ, as diff(1)")
    p.add_argument("a")
    p.add_argument("b")
    json_flag(p, "the difference")
    p.set_defaults(func=cmd_diff)

    p = command("merge", help="compose toolsets into one (e.g. trained on different tasks)")
    p.add_argument("toolsets", nargs="+", metavar="T.json", help="toolsets, in order; their functions keep it")
    p.add_argument("--out", required=True, help="where to write the merged toolset")
    p.add_argument(
        "--on-conflict",
        choices=["error", "ours", "theirs"],
        default="error",
        help="a name in several toolsets with different functions: refuse (default), keep the earlier one (ours), "
        "or take the later one (theirs)",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_merge)

    p = command("cache", help="evaluation cache statistics, or clear it")
    p.add_argument("action", choices=["stats", "clear"])
    p.add_argument("--cache-dir", help="cache directory (default: $TOOLFORGE_CACHE_DIR or .toolforge/cache)")
    json_flag(p, "the statistics")
    p.set_defaults(func=cmd_cache)

    p = command("report", help="learning-curve PNG and Markdown report of a compile run")
    p.add_argument("run_dir")
    json_flag(p, "the paths written and the report's contents")
    p.set_defaults(func=cmd_report)
    return parser


# Flags checked before a command runs, with the least value each takes.
_AT_LEAST = {
    "epochs": 0,
    "failures": 0,
    "max_lm_calls": 0,
    "max_functions": 0,
    "limit": 1,
    "val_limit": 1,
    "threads": 1,
    "trials": 1,
    "max_actions": 1,
    "patience": 1,
    "min_net_flips": 1,
}


def _bad_flag(args: argparse.Namespace) -> str | None:
    """What is wrong with a number given on the command line, in the flag's own terms; None when nothing is."""
    for name, low in _AT_LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            return f"--{name.replace('_', '-')} {value}: must be a {'non-negative' if low == 0 else 'positive'} number"
    for name, text, inside in (
        ("significance", "between 0 and 1 (exclusive), e.g. 0.05", lambda v: 0 < v < 1),
        ("holdout", "a share from 0 (hold out nothing) to below 1, e.g. 0.2", lambda v: 0 <= v < 1),
    ):
        value = getattr(args, name, None)
        if value is not None and not inside(value):
            return f"--{name} {value}: must be {text}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for flag in ("debug", "quiet", "verbose"):
        setattr(args, flag, getattr(args, flag, False))
    # `package.module:attr` (a program or an LM) is imported from the current directory, as `python -m` does
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    # LiteLLM (DSPy's route to some providers) otherwise fetches a price list from GitHub when first used, and
    # warns twice when offline; its bundled copy serves as well.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[handler])
    if args.verbose and not args.debug:
        logging.getLogger("toolforge").setLevel(logging.INFO)
    if not args.debug:  # DSPy logs every reply a small LM gets wrong; the compile report records them
        logging.getLogger("dspy").setLevel(logging.ERROR)
    problem = _bad_flag(args)
    if problem:
        _err(problem)
        return 2
    try:
        code: int = args.func(args)
        return code
    except ToolforgeError as exc:
        if args.debug:
            raise
        _err(_with_flags(str(exc)))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to resume where it stopped")
        return 130
    except BrokenPipeError:  # the reader went away (`toolforge show T.json | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush has nowhere to fail
        return 141  # 128 + SIGPIPE, what a shell reports for a writer the pipe's end stopped
    except Exception as exc:  # a bug, or an LM service failing: one line unless --debug
        if args.debug:
            raise
        _err(f"{type(exc).__name__}: {exc} (run with --debug for details)")
        return 2 if args.command == "diff" else 1  # diff's 1 says "they differ"


def _err(message: str) -> None:
    sys.stderr.write(f"toolforge: error: {printable(message)}\n")


if __name__ == "__main__":
    sys.exit(main())
