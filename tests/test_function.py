"""ForgedFunction: every validation rule, with the text of its error, and content hashes."""

from __future__ import annotations

import datetime
import functools
import math
import subprocess
import sys
from typing import Literal

import pytest

import toolforge as tf
from tests.conftest import ADD_SCHEMA, make_function


def test_valid_function_keeps_its_fields_and_is_frozen():
    f = make_function()
    assert (f.name, f.packages, f.deterministic, f.parent) == ("add", (), True, None)
    with pytest.raises(Exception):
        f.name = "other"  # type: ignore[misc]


def test_positional_construction_matches_keywords():
    code = "def add(a, b):\n    return a + b\n"
    assert tf.ForgedFunction("add", "Return a + b (add).", ADD_SCHEMA, code) == make_function()


@pytest.mark.parametrize("name", ["2fast", "my-func", "with space", ""])
def test_name_must_be_an_identifier(name):
    with pytest.raises(tf.FunctionError, match="is not a Python identifier.*use letters, digits and underscores"):
        make_function(name=name, code="def f(a, b):\n    return a\n")


def test_name_must_not_be_a_keyword():
    with pytest.raises(tf.FunctionError, match="'class' is not a Python identifier \\(or is a keyword\\)"):
        make_function(name="class", code="def f(a, b):\n    return a\n")


def test_description_must_not_be_empty():
    with pytest.raises(tf.FunctionError, match="description is empty; say in a sentence"):
        make_function(description="  ")


def test_code_must_compile_and_the_error_names_the_line():
    with pytest.raises(tf.FunctionError, match="code does not compile: .* at line 2.*fix the syntax"):
        make_function(code="def add(a, b):\n    return a +\n")


def test_code_must_define_the_named_function():
    with pytest.raises(
        tf.FunctionError,
        match="does not define a top-level function 'add' \\(functions defined: 'plus'\\); name the def 'add'",
    ):
        make_function(code="def plus(a, b):\n    return a + b\n")


def test_a_nested_def_does_not_count_as_top_level():
    code = "def outer():\n    def add(a, b):\n        return a + b\n    return add\n"
    with pytest.raises(tf.FunctionError, match="does not define a top-level function 'add'"):
        make_function(code=code)


def test_async_def_is_refused():
    with pytest.raises(tf.FunctionError, match="async def; use a plain def"):
        make_function(code="async def add(a, b):\n    return a + b\n")


def test_schema_and_def_must_name_the_same_arguments():
    with pytest.raises(
        tf.FunctionError,
        match=r"the def takes \['c'\] that the schema's properties lack and the schema's properties have \['b'\]",
    ):
        make_function(code="def add(a, c):\n    return a + c\n")


def test_required_must_be_exactly_the_arguments_without_default():
    with pytest.raises(
        tf.FunctionError, match=r"the def requires \['a'\] \(no default\) but the schema's \"required\""
    ):
        make_function(code="def add(a, b=1):\n    return a + b\n")


def test_optional_argument_with_default_is_accepted():
    schema = {**ADD_SCHEMA, "required": ["a"]}
    f = make_function(parameters=schema, code="def add(a, b=1):\n    return a + b\n")
    assert f.parameters["required"] == ["a"]


def test_keyword_only_arguments_count():
    f = make_function(code="def add(a, *, b):\n    return a + b\n")
    assert f.signature() == "add(a: number, b: number)"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def add(a, b, *rest):\n    return a\n", r"takes \*rest; declare every argument by name"),
        ("def add(a, b, **kw):\n    return a\n", r"takes \*\*kw; declare every argument by name"),
        ("def add(a, b, /):\n    return a\n", "arguments are passed by name; remove the '/'"),
    ],
)
def test_variadic_and_positional_only_arguments_are_refused(code, message):
    with pytest.raises(tf.FunctionError, match=message):
        make_function(code=code)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"type": "array"}, 'must be a JSON Schema with "type": "object", got type \'array\''),
        ({"type": "object"}, 'needs "properties"'),
        ({"type": "object", "properties": {"a": 3}}, "property 'a' must be a schema object"),
        ({"type": "object", "properties": {}, "required": ["a"]}, r"\"required\" names \['a'\] that are not in"),
        ({"type": "object", "properties": {"a": {"type": "banana"}}, "required": ["a"]}, "not a valid JSON Schema"),
    ],
)
def test_parameters_must_be_an_object_schema(parameters, message):
    with pytest.raises(tf.FunctionError, match=message):
        make_function(parameters=parameters, code="def add(a):\n    return a\n")


def test_fields_of_the_wrong_type_raise_function_error():
    with pytest.raises(tf.FunctionError, match="fields of the wrong type.*parameters"):
        make_function(parameters="not a dict")


def test_missing_package_is_refused_with_the_fix():
    with pytest.raises(
        tf.FunctionError,
        match="package 'surely_not_installed_pkg' is not importable .* install it \\(pip install surely_not",
    ):
        make_function(packages=["surely_not_installed_pkg"])


