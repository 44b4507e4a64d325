"""Baselines with the same fit / recommend_all shape as :class:`funnel.Recommender`.

Each scores the whole catalogue for a batch of users and keeps the best artists the user
does not know. Like the funnel, a baseline counts tagged artists as known unless built with
``tagged_known=False``, so that every method is compared under the same rule.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from funnel.data import Dataset
from funnel.data.history import History, parse_history
from funnel.data.ids import lookup_ids
from funnel.errors import ConfigError, DataError, NotFittedError, UnknownUserError
from funnel.factors import EASE, ArtistEmbedder, BiasedSVDFactors, confidence
from funnel.rules import check_n
from funnel.sparse import top_n_per_row
from funnel.threadpool import in_batches


class _FullCatalogue:
    """Shared ``fit`` bookkeeping and batched, vectorised ``recommend_all`` on all cores.

    Batches run on ``n_threads`` threads for a baseline that has that setting, as in the funnel.
    """

    batch_users = 1024
    tagged_known = True

    def _remember(self, dataset: Dataset) -> None:
        if not isinstance(dataset, Dataset):
            raise DataError(f"fit expects a funnel.Dataset, got {type(dataset).__name__}")
        self.user_ids_ = dataset.user_ids
        self.artist_ids_ = dataset.artist_ids
        self.artist_names_ = dataset.artist_names
        self.history_ = dataset.matrix
        self.known_ = dataset.known_matrix(self.tagged_known)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), n_artists)`` scores of the users at internal ``rows``."""
        raise NotImplementedError

    def _scores_for_history(self, history: sp.csr_matrix) -> np.ndarray:
        """``(n_rows, n_artists)`` scores of new listeners from their history rows."""
        raise ConfigError(f"{type(self).__name__} has no fold-in for new listeners; use ALSRecommender, "
                          "EASERecommender or PopularityRecommender")

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(dataset) first")

    def _top(self, scores: np.ndarray, history: sp.csr_matrix, n: int
             ) -> tuple[np.ndarray, pd.DataFrame]:
        """Best ``n`` unseen artists of each score row: batch rows and ``rank, artist_id, ...`` frame."""
        scores = np.array(scores, dtype=np.float64)
        seen = history.tocoo()
        scores[seen.row, seen.col] = -np.inf
        k = min(n, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        r = np.repeat(np.arange(len(scores)), k)
        ok = np.isfinite(top_scores.ravel())
        r, items, s = r[ok], top.ravel()[ok], top_scores.ravel()[ok]
        best, rank = top_n_per_row(r, s, items, n)
        items = items[best]
        return r[best], pd.DataFrame({"rank": rank, "artist_id": self.artist_ids_[items],
                                      "artist_name": self.artist_names_[items].astype(object),
                                      "score": s[best]})

    def _rows(self, users: Iterable[int] | None) -> np.ndarray:
        """Internal rows of ``users`` (all by default)."""
        if users is None:
            return np.arange(len(self.user_ids_))
        ids = np.asarray(list(users), dtype=object)
        rows = lookup_ids(self.user_ids_, ids)
        if (rows < 0).any():
            raise UnknownUserError(f"unknown user id(s) {ids[rows < 0][:5].tolist()}")
        return rows

    def recommend_all(self, n: int = 20, users: Iterable[int] | None = None) -> pd.DataFrame:
        """``user_id, rank, artist_id, artist_name, score`` for every (or each given) user."""
        self._check_fitted()
        n = check_n(n, len(self.artist_ids_))
        rows = self._rows(users)

        def rank_batch(batch: np.ndarray) -> pd.DataFrame:
            r, frame = self._top(self._scores(batch), self.known_[batch], n)
            frame.insert(0, "user_id", self.user_ids_[batch[r]])
            return frame

        return in_batches(rank_batch, rows, self.batch_users, getattr(self, "n_threads", 0))

    def recommend_for_history(self, history: History, n: int = 20) -> pd.DataFrame:
        """``rank, artist_id, artist_name, score`` for a new listener's history (ids or id -> plays)."""
        self._check_fitted()
        n = check_n(n, len(self.artist_ids_))
        row, _ = parse_history(history, self.artist_ids_)
        return self._top(self._scores_for_history(row), row, n)[1]


class ALSRecommender(_FullCatalogue):
    """The ALS-only baseline: implicit's ALS and its own batch ``recommend``, history excluded.

    Defaults were tuned on a validation split cut from the per-user training data
    (``python benchmarks/tune_als.py``), never on a test split. Recommendations come from
    implicit's ``recommend(users, user_items, N, filter_already_liked_items=True)`` over all
    requested users at once, so the speed compared is implicit's as its users run it.

    Parameters
    ----------
    factors, iterations : int
    alpha, regularization : float
    confidence : {"binary", "log", "raw"}
        Transform of play counts before ``alpha``.
    seed : int
    n_threads : int
        implicit's threads (0: all cores).
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, factors: int = 32, iterations: int = 30, alpha: float = 10.0,
                 regularization: float = 0.01, confidence: str = "binary", seed: int = 0,
                 n_threads: int = 0, tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known
        self.factors = factors
        self.iterations = iterations
        self.alpha = alpha
        self.regularization = regularization
        self.confidence = confidence
        self.seed = seed
        self.n_threads = n_threads

    def fit(self, dataset: Dataset) -> ALSRecommender:
        """Fit implicit's ALS on ``dataset``'s play counts; returns ``self``."""
        from implicit.cpu.als import AlternatingLeastSquares

        self._remember(dataset)
        self.user_items_ = confidence(dataset.matrix, self.confidence)
        with threadpool_limits(1, user_api="blas"):  # implicit's advice: its threads, not BLAS's
            self.model_ = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                                  alpha=self.alpha, iterations=self.iterations,
                                                  random_state=self.seed, num_threads=self.n_threads)
            self.model_.fit(self.user_items_, show_progress=False)
        return self

    def _recommend(self, rows: np.ndarray, user_items: sp.csr_matrix, n: int, recalculate: bool
                   ) -> tuple[np.ndarray, pd.DataFrame]:
        n = min(n, len(self.artist_ids_))
        ids, scores = self.model_.recommend(rows, user_items, N=n, filter_already_liked_items=True,
                                            recalculate_user=recalculate)
        ok = (ids >= 0) & np.isfinite(scores) & (scores > -np.finfo(np.float32).max)
        batch_rows = np.repeat(np.arange(len(rows)), ok.sum(axis=1))
        rank = np.arange(ok.size).reshape(ok.shape) % n + 1
        items = ids[ok]
        return batch_rows, pd.DataFrame({"rank": rank[ok], "artist_id": self.artist_ids_[items],
                                         "artist_name": self.artist_names_[items].astype(object),
                                         "score": scores[ok].astype(np.float64)})

    def recommend_all(self, n: int = 20, users: Iterable[int] | None = None) -> pd.DataFrame:
        """``user_id, rank, artist_id, artist_name, score`` for every (or each given) user."""
        self._check_fitted()
        n = check_n(n, len(self.artist_ids_))
        rows = self._rows(users)
        # without recalculate_user, implicit reads user_items only to filter: the known artists
        batch_rows, frame = self._recommend(rows, self.known_[rows], n, recalculate=False)
        frame.insert(0, "user_id", self.user_ids_[rows[batch_rows]])
        return frame

    def recommend_for_history(self, history: History, n: int = 20) -> pd.DataFrame:
        """``rank, artist_id, artist_name, score`` for a new listener (implicit's ``recalculate_user``)."""
        self._check_fitted()
        n = check_n(n, len(self.artist_ids_))
        row, _ = parse_history(history, self.artist_ids_)
        return self._recommend(np.array([0]), confidence(row, self.confidence), n, recalculate=True)[1]


class MLlibALSRecommender(ALSRecommender):
    """The ALS-only baseline trained by Spark MLlib's ``ALS(implicitPrefs=True)`` instead of implicit.

    The distributed trainer for artist factors over more plays than one machine holds; here
    it learns from ``dataset`` on the active Spark session (or a local one on every core),
    with funnel's internal user and artist indices as MLlib's integer ids, and recommends
    with implicit's batch ``recommend`` over the factors it learned, so the two trainers are
    compared on the same data, settings and ranking code. MLlib scales the regularisation of
    each user and artist by its number of plays (ALS-WR) where implicit does not, so equal
    ``regularization`` values are not the same penalty. Needs the ``spark`` extra.

    Parameters
    ----------
    As :class:`ALSRecommender`; ``n_threads`` is the local session's cores when one is started.
    """

    def fit(self, dataset: Dataset) -> MLlibALSRecommender:
        """Fit MLlib's ALS on ``dataset``'s play counts; returns ``self``."""
        from implicit.cpu.als import AlternatingLeastSquares

        try:
            from pyspark.ml.recommendation import ALS
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise ConfigError(f"MLlibALSRecommender needs the spark extra ({exc.name} is missing): "
                              'pip install -e ".[spark]"') from exc

        self._remember(dataset)
        self.user_items_ = confidence(dataset.matrix, self.confidence)
        entries = self.user_items_.tocoo()
        session = SparkSession.getActiveSession() or SparkSession.builder.master(
            f"local[{self.n_threads or '*'}]").appName("funnel MLlib ALS").getOrCreate()
        if session.sparkContext.getCheckpointDir() is None:
            # without checkpoints, MLlib's ALS lineage grows with every iteration until the
            # JVM's stack overflows (about 30 iterations); ALS checkpoints every 10
            session.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="funnel-mllib-als-"))
        ratings = session.createDataFrame(pd.DataFrame({"user": entries.row.astype(np.int32),
                                                        "item": entries.col.astype(np.int32),
                                                        "rating": entries.data.astype(np.float32)}))
        model = ALS(rank=self.factors, maxIter=self.iterations, regParam=self.regularization, alpha=self.alpha,
                    implicitPrefs=True, seed=self.seed, userCol="user", itemCol="item",
                    ratingCol="rating").fit(ratings)
        self.model_ = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                              alpha=self.alpha, random_state=self.seed, num_threads=self.n_threads)
        self.model_.user_factors = self._factors(model.userFactors.toPandas(), len(self.user_ids_))
        self.model_.item_factors = self._factors(model.itemFactors.toPandas(), len(self.artist_ids_))
        return self

    def _factors(self, frame: pd.DataFrame, rows: int) -> np.ndarray:
        """MLlib's ``id, features`` rows as a float32 matrix by index (zeros for ids it never saw)."""
        out = np.zeros((rows, self.factors), np.float32)
        if len(frame):
            out[frame["id"].to_numpy()] = np.vstack(frame["features"].to_numpy())
        return out


