"""The worked examples of docs/extending.md, run as written: a package's source (entry point) and feature
group (dotted path) fitted, saved, loaded in a fresh process and served; a feature group, a ranker and a
source that offers an artist space and an explanation driver; two parts of one class."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from funnel import ArtifactError, ConfigError, Dataset, FunnelConfig, Recommender
from funnel.candidates import SOURCES
from funnel.explain import closest_history
from funnel.protocols import ExplanationDriver, SimilaritySpace
from funnel.ranking import FEATURES, RANKERS
from tests.extending_examples import EXAMPLES, PLUGIN_DIR, PLUGIN_MODULE


@pytest.fixture(scope="module")
def examples() -> dict:
    return EXAMPLES  # run by tests/conftest.py before collection


def test_the_examples_register_one_part_each(examples):
    assert "als_norm" in FEATURES and "ridge" in RANKERS and "listener_svd" in SOURCES
    assert "most_played" not in SOURCES  # an installed package's entry point, not a registration


def plugin_config(small_config: FunnelConfig) -> FunnelConfig:
    """The built-in parts with the package's source (by entry point) and feature group (by dotted path)."""
    return small_config.replace(candidates={**small_config.candidates,
                                            "most_played": {"n": 15, "min_listeners": 2}},
                                features=(*small_config.features, f"{PLUGIN_MODULE}:ListenerShare"))


@pytest.fixture(scope="module")
def plugin_model(synth, small_config):
    return Recommender(plugin_config(small_config)).fit(synth)


def in_fresh_process(code: str, with_plugin: bool = True) -> subprocess.CompletedProcess:
    """``python -c code`` in a new interpreter: the package on its path only if ``with_plugin``."""
    path = [entry for entry in sys.path if entry and entry != str(PLUGIN_DIR)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR)] * with_plugin + path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_a_packaged_part_fits_saves_and_loads_in_a_fresh_process(plugin_model, tmp_path):
    model = plugin_model
    assert "most_played" in model.stages_.source_names and "listener_share" in model.feature_names_
    assert {"most_played_log_rank", "most_played_source_score"} <= set(model.feature_names_)
    assert model.stages_.parts["candidates/most_played"].settings.min_listeners == 2
    path = model.save(tmp_path / "model")
    classes = json.loads((path / "manifest.json").read_text())["classes"]
    assert classes["candidates/most_played"] == f"{PLUGIN_MODULE}:MostPlayedSource"
    assert classes[f"features/{PLUGIN_MODULE}:ListenerShare"] == f"{PLUGIN_MODULE}:ListenerShare"
    recs = model.recommend_all(n=10)
    code = ("import sys; from funnel import Recommender; "
            f"Recommender.load({str(path)!r}).recommend_all(n=10).to_json(sys.stdout, orient='records')")
    done = in_fresh_process(code)
    assert done.returncode == 0, done.stderr
    again = pd.DataFrame(json.loads(done.stdout))
    np.testing.assert_array_equal(again["artist_id"].to_numpy(), recs["artist_id"].to_numpy())
    np.testing.assert_allclose(again["score"].to_numpy(), recs["score"].to_numpy(), rtol=1e-5, atol=1e-7)
    # without the package installed, the load says which module is missing
    done = in_fresh_process(f"from funnel import Recommender; Recommender.load({str(path)!r})", with_plugin=False)
    assert done.returncode != 0 and "ArtifactError" in done.stderr
    assert f"cannot import module '{PLUGIN_MODULE}'" in done.stderr and "install the package" in done.stderr


def test_a_packaged_part_is_served_over_http(plugin_model, synth, tmp_path_factory, monkeypatch):
    from tests.test_serving import call, served

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]))
    user = int(synth.user_ids[2])
    with served(plugin_model, tmp_path_factory) as base:  # python main.py serve, a new process
        status, body = call(base, "/recommend", {"user_id": user, "n": 5})
    assert status == 200
    expected = plugin_model.recommend(user, n=5)["artist_id"].tolist()
    assert [r["artist_id"] for r in body["recommendations"]] == expected


def test_the_classes_of_this_page_fit_save_and_load_in_this_process(examples, synth, small_config, tmp_path):
    config = small_config.replace(features=(*small_config.features, "als_norm"),
                                  ranker={"part": "ridge", "alpha": 10.0})
    model = Recommender(config).fit(synth)
    assert "als_artist_norm" in model.feature_names_ and model.ranker_.alpha == 10.0
    recs = model.recommend_all(n=10)
    assert recs.groupby("user_id")["artist_id"].nunique().eq(10).all()
    loaded = Recommender.load(model.save(tmp_path / "model"))  # registered here again: found though in no module
    again = loaded.recommend_all(n=10)
    np.testing.assert_array_equal(recs["artist_id"].to_numpy(), again["artist_id"].to_numpy())
    np.testing.assert_allclose(recs["score"].to_numpy(), again["score"].to_numpy(), rtol=1e-6, atol=1e-9)
    with pytest.raises(ConfigError, match="ranker 'ridge': setting alpha"):
        Recommender(ranker={"part": "ridge", "alpha": 0.0})


