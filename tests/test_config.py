import pytest

from funnel import ConfigError, FunnelConfig, Recommender


def test_unknown_keys_are_rejected_with_the_valid_list():
    with pytest.raises(ConfigError, match="unknown setting.*tag_dimm"):
        FunnelConfig.from_dict({"tag_dimm": 3})
    with pytest.raises(ConfigError, match="unknown setting"):
        Recommender(bogus=1).fit(None)


@pytest.mark.parametrize("change, message", [
    ({"tag_dim": 0}, "tag_dim"),
    ({"index": "kdtree"}, "index"),
    ({"ranker_holdout": 1.0}, "ranker_holdout"),
    ({"svd_factors": 2.5}, "svd_factors"),
    ({"show_progress": "yes"}, "show_progress"),
    ({"tag_candidates": 0, "als_candidates": 0, "ease_candidates": 0, "friends_candidates": 0,
      "popularity_candidates": 0}, "every candidate source"),
])
def test_validate_names_the_bad_setting(change, message):
    with pytest.raises(ConfigError, match=message):
        FunnelConfig(**change).validate()


def test_replace_and_fingerprint_ignore_runtime_settings():
    base = FunnelConfig()
    assert base.replace(show_progress=True, cache_dir="x").fingerprint() == base.fingerprint()
    assert base.replace(svd_factors=8).fingerprint() != base.fingerprint()
    assert base.replace(tag_dim=7).tag_dim == 7 and base.tag_dim == 250


def test_recommender_stores_arguments_unchanged_and_validates_in_fit(synth):
    model = Recommender({"tag_dim": -1}, seed=4)
    assert model.config == {"tag_dim": -1} and model.overrides == {"seed": 4}
    with pytest.raises(ConfigError, match="tag_dim"):
        model.fit(synth)
