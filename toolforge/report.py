"""Reports of a compile run: a learning-curve PNG and a Markdown account of every step with its code diffs.

Reads what `FunctionOptimizer(log_dir=RUN_DIR)` wrote: `report.json` and the `toolset-<step>.json` of every
accepted step. Scores on held-out examples, which a compile does not know, are added to `report.json` by whoever
evaluates them (`record_held_out`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from toolforge._io import read_json, write_json
from toolforge._text import printable
from toolforge.errors import ToolforgeError
from toolforge.evidence import Flips
from toolforge.optimizer import HeldOutScores, OptimizationReport
from toolforge.toolset import Toolset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["curve_figure", "learning_curve", "load_report", "markdown_report", "record_held_out", "write_report"]


def load_report(run_dir: str | Path) -> OptimizationReport:
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise ToolforgeError(
            f"{str(run_dir)!r} has no report.json; run FunctionOptimizer(..., log_dir=...).compile(...) to completion "
            "first"
        )
    data = read_json(path, "report", "compile again to write it anew (the same command resumes)")
    try:
        return OptimizationReport.model_validate(data)
    except (ValueError, TypeError) as exc:
        raise ToolforgeError(f"{path} is not a toolforge report ({exc.__class__.__name__}); was it edited?") from None


def record_held_out(
    run_dir: str | Path, *, before: float, after: float, examples: int, source: str = ""
) -> OptimizationReport:
    """Add the scores of the program as given (untrained, or seeded) and trained on held-out examples to the run's
    `report.json` (the next `write_report` shows them); return the report. A compile run again in the directory
    writes its report anew, without them: they belong to the toolset they were measured with.

    Args:
        run_dir: The compile's `log_dir`.
        before, after: The scores in [0, 1] of the student as it came and of the trained program.
        examples: How many held-out examples each was scored on.
        source: Which examples, for the reader (e.g. "load_dataset('test'), first 5").
    """
    for name, value in (("before", before), ("after", after)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ToolforgeError(f"record_held_out({name}={value!r}): a score must be a number in [0, 1]")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ToolforgeError(f"record_held_out(examples={examples!r}): give the number of examples scored (>= 1)")
    report = load_report(run_dir)
    report = report.model_copy(
        update={"held_out_scores": HeldOutScores(examples=examples, before=before, after=after, source=source)}
    )
    write_json(Path(run_dir) / "report.json", report.model_dump(mode="json"))
    return report


def _best_scores(report: OptimizationReport) -> list[float]:
    scores, best = [report.initial_score], report.initial_score
    for step in report.steps:
        if step.outcome == "accepted" and step.score_after is not None:
            best = step.score_after
        scores.append(best)
    return scores


def learning_curve(report: OptimizationReport, path: str | Path) -> Path:
    """Training score of the best toolset after each step, each candidate's score (roll-backs marked), the
    validation score of each accepted toolset where there is one, and the held-out scores where recorded; written
    as a PNG at `path`."""
    fig = curve_figure(report)  # first: it says how to install matplotlib when it is missing
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def curve_figure(report: OptimizationReport) -> Figure:
    """The learning curve as a matplotlib figure (see `learning_curve`); the caller closes it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolforgeError("the learning curve needs matplotlib: pip install 'toolforge[report]'") from None
    steps = list(range(len(report.steps) + 1))
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=120)
    ax.step(steps, _best_scores(report), where="post", color="#1f77b4", linewidth=2, label="train (best toolset)")
    accepted = [(s.step, s.score_after) for s in report.steps if s.outcome == "accepted"]
    rolled = [(s.step, s.score_after) for s in report.steps if s.outcome == "rolled_back"]
    if accepted:
        xs, ys = zip(*accepted, strict=True)
        ax.scatter(xs, ys, color="#2ca02c", zorder=3, label="candidate accepted")
    if rolled:
        xs, ys = zip(*rolled, strict=True)
        ax.scatter(xs, ys, color="#d62728", marker="x", s=60, zorder=3, label="rolled back")
    if report.val_scores:
        points = sorted(report.val_scores.items())
        ax.plot(*zip(*points, strict=True), color="#ff7f0e", marker="o", linestyle="--", label="validation")
    held = report.held_out_scores
    if held is not None:  # measured once each, as given and trained: drawn at the start and at the end
        as_given = "seeded" if report.seed_functions else "untrained"
        ax.scatter([0, steps[-1]], [held.before, held.after], color="#9467bd", marker="D", s=40, zorder=4,
                   label=f"held-out: {as_given}, trained ({held.examples})")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.set_title(f"toolforge: {report.initial_score:.3f} -> {report.best_score:.3f} ({report.stop_reason})")
    # beside the axes, never over the curve it explains
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def markdown_report(report: OptimizationReport, run_dir: str | Path) -> str:
    """The models and settings, LM calls and tokens per role, held-out scores where recorded, every step (scores,
    LM calls, cache hits, the examples that flipped, each action with its outcome, reason, evidence and code diff),
    and the final code with the seed functions marked.

    Control characters (but newline and tab) in what the run recorded are written as escapes (`\\x1b`)."""
    run_dir = Path(run_dir)
    toolsets = {
        int(p.stem.split("-")[1]): Toolset.load(p) for p in run_dir.glob("toolset-*.json") if p.stem[8:].isdigit()
    }
    lines = [
        "# toolforge compile report",
        "",
        f"- training score: {report.initial_score:.3f} -> {report.best_score:.3f}",
    ]
    held = report.held_out_scores
    if held is not None:
        source = f", {held.source}" if held.source else ""
        # the student as given holds its seed functions: not "untrained" then (as `toolforge evaluate` says)
        seeds = report.seed_functions
        as_given = f"seeded ({', '.join(seeds)})" if seeds else "untrained"
        lines.append(
            f"- held-out score (examples the compile never saw: {held.examples}{source}): {as_given} "
            f"{held.before:.3f} -> trained {held.after:.3f}"
        )
    lines += [
        f"- models: agent {report.agent_lm or '(unknown)'}, proposer {report.proposer_lm or '(unknown)'}",
        f"- stopped: {report.stop_reason} after {len(report.steps)} step(s)"
        + (f" (resumed after step {report.resumed_after_step})" if report.resumed_after_step is not None else ""),
        f"- final functions: {', '.join(report.final_functions) or '(none)'} (from step {report.selected_step})",
        f"- seed functions (the program's own): {', '.join(report.seed_functions) or '(none)'}",
    ]
    if report.held_out:
        lines.append(
            f"- held out for acceptance: {report.held_out} training example(s) (no valset was given); the proposer "
            "never saw them"
        )
    if report.pruned:
        lines.append(
            f"- pruned as unused: {', '.join(report.pruned)} (training score without them: {report.pruned_score:.3f}"
            + (f", validation {report.pruned_val_score:.3f}" if report.pruned_val_score is not None else "")
            + ")"
        )
    if report.unused_kept:
        if report.pruned_score is None:
            why = "the LM-call budget was spent before the smaller toolset could be checked"
        elif report.pruned_val_score is not None:
            why = f"without them the validation score fell to {report.pruned_val_score:.3f}"
        else:
            why = f"without them the training score fell to {report.pruned_score:.3f}"
        lines.append(f"- unused but kept: {', '.join(report.unused_kept)} ({why})")
    if report.initial_errors:
        lines.append(
            f"- **{report.initial_errors} training example(s) raised with the initial toolset**, e.g.: "
            f"`{report.initial_error}`"
        )
    if report.val_scores:
        lines.append("- validation: " + ", ".join(f"step {s}: {v:.3f}" for s, v in sorted(report.val_scores.items())))
    if report.settings:
        lines.append("- settings: " + ", ".join(f"{k}={v!r}" for k, v in report.settings.items()))
    lines += [
        f"- LM calls: {report.agent_lm_calls} agent, {report.proposer_lm_calls} proposer; {report.wall_time_s:.1f} s"
        + (
            f" (including {report.interrupted_lm_calls} made by runs that were interrupted: a crash, a kill or Ctrl-C; "
            "the requests the resumed runs repeated were free, from DSPy's cache, when it is on)"
            if report.interrupted_lm_calls
            else ""
        ),
        "",
        "| role | LM calls | prompt tokens | completion tokens |",
        "|---|---|---|---|",
        f"| agent | {report.agent_lm_calls} | {report.agent_prompt_tokens} | {report.agent_completion_tokens} |",
        f"| proposer | {report.proposer_lm_calls} | {report.proposer_prompt_tokens} | "
        f"{report.proposer_completion_tokens} |",
        "",
        "| step | outcome | score before | score after | actions | agent LM calls | proposer LM calls | cache hits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report.steps:
        after = f"{s.score_after:.3f}" if s.score_after is not None else "-"
        actions = ", ".join(f"{a.summary} ({a.status})" for a in s.actions) or "none"
        lines.append(
            f"| {s.step} | {s.outcome} | {s.score_before:.3f} | {after} | {actions} | {s.usage.agent.calls} | "
            f"{s.usage.proposer.calls} | {s.cache_hits}/{s.cache_hits + s.cache_misses}"
            + (f" ({s.cache_revalidated} held for revised code)" if s.cache_revalidated else "")
            + " |"
        )
    for s in report.steps:
        lines += ["", f"## Step {s.step}: {s.outcome}", ""]
        if s.note:
            lines += [f"_{s.note}_", ""]
        if s.reason and s.evidence is None:
            lines += [f"Why: {s.reason}.", ""]
        if s.interrupted_lm_calls:
            lines += [
                f"_{s.interrupted_lm_calls} of this step's LM calls were made by a run of it that was interrupted._",
                "",
            ]
        if s.evidence is not None:
            e = s.evidence
            val = f"; validation: {e.val_touched.describe()}" if e.val_touched is not None else ""
            lines += [
                f"Evidence ({e.verdict}): on the examples the actions touched, training: {e.touched.describe()}{val}; "
                f"over all {e.overall.examples} examples compared: {e.overall.wins} better, {e.overall.losses} worse."
                + (f" Decision: {s.reason}." if s.reason else ""),
                "",
                *_flipped(e.overall),
            ]
        before = _toolset_before(toolsets, s.step)
        if not s.actions:
            lines.append("No actions proposed.")
        for action in s.actions:
            lines.append(f"- **{action.summary}** (trial {action.trial}): {action.status}")
            if action.reason:
                lines.append(f"  - reason: {action.reason}")
            if action.evidence is not None:
                flips, kept = action.evidence.flips, action.evidence.score_kept
                together = action.evidence.score_together
                if together is not None:
                    scores = f"training score with all the step's actions {together:.3f}" + (
                        f", with only those kept {kept:.3f}" if kept is not None else ""
                    )
                elif kept is not None:
                    scores = (
                        "the step's other actions were refused on the examples run first; training score with "
                        f"only those kept {kept:.3f}"
                    )
                else:
                    scores = "refused on them: the other training examples were not run"
                lines.append(f"  - evidence: on the training examples it touched, {flips.describe()}; {scores}")
                if flips.which():
                    lines.append(f"  - flipped where it was called: {flips.which(limit=20)}")
            diff = _action_diff(action.proposal, before)
            if diff:
                lines += ["", "```diff", diff.rstrip("\n"), "```", ""]
    lines += _final_code(report, toolsets)
    return printable("\n".join(lines) + "\n")  # read on terminals too: no control characters from the run


def _flipped(overall: Flips) -> list[str]:
    """The examples of a step that flipped, all of them (those the actions did not touch are the agent's re-draws)."""
    if not overall.which():
        return []
    return [f"Examples that flipped (any cause): {overall.which(limit=40)}.", ""]


def _final_code(report: OptimizationReport, toolsets: dict[int, Toolset]) -> list[str]:
    """The final functions' code, each marked seed (the program's own), seed revised, or learned."""
    lines = ["", "## Final functions", ""]
    if not report.final_code:
        return [*lines, "(none)" if not report.final_functions else "(the code is in toolset-final.json)"]
    initial = toolsets.get(0)
    for name, code in report.final_code.items():
        if name not in report.seed_functions:
            kind = "learned"
        elif initial is not None and name in initial and initial[name].code != code:
            kind = "seed, revised"
        else:
            kind = "seed"
        lines += [f"### {name} ({kind})", "", "```python", code.rstrip("\n"), "```", ""]
    return lines


def _toolset_before(toolsets: dict[int, Toolset], step: int) -> Toolset | None:
    earlier = [s for s in toolsets if s < step]
    return toolsets[max(earlier)] if earlier else None


def _action_diff(proposal: dict[str, object], before: Toolset | None) -> str:
    name = str(proposal.get("name", ""))
    new = str(proposal.get("code") or "")
    old = before[name].code if before is not None and name in before else ""
    if proposal.get("action") == "remove_function":
        new = ""
    if not old and not new:
        return ""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"a/{name}", tofile=f"b/{name}"
        )
    )


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write `learning-curve.png` and `report.md` into the run directory; return their paths."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    png = learning_curve(report, run_dir / "learning-curve.png")
    md = run_dir / "report.md"
    md.write_text(markdown_report(report, run_dir), encoding="utf-8")
    return png, md
