"""The Recommender on synthetic data: invariants, errors, leakage, persistence."""

import hashlib
import json
import logging
import mmap
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import funnel.fitting as fitting_module
import funnel.persistence.model as model_module
import funnel.recommender as recommender_module
from funnel import (
    ArtifactError,
    ConfigError,
    DataError,
    Dataset,
    FunnelError,
    NotFittedError,
    Recommender,
    UnknownUserError,
    split,
)
from funnel.baselines import ALSRecommender
from funnel.batch import Batch
from funnel.evaluation import evaluate
from funnel.persistence.model import FORMAT_VERSION, LIBRARIES
from funnel.stages import Stages

INT64_EDGES = [2**63 - 1, 2**63, -2**63 - 1, 2**70, -2**70]


def assert_same_recommendations(got, expected, rtol=1e-5):
    """The same artists for every user (or list), best first, with scores within ``rtol``.

    Results computed on other threads or in other processes may differ in the last bits of a
    float sum; they must not differ in what is recommended.
    """
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    assert got.drop(columns="score").equals(expected.drop(columns="score"))
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=rtol, atol=1e-7)


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

    # eight batches of 18 or 19 users: each a FAISS search on OpenMP and BLAS (from 16 queries on)
    monkeypatch.setattr(recommender_module, "BATCH_USERS", 20)
    threshold = faiss.cvar.distance_compute_blas_threshold
    threads = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    monkeypatch.setattr(fitted, "config_", fitted.config_.replace(n_threads=1))
    serial = fitted.recommend_all(n=10)
    monkeypatch.setattr(fitted, "config_", fitted.config_.replace(n_threads=4))
    parallel = fitted.recommend_all(n=10)
    assert_same_recommendations(parallel, serial)
    assert faiss.cvar.distance_compute_blas_threshold == threshold  # recommending leaves FAISS's setting alone
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
    known = synth.known_matrix()[0].nnz  # played or tagged
    assert known > len(synth.interactions.query("user_id == @user"))  # this user tagged an artist never played
    recs = fitted.recommend(user, n=synth.n_artists)
    assert len(recs) == synth.n_artists - known and recs["artist_id"].is_unique
    everything = fitted.recommend(user, n=synth.n_artists, filter_known=False)
    assert len(everything) == synth.n_artists and everything["artist_id"].is_unique


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
    als = fitted.stages_.models_["als"]
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


def test_training_histories_are_the_training_plays_as_rows(fitted, synth, tmp_path):
    rows = fitted.training_histories()
    expected = synth.interactions[["user_id", "artist_id", "weight"]].astype({"weight": "float64"})
    pd.testing.assert_frame_equal(rows.sort_values(["user_id", "artist_id"], ignore_index=True),
                                  expected.sort_values(["user_id", "artist_id"], ignore_index=True),
                                  check_dtype=False, atol=1e-3)
    artists_only = Recommender.load(fitted.save(tmp_path / "model", artist_side_only=True))
    with pytest.raises(UnknownUserError, match="saved artist-side only .* holds no training histories"):
        artists_only.training_histories()


def test_ranker_labels_are_unseen_by_the_feature_models(synth, small_config, monkeypatch):
    fits, splits = [], []
    real_fit, real_split = Stages.fit, fitting_module.history_split

    def spy_fit(self, dataset, prefit=None, everyone=None):
        fits.append((dataset, self))
        return real_fit(self, dataset, prefit, everyone)

    def spy_split(*args, **kwargs):
        splits.append(real_split(*args, **kwargs))
        return splits[-1]

    monkeypatch.setattr(Stages, "fit", spy_fit)
    monkeypatch.setattr(fitting_module, "history_split", spy_split)
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
    assert ranker_stages.models_["svd"].user_factors_.shape[0] == history_part.n_users  # its SVD saw the same part
    assert any(data is synth for data, _ in fits)  # and the serving stages see all training data


def test_fitting_is_deterministic(synth, small_config, fitted):
    again = Recommender(small_config).fit(synth)
    pd.testing.assert_frame_equal(again.recommend_all(n=10), fitted.recommend_all(n=10))


