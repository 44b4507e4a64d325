"""Data as a streaming service has it: string and UUID ids, listen times, artist labels, business rules."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from funnel import ConfigError, DataError, Dataset, Recommender, UnknownUserError, split
from funnel.data.ids import lookup_ids
from funnel.factors import ListenTimes
from tests.conftest import with_listen_times, with_string_ids


def mbid(i: int) -> str:
    return str(uuid.UUID(int=(i * 2654435761) % (1 << 128)))


@pytest.fixture(scope="module")
def string_data(synth):
    return with_string_ids(synth, mbid)


@pytest.fixture(scope="module")
def string_model(string_data, small_config):
    return Recommender(small_config).fit(string_data)


def test_string_ids_fit_save_load_and_recommend_with_the_callers_ids(string_data, string_model, fitted, tmp_path):
    assert string_data.user_ids.dtype.kind == "U" and string_data.artist_ids.dtype.kind == "U"
    user = "user_00002@example"
    recs = string_model.recommend(user, n=10)
    assert all(isinstance(a, str) and uuid.UUID(a) for a in recs["artist_id"])
    loaded = Recommender.load(string_model.save(tmp_path / "model"))
    assert loaded.user_ids_.dtype == string_model.user_ids_.dtype
    np.testing.assert_array_equal(loaded.user_ids_, string_model.user_ids_)
    np.testing.assert_array_equal(loaded.artist_ids_, string_model.artist_ids_)
    pd.testing.assert_frame_equal(loaded.recommend(user, n=10), recs)
    every = loaded.recommend_all(n=5)
    assert set(every["user_id"]) == set(string_data.user_ids.tolist())
    assert all(isinstance(u, str) for u in every["user_id"])
    # the same model on integer ids ranks the same artists: ids are labels, nothing more
    ints = fitted.recommend(2, n=10)
    assert recs["artist_id"].tolist() == [mbid(a) for a in ints["artist_id"]]
    np.testing.assert_allclose(recs["score"], ints["score"], rtol=1e-4, atol=1e-5)
    history = dict(zip(recs["artist_id"][:3], [10, 5, 1]))
    new = loaded.recommend_for_history(history, n=5, explain=True)
    assert not set(history) & set(new["artist_id"]) and all(isinstance(a, str) for a in new["because_ids"].sum())
    similar = loaded.similar_artists([mbid(1), mbid(5)], n=3)
    assert similar["query_artist_id"].tolist() == [mbid(1)] * 3 + [mbid(5)] * 3


def test_a_wrong_id_type_is_a_config_error_and_an_unknown_id_an_unknown_user(string_model, fitted):
    with pytest.raises(ConfigError, match=r"user ids of this model are strings; got \[2\] \(int\)"):
        string_model.recommend(2)
    with pytest.raises(ConfigError, match="user ids of this model are integers; got \\['2'\\]"):
        fitted.recommend("2")
    with pytest.raises(ConfigError, match="user ids of this model are strings"):
        string_model.recommend(users=["user_00002@example", 3])
    with pytest.raises(UnknownUserError, match="unknown user id.*'nobody'"):
        string_model.recommend("nobody")
    with pytest.raises(DataError, match="history artist ids of this model are strings"):
        string_model.recommend_for_history([1, 2])
    with pytest.raises(ConfigError, match="artist ids of this model are strings"):
        string_model.similar_artists(5)
    with pytest.raises(ConfigError, match="users="):
        string_model.recommend(["user_00002@example"])


def test_uuid_objects_become_their_strings_and_lookup_takes_them():
    ids = [uuid.UUID(int=i + 1) for i in range(4)]
    data = Dataset.from_frames(pd.DataFrame({"user_id": ["a", "a", "b", "b"], "artist_id": ids, "weight": 1.0}))
    assert data.artist_ids.tolist() == sorted(str(i) for i in ids)
    assert lookup_ids(data.artist_ids, [ids[2], str(ids[0]), 7, None]).tolist() == [2, 0, -1, -1]


@pytest.mark.parametrize("frames, message", [
    (dict(interactions=pd.DataFrame({"user_id": ["a", 2], "artist_id": [1, 2], "weight": 1.0})),
     r"interactions column 'user_id' holds ids of mixed types: row 0 has str 'a', row 1 has int 2"),
    (dict(interactions=pd.DataFrame({"user_id": ["a", None], "artist_id": [1, 2], "weight": 1.0})),
     r"'user_id' has 1 empty \(null\) id\(s\), first at row 1; drop those rows"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": [1], "weight": 1.0}),
          friends=pd.DataFrame({"user_id": [1], "friend_id": [2]})),
     r"user ids must be of one type in every frame, but interactions user_id holds strings, friends user_id "
     r"holds integers"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": [1], "weight": 1.0}),
          artist_tags=pd.DataFrame({"artist_id": ["x"], "tag": ["rock"]})),
     r"artist ids must be of one type.*interactions artist_id holds integers, artist_tags artist_id holds strings"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": ["x"], "weight": [1e308]})),
     r"'weight' must be a finite number > 0 and <= 1e\+30"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": ["x"], "weight": 1.0,
                                     "first_listen": pd.to_datetime(["2030-01-01"]),
                                     "last_listen": pd.to_datetime(["2099-01-01"])})),
     r"'first_listen' has 1 time\(s\) in the future, first 2030-01-01"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": ["x"], "weight": 1.0,
                                     "first_listen": ["yesterday"], "last_listen": ["today"]})),
     r"'first_listen' must be datetime64 \(got (object|str)\); convert it with pandas.to_datetime"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": ["x"], "weight": 1.0,
                                     "first_listen": pd.to_datetime(["2024-02-01"]),
                                     "last_listen": pd.to_datetime(["2024-01-01"])})),
     r"row 0 has first_listen after last_listen"),
    (dict(interactions=pd.DataFrame({"user_id": ["a"], "artist_id": ["x"], "weight": 1.0,
                                     "first_listen": pd.to_datetime(["2024-02-01"])})),
     r"interactions have 'first_listen' but not \['last_listen'\]"),
])
def test_bad_real_data_gets_a_funnel_error_naming_the_column(frames, message):
    with pytest.raises(DataError, match=message):
        Dataset.from_frames(**frames)


def test_history_play_counts_beyond_float32_are_refused(fitted):
    with pytest.raises(DataError, match=r"finite numbers > 0 and <= 1e\+30"):
        fitted.recommend_for_history({1: 1e308})


# business rules ----------------------------------------------------------------------
def test_exclude_allow_and_filter_known(fitted, synth):
    user = int(synth.user_ids[0])
    top = fitted.recommend(user, n=10)
    banned = top["artist_id"][:3].tolist()
    again = fitted.recommend(user, n=10, exclude=banned)
    assert not set(banned) & set(again["artist_id"]) and len(again) == 10
    assert again["artist_id"][:7].tolist() == top["artist_id"][3:].tolist()
    allowed = synth.artist_ids[::7].tolist()  # 35 artists, far from where stage one looks
    only = fitted.recommend(user, n=10, allow=allowed)
    known = set(synth.artist_ids[synth.known_matrix()[0].indices].tolist())
    assert len(only) == 10 and set(only["artist_id"]) <= set(allowed) - known
    tiny = fitted.recommend(user, n=10, allow=allowed[:4] + [10**9])
    assert set(tiny["artist_id"]) == set(allowed[:4]) - known  # fewer than n: the allow-list is short
    relisten = fitted.recommend(user, n=fitted.artist_ids_.size, filter_known=False)
    assert known <= set(relisten["artist_id"])
    many = fitted.recommend(users=synth.user_ids[:3].tolist(), n=5, exclude=banned)
    assert many["user_id"].nunique() == 3 and not set(banned) & set(many["artist_id"])
    history = fitted.recommend_for_history([1, 5, 9], n=5, allow=allowed)
    assert set(history["artist_id"]) <= set(allowed) - {1, 5, 9}


def test_exclude_per_user_in_batch(fitted, synth):
    users = synth.user_ids[:2].tolist()
    top = fitted.recommend_all(n=5, users=users)
    first_of = top[top["rank"] == 1].set_index("user_id")["artist_id"]
    frame = pd.DataFrame({"user_id": users, "artist_id": [first_of[users[0]], first_of[users[1]]]})
    again = fitted.recommend_all(n=5, users=users, exclude=frame)
    for u in users:
        got = again[again["user_id"] == u]["artist_id"].tolist()
        assert first_of[u] not in got
        assert got[:4] == top[top["user_id"] == u]["artist_id"].tolist()[1:]


@pytest.mark.parametrize("kwargs, message", [
    (dict(exclude="abc"), "exclude must be a list of artist ids"),
    (dict(exclude=["x"]), r"exclude: artist ids of this model are integers; got \['x'\]"),
    (dict(allow=[10**9]), "allow names no artist of this model's catalogue"),
    (dict(filter_known="no"), "filter_known='no' must be True or False"),
    (dict(exclude=pd.DataFrame({"user_id": [2], "artist_id": [1]})), "per-user exclude frame needs a call for "
                                                                      "several users"),
])
def test_malformed_rules_are_config_errors(fitted, synth, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        if isinstance(kwargs.get("exclude"), pd.DataFrame):
            fitted.recommend_for_history([1, 2], **kwargs)
        else:
            fitted.recommend(int(synth.user_ids[0]), **kwargs)


def test_tagged_artists_are_known_unless_configured_otherwise(synth, fitted, small_config):
    tagged_only = fitted.tagged_
    assert tagged_only is not None and tagged_only.nnz > 0
    row = int(np.flatnonzero(np.diff(tagged_only.indptr))[0])
    artist = synth.artist_ids[tagged_only[row].indices[0]]
    user = synth.user_ids[row]
    assert artist not in fitted.recommend(user, n=synth.n_artists)["artist_id"].tolist()
    assert artist in fitted.recommend(user, n=synth.n_artists, filter_known=False)["artist_id"].tolist()
    loose = Recommender(small_config, tagged_known=False).fit(synth)
    assert loose.tagged_ is None
    assert artist in loose.recommend(user, n=synth.n_artists)["artist_id"].tolist()


# artist labels and co-listening spaces -------------------------------------------------
def test_artist_level_labels_feed_the_tag_embedding(synth, small_config):
    clusters = (synth.artist_ids - 1) % 4  # synthetic's planted artist clusters
    labels = pd.DataFrame({"artist_id": synth.artist_ids, "tag": [f"genre {c}" for c in clusters]})
    data = Dataset.from_frames(synth.interactions, artist_tags=labels)
    assert data.tag_assignments is None and data.has_tags and len(data.artist_tags) == synth.n_artists
    model = Recommender(small_config).fit(data)
    assert model.stages_.models_["embedder"].tag_dim_ > 0 and "tags" in model.stages_.source_names
    similar = model.similar_artists(1, n=10)
    assert (similar["space"] == "tags").all() and ((similar["artist_id"] - 1) % 4 == 0).mean() >= 0.9


def test_similar_artists_without_tags_uses_co_listening(synth, small_config):
    data = Dataset.from_frames(synth.interactions)
    model = Recommender(small_config).fit(data)
    similar = model.similar_artists([1, 2], n=10)
    assert (similar["space"] == "als").all()
    hits = ((similar["artist_id"] - 1) % 4 == (similar["query_artist_id"] - 1) % 4).mean()
    assert hits >= 0.6  # chance is 0.25


# listen times ------------------------------------------------------------------------
def timed_frame() -> pd.DataFrame:
    day = pd.Timestamp("2024-01-01")
    firsts = [0, 1, 2, 3, 4, 0, 5, 9, 2, 7]
    return pd.DataFrame({
        "user_id": ["u"] * 5 + ["v"] * 5, "artist_id": list("abcde") + list("abcde"), "weight": 2.0,
        "first_listen": [day + pd.Timedelta(days=d) for d in firsts],
        "last_listen": [day + pd.Timedelta(days=d + 1) for d in firsts]})


def test_temporal_split_holds_out_what_each_user_started_last():
    data = Dataset.from_frames(timed_frame())
    train, test = split.temporal(data, test_fraction=0.4, min_artists=5)
    assert sorted(map(tuple, test[["user_id", "artist_id"]].to_numpy().tolist())) == [
        ("u", "d"), ("u", "e"), ("v", "c"), ("v", "e")]
    assert len(train.interactions) == 6
    with pytest.raises(DataError, match="temporal split needs listen times"):
        split.temporal(Dataset.from_frames(timed_frame().drop(columns=["first_listen", "last_listen"])))


def test_recency_weighting_halves_plays_per_half_life():
    data = Dataset.from_frames(timed_frame()).recency_weighted(half_life_days=4.0)
    weights = data.interactions.set_index(["user_id", "artist_id"])["weight"]
    assert weights[("v", "c")] == pytest.approx(2.0)  # the latest listen keeps its plays
    assert weights[("u", "a")] == pytest.approx(2.0 * 0.5 ** (9 / 4))
    with pytest.raises(DataError, match="needs listen times"):
        Dataset.from_frames(timed_frame().drop(columns=["first_listen", "last_listen"])).recency_weighted(4.0)


def test_listen_times_give_idle_days_and_trend():
    data = Dataset.from_frames(timed_frame())
    model = ListenTimes(recent_days=3.0).fit(data)
    idle = np.expm1(model.log_idle_days_)
    np.testing.assert_allclose(idle, [9, 4, 0, 6, 2], atol=1e-4)  # artists a..e; the data ends on day 10
    # listeners who started in the last 3 days of the 10-day span: v on c (day 9) and on e (day 7)
    expected = 2 * 3.0 / 10.0
    np.testing.assert_allclose(model.trend_, np.log(np.array([0, 0, 1, 0, 1]) + 1.0) - np.log(expected + 1.0),
                               atol=1e-5)
    weights = model.weights_.toarray()
    assert weights.max() == pytest.approx(1.0) and weights[0, 0] == pytest.approx(0.5 ** (9 / 3))


def test_recency_features_and_weighting_fit_and_recommend(synth, small_config):
    timed = with_listen_times(synth)
    assert "recency" in small_config.features and small_config.recency_half_life_days is None  # the defaults
    model = Recommender(small_config, recency_half_life_days=30.0).fit(timed)
    assert {"artist_log_idle_days", "artist_trend", "recent_taste"} <= set(model.feature_names_)
    assert len(model.recommend(int(synth.user_ids[0]), n=10)) == 10
    assert len(model.recommend_for_history([1, 5, 9], n=10)) == 10
    untimed = Recommender(small_config).fit(synth)
    assert "recent_taste" not in untimed.feature_names_  # no listen times: no columns, no weighting


# many histories at once ------------------------------------------------------------------
def test_recommend_for_histories_equals_one_history_at_a_time(string_model, string_data, caplog):
    users = string_data.user_ids[:40]
    inter = string_data.interactions
    rows = inter[inter["user_id"].isin(users)]
    extra = pd.DataFrame({"user_id": ["walk-in", "walk-in", "ghost"],
                          "artist_id": [rows["artist_id"].iloc[0], "not-an-artist", "not-an-artist"],
                          "weight": [3.0, 1.0, 1.0]})
    histories = pd.concat([rows, extra], ignore_index=True)
    with caplog.at_level("WARNING", logger="funnel"):
        batch = string_model.recommend_for_histories(histories, n=10, exclude=[mbid(7)])
    assert "ignoring 1 artist id(s)" in caplog.text and "skipping 1 listener(s)" in caplog.text
    assert sorted(set(batch["user_id"])) == sorted([*users.tolist(), "walk-in"])  # "ghost" has no catalogue artist
    for user in [*users[:40:13].tolist(), "walk-in"]:
        mine = histories[(histories["user_id"] == user) & (histories["artist_id"] != "not-an-artist")]
        one = string_model.recommend_for_history(dict(zip(mine["artist_id"], mine["weight"])), n=10,
                                                 exclude=[mbid(7)])
        got = batch[batch["user_id"] == user].drop(columns="user_id").reset_index(drop=True)
        assert got["artist_id"].tolist() == one["artist_id"].tolist()
        np.testing.assert_allclose(got["score"], one["score"], rtol=1e-5, atol=1e-6)
    plays_only = string_model.recommend_for_histories(rows[["user_id", "artist_id"]], n=5)  # no weight: 1 a row
    assert plays_only.groupby("user_id").size().eq(5).all()


def test_recommend_for_histories_takes_per_listener_exclusions(string_model, string_data):
    rows = string_data.interactions[string_data.interactions["user_id"].isin(string_data.user_ids[:20])]
    histories = pd.concat([rows, pd.DataFrame({"user_id": ["walk-in"], "artist_id": [rows["artist_id"].iloc[0]],
                                               "weight": [2.0]})], ignore_index=True)
    before = string_model.recommend_for_histories(histories, n=5)
    best = before[before["rank"] == 1][["user_id", "artist_id"]]
    stray = pd.DataFrame({"user_id": ["nobody-here"], "artist_id": [mbid(3)]})  # not a listener of the call: ignored
    after = string_model.recommend_for_histories(histories, n=5, exclude=pd.concat([best, stray]))
    assert after.merge(best, on=["user_id", "artist_id"]).empty
    assert after.groupby("user_id").size().eq(5).all() and set(after["user_id"]) == set(before["user_id"])
    # the walk-in's exclusion is its own: the same history under another id keeps that artist
    twin = histories[histories["user_id"] == "walk-in"].assign(user_id="twin")
    both = string_model.recommend_for_histories(pd.concat([histories, twin]), n=5, exclude=best)
    walk_in_best = best.loc[best["user_id"] == "walk-in", "artist_id"].item()
    assert walk_in_best in both.loc[both["user_id"] == "twin", "artist_id"].tolist()
    with pytest.raises(ConfigError, match="exclude frame: user"):
        string_model.recommend_for_histories(histories, exclude=pd.DataFrame({"user_id": [1], "artist_id": [mbid(1)]}))


def test_a_listener_who_knows_the_whole_catalogue_gets_an_empty_list(fitted):
    everything = fitted.artist_ids_.tolist()
    for explain in (False, True):
        assert fitted.recommend_for_history(everything, n=5, explain=explain).empty
    histories = pd.DataFrame({"user_id": [1] * len(everything) + [2], "artist_id": everything + everything[:1]})
    both = fitted.recommend_for_histories(histories, n=3)
    assert both["user_id"].unique().tolist() == [2] and len(both) == 3


def test_load_takes_runtime_settings_only(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    assert Recommender.load(path, n_threads=1, show_progress=False).config_.n_threads == 1
    with pytest.raises(ConfigError, match="only runtime settings"):
        Recommender.load(path, als_factors=4)
    with pytest.raises(ConfigError):
        Recommender.load(path, n_threads=-1)


def test_recommend_for_histories_refuses_bad_frames(string_model, fitted):
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        string_model.recommend_for_histories([("u", mbid(1))])
    with pytest.raises(DataError, match=r"missing column\(s\) \['artist_id'\]"):
        string_model.recommend_for_histories(pd.DataFrame({"user_id": ["u"]}).assign(weight=1.0))
    with pytest.raises(ConfigError, match="histories: artist ids of this model are strings"):
        string_model.recommend_for_histories(pd.DataFrame({"user_id": ["u"], "artist_id": [5]}))
    with pytest.raises(DataError, match="no listener of the histories has an artist of the catalogue"):
        fitted.recommend_for_histories(pd.DataFrame({"user_id": [1], "artist_id": [10**9]}))


def test_artist_side_save_scores_histories_as_the_full_model_and_does_not_grow_with_users(synth, small_config,
                                                                                         tmp_path):
    from funnel.data.synthetic import synthetic
    from tests.conftest import SYNTH

    more = synthetic(**{**SYNTH, "n_users": 2 * SYNTH["n_users"]})  # the same catalogue, twice the listeners
    sizes = {}
    for name, data in (("base", synth), ("more", more)):
        model = Recommender(small_config).fit(with_listen_times(data))
        for side in (False, True):
            path = model.save(tmp_path / f"{name}-{side}", artist_side_only=side)
            sizes[name, side] = sum(f.stat().st_size for f in path.iterdir())
        if name == "base":
            full, histories = model, data.interactions[data.interactions["user_id"] <= 30]
    assert sizes["more", False] - sizes["base", False] > 3 * (sizes["more", True] - sizes["base", True])
    from funnel.persistence.model import read_model

    for name, n_users in (("base", synth.n_users), ("more", more.n_users)):
        _, states = read_model(tmp_path / f"{name}-True")
        lengths = {len(a) for state in states.values() for a in state.arrays.values() if a.ndim}
        assert not lengths & {n_users, n_users + 1}, "an array per training user was saved"
    light = Recommender.load(tmp_path / "base-True")
    assert light.artist_side_only_ and len(light.user_ids_) == 0
    expected = full.recommend_for_histories(histories, n=10)
    got = light.recommend_for_histories(histories, n=10)
    assert got[["user_id", "rank", "artist_id"]].equals(expected[["user_id", "rank", "artist_id"]])
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-6)
    with pytest.raises(UnknownUserError, match="saved artist-side only"):
        light.recommend(2)
    with pytest.raises(UnknownUserError, match="saved artist-side only"):
        light.recommend_all()
    again = Recommender.load(light.save(tmp_path / "again"))
    assert again.artist_side_only_
