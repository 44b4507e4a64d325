"""Stage-one candidate sources: tag and ALS-factor search, EASE co-listening, friends, popularity."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from funnel.candidates.base import drop_seen, max_history, top_k_ordered, top_k_unseen
from funnel.candidates.embeddings import ArtistEmbedder
from funnel.candidates.index import build_index, resolve_kind, search
from funnel.data import Dataset
from funnel.errors import ConfigError, NotFittedError
from funnel.factors import EASE, ALSFactors
from funnel.factors.social import FriendListening
from funnel.sparse import weighted

logger = logging.getLogger("funnel")


def _check_k(name: str, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ConfigError(f"{name} n_candidates={k!r} must be a positive integer")


class _IndexSource:
    """A source that searches a FAISS inner-product index with one query per user."""

    name = "index"

    def _build(self, vectors: np.ndarray, index: str, ann_threshold: int, seed: int,
               ids: np.ndarray | None = None) -> None:
        self.index_kind_ = resolve_kind(index, len(vectors), ann_threshold)
        self.index_ = build_index(vectors, self.index_kind_, seed, ids)

    def _queries(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def retrieve(self, users: np.ndarray, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists per user (see :class:`CandidateSource`)."""
        if not hasattr(self, "index_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        ids, scores = search(self.index_, self._queries(users, history),
                             self.n_candidates + max_history(history))
        return drop_seen(ids, scores, history, self.n_candidates)


