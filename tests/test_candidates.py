"""Stage one: the built-in sources in their variants, the artist embedding, and the shared helpers.

The contract every registered source passes (shapes, order, padding, saved state) is in
tests/test_contracts.py; this file checks the variants of the built-in sources and known answers.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import ArtifactError, ConfigError, Dataset, FunnelConfig, NotFittedError, Recommender
from funnel.batch import Batch
from funnel.candidates import (
    ALSSource,
    EASESource,
    FriendsSource,
    PopularitySource,
    TagSource,
    drop_seen,
    merge_candidates,
    top_k_ordered,
    top_k_unseen,
)
from funnel.factors import EASE, ALSFactors, ArtistEmbedder, FriendListening, PopularityChart, artist_statistics
from funnel.protocols import PartContext

K = 25
SOURCES = {
    "tags": lambda m: TagSource(K, m["embedder"]),
    "tags-hnsw": lambda m: TagSource(K, m["embedder"], index="hnsw"),
    "tags-ivf": lambda m: TagSource(K, m["embedder"], index="ivf"),
    "tags-cut": lambda m: TagSource(K, m["embedder"], search_dim=4),
    "als": lambda m: ALSSource(K, m["als"]),
    "als-min3": lambda m: ALSSource(K, m["als"], min_listeners=3),
    "als-min3-hnsw": lambda m: ALSSource(K, m["als"], index="hnsw", min_listeners=3),
    "popularity": lambda m: PopularitySource(K, m["popularity"]),
    "ease": lambda m: EASESource(K, m["ease"]),
    "friends": lambda m: FriendsSource(K, m["friends"]),
}


@pytest.fixture(scope="module")
def models(synth):
    return {"embedder": ArtistEmbedder(tag_dim=16).fit(synth), "als": ALSFactors(factors=8, iterations=5).fit(synth),
            "popularity": PopularityChart().fit(synth), "ease": EASE().fit(synth),
            "friends": FriendListening().fit(synth)}


@pytest.fixture(params=sorted(SOURCES))
def source(request, synth, models):
    return SOURCES[request.param](models).fit(synth)


def every_user(dataset: Dataset) -> Batch:
    return Batch(np.arange(dataset.n_users), dataset.matrix)


def test_source_variants_keep_the_contract(source, synth):
    history = synth.matrix
    ids, scores = source.retrieve(every_user(synth))
    assert ids.shape == scores.shape == (synth.n_users, K)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    seen = history.toarray() > 0
    valid = ids >= 0
    assert valid.mean() > 0.5, "the source found hardly anything"
    assert not seen[np.nonzero(valid)[0], ids[valid]].any(), "returned an artist from the history"
    for row_ids in ids:  # no repeats within a user
        real = row_ids[row_ids >= 0]
        assert len(np.unique(real)) == len(real)
    steps = np.diff(np.where(valid, scores, np.nan), axis=1)  # padding (-inf - -inf) left out below
    assert (steps[valid[:, 1:]] <= 1e-5).all(), "not best first"
    assert np.isneginf(scores[~valid]).all() and np.isfinite(scores[valid]).all()
    # a new listener (-1) with a history row is served through the same call
    new_ids, _ = source.retrieve(Batch(np.array([-1]), history[:1]))
    assert new_ids.shape == (1, K) and not np.isin(new_ids, history[:1].indices).any()
    assert (new_ids >= 0).any() == (source.name != "friends")  # a new listener has no friends in the data


def test_sources_need_fitting(synth, models):
    batch = Batch(np.array([0]), synth.matrix[:1])
    for name in ("tags", "tags-cut", "als", "als-min3"):  # their index is built by fit
        with pytest.raises(NotFittedError):
            SOURCES[name](models).retrieve(batch)
    # the other sources read the shared models, which must be fitted
    for source in (EASESource(K, EASE()), FriendsSource(K, FriendListening()), PopularitySource(K, PopularityChart()),
                   ALSSource(K, ALSFactors())):
        with pytest.raises(NotFittedError):
            source.fit(synth).retrieve(batch)
    with pytest.raises(NotFittedError):
        TagSource(K, ArtistEmbedder()).fit(synth)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_als_source_searches_only_artists_with_enough_listeners(synth, models, index, caplog):
    listeners = np.bincount(synth.matrix.indices, minlength=synth.n_artists)
    als = models["als"]
    every = ALSSource(K, als, index=index).fit(synth)
    source = ALSSource(K, als, index=index, min_listeners=3).fit(synth)
    assert source.index_.ntotal == (listeners >= 3).sum() < synth.n_artists == every.index_.ntotal
    batch = every_user(synth)
    ids, scores = source.retrieve(batch)
    assert (listeners[ids[ids >= 0]] >= 3).all() and (ids >= 0).sum() > 0.9 * ids.size
    # scores are the inner products of the artists that were found
    user_vectors = als.user_vectors(batch)
    row, col = np.nonzero(ids >= 0)
    exact = np.einsum("ij,ij->i", user_vectors[row], als.item_factors_[ids[row, col]])
    np.testing.assert_allclose(scores[row, col], exact, rtol=1e-3, atol=1e-3)
    assert ALSSource(K, als, min_listeners=10**6).fit(synth).index_.ntotal == synth.n_artists
    assert "searches every artist" in caplog.text


def test_source_settings_are_checked_by_their_class():
    with pytest.raises(ConfigError, match=r"candidates entry 'als' \(als\): setting min_listeners"):
        Recommender(candidates={"als": {"min_listeners": 0}})
    with pytest.raises(ConfigError, match="candidates entry 'tags' .*search_dim"):
        Recommender(candidates={"tags": {"search_dim": -1}})
    with pytest.raises(ConfigError, match="unknown setting 'search_dim'"):
        Recommender(candidates={"als": {"search_dim": 4}})
    with pytest.raises(ConfigError, match="at least 1 candidate"):
        FunnelConfig(candidates={"tags": 0})


def test_sources_are_built_from_their_settings(synth, models):
    context = PartContext(models, seed=0)
    tags = TagSource.from_config(TagSource.Settings(n=7, search_dim=4, index="flat"), context)
    als = ALSSource.from_config(ALSSource.Settings(n=8, min_listeners=3), context)
    assert (tags.n_candidates, tags.search_dim, tags.index, tags.embedder) == (7, 4, "flat", models["embedder"])
    assert (als.n_candidates, als.min_listeners, als.als) == (8, 3, models["als"])


def test_friends_source_ranks_by_listening_friends():
    plays = pd.DataFrame({"user_id": [1, 2, 2, 3, 3], "artist_id": [30, 10, 20, 10, 30], "weight": 5.0})
    friends = pd.DataFrame({"user_id": [1, 1, 2, 3], "friend_id": [2, 3, 1, 1]})
    data = Dataset.from_frames(plays, friends=friends)
    source = FriendsSource(5, FriendListening().fit(data)).fit(data)
    users = data.user_index(np.array([1]))
    ids, scores = source.retrieve(Batch(users, data.matrix[users]))
    # user 1's two friends both play artist 10 and one plays 20; 30 is in user 1's history
    assert data.artist_ids[ids[0, :2]].tolist() == [10, 20] and (ids[0, 2:] == -1).all()
    np.testing.assert_allclose(scores[0, :2], np.log1p([2.0, 1.0]), rtol=1e-6)
    assert np.isneginf(scores[0, 2:]).all()
    # a new listener has no friends in the data, so nothing
    new_ids, _ = source.retrieve(Batch(np.array([-1]), data.matrix[users]))
    assert (new_ids == -1).all()


def test_popularity_source_is_the_chart_without_the_history():
    plays = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 4], "artist_id": [10, 20, 10, 30, 10, 20, 40],
                          "weight": [1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0]})
    data = Dataset.from_frames(plays)
    source = PopularitySource(3, PopularityChart().fit(data)).fit(data)
    users = data.user_index(np.array([1, 4]))
    ids, scores = source.retrieve(Batch(users, data.matrix[users]))
    # listeners: 10 three, 20 two, 30 and 40 one each (30 first: the tie goes by plays, then index)
    assert data.artist_ids[ids[0, :2]].tolist() == [30, 40] and ids[0, 2] == -1
    assert data.artist_ids[ids[1]].tolist() == [10, 20, 30]
    np.testing.assert_allclose(scores[1], np.log1p([3.0, 2.0, 1.0]), rtol=1e-6)


def test_tag_search_finds_the_users_cluster(synth, models):
    source = TagSource(K, models["embedder"]).fit(synth)
    ids, _ = source.retrieve(every_user(synth))
    cluster = (synth.artist_ids - 1) % 4
    user_cluster = np.array([np.bincount(cluster[row.indices], minlength=4).argmax()
                             for row in synth.matrix])  # test-only loop
    share = (cluster[ids[:, :10]] == user_cluster[:, None]).mean()
    assert share > 0.9


def test_similar_excludes_the_artist_itself(synth, models):
    source = TagSource(K, models["embedder"]).fit(synth)
    many_ids, many_scores = source.nearest_artists(np.array([0, 7, 0]), 10)
    assert many_ids.shape == many_scores.shape == (3, 10)
    np.testing.assert_array_equal(many_ids[0], many_ids[2])
    vectors = source.search_vectors
    for row, column in enumerate([0, 7]):
        ids, scores = many_ids[row], many_scores[row]
        assert (ids >= 0).all() and column not in ids.tolist()
        np.testing.assert_allclose(scores, vectors[ids] @ vectors[column], rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(scores) <= 1e-6)
    ids, _ = source.nearest_artists(np.array([0]), synth.n_artists)  # more than there are other artists: padded
    assert ids.shape == (1, synth.n_artists) and (ids[0, :-1] >= 0).all() and ids[0, -1] == -1


def test_search_vectors_keep_the_strongest_tag_components(synth, models):
    embedder = models["embedder"]
    cut = embedder.search_vectors(4)
    extra = embedder.vectors_.shape[1] - embedder.tag_dim_
    assert cut.shape == (synth.n_artists, 4 + extra) and cut.flags.c_contiguous
    tagged = embedder.stats_["has_tags"].astype(bool)
    np.testing.assert_allclose(np.linalg.norm(cut[tagged, :4], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(cut[:, 4:], embedder.vectors_[:, embedder.tag_dim_:])
    first = embedder.vectors_[:, :4]  # the same directions, only rescaled
    np.testing.assert_allclose(cut[:, :4] * np.linalg.norm(first, axis=1, keepdims=True), first, atol=1e-6)
    assert embedder.search_vectors(0) is embedder.vectors_ and embedder.search_vectors(99) is embedder.vectors_
    source = TagSource(K, embedder, search_dim=4).fit(synth)
    assert source.index_.d == cut.shape[1]
    for approximate in ("ivf", "hnsw"):  # their lists need the whole tag block
        source = TagSource(K, embedder, search_dim=4, index=approximate).fit(synth)
        assert source.index_.d == embedder.vectors_.shape[1]


def test_artists_of_one_cluster_share_tag_directions(synth, models):
    embedder = models["embedder"]
    tagged = np.flatnonzero(embedder.stats_["has_tags"] > 0)
    cluster = (synth.artist_ids[tagged] - 1) % 4
    block = embedder.vectors_[tagged, :embedder.tag_dim_]
    np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-5)
    cosine = block @ block.T
    same = cluster[:, None] == cluster[None, :]
    assert cosine[same].mean() > 0.5 > cosine[~same].mean() + 0.3


def test_artists_without_tags_still_have_usable_vectors(models):
    embedder = models["embedder"]
    untagged = ~embedder.stats_["has_tags"].astype(bool)
    assert untagged.sum() >= 5
    assert np.isfinite(embedder.vectors_).all()
    assert (np.linalg.norm(embedder.vectors_[untagged], axis=1) > 0).all()
    assert np.allclose(embedder.vectors_[untagged, :embedder.tag_dim_], 0)


def test_embedder_state_round_trips(synth, models):
    embedder = models["embedder"]
    restored = ArtistEmbedder(tag_dim=16).set_arrays({k: v.copy() for k, v in embedder.to_arrays().items()})
    assert restored.tag_dim_ == embedder.tag_dim_ and restored.stats_.keys() == embedder.stats_.keys()
    np.testing.assert_array_equal(restored.vectors_, embedder.vectors_)
    np.testing.assert_allclose(restored.query(synth.matrix[:5]), embedder.query(synth.matrix[:5]), rtol=1e-6)


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
    assert not TagSource(K, embedder).available()


def test_drop_seen_pads_and_merge_keeps_source_ranks():
    history = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    ids, scores = drop_seen(np.array([[0, 1, 3, 2], [3, 2, -1, -1]]),
                            np.array([[4, 3, 2, 1], [2, 1, -np.inf, -np.inf]], np.float32),
                            Batch(np.arange(2), history), 3)
    assert ids.tolist() == [[1, 2, -1], [3, 2, -1]]
    assert scores.tolist() == [[3, 1, -np.inf], [2, 1, -np.inf]]
    merged = merge_candidates([("a", ids, scores)], 4, extra=[np.array([[1, 2, -1], [0, -1, -1]])])
    assert list(zip(merged.rows, merged.items)) == [(0, 1), (0, 2), (1, 0), (1, 2), (1, 3)]
    assert merged.ranks["a"].tolist() == [1, 2, 4, 2, 1]
    assert merged.scores["a"][2] == 1.0  # missing pair gets the row's lowest score


def test_top_k_unseen_of_a_dense_score_matrix():
    history = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    item_ids = np.array([1, 2, 4, 5])  # the artists the columns score
    scores = np.array([[9.0, 1.0, 3.0, 8.0], [0.5, 2.0, 1.0, 4.0]], np.float32)
    batch = Batch(np.arange(2), history)
    ids, top = top_k_unseen(scores, item_ids, batch, 3)
    assert ids.tolist() == [[4, 2, -1], [5, 2, 4]]  # artists 1 and 5 are in row 0's history
    assert top.tolist() == [[3.0, 1.0, -np.inf], [4.0, 2.0, 1.0]]
    wide, _ = top_k_unseen(scores, item_ids, batch, 6)  # more than there are columns
    assert wide.shape == (2, 6) and wide[1].tolist() == [5, 2, 4, 1, -1, -1]
    blocked = np.zeros(6, bool)
    blocked[5] = True  # excluded for everyone
    ids, _ = top_k_unseen(scores, item_ids, Batch(np.arange(2), history, blocked_items=blocked), 3)
    assert ids.tolist() == [[4, 2, -1], [2, 4, 1]]
    known = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], np.float32))
    ids, _ = top_k_unseen(scores, item_ids, Batch(np.arange(2), history, known=known), 3)
    assert ids.tolist() == [[1, 5, 4], [5, 4, 1]]  # the known artists replace the history


def test_top_k_ordered_reads_the_leading_entries_of_each_row():
    # rows store their entries best first, as FriendListening.counts_ does
    scores = sp.csr_matrix((np.array([5, 4, 2, 7], np.float32), np.array([3, 0, 2, 1]), np.array([0, 3, 4])),
                           shape=(2, 5))
    history = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], np.float32))
    ids, top = top_k_ordered(scores, Batch(np.arange(2), history), 2)
    assert ids.tolist() == [[3, 2], [-1, -1]]
    assert top.tolist() == [[5.0, 2.0], [-np.inf, -np.inf]]


@pytest.mark.parametrize("mask_cells", [1 << 25, 0])  # a dense mask of the batch, or a search of its entries
def test_excluded_matches_a_set_reference(monkeypatch, mask_cells):
    import funnel.batch

    monkeypatch.setattr(funnel.batch, "SEEN_MASK_CELLS", mask_cells)
    rng = np.random.default_rng(5)
    history = sp.csr_matrix((rng.random((7, 30)) < 0.3).astype(np.float32))
    ids = rng.integers(-1, 30, size=(7, 12))
    expected = [[j >= 0 and history[r, j] != 0 for j in row] for r, row in enumerate(ids)]
    assert Batch(np.arange(7), history).excluded(ids).tolist() == expected
    blocked = rng.random(30) < 0.2
    expected = [[j >= 0 and (history[r, j] != 0 or blocked[j]) for j in row] for r, row in enumerate(ids)]
    assert Batch(np.arange(7), history, blocked_items=blocked).excluded(ids).tolist() == expected


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


def test_search_of_a_subset_returns_artist_indices_and_pads():
    from funnel.candidates.index import build_index, search

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(50, 6)).astype(np.float32)
    subset = np.array([3, 10, 11, 40])
    for kind in ("flat", "hnsw"):
        ids, scores = search(build_index(vectors, kind, ids=subset), vectors[:2], 6)
        assert ids.shape == (2, 4)  # k is capped at the indexed vectors
        assert set(ids[0].tolist()) == set(subset.tolist())
        np.testing.assert_allclose(scores, np.take_along_axis(vectors[:2] @ vectors.T, ids, axis=1), rtol=1e-5)


def test_index_bytes_round_trip_and_a_broken_file_is_refused():
    from funnel.candidates.index import build_index, index_bytes, index_from_bytes, search

    vectors = np.random.default_rng(4).normal(size=(100, 8)).astype(np.float32)
    index = build_index(vectors)
    again = index_from_bytes(index_bytes(index))
    ids, scores = search(index, vectors[:5], 7)
    ids2, scores2 = search(again, vectors[:5], 7)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)
    with pytest.raises(ArtifactError, match="the test index is not a readable FAISS index"):
        index_from_bytes(b"not an index", "the test index")


def test_faiss_blas_threshold_is_lowered_never_raised():
    import faiss

    from funnel.candidates.index import BLAS_QUERIES, build_index, use_blas_for_batches

    before = faiss.cvar.distance_compute_blas_threshold
    try:
        faiss.cvar.distance_compute_blas_threshold = 128_000
        build_index(np.eye(4, dtype=np.float32))
        assert faiss.cvar.distance_compute_blas_threshold == BLAS_QUERIES
        faiss.cvar.distance_compute_blas_threshold = 4  # someone set it lower: left alone
        use_blas_for_batches()
        assert faiss.cvar.distance_compute_blas_threshold == 4
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def test_auto_index_is_exact_below_the_threshold_then_ivf():
    from funnel.candidates.index import build_index, resolve_kind

    assert resolve_kind("auto", 99_999, 100_000) == "flat"
    assert resolve_kind("auto", 100_000, 100_000) == "ivf"
    assert resolve_kind("hnsw", 10, 100_000) == "hnsw"
    vectors = np.random.default_rng(0).normal(size=(4_000, 8)).astype(np.float32)
    index = build_index(vectors, "ivf")
    assert index.nlist == int(4 * np.sqrt(4_000)) and index.nprobe == 16
