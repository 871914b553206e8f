"""The data model stands alone: `toolset.py`, `function.py` and `actions.py` never reach the evaluation layer
(`evaluate`, `keys`, `cache`), the sandbox, or the runtime of forged tools (`tools`), neither when imported nor
when their functions run.

Two checks: every `import` in their source and in the toolforge modules those reach, at module level or inside a
function (not under `if TYPE_CHECKING:`, which never runs), followed to the end; and a fresh interpreter that
imports only them, with the package's `__init__` (which imports everything) bypassed, and uses them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "toolforge"
DATA_MODEL = ("toolforge.toolset", "toolforge.function", "toolforge.actions")
FORBIDDEN = {
    "toolforge.evaluate",
    "toolforge.keys",
    "toolforge.cache",
    "toolforge.sandbox",
    "toolforge._worker",
    "toolforge.tools",
}


def _path(module: str) -> Path | None:
    parts = module.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if parts and candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> set[str]:
    """The toolforge modules `module` imports anywhere in its source, bar `if TYPE_CHECKING:` blocks."""
    path = _path(module)
    assert path is not None, module
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from toolforge import tools`
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: a relative import; toolforge imports absolutely")
        elif (  # importlib.import_module("toolforge....") / __import__("toolforge....")
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
        ):
            found.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name.startswith("toolforge.") and _path(name) is not None}


def test_the_data_model_imports_nothing_of_evaluation_sandbox_or_tool_runtime_anywhere_in_its_source():
    for start in DATA_MODEL:
        reached, todo, via = {start}, [start], {start: start}
        while todo:
            module = todo.pop()
            for name in _imports(module) - reached:
                reached.add(name)
                via[name] = f"{via[module]} -> {name}"
                todo.append(name)
        bad = sorted(reached & FORBIDDEN)
        assert not bad, f"{start} reaches {bad}: " + "; ".join(via[name] for name in bad)


def test_the_check_sees_an_import_inside_a_function():
    # the checker itself: the evaluator reaches the sandbox only through imports it makes
    assert "toolforge.tools" in _imports("toolforge.evaluate")
    assert "toolforge.sandbox" in _imports("toolforge.tools")


_SCRIPT = """
import importlib, json, sys, tempfile, types
package = types.ModuleType("toolforge")
package.__path__ = [PACKAGE]
sys.modules["toolforge"] = package  # the package's __init__, which imports everything, is bypassed
for name in DATA_MODEL:
    importlib.import_module(name)
from toolforge.actions import AddFunction, RemoveFunction, ReviseFunction
from toolforge.function import ForgedFunction
from toolforge.toolset import Toolset

def area(width: float, height: float) -> float:
    "Area of a rectangle."
    return width * height

function = ForgedFunction.from_callable(area)
toolset = Toolset([function]).apply([ReviseFunction.of(function.model_copy(update={"description": "Area."}))])
schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
half = AddFunction(name="half", description="Half.", code="def half(x):\\n    return x / 2\\n", parameters=schema)
toolset = toolset.apply(half)
other = toolset.apply(RemoveFunction(name="half"))
str(toolset.diff(other)), toolset.merge(other), Toolset().load_state(toolset.dump_state())
with tempfile.TemporaryDirectory() as folder:
    assert Toolset.load(toolset.save(folder + "/t.json")) == toolset
try:
    toolset.as_tools()
except Exception as exc:  # no runtime is installed: the data model does not go looking for one
    print(json.dumps(type(exc).__name__), file=sys.stderr)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("toolforge."))))
"""


def test_importing_and_using_the_data_model_loads_none_of_them(tmp_path):
    script = tmp_path / "data_model.py"  # a file: from_callable reads the function's source
    script.write_text(_SCRIPT.replace("PACKAGE", repr(str(PACKAGE))).replace("DATA_MODEL", repr(DATA_MODEL)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert set(DATA_MODEL) <= loaded
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert "ToolforgeError" in done.stderr  # as_tools without the runtime says so, and imports nothing
