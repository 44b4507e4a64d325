"""Per-artist popularity and per-user statistics, fitted on a dataset like any other model."""

from __future__ import annotations

import numpy as np

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.data.freshness import robust_years
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate
from funnel.sparse import weighted


class PopularityChart(ArrayState):
    """Artists by number of listeners (ties by plays): the chart everyone shares.

    Attributes
    ----------
    listeners_, plays_ : numpy.ndarray
        Listeners and plays of every artist.
    order_ : numpy.ndarray
        Internal artist indices, most listened first.
    scores_ : numpy.ndarray
        ``log1p(listeners)`` of every artist.
    """

    name = "popularity"

    Settings = PartSettings

    @classmethod
    def from_config(cls, settings: PartSettings, context: PartContext) -> PopularityChart:
        return cls()

    def fit(self, dataset: Dataset) -> PopularityChart:
        """Count listeners and plays; returns ``self``."""
        binary = weighted(dataset.matrix, "binary", dataset.matrix.dtype)
        self.listeners_ = np.asarray(binary.sum(axis=0), np.float64).ravel()
        self.plays_ = np.asarray(dataset.matrix.sum(axis=0), np.float64).ravel()
        self._derive()
        return self

    def update(self, change: PartUpdate) -> PopularityChart:
        """Add the log's new listeners and plays of every artist (new artists start from none)."""
        if not hasattr(self, "order_"):
            raise NotFittedError("PopularityChart is not fitted; call fit() first")
        self.listeners_ = change.artists(self.listeners_) + change.new_listeners
        self.plays_ = change.artists(self.plays_) + np.asarray(change.plays.sum(axis=0), np.float64).ravel()
        self._derive()
        return self

    def _derive(self) -> None:
        self.order_ = np.lexsort((-self.plays_, -self.listeners_)).astype(np.int64)
        self.scores_ = np.log1p(self.listeners_).astype(np.float32)

    def top_unseen(self, batch: Batch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most listened artists each user may be recommended (ids, scores; -1/-inf padding)."""
        if not hasattr(self, "order_"):
            raise NotFittedError("PopularityChart is not fitted; call fit() first")
        from funnel.candidates.base import drop_seen

        order = self.order_ if batch.blocked_items is None else self.order_[~batch.blocked_items[self.order_]]
        top = order[: k + batch.max_known()]
        ids = np.broadcast_to(top, (len(batch), len(top)))
        return drop_seen(ids, self.scores_[ids], batch, k)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"listeners": self.listeners_, "plays": self.plays_}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> PopularityChart:
        self.listeners_ = np.asarray(arrays["listeners"], np.float64)
        self.plays_ = np.asarray(arrays["plays"], np.float64)
        self._derive()
        return self


class UserStatistics(ArrayState):
    """Years since each user last tagged anything (as of the data), and whether they did.

    Dates are clipped into their plausible range like artist freshness. Users who never
    tagged, and new listeners, get the median and a 0 flag.

    Attributes
    ----------
    years_since_last_tag_, has_tagged_ : numpy.ndarray
        float32, by internal user index.
    """

    name = "users"
    user_arrays = ("years_since_last_tag", "has_tagged")

    Settings = PartSettings

    @classmethod
    def from_config(cls, settings: PartSettings, context: PartContext) -> UserStatistics:
        return cls()

    def fit(self, dataset: Dataset) -> UserStatistics:
        """Compute the statistics of ``dataset``'s users; returns ``self``."""
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
        self.years_since_last_tag_ = np.where(tagged, last, fill).astype(np.float32)
        self.has_tagged_ = tagged.astype(np.float32)
        self._derive()
        return self

    def update(self, change: PartUpdate) -> UserStatistics:
        """New listeners get what a new listener gets; the log's taggers tagged now (0 years, flag 1)."""
        if not hasattr(self, "has_tagged_"):
            raise NotFittedError("UserStatistics is not fitted; call fit() first")
        self.years_since_last_tag_ = change.users(self.years_since_last_tag_, self.new_listener_years_)
        self.has_tagged_ = change.users(self.has_tagged_)
        self.years_since_last_tag_[change.taggers] = 0.0
        self.has_tagged_[change.taggers] = 1.0
        return self

    def _derive(self) -> None:
        """What new listeners get: the median years since anyone last tagged (once, not per call)."""
        years = self.years_since_last_tag_
        self.new_listener_years_ = np.float32(np.median(years)) if len(years) else np.float32(0.0)

    def of(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """``(years_since_last_tag, has_tagged)`` of the batch's users."""
        known = batch.users >= 0
        years = np.full(len(known), self.new_listener_years_, np.float32)
        tagged = np.zeros(len(known), np.float32)
        years[known] = self.years_since_last_tag_[batch.users[known]]
        tagged[known] = self.has_tagged_[batch.users[known]]
        return years, tagged

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"years_since_last_tag": self.years_since_last_tag_, "has_tagged": self.has_tagged_,
                "new_listener_years": np.array([self.new_listener_years_], np.float32)}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> UserStatistics:
        self.years_since_last_tag_ = np.asarray(arrays["years_since_last_tag"], np.float32)
        self.has_tagged_ = np.asarray(arrays["has_tagged"], np.float32)
        self._derive()
        if "new_listener_years" in arrays:  # kept when the users' own arrays are left out of a save
            self.new_listener_years_ = np.float32(arrays["new_listener_years"][0])
        return self