class PopularityRecommender(_FullCatalogue):
    """The most listened-to unknown artists, the same chart for everyone.

    Parameters
    ----------
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known

    def fit(self, dataset: Dataset) -> PopularityRecommender:
        """Count listeners per artist; returns ``self``."""
        self._remember(dataset)
        self.listeners_ = np.diff(sp.csc_matrix(dataset.matrix).indptr).astype(np.float64)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.listeners_, (len(rows), len(self.listeners_)))

    def _scores_for_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self._scores(np.arange(history.shape[0]))


class BiasedSVDRecommender(_FullCatalogue):
    """BiasedSVD (scikit-surprise) alone: the artists of highest predicted rating, the funnel's stage-two model.

    Parameters
    ----------
    factors, epochs : int
    lr, reg : float
    seed : int
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, factors: int = 16, epochs: int = 20, lr: float = 0.005, reg: float = 0.1, seed: int = 0,
                 tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known
        self.factors = factors
        self.epochs = epochs
        self.lr = lr
        self.reg = reg
        self.seed = seed

    def fit(self, dataset: Dataset) -> BiasedSVDRecommender:
        """Fit BiasedSVD on the play counts as ratings; returns ``self``."""
        self._remember(dataset)
        self.svd_ = BiasedSVDFactors(factors=self.factors, epochs=self.epochs, lr=self.lr, reg=self.reg,
                                     seed=self.seed).fit(dataset)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        # the global mean and the user's bias shift a row without reordering it
        return self.svd_.user_factors_[rows] @ self.svd_.item_factors_.T + self.svd_.item_bias_


