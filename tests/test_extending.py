"""The worked examples of docs/extending.md, run as written: a source, a feature group, a ranker and a
source that offers an artist space and an explanation driver."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnel import Dataset, FunnelConfig, Recommender
from funnel.candidates import SOURCES
from funnel.explain import closest_history
from funnel.protocols import ExplanationDriver, SimilaritySpace
from funnel.ranking import FEATURES, RANKERS

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


@pytest.fixture(scope="module")
def examples() -> dict:
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 4, ("docs/extending.md should show one source, one feature group, one ranker and "
                              "one source that offers capabilities")
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own document
    return namespace


def test_the_examples_register_one_part_each(examples):
    assert "most_played" in SOURCES and "als_norm" in FEATURES and "ridge" in RANKERS
    assert "listener_svd" in SOURCES


def test_a_recommender_built_from_the_new_parts_fits_saves_and_loads(examples, synth, small_config, tmp_path):
    config = small_config.replace(candidates={**small_config.candidates, "most_played": 15},
                                  features=(*small_config.features, "als_norm"),
                                  ranker="ridge", ranker_params={"alpha": 10.0})
    model = Recommender(config).fit(synth)
    assert "most_played" in model.stages_.source_names
    assert "als_artist_norm" in model.feature_names_
    assert {"most_played_log_rank", "most_played_source_score"} <= set(model.feature_names_)
    recs = model.recommend_all(n=10)
    assert recs.groupby("user_id")["artist_id"].nunique().eq(10).all()
    loaded = Recommender.load(model.save(tmp_path / "model"))
    again = loaded.recommend_all(n=10)
    np.testing.assert_array_equal(recs["artist_id"].to_numpy(), again["artist_id"].to_numpy())
    np.testing.assert_allclose(recs["score"].to_numpy(), again["score"].to_numpy(), rtol=1e-6, atol=1e-9)


def test_an_unknown_part_name_is_refused_with_the_registered_ones(examples):
    from funnel.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown candidate source 'nope'.*registered"):
        FunnelConfig(candidates={"nope": 10})
    with pytest.raises(ConfigError, match="unknown feature group"):
        FunnelConfig(features=("svd", "nope"))
    with pytest.raises(ConfigError, match="unknown ranker"):
        FunnelConfig(ranker="nope")


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
