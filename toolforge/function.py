"""`ForgedFunction`: one learnable function of an agent, validated at construction and identified by content.

A forged function is what the optimizer LM writes: a name, a description, a JSON Schema of its arguments, and
Python source defining a top-level function of that name. The agent's LM sees the name, the description and the
schema (the *interface*), never the code. Construction checks everything that can be checked without running the
code, and raises `FunctionError` with a reason that names the fix; running it is the sandbox's job.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import inspect
import json
import keyword
import os
import re
import subprocess
import symtable
import sys
import tempfile
import textwrap
import typing
from collections.abc import Callable
from functools import cached_property
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from toolforge._hashing import canonical_json, content_hash
from toolforge.errors import FunctionCallError, FunctionError

__all__ = ["ForgedFunction"]

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


class FunctionFields(BaseModel):
    """The fields that define a function: a `ForgedFunction` holds them, and so do the actions that carry one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    parameters: dict[str, Any]
    code: str
    packages: tuple[str, ...] = ()
    deterministic: bool = True


class ForgedFunction(FunctionFields):
    """A validated, immutable Python function that an agent can call as a tool.

    Args:
        name: A Python identifier, and the name of the top-level `def` in `code`.
        description: What the function does and returns, as the agent's LM will read it.
        parameters: A JSON Schema object (`type: object`, `properties`, `required`) of the arguments. It must agree
            with the `def`: the same argument names, and `required` exactly the arguments without a default.
        code: Python source that defines the function (helpers and imports may sit beside it).
        packages: Modules the code needs beyond the standard library. Each must be importable here: nothing is
            installed at run time.
        deterministic: True when equal arguments always give an equal result, so that results may be cached.
        parent: The `fingerprint` of the function this one revises, if any (set by `Toolset.apply`).

    Raises:
        FunctionError: when any rule above is broken; the message says which and how to fix it.

    Examples:
        >>> f = ForgedFunction(
        ...     "add", "Return a + b.",
        ...     {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        ...      "required": ["a", "b"]},
        ...     "def add(a, b):\\n    return a + b\\n")
        >>> f.interface_hash == f.model_copy().interface_hash
        True
    """

    parent: str | None = None

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        code: str,
        packages: typing.Iterable[str] = (),
        deterministic: bool = True,
        parent: str | None = None,
        **extra: Any,
    ) -> None:
        fields = dict(
            name=name,
            description=description,
            parameters=parameters,
            code=code,
            packages=tuple(packages) if not isinstance(packages, str) else (packages,),
            deterministic=deterministic,
            parent=parent,
            **extra,
        )
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            raise FunctionError(f"function {name!r} has fields of the wrong type ({problems}); fix them") from None

    @model_validator(mode="after")
    def _validate(self) -> ForgedFunction:
        _check_name(self.name)
        if not self.description.strip():
            raise FunctionError(
                f"function {self.name!r}: description is empty; say in a sentence what it does and returns"
            )
        _check_schema(self.name, self.parameters)
        tree = _parse(self.name, self.code)
        _check_def(self.name, tree, self.parameters)
        _check_packages(self.name, self.packages, tree)
        return self

    def model_copy(self, *, update: typing.Mapping[str, Any] | None = None, deep: bool = False) -> ForgedFunction:
        """A copy. With `update`, a new function validated as the constructor validates it, its hashes computed
        afresh: pydantic's own copy would keep the original's cached `interface_hash`, `code_hash` and
        `fingerprint` (so caches would key the new code by the old one's identity) and skip validation."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self)(**(self.model_dump() | dict(update)))

    # ----------------------------------------------------------------------------------------------- identity
    @cached_property
    def interface_hash(self) -> str:
        """sha256 of what the agent's LM sees: name, description and parameters."""
        return content_hash({"name": self.name, "description": self.description, "parameters": self.parameters})

    @cached_property
    def code_hash(self) -> str:
        """sha256 of what runs: the code and the packages it needs."""
        return content_hash({"code": self.code, "packages": list(self.packages)})

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the whole function (interface, code and determinism); lineage (`parent`) is not content."""
        return content_hash(
            {"interface": self.interface_hash, "code": self.code_hash, "deterministic": self.deterministic}
        )

    @cached_property
    def code_shape(self) -> str:
        """sha256 of what the code does, whatever it is called: its syntax tree with the function's own name (its
        def and recursive calls) replaced by a placeholder and docstrings left out, and its packages. Two functions
        with the same shape behave alike on every input (unless they read their own name or docstring), so one added
        beside the other is a copy. Code too deep to walk has a shape of its own (never taken for a copy)."""
        try:
            return self._code_shape()
        except (RecursionError, MemoryError):
            return f"unshaped:{self.fingerprint}"

    def _code_shape(self) -> str:
        tree = ast.parse(self.code)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    if isinstance(body[0].value.value, str):
                        node.body = body[1:] or [ast.Pass()]
            if isinstance(node, ast.FunctionDef) and node.name == self.name:
                node.name = "<self>"  # not an identifier: no name in the code can take it
            elif isinstance(node, ast.Name) and node.id == self.name:
                node.id = "<self>"
        return content_hash({"tree": ast.dump(tree, include_attributes=False), "packages": sorted(self.packages)})

    @cached_property
    def _validator(self) -> jsonschema.protocols.Validator:
        cls = jsonschema.validators.validator_for(self.parameters, default=jsonschema.Draft202012Validator)
        return cls(self.parameters)

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Check `arguments` against `parameters`; return them as a dict.

        Raises:
            FunctionCallError: naming each mismatch, so that the agent can correct its call.
        """
        if not isinstance(arguments, dict):
            raise FunctionCallError(
                f"arguments for {self.name!r} must be a JSON object of named arguments, got "
                f"{type(arguments).__name__}: {arguments!r:.200}"
            )
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join((f"{'.'.join(map(str, e.path))}: " if e.path else "") + e.message for e in errors[:5])
            expected = ", ".join(
                f"{k}{'' if k in self.parameters.get('required', []) else '?'}" for k in self.parameters["properties"]
            )
            raise FunctionCallError(
                f"arguments for {self.name!r} do not match its schema: {problems}; it takes ({expected})"
            )
        return dict(arguments)

    def signature(self) -> str:
        """A one-line, Python-like rendering of the interface, e.g. `area(width: number, height: number)`."""
        required = set(self.parameters.get("required", []))
        args = []
        for arg, schema in self.parameters["properties"].items():
            kind = schema.get("type", "any") if isinstance(schema, dict) else "any"
            args.append(f"{arg}: {kind if isinstance(kind, str) else '|'.join(kind)}{'' if arg in required else '?'}")
        return f"{self.name}({', '.join(args)})"

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_callable(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        deterministic: bool = True,
    ) -> ForgedFunction:
        """Build a forged function from a real Python function: its source, docstring and type hints.

        The function must be self-contained: module-level imports it uses are copied into the code, but other
        module-level names (helpers, constants) and closures are not, and are reported as errors.

        Args:
            fn: A function defined with `def` in a file (its source must be readable).
            name: The tool's name; defaults to `fn.__name__` (the def is renamed to match).
            description: Defaults to the docstring's first paragraph.
            deterministic: Whether equal arguments always give an equal result.

        Examples:
            >>> def gcd(a: int, b: int) -> int:
            ...     '''Greatest common divisor of a and b.'''
            ...     import math
            ...     return math.gcd(a, b)
            >>> ForgedFunction.from_callable(gcd).signature()   # doctest: +SKIP
            'gcd(a: integer, b: integer)'
        """
        if not inspect.isfunction(fn):
            raise FunctionError(
                f"from_callable needs a function defined with def, got {type(fn).__name__} {fn!r:.80}; wrap it in one"
            )
        if fn.__name__ == "<lambda>":
            raise FunctionError("from_callable cannot use a lambda; define the function with def and a docstring")
        if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
            raise FunctionError(f"function {fn.__name__!r} is async or a generator; forged functions return a value")
        if hasattr(fn, "__wrapped__"):
            raise FunctionError(
                f"function {fn.__name__!r} is wrapped by a decorator, whose code a forged function would lose; pass "
                f"the undecorated function ({fn.__name__}.__wrapped__), or write what the decorator adds into it"
            )
        if fn.__code__.co_freevars:
            raise FunctionError(
                f"function {fn.__name__!r} uses variables of an enclosing function "
                f"({', '.join(fn.__code__.co_freevars)}); define it at module level and pass them as arguments"
            )
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError) as exc:
            raise FunctionError(
                f"cannot read the source of {fn.__name__!r} ({exc}); define it in a .py file, "
                "or build ForgedFunction(name, description, parameters, code) yourself"
            ) from None
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == fn.__name__)
        lines = source.splitlines()
        def_source = "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n"
        tool_name = name or fn.__name__
        if tool_name != fn.__name__:
            def_source = re.sub(rf"^def\s+{re.escape(fn.__name__)}\b", f"def {tool_name}", def_source, count=1)
        imports, packages = _global_imports(fn, node, def_source, tool_name)
        if _signature_names(node, annotations=True) - set(dir(builtins)):
            # The schema already holds what the hints say; in the sandbox they must not be evaluated, since the
            # names they use (Optional, a user's class, ...) live in the caller's module.
            imports.insert(0, "from __future__ import annotations")
        doc = inspect.getdoc(fn) or ""
        summary = doc.split("\n\n", 1)[0].strip()
        if description is None and not summary:
            raise FunctionError(f"function {fn.__name__!r} has no docstring; give it one or pass description=")
        return cls(
            name=tool_name,
            description=description if description is not None else " ".join(summary.split()),
            parameters=_schema_of(fn, doc),
            code="".join(f"{line}\n" for line in imports) + ("\n" if imports else "") + def_source,
            packages=packages,
            deterministic=deterministic,
        )


