"""Tool retrieval: which of a large toolset's functions an agent shows its LM for the inputs at hand.

`ToolAgent(max_tools=k)` shows the k forged functions most relevant to a run's inputs (fixed tools and `finish`
are always shown). Relevance comes from a `ToolRanker`: `BM25Ranker` (the default) ranks with `bm25s` over each
function's name, description and argument names and descriptions; any object with the same two methods can
replace it. The choice must be deterministic, because the evaluation cache keys each example on the tools it was
shown: `top_k` breaks ties by name, so the same inputs and toolset always select the same functions.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from toolforge.errors import ToolforgeError

__all__ = ["BM25Ranker", "ToolIndex", "ToolRanker", "top_k"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install the retrieval extra: pip install 'toolforge[retrieval]'"


@runtime_checkable
class ToolIndex(Protocol):
    """The documents of one toolset version, indexed."""

    def scores(self, query: str) -> Sequence[float]:
        """One relevance score per document, in the order they were indexed (higher is more relevant)."""
        ...


@runtime_checkable
class ToolRanker(Protocol):
    """Makes an index of tool documents (built once per toolset version)."""

    def index(self, documents: Sequence[str]) -> ToolIndex:
        """An index of `documents` (one text per function: its name, description and argument docs)."""
        ...


def top_k(names: Sequence[str], scores: Sequence[float], k: int) -> list[str]:
    """The names of the `k` highest scores; equal scores (and scores that are not numbers) in order of name."""
    if len(scores) != len(names):
        raise ToolforgeError(
            f"the tool ranker returned {len(scores)} scores for {len(names)} tools; give one score per document"
        )
    return [name for _, name in heapq.nsmallest(k, zip(map(_rank, scores), names, strict=True))]


def _rank(score: Any) -> float:
    """The sort key of a score: its negative, and +inf (last) for one that is not a finite number."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        return math.inf
    return -value if math.isfinite(value) else math.inf


class BM25Ranker:
    """BM25 (Okapi) relevance with `bm25s`, English stopwords removed; a function named `digit_sum` is found by
    "digit" and "sum" as well as by its whole name.

    Args:
        stopwords: What `bm25s.tokenize` removes (`"en"`, a list of words, or None).
    """

    def __init__(self, stopwords: str | list[str] | None = "en") -> None:
        self._bm25s = _bm25s()
        self.stopwords = stopwords

    def __repr__(self) -> str:
        return f"BM25Ranker(stopwords={self.stopwords!r})"

    def index(self, documents: Sequence[str]) -> _BM25Index:
        """The index of `documents`, built once for equal documents and stopwords in this process: each of an
        optimizer's candidates is an agent copy with the same toolset, and building the index is what costs
        (18 ms at 1,100 functions); an index is read-only once built."""
        documents = list(documents)
        digest = hashlib.sha256(json.dumps(documents).encode()).hexdigest()
        key = (type(self).__qualname__, repr(self.stopwords), len(documents), digest)
        with _LOCK:
            found = _INDEXES.get(key)
            if found is not None:
                _INDEXES.move_to_end(key)
                return found
        built = _BM25Index(self._bm25s, documents, self.stopwords)
        with _LOCK:
            _INDEXES[key] = built
            while len(_INDEXES) > _KEPT_INDEXES:
                _INDEXES.popitem(last=False)
        return built


# BM25 indexes by (stopwords, documents): a few toolset versions are live at once (the best, a candidate, a subset)
_KEPT_INDEXES = 8
_INDEXES: OrderedDict[tuple[str, str, int, str], _BM25Index] = OrderedDict()
_LOCK = threading.Lock()


class _BM25Index:
    def __init__(self, bm25s: Any, documents: list[str], stopwords: str | list[str] | None) -> None:
        self._size = len(documents)
        self._retriever = bm25s.BM25()
        tokens = bm25s.tokenize(documents, stopwords=stopwords or [], show_progress=False)
        self._retriever.index(tokens, show_progress=False)
        # a query is split as bm25s.tokenize splits (its default pattern, lower case, the same stopwords), here:
        # bm25s.tokenize builds a vocabulary on each call, which cost more than scoring 1,000 documents
        self._stopwords = frozenset(bm25s.tokenization._infer_stopwords(stopwords) if stopwords else ())

    def scores(self, query: str) -> list[float]:
        tokens = [t for t in _TOKEN.findall(_words(query).lower()) if t not in self._stopwords]
        known = [t for t in dict.fromkeys(tokens) if t in self._retriever.vocab_dict]
        if not known or not self._size:
            return [0.0] * self._size
        return [float(s) for s in self._retriever.get_scores(known)]


_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _words(text: str) -> str:
    """`text` with `snake_case` names also split into words (bm25s's tokens keep underscores)."""
    return f"{text} {text.replace('_', ' ')}" if "_" in text else text


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise ToolforgeError(
            f"ToolAgent(max_tools=...) ranks tools with bm25s, which is not installed; {_INSTALL_HINT}, or pass "
            "ranker= any object with index(documents) -> an index with scores(query)"
        ) from None
    return bm25s
