"""RP3beta (Paudel et al. 2017): a popularity-penalised random-walk item-item model."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate, tunable
from funnel.sparse import csr_from_arrays, csr_to_arrays, lookup, top_n_per_row, weighted


def _row_stochastic(matrix: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """Rows scaled to sum to 1, then every entry raised to ``alpha``."""
    degree = np.diff(matrix.indptr).astype(np.float64)
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.data = (np.repeat(1.0 / np.maximum(degree, 1.0), np.diff(matrix.indptr)) ** alpha).astype(np.float32)
    return out


class RP3beta(ArrayState):
    """Three-step random walk artist -> listener -> artist, damped by the target's popularity.

    With ``P_ui`` the row-stochastic users x artists matrix of binary listening and ``P_iu``
    the row-stochastic artists x users one (entries raised to ``alpha``), the artist-artist
    weights are ``W_ij = (P_iu P_ui)_ij / listeners_j ** beta``, with a zero diagonal and only
    the ``top_k`` largest weights kept in each row. A user's score for artist j is
    ``sum_i x_i W_ij`` over the artists i they listened to.

    Parameters
    ----------
    alpha : float
        Exponent of the transition probabilities (1 is the plain random walk, P3alpha).
    beta : float
        Popularity penalty: weights into artist j are divided by its listener count ** beta.
    top_k : int
        Neighbours kept per artist.
    block_size : int
        Artists whose weight rows are computed at once (bounds the dense working memory).

    Attributes
    ----------
    weights_ : scipy.sparse.csr_matrix
        ``(n_artists, n_artists)`` float32 artist-artist weights.
    """

    name = "rp3"

    def __init__(self, *, alpha: float = 1.0, beta: float = 0.25, top_k: int = 200,
                 block_size: int = 1024) -> None:
        self.alpha = alpha
        self.beta = beta
        self.top_k = top_k
        self.block_size = block_size

    class Settings(PartSettings):
        """Random-walk exponent, popularity penalty and neighbours kept per artist."""

        alpha: float = Field(1.0, gt=0)
        beta: float = Field(0.25, ge=0, json_schema_extra=tunable(0.0, 1.0))
        top_k: int = Field(100, gt=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> RP3beta:
        return cls(**settings.model_dump())

    def fit(self, dataset: Dataset | sp.csr_matrix) -> RP3beta:
        """Fit on a dataset's (or a matrix of) play counts; only presence matters. Returns ``self``."""
        plays = dataset.matrix if isinstance(dataset, Dataset) else sp.csr_matrix(dataset)
        binary = weighted(plays, "binary")
        n_artists = binary.shape[1]
        user_to_item = _row_stochastic(binary, self.alpha)
        item_to_user = _row_stochastic(sp.csr_matrix(binary.T), self.alpha)
        listeners = np.diff(item_to_user.indptr).astype(np.float64)
        penalty = sp.diags((1.0 / np.maximum(listeners, 1.0) ** self.beta).astype(np.float32))
        walk = sp.csr_matrix(user_to_item @ penalty)  # the popularity damping folded into the second step
        k = min(self.top_k, max(n_artists - 1, 1))
        rows, cols, vals = [], [], []
        for start in range(0, n_artists, self.block_size):
            # sparse product and sparse top-k per row: no dense block of the whole catalogue
            block = sp.coo_matrix(item_to_user[start:start + self.block_size] @ walk)
            keep = (block.row + start != block.col) & (block.data > 0)
            row, col, val = block.row[keep], block.col[keep], block.data[keep]
            top, _ = top_n_per_row(row, val, col, k)
            rows.append(row[top] + start)
            cols.append(col[top])
            vals.append(val[top])
        self.weights_ = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_artists, n_artists))
        self.weights_.sort_indices()
        return self

    def update(self, change: PartUpdate) -> RP3beta:
        """The walk's weights stay as fitted, re-indexed to the new catalogue (new artists have none)."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("RP3beta is not fitted; call fit() first")
        self.weights_ = change.matrix(self.weights_, artist_rows=True)
        return self

    def scores(self, history: sp.csr_matrix) -> sp.csr_matrix:
        """Sparse ``(n_rows, n_artists)`` scores of every artist for each history row."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("RP3beta is not fitted; call fit() first")
        return sp.csr_matrix(weighted(history, "binary") @ self.weights_)

    def pair_scores(self, batch: Batch, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (batch row, artist) pair."""
        return lookup(self.scores(batch.history), rows, items)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("RP3beta is not fitted; call fit() first")
        return csr_to_arrays(self.weights_)

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> RP3beta:
        """Restore the state written by :meth:`to_arrays`."""
        self.weights_ = csr_from_arrays(arrays)
        return self