def test_package_that_is_not_a_module_name_is_refused():
    with pytest.raises(tf.FunctionError, match="'scikit-learn' is not a module name"):
        make_function(packages=["scikit-learn"])


def test_import_in_code_must_be_importable():
    code = "import surely_missing_mod\n\ndef add(a, b):\n    return a + b\n"
    with pytest.raises(tf.FunctionError, match="imports 'surely_missing_mod' \\(line 1\\), which is not importable"):
        make_function(code=code)


def test_import_inside_the_function_is_checked_too():
    code = "def add(a, b):\n    from nowhere_pkg.sub import x\n    return a + b\n"
    with pytest.raises(tf.FunctionError, match="imports 'nowhere_pkg.sub' \\(line 2\\)"):
        make_function(code=code)


def test_relative_import_is_refused():
    with pytest.raises(tf.FunctionError, match="relative import at line 1"):
        make_function(code="from . import x\n\ndef add(a, b):\n    return a + b\n")


def test_installed_packages_and_stdlib_imports_are_accepted():
    code = "import math\nimport pydantic\n\ndef add(a, b):\n    return math.fsum([a, b])\n"
    assert make_function(code=code, packages=["pydantic"]).packages == ("pydantic",)


def test_interface_hash_ignores_code_and_code_hash_ignores_interface():
    base = make_function()
    recoded = make_function(code="def add(a, b):\n    return b + a\n")
    redescribed = make_function(description="Sum of a and b.")
    assert base.interface_hash == recoded.interface_hash != redescribed.interface_hash
    assert base.code_hash == redescribed.code_hash != recoded.code_hash
    assert len({base.fingerprint, recoded.fingerprint, redescribed.fingerprint}) == 3


def test_packages_are_part_of_the_code_hash():
    assert make_function().code_hash != make_function(packages=["json"]).code_hash


