"""Vectorised lookups in sparse matrices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values ``matrix[rows[i], cols[i]]`` for many pairs at once (0 where absent)."""
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    n_cols = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * n_cols \
        + matrix.indices.astype(np.int64)
    wanted = rows.astype(np.int64) * n_cols + cols.astype(np.int64)
    if len(keys) == 0:
        return np.zeros(len(wanted), np.float32)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[pos] == wanted, matrix.data[pos], 0.0).astype(np.float32)
