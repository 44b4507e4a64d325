"""The Recommender on synthetic data: invariants, errors, leakage, persistence."""

import json

import numpy as np
import pandas as pd
import pytest

import funnel.beside as beside_module
import funnel.recommender as recommender_module
from funnel import (ArtifactError, ConfigError, DataError, Dataset, NotFittedError, Recommender,
                    UnknownUserError)
from funnel.baselines import ALSRecommender
from funnel.beside import can_fork
from funnel.evaluation import evaluate
from funnel.stages import Stages
from funnel import split


def check_lists(frame, history_of, n, n_artists):
    for user, group in frame.groupby("user_id"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert len(group) == min(n, n_artists - len(history_of(user)))
        assert group["artist_id"].is_unique
        assert not set(group["artist_id"]) & history_of(user)
        assert group["score"].is_monotonic_decreasing


def test_recommend_all_invariants(fitted, synth):
    recs = fitted.recommend_all(n=15)
    assert list(recs.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
    assert recs["user_id"].nunique() == synth.n_users
    histories = synth.interactions.groupby("user_id")["artist_id"].apply(set)
    check_lists(recs, lambda u: histories[u], 15, synth.n_artists)
    assert recs["artist_name"].str.startswith("Artist ").all()


def test_recommend_all_in_parallel_batches_matches_one_thread(fitted, monkeypatch):
    import faiss

    from threadpoolctl import threadpool_info

    monkeypatch.setattr(recommender_module, "BATCH_USERS", 16)  # ten batches, nine of them FAISS batch searches
    threshold = faiss.cvar.distance_compute_blas_threshold
    threads = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    monkeypatch.setattr(fitted, "config_", fitted.config_.replace(n_threads=1))
    serial = fitted.recommend_all(n=10)
    monkeypatch.setattr(fitted, "config_", fitted.config_.replace(n_threads=4))
    parallel = fitted.recommend_all(n=10)
    pd.testing.assert_frame_equal(parallel, serial)
    assert faiss.cvar.distance_compute_blas_threshold == threshold  # FAISS's global setting restored
    # the batch threads ran BLAS and OpenMP on one thread each; this thread's limits are as before
    assert [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()] == threads


def test_recommend_matches_recommend_all(fitted, synth):
    user = int(synth.user_ids[7])
    one = fitted.recommend(user, n=10)
    assert list(one.columns) == ["rank", "artist_id", "artist_name", "score"]
    assert one["rank"].tolist() == list(range(1, 11))
    batch = fitted.recommend_all(n=10, users=[user])
    assert one["artist_id"].tolist() == batch["artist_id"].tolist()
    assert np.allclose(one["score"], batch["score"])


def test_n_larger_than_what_is_left_returns_everything_unseen(fitted, synth):
    user = int(synth.user_ids[0])
    seen = len(synth.interactions.query("user_id == @user"))
    recs = fitted.recommend(user, n=synth.n_artists)
    assert len(recs) == synth.n_artists - seen and recs["artist_id"].is_unique


@pytest.mark.parametrize("n", [0, -3, 2.5, "10", True, 10**6])
def test_bad_n_is_rejected(fitted, synth, n):
    with pytest.raises(ConfigError, match="n="):
        fitted.recommend(int(synth.user_ids[0]), n=n)
    with pytest.raises(ConfigError, match="n="):
        fitted.recommend_all(n=n)


def test_unknown_users_are_named(fitted):
    with pytest.raises(UnknownUserError, match=r"unknown user id\(s\) \[999999\].*recommend_for_history"):
        fitted.recommend(999999)
    with pytest.raises(UnknownUserError, match="999999"):
        fitted.recommend_all(users=[1, 999999])


def test_not_fitted_errors_say_what_to_do():
    with pytest.raises(NotFittedError, match="fit"):
        Recommender().recommend(1)
    with pytest.raises(NotFittedError):
        Recommender().save("x")


def test_a_new_listener_is_folded_into_als_once_per_request(fitted, monkeypatch):
    als = fitted.stages_.als_
    calls = []
    original = als._user_vectors
    monkeypatch.setattr(als, "_user_vectors", lambda *a: calls.append(1) or original(*a))
    fitted.recommend_for_history([1, 2, 3], n=5)
    fitted.recommend_for_history([1, 2, 3], n=5)
    assert len(calls) == 2  # stage one's query and stage two's feature share one fold-in


def test_recommend_for_history(fitted, synth, caplog):
    cluster_zero = [1, 5, 9, 13, 17, 21]  # artist ids (i - 1) % 4 == 0
    recs = fitted.recommend_for_history(cluster_zero, n=10)
    assert len(recs) == 10 and not set(recs["artist_id"]) & set(cluster_zero)
    assert ((recs["artist_id"] - 1) % 4 == 0).mean() >= 0.7
    with caplog.at_level("WARNING", logger="funnel"):
        with_plays = fitted.recommend_for_history({1: 50, 5: 3, 999999: 4}, n=5)
    assert len(with_plays) == 5 and "ignoring 1 unknown artist" in caplog.text
    with pytest.raises(DataError, match="empty"):
        fitted.recommend_for_history([])
    with pytest.raises(DataError, match="none of the history"):
        fitted.recommend_for_history([999998, 999999])
    assert fitted.recommend_for_history([1, 1, 5], n=5)["artist_id"].isin([1, 5]).sum() == 0


def test_a_known_users_history_as_a_new_user_gets_similar_lists(fitted, synth):
    user = int(synth.user_ids[3])
    history = synth.interactions.query("user_id == @user").set_index("artist_id")["weight"].to_dict()
    known = set(fitted.recommend(user, n=20)["artist_id"])
    folded = set(fitted.recommend_for_history(history, n=20)["artist_id"])
    assert len(known & folded) >= 10


def test_ranker_labels_are_unseen_by_the_feature_models(synth, small_config, monkeypatch):
    fits, splits = [], []
    real_fit, real_split = Stages.fit, recommender_module.per_user

    def spy_fit(self, dataset, svd=None, split=False):
        fits.append((dataset, self))
        return real_fit(self, dataset, svd, split)

    def spy_split(*args, **kwargs):
        splits.append(real_split(*args, **kwargs))
        return splits[-1]

    monkeypatch.setattr(Stages, "fit", spy_fit)
    monkeypatch.setattr(recommender_module, "per_user", spy_split)
    Recommender(small_config, n_threads=1).fit(synth)  # in this process, where the spies see it
    (history_part, labels), = splits
    label_pairs = set(zip(labels["user_id"], labels["artist_id"]))
    assert len(fits) == 2
    ranker_data, ranker_stages = next(fit for fit in fits if fit[0] is history_part)
    assert not label_pairs & set(zip(ranker_data.interactions["user_id"], ranker_data.interactions["artist_id"]))
    assert not label_pairs & set(zip(ranker_data.tag_assignments["user_id"], ranker_data.tag_assignments["artist_id"]))
    rows = history_part.user_index(labels["user_id"].to_numpy())
    cols = history_part.artist_index(labels["artist_id"].to_numpy())
    assert (history_part.matrix[rows, cols] == 0).all()
    assert ranker_stages.svd_.user_factors_.shape[0] == history_part.n_users  # its SVD saw the same part
    assert any(data is synth for data, _ in fits)  # and the serving stages see all training data


def test_fitting_is_deterministic(synth, small_config, fitted):
    again = Recommender(small_config).fit(synth)
    pd.testing.assert_frame_equal(again.recommend_all(n=10), fitted.recommend_all(n=10))


@pytest.mark.skipif(not can_fork(), reason="a split fit forks a child process only where fork is safe")
def test_stages_fitted_split_over_two_processes_equal_stages_fitted_in_one(synth, small_config):
    config = small_config.validate()
    together = Stages(config).fit(synth)
    split_fit = Stages(config).fit(synth, split=True)
    np.testing.assert_array_equal(split_fit.embedder_.vectors_, together.embedder_.vectors_)
    np.testing.assert_array_equal(split_fit.svd_.item_factors_, together.svd_.item_factors_)
    np.testing.assert_array_equal(split_fit.als_.item_factors_, together.als_.item_factors_)
    assert split_fit.fit_seconds_.keys() == together.fit_seconds_.keys()
    users = np.arange(20)
    history = synth.matrix[users]
    cands = together.candidates(users, history)
    np.testing.assert_array_equal(split_fit.features(users, history, cands), together.features(users, history, cands))


@pytest.mark.skipif(not can_fork(), reason="the ranker is trained in a forked child only where fork is safe")
def test_ranker_trained_in_a_child_process_equals_one_trained_on_a_thread(synth, small_config, fitted,
                                                                          monkeypatch):
    monkeypatch.setattr(beside_module, "can_fork", lambda: False)
    on_thread = Recommender(small_config).fit(synth)
    np.testing.assert_array_equal(on_thread.ranker_.coef_, fitted.ranker_.coef_)
    assert on_thread.ranker_candidate_recall_ == fitted.ranker_candidate_recall_ > 0
    assert on_thread.ranker_seconds_ > 0 and fitted.ranker_seconds_ > 0


def test_save_load_round_trip_is_exact(fitted, synth, tmp_path):
    path = fitted.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["data_fingerprint"] == synth.fingerprint()
    assert {f.suffix for f in path.iterdir()} == {".json", ".npz", ".faiss"}
    loaded = Recommender.load(path)
    pd.testing.assert_frame_equal(loaded.recommend_all(n=20), fitted.recommend_all(n=20))
    pd.testing.assert_frame_equal(loaded.recommend_for_history([1, 5, 9], n=10),
                                  fitted.recommend_for_history([1, 5, 9], n=10))
    fitted.save(path)  # saving again over the same directory keeps one copy of each file
    assert len(list(path.glob("arrays-*.npz"))) == 1


def test_models_saved_before_newer_settings_load_as_they_were(synth, small_config, tmp_path):
    old = Recommender(small_config, tag_search_dim=0, als_models=1, svd_features="factors",
                      friends_score="count").fit(synth)
    path = old.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    for name in recommender_module.SETTINGS_BEFORE_THEY_EXISTED:
        del manifest["config"][name]
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = Recommender.load(path)
    assert loaded.config_.als_models == 1 and loaded.config_.tag_search_dim == 0
    assert loaded.config_.svd_features == "factors" and loaded.config_.friends_score == "count"
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), old.recommend_all(n=10))
    pd.testing.assert_frame_equal(loaded.recommend_for_history([1, 5, 9], n=10),
                                  old.recommend_for_history([1, 5, 9], n=10))


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_index_round_trip(synth, small_config, tmp_path, index):
    model = Recommender(small_config, index=index).fit(synth)
    tags = model.stages_.sources_[0]
    assert tags.name == "tags" and tags.index_.d == model.stages_.embedder_.vectors_.shape[1]  # not cut
    loaded = Recommender.load(model.save(tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), model.recommend_all(n=10))


