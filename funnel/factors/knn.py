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
    Like a factor model's user factors, the neighbours of every training user are found in
    ``fit``; only rows of users unknown to the fit are compared on request.

    Parameters
    ----------
    n_neighbors : int
    weighting : {"binary", "log"}
        How a play count enters the similarity.
    block_size : int
        Training users whose neighbours are found at once in ``fit`` (bounds the memory of
        their similarity rows).

    Attributes
    ----------
    rows_ : scipy.sparse.csr_matrix
        Unit-norm weighted users x artists rows of the training users.
    columns_ : scipy.sparse.csr_matrix
        ``rows_`` transposed (artists x users).
    listens_ : scipy.sparse.csr_matrix
        Binary users x artists listening of the training users.
    neighbours_ : scipy.sparse.csr_matrix
        users x users: each training user's ``n_neighbors`` most similar other training
        users and their cosine similarity.
    """

    def __init__(self, n_neighbors: int = 100, weighting: str = "binary", block_size: int = 512) -> None:
        self.n_neighbors = n_neighbors
        self.weighting = weighting
        self.block_size = block_size

    def fit(self, plays: sp.csr_matrix) -> "UserKNN":
        """Fit on a users x artists play matrix; returns ``self``."""
        if self.n_neighbors < 1 or self.weighting not in _WEIGHTINGS or self.block_size < 1:
            raise ConfigError(f"UserKNN needs n_neighbors >= 1, weighting in {list(_WEIGHTINGS)} and "
                              f"block_size >= 1, got {self.n_neighbors}, {self.weighting!r}, {self.block_size}")
        self._derive(_weighted_rows(plays, self.weighting))
        self.neighbours_ = self._all_neighbours()
        return self

    def _derive(self, rows: sp.csr_matrix) -> "UserKNN":
        self.rows_ = rows
        self.columns_ = sp.csr_matrix(rows.T)  # artists x users, for fast similarity products
        self.listens_ = weighted(rows, "binary")
        return self

    def _all_neighbours(self) -> sp.csr_matrix:
        """Neighbours of every training user, found a block of users at a time."""
        n_train = self.rows_.shape[0]
        blocks = [self._neighbours(np.arange(start, min(start + self.block_size, n_train)),
                                   self.rows_[start:start + self.block_size])
                  for start in range(0, n_train, self.block_size)]
        if not blocks:
            return sp.csr_matrix((0, 0), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(blocks, format="csr"))

    def _neighbours(self, users: np.ndarray, unit_rows: sp.csr_matrix) -> sp.csr_matrix:
        """The ``n_neighbors`` most similar training users of each unit-norm row (not itself)."""
        n_rows, n_train = unit_rows.shape[0], self.rows_.shape[0]
        # similarities stay sparse: a user shares artists with a few percent of the others
        sims = unit_rows @ self.columns_
        row = row_of_entries(sims)
        keep = (sims.data > 0) & (sims.indices != np.where(users >= 0, users, -1)[row])
        row, col, sim = row[keep], sims.indices[keep], sims.data[keep]
        top, _ = top_n_per_row(row, sim, col, self.n_neighbors)  # grouped by row, as CSR wants
        return csr_from_grouped(sim[top], row[top], col[top], (n_rows, n_train))

    def scores(self, users: np.ndarray, history: sp.csr_matrix) -> sp.csr_matrix:
        """Sparse ``(n_rows, n_artists)`` scores for each history row.

        ``users`` are the rows' internal user indices, -1 for users unknown to the fit. A
        known user is scored with the neighbours found in ``fit`` from their training row
        (their ``history`` row is not read) and is never their own neighbour; an unknown
        user's neighbours are found from their ``history`` row.
        """
        if not hasattr(self, "rows_"):
            raise NotFittedError("UserKNN is not fitted; call fit() first")
        users = np.asarray(users)
        known = users >= 0
        neighbours = self.neighbours_[np.where(known, users, 0)]
        if not known.all():
            new = np.flatnonzero(~known)
            found = self._neighbours(users[new], _weighted_rows(history[new], self.weighting))
            place = sp.csr_matrix((np.ones(len(new), np.float32), (new, np.arange(len(new)))),
                                  shape=(len(users), len(new)))
            neighbours = sp.diags(known.astype(np.float32)) @ neighbours + place @ found
        return sp.csr_matrix(neighbours @ self.listens_)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "rows_"):
            raise NotFittedError("UserKNN is not fitted; call fit() first")
        return {**csr_to_arrays(self.rows_), **csr_to_arrays(self.neighbours_, "neighbours/")}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "UserKNN":
        """Restore the state written by :meth:`to_arrays`."""
        self._derive(csr_from_arrays(arrays))
        if "neighbours/data" in arrays:
            self.neighbours_ = csr_from_arrays(arrays, "neighbours/")
        else:  # saved before neighbours were kept
            self.neighbours_ = self._all_neighbours()
        return self
