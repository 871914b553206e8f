"""`Toolset`: the learnable parameter of an agent, an ordered set of forged functions.

A Toolset is a value: `apply`, `merge` and friends return a new one. It is also a DSPy parameter, so a program
holding one saves and loads it (code included) with `program.save("p.json")` / `program.load("p.json")`, and
optimizers find it through `named_parameters()`. `load_state` is the one operation that changes a toolset in
place (DSPy's contract), and `reset` undoes it, restoring the functions the toolset was constructed with.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dspy.predict.parameter import Parameter
from pydantic import BaseModel, ConfigDict, ValidationError

from toolforge._checks import check_int
from toolforge._hashing import content_hash
from toolforge._io import MAX_JSON_DEPTH, json_depth, read_json, write_json
from toolforge.actions import Action, AddFunction, RemoveFunction, ReviseFunction, parse_action, validation_reasons
from toolforge.errors import ToolforgeError, ToolsetError
from toolforge.function import ForgedFunction

if TYPE_CHECKING:
    import dspy

    from toolforge.sandbox import Sandbox

    ToolRuntime = Callable[[Sequence[ForgedFunction], Sandbox | None], list[dspy.Tool]]

__all__ = ["FunctionRevision", "Toolset", "ToolsetDiff", "set_tool_runtime"]

logger = logging.getLogger(__name__)

FORMAT = "toolforge.toolset"
FORMAT_VERSION = 1

_tool_runtime: ToolRuntime | None = None


def set_tool_runtime(runtime: ToolRuntime) -> None:
    """Install what `Toolset.as_tools` builds its tools with: `toolforge.tools.forged_tools`, which installs itself
    when imported (the package imports it). So the toolset, a value, never imports the sandbox or the call cache."""
    global _tool_runtime
    _tool_runtime = runtime


class FunctionRevision(BaseModel):
    """How one function differs between two toolsets."""

    model_config = ConfigDict(frozen=True)

    name: str
    interface_changed: bool
    code_changed: bool
    code_diff: str


def _parse_action(data: Mapping[str, Any]) -> Action:
    try:
        return parse_action(dict(data))
    except ValidationError as exc:
        raise ToolsetError(
            f"action {dict(data)!r:.100} is not valid ({validation_reasons(exc)}); give 'action' (add_function, "
            "revise_function or remove_function) and its fields: name, and for add and revise description, "
            "parameters and code"
        ) from None


class ToolsetDiff(BaseModel):
    """What changed from one toolset to another: names added and removed, functions revised, and the order of
    the functions both hold (the order the agent's LM sees them in), if that changed."""

    model_config = ConfigDict(frozen=True)

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    revised: tuple[FunctionRevision, ...] = ()
    reordered: tuple[str, ...] = ()  # the functions both hold, in their new order, when it is not the old one

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.revised or self.reordered)

    def __str__(self) -> str:
        lines = [f"+ {name}" for name in self.added] + [f"- {name}" for name in self.removed]
        if self.reordered:
            lines.append(f"~ order: {', '.join(self.reordered)}")
        for revision in self.revised:
            what = " and ".join(
                part
                for part, changed in (("interface", revision.interface_changed), ("code", revision.code_changed))
                if changed
            )
            lines.append(f"~ {revision.name} ({what or 'determinism'})")
            if revision.code_diff:
                lines.extend("    " + line for line in revision.code_diff.rstrip("\n").splitlines())
        return "\n".join(lines) if lines else "(no changes)"


