"""Baselines with the same fit / recommend_all shape as :class:`funnel.Recommender`."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from funnel.data import Dataset
from funnel.errors import DataError, NotFittedError
from funnel.factors import ALSFactors
from funnel.recommender import check_n, top_n_per_row


class ALSRecommender:
    """The ALS-only baseline: implicit ALS scores over the full catalogue, history excluded.

    Defaults were tuned on a validation split cut from the per-user training data
    (``python benchmarks/tune_als.py``), never on a test split.

    Parameters
    ----------
    factors, iterations : int
    alpha, regularization : float
    confidence : {"binary", "log", "raw"}
    seed, n_threads : int
    """

    def __init__(self, factors: int = 32, iterations: int = 30, alpha: float = 10.0,
                 regularization: float = 0.01, confidence: str = "binary", seed: int = 0,
                 n_threads: int = 0) -> None:
        self.factors = factors
        self.iterations = iterations
        self.alpha = alpha
        self.regularization = regularization
        self.confidence = confidence
        self.seed = seed
        self.n_threads = n_threads

    def fit(self, dataset: Dataset) -> "ALSRecommender":
        """Fit ALS on ``dataset``'s play counts; returns ``self``."""
        if not isinstance(dataset, Dataset):
            raise DataError(f"fit expects a funnel.Dataset, got {type(dataset).__name__}")
        self.als_ = ALSFactors(self.factors, self.iterations, self.alpha, self.regularization,
                               self.confidence, self.seed, self.n_threads).fit(dataset.matrix)
        self.user_ids_ = dataset.user_ids
        self.artist_ids_ = dataset.artist_ids
        self.artist_names_ = dataset.artist_names
        self.history_ = dataset.matrix
        return self

    def recommend_all(self, n: int = 20, users: Iterable[int] | None = None) -> pd.DataFrame:
        """``user_id, rank, artist_id, artist_name, score`` for every (or each given) user."""
        if not hasattr(self, "als_"):
            raise NotFittedError("ALSRecommender is not fitted; call fit(dataset) first")
        n = check_n(n, len(self.artist_ids_))
        rows = (np.arange(len(self.user_ids_)) if users is None
                else np.searchsorted(self.user_ids_, np.asarray(list(users), dtype=np.int64)))
        parts = []
        for start in range(0, len(rows), 1024):
            batch = rows[start:start + 1024]
            scores = self.als_.user_factors_[batch] @ self.als_.item_factors_.T
            history = self.history_[batch].tocoo()
            scores[history.row, history.col] = -np.inf
            k = min(n, scores.shape[1])
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            r = np.repeat(np.arange(len(batch)), k)
            ok = np.isfinite(top_scores.ravel())
            r, items, s, rank = top_n_per_row(r[ok], top_scores.ravel()[ok], top.ravel()[ok], len(batch), n)
            parts.append(pd.DataFrame({"user_id": self.user_ids_[batch[r]], "rank": rank,
                                       "artist_id": self.artist_ids_[items],
                                       "artist_name": self.artist_names_[items].astype(object),
                                       "score": s.astype(np.float64)}))
        return pd.concat(parts, ignore_index=True)