class TagSource(_IndexSource):
    """Nearest artists to the (weighted) sum of the user's history in tag-embedding space.

    Parameters
    ----------
    n_candidates : int
    embedder : ArtistEmbedder, optional
        A fitted embedder to reuse; fitted on the dataset otherwise.
    history_weighting : {"none", "log", "plays"}
    index : {"auto", "flat", "ivf", "hnsw"}
    ann_threshold : int
    seed : int
    search_dim : int
        Tag dimensions an exact index searches (the first SVD components, see
        :meth:`ArtistEmbedder.search_vectors`); 0 searches the whole tag block, as IVF and
        HNSW always do.

    Attributes
    ----------
    search_vectors_ : numpy.ndarray
        The artist vectors in the index, which queries sum.
    """

    name = "tags"

    def __init__(self, n_candidates: int = 200, embedder: ArtistEmbedder | None = None,
                 history_weighting: str = "log", index: str = "auto",
                 ann_threshold: int = 100_000, seed: int = 0, search_dim: int = 0) -> None:
        self.n_candidates = n_candidates
        self.embedder = embedder
        self.history_weighting = history_weighting
        self.index = index
        self.ann_threshold = ann_threshold
        self.seed = seed
        self.search_dim = search_dim

    def fit(self, dataset: Dataset) -> "TagSource":
        _check_k(self.name, self.n_candidates)
        embedder = self.embedder if self.embedder is not None else ArtistEmbedder(seed=self.seed)
        if not hasattr(embedder, "vectors_"):
            embedder.fit(dataset)
        if isinstance(self.search_dim, bool) or not isinstance(self.search_dim, (int, np.integer)) \
                or self.search_dim < 0:
            raise ConfigError(f"tags search_dim={self.search_dim!r} must be an integer >= 0")
        self.embedder_ = embedder
        kind = resolve_kind(self.index, len(embedder.vectors_), self.ann_threshold)
        self.search_vectors_ = embedder.search_vectors(self.searched_dims(kind))
        self._build(self.search_vectors_, self.index, self.ann_threshold, self.seed)
        return self

    def searched_dims(self, kind: str) -> int:
        """``search_dim`` for an exact index; approximate ones search the whole tag block.

        IVF and HNSW lists separate artists on the full tag block: on 100,000 synthetic
        artists cut to 64 components IVF found only 0.67 of the exact top 100 whatever it
        probed, against 1.00 on all components (``python benchmarks/scale.py --index 100k``).
        """
        return self.search_dim if kind == "flat" else 0

    def _queries(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return self.embedder_.query(history, self.history_weighting, self.search_vectors_)


class ALSSource(_IndexSource):
    """Nearest artists to the user's ALS factors (inner product), via FAISS.

    Parameters
    ----------
    n_candidates : int
    als : ALSFactors, optional
        A fitted model to reuse; a default one is fitted on the dataset otherwise.
    index, ann_threshold, seed
        As for :class:`TagSource`.
    min_listeners : int
        Only artists with at least this many listeners in the training data are searched.
        Most Last.fm artists have one (10,679 of 17,632): their factors rest on a single
        user, and the tag source still reaches them.
    """

    name = "als"

    def __init__(self, n_candidates: int = 200, als: ALSFactors | None = None,
                 index: str = "auto", ann_threshold: int = 100_000, seed: int = 0,
                 min_listeners: int = 1) -> None:
        self.n_candidates = n_candidates
        self.als = als
        self.index = index
        self.ann_threshold = ann_threshold
        self.seed = seed
        self.min_listeners = min_listeners

    def fit(self, dataset: Dataset) -> "ALSSource":
        _check_k(self.name, self.n_candidates)
        if isinstance(self.min_listeners, bool) or not isinstance(self.min_listeners, (int, np.integer)) \
                or self.min_listeners < 1:
            raise ConfigError(f"als min_listeners={self.min_listeners!r} must be an integer >= 1")
        als = self.als if self.als is not None else ALSFactors(seed=self.seed)
        if not hasattr(als, "item_factors_"):
            als.fit(dataset.matrix)
        self.als_ = als
        searched = None
        if self.min_listeners > 1:
            plays = dataset.matrix
            listeners = np.bincount(plays.indices[plays.data > 0], minlength=plays.shape[1])
            searched = np.flatnonzero(listeners >= self.min_listeners)
            if len(searched) == 0:
                logger.warning("no artist has %d or more listeners (the most is %d): the ALS source "
                               "searches every artist", self.min_listeners, listeners.max(initial=0))
                searched = None
        self._build(als.item_factors_, self.index, self.ann_threshold, self.seed, searched)
        return self

    def _queries(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        return self.als_.user_vectors(users, history)


class PopularitySource:
    """The most listened-to artists the user has not heard (same order for everyone).

    Parameters
    ----------
    n_candidates : int
    """

    name = "popularity"

    def __init__(self, n_candidates: int = 50) -> None:
        self.n_candidates = n_candidates

    def fit(self, dataset: Dataset) -> "PopularitySource":
        _check_k(self.name, self.n_candidates)
        binary = weighted(dataset.matrix, "binary", dataset.matrix.dtype)
        listeners = np.asarray(binary.sum(axis=0)).ravel()
        plays = np.asarray(dataset.matrix.sum(axis=0)).ravel()
        self.order_ = np.lexsort((-plays, -listeners)).astype(np.int64)
        self.scores_ = np.log1p(listeners).astype(np.float32)
        return self

    def retrieve(self, users: np.ndarray, history: sp.csr_matrix, k: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (default ``n_candidates``) unseen artists by listener count."""
        if not hasattr(self, "order_"):
            raise NotFittedError("PopularitySource is not fitted; call fit() first")
        k = self.n_candidates if k is None else k
        top = self.order_[: k + max_history(history)]
        ids = np.broadcast_to(top, (history.shape[0], len(top)))
        return drop_seen(ids, self.scores_[ids], history, k)


class EASESource:
    """Artists that co-occur with the user's history, scored by the EASE item-item model.

    Parameters
    ----------
    n_candidates : int
    ease : EASE, optional
        A fitted model to reuse; a default one is fitted on the dataset otherwise.
    """

    name = "ease"

    def __init__(self, n_candidates: int = 100, ease: EASE | None = None) -> None:
        self.n_candidates = n_candidates
        self.ease = ease

    def fit(self, dataset: Dataset) -> "EASESource":
        _check_k(self.name, self.n_candidates)
        ease = self.ease if self.ease is not None else EASE()
        if not hasattr(ease, "weights_"):
            ease.fit(dataset.matrix)
        self.ease_ = ease
        return self

    def retrieve(self, users: np.ndarray, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists by EASE score."""
        if not hasattr(self, "ease_"):
            raise NotFittedError("EASESource is not fitted; call fit() first")
        return top_k_unseen(self.ease_.scores(history), self.ease_.items_, history, self.n_candidates)


class FriendsSource:
    """Artists most of the user's friends listen to (none for users without friends).

    Parameters
    ----------
    n_candidates : int
    friends : FriendListening, optional
        Fitted friend counts to reuse; built from the dataset otherwise.
    score : {"log", "count"}
        The score of a candidate: ``log1p`` of the number of friends who listen to it, or
        that number (the order is the same). The ranker reads it as a feature, and the raw
        count (1 to 61 on Last.fm) suits its linear model less: validation NDCG@10 0.1975
        against 0.1968 (``benchmarks/tune.py --seeds 0 1 2``).
    """

    name = "friends"

    def __init__(self, n_candidates: int = 50, friends: FriendListening | None = None,
                 score: str = "log") -> None:
        self.n_candidates = n_candidates
        self.friends = friends
        self.score = score

    def fit(self, dataset: Dataset) -> "FriendsSource":
        _check_k(self.name, self.n_candidates)
        if self.score not in ("log", "count"):
            raise ConfigError(f"friends score={self.score!r} is not one of ['log', 'count']")
        friends = self.friends if self.friends is not None else FriendListening()
        if not hasattr(friends, "counts_"):
            friends.fit(dataset)
        self.friends_ = friends
        return self

    def retrieve(self, users: np.ndarray, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists by number of friends listening."""
        if not hasattr(self, "friends_"):
            raise NotFittedError("FriendsSource is not fitted; call fit() first")
        counts, _ = self.friends_.rows(users)
        ids, scores = top_k_ordered(counts, history, self.n_candidates)  # rows most listened first
        if self.score == "log":
            scores = np.where(ids >= 0, np.log1p(np.maximum(scores, 0.0)), -np.inf).astype(np.float32)
        return ids, scores
