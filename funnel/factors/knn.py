"""User-kNN: artists scored by the cosine similarity of the listeners who play them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.errors import ConfigError, NotFittedError
from funnel.sparse import csr_from_arrays, csr_to_arrays, weighted

_WEIGHTINGS = ("binary", "log")


def _weighted_rows(plays: sp.spmatrix, weighting: str) -> sp.csr_matrix:
    """Rows of ``plays`` as binary or ``log1p(plays)`` weights, scaled to unit L2 norm."""
    rows = weighted(plays, weighting)
    rows.eliminate_zeros()
    per_row = np.diff(rows.indptr)
    norms = np.sqrt(np.bincount(np.repeat(np.arange(rows.shape[0]), per_row), weights=rows.data ** 2,
                                minlength=rows.shape[0]))
    rows.data /= np.repeat(np.maximum(norms, 1e-12), per_row).astype(np.float32)
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
        sims = np.asarray((_weighted_rows(history, self.weighting) @ self.columns_).toarray(), np.float32)
        known = np.flatnonzero(users >= 0)
        sims[known, users[known]] = 0.0
        k = min(self.n_neighbors, n_train)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n_train else \
            np.broadcast_to(np.arange(n_train), (n_rows, n_train))
        vals = np.take_along_axis(sims, top, axis=1)
        neighbours = sp.csr_matrix((vals.ravel(), (np.repeat(np.arange(n_rows), top.shape[1]), top.ravel())),
                                   shape=(n_rows, n_train))
        neighbours.eliminate_zeros()
        return sp.csr_matrix(neighbours @ self.listens_)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "rows_"):
            raise NotFittedError("UserKNN is not fitted; call fit() first")
        return csr_to_arrays(self.rows_)

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "UserKNN":
        """Restore the state written by :meth:`to_arrays`."""
        return self._derive(csr_from_arrays(arrays))