class TagIndexRecommender(_FullCatalogue):
    """The funnel's tag index alone: artists nearest the listener's history in the tag embedding.

    The exact inner-product search of the tag source (``search_dim`` strongest tag
    components with the popularity and freshness blocks), over the whole catalogue.

    Parameters
    ----------
    tag_dim, search_dim : int
    seed : int
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, tag_dim: int = 250, search_dim: int = 32, seed: int = 0, tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known
        self.tag_dim = tag_dim
        self.search_dim = search_dim
        self.seed = seed

    def fit(self, dataset: Dataset) -> TagIndexRecommender:
        """Embed the artists; returns ``self``."""
        self._remember(dataset)
        embedder = ArtistEmbedder(tag_dim=self.tag_dim, seed=self.seed).fit(dataset)
        self.embedder_, self.vectors_ = embedder, embedder.search_vectors(self.search_dim)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return self._scores_for_history(self.history_[rows])

    def _scores_for_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self.embedder_.query(history, "log", self.vectors_) @ self.vectors_.T


class BPRRecommender(_FullCatalogue):
    """implicit's Bayesian personalised ranking on binary listening.

    Parameters
    ----------
    factors, iterations : int
    learning_rate, regularization : float
    seed : int
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, factors: int = 64, iterations: int = 200, learning_rate: float = 0.05,
                 regularization: float = 0.001, seed: int = 0, tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known
        self.factors = factors
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.seed = seed

    def fit(self, dataset: Dataset) -> BPRRecommender:
        """Fit BPR; returns ``self``."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self._remember(dataset)
        with threadpool_limits(1, user_api="blas"):
            model = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                                regularization=self.regularization,
                                                iterations=self.iterations, random_state=self.seed)
            model.fit(confidence(dataset.matrix, "binary"), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors)
        self.item_factors_ = np.asarray(model.item_factors)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors_[rows] @ self.item_factors_.T


class EASERecommender(_FullCatalogue):
    """EASE (closed-form item-item) over artists with at least ``min_listeners`` listeners.

    Parameters
    ----------
    l2 : float
    min_listeners, max_artists : int
        Artists modelled (the dense inverse is cubic in their number); others score -inf.
    tagged_known : bool
        Count artists a user tagged as known (never recommended), as the funnel does.
    """

    def __init__(self, *, l2: float = 200.0, min_listeners: int = 2, max_artists: int = 8000,
                 tagged_known: bool = True) -> None:
        self.tagged_known = tagged_known
        self.l2 = l2
        self.min_listeners = min_listeners
        self.max_artists = max_artists

    def fit(self, dataset: Dataset) -> EASERecommender:
        """Fit EASE; returns ``self``."""
        self._remember(dataset)
        self.ease_ = EASE(l2=self.l2, min_listeners=self.min_listeners, max_artists=self.max_artists).fit(dataset)
        return self

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return self._scores_for_history(self.history_[rows])

    def _scores_for_history(self, history: sp.csr_matrix) -> np.ndarray:
        out = np.full((history.shape[0], len(self.artist_ids_)), -np.inf)
        out[:, self.ease_.items_] = self.ease_.scores(history)
        return out
