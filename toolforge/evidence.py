"""The evidence that a change helps: a paired comparison of two evaluations of the same examples.

A change of the toolset (an action, or a step's actions together) is judged on the examples it *touches*: those
whose run called a function the change adds, revises or removes, with the best toolset or with the candidate. An
example the change did not touch can still flip, because any change of the agent's prompt re-draws the LM's
answers; on the small training sets this method is used with, those re-draws outnumber the real effects, so they
are not counted as evidence for a change. They are checked for harm: when the flips over *all* examples are
significantly against the candidate (an exact one-sided sign test), the change is refused whatever its touched
examples say, because a tool that derails the agent without being called is harm too.

Everything here is arithmetic on `EvaluationRun` records: no LM, no sandbox.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field

from toolforge.records import EvaluationRun, ExampleRecord

__all__ = ["HARM_SIGNIFICANCE", "Flips", "flips", "sign_test", "touched_by"]

# The level at which the flips over all examples count as harm (one-sided exact sign test).
HARM_SIGNIFICANCE = 0.05


class Flips(BaseModel):
    """Paired outcomes of two evaluations of the same examples: how many got better (`wins`) and worse
    (`losses`) with the candidate, among `examples` compared; and `carried`: examples the candidate answered,
    no worse, through a call of a function the change made, where the best toolset's run called no function at
    all (its answer was the LM's own, so a tie there says the LM was right once, not that the function adds
    nothing); `relied`, the mirror: examples the best toolset answered through a function the change takes away,
    and the candidate answers as well with no function call at all (a tie that the LM's own guess made).
    `better` and `worse` name the examples that flipped (as the compile labels them: `trainset[3]`, `valset[0]`)."""

    examples: int = 0
    wins: int = 0
    losses: int = 0
    carried: int = 0
    relied: int = 0
    better: list[str] = Field(default_factory=list)
    worse: list[str] = Field(default_factory=list)

    @property
    def net(self) -> int:
        return self.wins - self.losses

    def __add__(self, other: Flips) -> Flips:
        return Flips(
            examples=self.examples + other.examples,
            wins=self.wins + other.wins,
            losses=self.losses + other.losses,
            carried=self.carried + other.carried,
            relied=self.relied + other.relied,
            better=self.better + other.better,
            worse=self.worse + other.worse,
        )

    def worse_p(self) -> float:
        """One-sided exact sign-test p-value of "the candidate is worse": P(losses or more | no difference)."""
        return sign_test(self.losses, self.wins + self.losses)

    def describe(self) -> str:
        return f"{self.examples} example(s), {self.wins} better, {self.losses} worse"

    def which(self, limit: int = 8) -> str:
        """The examples that flipped, e.g. "better: trainset[1], trainset[6]; worse: valset[2]"; "" for none."""
        parts = []
        for word, names in (("better", self.better), ("worse", self.worse)):
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{word}: {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


def sign_test(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2): the exact one-sided sign test (McNemar's exact test on
    the discordant pairs). 1.0 for no trials."""
    if trials <= 0 or successes <= 0:
        return 1.0
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def touched_by(names: Iterable[str], before: EvaluationRun, after: EvaluationRun) -> list[bool]:
    """Per example, whether its run called one of the functions `names` (those a change adds, revises or removes):
    with the candidate (`after`) for an added or revised function, with the best toolset (`before`) for a revised
    or removed one."""
    names = set(names)
    # an added function has no calls before, a removed one none after: one set of names serves both sides
    return [bool((_names(a) | _names(b)) & names) for b, a in zip(before.records, after.records, strict=True)]


def flips(
    before: EvaluationRun,
    after: EvaluationRun,
    mask: Sequence[bool] | None = None,
    made: Iterable[str] = (),
    taken: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
) -> Flips:
    """The paired flips from `before` to `after` on the examples `mask` selects (all without a mask); `made`: the
    functions the change adds or revises, for `carried`; `taken`: those it removes, for `relied`; `labels`: the name
    of each example by its id, for `better` and `worse` (default: the id's first 12 characters)."""
    made, taken = set(made), set(taken)
    wins = losses = examples = carried = relied = 0
    better: list[str] = []
    worse: list[str] = []
    for i, (b, a) in enumerate(zip(before.records, after.records, strict=True)):
        if mask is not None and not mask[i]:
            continue
        examples += 1
        label = (labels or {}).get(a.example_id) or a.example_id[:12]
        if a.score > b.score:
            wins += 1
            better.append(label)
        elif a.score < b.score:
            losses += 1
            worse.append(label)
        elif a.score > 0 and not b.calls and any(c.ok and c.name in made for c in a.calls):
            carried += 1
        elif b.score > 0 and not a.calls and any(c.ok and c.name in taken for c in b.calls):
            relied += 1
    return Flips(
        examples=examples, wins=wins, losses=losses, carried=carried, relied=relied, better=better, worse=worse
    )


def _names(record: ExampleRecord) -> set[str]:
    return {call.name for call in record.calls}
