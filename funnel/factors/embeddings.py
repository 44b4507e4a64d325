"""Artist vectors for stage one: tag text, popularity and freshness blocks."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from funnel.data import Dataset
from funnel.data.freshness import robust_years
from funnel.errors import NotFittedError
from funnel.factors.nearest import nearest
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate, Space, tunable
from funnel.sparse import row_normalize, weighted

logger = logging.getLogger("funnel")

# history_weighting names -> the play-count weighting of funnel.sparse.weighted
_HISTORY_WEIGHTING = {"none": "binary", "log": "log", "plays": "raw"}

_WORD = re.compile(r"[a-z0-9]+")
MIN_ARTISTS_PER_TOKEN = 2
NEIGHBOUR_ROWS = 256  # new artists compared with the catalogue at once
_NO_TEXT = "\x00tag:"  # a tag without text is one token of its own


def tag_tokens(tag: str) -> list[str]:
    """Tokens of one tag's text: its words, plus the whole tag when it has several words."""
    if tag.startswith(_NO_TEXT):
        return [tag]
    text = tag.lower().strip()
    words = _WORD.findall(text)
    whole = " ".join(words)
    return words + ([whole] if len(words) > 1 else [])


def artist_statistics(dataset: Dataset) -> dict[str, np.ndarray]:
    """Raw per-artist features, in training-data terms (no scaling).

    Returns log listeners, log plays, years since first and last tagged (as of the latest
    plausible tag date) and whether the artist has any tag assignment. Tag dates outside the
    plausible range of all tag dates (e.g. the bogus 1956 entries of Last.fm) are clipped into
    it (see :func:`funnel.data.freshness.robust_years`), so a bad year cannot move freshness far.
    """
    plays = dataset.matrix
    binary = weighted(plays, "binary", plays.dtype)
    stats = {
        "log_listeners": np.log1p(np.asarray(binary.sum(axis=0)).ravel()),
        "log_plays": np.log1p(np.asarray(plays.sum(axis=0)).ravel()),
    }
    first = np.full(dataset.n_artists, np.nan)
    last = np.full(dataset.n_artists, np.nan)
    assign = dataset.tag_assignments
    if assign is not None and len(assign):
        years, latest = robust_years(assign["timestamp"].to_numpy())
        items = dataset.artist_index(assign["artist_id"].to_numpy())
        ok = np.isfinite(years) & (items >= 0)
        np.fmin.at(first, items[ok], years[ok])
        np.fmax.at(last, items[ok], years[ok])
        first, last = latest - first, latest - last
    has_tags = np.isfinite(first)
    fill_first = np.nanmedian(first) if has_tags.any() else 0.0
    fill_last = np.nanmedian(last) if has_tags.any() else 0.0
    stats["years_since_first_tag"] = np.where(has_tags, first, fill_first)
    stats["years_since_last_tag"] = np.where(has_tags, last, fill_last)
    stats["has_tags"] = has_tags.astype(np.float64)
    return {k: v.astype(np.float32) for k, v in stats.items()}


def _scale(columns: list[np.ndarray]) -> np.ndarray:
    """``(2, k)``: each column's mean and standard deviation, to z-score it by."""
    block = np.column_stack(columns).astype(np.float64)
    return np.vstack([block.mean(axis=0), block.std(axis=0)])


def _scaled_block(columns: list[np.ndarray], scale: np.ndarray, weight: float) -> np.ndarray:
    """Z-score each column by ``scale`` and weigh the block so its mean row norm is about ``weight``."""
    block = np.column_stack(columns).astype(np.float64)
    mean, std = scale
    block = (block - mean) / np.where(std > 0, std, 1.0)
    return (block * weight / np.sqrt(block.shape[1])).astype(np.float32)


_BLOCKS = {"popularity": ("log_listeners", "log_plays"), "freshness": ("years_since_first_tag", "years_since_last_tag")}


