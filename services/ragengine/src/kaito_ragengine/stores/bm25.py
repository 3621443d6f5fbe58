"""An incrementally maintained BM25 index (Okapi BM25, k1=1.2, b=0.75).

Terms are lower-cased words without English stop words, reduced by Harman's "S"
stemmer (plural endings only: ``nodes`` and ``node``, ``policies`` and ``policy`` match).

Adding or removing a chunk touches only that chunk's terms, so queries never rebuild
anything. Each chunk gets a slot (never reused); a query adds, per query term, the
term's contribution to a dense score vector with numpy, from per-term posting arrays
that are cached until the term's postings change.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection

import numpy as np

__all__ = ["BM25Index", "SparseScores", "stem", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an and are as at be but by for from has have he her his i if in into is it its of "
    "on or our she so than that the their them then there these they this to was we were "
    "what when where which who will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
K1 = 1.2
B = 0.75


def stem(word: str) -> str:
    """Harman's S stemmer: ``-ies`` to ``-y``, ``-es`` to ``-e``, drop a final ``-s``."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("us", "ss")):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    return word[:-1]


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed word tokens without English stop words."""
    return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


class SparseScores:
    """The BM25 scores of one query over every slot (0 where no query term occurs)."""

    def __init__(self, vector: np.ndarray, slots: dict[str, int], keys: list[str | None]) -> None:
        self._vector = vector
        self._slots = slots
        self._keys = keys

    def __len__(self) -> int:
        return int(np.count_nonzero(self._vector))

    def get(self, key: str) -> float:
        """The score of ``key`` (0.0 if it is unknown or matched no term)."""
        slot = self._slots.get(key)
        return float(self._vector[slot]) if slot is not None else 0.0

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` best (key, score) pairs with a positive score, best first."""
        if k <= 0:
            return []
        hits = np.flatnonzero(self._vector > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-self._vector[hits], k - 1)[:k]]
        hits = hits[np.argsort(-self._vector[hits], kind="stable")]
        return [(str(self._keys[i]), float(self._vector[i])) for i in hits]


class BM25Index:
    """Postings (term -> {slot: term frequency}) plus chunk lengths."""

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._lengths = np.zeros(1024, dtype=np.float32)
        self._postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, key: str, text: str) -> None:
        """Index ``text`` under ``key`` (replacing an earlier entry)."""
        if key in self._slots:
            self.remove(key)
        slot = len(self._keys)
        self._keys.append(key)
        self._slots[key] = slot
        if slot >= len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        counts = Counter(tokenize(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[slot] = tf
            self._arrays.pop(term, None)
        length = sum(counts.values())
        self._lengths[slot] = length
        self._terms[slot] = tuple(counts)
        self._total_length += length

    def remove(self, key: str) -> None:
        """Forget ``key``; unknown keys are ignored."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        self._keys[slot] = None
        self._total_length -= int(self._lengths[slot])
        self._lengths[slot] = 0
        for term in self._terms.pop(slot):
            posting = self._postings[term]
            del posting[slot]
            self._arrays.pop(term, None)
            if not posting:
                del self._postings[term]

    def _posting_arrays(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        cached = self._arrays.get(term)
        if cached is None:
            posting = self._postings.get(term)
            if not posting:
                return None
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tfs = np.fromiter(posting.values(), dtype=np.float32, count=len(posting))
            cached = self._arrays[term] = (slots, tfs)
        return cached

    def scores(self, query: str, allowed: Collection[str] | None = None) -> SparseScores:
        """BM25 scores of every chunk for ``query``, zero outside ``allowed``."""
        vector = np.zeros(len(self._keys), dtype=np.float32)
        n = len(self._slots)
        if n:
            avg_length = self._total_length / n or 1.0
            for term in set(tokenize(query)):
                arrays = self._posting_arrays(term)
                if arrays is None:
                    continue
                slots, tfs = arrays
                idf = math.log(1.0 + (n - len(slots) + 0.5) / (len(slots) + 0.5))
                norm = K1 * (1.0 - B + B * self._lengths[slots] / avg_length)
                vector[slots] += idf * tfs * (K1 + 1.0) / (tfs + norm)
            if allowed is not None:
                mask = np.zeros(len(vector), dtype=bool)
                mask[[self._slots[k] for k in allowed if k in self._slots]] = True
                vector[~mask] = 0.0
        return SparseScores(vector, self._slots, self._keys)
