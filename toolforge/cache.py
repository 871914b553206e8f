"""`EvaluationCache`: evaluation records and function-call results on disk, reusable by dependency.

Two kinds of entry live in one diskcache directory:

* **Evaluation records**, under a key that hashes everything an example's outcome depends on except the code of
  forged functions (the program's prompts and demos, fixed tools, the toolset's interface, the example, the LM
  settings, the metric, the cache format). Each key holds a few *variants*, each with the `code_hash` of every
  forged function its run called. A variant is reused while all of those are unchanged, so revising one function
  re-runs only the examples that called it, and rolling back to an earlier toolset finds its records again. A
  variant whose functions changed can still hold: `stale_records` hands it to the evaluator, which checks the new
  code against the outcomes the run recorded.
* **Function-call results** of deterministic functions: (code_hash, canonical arguments) -> value.

Guarantees (from diskcache, which stores in SQLite with write-ahead logging): any number of threads and
processes may share one directory; every write is atomic; an interrupted process never leaves a half-written
entry. Record variants are updated in a transaction. An entry that cannot be read or parsed counts as a miss,
logs a warning, and is dropped; it never raises. The directory is kept under `size_limit_mb` by evicting the
least recently stored entries (reads never write to the disk).

A cache directory is data, never code: every value is JSON text (records, call results) or an integer (counters),
and `_JSONDisk` refuses to read anything else. diskcache's own `Disk` (and its `JSONDisk` too) unpickles a row
marked as a pickle, so a row planted in a directory from elsewhere would run code in the evaluating process; here
such a row, a key that is not text, or a value file outside diskcache's own layout is a miss, and is dropped.
Opening a directory checks its database first (`PRAGMA quick_check`, about 0.4 ms per MB) and the settings diskcache
keeps in it (diskcache sets each one as an attribute of its cache object): a damaged or foreign database, a
directory that is a file or cannot be written, each raises one `CacheError` naming the directory and the fix.

Speed: an evaluation's records are written in batches, one transaction each, together with the function-call
results made meanwhile; a process dying mid-evaluation loses at most the current batch. Counters (hits, misses,
savings) are kept in memory and added to the directory's own counters at the end of each evaluation, on `stats()`
and on `close()`, so `stats()` adds up every process that used the directory (`reset_stats()` zeroes them).
Reads are remembered in memory; since record variants are content-addressed, a remembered entry can only lack a
variant that another process wrote since, which costs a re-run, never a wrong record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import diskcache
from pydantic import BaseModel, ValidationError

from toolforge._checks import check_int
from toolforge._hashing import canonical_json, content_hash
from toolforge.errors import ToolforgeError
from toolforge.records import ExampleRecord

__all__ = [
    "CACHE_FORMAT",
    "CacheError",
    "CacheStats",
    "EvaluationCache",
    "active_call_cache",
    "discard_cache_files",
    "use_call_cache",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_DIRECTORY = ".toolforge/cache"
MAX_VARIANTS = 8
_MEMO_SIZE = 100_000
_PARSED = "_parsed"  # key, in a remembered variant, of its parsed record (never written to disk)
_MISSING = object()
_DATABASE = "cache.db"  # diskcache's database file, with its -wal and -shm beside it
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")  # where diskcache puts a large value
# the settings diskcache keeps in its database (each becomes an attribute of its Cache object): no others are read
_KNOWN_SETTINGS = frozenset(diskcache.DEFAULT_SETTINGS) | frozenset(diskcache.core.METADATA)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26  # SQLite's result codes


class CacheError(ToolforgeError):
    """An evaluation cache directory cannot be used: damaged, foreign, a file, or not writable.

    Attributes:
        directory: The cache directory.
        problem: What is wrong, naming the directory (the message without its fix).
        fix: What to do about it.
        corrupt: True when the directory's database is damaged or not diskcache's: deleting the directory's cache
            files (`discard_cache_files`) mends it, losing only cached work.
    """

    def __init__(self, directory: Path, problem: str, fix: str, *, corrupt: bool = False) -> None:
        super().__init__(f"{problem}; {fix}")
        self.directory = directory
        self.problem = problem
        self.fix = fix
        self.corrupt = corrupt


class _JSONDisk(diskcache.Disk):
    """diskcache storage that holds JSON text and integers only, and never unpickles.

    Keys are strings, stored as text; values are the JSON text the cache writes (a large one goes to a file, as
    diskcache does) or integer counters, kept as SQLite integers so that `Cache.incr` works. Reading refuses a
    pickled key or value, and a value file outside diskcache's own `ab/cd/<hex>.val` layout, with an `_Refused`
    error, which the cache treats as a miss.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"evaluation cache keys are strings, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw or type(key) is not str:
            raise _Refused("a key that is not text (a pickle?)")
        return key

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple[Any, ...]:
        if read or type(value) not in (str, int):
            raise TypeError(
                f"the evaluation cache stores JSON text and integers only, not {type(value).__name__} (never a pickle)"
            )
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if read:
            raise _Refused("a request to read an entry as a file")
        if mode == diskcache.core.MODE_RAW and type(value) in (str, int):
            return value
        if mode == diskcache.core.MODE_TEXT and value is None:
            if not self._own_file(filename):
                raise _Refused(f"an entry whose value file is not the cache's own ({str(filename)[:80]!r})")
            return super().fetch(mode, filename, value, read)
        kind = {diskcache.core.MODE_PICKLE: "a pickle", diskcache.core.MODE_BINARY: "bytes"}.get(mode, "of no kind")
        raise _Refused(f"an entry that is {kind}, not JSON text (mode {mode!r})")

    def remove(self, file_path: str) -> None:
        if self._own_file(file_path):  # a planted row naming a file elsewhere never deletes it
            super().remove(file_path)

    def _own_file(self, filename: Any) -> bool:
        """Whether `filename` is a value file of diskcache's layout, inside the directory (no link leads out)."""
        if not isinstance(filename, str) or not _VALUE_FILE.fullmatch(filename):
            return False
        root = os.path.realpath(self._directory)
        return os.path.realpath(os.path.join(root, filename)) == os.path.join(root, filename)