def test_a_fit_on_two_threads_ranks_as_a_fit_on_one(synth, small_config, fitted):
    both = Recommender(small_config, n_threads=2).fit(synth)  # the ranker's side and the serving side at once
    assert fitted.config_.n_threads == 1  # the fixture fitted them one after the other
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_allclose(getattr(both.stages_.models_["svd"], name),
                                   getattr(fitted.stages_.models_["svd"], name), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(both.ranker_.coef_, fitted.ranker_.coef_, rtol=1e-3, atol=1e-4)
    assert both.feature_names_ == fitted.feature_names_
    assert both.ranker_candidate_recall_ == pytest.approx(fitted.ranker_candidate_recall_, abs=0.01)
    ours, theirs = both.recommend_all(n=10), fitted.recommend_all(n=10)
    lists = [frame.groupby("user_id")["artist_id"].apply(tuple) for frame in (ours, theirs)]
    assert (lists[0] == lists[1]).mean() >= 0.9  # the same ranked artists for (almost) every user
    assert {"ranker", "stages", "fit svd", "fit als"} <= set(both.fit_seconds_)
    assert all(seconds >= 0 for seconds in both.fit_seconds_.values()) and both.fit_seconds_["ranker"] > 0


def test_a_fit_whose_serving_side_runs_in_a_worker_process_is_the_fit_on_a_thread(synth, small_config):
    in_worker = Recommender(small_config, n_threads=2, parallel_fit="process").fit(synth)
    on_thread = Recommender(small_config, n_threads=2, parallel_fit="thread").fit(synth)
    ours, theirs = in_worker.stages_.get_state(), on_thread.stages_.get_state()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].arrays.keys() == theirs[key].arrays.keys(), key
        for name, array in ours[key].arrays.items():
            other, where = theirs[key].arrays[name], f"{key} {name}"
            if array.dtype.kind in "fc":
                np.testing.assert_allclose(array, other, rtol=1e-5, atol=1e-6, err_msg=where)
            else:
                np.testing.assert_array_equal(array, other, err_msg=where)
        assert ours[key].files == theirs[key].files, key
    assert in_worker.feature_names_ == on_thread.feature_names_
    assert set(in_worker.fit_seconds_) == set(on_thread.fit_seconds_)
    assert_same_recommendations(in_worker.recommend_all(n=10), on_thread.recommend_all(n=10))


def test_what_the_worker_logs_reaches_the_callers_handlers(synth, small_config, caplog):
    import multiprocessing

    with caplog.at_level(logging.INFO, logger="funnel"):
        Recommender(small_config, n_threads=2, parallel_fit="process").fit(synth)
    here = multiprocessing.current_process().name
    worker = [r for r in caplog.records if r.processName != here]
    # the serving stages say which sources they kept, in the worker, once
    assert [r.getMessage() for r in worker if r.getMessage().startswith("stage one sources:")] != []
    assert sum(r.getMessage().startswith("stage one sources:") for r in caplog.records) == 2  # both sides
    with caplog.at_level(logging.WARNING, logger="funnel"):
        caplog.clear()
        Recommender(small_config, n_threads=2, parallel_fit="process").fit(synth)
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]  # the caller's level holds there too


def test_the_workers_log_records_travel_whatever_a_part_attaches_to_them():
    import pickle
    import threading

    with fitting_module.kept_records(logging.INFO) as records:
        logging.getLogger("funnel").info("fitted %s", "mine", extra={"lock": threading.Lock()})
        try:
            raise ValueError("inside a part")
        except ValueError:
            logging.getLogger("funnel").warning("failed", exc_info=True)
    sent = pickle.loads(pickle.dumps(records))
    assert [r.getMessage() for r in sent] == ["fitted mine", "failed"]
    assert not hasattr(sent[0], "lock") and "ValueError: inside a part" in sent[1].exc_text


def test_auto_keeps_the_serving_side_in_this_process_when_a_worker_could_not_import_a_part(small_config):
    config = small_config.replace(parallel_fit="auto")
    importable = {"models/als": "funnel.factors.als:ALSFactors"}
    assert fitting_module.use_worker(config, importable)
    assert not fitting_module.use_worker(config.replace(fit_users=0.5), importable)  # one copy of big data
    assert not fitting_module.use_worker(config.replace(parallel_fit="thread"), importable)
    for local in ("__main__:MySource", "mypackage.parts:make.<locals>.MySource"):
        classes = {**importable, "candidates/mine": local}
        assert not fitting_module.use_worker(config, classes)
        with pytest.raises(ConfigError, match="candidates/mine.*parallel_fit='thread'"):
            fitting_module.use_worker(config.replace(parallel_fit="process"), classes)


