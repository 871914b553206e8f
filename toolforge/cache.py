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
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import diskcache
from pydantic import BaseModel, ValidationError

from toolforge._hashing import canonical_json, content_hash
from toolforge.errors import ToolforgeError
from toolforge.records import ExampleRecord

__all__ = ["CACHE_FORMAT", "CacheStats", "EvaluationCache", "active_call_cache", "use_call_cache"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_DIRECTORY = ".toolforge/cache"
MAX_VARIANTS = 8
_MEMO_SIZE = 100_000
_PARSED = "_parsed"  # key, in a remembered variant, of its parsed record (never written to disk)
_MISSING = object()


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

    Examples:
        >>> cache = EvaluationCache(".toolforge/cache")                    # doctest: +SKIP
        >>> Evaluator(metric, cache=cache).evaluate(program, examples)
        >>> cache.stats().hits
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, size_limit_mb: int = 1024) -> None:
        if not isinstance(size_limit_mb, int) or size_limit_mb < 1:
            raise ToolforgeError(f"EvaluationCache(size_limit_mb={size_limit_mb!r}) must be an integer >= 1")
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise ToolforgeError(
                f"EvaluationCache(directory={directory!r}): give a directory path (str or Path), or None for "
                "$TOOLFORGE_CACHE_DIR or .toolforge/cache"
            )
        chosen = directory if directory is not None else os.environ.get("TOOLFORGE_CACHE_DIR") or DEFAULT_DIRECTORY
        self.directory = Path(chosen).expanduser()
        try:
            self._cache = diskcache.Cache(
                str(self.directory),
                size_limit=size_limit_mb * 1024 * 1024,
                eviction_policy="least-recently-stored",
                cull_limit=0,  # no size check on every write: `flush` culls once per batch
            )
        except (OSError, diskcache.Timeout) as exc:
            raise ToolforgeError(
                f"cannot open the evaluation cache at {str(self.directory)!r} ({exc}); choose a writable directory "
                "(EvaluationCache(directory) or TOOLFORGE_CACHE_DIR)"
            ) from None
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
            return int(value) if isinstance(value, int) else 0

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
        try:
            with self._cache.transact():
                for name, amount in pending.items():
                    self._cache.incr(f"stats:{name}", amount, default=0, retry=True)
        except Exception as exc:
            logger.warning("could not update the counters of %s: %s", self.directory, exc)


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