def test_two_sources_of_one_class_with_their_own_models(synth, small_config):
    config = small_config.replace(models={**small_config.models, "als_4": {"part": "als", "factors": 4, "n_models": 1}},
                                  candidates={**small_config.candidates,
                                              "als_4": {"part": "als", "n": 20, "models": {"als": "als_4"}}})
    model = Recommender(config).fit(synth)
    stages = model.stages_
    assert stages.models_["als_4"].item_factors_.shape[1] == 4 and stages.models_["als"].item_factors_.shape[1] == 8 * 3
    mine = [s for s in stages.sources_ if s.name == "als_4"][0]
    assert mine.als is stages.models_["als_4"] and mine.n_candidates == 20
    assert {"als_4_log_rank", "als_4_source_score", "als_log_rank"} <= set(model.feature_names_)


def test_an_unknown_part_name_is_refused_with_the_registered_ones(examples):
    with pytest.raises(ConfigError, match="unknown candidate source 'nope'.*registered"):
        Recommender(candidates={"nope": 10})
    with pytest.raises(ConfigError, match="unknown feature group"):
        Recommender(features=("svd", "nope"))
    with pytest.raises(ConfigError, match="unknown ranker"):
        Recommender(ranker="nope")
    with pytest.raises(ConfigError, match="'most_played'.*setting min_listeners"):
        Recommender(candidates={"most_played": {"min_listeners": 0}})


def test_a_saved_class_that_is_gone_is_an_artifact_error(plugin_model, tmp_path):
    path = plugin_model.save(tmp_path / "model")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["classes"]["candidates/most_played"] = f"{PLUGIN_MODULE}:Renamed"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"cannot build: .*module '{PLUGIN_MODULE}' has no 'Renamed'"):
        Recommender.load(path)


def test_a_new_part_offering_a_space_and_a_driver_answers_without_the_built_in_ones(examples, synth, small_config,
                                                                                       tmp_path):
    config = small_config.replace(candidates={"listener_svd": 30, "popularity": 10}, features=("sources",))
    model = Recommender(config).fit(synth)
    source = model.stages_.sources_[0]
    assert model.stages_.offering(SimilaritySpace) == [source] == model.stages_.offering(ExplanationDriver)
    similar = model.similar_artists([1, 2], n=5)
    assert (similar["space"] == "listeners").all() and len(similar) == 10
    ids, scores = source.nearest_artists(np.array([0, 1]), 5)
    np.testing.assert_array_equal(similar["artist_id"].to_numpy(), model.artist_ids_[ids.ravel()])
    np.testing.assert_allclose(similar["similarity"].to_numpy(), scores.ravel(), rtol=1e-6)
    recs = model.recommend_all(n=5, explain=True)
    assert recs["because"].map(len).gt(0).any()
    # the because artists are the listener's artists closest in the source's own vectors
    first = recs.iloc[0]
    user = model.user_ids_.tolist().index(first["user_id"])
    artist = model.artist_ids_.tolist().index(first["artist_id"])
    _, closest, _ = closest_history(source.vectors_, model.history_[[user]], np.array([0]), np.array([artist]))
    assert first["because_ids"] == model.artist_ids_[closest].tolist()
    loaded = Recommender.load(model.save(tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.similar_artists([1, 2], n=5), similar)


def test_the_built_in_spaces_and_drivers_keep_their_preference_over_a_new_part(examples, synth, small_config):
    bare = Dataset.from_frames(synth.interactions)  # no tags: the ALS factors lead both
    config = small_config.replace(candidates={"listener_svd": 30, "als": 30}, features=("sources",))
    model = Recommender(config).fit(bare)
    assert (model.similar_artists(1, n=5)["space"] == "als").all()
    recs = model.recommend_all(n=5, explain=True)
    first = recs.iloc[0]
    user = model.user_ids_.tolist().index(first["user_id"])
    artist = model.artist_ids_.tolist().index(first["artist_id"])
    als = model.stages_.models_["als"]
    _, closest, _ = closest_history(als.item_factors_, model.history_[[user]], np.array([0]), np.array([artist]))
    assert first["because_ids"] == model.artist_ids_[closest].tolist()


def test_the_service_answers_in_a_new_parts_space(examples, synth, small_config, tmp_path_factory):
    from tests.test_serving import call, served_in_process

    config = small_config.replace(candidates={"listener_svd": 30, "popularity": 10}, features=("sources",))
    model = Recommender(config).fit(synth)
    with served_in_process(model, tmp_path_factory) as base:
        status, body = call(base, "/artists/1/similar?n=4")
    assert status == 200 and body["space"] == "listeners"
    assert [a["artist_id"] for a in body["similar"]] == model.similar_artists(1, n=4)["artist_id"].tolist()