# --------------------------------------------------------------------------------------------------- checks
def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        suggestion = re.sub(r"\W", "_", name).strip("_") or "my_function"
        if suggestion[0].isdigit() or keyword.iskeyword(suggestion):
            suggestion = f"fn_{suggestion}"
        raise FunctionError(
            f"function name {name!r} is not a Python identifier (or is a keyword); use letters, digits and "
            f"underscores, not starting with a digit, e.g. {suggestion!r}"
        )


def _check_schema(name: str, parameters: dict[str, Any]) -> None:
    where = f"function {name!r}: parameters"
    if parameters.get("type") != "object":
        raise FunctionError(f'{where} must be a JSON Schema with "type": "object", got type {parameters.get("type")!r}')
    properties = parameters.get("properties", None)
    if not isinstance(properties, dict):
        raise FunctionError(f'{where} needs "properties", an object mapping each argument name to its schema')
    for arg, schema in properties.items():
        if not isinstance(schema, dict):
            raise FunctionError(f'{where}: property {arg!r} must be a schema object such as {{"type": "number"}}')
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise FunctionError(f'{where}: "required" must be a list of argument names, got {required!r}')
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise FunctionError(f'{where}: "required" names {unknown} that are not in "properties"; add or drop them')
    problem = _schema_problem(canonical_json(parameters))
    if problem:
        raise FunctionError(f"{where} is not a valid JSON Schema: {problem}; fix the schema")