class Toolset(Parameter):
    """An ordered, immutable-by-operation set of forged functions, and a DSPy parameter.

    Args:
        functions: The functions, in the order the agent's LM will see them. Names must be unique.
        max_functions: The most functions this toolset (and every toolset derived from it) may hold.

    Examples:
        >>> ts = Toolset([area]).apply([RemoveFunction("area")])   # doctest: +SKIP
        >>> len(ts), "area" in ts
        (0, False)
    """

    def __init__(self, functions: Iterable[ForgedFunction] = (), max_functions: int | None = None) -> None:
        check_int(
            "Toolset", "max_functions", max_functions, 0, error=ToolsetError, optional=True,
            message="{name}={value!r} must be a non-negative integer or None",
        )  # fmt: skip
        self._set(tuple(functions), max_functions)

    def _set(self, functions: tuple[ForgedFunction, ...], max_functions: int | None) -> None:
        seen: set[str] = set()
        for function in functions:
            if not isinstance(function, ForgedFunction):
                raise ToolsetError(
                    f"a Toolset holds ForgedFunction objects, got {type(function).__name__} {function!r:.80}; "
                    "wrap a Python function with ForgedFunction.from_callable"
                )
            if function.name in seen:
                raise ToolsetError(f"function {function.name!r} appears twice; names in a toolset must be unique")
            seen.add(function.name)
        if max_functions is not None and len(functions) > max_functions:
            raise ToolsetError(
                f"a toolset of {len(functions)} function{'s' if len(functions) != 1 else ''} is over "
                f"max_functions={max_functions}; remove some or raise the limit"
            )
        self._functions = functions
        self._by_name = {f.name: f for f in functions}
        self._max_functions = max_functions
        self._fingerprint = content_hash([f.fingerprint for f in functions])
        self._interface_fingerprint = content_hash([f.interface_hash for f in functions])

    # --------------------------------------------------------------------------------------- container
    @property
    def functions(self) -> tuple[ForgedFunction, ...]:
        return self._functions

    @property
    def max_functions(self) -> int | None:
        return self._max_functions

    @property
    def names(self) -> list[str]:
        return [f.name for f in self._functions]

    def __len__(self) -> int:
        return len(self._functions)

    def __iter__(self) -> Iterator[ForgedFunction]:
        return iter(self._functions)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, ForgedFunction):
            return self._by_name.get(item.name) == item
        return item in self._by_name

    def __getitem__(self, name: str) -> ForgedFunction:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no function {name!r} in this toolset (it has: {', '.join(self.names) or 'none'})"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Toolset):
            return NotImplemented
        return self.fingerprint == other.fingerprint and self._max_functions == other._max_functions

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Toolset([{', '.join(f.signature() for f in self._functions)}])"

    # ------------------------------------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> str:
        """sha256 over every function's interface, code and determinism, in order."""
        return self._fingerprint

    @property
    def interface_fingerprint(self) -> str:
        """sha256 over what the agent's LM sees (names, descriptions, schemas, in order); code changes keep it."""
        return self._interface_fingerprint

    # ---------------------------------------------------------------------------------------- operations
    def apply(self, actions: Action | Mapping[str, Any] | Sequence[Action | Mapping[str, Any]]) -> Toolset:
        """A new toolset with `actions` applied in order. All or nothing.

        An action may also be given as its JSON form (a dict with `action`: `add_function`, `revise_function` or
        `remove_function`, and its fields), as an LM's reply or a saved report holds it.

        Raises:
            ToolsetError: adding a name that exists, revising or removing one that does not, or exceeding
                `max_functions`.
            FunctionError: an action's function is not valid.
        """
        if isinstance(actions, AddFunction | ReviseFunction | RemoveFunction | Mapping):
            actions = [actions]
        if isinstance(actions, str | bytes) or not isinstance(actions, Sequence):
            raise ToolsetError(
                f"Toolset.apply takes actions (AddFunction, ReviseFunction, RemoveFunction, or their JSON form as "
                f"dicts), one or a list of them; got {type(actions).__name__} {actions!r:.80}"
            )
        functions = list(self._functions)
        index = {f.name: i for i, f in enumerate(functions)}
        for given in actions:
            action = _parse_action(given) if isinstance(given, Mapping) else given
            if isinstance(action, AddFunction):
                if action.name in index:
                    raise ToolsetError(f"function {action.name!r} already exists; use ReviseFunction to change it")
                if self._max_functions is not None and len(index) >= self._max_functions:
                    raise ToolsetError(
                        f"adding {action.name!r} would exceed max_functions={self._max_functions}; remove or revise "
                        "a function instead"
                    )
                index[action.name] = len(functions)
                functions.append(action.to_function())
            elif isinstance(action, ReviseFunction):
                if action.name not in index:
                    raise ToolsetError(
                        f"cannot revise {action.name!r}: no such function (have: {', '.join(index) or 'none'}); "
                        "use AddFunction to create it"
                    )
                old = functions[index[action.name]]
                functions[index[action.name]] = action.to_function(parent=old.fingerprint)
            elif isinstance(action, RemoveFunction):
                if action.name not in index:
                    raise ToolsetError(
                        f"cannot remove {action.name!r}: no such function (have: {', '.join(index) or 'none'})"
                    )
                functions.pop(index.pop(action.name))
                index = {f.name: i for i, f in enumerate(functions)}
            else:
                raise ToolsetError(f"unknown action {action!r:.80}; use AddFunction, ReviseFunction or RemoveFunction")
        return Toolset(functions, max_functions=self._max_functions)

    def diff(self, other: Toolset) -> ToolsetDiff:
        """What changes from this toolset to `other` (added and removed names, revisions with a code diff)."""
        other = _as_toolset(other, "diff")
        revised = []
        for name in self.names:
            if name not in other:
                continue
            old, new = self[name], other[name]
            if old.fingerprint == new.fingerprint:
                continue
            code_diff = "".join(
                difflib.unified_diff(
                    old.code.splitlines(keepends=True),
                    new.code.splitlines(keepends=True),
                    fromfile=f"a/{name}",
                    tofile=f"b/{name}",
                )
            )
            revised.append(
                FunctionRevision(
                    name=name,
                    interface_changed=old.interface_hash != new.interface_hash,
                    code_changed=old.code_hash != new.code_hash,
                    code_diff=code_diff,
                )
            )
        before = [n for n in self.names if n in other]
        after = [n for n in other.names if n in self]
        return ToolsetDiff(
            added=tuple(n for n in other.names if n not in self),
            removed=tuple(n for n in self.names if n not in other),
            revised=tuple(revised),
            reordered=tuple(after) if after != before else (),
        )

    def merge(self, other: Toolset, on_conflict: Literal["error", "ours", "theirs"] = "error") -> Toolset:
        """This toolset's functions, then those of `other` it lacks. Same name with different content is a conflict.

        Args:
            other: The toolset to bring in.
            on_conflict: "error" raises, "ours" keeps this toolset's version, "theirs" takes `other`'s.
        """
        if on_conflict not in ("error", "ours", "theirs"):
            raise ToolsetError(f"on_conflict={on_conflict!r} must be 'error', 'ours' or 'theirs'")
        other = _as_toolset(other, "merge")
        conflicts = [f.name for f in other if f.name in self and self[f.name].fingerprint != f.fingerprint]
        if conflicts and on_conflict == "error":
            raise ToolsetError(
                f"both toolsets define {conflicts} differently; pass on_conflict='ours' or 'theirs' to choose",
                conflicts=tuple(conflicts),
            )
        functions = [other[f.name] if f.name in conflicts and on_conflict == "theirs" else f for f in self]
        functions += [f for f in other if f.name not in self]
        return Toolset(functions, max_functions=self._max_functions)

    # ----------------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "max_functions": self._max_functions,
            "fingerprint": self.fingerprint,
            "functions": [f.model_dump(mode="json") for f in self._functions],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "toolset data") -> Toolset:
        """Rebuild a toolset from `to_dict()` output, validating every function again."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ToolsetError(f'{source} is not a saved toolset (no "format": {FORMAT!r}); save it with Toolset.save')
        if json_depth(data) > MAX_JSON_DEPTH:
            raise ToolsetError(
                f"{source} nests more than {MAX_JSON_DEPTH} levels deep, which no saved toolset does; save it with "
                "Toolset.save"
            )
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ToolsetError(
                f"{source} has format version {version!r}, newer than this toolforge reads ({FORMAT_VERSION}); "
                "upgrade toolforge"
            )
        functions = data.get("functions")
        if not isinstance(functions, list):
            raise ToolsetError(f'{source}: "functions" must be a list')
        try:
            toolset = cls(
                [ForgedFunction(**f) if isinstance(f, dict) else f for f in functions],
                max_functions=data.get("max_functions"),
            )
        except TypeError as exc:
            raise ToolsetError(f"{source}: a function entry is malformed ({exc})") from None
        except UnicodeEncodeError as exc:  # a lone surrogate ("\\ud800"), which JSON can spell and UTF-8 cannot
            raise ToolsetError(
                f"{source}: a function holds text that is not Unicode ({exc.object[exc.start : exc.end]!r}, a lone "
                "surrogate); save it with Toolset.save"
            ) from None
        except ToolforgeError as exc:
            raise type(exc)(f"{source}: {exc}") from None
        if data.get("fingerprint") not in (None, toolset.fingerprint):
            logger.warning("%s: stored fingerprint differs from its content; the content is used", source)
        return toolset

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the toolset as JSON (atomically: a crash never leaves a half-written file). Returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Toolset:
        """Read a toolset written by `save`.

        Raises:
            ToolsetError: the file is missing, not UTF-8, not JSON (or nested over 100 levels), or not a toolset; the
                message names the file.
            FunctionError: a function in it is no longer valid here (e.g. a package is missing).
        """
        path = Path(path)
        data = read_json(
            path,
            "toolset file",
            "check the path: a toolset file is the JSON that Toolset.save writes",
            ToolsetError,
        )
        return cls.from_dict(data, source=f"toolset file {str(path)!r}")

    # --------------------------------------------------------------------------------- the DSPy parameter
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return self.to_dict()

    def load_state(self, state: dict[str, Any]) -> Toolset:
        loaded = Toolset.from_dict(state, source="saved program state for a Toolset")
        self._set(loaded._functions, loaded._max_functions)
        return self

    def reset(self) -> None:
        """Keep the functions. DSPy's optimizers reset their student's parameters (`reset_copy()`) to clear what
        they themselves learn, a predictor's demos; the functions are learned by `FunctionOptimizer`, and the demos
        such an optimizer bootstraps with its teacher (a copy that keeps them) call them. A trained program loaded
        from a file thus keeps its functions through `dspy.BootstrapFewShot` and the like."""

    # --------------------------------------------------------------------------------------------- tools
    def as_tools(self, sandbox: Sandbox | None = None) -> list[dspy.Tool]:
        """One `dspy.Tool` per function, for any DSPy program (ReAct included).

        Each tool validates its arguments against the function's JSON Schema, runs the code in `sandbox`
        (default: the process-wide one), records the call for `toolforge.trace.record_calls`, and returns the
        value. A failure raises `FunctionCallError` with the reason, which DSPy's ReAct shows the LM as an
        observation. The tools are built by `toolforge.tools`.
        """
        if _tool_runtime is None:
            raise ToolforgeError("no tool runtime is installed; import toolforge (it installs toolforge.tools)")
        return _tool_runtime(self._functions, sandbox)


def _as_toolset(other: Any, method: str) -> Toolset:
    """`other` as a Toolset: one as it is, a list of functions made into one; anything else refused by name."""
    if isinstance(other, Toolset):
        return other
    if isinstance(other, list | tuple) and all(isinstance(f, ForgedFunction) for f in other):
        return Toolset(other)
    raise ToolsetError(
        f"Toolset.{method} takes another Toolset (or a list of ForgedFunctions), got {type(other).__name__} "
        f"{other!r:.60}; load a saved one with Toolset.load(path)"
    )
