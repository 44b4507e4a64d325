"""Per-user statistics and the per-(user, candidate) feature matrix of stage two."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.data import Dataset
from funnel.data.freshness import robust_years


def user_statistics(dataset: Dataset) -> dict[str, np.ndarray]:
    """Years since each user last tagged anything (as of the data), and whether they did.

    Dates are clipped into their plausible range like artist freshness.
    Users who never tagged get the median and a 0 flag.
    """
    last = np.full(dataset.n_users, np.nan)
    assign = dataset.tag_assignments
    if assign is not None and len(assign):
        years, latest = robust_years(assign["timestamp"].to_numpy())
        users = dataset.user_index(assign["user_id"].to_numpy())
        ok = np.isfinite(years) & (users >= 0)
        np.fmax.at(last, users[ok], years[ok])
        last = latest - last
    tagged = np.isfinite(last)
    fill = np.nanmedian(last) if tagged.any() else 0.0
    return {"years_since_last_tag": np.where(tagged, last, fill).astype(np.float32),
            "has_tagged": tagged.astype(np.float32)}


def activity(history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + number of artists) and log(1 + total plays) of each history row."""
    n = np.diff(history.indptr)
    plays = np.asarray(history.sum(axis=1)).ravel()
    return np.log1p(n).astype(np.float32), np.log1p(plays).astype(np.float32)


def rowwise_dot(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dot product of matching rows."""
    return np.einsum("ij,ij->i", left, right, dtype=np.float32)


DENSE_LIMIT = 1 << 25  # users x artists cells below which one matrix product is cheaper
DENSE_MIN_USERS = 16  # below this, the product would score mostly artists that are not candidates


def pair_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, rows: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """Inner products ``user_vectors[rows] . item_vectors[items]`` for every pair.

    Batches of users take one BLAS product of all users with all artists and pick the pairs,
    unless that matrix would be large; a few users (a single request) or large products
    gather the pairs' rows instead, so memory stays bounded on big catalogues.
    """
    if len(user_vectors) >= DENSE_MIN_USERS and len(user_vectors) * len(item_vectors) <= DENSE_LIMIT:
        return (user_vectors @ item_vectors.T)[rows, items].astype(np.float32)
    out = np.empty(len(rows), np.float32)
    step = max(1, DENSE_LIMIT // max(item_vectors.shape[1], 1))
    for start in range(0, len(rows), step):
        end = start + step
        out[start:end] = rowwise_dot(user_vectors[rows[start:end]], item_vectors[items[start:end]])
    return out