def test_a_worker_that_died_is_an_error_saying_what_to_do(small_config):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    died: Future = Future()
    died.set_exception(BrokenProcessPool("a process in the pool was terminated abruptly"))
    with pytest.raises(FunnelError, match="worker process .* stopped .*parallel_fit='thread'"):
        fitting_module.worker_stages(died, small_config, {})


def test_an_error_in_the_worker_reaches_the_caller_as_that_funnel_error(synth, small_config):
    from loky import get_reusable_executor

    classes = {"models/als": "funnel.factors.als:NoSuchModel"}  # found in the worker, as a saved class path is
    executor = get_reusable_executor(max_workers=1, timeout=fitting_module.WORKER_IDLE_SECONDS)  # the fits' own
    later = executor.submit(fitting_module.fit_in_worker, synth, small_config, classes, None, 1)
    with pytest.raises(ConfigError, match="NoSuchModel"):
        fitting_module.worker_stages(later, small_config, classes)


def test_a_script_without_a_main_guard_fits_without_a_traceback(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from funnel import Recommender\n"
        "from funnel.data.synthetic import synthetic\n"
        "model = Recommender(n_threads=2, models={'embedder': {'tag_dim': 8}, 'als': {'factors': 8}})\n"
        "model.fit(synthetic(n_users=60, n_artists=80, seed=1))\n"
        "print(len(model.recommend_all(n=5)))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert int(result.stdout.split()[-1]) > 0


def test_many_new_listeners_at_once_get_what_they_get_one_at_a_time(fitted, synth, monkeypatch):
    rng = np.random.default_rng(5)
    histories = [rng.choice(synth.artist_ids, size=int(rng.integers(1, 25)), replace=False).tolist()
                 for _ in range(40)]
    histories[:3] = [[1, 5, 9], {2: 30.0, 6: 2.0}, [int(synth.artist_ids[-1])]]  # lists, plays, one untagged
    alone = [fitted.recommend_for_history(history, n=10) for history in histories]
    monkeypatch.setattr(recommender_module, "BATCH_USERS", 20)  # recommend_all on batch threads meanwhile
    monkeypatch.setattr(fitted, "config_", fitted.config_.replace(n_threads=4))
    everyone_alone = fitted.recommend_all(n=10)
    with ThreadPoolExecutor(1) as side, ThreadPoolExecutor(4) as pool:
        everyone = side.submit(fitted.recommend_all, n=10)
        futures = [pool.submit(fitted.recommend_for_history, history, n=10) for history in histories]
        together = [future.result(timeout=60) for future in futures]
        everyone = everyone.result(timeout=60)
    for got, expected in zip(together, alone):
        assert_same_recommendations(got, expected)
    assert_same_recommendations(everyone, everyone_alone)


def test_save_load_round_trip_is_exact(fitted, synth, tmp_path):
    path = fitted.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 8
    assert manifest["data_fingerprint"] == synth.fingerprint() == fitted.fingerprint_
    assert {"funnel", *LIBRARIES} <= set(manifest["versions"]) and manifest["versions"]["funnel"]
    assert manifest["saved_at"].endswith("+00:00")
    assert manifest["config"] == fitted.config_.to_dict() and manifest["feature_names"] == fitted.feature_names_
    entries = [*manifest["arrays"].values(), *manifest["files"].values()]
    for entry in entries:  # every data file listed with its checksum
        assert hashlib.sha256((path / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert {entry["name"] for entry in entries} | {"manifest.json"} == {f.name for f in path.iterdir()}
    assert {f.suffix for f in path.iterdir()} == {".json", ".npy", ".faiss"}
    assert {"rp3_score", "log_ease_score"} <= set(fitted.feature_names_)  # the neighbourhood models are saved too
    for mapped in (True, False):
        loaded = Recommender.load(path, mmap=mapped)
        assert loaded.config_ == fitted.config_ and loaded.feature_names_ == fitted.feature_names_
        models = loaded.stages_.models_
        for array in (models["als"].item_factors_, models["ease"].weights_, models["rp3"].weights_.data,
                      loaded.history_.indices, loaded.artist_names_):  # maps of the files, not copies
            assert _mapped(array) is mapped
        pd.testing.assert_frame_equal(loaded.recommend_all(n=20), fitted.recommend_all(n=20))
        pd.testing.assert_frame_equal(loaded.recommend_for_history([1, 5, 9], n=10),
                                      fitted.recommend_for_history([1, 5, 9], n=10))
        pd.testing.assert_frame_equal(loaded.similar_artists(1, n=5), fitted.similar_artists(1, n=5))
    files = sorted(f.name for f in path.iterdir())
    loaded.save(path)  # saving again over the same directory keeps one copy of each file
    assert sorted(f.name for f in path.iterdir()) == files


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is, or is a view of, a memory map."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_index_round_trip(synth, small_config, tmp_path, index):
    candidates = {**small_config.candidates, "tags": {**small_config.candidates["tags"], "index": index},
                  "als": {"n": small_config.candidates["als"], "index": index}}
    model = Recommender(small_config, candidates=candidates).fit(synth)
    tags = model.stages_.sources_[0]
    assert tags.name == "tags" and tags.index_.d == model.stages_.models_["embedder"].vectors_.shape[1]  # not cut
    loaded = Recommender.load(model.save(tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), model.recommend_all(n=10))


def test_load_refuses_corrupt_or_newer_artifacts(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    with pytest.raises(ArtifactError, match="does not exist"):
        Recommender.load(tmp_path / "missing")
    arrays = next(path.glob("models-als-item_factors-*.npy"))
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Recommender.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    for version in (1, 99):  # a save of the first format, and of a newer funnel
        manifest["format_version"] = version
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=f"saved by format {version}.*retrain"):
            Recommender.load(path)


def test_failed_save_leaves_previous_model_loadable(fitted, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "model")
    before = fitted.recommend_all(n=5)
    other = Recommender.load(path)
    other.ranker_.coef_ = other.ranker_.coef_[::-1].copy()  # another model: other arrays to write

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_module, "save_json", broken)  # the new data files are written, the manifest not
    with pytest.raises(ArtifactError, match="No space left on device; the previous model, if any, is unchanged"):
        other.save(path)
    monkeypatch.undo()
    assert len(list(path.glob("ranker-coef-*.npy"))) == 2
    pd.testing.assert_frame_equal(Recommender.load(path).recommend_all(n=5), before)


def test_fits_without_tags_or_names(synth, small_config, caplog):
    bare = Dataset.from_frames(synth.interactions)
    with caplog.at_level("INFO", logger="funnel"):
        model = Recommender(small_config).fit(bare)
    assert "no tags: stage-one artist vectors use popularity and freshness only" in caplog.text
    assert [s.name for s in model.stages_.sources_] == ["als", "ease", "friends", "popularity"]
    recs = model.recommend_all(n=5)
    assert len(recs) == 5 * bare.n_users and (recs["artist_name"] == "").all()
    similar = model.similar_artists(1, n=5)  # no tags: co-listening (ALS factors) decides
    assert (similar["space"] == "als").all() and len(similar) == 5 and similar["artist_id"].is_unique
    assert 1 not in similar["artist_id"].tolist()
    assert similar["similarity"].is_monotonic_decreasing


def test_cache_reuses_svd_and_ranker(synth, small_config, tmp_path, caplog, monkeypatch):
    config = small_config.replace(cache_dir=str(tmp_path), reuse_svd=True, reuse_ranker=True)
    first = Recommender(config).fit(synth)
    with caplog.at_level("INFO", logger="funnel"):
        second = Recommender(config).fit(synth)
    assert "reusing saved ranker" in caplog.text and "reusing saved svd " in caplog.text
    pd.testing.assert_frame_equal(first.recommend_all(n=5), second.recommend_all(n=5))
    caplog.clear()
    assert fitting_module.FEATURE_CODE_VERSION == 3
    monkeypatch.setattr(fitting_module, "FEATURE_CODE_VERSION", 4)
    with caplog.at_level("INFO", logger="funnel"):
        Recommender(config).fit(synth)  # parts cached by older feature code are retrained
    assert "saved ranker was trained with other settings (code: 3 -> 4)" in caplog.text
    assert "saved svd was trained with other settings (code: 3 -> 4)" in caplog.text
    assert "reusing saved" not in caplog.text
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level("INFO", logger="funnel"):
        Recommender(config.replace(models={**config.models, "svd": {"factors": 4, "epochs": 10}})).fit(synth)
    assert "saved svd was trained with other settings (code: 4 -> 3, factors: 8 -> 4)" in caplog.text
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
    with pytest.raises(ConfigError, match="list of user ids"):
        fitted.recommend_all(users=3)


def test_users_with_one_artist_each_cannot_train_a_ranker(small_config):
    data = Dataset.from_frames(pd.DataFrame({"user_id": range(30), "artist_id": [i % 7 for i in range(30)],
                                             "weight": 1.0}))
    with pytest.raises(DataError, match="at least 2 artists"):
        Recommender(small_config).fit(data)


def test_the_svd_feature_is_the_biased_svd_prediction(fitted):
    stages, svd = fitted.stages_, fitted.stages_.models_["svd"]
    batch = Batch(np.arange(5), fitted.history_[:5])
    cands = stages.candidates(batch)
    X = stages.features(batch, cands)
    assert X.shape == (len(cands), len(fitted.feature_names_)) == (len(cands), len(fitted.ranker_.coef_))
    user_factors, user_bias = svd.user_vectors(batch)
    expected = (svd.global_mean_ + user_bias[cands.rows] + svd.item_bias_[cands.items]
                + (user_factors[cands.rows] * svd.item_factors_[cands.items]).sum(axis=1))
    np.testing.assert_allclose(X[:, fitted.feature_names_.index("svd_prediction")], expected, rtol=1e-4, atol=1e-4)


def test_configured_sources_and_feature_groups_fit_save_and_load(synth, small_config, tmp_path):
    config = small_config.replace(candidates={"als": 30, "ease": 15}, features=("als", "ease", "sources"),
                                  ranker={"part": "logistic", "C": 1.0})
    model = Recommender(config).fit(synth)
    assert model.stages_.source_names == ["als", "ease"]
    assert model.feature_names_ == ["als_score", "ease_score", "als_log_rank", "als_source_score",
                                    "ease_log_rank", "ease_source_score"]
    assert len(model.ranker_.coef_) == 6 and model.ranker_.C == 1.0
    assert "svd" not in model.stages_.models_ and "embedder" not in model.stages_.models_  # nothing unneeded
    recs = model.recommend_all(n=10)
    assert len(recs) == 10 * synth.n_users
    loaded = Recommender.load(model.save(tmp_path / "model"))
    assert loaded.config_ == model.config_ and loaded.stages_.source_names == ["als", "ease"]
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), recs)
    pd.testing.assert_frame_equal(loaded.recommend_for_history([1, 5, 9], n=10),
                                  model.recommend_for_history([1, 5, 9], n=10))
    similar = model.similar_artists(1, n=5)  # no embedding fitted: co-listening decides
    assert (similar["space"] == "als").all() and len(similar) == 5 and 1 not in similar["artist_id"].tolist()


