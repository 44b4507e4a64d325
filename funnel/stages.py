"""Every fitted component of both stages, fitted together on one dataset.

:class:`Stages` retrieves the merged candidate set of a batch of users and builds the
stage-two feature matrix for it. The :class:`funnel.Recommender` fits one ``Stages`` on the
history part of the training data to train its ranker, and one on all of it to serve.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

from funnel.beside import beside, now
from funnel.candidates import (ALSSource, ArtistEmbedder, CandidateSet, EASESource, FriendsSource,
                               PopularitySource, TagSource, merge_candidates)
from funnel.candidates.index import resolve_kind
from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.factors import EASE, ALSFactors, BiasedSVDFactors, RP3beta, UserKNN
from funnel.factors.social import FriendListening
from funnel.ranking.features import activity, pair_scores, stack_columns, user_statistics
from funnel.sparse import lookup

logger = logging.getLogger("funnel")

ARTIST_FEATURES = ("log_listeners", "log_plays", "years_since_first_tag", "years_since_last_tag",
                   "has_tags")


USER_FEATURES = ("user_log_artists", "user_log_plays", "user_years_since_last_tag", "user_has_tagged")


def user_level(names: list[str]) -> np.ndarray:
    """Mask of the features that are equal for every candidate of a user (they shift, not rank)."""
    return np.array([name in USER_FEATURES or name.startswith("svd_user_") for name in names], dtype=bool)


class Stages:
    """Stage-one sources and stage-two factor models fitted on one dataset.

    Parameters
    ----------
    config : FunnelConfig
        A validated configuration.

    Attributes
    ----------
    fit_seconds_ : dict of str to float
        Wall-clock seconds of each fitting step.
    """

    def __init__(self, config: FunnelConfig) -> None:
        self.config = config

    # fitting ----------------------------------------------------------------------------
    def fit(self, dataset: Dataset, svd: Callable[[], BiasedSVDFactors] | None = None,
            split: bool = False) -> "Stages":
        """Fit every component on ``dataset``; returns ``self``.

        Parameters
        ----------
        dataset : Dataset
        svd : callable, optional
            Returns the BiasedSVD to use (trained or reused from a cache); by default one is
            trained here with this configuration.
        split : bool
            Fit the artist embeddings and the BiasedSVD in a forked child process (see
            :mod:`funnel.beside`) while this process fits the other models: the ranker's
            fit, the longer of the two that ``Recommender.fit`` runs at once, then shares the
            two cores with the serving fit instead of finishing alone.
        """
        cfg = self.config
        self.n_artists_ = dataset.n_artists
        self.fit_seconds_: dict[str, float] = {}

        def embeddings_and_svd() -> tuple[ArtistEmbedder, BiasedSVDFactors, dict[str, float]]:
            with self._timed("artist embeddings"):
                embedder = self.make_embedder().fit(dataset)
            with self._timed("BiasedSVD"):
                fitted = svd() if svd is not None else self.make_svd().fit(dataset.matrix)
            return embedder, fitted, self.fit_seconds_

        parts = beside(embeddings_and_svd, "the artist embeddings and BiasedSVD") if split else now(embeddings_and_svd)
        with parts as first:
            with self._timed("ALS"):
                self.als_ = self.make_als().fit(dataset.matrix)
            with self._timed("EASE"):
                self.ease_ = EASE(cfg.ease_l2, max_artists=cfg.ease_max_artists).fit(dataset.matrix)
            if self.config.use_rp3_features:
                with self._timed("RP3beta"):
                    self.rp3_ = self.make_rp3().fit(dataset.matrix)
            if cfg.use_knn_features:
                with self._timed("user kNN"):
                    self.knn_ = self.make_knn().fit(dataset.matrix)
            if cfg.use_log_ease_features:
                with self._timed("log EASE"):
                    self.log_ease_ = self.make_log_ease().fit(dataset.matrix)
            with self._timed("friends and statistics"):
                self.friends_ = FriendListening().fit(dataset)
                self.popularity_ = PopularitySource(max(cfg.popularity_candidates, 1)).fit(dataset)
                self.user_stats_ = user_statistics(dataset)
            with self._timed("waiting for the embeddings and BiasedSVD"):
                self.embedder_, self.svd_, seconds = first.result()
        self.fit_seconds_.update(seconds)
        with self._timed("candidate indexes"):
            self.sources_ = []
            if cfg.tag_candidates:
                if self.embedder_.tag_dim_ == 0:
                    logger.info("tag source disabled: the data has no usable tag assignments")
                else:
                    self.sources_.append(self._tag_source().fit(dataset))
            if cfg.als_candidates:
                self.sources_.append(self._als_source().fit(dataset))
            if cfg.ease_candidates:
                self.sources_.append(EASESource(cfg.ease_candidates, self.ease_).fit(dataset))
            if cfg.friends_candidates:
                self.sources_.append(FriendsSource(cfg.friends_candidates, self.friends_,
                                                   cfg.friends_score).fit(dataset))
            if cfg.popularity_candidates:
                self.sources_.append(self.popularity_)
        logger.info("stage one sources: %s", ", ".join(f"{s.name} ({s.n_candidates})" for s in self.sources_))
        return self

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.fit_seconds_[step] = time.perf_counter() - started

    def make_embedder(self) -> ArtistEmbedder:
        """An unfitted artist embedder (stage one's tag, popularity and freshness vectors)."""
        cfg = self.config
        return ArtistEmbedder(cfg.tag_dim, cfg.popularity_weight, cfg.freshness_weight, cfg.seed)

    def make_als(self) -> ALSFactors:
        """An unfitted ALS (average of ``als_models``) with this configuration."""
        cfg = self.config
        return ALSFactors(cfg.als_factors, cfg.als_iterations, cfg.als_alpha, cfg.als_regularization,
                          cfg.als_confidence, cfg.seed, cfg.n_threads, cfg.als_models)

    def make_svd(self) -> BiasedSVDFactors:
        """An unfitted BiasedSVD with this configuration."""
        cfg = self.config
        return BiasedSVDFactors(cfg.svd_factors, cfg.svd_epochs, cfg.svd_lr, cfg.svd_reg, cfg.seed)

    def make_rp3(self) -> RP3beta:
        """An unfitted RP3beta with this configuration."""
        cfg = self.config
        return RP3beta(cfg.rp3_alpha, cfg.rp3_beta, cfg.rp3_top_k)

    def make_knn(self) -> UserKNN:
        """An unfitted user-kNN with this configuration."""
        return UserKNN(self.config.knn_neighbors, self.config.knn_weighting)

    def make_log_ease(self) -> EASE:
        """An unfitted EASE on ``log1p(plays)`` with this configuration."""
        cfg = self.config
        return EASE(cfg.log_ease_l2, max_artists=cfg.ease_max_artists, weighting="log")

    def _tag_source(self) -> TagSource:
        cfg = self.config
        return TagSource(cfg.tag_candidates, self.embedder_, cfg.history_weighting, cfg.index,
                         cfg.ann_threshold, cfg.seed, cfg.tag_search_dim)

    def _als_source(self) -> ALSSource:
        cfg = self.config
        return ALSSource(cfg.als_candidates, self.als_, cfg.index, cfg.ann_threshold, cfg.seed,
                         cfg.als_min_listeners)

    # stage one --------------------------------------------------------------------------
    def candidates(self, users: np.ndarray, history: sp.csr_matrix, fallback: int = 0) -> CandidateSet:
        """Merged candidates of every source for a batch of users.

        ``fallback`` > 0 adds that many most popular unseen artists per user (without source
        features), so that every user has enough candidates to fill a top-n list.
        """
        retrieved = [(s.name, *s.retrieve(users, history)) for s in self.sources_]
        cands = merge_candidates(retrieved, self.n_artists_)
        if fallback and cands.counts(len(users)).min(initial=fallback) < fallback:
            extra = [self.popularity_.retrieve(users, history, fallback)[0]]
            cands = merge_candidates(retrieved, self.n_artists_, extra)
        return cands

    # stage two --------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Names of the columns :meth:`features` returns."""
        f = self.config.svd_factors
        names = []
        if self.config.use_svd_features:
            if self.config.svd_features == "factors":
                names += [f"svd_user_{i}" for i in range(f)] + [f"svd_artist_{i}" for i in range(f)]
                names += [f"svd_product_{i}" for i in range(f)]
            names += ["svd_prediction"]
        if self.config.use_als_features:
            names += ["als_score"]
        names += ["tag_similarity", "ease_score", "friends_log_count", "friends_share"]
        if self.config.use_rp3_features:
            names += ["rp3_score"]
        if self.config.use_knn_features:
            names += ["knn_score"]
        if self.config.use_log_ease_features:
            names += ["log_ease_score"]
        for source in self.sources_:
            names += [f"{source.name}_log_rank", f"{source.name}_source_score"]
        names += [f"artist_{name}" for name in ARTIST_FEATURES]
        names += [*USER_FEATURES, "user_log_artists_x_artist_log_listeners"]
        return names

    def features(self, users: np.ndarray, history: sp.csr_matrix, cands: CandidateSet) -> np.ndarray:
        """The ``(len(cands), n_features)`` float32 feature matrix, columns as :meth:`feature_names`."""
        rows, items = cands.rows, cands.items
        columns: list[np.ndarray] = []
        if self.config.use_svd_features:
            svd_user, svd_bias = self.svd_.user_vectors(users, history)
            if self.config.svd_features == "factors":
                pu, qi = svd_user[rows], self.svd_.item_factors_[items]
                columns += [pu, qi, pu * qi]
            dot = pair_scores(svd_user, self.svd_.item_factors_, rows, items)
            svd_pred = self.svd_.global_mean_ + svd_bias[rows] + self.svd_.item_bias_[items] + dot
            columns.append(svd_pred[:, None])
        if self.config.use_als_features:
            als_user = self.als_.user_vectors(users, history)
            columns.append(pair_scores(als_user, self.als_.item_factors_, rows, items)[:, None])
        query = self.embedder_.query(history, self.config.history_weighting)
        columns.append(pair_scores(query, self.embedder_.vectors_, rows, items)[:, None])
        columns.append(self._ease_scores(self.ease_, history, rows, items)[:, None])
        friend_counts, n_friends = self.friends_.rows(users)
        count = lookup(friend_counts, rows, items)
        columns.append(np.log1p(count)[:, None])
        columns.append((count / np.maximum(n_friends[rows], 1.0))[:, None])
        if self.config.use_rp3_features:
            columns.append(lookup(self.rp3_.scores(history), rows, items)[:, None])
        if self.config.use_knn_features:
            columns.append(lookup(self.knn_.scores(users, history), rows, items)[:, None])
        if self.config.use_log_ease_features:
            columns.append(self._ease_scores(self.log_ease_, history, rows, items)[:, None])
        for source in self.sources_:
            columns.append(np.log(cands.ranks[source.name])[:, None])
            columns.append(cands.scores[source.name][:, None])
        stats = self.embedder_.stats_
        columns.append(np.column_stack([stats[name][items] for name in ARTIST_FEATURES]))
        log_artists, log_plays = activity(history)
        known = users >= 0
        safe = np.where(known, users, 0)
        last_tag = self.user_stats_["years_since_last_tag"][safe]
        if not known.all():
            last_tag = np.where(known, last_tag, np.median(self.user_stats_["years_since_last_tag"]))
        tagged = np.where(known, self.user_stats_["has_tagged"][safe], 0.0)
        user_block = np.column_stack([log_artists, log_plays, last_tag, tagged])[rows]
        cross = user_block[:, 0] * stats["log_listeners"][items]
        columns += [user_block, cross[:, None]]
        return stack_columns(columns, len(rows))

    @staticmethod
    def _ease_scores(ease: EASE, history: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """EASE score of each (row, artist) pair, 0 for artists the model does not cover."""
        position = ease.position(items)
        if len(ease.items_) == 0:  # no artist has enough listeners to be modelled
            return np.zeros(len(items), np.float32)
        scores = ease.scores(history)[rows, np.maximum(position, 0)]
        return np.where(position >= 0, scores, 0.0)

    # persistence ------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """Fitted state as named arrays plus the FAISS indexes by source name."""
        arrays = {"embedder/vectors": self.embedder_.vectors_,
                  "embedder/tag_dim": np.array([self.embedder_.tag_dim_]),
                  "popularity/order": self.popularity_.order_,
                  "popularity/scores": self.popularity_.scores_}
        arrays.update({f"embedder/stats/{k}": v for k, v in self.embedder_.stats_.items()})
        arrays.update({f"als/{k}": v for k, v in self.als_.to_arrays().items()})
        arrays.update({f"svd/{k}": v for k, v in self.svd_.to_arrays().items()})
        arrays.update({f"ease/{k}": v for k, v in self.ease_.to_arrays().items()})
        arrays.update({f"friends/{k}": v for k, v in self.friends_.to_arrays().items()})
        if self.config.use_rp3_features:
            arrays.update({f"rp3/{k}": v for k, v in self.rp3_.to_arrays().items()})
        if self.config.use_knn_features:
            arrays.update({f"knn/{k}": v for k, v in self.knn_.to_arrays().items()})
        if self.config.use_log_ease_features:
            arrays.update({f"log_ease/{k}": v for k, v in self.log_ease_.to_arrays().items()})
        arrays.update({f"users/{k}": v for k, v in self.user_stats_.items()})
        indexes = {s.name: s.index_ for s in self.sources_ if hasattr(s, "index_")}
        return arrays, indexes

    @classmethod
    def from_arrays(cls, config: FunnelConfig, arrays: dict[str, np.ndarray],
                    indexes: dict[str, object], source_names: list[str]) -> "Stages":
        """Rebuild fitted stages from :meth:`to_arrays` output without refitting."""
        self = cls(config)
        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        self.embedder_ = self.make_embedder()
        self.embedder_.vectors_ = arrays["embedder/vectors"]
        self.embedder_.tag_dim_ = int(arrays["embedder/tag_dim"][0])
        self.embedder_.stats_ = group("embedder/stats/")
        self.n_artists_ = len(self.embedder_.vectors_)
        self.als_ = self.make_als().set_arrays(group("als/"))
        self.svd_ = self.make_svd().set_arrays(group("svd/"))
        self.ease_ = EASE(config.ease_l2, max_artists=config.ease_max_artists).set_arrays(group("ease/"))
        self.friends_ = FriendListening().set_arrays(group("friends/"))
        if config.use_rp3_features:
            self.rp3_ = self.make_rp3().set_arrays(group("rp3/"))
        if config.use_knn_features:
            self.knn_ = self.make_knn().set_arrays(group("knn/"))
        if config.use_log_ease_features:
            self.log_ease_ = self.make_log_ease().set_arrays(group("log_ease/"))
        self.popularity_ = PopularitySource(max(config.popularity_candidates, 1))
        self.popularity_.order_ = arrays["popularity/order"]
        self.popularity_.scores_ = arrays["popularity/scores"]
        self.user_stats_ = group("users/")
        self.sources_ = []
        for name in source_names:
            if name == "popularity":
                self.sources_.append(self.popularity_)
                continue
            if name == "ease":
                source = EASESource(config.ease_candidates, self.ease_)
                source.ease_ = self.ease_
            elif name == "friends":
                source = FriendsSource(config.friends_candidates, self.friends_, config.friends_score)
                source.friends_ = self.friends_
            else:
                source = self._tag_source() if name == "tags" else self._als_source()
                kind = resolve_kind(config.index, self.n_artists_, config.ann_threshold)
                if name == "tags":
                    source.embedder_ = self.embedder_
                    source.search_vectors_ = self.embedder_.search_vectors(source.searched_dims(kind))
                else:
                    source.als_ = self.als_
                source.index_ = indexes[name]
                source.index_kind_ = kind
            self.sources_.append(source)
        return self
