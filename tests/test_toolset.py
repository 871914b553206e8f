"""Toolset: container, actions, diff, merge, persistence, fingerprints and the DSPy parameter contract."""

from __future__ import annotations

import json
import subprocess
import sys

import dspy
import pytest
from pydantic import TypeAdapter

import toolforge as tf
from tests.conftest import make_function
from tests.evaluation_fixtures import unary

SUB = "def sub(a, b):\n    return a - b\n"


@pytest.fixture
def toolset():
    return tf.Toolset([make_function(), make_function("sub", code=SUB)])


def add_action(name="mul", code=None):
    return tf.AddFunction.of(make_function(name, code or f"def {name}(a, b):\n    return a * b\n"))


def test_container_protocol(toolset):
    assert len(toolset) == 2
    assert toolset.names == ["add", "sub"]
    assert [f.name for f in toolset] == ["add", "sub"]
    assert "add" in toolset and "mul" not in toolset
    assert toolset["sub"].code == SUB
    with pytest.raises(KeyError, match="no function 'mul' in this toolset \\(it has: add, sub\\)"):
        toolset["mul"]


def test_duplicate_names_are_refused():
    with pytest.raises(tf.ToolsetError, match="'add' appears twice"):
        tf.Toolset([make_function(), make_function()])


def test_only_forged_functions_are_held():
    with pytest.raises(tf.ToolsetError, match="holds ForgedFunction objects, got function.*from_callable"):
        tf.Toolset([lambda: 0])  # type: ignore[list-item]


def test_apply_returns_a_new_toolset_and_leaves_the_old_one(toolset):
    grown = toolset.apply([add_action()])
    assert grown.names == ["add", "sub", "mul"]
    assert toolset.names == ["add", "sub"]


def test_apply_takes_one_action_or_a_list_and_refuses_text(toolset):
    assert "sub" not in toolset.apply(tf.RemoveFunction("sub"))
    assert "sub" not in toolset.apply({"action": "remove_function", "name": "sub"})
    with pytest.raises(tf.ToolsetError, match="Toolset.apply takes actions .* got str 'remove sub'"):
        toolset.apply("remove sub")


def test_diff_and_merge_take_a_toolset_or_a_list_of_functions(toolset):
    functions = list(toolset)
    assert not toolset.diff(functions) and toolset.merge(functions) == toolset
    with pytest.raises(tf.ToolsetError, match=r"Toolset.diff takes another Toolset .* got str 'b.json'; load"):
        toolset.diff("b.json")


def test_apply_add_of_existing_name_is_refused(toolset):
    with pytest.raises(tf.ToolsetError, match="function 'add' already exists; use ReviseFunction to change it"):
        toolset.apply([add_action("add")])


def test_apply_revise_or_remove_of_missing_name_is_refused(toolset):
    revise = tf.ReviseFunction.of(make_function("mul", "def mul(a, b):\n    return a * b\n"))
    with pytest.raises(tf.ToolsetError, match="cannot revise 'mul': no such function \\(have: add, sub\\)"):
        toolset.apply([revise])
    with pytest.raises(tf.ToolsetError, match="cannot remove 'mul': no such function"):
        toolset.apply([tf.RemoveFunction("mul")])


def test_apply_respects_max_functions():
    limited = tf.Toolset([make_function()], max_functions=1)
    with pytest.raises(tf.ToolsetError, match="adding 'mul' would exceed max_functions=1"):
        limited.apply([add_action()])
    swapped = limited.apply([tf.RemoveFunction("add"), add_action()])
    assert swapped.names == ["mul"] and swapped.max_functions == 1
    with pytest.raises(
        tf.ToolsetError, match="a toolset of 2 functions is over max_functions=1; remove some or raise the limit"
    ):
        tf.Toolset([make_function(), make_function("sub", code=SUB)], max_functions=1)


def test_apply_is_all_or_nothing(toolset):
    with pytest.raises(tf.ToolsetError):
        toolset.apply([add_action(), tf.RemoveFunction("missing")])
    assert toolset.names == ["add", "sub"]


def test_apply_invalid_function_raises_function_error(toolset):
    bad = tf.AddFunction(name="mul", description="x", parameters={"type": "object", "properties": {}}, code="def f(")
    with pytest.raises(tf.FunctionError, match="code does not compile"):
        toolset.apply([bad])


def test_apply_takes_actions_in_their_json_form(toolset):
    mul = add_action().model_dump(mode="json")  # as an LM's reply or a saved report holds it
    assert toolset.apply([mul, {"action": "remove_function", "name": "sub"}]).names == ["add", "mul"]
    assert toolset.apply({"action": "remove_function", "name": "add"}).names == ["sub"]
    with pytest.raises(
        tf.ToolsetError, match="action \\{'action': 'rename_function'.* is not valid \\(action: Input tag"
    ):
        toolset.apply([{"action": "rename_function", "name": "add"}])
    with pytest.raises(tf.ToolsetError, match="is not valid \\(add_function.code: Field required.*give 'action'"):
        toolset.apply([{"action": "add_function", "name": "mul", "description": "x", "parameters": {}}])


def test_revised_function_records_its_parent(toolset):
    revised = toolset.apply(tf.ReviseFunction.of(make_function(code="def add(a, b):\n    return b + a\n")))
    assert revised["add"].parent == toolset["add"].fingerprint
    assert revised.names == ["add", "sub"]  # revision keeps the position


def test_remove(toolset):
    assert toolset.apply(tf.RemoveFunction("add")).names == ["sub"]


