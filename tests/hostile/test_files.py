"""Files from elsewhere are data, never code or terminal commands: a planted or damaged evaluation cache, toolset,
report or checkpoint gives a miss or one clear error naming the file and the fix, and nothing printed from a file
can drive the terminal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import diskcache
import dspy
import pytest

import toolforge as tf
from tests.conftest import make_function
from tests.evaluation_fixtures import exact, make_examples
from tests.scripted_lm import scripted_lm
from tests.test_cli import AGENT, toolforge
from toolforge.cache import CacheError, discard_cache_files
from toolforge.optimizer import ActionOutcome, OptimizationReport, StepReport
from toolforge.report import markdown_report

MARKER_NAME = "pickle-ran"


class Payload:
    """Unpickling this creates a marker file: what a planted pickle would do instead of something worse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (str(self.marker),))


def record(example_id: str = "e1") -> tf.ExampleRecord:
    call = tf.FunctionCall(name="add", code_hash="h1", arguments={"a": 1, "b": 2}, ok=True, value=3)
    return tf.ExampleRecord(example_id=example_id, score=1.0, prediction={"answer": 3}, calls=(call,), lm_calls=2)


def filled_cache(directory: Path) -> None:
    """A cache holding a record, a function-call result and counters, as an evaluation leaves it."""
    with tf.EvaluationCache(directory) as cache:
        cache.put_record("key1", record())
        cache.put_call("h1", {"a": 1, "b": 2}, 3)
        cache.record_run(hits=1, misses=2, lm_calls_saved=3, seconds_saved=0.5)


def current(name: str) -> str | None:
    return {"add": "h1"}.get(name)


# ------------------------------------------------------------------------------------------ the cache is data
def test_json_text_and_counters_round_trip_and_nothing_else_is_stored(tmp_path):
    filled_cache(tmp_path / "cache")
    with tf.EvaluationCache(tmp_path / "cache") as cache:
        assert cache.get_record("key1", current) == record().model_copy(update={"cached": True})
        assert cache.get_call("h1", {"a": 1, "b": 2}) == 3
        cache.record_run(hits=1, misses=0, lm_calls_saved=1, seconds_saved=0.25)  # diskcache's incr still works
        stats = cache.stats()
        assert (stats.hits, stats.misses, stats.lm_calls_saved, stats.seconds_saved) == (2, 2, 4, 0.75)
        with pytest.raises(TypeError, match="JSON text and integers only, not dict"):
            cache._cache.set("other", {"a": 1})  # what diskcache would have pickled
    with contextlib.closing(sqlite3.connect(tmp_path / "cache" / "cache.db")) as db:
        rows = db.execute("SELECT key, raw, mode FROM Cache").fetchall()
    assert {mode for _, _, mode in rows} == {diskcache.core.MODE_RAW} and all(raw for _, raw, _ in rows)  # text
    assert sorted(key.split(":")[0] for key, _, _ in rows) == ["call", "record"] + ["stats"] * 5  # keys as before


def test_a_pickle_planted_in_a_cache_row_never_runs(tmp_path, caplog):
    directory, marker = tmp_path / "cache", tmp_path / MARKER_NAME
    filled_cache(directory)
    with diskcache.Cache(str(directory)) as planted:  # diskcache's default storage: it pickles what is not text
        keys = list(planted.iterkeys())
        assert {k.split(":")[0] for k in keys} == {"record", "call", "stats"}
        for key in keys:
            planted.set(key, Payload(marker))  # a pickle in the database row
        planted.set("call:big", [Payload(marker), "x" * 100_000])  # a pickle in a value file
        planted.set(("a", "tuple", "key"), "x")  # a pickled key
        assert not marker.exists()
    with caplog.at_level(logging.WARNING, logger="toolforge.cache"), tf.EvaluationCache(directory) as cache:
        assert cache.get_record("key1", current) is None
        assert cache.stale_records("key1", lambda name: "h2") == []
        assert cache.get_call("h1", {"a": 1, "b": 2}) is cache.MISSING
        assert cache._safe_get("call:big") is cache.MISSING
        stats = cache.stats()
        assert (stats.hits, stats.misses, stats.lm_calls_saved) == (0, 0, 0)
        cache.record_run(hits=1, misses=0, lm_calls_saved=0, seconds_saved=0)  # counters start again
        assert cache.stats().hits == 1
        assert cache.clear() > 0
    assert not marker.exists()
    assert "an entry that is a pickle, not JSON text" in caplog.text and "treating it as a miss" in caplog.text


