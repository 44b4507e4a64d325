"""Helpers every stage-one source shares: keep the best unseen artists of each row."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.batch import Batch
from funnel.sparse import leading_entries, row_of_entries


def drop_seen(ids: np.ndarray, scores: np.ndarray, batch: Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``k`` ids of each row that are valid and not excluded for that row.

    ``ids`` must be ordered best first per row; rows with fewer than ``k`` survivors are
    padded with -1 ids and -inf scores.
    """
    bad = batch.excluded(ids) | (ids < 0)
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]
    row = np.arange(len(ids))[:, None]
    out_ids = ids[row, order].astype(np.int64)
    out_scores = scores[row, order].astype(np.float32)
    out_bad = bad[row, order]
    out_ids[out_bad] = -1
    out_scores[out_bad] = -np.inf
    return pad(out_ids, out_scores, k)


def pad(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows widened to ``k`` columns with -1 ids and -inf scores."""
    if ids.shape[1] >= k:
        return ids, scores
    width = ((0, 0), (0, k - ids.shape[1]))
    return np.pad(ids, width, constant_values=-1), np.pad(scores, width, constant_values=-np.inf)


def top_k_unseen(scores: np.ndarray, item_ids: np.ndarray, batch: Batch, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` artists per row of a dense ``(n_rows, len(item_ids))`` score matrix, none excluded.

    Column ``j`` of ``scores`` is artist ``item_ids[j]``; artists the batch excludes for a
    row (:meth:`Batch.excluded`) are skipped. Returns ``(ids, scores)`` as a candidate
    source does (best first, -1 / -inf padding).
    """
    known = batch.known
    n_rows, n_cols = scores.shape
    column = np.full(known.shape[1], -1, np.int64)
    column[item_ids] = np.arange(n_cols)
    seen_rows, seen_cols = row_of_entries(known), column[known.indices]
    hit = seen_cols >= 0
    masked = np.array(scores, dtype=np.float32)
    masked[seen_rows[hit], seen_cols[hit]] = -np.inf
    if batch.blocked_items is not None:
        masked[:, batch.blocked_items[item_ids]] = -np.inf
    width = min(k, n_cols)
    if width == 0:
        return pad(np.full((n_rows, 0), -1, np.int64), np.zeros((n_rows, 0), np.float32), k)
    top = np.argpartition(-masked, width - 1, axis=1)[:, :width]
    row = np.arange(n_rows)[:, None]
    top = top[row, np.argsort(-masked[row, top], axis=1, kind="stable")]
    top_scores = masked[row, top]
    # seen artists were masked to -inf, so they sort last and become padding
    ids = np.where(np.isfinite(top_scores), item_ids[top], -1)
    return pad(ids, top_scores, k)


def top_k_ordered(scores: sp.csr_matrix, batch: Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` unseen artists per row of a sparse score matrix whose rows store their best first.

    Only stored entries are candidates (see :func:`funnel.sparse.most_first`).
    """
    ids, values = leading_entries(scores, k + batch.max_known())
    return drop_seen(ids, values, batch, k)