@pytest.mark.parametrize("user_id", INT64_EDGES)
def test_user_ids_at_and_beyond_the_int64_edges_are_unknown_users(fitted, user_id):
    with pytest.raises(UnknownUserError, match="unknown user id|must be integers"):
        fitted.recommend(user_id)
    with pytest.raises(UnknownUserError):
        fitted.recommend_all(users=[int(fitted.user_ids_[0]), user_id])
    with pytest.raises(UnknownUserError):
        fitted.recommend_all(users=[user_id])


@pytest.mark.parametrize("artist_id", INT64_EDGES)
def test_artist_ids_at_and_beyond_the_int64_edges_are_data_errors(fitted, artist_id):
    with pytest.raises(DataError, match="unknown artist id"):
        fitted.similar_artists(artist_id)
    with pytest.raises(DataError):
        fitted.recommend_for_history([artist_id])


def test_similar_artists(fitted):
    similar = fitted.similar_artists(1, n=10)
    assert list(similar.columns) == ["rank", "artist_id", "artist_name", "similarity", "space"]
    assert (similar["space"] == "tags").all()
    assert similar["rank"].tolist() == list(range(1, 11)) and 1 not in similar["artist_id"].tolist()
    assert similar["similarity"].is_monotonic_decreasing and similar["artist_id"].is_unique
    assert ((similar["artist_id"] - 1) % 4 == 0).mean() >= 0.7  # artist 1's planted cluster
    with pytest.raises(DataError, match=r"unknown artist id\(s\) \[999999\].*ids 1\.\.240"):
        fitted.similar_artists(999999)
    with pytest.raises(ConfigError, match="artist ids of this model are integers; got \\['1'\\] \\(str\\)"):
        fitted.similar_artists("1")
    many = fitted.similar_artists([1, 5], n=3)
    assert many["query_artist_id"].tolist() == [1, 1, 1, 5, 5, 5]
    pd.testing.assert_frame_equal(many[many["query_artist_id"] == 1].drop(columns="query_artist_id"),
                                  fitted.similar_artists(1, n=3))
    with pytest.raises(ConfigError, match="n="):
        fitted.similar_artists(1, n=len(fitted.artist_ids_))