@functools.lru_cache(maxsize=1024)
def _schema_problem(schema_json: str) -> str | None:
    """Why a JSON Schema is invalid, or None (cached: checking a schema is slow, and schemas repeat)."""
    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


def _parse(name: str, code: str) -> ast.Module:
    try:
        compile(code, f"<forged {name}>", "exec", dont_inherit=True)
        return ast.parse(code)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        raise FunctionError(
            f"function {name!r}: code does not compile: {exc.msg} at line {exc.lineno}"
            + (f": {line!r}" if line else "")
            + "; fix the syntax"
        ) from None
    except ValueError as exc:  # e.g. null bytes
        raise FunctionError(f"function {name!r}: code does not compile: {exc}; fix the source text") from None


def _check_def(name: str, tree: ast.Module, parameters: dict[str, Any]) -> None:
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    node = next((n for n in defs if n.name == name), None)
    if node is None:
        found = ", ".join(repr(n.name) for n in defs) or "none"
        raise FunctionError(
            f"function {name!r}: code does not define a top-level function {name!r} (functions defined: {found}); "
            f"name the def {name!r}"
        )
    if isinstance(node, ast.AsyncFunctionDef):
        raise FunctionError(f"function {name!r}: code defines it with async def; use a plain def")
    args = node.args
    if args.posonlyargs:
        raise FunctionError(f"function {name!r}: arguments are passed by name; remove the '/' from the def")
    if args.vararg or args.kwarg:
        star = f"*{args.vararg.arg}" if args.vararg else f"**{args.kwarg.arg}"  # type: ignore[union-attr]
        raise FunctionError(f"function {name!r}: the def takes {star}; declare every argument by name instead")
    positional_required = args.args[: len(args.args) - len(args.defaults)]
    def_required = {a.arg for a in positional_required} | {
        a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    }
    def_names = [a.arg for a in args.args + args.kwonlyargs]
    schema_names = list(parameters["properties"])
    only_def = [a for a in def_names if a not in parameters["properties"]]
    only_schema = [a for a in schema_names if a not in def_names]
    if only_def or only_schema:
        parts = []
        if only_def:
            parts.append(f"the def takes {only_def} that the schema's properties lack")
        if only_schema:
            parts.append(f"the schema's properties have {only_schema} that the def does not take")
        raise FunctionError(
            f"function {name!r}: parameters disagree with the def: {' and '.join(parts)}; make them name the same "
            "arguments"
        )
    schema_required = set(parameters.get("required", []))
    if def_required != schema_required:
        raise FunctionError(
            f"function {name!r}: required arguments disagree: the def requires {sorted(def_required)} (no default) "
            f'but the schema\'s "required" is {sorted(schema_required)}; give optional arguments a default and '
            'list exactly the others in "required"'
        )