def test_load_refuses_corrupt_or_newer_artifacts(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    with pytest.raises(ArtifactError, match="does not exist"):
        Recommender.load(tmp_path / "missing")
    arrays = next(path.glob("arrays-*.npz"))
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Recommender.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99"):
        Recommender.load(path)


def test_failed_save_leaves_previous_model_loadable(fitted, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "model")
    before = fitted.recommend_all(n=5)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recommender_module, "save_json", broken)
    with pytest.raises(OSError):
        fitted.save(path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(Recommender.load(path).recommend_all(n=5), before)


def test_fits_without_tags_or_names(synth, small_config, caplog):
    bare = Dataset.from_frames(synth.interactions)
    with caplog.at_level("INFO", logger="funnel"):
        model = Recommender(small_config).fit(bare)
    assert "no tag assignments" in caplog.text
    assert [s.name for s in model.stages_.sources_] == ["als", "ease", "friends", "popularity"]
    recs = model.recommend_all(n=5)
    assert len(recs) == 5 * bare.n_users and (recs["artist_name"] == "").all()


def test_cache_reuses_svd_and_ranker(synth, small_config, tmp_path, caplog):
    config = small_config.replace(cache_dir=str(tmp_path), reuse_svd=True, reuse_ranker=True)
    first = Recommender(config).fit(synth)
    with caplog.at_level("INFO", logger="funnel"):
        second = Recommender(config).fit(synth)
    assert "reusing saved ranker" in caplog.text and "reusing saved svd " in caplog.text
    pd.testing.assert_frame_equal(first.recommend_all(n=5), second.recommend_all(n=5))
    caplog.clear()
    with caplog.at_level("INFO", logger="funnel"):
        Recommender(config.replace(svd_factors=4)).fit(synth)
    assert "trained with other settings (svd_factors: 8 -> 4)" in caplog.text
    caplog.clear()
    other = Dataset.from_frames(synth.interactions.iloc[10:], synth.artists, synth.tags,
                                synth.tag_assignments, synth.friends)
    with caplog.at_level("INFO", logger="funnel"):
        Recommender(config).fit(other)
    assert "was trained on other data (fingerprint" in caplog.text


def test_funnel_beats_als_on_planted_clusters(synth, small_config):
    train, test = split.per_user(synth, seed=0)
    funnel_ndcg = evaluate(Recommender(small_config).fit(train), train, test)["ndcg@10"]
    als_ndcg = evaluate(ALSRecommender(factors=8, iterations=8).fit(train), train, test)["ndcg@10"]
    assert funnel_ndcg > 0.9 * als_ndcg


def test_history_as_series_and_bad_histories(fitted):
    as_dict = fitted.recommend_for_history({1: 50, 5: 3}, n=5)
    as_series = fitted.recommend_for_history(pd.Series({1: 50, 5: 3}), n=5)
    pd.testing.assert_frame_equal(as_dict, as_series)
    with pytest.raises(DataError, match="play counts"):
        fitted.recommend_for_history({1: "abc"})
    with pytest.raises(DataError, match="integers"):
        fitted.recommend_for_history([[1, 5]])
    with pytest.raises(UnknownUserError, match="list of user ids"):
        fitted.recommend_all(users=3)


def test_users_with_one_artist_each_cannot_train_a_ranker(small_config):
    data = Dataset.from_frames(pd.DataFrame({"user_id": range(30), "artist_id": [i % 7 for i in range(30)],
                                             "weight": 1.0}))
    with pytest.raises(DataError, match="at least 2 artists"):
        Recommender(small_config).fit(data)


@pytest.mark.parametrize("svd_features", ["prediction", "factors"])
def test_svd_feature_sets(synth, small_config, svd_features):
    model = Recommender(small_config, svd_features=svd_features).fit(synth)
    svd_columns = [name for name in model.feature_names_ if name.startswith("svd_")]
    assert len(svd_columns) == (1 if svd_features == "prediction" else 3 * small_config.svd_factors + 1)
    assert len(model.ranker_.coef_) == len(model.feature_names_)
    users, history, svd = np.arange(5), model.history_[:5], model.stages_.svd_
    cands = model.stages_.candidates(users, history)
    X = model.stages_.features(users, history, cands)
    user_factors, user_bias = svd.user_vectors(users, history)
    expected = (svd.global_mean_ + user_bias[cands.rows] + svd.item_bias_[cands.items]
                + (user_factors[cands.rows] * svd.item_factors_[cands.items]).sum(axis=1))
    np.testing.assert_allclose(X[:, model.feature_names_.index("svd_prediction")], expected, rtol=1e-4, atol=1e-4)


def test_neighbourhood_features_round_trip(synth, small_config, tmp_path):
    config = small_config.replace(use_rp3_features=True, use_knn_features=True,
                                  knn_neighbors=10, use_log_ease_features=True)
    model = Recommender(config).fit(synth)
    assert {"rp3_score", "knn_score", "log_ease_score"} <= set(model.feature_names_)
    loaded = Recommender.load(model.save(tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), model.recommend_all(n=10))
    pd.testing.assert_frame_equal(loaded.recommend_for_history([1, 5, 9], n=10),
                                  model.recommend_for_history([1, 5, 9], n=10))
