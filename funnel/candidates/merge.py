"""Merging the candidate lists of several sources into one set of (user, artist) pairs."""

from __future__ import annotations

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

    def counts(self, n_rows: int) -> np.ndarray:
        """Number of candidates of each batch row."""
        return np.bincount(self.rows, minlength=n_rows)


def merge_candidates(
    retrieved: list[tuple[str, np.ndarray, np.ndarray]],
    n_items: int,
    extra: list[np.ndarray] = (),
) -> CandidateSet:
    """Union the sources' ``(name, ids, scores)`` lists; ``extra`` id arrays add pairs only.

    Every array is ``(n_rows, k)`` with -1 padding, as returned by a candidate source.
    """
    n_rows = retrieved[0][1].shape[0] if retrieved else extra[0].shape[0]
    row_of = lambda ids: np.broadcast_to(np.arange(n_rows, dtype=np.int64)[:, None], ids.shape)  # noqa: E731
    keys = []
    for ids in [r[1] for r in retrieved] + list(extra):
        valid = ids >= 0
        keys.append(row_of(ids)[valid] * n_items + ids[valid])
    unique = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    out = CandidateSet(rows=unique // n_items, items=unique % n_items)
    for name, ids, scores in retrieved:
        k = ids.shape[1]
        valid = ids >= 0
        pos = np.searchsorted(unique, row_of(ids)[valid] * n_items + ids[valid])
        rank = np.full(len(unique), k + 1, np.float32)
        rank[pos] = np.broadcast_to(np.arange(1, k + 1, dtype=np.float32), ids.shape)[valid]
        finite = np.where(valid, scores, np.inf)
        floor = finite.min(axis=1)
        floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
        score = floor[out.rows]
        score[pos] = scores[valid]
        out.ranks[name] = rank
        out.scores[name] = score
    return out
