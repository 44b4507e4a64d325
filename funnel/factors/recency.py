"""When listeners played artists: the listen-time model behind the recency features."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate
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
        self.listeners_ = np.zeros(n_artists)
        self.recent_items_, self.recent_first_ = np.zeros(0, np.int64), np.zeros(0, "datetime64[ns]")
        if not self.has_times_:
            self.weights_ = sp.csr_matrix((n_users, n_artists), dtype=np.float32)
            self.starts_ = self.weights_
            self.now_ = self.start_ = np.datetime64(0, "ns")
            self.idle_days_ = np.zeros(n_artists)
            self._derive()
            return self
        inter = dataset.interactions
        rows = dataset.user_index(inter["user_id"].to_numpy())
        cols = dataset.artist_index(inter["artist_id"].to_numpy())
        first, last = inter["first_listen"].to_numpy(), inter["last_listen"].to_numpy()
        self.now_, self.start_ = last.max(), first.min()
        age = (self.now_ - last) / DAY
        self.weights_ = sp.csr_matrix((self._weight(age), (rows, cols)), shape=(n_users, n_artists))
        self.idle_days_ = np.full(n_artists, self.span)
        np.minimum.at(self.idle_days_, cols, age)
        self.listeners_ = np.bincount(cols, minlength=n_artists).astype(np.float64)
        recent = (self.now_ - first) / DAY <= self.recent_days
        self.recent_items_, self.recent_first_ = cols[recent].astype(np.int64), first[recent]
        self.starts_ = self._latest(rows, cols, first, (n_users, n_artists))
        self._derive()
        return self

    def update(self, change: PartUpdate) -> ListenTimes:
        """Move "now" to the log's latest listen and add its plays (a log without times plays "now").

        Every pair's recency weight decays by the time that passed, the log's pairs get the
        weight of their last listen, idle times and trends count the log's plays and new
        listeners, and a listener's recent starts are the artists they started in the log,
        latest first, then their earlier ones.
        """
        if not hasattr(self, "weights_"):
            raise NotFittedError("ListenTimes is not fitted; call fit() first")
        self.listeners_ = change.artists(self.listeners_) + change.new_listeners
        self.weights_, self.starts_ = change.matrix(self.weights_), change.matrix(self.starts_)
        self.recent_items_ = change.artist_rows[self.recent_items_]
        if not self.has_times_:
            self.idle_days_ = change.artists(self.idle_days_)
            self._derive()
            return self
        untimed: Any = np.full(change.plays.nnz, self.now_)
        first: Any = untimed if change.first_listen is None else change.first_listen
        last: Any = untimed if change.last_listen is None else change.last_listen
        now: Any = max(self.now_, last.max()) if len(last) else self.now_
        passed = (now - self.now_) / DAY
        self.now_ = now
        self.idle_days_ = np.minimum(change.artists(self.idle_days_ + passed, self.span), self.span)
        np.minimum.at(self.idle_days_, change.plays.indices, (now - last) / DAY)
        weights = self.weights_  # a new matrix, its data decayed: the fitted one may be read-only
        self.weights_ = sp.csr_matrix((np.maximum(weights.data * 0.5 ** (passed / self.recent_days), 1e-6
                                                  ).astype(np.float32), weights.indices, weights.indptr),
                                      shape=weights.shape)
        started, items = change.started, change.plays.indices
        keep = (now - self.recent_first_) / DAY <= self.recent_days
        fresh = started & ((now - first) / DAY <= self.recent_days)
        self.recent_items_ = np.concatenate([self.recent_items_[keep], items[fresh]]).astype(np.int64)
        self.recent_first_ = np.concatenate([self.recent_first_[keep], first[fresh]])
        rows = np.repeat(change.model_rows, np.diff(change.plays.indptr))  # each play's model row
        learned = rows >= 0
        if learned.any():
            rows = rows[learned]
            weights = sp.csr_matrix((self._weight((now - last[learned]) / DAY), (rows, items[learned])),
                                    shape=self.weights_.shape)
            self.weights_ = sp.csr_matrix(self.weights_.maximum(weights))
            self.starts_ = self._restarted(rows[started[learned]], items[learned][started[learned]],
                                           first[learned][started[learned]])
        self._derive()
        return self

    @property
    def span(self) -> float:
        """Days from the first listen of the data to "now", at least ``recent_days``."""
        return max((self.now_ - self.start_) / DAY, self.recent_days)

    def _weight(self, age: np.ndarray) -> np.ndarray:
        return np.maximum(0.5 ** (age / self.recent_days), 1e-6).astype(np.float32)

    def _latest(self, rows: np.ndarray, cols: np.ndarray, first: np.ndarray, shape: tuple[int, int]
                ) -> sp.csr_matrix:
        """1 on each row's ``recent_starts`` pairs of latest ``first`` (ties: the lower artist index)."""
        order = np.lexsort((cols, -first.astype(np.int64), rows))
        _, begins, counts = np.unique(rows[order], return_index=True, return_counts=True)
        latest = order[np.arange(len(order)) - np.repeat(begins, counts) < self.recent_starts]
        return sp.csr_matrix((np.ones(len(latest), np.float32), (rows[latest], cols[latest])), shape=shape)

    def _restarted(self, rows: np.ndarray, cols: np.ndarray, first: np.ndarray) -> sp.csr_matrix:
        """Recent starts with the started pairs ``rows, cols, first`` in front of each row's earlier ones."""
        earlier = sp.coo_matrix(self.starts_)
        touched = np.isin(earlier.row, rows)
        # earlier starts of the touched rows rank after every start of the log, in their stored order
        before = np.full(int(touched.sum()), np.iinfo(np.int64).min + 1)
        ranked = self._latest(np.concatenate([rows, earlier.row[touched]]),
                              np.concatenate([cols, earlier.col[touched]]),
                              np.concatenate([first.astype(np.int64), before]).view("datetime64[ns]"),
                              self.starts_.shape)
        kept = sp.csr_matrix((earlier.data[~touched], (earlier.row[~touched], earlier.col[~touched])),
                             shape=self.starts_.shape)
        return sp.csr_matrix(kept + ranked)

    def _derive(self) -> None:
        """Idle days and trends of the stored counts."""
        self.log_idle_days_ = np.log1p(self.idle_days_).astype(np.float32)
        if not self.has_times_:
            self.trend_ = np.zeros(len(self.listeners_), np.float32)
            return
        recent = np.bincount(self.recent_items_, minlength=len(self.listeners_))
        expected = self.listeners_ * self.recent_days / self.span
        self.trend_ = np.log((recent + 1.0) / (expected + 1.0)).astype(np.float32)

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

        return {"has_times": np.array([self.has_times_]), "now": np.array([self.now_, self.start_]).view(np.int64),
                "idle_days": self.idle_days_, "listeners": self.listeners_, "recent_items": self.recent_items_,
                "recent_first": self.recent_first_.view(np.int64), **csr_to_arrays(self.weights_, "weights/"),
                **csr_to_arrays(self.starts_, "starts/")}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> ListenTimes:
        from funnel.sparse import csr_from_arrays

        self.has_times_ = bool(arrays["has_times"][0])
        self.now_, self.start_ = np.asarray(arrays["now"], np.int64).view("datetime64[ns]")
        self.idle_days_ = np.asarray(arrays["idle_days"], np.float64)
        self.listeners_ = np.asarray(arrays["listeners"], np.float64)
        self.recent_items_ = np.asarray(arrays["recent_items"], np.int64)
        self.recent_first_ = np.asarray(arrays["recent_first"], np.int64).view("datetime64[ns]")
        self.weights_ = csr_from_arrays(arrays, "weights/")
        self.starts_ = csr_from_arrays(arrays, "starts/")
        self._derive()
        return self