def test_a_planted_row_naming_a_file_elsewhere_never_reads_or_deletes_it(tmp_path, caplog):
    directory = tmp_path / "cache"
    filled_cache(directory)
    victim = tmp_path / "victim.json"
    victim.write_text('{"value": "a secret"}')
    for name in ("../victim.json", str(victim)):
        filled_cache(directory)
        with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db, db:
            db.execute(
                "UPDATE Cache SET mode = ?, filename = ?, value = NULL WHERE key LIKE 'call:%'",
                (diskcache.core.MODE_TEXT, name),
            )
        with caplog.at_level(logging.WARNING, logger="toolforge.cache"), tf.EvaluationCache(directory) as cache:
            assert cache.get_call("h1", {"a": 1, "b": 2}) is cache.MISSING  # not the victim's content
        assert f"an entry whose value file is not the cache's own ({name!r})" in caplog.text
    with tf.EvaluationCache(directory) as cache:
        cache.clear()
    assert victim.read_text() == '{"value": "a secret"}'


def test_settings_planted_in_the_database_are_refused_before_diskcache_reads_them(tmp_path):
    directory = tmp_path / "cache"
    filled_cache(directory)
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db, db:  # diskcache sets each as attribute
        db.execute("INSERT INTO Settings VALUES ('_directory', ?)", (str(tmp_path / "elsewhere"),))
    with pytest.raises(CacheError, match=r"holds settings diskcache never writes \('_directory'\)") as raised:
        tf.EvaluationCache(directory)
    assert raised.value.corrupt and f"delete the directory {str(directory)!r}" in str(raised.value)
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------------------- a damaged or unusable cache
def truncate_to_half(database: Path) -> None:
    os.truncate(database, database.stat().st_size // 2)


def garbage_after_the_first_page(database: Path) -> None:
    with open(database, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(database.stat().st_size - 4096))


def garbage_in_the_middle(database: Path) -> None:  # pages diskcache itself never reads on opening
    with open(database, "r+b") as f:
        f.seek(database.stat().st_size // 2)
        f.write(b"\xa5" * 8192)


def garbage_everywhere(database: Path) -> None:
    database.write_bytes(os.urandom(database.stat().st_size))


def a_large_cache(directory: Path) -> Path:
    with tf.EvaluationCache(directory) as cache:
        cache.put_records([(f"key{i}", record(f"e{i}")) for i in range(300)])
    return directory / "cache.db"


@pytest.mark.parametrize(
    "damage", [truncate_to_half, garbage_after_the_first_page, garbage_in_the_middle, garbage_everywhere]
)
def test_a_damaged_cache_is_one_error_naming_it_and_the_fix(tmp_path, damage):
    directory = tmp_path / "cache"
    damage(a_large_cache(directory))
    with pytest.raises(CacheError) as raised:
        tf.EvaluationCache(directory)
    error = raised.value
    assert isinstance(error, tf.ToolforgeError) and not isinstance(error.__cause__, sqlite3.Error)
    assert error.corrupt and error.directory == directory
    assert f"the evaluation cache database {str(directory / 'cache.db')!r} is damaged (" in str(error)
    assert f"; delete the directory {str(directory)!r}" in str(error) and "--cache-dir" not in str(error)
    assert discard_cache_files(directory) >= 1
    with tf.EvaluationCache(directory) as cache:  # an empty cache again
        assert cache.get_record("key1", current) is None and cache.stats().entries == 0


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """`paths` cannot be written, not even by root (who ignores permission bits: the immutable flag then)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode != 0:
            pytest.skip("running as root on a file system without the immutable flag: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=True)
    else:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in zip(paths, modes, strict=True):
                p.chmod(mode)


def test_a_read_only_cache_folder_is_one_error_naming_it_and_the_fix(tmp_path):
    existing, empty = tmp_path / "existing", tmp_path / "empty"
    filled_cache(existing)
    empty.mkdir()
    with read_only(existing / "cache.db", existing, empty):
        for directory in (existing, empty):
            with pytest.raises(CacheError) as raised:
                tf.EvaluationCache(directory)
            assert not raised.value.corrupt
            assert str(raised.value).startswith(f"cannot write to the evaluation cache at {str(directory)!r} (sqlite: ")
            assert str(raised.value).endswith(
                "; make the directory and its files writable, or choose a writable directory "
                "(EvaluationCache(directory) or TOOLFORGE_CACHE_DIR)"
            )
            result = toolforge("cache", "stats", "--cache-dir", str(directory), tmp=tmp_path)
            assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
            assert f"cannot write to the evaluation cache at {str(directory)!r}" in result.stderr
            assert "choose a writable directory (--cache-dir or TOOLFORGE_CACHE_DIR)" in result.stderr


def test_a_cache_dir_that_is_a_file_is_one_error_naming_it_and_the_fix(tmp_path):
    file = tmp_path / "cache"
    file.write_text("not a directory")
    with pytest.raises(
        CacheError, match=r"the evaluation cache directory '.*cache' is a file, not a directory; choose"
    ):
        tf.EvaluationCache(file)
    for args in (["cache", "stats"], ["cache", "clear"], ["evaluate", "tests/cli_fixtures.py", *AGENT]):
        result = toolforge(*args, "--cache-dir", str(file), tmp=tmp_path)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert f"the evaluation cache directory {str(file)!r} is a file, not a directory; choose a writable " in (
            result.stderr
        )
        assert "(--cache-dir or TOOLFORGE_CACHE_DIR)" in result.stderr and "Traceback" not in result.stderr
    assert file.read_text() == "not a directory"


def test_cache_clear_always_clears_a_damaged_cache_and_keeps_other_files(tmp_path):
    directory = tmp_path / "cache"
    garbage_after_the_first_page(a_large_cache(directory))
    (directory / "notes.txt").write_text("mine")
    used = toolforge("cache", "stats", "--cache-dir", str(directory), tmp=tmp_path)
    assert used.returncode == 2 and len(used.stderr.splitlines()) == 1, used.stderr
    assert "is damaged (" in used.stderr and f"run `toolforge cache clear --cache-dir {directory}`" in used.stderr
    cleared = toolforge("cache", "clear", "--cache-dir", str(directory), tmp=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert re.search(
        rf"is damaged \(.*\): deleted its \d cache file\(s\); {directory} now holds an empty", cleared.stdout
    )
    assert (directory / "notes.txt").read_text() == "mine"
    with tf.EvaluationCache(directory) as cache:
        assert cache.stats().entries == 0
    again = toolforge("cache", "clear", "--cache-dir", str(directory), tmp=tmp_path)  # a healthy one: emptied
    assert again.returncode == 0 and f"cleared 0 entries from {directory}" in again.stdout


# -------------------------------------------------------------------------------------------- toolset files
BAD_FILES = {
    "not UTF-8": (
        b'{"format": "toolforge.toolset",\n "x": "\xff"}',
        r"is not UTF-8 text \(byte b'\\xff' at offset 39, line 2\)",
    ),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nests JSON more than 100 levels deep"),
    "an integer of 5,000 digits": (b'{"x": ' + b"1" * 5000 + b"}", "is not JSON toolforge reads"),
    "a lone surrogate": (None, r"a function holds text that is not Unicode \('\\ud800', a lone surrogate\)"),
}


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "toolset.json"
    content = BAD_FILES[kind][0]
    if content is None:  # a valid toolset file, but for one escape that decodes to no character
        data = tf.Toolset([make_function()]).to_dict()
        data["functions"][0]["description"] = "PLACEHOLDER"
        content = json.dumps(data).replace("PLACEHOLDER", "\\ud800").encode()
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_toolset_file_is_one_toolset_error_naming_it(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(tf.ToolsetError, match=BAD_FILES[kind][1]) as raised:
        tf.Toolset.load(path)
    assert str(raised.value).startswith(f"toolset file {str(path)!r}")


@pytest.mark.parametrize("kind", ["not UTF-8", "nested 100,000 deep"])
def test_the_command_says_a_bad_toolset_file_in_one_line(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    for args in (
        ["show", str(path)],
        ["diff", str(path), str(path)],
        ["merge", str(path), "--out", str(tmp_path / "m.json")],
    ):
        result = toolforge(*args, tmp=tmp_path)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert f"toolset file {str(path)!r}" in result.stderr and "Traceback" not in result.stderr


def test_program_state_nested_too_deep_is_one_toolset_error():
    state: dict = tf.Toolset([make_function()]).to_dict()
    deep: list = []
    state["functions"][0]["parameters"]["properties"]["a"]["default"] = deep
    for _ in range(100_000):  # built without recursion, as a JSON parser with a high limit would
        deep.append([])
        deep = deep[0]
    with pytest.raises(tf.ToolsetError, match="saved program state for a Toolset nests more than 100 levels deep"):
        tf.Toolset().load_state(state)


@pytest.mark.parametrize("name", ["report.json", "checkpoint.json"])
def test_a_run_directory_file_that_is_not_utf8_or_nests_too_deep_names_itself(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    for content, reason in ((b"\xff", "is not UTF-8 text"), (b"[" * 100_000, "nests JSON more than 100 levels")):
        (run / name).write_bytes(content)
        if name == "report.json":
            result = toolforge("report", str(run), tmp=tmp_path)
            assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
            assert f"report {str(run / name)!r} {reason}" in result.stderr
        else:
            proposer, _ = scripted_lm(lambda system, user: {})
            optimizer = tf.FunctionOptimizer(exact, cache=False, log_dir=run, proposer_lm=proposer)
            with pytest.raises(tf.ToolforgeError, match=f"checkpoint '.*checkpoint.json' {reason}.*delete it"):
                with dspy.context(lm=proposer):
                    optimizer.compile(tf.ToolAgent("question -> answer: float"), trainset=make_examples(1))


# ------------------------------------------------------------------------------------ nothing drives the terminal
PLANTED = "Adds.\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e\rhidden"
ESCAPED = "Adds.\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e\\x0dhidden"


def planted_toolset(tmp_path: Path) -> Path:
    code = 'def add(a, b):\n\t"""Adds.\x1b[2J"""\n\treturn a + b  # \x1b]0;pwned\x07\n'
    return tf.Toolset([make_function(description=PLANTED, code=code)]).save(tmp_path / "planted.json")


def unprintable(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]


def test_show_and_diff_escape_control_characters_from_a_file(tmp_path):
    path = planted_toolset(tmp_path)
    shown = toolforge("show", str(path), tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert unprintable(shown.stdout) == []
    assert f"  {ESCAPED}\n" in shown.stdout
    assert '  \t"""Adds.\\x1b[2J"""\n  \treturn a + b  # \\x1b]0;pwned\\x07\n' in shown.stdout  # newline and tab kept
    empty = tf.Toolset().save(tmp_path / "empty.json")
    diff = toolforge("diff", str(path), str(empty), tmp=tmp_path)
    assert diff.returncode == 1 and unprintable(diff.stdout) == [] and "- add" in diff.stdout  # 1: they differ
    merged = toolforge("merge", str(path), "--out", str(tmp_path / "m.json"), tmp=tmp_path)
    assert merged.returncode == 0 and unprintable(merged.stdout) == []


def test_the_markdown_report_escapes_control_characters(tmp_path):
    outcome = ActionOutcome(
        summary="add add",
        proposal={"action": "add_function", "name": "add", "code": "x = '\x1b[2J'\n"},
        status="rejected",
        reason=PLANTED,
        trial=1,
    )
    step = StepReport(step=1, outcome="no_change", score_before=0.5, actions=[outcome], best_fingerprint="f")
    report = OptimizationReport(initial_score=0.5, best_score=0.5, stop_reason="max_epochs", steps=[step])
    text = markdown_report(report, tmp_path)
    assert unprintable(text) == [] and f"  - reason: {ESCAPED}\n" in text and "+x = '\\x1b[2J'" in text
