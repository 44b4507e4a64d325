"""Merging the candidate lists of several sources into one set of (user, artist) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CandidateSet:
    """Unique candidate pairs in long format, sorted by row then artist.

    Attributes
    ----------
    rows : numpy.ndarray
        Position of the pair's user in the batch that was retrieved for.
    items : numpy.ndarray
        Internal artist index.
    ranks, scores : dict of str to numpy.ndarray
        Per source: the 1-based rank the source gave the pair (``n_candidates + 1`` when the
        source did not return it) and its score (the lowest score the source returned for
        that user when it did not).
    """

    rows: np.ndarray
    items: np.ndarray
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> CandidateSet:
        """The pairs where boolean mask ``keep`` is set."""
        return CandidateSet(rows=self.rows[keep], items=self.items[keep],
                            ranks={k: v[keep] for k, v in self.ranks.items()},
                            scores={k: v[keep] for k, v in self.scores.items()})

    def counts(self, n_rows: int) -> np.ndarray:
        """Number of candidates of each batch row."""
        return np.bincount(self.rows, minlength=n_rows)


def merge_candidates(
    retrieved: list[tuple[str, np.ndarray, np.ndarray]],
    n_items: int,
    extra: Sequence[np.ndarray] = (),
) -> CandidateSet:
    """Union the sources' ``(name, ids, scores)`` lists; ``extra`` id arrays add pairs only.

    Every array is ``(n_rows, k)`` with -1 padding, as returned by a candidate source.
    """
    lists = [ids for _, ids, _ in retrieved] + list(extra)
    ids = np.hstack(lists) if lists else np.empty((0, 0), np.int64)
    valid = ids >= 0
    keys = (np.arange(len(ids), dtype=np.int64)[:, None] * n_items + ids)[valid]
    unique, inverse = np.unique(keys, return_inverse=True)
    position = np.full(ids.shape, -1, np.int64)
    position[valid] = inverse  # each listed pair's index among the unique pairs
    out = CandidateSet(rows=unique // n_items, items=unique % n_items)
    start = 0
    for name, source_ids, scores in retrieved:
        k = source_ids.shape[1]
        listed, found = position[:, start:start + k], valid[:, start:start + k]
        start += k
        rank = np.full(len(unique), k + 1, np.float32)
        rank[listed[found]] = np.nonzero(found)[1] + 1
        floor = np.where(found, scores, np.inf).min(axis=1, initial=np.inf)
        score = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)[out.rows]
        score[listed[found]] = scores[found]
        out.ranks[name] = rank
        out.scores[name] = score
    return out
