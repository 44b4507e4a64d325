"""The interface every stage-one candidate source implements, and the shared helpers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from funnel.data import Dataset


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
    n_rows, width = ids.shape
    history = sp.csr_matrix(history)
    history.sort_indices()
    n_cols = np.int64(history.shape[1])
    hist_keys = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(history.indptr)) * n_cols \
        + history.indices.astype(np.int64)
    keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_cols + ids.astype(np.int64)
    pos = np.searchsorted(hist_keys, keys)
    seen = (pos < len(hist_keys)) & (hist_keys[np.minimum(pos, max(len(hist_keys) - 1, 0))] == keys) \
        if len(hist_keys) else np.zeros(ids.shape, bool)
    bad = seen | (ids < 0)
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    out_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    out_bad = np.take_along_axis(bad, order, axis=1)
    out_ids[out_bad] = -1
    out_scores[out_bad] = -np.inf
    if out_ids.shape[1] < k:
        pad = k - out_ids.shape[1]
        out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_ids, out_scores


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Scale rows to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)
