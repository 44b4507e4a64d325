"""Recommender.update: new plays, listeners and artists into a fitted model, without a refit."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import ConfigError, DataError, Dataset, Recommender
from funnel.batch import Batch
from funnel.data.synthetic import synthetic
from funnel.sparse import most_first
from tests.conftest import SMALL, SYNTH, with_listen_times


@pytest.fixture(scope="module")
def model(synth, small_config) -> Recommender:
    return Recommender(small_config).fit(synth)


@pytest.fixture
def fresh(model) -> Recommender:
    """A copy of the fitted model that a test may update."""
    return copy.deepcopy(model)


def plays(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "artist_id", "weight"])


def test_an_empty_log_changes_nothing(fresh, model):
    empty = pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "artist_id": pd.Series([], dtype="int64")})
    assert fresh.update(empty) is fresh
    assert fresh.fingerprint_ == model.fingerprint_
    pd.testing.assert_frame_equal(fresh.recommend_all(10), model.recommend_all(10))


def test_a_listeners_new_plays_are_known_and_change_their_recommendations(fresh, model):
    user = model.user_ids_[3]
    top = model.recommend(user, n=3)["artist_id"].tolist()
    fresh.update(plays([(user, top[0], 5.0), (user, top[1], 2.0)]))
    after = fresh.recommend(user, n=20)["artist_id"].tolist()
    assert not set(top[:2]) & set(after)  # artists just played are known: never recommended again
    row = np.searchsorted(fresh.user_ids_, user)
    assert fresh.history_[row, np.searchsorted(fresh.artist_ids_, top[0])] == 5.0
    # the ALS vector is implicit's fold-in of the whole new history
    als = fresh.stages_.models_["als"]
    folded = als.user_vectors(Batch(np.array([-1]), fresh.history_[[row]]))
    np.testing.assert_allclose(als.user_factors_[row], folded[0], rtol=1e-4, atol=1e-5)
    # friends' counts are those of the new histories, each row still most listened first
    friends = fresh.stages_.models_["friends"]
    recount = most_first(sp.csr_matrix(friends.friends_ @ (fresh.history_ > 0).astype(np.float32)))
    np.testing.assert_array_equal(friends.counts_.indptr, recount.indptr)
    np.testing.assert_array_equal(friends.counts_.indices, recount.indices)
    np.testing.assert_array_equal(friends.counts_.data, recount.data)
    # another listener's scores move only as much as the artists' counts do
    other = model.user_ids_[50]
    np.testing.assert_allclose(fresh.recommend(other, n=10)["score"], model.recommend(other, n=10)["score"],
                               atol=5e-3)


def test_plays_are_events_a_log_given_twice_counts_twice(fresh, model):
    user, artist = model.user_ids_[0], model.artist_ids_[7]
    before = model.history_[0, 7]
    log = plays([(user, artist, 2.0)])
    fresh.update(log).update(log)
    assert fresh.history_[0, 7] == before + 4.0


def test_a_new_listener_is_learned_like_a_folded_in_history(fresh, model):
    history = list(model.artist_ids_[[3, 5, 8, 13, 21]])
    new_user = int(model.user_ids_.max()) + 10
    fresh.update(plays([(new_user, artist, 1.0) for artist in history]))
    assert new_user in fresh.user_ids_
    known = fresh.recommend(new_user, n=10)
    # no friends, no tags, no listen times: exactly what a history gives at request time
    pd.testing.assert_frame_equal(known, fresh.recommend_for_history(history, n=10), atol=1e-5)


def test_new_listeners_are_appended_in_the_model_rows(fresh, model):
    first = int(model.user_ids_.min()) - 1  # sorts before every user: the id map moves, the model rows do not
    fresh.update(plays([(first, model.artist_ids_[2], 1.0)]))
    assert fresh.user_ids_[0] == first
    assert fresh.model_rows_[0] == len(model.user_ids_) and (fresh.model_rows_[1:] == np.arange(len(model.user_ids_))
                                                             ).all()
    user = model.user_ids_[5]
    np.testing.assert_allclose(fresh.recommend(user, n=10)["score"], model.recommend(user, n=10)["score"], atol=5e-3)


def test_a_new_artist_is_placed_by_its_tags_and_recommended(fresh, model, synth):
    # a release tagged like the artists of one cluster, with no plays
    tagged = synth.tag_assignments.merge(synth.tags, on="tag_id")
    cluster_artist = model.artist_ids_[0]
    texts = tagged.loc[tagged["artist_id"] == cluster_artist, "tag"].unique()[:3]
    new_id = int(model.artist_ids_.max()) + 1
    empty = pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "artist_id": pd.Series([], dtype="int64")})
    fresh.update(empty, artists=pd.DataFrame({"artist_id": [new_id], "name": ["First Day"]}),
                 artist_tags=pd.DataFrame({"artist_id": new_id, "tag": texts}))
    assert fresh.artist_ids_[-1] == new_id and fresh.artist_names_[-1] == "First Day"
    similar = fresh.similar_artists(new_id, n=10)
    assert similar["space"].iloc[0] == "tags" and similar["similarity"].iloc[0] > 0.5
    # its nearest artists' listeners get it from stage one, and the ranker scores it with the
    # factors it borrowed from its neighbours
    near = np.searchsorted(fresh.artist_ids_, similar["artist_id"].to_numpy()[:3])
    listeners = np.unique(fresh.history_[:, near].nonzero()[0])
    column = len(fresh.artist_ids_) - 1
    batch = fresh._batch(listeners, fresh.history_[listeners], fresh._rules(None, None, True))
    cands = fresh.stages_.candidates(batch)
    scores = fresh.ranker_.score(fresh.stages_.features(batch, cands))
    mine = cands.items == column
    assert mine.any() and np.isfinite(scores[mine]).all()
    assert np.abs(fresh.stages_.models_["als"].item_factors_[column]).sum() > 0  # borrowed, not zero
    assert fresh.stages_.models_["svd"].item_bias_[column] != 0
    assert fresh.stages_.models_["embedder"].stats_["log_listeners"][column] == 0
    assert fresh.stages_.models_["popularity"].listeners_[column] == 0


def test_updated_model_round_trips_through_a_save(fresh, model, tmp_path):
    new_user = int(model.user_ids_.max()) + 1
    fresh.update(plays([(model.user_ids_[1], model.artist_ids_[9], 3.0), (new_user, model.artist_ids_[4], 1.0)]),
                 artists=pd.DataFrame({"artist_id": [int(model.artist_ids_.max()) + 1], "name": ["Unplayed"]}))
    path = fresh.save(tmp_path / "model")
    loaded = Recommender.load(path)
    assert loaded.fingerprint_ == fresh.fingerprint_ != model.fingerprint_
    pd.testing.assert_frame_equal(loaded.recommend_all(10), fresh.recommend_all(10), atol=1e-5)
    # and updates again after the load
    loaded.update(plays([(new_user, model.artist_ids_[5], 1.0)]))
    assert loaded.history_[np.searchsorted(loaded.user_ids_, new_user)].nnz == 2


def test_an_artist_side_only_model_updates_its_artist_side(model, tmp_path):
    side = Recommender.load(model.save(tmp_path / "side", artist_side_only=True))
    artist = model.artist_ids_[30]
    listeners_before = side.stages_.models_["popularity"].listeners_[30]
    new_id = int(model.artist_ids_.max()) + 1
    side.update(plays([(1, artist, 2.0), (2, artist, 1.0)]),
                artists=pd.DataFrame({"artist_id": [new_id], "name": ["Release"]}))
    assert len(side.user_ids_) == 0 and side.history_.shape == (0, len(model.artist_ids_) + 1)
    assert side.stages_.models_["popularity"].listeners_[30] == listeners_before + 2
    ranked = side.recommend_for_history(list(model.artist_ids_[:5]), n=5)
    assert len(ranked) == 5
    again = Recommender.load(side.save(tmp_path / "side"))
    assert again.artist_ids_[-1] == new_id


def test_listen_times_move_now_forward_and_weigh_new_plays(small_config):
    timed = with_listen_times(synthetic(**SYNTH))
    model = Recommender(small_config).fit(timed)
    times = model.stages_.models_["listen_times"]
    now = times.now_
    user, artist = model.user_ids_[0], model.artist_ids_[model.history_[0].indices[0]]
    later = pd.Timestamp(now) + pd.Timedelta(days=30)
    model.update(pd.DataFrame({"user_id": [user], "artist_id": [artist], "timestamp": [later]}))
    assert times.now_ == later.to_datetime64()
    column = np.searchsorted(model.artist_ids_, artist)
    assert times.weights_[0, column] == pytest.approx(1.0)
    assert times.log_idle_days_[column] == pytest.approx(0.0)
    assert np.isfinite(times.trend_).all()
    # everyone else's plays grew 30 days older
    other = model.history_[1].indices[0]
    assert times.weights_[1, other] < 1.0


def test_a_catalogue_with_never_played_artists_recommends_them(small_config, synth):
    artists = pd.concat([synth.artists, pd.DataFrame({"artist_id": [10_001, 10_002], "name": ["A", "B"]})])
    labels = synth.tag_assignments.merge(synth.tags, on="tag_id")
    first = labels.loc[labels["artist_id"] == synth.artist_ids[0], "tag"].unique()[:3]
    extra = pd.DataFrame({"artist_id": [10_001] * len(first) + [10_002] * len(first), "tag": [*first, *first]})
    data = Dataset.from_frames(synth.interactions, artists, synth.tags, synth.tag_assignments, synth.friends,
                               artist_tags=extra)
    model = Recommender(small_config).fit(data)
    top = model.recommend_all(20)
    assert top["artist_id"].isin([10_001, 10_002]).any()


def test_bad_updates_are_refused(fresh, model):
    with pytest.raises(DataError, match="user ids do not match the model's"):
        fresh.update(plays([("someone", model.artist_ids_[0], 1.0)]))
    with pytest.raises(DataError, match="weight"):
        fresh.update(plays([(model.user_ids_[0], model.artist_ids_[0], -1.0)]))
    with pytest.raises(DataError, match="column"):
        fresh.update(pd.DataFrame({"user": [1]}))
    assert fresh.fingerprint_ == model.fingerprint_


def test_models_that_cannot_be_updated_say_why(synth):
    weighted = Recommender(**SMALL, recency_half_life_days=30).fit(with_listen_times(synth))
    with pytest.raises(ConfigError, match="recency_half_life_days"):
        weighted.update(plays([(weighted.user_ids_[0], weighted.artist_ids_[0], 1.0)]))


def test_biased_svd_solves_new_listeners_the_same_in_chunks(model, synth, monkeypatch):
    from funnel.factors import svd

    part = model.stages_.models_["svd"]
    whole = part._user_vectors(Batch(np.full(synth.n_users, -1), synth.matrix))
    monkeypatch.setattr(svd, "FOLD_IN_CELLS", 81 * 37)  # a few listeners per chunk
    chunked = part._user_vectors(Batch(np.full(synth.n_users, -1), synth.matrix))
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_sampled_fit_keeps_outside_listeners_folded_in_and_learns_new_ones(synth):
    sampled = Recommender(**SMALL, fit_users=60).fit(synth)
    outside = sampled.user_ids_[sampled.model_rows_ < 0][0]
    inside = sampled.user_ids_[sampled.model_rows_ >= 0][0]
    new = int(sampled.user_ids_.max()) + 5
    sampled.update(plays([(outside, sampled.artist_ids_[1], 1.0), (inside, sampled.artist_ids_[2], 1.0),
                          (new, sampled.artist_ids_[3], 1.0)]))
    rows = sampled.model_rows_[np.searchsorted(sampled.user_ids_, [outside, inside, new])]
    assert rows[0] == -1 and rows[1] >= 0 and rows[2] == 60
    assert sampled.stages_.models_["als"].user_factors_.shape[0] == 61
    assert sampled.artist_ids_[1] not in set(sampled.recommend(outside, n=20)["artist_id"])
