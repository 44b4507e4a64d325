"""Sparse-matrix helpers: play-count weighting, vectorised lookups, top-n per row in long
format, and CSR matrices as plain arrays for saving."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.errors import ConfigError

WEIGHTINGS = ("binary", "log", "raw")


def as_csr(matrix: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """``matrix`` itself when it is already CSR, else a CSR conversion of it."""
    if isinstance(matrix, sp.csr_matrix):
        return matrix
    return sp.csr_matrix(matrix)


def weighted(plays: sp.spmatrix, kind: str = "binary", dtype: type = np.float32) -> sp.csr_matrix:
    """A CSR copy of ``plays`` with each stored count as 1 (binary), ``log1p`` of it (log) or as is (raw)."""
    if kind not in WEIGHTINGS:
        raise ConfigError(f"weighting {kind!r} is not one of {list(WEIGHTINGS)}")
    plays = as_csr(plays)
    data: np.ndarray
    if kind == "binary":
        data = np.ones(len(plays.data), dtype)
    elif kind == "log":
        data = np.log1p(np.maximum(plays.data, 0.0)).astype(dtype)
    else:
        data = plays.data.astype(dtype)
    # built from arrays: scipy's converting copy costs several times more on one-row batches
    return sp.csr_matrix((data, plays.indices.copy(), plays.indptr.copy()), shape=plays.shape)


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def select_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of ``matrix`` by index, in that order; an index of -1 gives an empty row.

    Entries keep their order within a row. Works on a matrix with no rows (every index -1),
    such as the per-user state of an artist-side model.
    """
    rows = np.asarray(rows, np.int64)
    known = rows >= 0
    picked = as_csr(matrix)[rows[known]]
    lengths = np.zeros(len(rows), np.int64)
    lengths[known] = np.diff(picked.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((picked.data, picked.indices, indptr), shape=(len(rows), matrix.shape[1]))


def row_of_entries(matrix: sp.csr_matrix) -> np.ndarray:
    """The row of each stored entry of a CSR matrix, in storage order (int64)."""
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def select_columns(matrix: sp.csr_matrix, position: np.ndarray, n_selected: int) -> sp.csr_matrix:
    """The columns of ``matrix`` with ``position >= 0``, each moved to column ``position``.

    ``position`` maps every column of ``matrix`` to its column in the result (-1: dropped);
    the same as ``matrix[:, selected]`` without scipy's general fancy indexing.
    """
    matrix = as_csr(matrix)
    new_col = position[matrix.indices]
    keep = new_col >= 0
    return csr_from_grouped(matrix.data[keep], row_of_entries(matrix)[keep], new_col[keep],
                            (matrix.shape[0], n_selected))


def csr_from_grouped(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
                     ) -> sp.csr_matrix:
    """A CSR matrix of entries already grouped by row (``rows`` non-decreasing), without sorting."""
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sp.csr_matrix((data, cols, indptr), shape=shape)


def most_first(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` with each row's entries stored by value, largest first (ties by column).

    Returns ``matrix`` itself when its rows are already in that order.
    """
    row = row_of_entries(matrix)
    same_row = row[1:] == row[:-1]
    later = (matrix.data[1:] < matrix.data[:-1]) | (
        (matrix.data[1:] == matrix.data[:-1]) & (matrix.indices[1:] > matrix.indices[:-1]))
    if np.all(later | ~same_row):
        return matrix
    data = matrix.data  # not empty: an empty matrix is already in order
    levels = int(data.max()) + 1
    whole = data.min() >= 0 and np.all(data == np.round(data))
    if whole and matrix.shape[0] * levels * matrix.shape[1] < 2**62:
        # small whole counts (friends listening): one int64 key sorts much faster than a 3-key
        # lexsort (docs/performance.md)
        rank = row * levels + (levels - 1 - data.astype(np.int64))
        key = rank * np.int64(matrix.shape[1]) + matrix.indices
        order = np.argsort(key)
    else:
        order = np.lexsort((matrix.indices, -data, row))
    return sp.csr_matrix((data[order], matrix.indices[order], matrix.indptr.copy()), shape=matrix.shape)


def leading_entries(matrix: sp.csr_matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``width`` stored columns and values of each row, as two ``(n_rows, width)`` arrays.

    Short rows are padded with -1 columns and -inf values.
    """
    shape = (matrix.shape[0], width)
    if matrix.nnz == 0:
        return np.full(shape, -1, np.int64), np.full(shape, -np.inf, np.float32)
    offset = np.arange(width)
    present = offset[None, :] < np.minimum(np.diff(matrix.indptr), width)[:, None]
    at = np.where(present, matrix.indptr[:-1, None] + offset[None, :], 0)
    cols = np.where(present, matrix.indices[at], -1).astype(np.int64)
    values = np.where(present, matrix.data[at], -np.inf).astype(np.float32)
    return cols, values


def top_n_per_row(rows: np.ndarray, scores: np.ndarray, cols: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the best ``n`` entries of each row by score (ties by column), and their ranks.

    ``rows``, ``scores`` and ``cols`` describe entries in long format. Positions index these
    arrays and come sorted by row, best first; ranks are 1-based.
    """
    keep = np.flatnonzero(_at_least_nth_best(rows, scores, n))
    order = keep[np.lexsort((cols[keep], -scores[keep], rows[keep]))]
    sorted_rows = rows[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_rows, sorted_rows)
    within = rank < n
    return order[within], rank[within] + 1


def _at_least_nth_best(rows: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Mask of the entries scoring at least their row's ``n``-th best score (all on a tie).

    Only an O(size) pre-selection, so that the exact sort runs on about ``n`` entries per row;
    all entries pass when there are few or rows are unsorted. Rows longer than ``n`` are
    padded into matrices by length class (lengths within a factor of 2 share one), so a few
    long rows among many short ones cost no more than their own entries.
    """
    everything = np.ones(len(rows), dtype=bool)
    if len(rows) < 4096 or n < 1 or np.any(rows[1:] < rows[:-1]):
        return everything
    counts = np.bincount(rows)
    if counts.max() <= n:
        return everything
    starts = np.cumsum(counts) - counts
    threshold = np.full(len(counts), -np.inf, np.float32 if scores.dtype == np.float32 else np.float64)
    long_rows = np.flatnonzero(counts > n)
    length_class = np.ceil(np.log2(counts[long_rows])).astype(np.int64)
    for cls in np.unique(length_class):  # at most ~log2(longest row) classes
        group = long_rows[length_class == cls]
        lengths = counts[group]
        width = int(lengths.max())
        local_row = np.repeat(np.arange(len(group)), lengths)
        position = np.arange(len(local_row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        padded = np.full((len(group), width), -np.inf, threshold.dtype)
        padded[local_row, position] = scores[np.repeat(starts[group], lengths) + position]
        threshold[group] = -np.partition(-padded, n - 1, axis=1)[:, n - 1]
    return scores >= threshold[rows]


def csr_to_arrays(matrix: sp.csr_matrix, prefix: str = "") -> dict[str, np.ndarray]:
    """A CSR matrix as named arrays (``data, indices, indptr, shape``) for an ``.npz``."""
    return {f"{prefix}data": matrix.data, f"{prefix}indices": matrix.indices,
            f"{prefix}indptr": matrix.indptr, f"{prefix}shape": np.array(matrix.shape)}


def csr_from_arrays(arrays: dict[str, np.ndarray], prefix: str = "") -> sp.csr_matrix:
    """The CSR matrix written by :func:`csr_to_arrays` (float32 values)."""
    shape = tuple(int(n) for n in arrays[f"{prefix}shape"])
    return sp.csr_matrix((np.asarray(arrays[f"{prefix}data"], np.float32), arrays[f"{prefix}indices"],
                          arrays[f"{prefix}indptr"]), shape=shape)


# A matrix of at most this many cells, at least 1 in DENSE_LOOKUP_FILL of them stored, is
# expanded to dense for a lookup: a batch's RP3beta scores are read faster that way than by
# searching their entries (docs/performance.md).
DENSE_LOOKUP_CELLS = 1 << 25
DENSE_LOOKUP_FILL = 64


def lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values ``matrix[rows[i], cols[i]]`` for many pairs at once (0 where absent).

    Small, well-filled matrices are read through a dense copy (duplicate entries summed).
    Pairs already sorted by row then column (as a :class:`CandidateSet` is) are found by
    searching the matrix entries among them, so the matrix need not be sorted; other pairs
    are searched among the sorted matrix entries.
    """
    matrix = as_csr(matrix)
    cells = matrix.shape[0] * matrix.shape[1]
    if matrix.nnz and len(rows) and cells <= DENSE_LOOKUP_CELLS and cells <= DENSE_LOOKUP_FILL * matrix.nnz:
        return matrix.toarray()[rows, cols].astype(np.float32, copy=False)
    n_cols = np.int64(matrix.shape[1])
    wanted = rows.astype(np.int64) * n_cols + cols.astype(np.int64)
    out = np.zeros(len(wanted), np.float32)
    if matrix.nnz == 0 or len(wanted) == 0:
        return out
    if np.all(wanted[1:] > wanted[:-1]):
        keys = _entry_keys(matrix)
        pos = np.minimum(np.searchsorted(wanted, keys), len(wanted) - 1)
        hit = wanted[pos] == keys
        out[pos[hit]] = matrix.data[hit]
        return out
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    keys = _entry_keys(matrix)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[pos] == wanted, matrix.data[pos], 0.0).astype(np.float32)


def _entry_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """``row * n_cols + col`` of each stored entry, in storage order."""
    return row_of_entries(matrix) * np.int64(matrix.shape[1]) + matrix.indices.astype(np.int64)


def moved(matrix: sp.csr_matrix, rows: np.ndarray | None, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """``matrix`` with row ``i`` at ``rows[i]`` (``None``: kept, more rows appended empty) and column
    ``j`` at ``cols[j]``, in a matrix of ``shape``; both maps increasing.

    Increasing maps keep every row's entries in their stored order (sorted rows stay sorted,
    rows stored most-first stay so) and the entries' order overall: only the indices and the
    row pointers are new.
    """
    matrix = as_csr(matrix)
    lengths = np.zeros(shape[0], np.int64)
    lengths[np.arange(matrix.shape[0]) if rows is None else rows] = np.diff(matrix.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((matrix.data, cols[matrix.indices], indptr), shape=shape)
