"""The interface every stage-one candidate source implements, and the shared helpers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from funnel.data import Dataset
from funnel.factors.memo import LastCall
from funnel.sparse import leading_entries, lookup, row_of_entries


@runtime_checkable
class CandidateSource(Protocol):
    """A stage-one source: fitted on a dataset, it returns scored artists per user.

    ``retrieve(users, history)`` gets internal user indices (-1 for a user unknown to the
    fit, e.g. a new listener) and their history as CSR rows over the catalogue, and returns
    ``(ids, scores)``: two ``(len(users), n_candidates)`` arrays, best first, of internal
    artist indices (-1 pads a short row) and float32 scores (-inf pads). Artists in the
    user's history are never returned.
    """

    name: str
    n_candidates: int

    def fit(self, dataset: Dataset) -> "CandidateSource": ...

    def retrieve(self, users: np.ndarray, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]: ...


def max_history(history: sp.csr_matrix) -> int:
    """Length of the longest history row."""
    return int(np.diff(history.indptr).max(initial=0))


def drop_seen(ids: np.ndarray, scores: np.ndarray, history: sp.csr_matrix, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``k`` ids of each row that are valid and not in that row's history.

    ``ids`` must be ordered best first per row; rows with fewer than ``k`` survivors are
    padded with -1 ids and -inf scores.
    """
    bad = in_history(history, ids) | (ids < 0)
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]
    row = np.arange(len(ids))[:, None]
    out_ids = ids[row, order].astype(np.int64)
    out_scores = scores[row, order].astype(np.float32)
    out_bad = bad[row, order]
    out_ids[out_bad] = -1
    out_scores[out_bad] = -np.inf
    return _pad(out_ids, out_scores, k)


# A batch of at most this many users x artists marks its history in a dense boolean matrix
# to test candidates against it: 2.6x faster than searching the history's entries for a
# batch of 512 Last.fm users and 150 ids each (1.5 against 3.8 ms).
SEEN_MASK_CELLS = 1 << 25


_SEEN = LastCall()  # the sources of one batch test against the same history


def _seen_mask(history: sp.csr_matrix) -> np.ndarray:
    seen = np.zeros(history.shape, bool)
    seen[row_of_entries(history), history.indices] = True
    return seen


def in_history(history: sp.csr_matrix, ids: np.ndarray) -> np.ndarray:
    """Whether each ``ids[r, j]`` is in history row ``r`` (False for negative ids)."""
    n_rows, n_items = history.shape
    valid = np.maximum(ids, 0)
    if n_rows * n_items <= SEEN_MASK_CELLS:
        seen = _SEEN.get((history,), lambda: _seen_mask(history))
        found = seen[np.arange(n_rows)[:, None], valid]
    else:
        found = (lookup(history, np.repeat(np.arange(n_rows), ids.shape[1]), valid.ravel()) != 0
                 ).reshape(ids.shape)
    return found & (ids >= 0)


def _pad(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows widened to ``k`` columns with -1 ids and -inf scores."""
    if ids.shape[1] >= k:
        return ids, scores
    pad = ((0, 0), (0, k - ids.shape[1]))
    return np.pad(ids, pad, constant_values=-1), np.pad(scores, pad, constant_values=-np.inf)


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Scale rows to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def top_k_unseen(scores: np.ndarray, item_ids: np.ndarray, history: sp.csr_matrix, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` unseen artists per row of a dense ``(n_rows, len(item_ids))`` score matrix.

    Column ``j`` of ``scores`` is artist ``item_ids[j]``; returns ``(ids, scores)`` as a
    candidate source does (best first, -1 / -inf padding).
    """
    n_rows, n_cols = scores.shape
    column = np.full(history.shape[1], -1, np.int64)
    column[item_ids] = np.arange(n_cols)
    seen_rows, seen_cols = row_of_entries(history), column[history.indices]
    hit = seen_cols >= 0
    masked = np.array(scores, dtype=np.float32)
    masked[seen_rows[hit], seen_cols[hit]] = -np.inf
    width = min(k, n_cols)
    if width == 0:
        return _pad(np.full((n_rows, 0), -1, np.int64), np.zeros((n_rows, 0), np.float32), k)
    top = np.argpartition(-masked, width - 1, axis=1)[:, :width]
    row = np.arange(n_rows)[:, None]
    top = top[row, np.argsort(-masked[row, top], axis=1, kind="stable")]
    top_scores = masked[row, top]
    # seen artists were masked to -inf, so they sort last and become padding
    ids = np.where(np.isfinite(top_scores), item_ids[top], -1)
    return _pad(ids, top_scores, k)


def top_k_ordered(scores: sp.csr_matrix, history: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` unseen artists per row of a sparse score matrix whose rows store their best first.

    Only stored entries are candidates (see :func:`funnel.sparse.most_first`). Returns
    ``(ids, scores)`` as a candidate source does (best first, -1 / -inf padding).
    """
    ids, values = leading_entries(scores, k + max_history(history))
    return drop_seen(ids, values, history, k)
