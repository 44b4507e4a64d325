"""The built-in stage-two feature groups: one class per group of columns.

Each group computes its columns for every (user, candidate) pair of a batch from the shared
fitted models (``requires``). :func:`pair_scores` and :func:`stack_columns` are the
vectorised helpers they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from funnel.batch import Batch
from funnel.candidates.merge import CandidateSet
from funnel.protocols import PartContext, PartSettings, Stateless
from funnel.sparse import lookup

ARTIST_STATISTICS = ("log_listeners", "log_plays", "years_since_first_tag", "years_since_last_tag", "has_tags")


def rowwise_dot(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dot product of matching rows."""
    return np.einsum("ij,ij->i", left, right, dtype=np.float32)


CHUNK_BYTES = 1 << 21  # rows gathered per step stay in cache (about 2 MB per side)
# A batch whose users x distinct candidate artists is at most this many times its number of
# pairs gets one matrix product instead of gathering both vectors of every pair.
DENSE_PAIR_CELLS = 48


def pair_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, rows: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """Inner products ``user_vectors[rows] . item_vectors[items]`` for every pair.

    When the pairs cover the batch's users x distinct artists densely enough, one BLAS
    product of the user vectors with the distinct artists' vectors computes them all;
    otherwise both vectors of each pair are gathered in cache-sized chunks.
    """
    if len(rows) == 0:
        return np.empty(0, np.float32)
    present = np.zeros(len(item_vectors), bool)
    present[items] = True
    distinct = np.flatnonzero(present)
    if len(user_vectors) * len(distinct) <= DENSE_PAIR_CELLS * len(rows):
        product = np.asarray(user_vectors, np.float32) @ np.asarray(item_vectors[distinct], np.float32).T
        column = np.cumsum(present) - 1  # artist -> its column of the product
        return product[rows, column[items]]
    out = np.empty(len(rows), np.float32)
    step = max(1, CHUNK_BYTES // (4 * max(item_vectors.shape[1], 1)))
    for start in range(0, len(rows), step):
        end = start + step
        out[start:end] = rowwise_dot(user_vectors[rows[start:end]], item_vectors[items[start:end]])
    return out


def stack_columns(blocks: list[np.ndarray], n_rows: int) -> np.ndarray:
    """The blocks (1-D columns or 2-D) side by side in one float32 matrix.

    Column-major, so each block is written contiguously instead of in strided pieces.
    """
    # the width of a 1-D block is 1 and of a 2-D one its columns, also when there are no rows
    shaped = [a.reshape(n_rows, a.shape[1] if a.ndim == 2 else 1) for a in map(np.asarray, blocks)]
    out = np.empty((n_rows, sum(b.shape[1] for b in shaped)), np.float32, order="F")
    at = 0
    for block in shaped:
        out[:, at:at + block.shape[1]] = block
        at += block.shape[1]
    return out


def activity(history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + number of artists) and log(1 + total plays) of each history row."""
    n = np.diff(history.indptr)
    plays = np.asarray(history.sum(axis=1)).ravel()
    return np.log1p(n).astype(np.float32), np.log1p(plays).astype(np.float32)


class ModelFeature(Stateless):
    """A group of fixed columns computed from one shared model (``requires[0]``)."""

    name: str = "model"
    requires: ClassVar[tuple[str, ...]] = ()
    names: ClassVar[tuple[str, ...]] = ()
    constant_per_user: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def from_config(cls, settings: Any, context: PartContext) -> Any:
        return cls(*(context.models[name] for name in cls.requires))

    def columns(self, sources: Sequence[str]) -> list[str]:
        return list(self.names)

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        raise NotImplementedError


class SVDFeature(ModelFeature):
    """BiasedSVD's predicted rating ``mu + b_u + b_i + p_u . q_i``."""

    name = "svd"
    requires = ("svd",)
    names = ("svd_prediction",)

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        svd = self.model
        user, bias = svd.user_vectors(batch)
        dot = pair_scores(user, svd.item_factors_, cands.rows, cands.items)
        return svd.global_mean_ + bias[cands.rows] + svd.item_bias_[cands.items] + dot


class ALSFeature(ModelFeature):
    """ALS's score ``x_u . y_i`` (the mean over the averaged models)."""

    name = "als"
    requires = ("als",)
    names = ("als_score",)

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        return pair_scores(self.model.user_vectors(batch), self.model.item_factors_, cands.rows, cands.items)


class TagFeature(ModelFeature):
    """Inner product of the user's stage-one query (all tag dimensions) with the artist's vector."""

    name = "tags"
    requires = ("embedder",)
    names = ("tag_similarity",)
    reason_word = "tags"

    def __init__(self, model: Any, history_weighting: str = "log") -> None:
        super().__init__(model)
        self.history_weighting = history_weighting

    class Settings(PartSettings):
        """``history_weighting``: weight of each history artist in the listener's tag vector."""

        history_weighting: Literal["none", "log", "plays"] = "log"

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> TagFeature:
        return cls(context.models["embedder"], settings.history_weighting)

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        query = self.model.query(batch.history, self.history_weighting)
        return pair_scores(query, self.model.vectors_, cands.rows, cands.items)


class PairScoreFeature(ModelFeature):
    """One column: the model's ``pair_scores`` of each (user, candidate) pair."""

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        return self.model.pair_scores(batch, cands.rows, cands.items)


class EASEFeature(PairScoreFeature):
    """EASE's co-listening score on presence (0 for artists EASE does not model)."""

    name = "ease"
    requires = ("ease",)
    names = ("ease_score",)


class LogEASEFeature(PairScoreFeature):
    """EASE's co-listening score on ``log1p(plays)``."""

    name = "log_ease"
    requires = ("log_ease",)
    names = ("log_ease_score",)


class RP3Feature(PairScoreFeature):
    """RP3beta's random-walk score."""

    name = "rp3"
    requires = ("rp3",)
    names = ("rp3_score",)


class FriendsFeature(ModelFeature):
    """``log1p`` of the friends listening to the artist, and their share of the user's friends."""

    name = "friends"
    requires = ("friends",)
    names = ("friends_log_count", "friends_share")
    reason_word = "friends"

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        counts, n_friends = self.model.rows(batch)
        count = lookup(counts, cands.rows, cands.items)
        return np.column_stack([np.log1p(count), count / np.maximum(n_friends[cands.rows], 1.0)])

    def friends_playing(self, values: np.ndarray) -> np.ndarray:
        """Per pair, the friends who play the artist (``values``: the pairs' rows of this group's columns)."""
        return np.rint(np.expm1(values[:, 0])).astype(np.int64)


class ArtistFeature(ModelFeature):
    """The artist's popularity and freshness: log listeners and plays, years since first and last tagged."""

    name = "artist"
    requires = ("embedder",)
    names = tuple(f"artist_{s}" for s in ARTIST_STATISTICS)
    reason_word = "popular"

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        stats = self.model.stats_
        return np.column_stack([stats[s][cands.items] for s in ARTIST_STATISTICS])


class UserFeature(ModelFeature):
    """The user's activity and tagging, and activity x the artist's popularity."""

    name = "user"
    requires = ("users", "embedder")
    names = ("user_log_artists", "user_log_plays", "user_years_since_last_tag", "user_has_tagged",
             "user_log_artists_x_artist_log_listeners")
    constant_per_user = frozenset(names[:4])

    def __init__(self, model: Any, embedder: Any) -> None:
        super().__init__(model)
        self.embedder = embedder

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        log_artists, log_plays = activity(batch.history)
        years, tagged = self.model.of(batch)
        user = np.column_stack([log_artists, log_plays, years, tagged])[cands.rows]
        cross = user[:, 0] * self.embedder.stats_["log_listeners"][cands.items]
        return np.column_stack([user, cross])


class RecencyFeature(ModelFeature):
    """When things were played: the artist's idle time and trend, and the listener's recent
    taste and recent starts.

    ``recent_taste`` is the ALS score of the artist against the listener's history weighted
    by recency (``0.5 ** (days since last played / recent_days)``), normalised to unit
    length, so a listener whose taste moved scores artists of the new taste higher.
    ``recent_starts_als`` is the artist's cosine similarity in ALS space to the mean of the
    listener's last-started artists (unit vectors), and ``recent_starts_ease`` its EASE
    co-listening score against those artists alone: what a listener starts next tends to be
    near what they started last. New listeners' histories count as recent. Without listen
    times in the data the group has no columns.
    """

    name = "recency"
    requires = ("listen_times", "als", "ease")
    names = ("artist_log_idle_days", "artist_trend", "recent_taste", "recent_starts_als", "recent_starts_ease")

    def __init__(self, model: Any, als: Any, ease: Any) -> None:
        super().__init__(model)
        self.als = als
        self.ease = ease

    def columns(self, sources: Sequence[str]) -> list[str]:
        if not self.model.has_times_:
            return []
        return list(self.names if self.model.recent_starts else self.names[:3])

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        if not self.model.has_times_:
            return np.empty((len(cands), 0), np.float32)
        factors = self.als.item_factors_
        taste = unit_rows(np.asarray(self.model.user_weights(batch) @ factors, np.float32))
        recent = pair_scores(taste, factors, cands.rows, cands.items)
        columns = [self.model.log_idle_days_[cands.items], self.model.trend_[cands.items], recent]
        if self.model.recent_starts:
            starts = self.model.user_starts(batch)
            unit = unit_rows(np.asarray(factors, np.float32))
            near = unit_rows(np.asarray(starts @ unit, np.float32))
            columns += [pair_scores(near, unit, cands.rows, cands.items),
                        self.ease.pair_scores(Batch(batch.users, starts), cands.rows, cands.items)]
        return np.column_stack(columns)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` with each row scaled to unit length (zero rows stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def source_columns(source: str) -> list[str]:
    """The columns :class:`SourceFeature` gives a source: its log rank and its score."""
    return [f"{source}_{what}" for what in ("log_rank", "source_score")]


class SourceFeature(Stateless):
    """Every source's log rank and score of the pair (its worst when it did not return it)."""

    name: str = "sources"
    requires: ClassVar[tuple[str, ...]] = ()
    constant_per_user: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_config(cls, settings: PartSettings, context: PartContext) -> SourceFeature:
        return cls()

    def columns(self, sources: Sequence[str]) -> list[str]:
        return [column for s in sources for column in source_columns(s)]

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        return stack_columns([block for s in cands.ranks for block in (np.log(cands.ranks[s]), cands.scores[s])],
                             len(cands))