def test_a_lightgbm_ranked_model_saves_its_trees_as_lightgbm_text(synth, small_config, tmp_path):
    model = Recommender(small_config, ranker={"part": "lightgbm", "n_estimators": 40}).fit(synth)
    assert model.ranker_.name == "lightgbm"
    path = model.save(tmp_path / "model")
    trees = list(path.glob("ranker-model-*.txt"))
    assert len(trees) == 1 and trees[0].read_text().startswith("tree")
    loaded = Recommender.load(path)
    pd.testing.assert_frame_equal(loaded.recommend_all(n=10), model.recommend_all(n=10))
    explained = loaded.recommend(int(synth.interactions["user_id"].iloc[0]), n=5, explain=True)
    assert all(len(c) == 3 for c in explained["contributions"])  # the ranker's own per-pair contributions


def test_fit_users_learns_from_a_sample_and_recommends_to_every_listener(synth, small_config, tmp_path):
    model = Recommender(small_config, fit_users=0.5, tagged_known=False).fit(synth)
    sampled = model.model_rows_ >= 0
    assert sampled.sum() == round(0.5 * synth.n_users) and model.model_rows_.shape == (synth.n_users,)
    assert model.stages_.models_["als"].user_factors_.shape[0] == sampled.sum()
    assert np.array_equal(np.sort(model.model_rows_[sampled]), np.arange(sampled.sum()))
    # the artist-side models count every listener's plays; the user-side ones the sample's
    listeners = np.asarray((synth.matrix > 0).sum(axis=0)).ravel()
    np.testing.assert_allclose(model.stages_.models_["popularity"].scores_, np.log1p(listeners), rtol=1e-6)
    full_ease = Recommender(small_config, tagged_known=False).fit(synth).stages_.models_["ease"]
    np.testing.assert_allclose(model.stages_.models_["ease"].items_, full_ease.items_, rtol=1e-4, atol=1e-6)
    everyone = model.recommend_all(n=10)
    assert set(everyone["user_id"]) == set(synth.user_ids) and (everyone.groupby("user_id").size() == 10).all()
    # a listener outside the sample is scored from their history, as a new listener is
    outside = synth.user_ids[np.flatnonzero(~sampled)[:3]]
    for user in outside:
        plays = synth.interactions[synth.interactions["user_id"] == user]
        as_new = model.recommend_for_history(dict(zip(plays["artist_id"], plays["weight"].astype(float))), n=10)
        assert_same_recommendations(model.recommend(user, n=10), as_new)
    model.save(tmp_path / "sampled")
    loaded = Recommender.load(tmp_path / "sampled")
    assert np.array_equal(loaded.model_rows_, model.model_rows_)
    assert_same_recommendations(loaded.recommend_all(n=10), everyone)
    whole = Recommender(small_config, fit_users=synth.n_users + 5).fit(synth)
    assert whole.model_rows_ is None


def test_fit_users_takes_a_count_or_a_share(synth):
    from funnel.data.split import listener_sample

    assert listener_sample(synth, 40, seed=1).n_users == 40
    assert listener_sample(synth, 0.2, seed=1).n_users == round(0.2 * synth.n_users)
    assert listener_sample(synth, 1.0) is synth
    assert np.array_equal(listener_sample(synth, 40, seed=1).user_ids, listener_sample(synth, 40, seed=1).user_ids)
    for bad in (0, -3, 0.0, 1.5, True, "half"):
        with pytest.raises(ConfigError, match="fit_users"):
            Recommender(fit_users=bad)