def test_action_union_parses_by_discriminator():
    adapter = TypeAdapter(tf.Action)
    assert isinstance(adapter.validate_python({"action": "remove_function", "name": "x"}), tf.RemoveFunction)
    data = add_action().model_dump()
    assert isinstance(adapter.validate_python(data), tf.AddFunction)
    assert isinstance(adapter.validate_python({**data, "action": "revise_function"}), tf.ReviseFunction)


def test_fingerprints_track_content_and_order(toolset):
    recoded = toolset.apply(tf.ReviseFunction.of(make_function(code="def add(a, b):\n    return b + a\n")))
    assert recoded.interface_fingerprint == toolset.interface_fingerprint
    assert recoded.fingerprint != toolset.fingerprint
    reordered = tf.Toolset(reversed(toolset.functions))
    assert reordered.interface_fingerprint != toolset.interface_fingerprint
    assert tf.Toolset(toolset.functions) == toolset


def test_fingerprints_are_equal_in_another_process(toolset, tmp_path):
    path = toolset.save(tmp_path / "t.json")
    script = (
        f"import toolforge as tf; t = tf.Toolset.load({str(path)!r}); print(t.fingerprint, t.interface_fingerprint)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [toolset.fingerprint, toolset.interface_fingerprint]


def test_diff_reports_added_removed_and_revised_with_code_diff(toolset):
    other = toolset.apply(
        [
            tf.RemoveFunction("sub"),
            add_action(),
            tf.ReviseFunction.of(make_function(code="def add(a, b):\n    return b + a\n")),
        ]
    )
    diff = toolset.diff(other)
    assert diff.added == ("mul",) and diff.removed == ("sub",)
    (revision,) = diff.revised
    assert (revision.name, revision.interface_changed, revision.code_changed) == ("add", False, True)
    assert "-    return a + b\n+    return b + a\n" in revision.code_diff
    assert "~ add (code)" in str(diff) and "+ mul" in str(diff)
    assert not toolset.diff(toolset)


def test_diff_reports_a_new_order_which_the_agent_s_lm_sees():
    double, square = unary("double", "x * 2"), unary("square", "x * x")
    diff = tf.Toolset([double, square]).diff(tf.Toolset([square, double]))
    assert diff and diff.reordered == ("square", "double") and str(diff) == "~ order: square, double"
    assert not tf.Toolset([double]).diff(tf.Toolset([double, square])).reordered  # an addition is not a reorder


def test_merge_without_conflict_appends_theirs(toolset):
    merged = toolset.merge(tf.Toolset([make_function(), make_function("mul", "def mul(a, b):\n    return a * b\n")]))
    assert merged.names == ["add", "sub", "mul"]


def test_merge_conflict_policies(toolset):
    theirs = tf.Toolset([make_function(code="def add(a, b):\n    return b + a\n")])
    with pytest.raises(tf.ToolsetError, match=r"both toolsets define \['add'\] differently; pass on_conflict="):
        toolset.merge(theirs)
    assert toolset.merge(theirs, on_conflict="ours")["add"] == toolset["add"]
    assert toolset.merge(theirs, on_conflict="theirs")["add"] == theirs["add"]
    with pytest.raises(tf.ToolsetError, match="on_conflict='both' must be"):
        toolset.merge(theirs, on_conflict="both")  # type: ignore[arg-type]


def test_save_and_load_round_trip(toolset, tmp_path):
    path = toolset.save(tmp_path / "nested" / "toolset.json")
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("toolforge.toolset", 1)
    loaded = tf.Toolset.load(path)
    assert loaded == toolset and loaded["sub"].code == SUB


def test_load_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(tf.ToolsetError, match="toolset file '.*missing.json' does not exist"):
        tf.Toolset.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(tf.ToolsetError, match="is not valid JSON \\(line 1, column 2"):
        tf.Toolset.load(bad)
    bad.write_text('{"hello": 1}')
    with pytest.raises(tf.ToolsetError, match="is not a saved toolset"):
        tf.Toolset.load(bad)
    bad.write_text('{"format": "toolforge.toolset", "version": 99, "functions": []}')
    with pytest.raises(tf.ToolsetError, match="format version 99, newer than .* upgrade toolforge"):
        tf.Toolset.load(bad)


def test_load_revalidates_functions(toolset, tmp_path):
    data = toolset.to_dict()
    data["functions"][0]["packages"] = ["surely_not_installed_pkg"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(tf.FunctionError, match="toolset file .*: function 'add': package 'surely_not_installed_pkg'"):
        tf.Toolset.load(path)


class Holder(dspy.Module):
    def __init__(self, toolset):
        super().__init__()
        self.toolset = toolset
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.predict(question=question)


def test_toolset_is_a_dspy_parameter(toolset):
    program = Holder(toolset)
    assert ("toolset", toolset) in program.named_parameters()


def test_program_save_and_load_round_trip_the_code(toolset, tmp_path):
    path = tmp_path / "program.json"
    Holder(toolset).save(path)
    fresh = Holder(tf.Toolset())
    fresh.load(path)
    assert fresh.toolset == toolset
    assert fresh.toolset["sub"].code == SUB


def test_reset_keeps_loaded_functions(toolset):
    empty = tf.Toolset()
    empty.load_state(toolset.dump_state(json_mode=True))  # a trained program loaded from a file
    empty.reset()  # as DSPy's optimizers do to their student
    assert empty.names == ["add", "sub"]


def test_reset_copy_of_a_program_keeps_its_functions(toolset):
    assert Holder(toolset).reset_copy().toolset == toolset


def test_deepcopy_of_a_program_copies_the_toolset(toolset):
    program = Holder(toolset)
    copy = program.deepcopy()
    assert copy.toolset == toolset and copy.toolset is not toolset
