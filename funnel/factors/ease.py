"""EASE (Steck 2019): a closed-form item-item model of co-listening."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import ConfigError, NotFittedError
from funnel.factors.nearest import nearest
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate, Space, tunable
from funnel.sparse import select_columns, weighted


class EASE(ArrayState):
    """Embarrassingly shallow autoencoder on listening, over the most listened artists.

    ``B = I - P / diag(P)`` with ``P = (X'X + l2 I)^-1`` and a zero diagonal; a user's score
    for artist j is ``sum_i x_i B_ij``. Only artists with at least ``min_listeners``
    listeners are modelled, at most ``max_artists`` of them (the most listened), which keeps
    the dense inverse small; other artists score 0.

    Parameters
    ----------
    l2 : float
    min_listeners, max_artists : int
    weighting : {"binary", "log"}
        Input of the model: presence (1) or ``log1p(plays)`` of each listened artist.

    Attributes
    ----------
    items_ : numpy.ndarray
        Internal indices of the modelled artists.
    weights_ : numpy.ndarray
        ``(len(items_), len(items_))`` float32 item-item weights.
    column_ : numpy.ndarray
        Column of each catalogue artist in :meth:`scores` (-1 when not modelled).
    """

    name = "ease"

    def __init__(self, *, l2: float = 200.0, min_listeners: int = 2, max_artists: int = 3000,
                 weighting: str = "binary") -> None:
        self.l2 = l2
        self.min_listeners = min_listeners
        self.max_artists = max_artists
        self.weighting = weighting

    class Settings(PartSettings):
        """L2 penalty, and how many of the most listened artists it models (its cost is cubic)."""

        l2: float = Field(200.0, gt=0, json_schema_extra=tunable(10.0, 5000.0, log=True))
        max_artists: int = Field(2000, gt=0, json_schema_extra=tunable(500, 4000, log=True))

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> EASE:
        return cls(**settings.model_dump())

    def fit(self, dataset: Dataset | sp.csr_matrix) -> EASE:
        """Fit on a dataset's (or a users x artists matrix of) play counts; returns ``self``."""
        plays = dataset.matrix if isinstance(dataset, Dataset) else sp.csr_matrix(dataset)
        binary = weighted(plays, "binary", np.float64)
        listeners = np.asarray(binary.sum(axis=0)).ravel()
        order = np.argsort(-listeners, kind="stable")
        keep = order[listeners[order] >= self.min_listeners][: self.max_artists]
        self.items_ = np.sort(keep).astype(np.int64)
        self.n_artists_ = plays.shape[1]
        self._derive()
        x = weighted(select_columns(plays, self.column_, len(self.items_)), self.weighting, np.float64)
        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += self.l2
        try:
            inverse = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as exc:
            raise ConfigError(f"EASE could not invert the co-listening matrix ({exc}); raise ease_l2") from exc
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights_ = np.ascontiguousarray(weights, dtype=np.float32)  # inv returns Fortran order
        return self

    def update(self, change: PartUpdate) -> EASE:
        """The weights stay as fitted; new artists are not modelled (score 0), like rare ones."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("EASE is not fitted; call fit() first")
        self.items_ = change.artist_rows[self.items_]  # the catalogue's order is kept, so still sorted
        self.n_artists_ = change.n_artists
        self._derive()
        return self

    def _derive(self) -> None:
        """The column map derived from ``items_``."""
        self.column_ = np.full(self.n_artists_, -1, np.int64)
        self.column_[self.items_] = np.arange(len(self.items_))

    def scores(self, history: Batch | sp.csr_matrix) -> np.ndarray:
        """``(n_rows, len(items_))`` scores of the modelled artists for each history row.

        Given a :class:`funnel.batch.Batch`, computed once per batch.
        """
        if not hasattr(self, "weights_"):
            raise NotFittedError("EASE is not fitted; call fit() first")
        if isinstance(history, Batch):
            batch = history
            return batch.memo(self, "scores", lambda: self._scores(batch.history))
        return self._scores(history)

    def _scores(self, history: sp.csr_matrix) -> np.ndarray:
        rows = select_columns(history, self.column_, len(self.items_))
        # column by column: each weight row is read once for all the rows that have its artist
        return np.asarray(weighted(rows, self.weighting).tocsc() @ self.weights_)

    def pair_scores(self, batch: Batch, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (batch row, artist) pair; 0 for artists the model does not cover."""
        position = self.column_[items]
        if len(self.items_) == 0:
            return np.zeros(len(items), np.float32)
        scores = self.scores(batch)[rows, np.maximum(position, 0)]
        return np.where(position >= 0, scores, 0.0).astype(np.float32)

    def position(self, items: np.ndarray) -> np.ndarray:
        """Column of each internal artist index in :meth:`scores` (-1 when not modelled)."""
        return self.column_[items]

    def similarity_space(self) -> Space:
        """Co-listening: the cosine of the item-item weight rows (``space`` ``ease``)."""
        return Space("ease", 30.0)

    def nearest_artists(self, columns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` artists whose weight rows are closest (cosine) to each of ``columns``'s.

        Artists EASE does not model have no weights and come last.
        """
        if not hasattr(self, "weights_"):
            raise NotFittedError("EASE is not fitted; call fit() first")
        vectors = np.zeros((self.n_artists_, len(self.items_)), np.float32)
        vectors[self.items_] = self.weights_
        return nearest(vectors, columns, n, cosine=True)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("EASE is not fitted; call fit() first")
        return {"items": self.items_, "weights": self.weights_, "n_artists": np.array([self.n_artists_])}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> EASE:
        """Restore the state written by :meth:`to_arrays`."""
        self.items_ = np.asarray(arrays["items"], np.int64)
        self.weights_ = np.ascontiguousarray(arrays["weights"], dtype=np.float32)
        self.n_artists_ = int(arrays["n_artists"][0])
        self._derive()
        return self


class LogEASE(EASE):
    """EASE fitted on ``log1p(plays)`` instead of presence (its own L2 penalty)."""

    name = "log_ease"

    def __init__(self, *, l2: float = 3000.0, min_listeners: int = 2, max_artists: int = 3000,
                 weighting: str = "log") -> None:
        super().__init__(l2=l2, min_listeners=min_listeners, max_artists=max_artists, weighting=weighting)

    class Settings(PartSettings):
        """As :class:`EASE`'s, with the L2 penalty of ``log1p(plays)`` targets."""

        l2: float = Field(3000.0, gt=0, json_schema_extra=tunable(100.0, 20000.0, log=True))
        max_artists: int = Field(2000, gt=0, json_schema_extra=tunable(500, 4000, log=True))

    def similarity_space(self) -> Space:
        """Co-listening on play counts, after presence EASE's (``space`` ``ease``)."""
        return Space("ease", 35.0)
