"""Stage one: one contract every candidate source passes, plus embedding behaviour."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import ConfigError, Dataset, NotFittedError
from funnel.candidates import (ALSSource, ArtistEmbedder, EASESource, FriendsSource, PopularitySource,
                               TagSource, drop_seen, merge_candidates)
from funnel.candidates.embeddings import artist_statistics, projection, tfidf
from funnel.factors import ALSFactors

K = 25
SOURCES = {
    "tags": lambda: TagSource(K, embedder=ArtistEmbedder(tag_dim=16)),
    "tags-hnsw": lambda: TagSource(K, embedder=ArtistEmbedder(tag_dim=16), index="hnsw"),
    "tags-ivf": lambda: TagSource(K, embedder=ArtistEmbedder(tag_dim=16), index="ivf"),
    "tags-cut": lambda: TagSource(K, embedder=ArtistEmbedder(tag_dim=16), search_dim=4),
    "als": lambda: ALSSource(K, als=ALSFactors(factors=8, iterations=5)),
    "als-min3": lambda: ALSSource(K, als=ALSFactors(factors=8, iterations=5), min_listeners=3),
    "als-min3-hnsw": lambda: ALSSource(K, als=ALSFactors(factors=8, iterations=5), index="hnsw", min_listeners=3),
    "popularity": lambda: PopularitySource(K),
    "ease": lambda: EASESource(K),
    "friends": lambda: FriendsSource(K),
    "friends-count": lambda: FriendsSource(K, score="count"),
}


@pytest.fixture(params=sorted(SOURCES))
def source(request, synth):
    return SOURCES[request.param]().fit(synth)


def test_source_contract(source, synth):
    users = np.arange(synth.n_users)
    history = synth.matrix
    ids, scores = source.retrieve(users, history)
    assert ids.shape == scores.shape == (synth.n_users, K)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    seen = history.toarray() > 0
    valid = ids >= 0
    assert not seen[np.nonzero(valid)[0], ids[valid]].any(), "returned an artist from the history"
    for row_ids in ids:  # no repeats within a user
        real = row_ids[row_ids >= 0]
        assert len(np.unique(real)) == len(real)
    steps = np.diff(np.where(valid, scores, np.nan), axis=1)  # padding (-inf - -inf) left out below
    assert (steps[valid[:, 1:]] <= 1e-5).all(), "not best first"
    assert np.isneginf(scores[~valid]).all()
    # a new user (-1) with a history row is served through the same call
    new_ids, _ = source.retrieve(np.array([-1]), history[:1])
    assert new_ids.shape == (1, K) and not np.isin(new_ids, history[:1].indices).any()


def test_source_needs_fit():
    for make in SOURCES.values():
        with pytest.raises(NotFittedError):
            make().retrieve(np.array([0]), sp.csr_matrix((1, 3)))


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_als_source_searches_only_artists_with_enough_listeners(synth, index, caplog):
    listeners = np.bincount(synth.matrix.indices, minlength=synth.n_artists)
    als = ALSFactors(factors=8, iterations=5).fit(synth.matrix)
    every = ALSSource(K, als=als, index=index).fit(synth)
    source = ALSSource(K, als=als, index=index, min_listeners=3).fit(synth)
    assert source.index_.ntotal == (listeners >= 3).sum() < synth.n_artists == every.index_.ntotal
    users = np.arange(synth.n_users)
    ids, scores = source.retrieve(users, synth.matrix)
    assert (listeners[ids[ids >= 0]] >= 3).all() and (ids >= 0).sum() > 0.9 * ids.size
    # scores are the inner products of the artists that were found
    user_vectors = als.user_vectors(users, synth.matrix)
    row, col = np.nonzero(ids >= 0)
    exact = np.einsum("ij,ij->i", user_vectors[row], als.item_factors_[ids[row, col]])
    np.testing.assert_allclose(scores[row, col], exact, rtol=1e-3, atol=1e-3)
    with pytest.raises(ConfigError, match="min_listeners"):
        ALSSource(K, als=als, min_listeners=0).fit(synth)
    assert ALSSource(K, als=als, min_listeners=10**6).fit(synth).index_.ntotal == synth.n_artists
    assert "searches every artist" in caplog.text


@pytest.mark.parametrize("score, expected", [("count", [2.0, 1.0]), ("log", np.log1p([2.0, 1.0]))])
def test_friends_source_ranks_by_listening_friends(score, expected):
    plays = pd.DataFrame({"user_id": [1, 2, 2, 3, 3], "artist_id": [30, 10, 20, 10, 30], "weight": 5.0})
    friends = pd.DataFrame({"user_id": [1, 1, 2, 3], "friend_id": [2, 3, 1, 1]})
    data = Dataset.from_frames(plays, friends=friends)
    source = FriendsSource(5, score=score).fit(data)
    users = data.user_index(np.array([1]))
    ids, scores = source.retrieve(users, data.matrix[users])
    # user 1's two friends both play artist 10 and one plays 20; 30 is in user 1's history
    assert data.artist_ids[ids[0, :2]].tolist() == [10, 20] and (ids[0, 2:] == -1).all()
    np.testing.assert_allclose(scores[0, :2], expected, rtol=1e-6)
    with pytest.raises(ConfigError, match="friends score"):
        FriendsSource(5, score="raw").fit(data)


def test_tag_search_finds_the_users_cluster(synth):
    source = TagSource(K, embedder=ArtistEmbedder(tag_dim=16)).fit(synth)
    ids, _ = source.retrieve(np.arange(synth.n_users), synth.matrix)
    cluster = (synth.artist_ids - 1) % 4
    user_cluster = np.array([np.bincount(cluster[row.indices], minlength=4).argmax()
                             for row in synth.matrix])  # test-only loop
    share = (cluster[ids[:, :10]] == user_cluster[:, None]).mean()
    assert share > 0.9


def test_search_vectors_keep_the_strongest_tag_components(synth):
    embedder = ArtistEmbedder(tag_dim=16).fit(synth)
    cut = embedder.search_vectors(4)
    extra = embedder.vectors_.shape[1] - embedder.tag_dim_
    assert cut.shape == (synth.n_artists, 4 + extra) and cut.flags.c_contiguous
    tagged = embedder.stats_["has_tags"].astype(bool)
    np.testing.assert_allclose(np.linalg.norm(cut[tagged, :4], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(cut[:, 4:], embedder.vectors_[:, embedder.tag_dim_:])
    first = embedder.vectors_[:, :4]  # the same directions, only rescaled
    np.testing.assert_allclose(cut[:, :4] * np.linalg.norm(first, axis=1, keepdims=True), first, atol=1e-6)
    assert embedder.search_vectors(0) is embedder.vectors_ and embedder.search_vectors(99) is embedder.vectors_
    source = TagSource(K, embedder=embedder, search_dim=4).fit(synth)
    assert source.index_.d == cut.shape[1]
    for approximate in ("ivf", "hnsw"):  # their lists need the whole tag block
        source = TagSource(K, embedder=embedder, search_dim=4, index=approximate).fit(synth)
        assert source.index_.d == embedder.vectors_.shape[1]
    with pytest.raises(ConfigError, match="search_dim"):
        TagSource(K, embedder=embedder, search_dim=-1).fit(synth)


def test_tfidf_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfTransformer

    counts = sp.random(200, 80, density=0.05, format="csr", random_state=2, dtype=np.float32)
    counts.data = np.ceil(counts.data * 5)
    expected = TfidfTransformer(sublinear_tf=True).fit_transform(counts).toarray()
    np.testing.assert_allclose(tfidf(counts).toarray(), expected, rtol=1e-5, atol=1e-6)


def test_projection_matches_scikit_learn_truncated_svd():
    from sklearn.decomposition import TruncatedSVD

    matrix = sp.random(600, 300, density=0.03, format="csr", random_state=1, dtype=np.float32)
    expected = TruncatedSVD(40, algorithm="randomized", n_iter=2, random_state=3).fit_transform(matrix)
    np.testing.assert_allclose(projection(matrix, 40, seed=3), expected, atol=1e-4)


def test_artists_without_tags_still_have_usable_vectors(synth):
    embedder = ArtistEmbedder(tag_dim=16).fit(synth)
    untagged = ~embedder.stats_["has_tags"].astype(bool)
    assert untagged.sum() >= 5
    assert np.isfinite(embedder.vectors_).all()
    assert (np.linalg.norm(embedder.vectors_[untagged], axis=1) > 0).all()
    assert np.allclose(embedder.vectors_[untagged, :embedder.tag_dim_], 0)


def test_bogus_years_do_not_move_freshness(synth):
    stats = artist_statistics(synth)
    assign = synth.tag_assignments.copy()
    assign.loc[assign.index[:3], "timestamp"] = np.datetime64("1900-01-01")
    moved = artist_statistics(Dataset.from_frames(synth.interactions, synth.artists, synth.tags, assign))
    # without clipping the 1900 dates would make these artists 111 years old
    assert stats["years_since_first_tag"].max() < 7
    assert moved["years_since_first_tag"].max() < 20


def test_lastfm_1956_does_not_poison_freshness(lastfm):
    stats = artist_statistics(lastfm)
    assert lastfm.tag_assignments["timestamp"].dt.year.min() == 1956
    assert stats["years_since_first_tag"].max() < 10


def test_embedder_without_tags_uses_popularity_and_freshness(synth):
    bare = Dataset.from_frames(synth.interactions)
    embedder = ArtistEmbedder(tag_dim=16).fit(bare)
    assert embedder.tag_dim_ == 0 and embedder.vectors_.shape == (bare.n_artists, 4)


def test_drop_seen_pads_and_merge_keeps_source_ranks():
    history = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    ids, scores = drop_seen(np.array([[0, 1, 3, 2], [3, 2, -1, -1]]),
                            np.array([[4, 3, 2, 1], [2, 1, -np.inf, -np.inf]], np.float32), history, 3)
    assert ids.tolist() == [[1, 2, -1], [3, 2, -1]]
    merged = merge_candidates([("a", ids, scores)], 4, extra=[np.array([[1, 2, -1], [0, -1, -1]])])
    assert list(zip(merged.rows, merged.items)) == [(0, 1), (0, 2), (1, 0), (1, 2), (1, 3)]
    assert merged.ranks["a"].tolist() == [1, 2, 4, 2, 1]
    assert merged.scores["a"][2] == 1.0  # missing pair gets the row's lowest score



@pytest.mark.parametrize("mask_cells", [1 << 25, 0])  # a dense mask of the batch, or a search of its entries
def test_in_history_matches_a_set_reference(monkeypatch, mask_cells):
    from funnel.candidates import base

    monkeypatch.setattr(base, "SEEN_MASK_CELLS", mask_cells)
    rng = np.random.default_rng(5)
    history = sp.csr_matrix((rng.random((7, 30)) < 0.3).astype(np.float32))
    ids = rng.integers(-1, 30, size=(7, 12))
    expected = [[j >= 0 and history[r, j] != 0 for j in row] for r, row in enumerate(ids)]
    assert base.in_history(history, ids).tolist() == expected


def test_merge_of_several_sources_matches_a_pair_by_pair_reference():
    rng = np.random.default_rng(3)
    n_rows, n_items = 6, 40
    retrieved = []
    for name, k in [("a", 5), ("b", 8), ("c", 3)]:
        ids = np.stack([rng.permutation(n_items)[:k] for _ in range(n_rows)])
        ids[rng.random(ids.shape) < 0.2] = -1  # padding
        ids = np.stack([np.concatenate([row[row >= 0], row[row < 0]]) for row in ids])
        scores = np.where(ids >= 0, -np.arange(k, dtype=np.float32), -np.inf).astype(np.float32)
        retrieved.append((name, ids, scores))
    merged = merge_candidates(retrieved, n_items)
    pairs = sorted({(r, int(i)) for _, ids, _ in retrieved for r in range(n_rows) for i in ids[r] if i >= 0})
    assert list(zip(merged.rows.tolist(), merged.items.tolist())) == pairs
    for name, ids, scores in retrieved:
        k = ids.shape[1]
        for at, (r, item) in enumerate(pairs):
            listed = np.flatnonzero(ids[r] == item)
            finite = scores[r][np.isfinite(scores[r])]
            rank = listed[0] + 1 if len(listed) else k + 1
            score = scores[r, listed[0]] if len(listed) else (finite.min() if len(finite) else 0.0)
            assert merged.ranks[name][at] == rank and merged.scores[name][at] == score


@pytest.mark.parametrize("n_queries", [3, 40])  # on one thread / on FAISS's BLAS path
def test_exact_search_matches_numpy(n_queries):
    from funnel.candidates.index import build_index, search

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 24)).astype(np.float32)
    ids, scores = search(build_index(vectors), queries, 10)
    every = queries @ vectors.T
    best = np.argsort(-every, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, best)
    np.testing.assert_allclose(scores, np.take_along_axis(every, best, axis=1), rtol=1e-5)


def test_auto_index_is_exact_below_the_threshold_then_ivf():
    from funnel.candidates.index import build_index, resolve_kind

    assert resolve_kind("auto", 99_999, 100_000) == "flat"
    assert resolve_kind("auto", 100_000, 100_000) == "ivf"
    assert resolve_kind("hnsw", 10, 100_000) == "hnsw"
    vectors = np.random.default_rng(0).normal(size=(4_000, 8)).astype(np.float32)
    index = build_index(vectors, "ivf")
    assert index.nlist == int(4 * np.sqrt(4_000)) and index.nprobe == 16