def _import_problem(module: str) -> str | None:
    """Why forged code could not import the top-level `module` in a sandbox worker, or None when it can.

    Workers run this interpreter with `-s -P` and a clean environment: the standard library and the installed
    packages, but not the current directory, PYTHONPATH, the user site or paths added at run time.
    """
    try:
        if importlib.util.find_spec(module) is None:
            return "missing"
    except (ImportError, ValueError):
        return "missing"
    if module in sys.stdlib_module_names or module in sys.builtin_module_names:
        return None
    return None if _workers_can_import(module) else "host only"


@functools.lru_cache(maxsize=256)
def _workers_can_import(module: str) -> bool:
    """Ask an interpreter started as sandbox workers are whether it finds `module` (once per module)."""
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 3)"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(
            [sys.executable, "-s", "-P", "-B", "-c", code],
            env=env,
            cwd=tempfile.gettempdir(),
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: the call itself will say, if it comes to that
    return done.returncode == 0


_HOST_ONLY = (
    "is importable in this process but not in the sandbox's workers, which see only installed packages (not the "
    "current directory, PYTHONPATH, the user site or paths added at run time); install it into the environment "
    "(pip install -e . for your own project) or put what the function needs in its code"
)


def _check_packages(name: str, packages: tuple[str, ...], tree: ast.Module) -> None:
    for package in packages:
        top = package.split(".")[0]
        if not all(part.isidentifier() for part in package.split(".")):
            raise FunctionError(
                f"function {name!r}: package {package!r} is not a module name; list what the code imports "
                "(e.g. 'sklearn', not 'scikit-learn')"
            )
        problem = _import_problem(top)
        if problem == "missing":
            raise FunctionError(
                f"function {name!r}: package {package!r} is not importable in this environment and nothing is "
                f"installed at run time; install it (pip install {top}) or remove it"
            )
        if problem:
            raise FunctionError(f"function {name!r}: package {package!r} {_HOST_ONLY}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise FunctionError(f"function {name!r}: relative import at line {node.lineno}; import absolutely")
        modules = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else []
        )
        line = getattr(node, "lineno", 0)
        for module in modules:
            problem = _import_problem(module.split(".")[0])
            if problem == "missing":
                raise FunctionError(
                    f"function {name!r}: imports {module!r} (line {line}), which is not importable in this "
                    f"environment and nothing is installed at run time; use the standard library or an installed "
                    f"package"
                )
            if problem:
                raise FunctionError(f"function {name!r}: imports {module!r} (line {line}); it {_HOST_ONLY}")