class _Refused(Exception):
    """An entry the cache will not read (see `_JSONDisk`)."""


class CacheStats(BaseModel):
    """Counters of a cache directory, summed over every process that used it since the last `reset_stats()`."""

    directory: str
    hits: int
    misses: int
    lm_calls_saved: int
    seconds_saved: float
    call_hits: int
    call_misses: int
    entries: int
    size_bytes: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def as_cache(cache: Any, owner: str) -> EvaluationCache | None:
    """`cache` as an EvaluationCache: one as it is, a directory path opened as one, None for none."""
    if cache is None or isinstance(cache, EvaluationCache):
        return cache
    if isinstance(cache, str | os.PathLike):
        return EvaluationCache(cache)
    raise ToolforgeError(
        f"{owner}(cache={cache!r}): give an EvaluationCache, a directory path for one, or None"
        + (" (False: no cache)" if owner == "FunctionOptimizer" else "")
    )


class EvaluationCache:
    """Evaluation records and function-call results in a diskcache directory.

    Args:
        directory: Where to keep the cache. Default: `$TOOLFORGE_CACHE_DIR` if set, else `.toolforge/cache`.
        size_limit_mb: The least recently stored entries are evicted beyond this size.

    Raises:
        CacheError: The directory is a file or cannot be written, or its database is damaged or was not made by
            toolforge (`error.corrupt`: deleting the directory, or `discard_cache_files(directory)`, mends that).

    Examples:
        >>> cache = EvaluationCache(".toolforge/cache")                    # doctest: +SKIP
        >>> Evaluator(metric, cache=cache).evaluate(program, examples)
        >>> cache.stats().hits
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, size_limit_mb: int = 1024) -> None:
        check_int(
            "EvaluationCache",
            "size_limit_mb",
            size_limit_mb,
            1,
            allow_bool=True,
            message="{owner}({name}={value!r}) must be an integer >= {low}",
        )
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise ToolforgeError(
                f"EvaluationCache(directory={directory!r}): give a directory path (str or Path), or None for "
                "$TOOLFORGE_CACHE_DIR or .toolforge/cache"
            )
        chosen = directory if directory is not None else os.environ.get("TOOLFORGE_CACHE_DIR") or DEFAULT_DIRECTORY
        self.directory = Path(chosen).expanduser()
        self._cache = _open(self.directory, size_limit_mb)
        self._lock = threading.Lock()
        self._memo: dict[str, list[dict[str, Any]]] = {}
        self._call_memo: dict[str, Any] = {}
        self._calls_pending: dict[str, str] = {}
        self._pending: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------- records
    def get_record(self, key: str, code_hash_of: Callable[[str], str | None]) -> ExampleRecord | None:
        """The stored record for `key` whose called functions all still have the same code, or None.

        Args:
            key: The evaluation key (see the module docstring).
            code_hash_of: The current code_hash of a function name (None when the name is gone).
        """
        for variant in self._read_variants(key):
            if all(code_hash_of(name) == code_hash for name, code_hash in variant["dependencies"].items()):
                return self._parsed(key, variant)
        return None

    def stale_records(self, key: str, code_hash_of: Callable[[str], str | None]) -> list[ExampleRecord]:
        """The stored records for `key` that called functions whose code has changed since, newest first.

        Such a record still holds if the new code gives the same outcomes on the calls the record made; the
        evaluator checks that (see `FunctionCall.outcome_hash`). Records that called a function now gone are left out.
        """
        stale = []
        for variant in self._read_variants(key):
            current = {name: code_hash_of(name) for name in variant["dependencies"]}
            if None not in current.values() and current != variant["dependencies"]:
                parsed = self._parsed(key, variant)
                if parsed is None:
                    break
                stale.append(parsed)
        return stale

    def _parsed(self, key: str, variant: dict[str, Any]) -> ExampleRecord | None:
        parsed: ExampleRecord | None = variant.get(_PARSED)  # remembered variants keep their parsed record
        if parsed is None:
            try:
                parsed = ExampleRecord.model_validate({**variant["record"], "cached": True})
            except (ValidationError, TypeError) as exc:
                self._drop(f"record:{key}", f"a stored record does not parse ({exc.__class__.__name__})")
                return None
            variant[_PARSED] = parsed
        return parsed

    def put_record(self, key: str, record: ExampleRecord) -> None:
        """Store `record` as the newest variant for `key` (replacing one with the same dependencies)."""
        self.put_records([(key, record)])

    def put_records(self, items: list[tuple[str, ExampleRecord]]) -> None:
        """Store several records, and the function-call results remembered so far, in one transaction."""
        with self._lock:
            calls, self._calls_pending = self._calls_pending, {}
        if not items and not calls:
            return
        try:
            with self._cache.transact():
                for key, text in calls.items():
                    self._cache.set(key, text)
                for key, record in items:
                    entry: dict[str, Any] = {
                        "dependencies": record.dependencies,
                        "record": record.model_dump(mode="json", exclude={"cached"}),
                    }
                    others = [
                        v for v in self._read_variants(key, fresh=True) if v["dependencies"] != entry["dependencies"]
                    ]
                    variants = [entry, *others[: MAX_VARIANTS - 1]]
                    self._cache.set(f"record:{key}", json.dumps(variants))
                    entry[_PARSED] = record.model_copy(update={"cached": True})
                    self._remember(key, variants)
            self._cache.cull()
        except Exception as exc:  # a full disk or a locked database must not end an evaluation
            logger.warning(
                "could not store %d evaluation record(s) and %d call result(s) in %s: %s",
                len(items),
                len(calls),
                self.directory,
                exc,
            )

    def flush(self) -> None:
        """Write what is kept in memory (function-call results and counters) to the directory."""
        self.put_records([])
        self.flush_counts()

    def _read_variants(self, key: str, fresh: bool = False) -> list[dict[str, Any]]:
        if not fresh:
            with self._lock:
                memo = self._memo.get(key)
            if memo is not None:
                return memo
        raw = self._safe_get(f"record:{key}")
        if raw is _MISSING:
            return []
        try:
            variants = json.loads(raw)
            if not isinstance(variants, list) or not all(
                isinstance(v, dict) and isinstance(v.get("dependencies"), dict) and "record" in v for v in variants
            ):
                raise ValueError("not a list of record variants")
            self._remember(key, variants)
            return variants
        except (ValueError, TypeError) as exc:
            self._drop(f"record:{key}", f"a corrupt entry ({exc})")
            return []

    # ------------------------------------------------------------------------------------ function calls
    def get_call(self, code_hash: str, arguments: dict[str, Any]) -> Any:
        """The cached value of a deterministic function call, or `EvaluationCache.MISSING`."""
        key = _call_key(code_hash, arguments)
        with self._lock:
            if key in self._call_memo:
                self._pending["call_hits"] = self._pending.get("call_hits", 0) + 1
                return self._call_memo[key]
        raw = self._safe_get(key)
        if raw is _MISSING:
            self._count("call_misses")
            return _MISSING
        try:
            value = json.loads(raw)["value"]
        except (ValueError, TypeError, KeyError) as exc:
            self._drop(key, f"a corrupt function-call entry ({exc})")
            self._count("call_misses")
            return _MISSING
        self._count("call_hits")
        self._remember_call(key, value)
        return value

    def put_call(self, code_hash: str, arguments: dict[str, Any], value: Any) -> None:
        """Remember a call's result; it reaches the disk with the next batch of records (or `flush()`)."""
        key = _call_key(code_hash, arguments)
        self._remember_call(key, value)
        with self._lock:
            self._calls_pending[key] = json.dumps({"value": value})

    def _remember_call(self, key: str, value: Any) -> None:
        with self._lock:
            if len(self._call_memo) >= _MEMO_SIZE:
                self._call_memo.clear()
            self._call_memo[key] = value

    MISSING = _MISSING

    # ------------------------------------------------------------------------------------------ counters
    def record_run(self, *, hits: int, misses: int, lm_calls_saved: int, seconds_saved: float) -> None:
        """Add one evaluation's counts to the directory's counters (atomic across processes)."""
        for name, amount in (
            ("hits", hits),
            ("misses", misses),
            ("lm_calls_saved", lm_calls_saved),
            ("ms_saved", round(seconds_saved * 1000)),
        ):
            self._count(name, amount)
        self.flush()

    def stats(self) -> CacheStats:
        self.flush_counts()

        def counter(name: str) -> int:
            value = self._safe_get(f"stats:{name}")
            if value is not _MISSING and type(value) is not int:
                self._drop(f"stats:{name}", "a counter that is not an integer")
            return value if type(value) is int else 0

        try:
            entries, size = len(self._cache), int(self._cache.volume())
        except Exception:
            entries, size = 0, 0
        return CacheStats(
            directory=str(self.directory),
            hits=counter("hits"),
            misses=counter("misses"),
            lm_calls_saved=counter("lm_calls_saved"),
            seconds_saved=counter("ms_saved") / 1000,
            call_hits=counter("call_hits"),
            call_misses=counter("call_misses"),
            entries=entries,
            size_bytes=size,
        )

    def reset_stats(self) -> None:
        with self._lock:
            self._pending = {}
        for name in ("hits", "misses", "lm_calls_saved", "ms_saved", "call_hits", "call_misses"):
            with contextlib.suppress(Exception):
                self._cache.delete(f"stats:{name}")

    def clear(self) -> int:
        """Remove every entry (records, call results and counters). Returns how many were removed."""
        with self._lock:
            self._memo.clear()
            self._call_memo.clear()
            self._calls_pending = {}
            self._pending = {}
        return int(self._cache.clear())

    def close(self) -> None:
        self.flush()
        self._cache.close()

    def __enter__(self) -> EvaluationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EvaluationCache({str(self.directory)!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> EvaluationCache:
        return self  # a handle on a shared directory

    # ------------------------------------------------------------------------------------------- private
    def _safe_get(self, key: str) -> Any:
        try:
            return self._cache.get(key, default=_MISSING, retry=True)
        except Exception as exc:  # unreadable value file, corrupt pickle, database error
            self._drop(key, f"an unreadable entry ({exc.__class__.__name__}: {exc})")
            return _MISSING

    def _remember(self, key: str, variants: list[dict[str, Any]]) -> None:
        # Variants are content-addressed (by their dependencies), so a remembered list can only lack newer
        # variants written by another process: the worst case is a miss, never a wrong record.
        with self._lock:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = variants

    def _forget(self, key: str) -> None:
        with self._lock:
            self._memo.pop(key.removeprefix("record:"), None)

    def _drop(self, key: str, why: str) -> None:
        self._forget(key)
        logger.warning("evaluation cache %s: %s under %r; treating it as a miss", self.directory, why, key[:80])
        with contextlib.suppress(Exception):
            self._cache.delete(key, retry=True)

    def _drop_bad_counters(self, names: Iterator[str] | list[str]) -> None:
        for name in names:
            value = self._safe_get(f"stats:{name}")
            if value is not _MISSING and type(value) is not int:
                self._drop(f"stats:{name}", "a counter that is not an integer")

    def _count(self, name: str, amount: int = 1) -> None:
        """Count in memory; `flush_counts` adds the counts to the directory's counters."""
        if amount:
            with self._lock:
                self._pending[name] = self._pending.get(name, 0) + amount

    def flush_counts(self) -> None:
        """Add the counts kept in memory to the directory's counters (one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        for attempt in range(2):
            try:
                with self._cache.transact():
                    for name, amount in pending.items():
                        self._cache.incr(f"stats:{name}", amount, default=0, retry=True)
                return
            except Exception as exc:
                if attempt == 0 and isinstance(exc, TypeError):  # a counter that is not an integer: drop, retry
                    self._drop_bad_counters(list(pending))
                    continue
                logger.warning("could not update the counters of %s: %s", self.directory, exc)
                return


def _open(directory: Path, size_limit_mb: int) -> diskcache.Cache:
    """diskcache on `directory` with `_JSONDisk`, after checking its database; a `CacheError` if it cannot be used."""
    where = repr(str(directory))
    choose = "choose a writable directory (EvaluationCache(directory) or TOOLFORGE_CACHE_DIR)"
    if directory.exists() and not directory.is_dir():
        raise CacheError(directory, f"the evaluation cache directory {where} is a file, not a directory", choose)
    database = directory / _DATABASE
    try:
        mode: int | None = database.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # a new cache
    except OSError as exc:
        raise CacheError(
            directory, f"cannot open the evaluation cache at {where} ({exc.strerror or exc})", choose
        ) from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise CacheError(
                directory,
                f"the evaluation cache database {str(database)!r} is not a regular file"
                + (" (a symbolic link)" if stat.S_ISLNK(mode) else ""),
                _delete_fix(directory),
                corrupt=True,
            )
        _check_database(directory, database)
    settings = {
        **diskcache.DEFAULT_SETTINGS,  # every setting given, so that none comes from the database
        "size_limit": size_limit_mb * 1024 * 1024,
        "eviction_policy": "least-recently-stored",
        "cull_limit": 0,  # no size check on every write: `flush` culls once per batch
    }
    try:
        return diskcache.Cache(str(directory), disk=_JSONDisk, **settings)
    except sqlite3.DatabaseError as exc:
        raise _sqlite_error(directory, exc) from None
    except (OSError, diskcache.Timeout) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CacheError(directory, f"cannot open the evaluation cache at {where} ({reason})", choose) from None


def _check_database(directory: Path, database: Path) -> None:
    """A `CacheError` if `database` is damaged (`PRAGMA quick_check`) or holds settings diskcache never writes."""
    try:
        connection = sqlite3.connect(str(database), timeout=60)
    except sqlite3.Error as exc:
        raise _sqlite_error(directory, exc) from None
    try:
        connection.execute("PRAGMA trusted_schema = OFF")  # no function the database names runs with side effects
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            first = str(problems[0]).replace("*** in database main ***", "").strip().splitlines()
            raise CacheError(
                directory,
                f"the evaluation cache database {str(database)!r} is damaged ({first[0] if first else 'quick_check'})",
                _delete_fix(directory),
                corrupt=True,
            )
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "Settings" in tables:
            keys = {row[0] for row in connection.execute("SELECT key FROM Settings")}
            unknown = sorted(str(k) for k in keys - _KNOWN_SETTINGS)
            if unknown:
                raise CacheError(
                    directory,
                    f"the evaluation cache database {str(database)!r} holds settings diskcache never writes "
                    f"({', '.join(repr(k[:40]) for k in unknown[:3])}): it was not made by toolforge, or was edited",
                    _delete_fix(directory),
                    corrupt=True,
                )
    except sqlite3.Error as exc:
        raise _sqlite_error(directory, exc) from None
    finally:
        connection.close()


def _sqlite_error(directory: Path, exc: sqlite3.Error) -> CacheError:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = str(exc) or type(exc).__name__
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (primary is None and "malformed" in message):
        return CacheError(
            directory,
            f"the evaluation cache database {str(directory / _DATABASE)!r} is damaged ({message})",
            _delete_fix(directory),
            corrupt=True,
        )
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return CacheError(
            directory,
            f"the evaluation cache at {str(directory)!r} is locked ({message})",
            "another process holds it for writing: try again when it is done",
        )
    return CacheError(
        directory,
        f"cannot write to the evaluation cache at {str(directory)!r} (sqlite: {message})",
        "make the directory and its files writable, or choose a writable directory (EvaluationCache(directory) or "
        "TOOLFORGE_CACHE_DIR)",
    )


def _delete_fix(directory: Path) -> str:
    return (
        f"delete the directory {str(directory)!r} (or its cache files: toolforge.cache.discard_cache_files): it holds "
        "only cached evaluations, which are made again as needed"
    )


def discard_cache_files(directory: str | os.PathLike[str]) -> int:
    """Delete the files diskcache keeps in `directory` (its database and value files), and nothing else.

    For a cache too damaged to open, which `EvaluationCache.clear()` cannot reach. Files of other kinds are left
    where they are. Returns how many files were deleted; raises `CacheError` when they cannot be.
    """
    directory = Path(directory)
    removed = 0
    try:
        for name in (_DATABASE, f"{_DATABASE}-wal", f"{_DATABASE}-shm", f"{_DATABASE}-journal"):
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed += 1
            elif path.is_symlink() or path.exists():
                path.unlink()
                removed += 1
        if not directory.is_dir():
            return removed
        for outer in directory.iterdir():
            if not (re.fullmatch(r"[0-9a-f]{2}", outer.name) and outer.is_dir() and not outer.is_symlink()):
                continue
            for inner in outer.iterdir():
                if not (re.fullmatch(r"[0-9a-f]{2}", inner.name) and inner.is_dir() and not inner.is_symlink()):
                    continue
                for file in inner.iterdir():
                    if re.fullmatch(r"[0-9a-f]{28}\.val", file.name) and (file.is_symlink() or file.is_file()):
                        file.unlink()
                        removed += 1
                with contextlib.suppress(OSError):
                    inner.rmdir()
            with contextlib.suppress(OSError):
                outer.rmdir()
    except OSError as exc:
        raise CacheError(
            directory,
            f"cannot delete the cache files in {str(directory)!r} ({exc.strerror or exc})",
            "make the directory writable, or delete it yourself",
        ) from None
    return removed


def _call_key(code_hash: str, arguments: dict[str, Any]) -> str:
    return f"call:{code_hash}:{content_hash(canonical_json(arguments))}"


_active: ContextVar[EvaluationCache | None] = ContextVar("toolforge_call_cache", default=None)


@contextlib.contextmanager
def use_call_cache(cache: EvaluationCache | None) -> Iterator[None]:
    """Within the block, forged tools answer deterministic calls from `cache` (and fill it)."""
    token = _active.set(cache)
    try:
        yield
    finally:
        _active.reset(token)


def active_call_cache() -> EvaluationCache | None:
    return _active.get()
