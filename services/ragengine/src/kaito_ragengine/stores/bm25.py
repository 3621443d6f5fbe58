"""An incrementally maintained BM25 index (Okapi BM25, k1=1.2, b=0.75).

Adding or removing a chunk touches only that chunk's terms, so queries never rebuild
anything; a query costs one pass over the postings of its terms.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable

__all__ = ["BM25Index", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an and are as at be but by for from has have he her his i if in into is it its of "
    "on or our she so than that the their them then there these they this to was we were "
    "what when where which who will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
K1 = 1.2
B = 0.75


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without English stop words."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


class BM25Index:
    """Postings (term -> {key: term frequency}) plus chunk lengths."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, int]] = {}
        self._lengths: dict[str, int] = {}
        self._terms: dict[str, tuple[str, ...]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, key: str, text: str) -> None:
        """Index ``text`` under ``key`` (replacing an earlier entry)."""
        if key in self._lengths:
            self.remove(key)
        counts = Counter(tokenize(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[key] = tf
        length = sum(counts.values())
        self._lengths[key] = length
        self._terms[key] = tuple(counts)
        self._total_length += length

    def remove(self, key: str) -> None:
        """Forget ``key``; unknown keys are ignored."""
        length = self._lengths.pop(key, None)
        if length is None:
            return
        self._total_length -= length
        for term in self._terms.pop(key):
            posting = self._postings[term]
            del posting[key]
            if not posting:
                del self._postings[term]

    def scores(self, query: str, allowed: Collection[str] | None = None) -> dict[str, float]:
        """BM25 score of every chunk that contains a query term (and is ``allowed``)."""
        n = len(self._lengths)
        if not n:
            return {}
        avg_length = self._total_length / n or 1.0
        result: dict[str, float] = {}
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            df = len(posting)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for key, tf in posting.items():
                if allowed is not None and key not in allowed:
                    continue
                norm = K1 * (1.0 - B + B * self._lengths[key] / avg_length)
                result[key] = result.get(key, 0.0) + idf * tf * (K1 + 1.0) / (tf + norm)
        return result

    @staticmethod
    def top(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
        """The ``k`` best (key, score) pairs, best first."""
        return heapq.nlargest(k, scores.items(), key=lambda item: item[1])

    def keys(self) -> Iterable[str]:
        """Every indexed key."""
        return self._lengths.keys()