class ArtistEmbedder(ArrayState):
    """Embed every catalogue artist from its tags, popularity and freshness.

    The tag block is the TF-IDF of each artist's tag text (every assignment, and every
    artist-level label such as a genre, counts once, so tags applied more often weigh more;
    scikit-learn's ``CountVectorizer`` and ``TfidfTransformer(sublinear_tf=True)``),
    projected to ``tag_dim`` dimensions with scikit-learn's ``TruncatedSVD`` and
    L2-normalised. Popularity (log listeners, log plays) and freshness (years since
    first and last tagged) are z-scored and scaled to ``popularity_weight`` and
    ``freshness_weight`` of the tag block's unit norm. Artists without tags get a zero tag
    block and still carry popularity and freshness.

    Attributes
    ----------
    vectors_ : numpy.ndarray
        ``(n_artists, dim)`` float32 artist vectors.
    stats_ : dict of numpy.ndarray
        Raw per-artist statistics (see :func:`artist_statistics`).
    tag_dim_ : int
        Dimensions actually used by the tag block (0 without tag data).
    tokens_, idf_, components_ : numpy.ndarray
        The fitted tag text: vocabulary, inverse document frequencies and projection
        (``(tag_dim_, len(tokens_))``), which place an artist that arrives with tags
        (:meth:`update`).
    scales_ : dict of numpy.ndarray
        Mean and standard deviation of the popularity and freshness columns.
    """

    name = "embedder"
    vectors_: np.ndarray

    def __init__(self, *, tag_dim: int = 250, popularity_weight: float = 0.25,
                 freshness_weight: float = 0.1, seed: int = 0) -> None:
        self.tag_dim = tag_dim
        self.popularity_weight = popularity_weight
        self.freshness_weight = freshness_weight
        self.seed = seed

    class Settings(PartSettings):
        """Tag-text dimensions and the popularity and freshness blocks' weights.

        ``tag_dim``: dimensions of the truncated-SVD projection of the TF-IDF tag text (the
        design card asks for about 500; 250 scored the same on validation at half the cost).
        ``popularity_weight``, ``freshness_weight``: norm of those blocks relative to the tag
        block (unit norm).
        """

        tag_dim: int = Field(250, gt=0, json_schema_extra=tunable(32, 500, log=True))
        popularity_weight: float = Field(0.25, ge=0)
        freshness_weight: float = Field(0.1, ge=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> ArtistEmbedder:
        return cls(**settings.model_dump(), seed=context.seed)

    def fit(self, dataset: Dataset) -> ArtistEmbedder:
        """Compute the artist vectors of ``dataset``; returns ``self``."""
        self.stats_ = artist_statistics(dataset)
        tag_block = self._tag_block(dataset)
        self.tag_dim_ = tag_block.shape[1]
        self.scales_ = {name: _scale([self.stats_[c] for c in columns]) for name, columns in _BLOCKS.items()}
        self._assemble(tag_block)
        return self

    def _assemble(self, tag_block: np.ndarray | None) -> None:
        """The vectors: ``tag_block`` and the statistics' blocks (``None``: the tag block kept, in place)."""
        weights = {"popularity": self.popularity_weight, "freshness": self.freshness_weight}
        blocks = [_scaled_block([self.stats_[c] for c in columns], self.scales_[name], weights[name])
                  for name, columns in _BLOCKS.items()]
        if tag_block is None:
            self.vectors_[:, self.tag_dim_:] = np.hstack(blocks)
            return
        self.vectors_ = np.ascontiguousarray(np.hstack([tag_block, *blocks]), dtype=np.float32)

    def update(self, change: PartUpdate) -> ArtistEmbedder:
        """Recount listeners and plays; place each new artist from its tags with the fitted tag text.

        A new artist's tag block is its tags' and labels' TF-IDF (the fitted vocabulary and
        inverse document frequencies) projected with the fitted components; tagged by
        listeners it counts as tagged now (0 years since first and last tagged), otherwise it
        gets the median freshness, as untagged artists do, and without any tag a zero tag
        block. Known artists keep their tag block; the popularity and freshness blocks are
        scaled as fitted.
        """
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        old = self.stats_
        has_tags = old["has_tags"] > 0
        stats = {name: change.artists(values) for name, values in old.items()}  # no listener, no tag yet
        for name in ("years_since_first_tag", "years_since_last_tag"):  # as untagged artists are filled
            stats[name] = change.artists(old[name], np.median(old[name][has_tags]) if has_tags.any() else 0.0)
        plays = np.asarray(change.plays.sum(axis=0), np.float64).ravel()
        stats["log_listeners"] = np.log1p(np.expm1(stats["log_listeners"].astype(np.float64)) + change.new_listeners)
        stats["log_plays"] = np.log1p(np.expm1(stats["log_plays"].astype(np.float64)) + plays)
        # one copy of the vectors at most (none when they are writable and no artist is new); the
        # statistics' blocks are then written into it
        if not change.same_catalogue:
            self.vectors_ = change.artists(self.vectors_)
        elif not self.vectors_.flags.writeable:  # memory-mapped from a saved model
            self.vectors_ = np.array(self.vectors_)
        tags = change.new_tags[np.isin(change.new_tags["artist"].to_numpy(), change.new_artists)]
        if len(tags):
            tagged = np.unique(tags["artist"].to_numpy())
            self.vectors_[tagged, :self.tag_dim_] = self._embed_tags(tags, tagged)
            # freshness counts listeners' tag assignments, as a fit does, not artist-level labels
            assigned = np.unique(tags.loc[tags["assigned"].to_numpy(bool), "artist"].to_numpy())
            for name in ("years_since_first_tag", "years_since_last_tag"):
                stats[name][assigned] = 0.0
            stats["has_tags"][assigned] = 1.0
        self.stats_ = {name: values.astype(np.float32) for name, values in stats.items()}
        self._assemble(None)
        return self

    def neighbours(self, artists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` tagged artists (not among ``artists``) with the closest tag blocks, weights by cosine.

        Weights are the positive cosines, summing to 1 per row; all 0 for an artist without
        tags. What :meth:`update`'s new artists lend their place by (:class:`ArtistPlacement`).
        """
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        tags = self.vectors_[:, :self.tag_dim_]
        others = np.flatnonzero(self.stats_["has_tags"] > 0)
        others = others[~np.isin(others, artists)]
        k = min(k, len(others))
        ids = np.zeros((len(artists), k), np.int64)
        weights = np.zeros((len(artists), k), np.float32)
        for start in range(0, len(artists), NEIGHBOUR_ROWS):  # bounds the similarity block's memory
            rows = slice(start, start + NEIGHBOUR_ROWS)
            similarity = tags[artists[rows]] @ tags[others].T
            top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
            ids[rows] = others[top]
            weights[rows] = np.maximum(np.take_along_axis(similarity, top, axis=1), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        return ids, np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)

    def _embed_tags(self, tags: pd.DataFrame, artists: np.ndarray) -> np.ndarray:
        """Unit tag blocks of ``artists`` (sorted) from their ``artist, tag`` rows, with the fitted tag text."""
        if self.tag_dim_ == 0 or len(self.tokens_) == 0:
            return np.zeros((len(artists), self.tag_dim_), np.float32)
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

        rows = np.searchsorted(artists, tags["artist"].to_numpy())
        owner = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))),
                              shape=(len(artists), len(rows)))
        vocabulary = {token: i for i, token in enumerate(self.tokens_.tolist())}
        words = CountVectorizer(analyzer=tag_tokens, vocabulary=vocabulary, binary=True, dtype=np.float32)
        corpus = sp.csr_matrix(owner @ words.transform(tags["tag"].astype(str).to_numpy(dtype=object)))
        tfidf = TfidfTransformer(sublinear_tf=True)
        tfidf.idf_ = self.idf_.astype(np.float64)
        projection = TruncatedSVD(self.tag_dim_)
        projection.components_ = self.components_
        return row_normalize(projection.transform(sp.csr_matrix(tfidf.transform(corpus), dtype=np.float32))
                             .astype(np.float32))

    def _tag_block(self, dataset: Dataset) -> np.ndarray:
        self.tokens_ = np.zeros(0, "<U1")
        self.idf_ = np.zeros(0, np.float32)
        self.components_ = np.zeros((0, 0), np.float32)
        if not dataset.has_tags:
            logger.info("no tags: stage-one artist vectors use popularity and freshness only, and "
                        "similar_artists compares co-listening instead")
            return np.zeros((dataset.n_artists, 0), np.float32)
        # users' tag assignments and artist-level labels (each label row counts as one assignment)
        pairs = [frame[["artist_id", "tag_id"]] for frame in (dataset.tag_assignments, dataset.artist_tags)
                 if frame is not None and len(frame)]
        rows = pd.concat(pairs, ignore_index=True) if len(pairs) > 1 else pairs[0]
        tag_ids, tag_col = np.unique(rows["tag_id"].to_numpy(), return_inverse=True)
        items = dataset.artist_index(rows["artist_id"].to_numpy())
        counts = sp.csr_matrix((np.ones(len(items), np.float32), (items, tag_col)),
                               shape=(dataset.n_artists, len(tag_ids)))
        counts.sum_duplicates()
        tokens, words = self._tag_token_matrix(dataset, tag_ids)
        corpus = sp.csc_matrix(counts @ words)
        # a token used for one artist only cannot make two artists similar; dropping those
        # halves the vocabulary and the projection's cost
        shared = np.diff(corpus.indptr) >= MIN_ARTISTS_PER_TOKEN
        if shared.sum() >= 2:
            corpus, tokens = sp.csr_matrix(corpus[:, shared]), tokens[shared]
        else:
            corpus = sp.csr_matrix(corpus)
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        tfidf = TfidfTransformer(sublinear_tf=True)
        weights = sp.csr_matrix(tfidf.fit_transform(corpus), dtype=np.float32)
        tagged = np.flatnonzero(np.diff(weights.indptr) > 0)
        dim = min(self.tag_dim, weights.shape[1] - 1, len(tagged) - 1)
        block = np.zeros((dataset.n_artists, max(dim, 0)), np.float32)
        if dim < 1:
            logger.info("too little tag data for a tag projection; stage one skips the tag block")
            return block
        svd = TruncatedSVD(dim, algorithm="randomized", n_iter=2, random_state=self.seed)
        block[tagged] = svd.fit_transform(weights[tagged])
        self.tokens_, self.idf_ = tokens, tfidf.idf_.astype(np.float32)
        self.components_ = svd.components_.astype(np.float32)
        return row_normalize(block)

    @staticmethod
    def _tag_token_matrix(dataset: Dataset, tag_ids: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
        """The tokens, and tags x tokens: the words of each tag's text (or its id when it has no text)."""
        from sklearn.feature_extraction.text import CountVectorizer

        texts = pd.Series("", index=tag_ids, dtype=object)
        if dataset.tags is not None:
            given = dataset.tags.set_index("tag_id")["tag"]
            texts = given.reindex(tag_ids).fillna("").astype(str)
        has_words = texts.map(lambda text: bool(_WORD.search(text.lower()))).to_numpy(bool)
        documents = np.where(has_words, texts.to_numpy(dtype=object),
                             np.char.add(_NO_TEXT, tag_ids.astype(str)).astype(object))
        vectorizer = CountVectorizer(analyzer=tag_tokens, binary=True, dtype=np.float32)
        counts = vectorizer.fit_transform(documents)
        return np.asarray(vectorizer.get_feature_names_out(), dtype=str), sp.csr_matrix(counts)

    # the closeness an explanation names when no co-listening model offers one
    because_preference = 10.0

    def similarity_space(self) -> Space:
        """The whole artist vectors by inner product: ``tags`` with a tag block, else ``popularity``."""
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        return Space("tags", 10.0) if self.tag_dim_ > 0 else Space("popularity", 90.0)

    def nearest_artists(self, columns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` artists with the largest inner product of vectors with each of ``columns``."""
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        return nearest(self.vectors_, columns, n, cosine=False)

    def because_vectors(self) -> np.ndarray:
        """The artist vectors."""
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        return self.vectors_

    def search_vectors(self, tag_dim: int = 0) -> np.ndarray:
        """Artist vectors with the tag block cut to its first ``tag_dim`` SVD components.

        The cut block is L2-normalised again; popularity and freshness are kept as they are.
        ``tag_dim`` 0 (or at least the tag block's width) gives :attr:`vectors_` itself.
        """
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        if tag_dim <= 0 or tag_dim >= self.tag_dim_:
            return self.vectors_
        return np.ascontiguousarray(np.hstack([row_normalize(self.vectors_[:, :tag_dim]),
                                               self.vectors_[:, self.tag_dim_:]]), dtype=np.float32)

    def query(self, history: sp.csr_matrix, weighting: str = "log", vectors: np.ndarray | None = None
              ) -> np.ndarray:
        """Unit-norm stage-one queries: the weighted sum of each history row's artist vectors.

        ``vectors`` replaces :attr:`vectors_` (for example :meth:`search_vectors` output).
        """
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        weights = weighted(history, _HISTORY_WEIGHTING[weighting])
        return row_normalize(np.asarray(weights @ (self.vectors_ if vectors is None else vectors)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "vectors_"):
            raise NotFittedError("ArtistEmbedder is not fitted; call fit() first")
        return {"vectors": self.vectors_, "tag_dim": np.array([self.tag_dim_]), "tokens": self.tokens_,
                "idf": self.idf_, "components": self.components_,
                **{f"stats/{k}": v for k, v in self.stats_.items()},
                **{f"scales/{k}": v for k, v in self.scales_.items()}}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> ArtistEmbedder:
        """Restore the state written by :meth:`to_arrays`."""
        self.vectors_ = np.ascontiguousarray(arrays["vectors"], np.float32)
        self.tag_dim_ = int(arrays["tag_dim"][0])
        self.stats_ = {k[len("stats/"):]: np.asarray(v, np.float32) for k, v in arrays.items()
                       if k.startswith("stats/")}
        self.scales_ = {k[len("scales/"):]: np.asarray(v, np.float64) for k, v in arrays.items()
                        if k.startswith("scales/")}
        self.tokens_ = np.asarray(arrays["tokens"], dtype=str)
        self.idf_ = np.asarray(arrays["idf"], np.float32)
        self.components_ = np.asarray(arrays["components"], np.float32)
        return self
