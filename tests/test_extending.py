"""The worked examples of docs/extending.md, run as written: one source, one feature group, one ranker."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from funnel import FunnelConfig, Recommender
from funnel.candidates import SOURCES
from funnel.ranking import FEATURES, RANKERS

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


@pytest.fixture(scope="module")
def examples() -> dict:
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3, "docs/extending.md should show one source, one feature group and one ranker"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own document
    return namespace


def test_the_examples_register_one_part_each(examples):
    assert "most_played" in SOURCES and "als_norm" in FEATURES and "ridge" in RANKERS


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