def test_hashes_are_equal_in_another_process():
    f = make_function()
    script = (
        "from tests.conftest import make_function; f = make_function(); "
        "print(f.interface_hash, f.code_hash, f.fingerprint)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=".")
    assert out.stdout.split() == [f.interface_hash, f.code_hash, f.fingerprint]


def test_validate_arguments_names_the_mismatch():
    f = make_function()
    assert f.validate_arguments({"a": 1, "b": 2.5}) == {"a": 1, "b": 2.5}
    with pytest.raises(tf.FunctionCallError, match="'b' is a required property; it takes \\(a, b\\)"):
        f.validate_arguments({"a": 1})
    with pytest.raises(tf.FunctionCallError, match="a: 'x' is not of type 'number'"):
        f.validate_arguments({"a": "x", "b": 1})
    with pytest.raises(tf.FunctionCallError, match="must be a JSON object of named arguments, got list"):
        f.validate_arguments([1, 2])


# ------------------------------------------------------------------------------------------ from_callable
def simple_interest(principal: float, rate: float, years: int = 1) -> float:
    """Interest earned without compounding.

    Args:
        principal: The amount invested.
        rate: Yearly rate as a fraction,
            e.g. 0.05 for 5%.
        years: How many years.
    """
    return round(principal * rate * years, 2)


def uses_math(x: float) -> float:
    """Square root of x."""
    return math.sqrt(x)


HELPER_CONSTANT = 3


def uses_a_global(x: int) -> int:
    """Multiply by a module constant."""
    return x * HELPER_CONSTANT


def test_from_callable_reads_source_docstring_and_hints():
    f = tf.ForgedFunction.from_callable(simple_interest)
    assert f.name == "simple_interest"
    assert f.description == "Interest earned without compounding."
    assert f.parameters == {
        "type": "object",
        "properties": {
            "principal": {"type": "number", "description": "The amount invested."},
            "rate": {"type": "number", "description": "Yearly rate as a fraction, e.g. 0.05 for 5%."},
            "years": {"type": "integer", "description": "How many years.", "default": 1},
        },
        "required": ["principal", "rate"],
    }
    assert f.code.startswith("def simple_interest(principal: float, rate: float, years: int = 1) -> float:")


def test_from_callable_copies_module_imports_into_the_code():
    f = tf.ForgedFunction.from_callable(uses_math)
    assert f.code.startswith("import math\n\ndef uses_math(")
    assert f.packages == ()


def test_from_callable_refuses_module_level_names():
    with pytest.raises(tf.FunctionError, match="uses the module-level name 'HELPER_CONSTANT'.*move it inside"):
        tf.ForgedFunction.from_callable(uses_a_global)


def test_from_callable_refuses_closures_and_lambdas():
    factor = 2

    def scaled(x: int) -> int:
        """Scale x."""
        return x * factor

    with pytest.raises(tf.FunctionError, match="uses variables of an enclosing function \\(factor\\)"):
        tf.ForgedFunction.from_callable(scaled)
    with pytest.raises(tf.FunctionError, match="cannot use a lambda"):
        tf.ForgedFunction.from_callable(lambda x: x)
    with pytest.raises(tf.FunctionError, match="needs a function defined with def, got builtin_function_or_method"):
        tf.ForgedFunction.from_callable(len)


def clipped_total(values: list[float], cap: float | None = None, mode: Literal["sum", "mean"] = "sum") -> float:
    """Sum or mean of the values, each clipped to cap."""
    kept = [min(v, cap) if cap is not None else v for v in values]
    return sum(kept) if mode == "sum" else sum(kept) / len(kept)


def weekday(day: datetime.date) -> str:
    """The weekday of an ISO date."""
    import datetime as dt

    return dt.date.fromisoformat(str(day)).strftime("%A")


def test_from_callable_hints_from_the_callers_module_do_not_break_the_def_in_the_sandbox(sandbox):
    f = tf.ForgedFunction.from_callable(clipped_total)  # Literal is imported only in this test module
    assert f.code.startswith("from __future__ import annotations\n\ndef clipped_total(")
    assert f.parameters["properties"]["mode"] == {"enum": ["sum", "mean"], "type": "string", "default": "sum"}
    assert sandbox.call(f, {"values": [1, 5, 2], "cap": 3}).value == 6
    g = tf.ForgedFunction.from_callable(weekday)
    assert sandbox.call(g, {"day": "2026-11-25"}).value == "Wednesday"
    assert tf.ForgedFunction.from_callable(uses_math).code.startswith("import math\n")  # builtin hints: no import


def tenth_of(x: float, scale: float = HELPER_CONSTANT) -> float:
    """x scaled, in tenths."""
    return x * scale / 10


def rounded_pi(digits: int = 2, value: float = math.pi) -> float:
    """Pi, rounded."""
    return round(value, digits)


def test_from_callable_default_values_must_be_visible_in_the_sandbox(sandbox):
    with pytest.raises(
        tf.FunctionError,
        match="a default value uses the module-level name 'HELPER_CONSTANT'.*write its value \\(3\\) in the def",
    ):
        tf.ForgedFunction.from_callable(tenth_of)
    f = tf.ForgedFunction.from_callable(rounded_pi)  # a module in a default is imported, like one in the body
    assert f.code.startswith("import math\n") and sandbox.call(f, {}).value == 3.14


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@logged
def area(w: float, h: float) -> float:
    """Area of a rectangle."""
    return w * h


def test_from_callable_refuses_a_decorated_function_and_names_the_undecorated_one():
    with pytest.raises(
        tf.FunctionError, match=r"'area' is wrapped by a decorator.*pass the undecorated function \(area\.__wrapped__\)"
    ):
        tf.ForgedFunction.from_callable(area)
    assert tf.ForgedFunction.from_callable(area.__wrapped__).code.startswith("def area(w: float, h: float)")


def test_from_callable_can_rename():
    f = tf.ForgedFunction.from_callable(uses_math, name="root")
    assert f.name == "root" and "def root(x: float)" in f.code


def test_a_module_only_this_process_can_import_is_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "my_project_helpers.py").write_text("def parse(text):\n    return float(text)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as a script's own folder, or PYTHONPATH, would be
    import my_project_helpers  # noqa: F401  (importable here)

    fix = "not in the sandbox's workers.*pip install -e \\. for your own project"
    with pytest.raises(tf.FunctionError, match=f"package 'my_project_helpers' is importable in this process but {fix}"):
        make_function(packages=["my_project_helpers"])
    code = "import my_project_helpers\n\n\ndef add(a, b):\n    return a + b\n"
    with pytest.raises(tf.FunctionError, match=f"imports 'my_project_helpers' \\(line 1\\); it is importable .*{fix}"):
        make_function(code=code)
    assert make_function(code="import jsonschema\n\n\ndef add(a, b):\n    return a + b\n").name == "add"  # installed


def test_a_copy_with_an_update_is_a_new_function_with_its_own_identity():
    f = tf.ForgedFunction("double", "Twice x.", {"type": "object", "properties": {"x": {"type": "number"}},
                          "required": ["x"]}, "def double(x):\n    return x * 2\n")  # fmt: skip
    before = (f.interface_hash, f.code_hash, f.fingerprint)  # computed, and cached, before the copy
    recoded = f.model_copy(update={"code": "def double(x):\n    return x + x\n"})
    assert recoded.code_hash != before[1] and recoded.fingerprint != before[2]
    assert recoded.interface_hash == before[0]
    redescribed = f.model_copy(update={"description": "Two times x."})
    assert redescribed.interface_hash != before[0]
    with pytest.raises(tf.FunctionError, match="does not define a top-level function 'double'"):
        f.model_copy(update={"code": "def other(x):\n    return x\n"})
    assert f.model_copy() == f
