"""When listeners played artists: the listen-time model behind the recency features."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings
from funnel.sparse import select_rows

DAY = np.timedelta64(1, "D")


class ListenTimes(ArrayState):
    """Listen times of a dataset, as of its latest listen.

    Fitted on a dataset without listen times it holds nothing, and :attr:`has_times_` is
    False (the recency features then have no columns).

    Parameters
    ----------
    recent_days : float
        The window of "recent": an artist's trend counts the listeners who started playing
        it in the last ``recent_days``; a listener's recent taste weighs each artist by
        ``0.5 ** (days since last played / recent_days)``.
    recent_starts : int
        How many of a listener's artists started last make up their recent starts (0: none).

    Attributes
    ----------
    has_times_ : bool
    weights_ : scipy.sparse.csr_matrix
        Users x artists recency weight of each training pair, in (0, 1].
    starts_ : scipy.sparse.csr_matrix
        Users x artists, 1 for each listener's ``recent_starts`` artists of latest first
        listen (ties: the lower artist index).
    log_idle_days_ : numpy.ndarray
        Per artist, ``log1p`` of the days since anyone last played it.
    trend_ : numpy.ndarray
        Per artist, ``log((recent new listeners + 1) / (expected + 1))`` where expected is
        the share of the data's time span the window covers times all listeners.
    """

    name = "listen_times"
    user_arrays = ("weights/", "starts/")  # the recency weights and recent starts of the training pairs

    def __init__(self, *, recent_days: float = 30.0, recent_starts: int = 5) -> None:
        self.recent_days = recent_days
        self.recent_starts = recent_starts

    class Settings(PartSettings):
        """``recent_days``: an artist's trend counts listeners who started it in the last this many
        days, and a listener's recent taste weighs each artist by ``0.5 ** (days since last
        played / recent_days)``; ``recent_starts``: a listener's artists started last that the
        ``recency`` group compares candidates with (0: none, and no such columns)."""

        recent_days: float = Field(30.0, gt=0)
        recent_starts: int = Field(5, ge=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> ListenTimes:
        return cls(**settings.model_dump())

    def fit(self, dataset: Dataset) -> ListenTimes:
        """Recency weights of every pair and per-artist idle time and trend; returns ``self``."""
        self.has_times_ = dataset.has_listen_times
        n_users, n_artists = dataset.matrix.shape
        if not self.has_times_:
            self.weights_ = sp.csr_matrix((n_users, n_artists), dtype=np.float32)
            self.starts_ = self.weights_
            self.log_idle_days_ = np.zeros(n_artists, np.float32)
            self.trend_ = np.zeros(n_artists, np.float32)
            return self
        inter = dataset.interactions
        rows = dataset.user_index(inter["user_id"].to_numpy())
        cols = dataset.artist_index(inter["artist_id"].to_numpy())
        first, last = inter["first_listen"].to_numpy(), inter["last_listen"].to_numpy()
        now, start = last.max(), first.min()
        age = (now - last) / DAY
        weights = np.maximum(0.5 ** (age / self.recent_days), 1e-6).astype(np.float32)
        self.weights_ = sp.csr_matrix((weights, (rows, cols)), shape=(n_users, n_artists))
        span = max((now - start) / DAY, self.recent_days)
        idle = np.full(n_artists, span, np.float64)
        np.minimum.at(idle, cols, age)
        self.log_idle_days_ = np.log1p(idle).astype(np.float32)
        listeners = np.bincount(cols, minlength=n_artists).astype(np.float64)
        recent = np.bincount(cols[(now - first) / DAY <= self.recent_days], minlength=n_artists)
        expected = listeners * self.recent_days / span
        self.trend_ = np.log((recent + 1.0) / (expected + 1.0)).astype(np.float32)
        order = np.lexsort((cols, -first.astype(np.int64), rows))
        _, begins, counts = np.unique(rows[order], return_index=True, return_counts=True)
        latest = order[np.arange(len(order)) - np.repeat(begins, counts) < self.recent_starts]
        self.starts_ = sp.csr_matrix((np.ones(len(latest), np.float32), (rows[latest], cols[latest])),
                                     shape=(n_users, n_artists))
        return self

    def user_weights(self, batch: Batch) -> sp.csr_matrix:
        """Recency weights of the batch's history entries: the fitted ones of training users, 1 for new listeners."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("ListenTimes is not fitted; call fit() first")
        return self._fitted_or_history(self.weights_, batch)

    def user_starts(self, batch: Batch) -> sp.csr_matrix:
        """1 on the batch's recent starts: the fitted ones of training users, every history artist of new listeners."""
        if not hasattr(self, "starts_"):
            raise NotFittedError("ListenTimes is not fitted; call fit() first")
        return self._fitted_or_history(self.starts_, batch)

    @staticmethod
    def _fitted_or_history(fitted: sp.csr_matrix, batch: Batch) -> sp.csr_matrix:
        # new listeners have no listen times: all of the history they bring counts as recent
        known = batch.users >= 0
        fresh = batch.history.copy()
        fresh.data[:] = 1.0
        new = np.where(known, -1, np.arange(len(known)))
        return sp.csr_matrix(select_rows(fitted, batch.users) + select_rows(fresh, new))

    def to_arrays(self) -> dict[str, np.ndarray]:
        from funnel.sparse import csr_to_arrays

        return {"has_times": np.array([self.has_times_]), "log_idle_days": self.log_idle_days_,
                "trend": self.trend_, **csr_to_arrays(self.weights_, "weights/"),
                **csr_to_arrays(self.starts_, "starts/")}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> ListenTimes:
        from funnel.sparse import csr_from_arrays

        self.has_times_ = bool(arrays["has_times"][0])
        self.log_idle_days_ = np.asarray(arrays["log_idle_days"], np.float32)
        self.trend_ = np.asarray(arrays["trend"], np.float32)
        self.weights_ = csr_from_arrays(arrays, "weights/")
        self.starts_ = csr_from_arrays(arrays, "starts/")
        return self