# -------------------------------------------------------------------------------------- from_callable helpers
def _global_imports(
    fn: Callable[..., Any], node: ast.FunctionDef, def_source: str, tool_name: str
) -> tuple[list[str], list[str]]:
    """Import lines for the module-level modules `fn` (its body and default values) uses; errors for every other
    outside name."""
    table = next(
        t for t in symtable.symtable(def_source, "<source>", "exec").get_children() if t.get_name() == tool_name
    )
    imports: list[str] = []
    packages: list[str] = []
    fn_globals = fn.__globals__
    in_defaults = _signature_names(node, annotations=False)
    for global_name in sorted(_globals_of(table) | in_defaults):
        if global_name in fn_globals:
            value = fn_globals[global_name]
            if inspect.ismodule(value):
                module = value.__name__
                imports.append(f"import {module}" if module == global_name else f"import {module} as {global_name}")
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in packages:
                    packages.append(top)
                continue
            if global_name in in_defaults:
                raise FunctionError(
                    f"function {fn.__name__!r}: a default value uses the module-level name {global_name!r}, which a "
                    f"forged function cannot see; write its value ({value!r:.60}) in the def instead"
                )
            raise FunctionError(
                f"function {fn.__name__!r} uses the module-level name {global_name!r}, which a forged function "
                "cannot see; move it inside the function or pass it as an argument"
            )
        if not hasattr(builtins, global_name):
            raise FunctionError(
                f"function {fn.__name__!r} uses {global_name!r}, which is neither defined in it nor a builtin; "
                "define or import it inside the function"
            )
    return imports, packages


def _signature_names(node: ast.FunctionDef, *, annotations: bool) -> set[str]:
    """The names that the def's annotations (or, with `annotations=False`, its default values) use: unlike the
    body's, they are evaluated where the def runs."""
    args = node.args
    if annotations:
        parts = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.annotation]
        parts += [node.returns] if node.returns else []
    else:
        parts = [d for d in (*args.defaults, *args.kw_defaults) if d is not None]
    return {n.id for part in parts for n in ast.walk(part) if isinstance(n, ast.Name)}


def _globals_of(table: symtable.SymbolTable) -> set[str]:
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():  # nested functions, lambdas and comprehensions see the same globals
        names |= _globals_of(child)
    return names


def _schema_of(fn: Callable[..., Any], doc: str) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # unresolvable forward references
        raise FunctionError(f"cannot resolve the type hints of {fn.__name__!r} ({exc}); use importable types") from None
    arg_docs = _arg_docs(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    defs: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise FunctionError(
                f"function {fn.__name__!r}: argument {param.name!r} is {param.kind.description}; "
                "forged functions take named arguments only"
            )
        schema: dict[str, Any] = {}
        if param.name in hints:
            schema = TypeAdapter(hints[param.name]).json_schema(ref_template="#/$defs/{model}")
            defs.update(schema.pop("$defs", {}))
            schema.pop("title", None)
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif param.default is None or isinstance(param.default, bool | int | float | str):
            schema["default"] = param.default
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if defs:
        parameters["$defs"] = defs
    return parameters


def _arg_docs(doc: str) -> dict[str, str]:
    """Argument descriptions from a Google-style `Args:` section."""
    found: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, current = True, None
            continue
        if not in_args:
            continue
        if stripped and not line.startswith((" ", "\t")):
            break  # the next section
        match = _ARG_LINE.match(line)
        if match and len(line) - len(line.lstrip()) <= 4:
            current = match.group(1).lstrip("*")
            found[current] = match.group(3).strip()
        elif current and stripped:
            found[current] = f"{found[current]} {stripped}"
    return found
