"""The built-in stage-one candidate sources: tag and ALS-factor search, EASE, friends, popularity."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from funnel.batch import Batch
from funnel.candidates.base import drop_seen, pad, top_k_ordered, top_k_unseen
from funnel.candidates.index import build_index, index_bytes, index_from_bytes, index_from_file, resolve_kind, search
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.factors import EASE, ALSFactors, ArtistEmbedder, FriendListening, PopularityChart
from funnel.protocols import PartContext, PartState, PartUpdate, SourceSettings, Space, Stateless

logger = logging.getLogger("funnel")


SPLIT_SEARCH_ROWS = 32  # smaller batches are searched once, with the largest margin of their rows
# artists fetched beyond what a row needs: FAISS's order among near-equal scores depends on the other
# queries of its matrix product, so the last few fetched are not trusted to be the right ones
SLACK = 8
_RESCORE_CELLS = 1 << 22  # float32 cells per chunk of exact scores (16 MB)


def exact_scores(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Inner products of each query with the vectors of its row of ``ids`` (-1: -inf), float32.

    numpy's ``einsum`` (its own loops, no BLAS) sums each pair's products on its own, so a
    listener gets the same bits whichever other listeners share the batch and however many
    artists each row holds; FAISS's matrix product over the batch does not, and near ties
    would then order a listener's candidates by who else was scored with them.
    """
    out = np.full(ids.shape, -np.inf, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    width, dim = ids.shape[1], vectors.shape[1]
    rows = max(1, _RESCORE_CELLS // max(1, width * dim))
    for start in range(0, len(ids), rows):  # chunks bound the memory of the gathered vectors
        chunk = ids[start:start + rows]
        gathered = np.take(vectors, np.maximum(chunk, 0).ravel(), axis=0).reshape(len(chunk), width, dim)
        scores = np.einsum("ikj,ij->ik", gathered, queries[start:start + rows])
        out[start:start + rows] = np.where(chunk >= 0, scores, -np.inf)
    return out


class IndexSource:
    """A source that searches a FAISS inner-product index with one query vector per user.

    Subclasses give the indexed vectors (:meth:`_vectors`) and the queries (:meth:`_queries`).
    """

    name: str = "index"
    requires: ClassVar[tuple[str, ...]] = ()

    class Settings(SourceSettings):
        """FAISS index type (``auto``: exact search below ``ann_threshold`` artists, else IVF)."""

        index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
        ann_threshold: int = Field(100_000, gt=0)

    def __init__(self, n_candidates: int, *, index: str = "auto", ann_threshold: int = 100_000,
                 seed: int = 0) -> None:
        self.n_candidates = n_candidates
        self.index = index
        self.ann_threshold = ann_threshold
        self.seed = seed

    @property
    def n_artists(self) -> int:
        """The catalogue size, which decides the index kind."""
        raise NotImplementedError

    def _vectors(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
        """The vectors to index and, if only some rows are indexed, their artist indices."""
        raise NotImplementedError

    def _queries(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def _artist_vectors(self) -> np.ndarray:
        """The indexed vectors of every artist, row ``i`` artist ``i`` (for the exact scores)."""
        raise NotImplementedError

    def fit(self, dataset: Dataset) -> Any:
        vectors, ids = self._vectors(dataset)
        self.index_ = build_index(vectors, self.index_kind, self.seed, ids)
        return self

    def update(self, change: PartUpdate) -> Any:
        """The index built again over the updated models' artist vectors (see :meth:`_updated_vectors`)."""
        if not hasattr(self, "index_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        vectors, ids = self._updated_vectors(change)
        self.index_ = build_index(vectors, self.index_kind, self.seed, ids)
        return self

    def _updated_vectors(self, change: PartUpdate) -> tuple[np.ndarray, np.ndarray | None]:
        """What :meth:`update` indexes, the shared models already updated: as :meth:`_vectors`."""
        raise NotImplementedError

    @property
    def index_kind(self) -> str:
        """The concrete FAISS index kind (``flat``, ``ivf`` or ``hnsw``)."""
        return resolve_kind(self.index, self.n_artists, self.ann_threshold)

    def retrieve(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists per user."""
        if not hasattr(self, "index_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        k = self.n_candidates
        queries = self._queries(batch)
        known = np.diff(batch.known.indptr)
        # a few listeners know (played or tagged) far more artists than the rest: fetching
        # that many more for every row would slow every search, so most rows get a typical
        # margin and only the rows it may have cut short are searched again with their own
        margin = int(np.partition(known, int(0.9 * (len(known) - 1)))[int(0.9 * (len(known) - 1))]) \
            if len(known) >= SPLIT_SEARCH_ROWS else int(known.max(initial=0))
        ids, scores, unsure = self._search(queries, batch, k, k + margin + SLACK)
        again = np.flatnonzero(unsure)
        if len(again):
            part = batch.rows(again)
            ids[again], scores[again], _ = self._search(queries[again], part, k, k + part.max_known() + 2 * SLACK)
        return ids, scores

    def _search(self, queries: np.ndarray, batch: Batch, k: int, fetch: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best ``k`` unseen artists of ``fetch`` searched, ranked by exact scores (ties: lower id first).

        The first ``k`` + :data:`SLACK` unseen artists in FAISS's order are scored again
        (:func:`exact_scores`) and the best ``k`` of them kept. Also returns the rows that
        had fewer than that many unseen while the index holds more, to be searched again wider.
        """
        ids, scores = search(self.index_, queries, fetch)
        cut = ids.shape[1] < self.index_.ntotal
        ids, _ = drop_seen(ids, scores, batch, k + SLACK)
        exact = exact_scores(queries, self._artist_vectors(), ids)
        order = np.lexsort((ids, -exact))[:, :k]
        unsure = (ids[:, -1] < 0) & cut
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(exact, order, axis=1), unsure

    def get_state(self) -> PartState:
        return PartState(files={"index.faiss": index_bytes(self.index_)})

    def set_state(self, state: PartState) -> Any:
        what = f"the {self.name} source's index"
        path = state.paths.get("index.faiss")
        self.index_ = index_from_file(path, what) if path else index_from_bytes(state.files["index.faiss"], what)
        return self


class TagSource(IndexSource):
    """Nearest artists to the (weighted) sum of the user's history in tag-embedding space.

    Parameters
    ----------
    n_candidates : int
    embedder : ArtistEmbedder
        The fitted artist vectors.
    history_weighting : {"none", "log", "plays"}
    index : {"auto", "flat", "ivf", "hnsw"}
    ann_threshold, seed : int
    search_dim : int
        Tag dimensions an exact index searches (see :meth:`ArtistEmbedder.search_vectors`);
        0 searches the whole tag block, as IVF and HNSW always do: their lists separate
        artists on the full block.
    """

    name = "tags"
    requires = ("embedder",)
    reason_word = "tags"
    reason_phrase = "its tags match what you play"

    def __init__(self, n_candidates: int, embedder: ArtistEmbedder, *, history_weighting: str = "log",
                 index: str = "auto", ann_threshold: int = 100_000, seed: int = 0, search_dim: int = 0) -> None:
        super().__init__(n_candidates, index=index, ann_threshold=ann_threshold, seed=seed)
        self.embedder = embedder
        self.history_weighting = history_weighting
        self.search_dim = search_dim

    class Settings(IndexSource.Settings):
        """``search_dim``: tag dimensions an exact index searches (the strongest SVD components,
        L2-normalised again; 0 searches all); ``history_weighting``: weight of each history
        artist in the listener's query."""

        search_dim: int = Field(32, ge=0)
        history_weighting: Literal["none", "log", "plays"] = "log"

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> TagSource:
        return cls(settings.n, context.models["embedder"], history_weighting=settings.history_weighting,
                   index=settings.index, ann_threshold=settings.ann_threshold, seed=context.seed,
                   search_dim=settings.search_dim)

    @property
    def n_artists(self) -> int:
        if not hasattr(self.embedder, "vectors_"):
            raise NotFittedError("the tag source's ArtistEmbedder is not fitted; call its fit() first")
        return len(self.embedder.vectors_)

    def available(self) -> bool:
        """False when the data had no usable tags (the artist vectors have no tag block)."""
        return bool(self.embedder.tag_dim_ > 0)

    @property
    def search_vectors(self) -> np.ndarray:
        """The artist vectors in the index, which queries sum."""
        if not hasattr(self, "_search_vectors"):
            dims = self.search_dim if self.index_kind == "flat" else 0
            self._search_vectors = self.embedder.search_vectors(dims)
        return self._search_vectors

    def _vectors(self, dataset: Dataset) -> tuple[np.ndarray, None]:
        return self.search_vectors, None

    def _updated_vectors(self, change: PartUpdate) -> tuple[np.ndarray, None]:
        self.__dict__.pop("_search_vectors", None)  # the embedder's vectors changed: new artists, new counts
        return self.search_vectors, None

    def _queries(self, batch: Batch) -> np.ndarray:
        return self.embedder.query(batch.history, self.history_weighting, self.search_vectors)

    def _artist_vectors(self) -> np.ndarray:
        return self.search_vectors

    def similarity_space(self) -> Space | None:
        """The tag embedding searched in this source's index (``space`` ``tags``), preferred to all."""
        return Space("tags", 0.0) if self.available() else None

    def nearest_artists(self, columns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` artists nearest to each artist of ``columns`` in the index, itself excluded.

        Returns ``(len(columns), n)`` ids and scores, best first, -1 / -inf padded.
        """
        columns = np.asarray(columns, np.int64)
        ids, scores = search(self.index_, self.search_vectors[columns], n + 1)
        # an artist is its own nearest neighbour, except among ties: drop it wherever it is
        ids = np.where(ids == columns[:, None], -1, ids)
        order = np.argsort(ids < 0, axis=1, kind="stable")[:, :n]
        ids, scores = np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
        if ids.shape[1] < n:
            ids, scores = pad(ids, scores, n)
        return ids, np.where(ids >= 0, scores, -np.inf).astype(np.float32)


class ALSSource(IndexSource):
    """Nearest artists to the user's ALS factors (inner product), via FAISS.

    Parameters
    ----------
    n_candidates : int
    als : ALSFactors
    index, ann_threshold, seed
        As for :class:`TagSource`.
    min_listeners : int
        Only artists with at least this many listeners are searched: most Last.fm artists
        have one, their factors rest on a single user, and the tag source still reaches them.
    """

    name = "als"
    requires = ("als",)

    def __init__(self, n_candidates: int, als: ALSFactors, *, index: str = "auto", ann_threshold: int = 100_000,
                 seed: int = 0, min_listeners: int = 1) -> None:
        super().__init__(n_candidates, index=index, ann_threshold=ann_threshold, seed=seed)
        self.als = als
        self.min_listeners = min_listeners

    class Settings(IndexSource.Settings):
        """``min_listeners``: only artists with at least this many listeners are searched."""

        min_listeners: int = Field(2, gt=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> ALSSource:
        return cls(settings.n, context.models["als"], index=settings.index, ann_threshold=settings.ann_threshold,
                   seed=context.seed, min_listeners=settings.min_listeners)

    @property
    def n_artists(self) -> int:
        return len(self.als.item_factors_)

    def _vectors(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
        self.als._check()  # NotFittedError, not an AttributeError, for unfitted factors
        self.searched_ = np.arange(len(self.als.item_factors_))
        if self.min_listeners <= 1:
            return self.als.item_factors_, None
        plays = dataset.matrix
        listeners = np.bincount(plays.indices[plays.data > 0], minlength=plays.shape[1])
        searched = np.flatnonzero(listeners >= self.min_listeners)
        if len(searched) == 0:
            logger.warning("no artist has %d or more listeners (the most is %d): the ALS source searches "
                           "every artist", self.min_listeners, listeners.max(initial=0))
            return self.als.item_factors_, None
        self.searched_ = searched
        return self.als.item_factors_, searched

    def _updated_vectors(self, change: PartUpdate) -> tuple[np.ndarray, np.ndarray | None]:
        # the artists the fit chose, and the new ones placed among artists they resemble
        placed = change.new_artists
        if change.neighbours is not None:
            placed = placed[change.neighbours[1].sum(axis=1) > 0]
        else:
            placed = placed[:0]
        self.searched_ = np.union1d(change.artist_rows[self.searched_], placed)
        every = len(self.searched_) == len(self.als.item_factors_)
        return self.als.item_factors_, None if every else self.searched_

    def get_state(self) -> PartState:
        state = super().get_state()
        state.arrays["searched"] = self.searched_
        return state

    def set_state(self, state: PartState) -> Any:
        super().set_state(state)
        self.searched_ = np.asarray(state.arrays["searched"], np.int64)
        return self

    def _queries(self, batch: Batch) -> np.ndarray:
        return self.als.user_vectors(batch)

    def _artist_vectors(self) -> np.ndarray:
        return self.als.item_factors_


class ModelSource(Stateless):
    """A source whose state lives in one shared model, ``requires[0]``, handed to it as ``model``."""

    name: str = "model"
    requires: ClassVar[tuple[str, ...]] = ()
    Settings = SourceSettings

    def __init__(self, n_candidates: int, model: Any) -> None:
        self.n_candidates = n_candidates
        self.model = model

    @classmethod
    def from_config(cls, settings: SourceSettings, context: PartContext) -> Any:
        return cls(settings.n, context.models[cls.requires[0]])


class EASESource(ModelSource):
    """Artists that co-occur with the user's history, scored by the EASE item-item model."""

    name = "ease"
    requires = ("ease",)
    model: EASE

    def retrieve(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists by EASE score."""
        return top_k_unseen(self.model.scores(batch), self.model.items_, batch, self.n_candidates)


class FriendsSource(ModelSource):
    """Artists most of the user's friends listen to, scored ``log1p(friends listening)``."""

    name = "friends"
    requires = ("friends",)
    reason_word = "friends"
    model: FriendListening

    def retrieve(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists by number of friends listening."""
        counts, _ = self.model.rows(batch)
        ids, scores = top_k_ordered(counts, batch, self.n_candidates)  # rows store most listened first
        return ids, np.where(ids >= 0, np.log1p(np.maximum(scores, 0.0)), -np.inf).astype(np.float32)


class PopularitySource(ModelSource):
    """The most listened-to artists the user has not heard (the same chart for everyone)."""

    name = "popularity"
    requires = ("popularity",)
    reason_word = "popular"
    model: PopularityChart

    def retrieve(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_candidates`` unseen artists by listener count."""
        return self.model.top_unseen(batch, self.n_candidates)
