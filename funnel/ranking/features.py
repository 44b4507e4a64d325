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


CHUNK_BYTES = 1 << 21  # rows gathered per step stay in cache (about 2 MB per side)
# A batch whose users x distinct candidate artists is at most this many times its number of
# pairs gets one matrix product: on Last.fm (512 users, ~5,400 distinct artists among
# ~103,000 pairs, 27 times as many cells) it scored the tag similarity of 504-dimension
# vectors (tag_dim 500) 2x faster than gathering both vectors of every pair (~2 KB each).
DENSE_PAIR_CELLS = 48


def pair_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, rows: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """Inner products ``user_vectors[rows] . item_vectors[items]`` for every pair.

    When the pairs cover the batch's users x distinct artists densely enough, one BLAS
    product of the user vectors with the distinct artists' vectors computes them all.
    Otherwise both vectors of each pair are gathered in cache-sized chunks, which reads far
    less than a users x artists product would compute.
    """
    if len(rows) == 0:
        return np.empty(0, np.float32)
    present = np.zeros(len(item_vectors), bool)
    present[items] = True
    distinct = np.flatnonzero(present)
    if len(user_vectors) * len(distinct) <= DENSE_PAIR_CELLS * len(rows):
        product = np.asarray(user_vectors, np.float32) @ np.asarray(item_vectors[distinct], np.float32).T
        column = np.cumsum(present) - 1  # artist -> its column of the product
        return product[rows, column[items]]
    out = np.empty(len(rows), np.float32)
    step = max(1, CHUNK_BYTES // (4 * max(item_vectors.shape[1], 1)))
    for start in range(0, len(rows), step):
        end = start + step
        out[start:end] = rowwise_dot(user_vectors[rows[start:end]], item_vectors[items[start:end]])
    return out


def stack_columns(blocks: list[np.ndarray], n_rows: int) -> np.ndarray:
    """The blocks (1-D columns or 2-D) side by side in one float32 matrix.

    Column-major, so each block is written contiguously instead of in strided pieces.
    """
    blocks = [np.asarray(b).reshape(n_rows, -1) for b in blocks]
    out = np.empty((n_rows, sum(b.shape[1] for b in blocks)), np.float32, order="F")
    at = 0
    for block in blocks:
        out[:, at:at + block.shape[1]] = block
        at += block.shape[1]
    return out
