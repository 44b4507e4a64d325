"""User-kNN: artists scored by the cosine similarity of the listeners who play them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.errors import ConfigError, NotFittedError
from funnel.sparse import (csr_from_arrays, csr_from_grouped, csr_to_arrays, row_of_entries, top_n_per_row,
                           weighted)

_WEIGHTINGS = ("binary", "log")


def _weighted_rows(plays: sp.spmatrix, weighting: str) -> sp.csr_matrix:
    """Rows of ``plays`` as binary or ``log1p(plays)`` weights, scaled to unit L2 norm."""
    rows = weighted(plays, weighting)
    rows.eliminate_zeros()
    row = row_of_entries(rows)
    norms = np.sqrt(np.bincount(row, weights=rows.data ** 2, minlength=rows.shape[0]))
    rows.data /= np.maximum(norms, 1e-12).astype(np.float32)[row]
    return rows


class UserKNN:
    """Score artist j for a user as the summed cosine similarity of their neighbours playing j.

    The ``n_neighbors`` training users most similar to the history row (cosine over binary or
    ``log1p(plays)`` rows; the user themselves excluded) vote for the artists they listen to.

    Parameters
    ----------
    n_neighbors : int
    weighting : {"binary", "log"}
        How a play count enters the similarity.

    Attributes
    ----------
    rows_ : scipy.sparse.csr_matrix
        Unit-norm weighted users x artists rows of the training users.
    columns_ : scipy.sparse.csr_matrix
        ``rows_`` transposed (artists x users).
    listens_ : scipy.sparse.csr_matrix
        Binary users x artists listening of the training users.
    """

    def __init__(self, n_neighbors: int = 100, weighting: str = "binary") -> None:
        self.n_neighbors = n_neighbors
        self.weighting = weighting

    def fit(self, plays: sp.csr_matrix) -> "UserKNN":
        """Fit on a users x artists play matrix; returns ``self``."""
        if self.n_neighbors < 1 or self.weighting not in _WEIGHTINGS:
            raise ConfigError(f"UserKNN needs n_neighbors >= 1 and weighting in {list(_WEIGHTINGS)}, "
                              f"got {self.n_neighbors}, {self.weighting!r}")
        return self._derive(_weighted_rows(plays, self.weighting))

    def _derive(self, rows: sp.csr_matrix) -> "UserKNN":
        self.rows_ = rows
        self.columns_ = sp.csr_matrix(rows.T)  # artists x users, for fast similarity products
        self.listens_ = weighted(rows, "binary")
        return self

    def scores(self, users: np.ndarray, history: sp.csr_matrix) -> sp.csr_matrix:
        """Sparse ``(n_rows, n_artists)`` scores for each history row.

        ``users`` are the rows' internal user indices (-1 for users unknown to the fit); a
        known user is never their own neighbour.
        """
        if not hasattr(self, "rows_"):
            raise NotFittedError("UserKNN is not fitted; call fit() first")
        n_rows, n_train = history.shape[0], self.rows_.shape[0]
        # similarities stay sparse: a user shares artists with a few percent of the others
        sims = _weighted_rows(history, self.weighting) @ self.columns_
        row = row_of_entries(sims)
        keep = (sims.data > 0) & (sims.indices != np.where(users >= 0, users, -1)[row])
        row, col, sim = row[keep], sims.indices[keep], sims.data[keep]
        top, _ = top_n_per_row(row, sim, col, self.n_neighbors)  # grouped by row, as CSR wants
        neighbours = csr_from_grouped(sim[top], row[top], col[top], (n_rows, n_train))
        return neighbours @ self.listens_

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "rows_"):
            raise NotFittedError("UserKNN is not fitted; call fit() first")
        return csr_to_arrays(self.rows_)

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "UserKNN":
        """Restore the state written by :meth:`to_arrays`."""
        return self._derive(csr_from_arrays(arrays))
