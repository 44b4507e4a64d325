import json

import pytest

from funnel import ConfigError, FunnelConfig, Recommender
from funnel.config import DEFAULT_CANDIDATES, DEFAULT_FEATURES


def test_unknown_keys_are_rejected_with_the_valid_list():
    with pytest.raises(ConfigError, match=r"unknown setting 'tag_dimm'; valid settings are \[.*'tag_dim'"):
        FunnelConfig.from_dict({"tag_dimm": 3})
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        Recommender(bogus=1)  # at construction, not in fit
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        Recommender({"bogus": 1})
    with pytest.raises(ConfigError, match="must be a FunnelConfig or a mapping"):
        Recommender(["tag_dim", 3])
    with pytest.raises(ConfigError, match="settings must be a mapping"):
        FunnelConfig.from_dict([("tag_dim", 3)])


@pytest.mark.parametrize("old", ["tag_candidates", "als_candidates", "ease_candidates", "friends_candidates",
                                 "popularity_candidates", "use_svd_features", "use_als_features",
                                 "use_rp3_features", "use_log_ease_features", "ranker_C", "friends_score",
                                 "knn_neighbors", "svd_features"])
def test_settings_of_the_old_design_are_unknown(old):
    with pytest.raises(ConfigError, match=f"unknown setting '{old}'"):
        FunnelConfig(**{old: 1})


@pytest.mark.parametrize("change, message", [
    ({"tag_dim": 0}, "setting tag_dim: Input should be greater than 0"),
    ({"index": "kdtree"}, "setting index"),
    ({"ranker_holdout": 1.0}, "setting ranker_holdout"),
    ({"svd_factors": 2.5}, "setting svd_factors"),
    ({"svd_factors": "8"}, "setting svd_factors"),  # strict: no coercion of strings
    ({"seed": True}, "setting seed"),  # nor of bools to integers
    ({"show_progress": "yes"}, "setting show_progress"),
    ({"cache_dir": 3}, "setting cache_dir"),
    ({"candidates": {}}, "name at least one candidate source"),
    ({"candidates": {"tags": 0}}, "source 'tags' must return at least 1 candidate"),
    ({"candidates": {"tags": 5.0}}, "setting candidates.tags"),
    ({"candidates": {"knn": 10}}, r"unknown candidate source 'knn' in setting 'candidates'; registered: \["),
    ({"features": ()}, "name at least one feature group"),
    ({"features": ("svd", "svd")}, "name one group twice"),
    ({"features": ("svd", "knn")}, "unknown feature group 'knn' in setting 'features'"),
    ({"ranker": "forest"}, r"unknown ranker 'forest' in setting 'ranker'; registered: \['lightgbm', 'logistic'\]"),
    ({"ranker_params": {"C": 0}}, "ranker_params C=0 must be a number > 0"),
    ({"ranker_params": {"C": "1"}}, "ranker_params C='1' must be a number"),
    ({"ranker_params": {"max_iter": 0}}, "max_iter=0 must be an integer >= 1"),
    ({"ranker_params": {"gamma": 1}}, "ranker_params {'gamma': 1} do not fit LogisticRanker"),
])
def test_construction_names_the_bad_setting(change, message):
    with pytest.raises(ConfigError, match=message):
        FunnelConfig(**change)
    with pytest.raises(ConfigError, match=message):
        Recommender(**change)


def test_several_bad_settings_are_reported_together():
    with pytest.raises(ConfigError, match="setting tag_dim.*; setting svd_epochs"):
        FunnelConfig(tag_dim=0, svd_epochs=0)


def test_defaults():
    config = FunnelConfig()
    assert config.candidates == DEFAULT_CANDIDATES == {"tags": 100, "als": 100, "ease": 100, "friends": 50,
                                                       "popularity": 20}
    assert config.features == DEFAULT_FEATURES and config.ranker == "logistic" and config.ranker_params == {}


def test_configs_are_frozen():
    config = FunnelConfig()
    with pytest.raises(ConfigError, match=r"cannot be changed.*config.replace\(tag_dim=...\)"):
        config.tag_dim = 7
    assert config.tag_dim == 250


def test_replace_to_dict_from_dict_and_fingerprint():
    base = FunnelConfig()
    assert base.replace(show_progress=True, cache_dir="x", n_threads=3).fingerprint() == base.fingerprint()
    assert base.replace(svd_factors=8).fingerprint() != base.fingerprint()
    assert base.replace(candidates={**DEFAULT_CANDIDATES, "tags": 50}).fingerprint() != base.fingerprint()
    assert base.replace(features=("svd", "als")).fingerprint() != base.fingerprint()
    assert base.replace(ranker_params={"C": 1.0}).fingerprint() != base.fingerprint()
    assert base.fingerprint(("svd_factors",)) == base.replace(tag_dim=7).fingerprint(("svd_factors",))
    assert base.replace(tag_dim=7).tag_dim == 7 and base.tag_dim == 250
    with pytest.raises(ConfigError, match="tag_dim"):
        base.replace(tag_dim=-1)
    as_json = json.loads(json.dumps(base.to_dict()))  # a saved model's manifest
    assert as_json["features"] == list(DEFAULT_FEATURES)
    assert FunnelConfig.from_dict(as_json) == base
    assert FunnelConfig.from_dict(as_json).fingerprint() == base.fingerprint()
    assert base.replace(features=["als", "sources"]).features == ("als", "sources")
    assert "n_threads" not in base.model_settings() and "svd_factors" in base.model_settings()


def test_recommender_stores_arguments_unchanged_and_validates_at_construction():
    with pytest.raises(ConfigError, match="tag_dim"):
        Recommender({"tag_dim": -1}, seed=4)
    with pytest.raises(ConfigError, match="seed"):
        Recommender({"tag_dim": 5}, seed=-4)
    model = Recommender({"tag_dim": 5}, seed=4)
    assert model.config == {"tag_dim": 5} and model.overrides == {"seed": 4}
    assert model.get_params() == {"config": {"tag_dim": 5}, "seed": 4}


def test_set_params_validates_and_keeps_the_old_params_when_invalid():
    model = Recommender(FunnelConfig(tag_dim=5), seed=4)
    assert model.set_params(seed=5, svd_factors=3) is model
    assert model.get_params() == {"config": FunnelConfig(tag_dim=5), "seed": 5, "svd_factors": 3}
    with pytest.raises(ConfigError, match="svd_factors"):
        model.set_params(svd_factors=0)
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        model.set_params(bogus=1)
    assert model.get_params() == {"config": FunnelConfig(tag_dim=5), "seed": 5, "svd_factors": 3}
    model.set_params(config={"tag_dim": 6})
    assert model.get_params() == {"config": {"tag_dim": 6}, "seed": 5, "svd_factors": 3}


def test_scikit_learn_can_clone_a_recommender():
    from sklearn.base import clone

    model = Recommender({"tag_dim": 5}, seed=4)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
