import json

import pytest

from funnel import ConfigError, FunnelConfig, Recommender
from funnel.config import DEFAULT_CANDIDATES, DEFAULT_FEATURES
from funnel.stages import Stages


def test_unknown_keys_are_rejected_with_the_valid_list():
    with pytest.raises(ConfigError, match=r"unknown setting 'modelz'; valid settings are \[.*'models'"):
        FunnelConfig.from_dict({"modelz": 3})
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        Recommender(bogus=1)  # at construction, not in fit
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        Recommender({"bogus": 1})
    with pytest.raises(ConfigError, match="must be a FunnelConfig or a mapping"):
        Recommender(["seed", 3])
    with pytest.raises(ConfigError, match="settings must be a mapping"):
        FunnelConfig.from_dict([("seed", 3)])


@pytest.mark.parametrize("old", ["tag_candidates", "als_candidates", "ease_candidates", "friends_candidates",
                                 "popularity_candidates", "use_svd_features", "use_als_features",
                                 "use_rp3_features", "use_log_ease_features", "ranker_C", "friends_score",
                                 "knn_neighbors", "svd_features", "tag_dim", "svd_factors", "als_models",
                                 "ranker_params", "index"])
def test_settings_of_the_old_design_are_unknown(old):
    with pytest.raises(ConfigError, match=f"unknown setting '{old}'.*a part's own settings go in its entry"):
        FunnelConfig(**{old: 1})


@pytest.mark.parametrize("change, message", [
    ({"models": {"embedder": {"tag_dim": 0}}}, r"models entry 'embedder' \(embedder\): setting tag_dim: Input should "
                                               "be greater than 0"),
    ({"candidates": {"tags": {"index": "kdtree"}}}, "candidates entry 'tags' .*setting index"),
    ({"ranker_holdout": 1.0}, "setting ranker_holdout"),
    ({"models": {"svd": {"factors": 2.5}}}, "setting factors"),
    ({"models": {"svd": {"factors": "8"}}}, "setting factors"),  # strict: no coercion of strings
    ({"seed": True}, "setting seed"),  # nor of bools to integers
    ({"show_progress": "yes"}, "setting show_progress"),
    ({"cache_dir": 3}, "setting cache_dir"),
    ({"candidates": {}}, "name at least one part in candidates"),
    ({"candidates": {"tags": 0}}, "source 'tags' must return at least 1 candidate"),
    ({"candidates": {"tags": 5.0}}, "setting candidates.tags"),
    ({"candidates": {"tags": {"n": 0}}}, "candidates entry 'tags' .*setting n"),
    ({"candidates": {"knn": 10}}, r"unknown candidate source 'knn' in setting 'candidates'; registered: \["),
    ({"candidates": {"x": {"part": 3}}}, "'part' names a class"),
    ({"candidates": {"x": {"part": "als", "models": {"als": 3}}}}, "'models' maps a requirement"),
    ({"candidates": {"x": {"part": "als", "models": {"svd": "svd"}}}}, r"'models' maps \['svd'\], which it does not"),
    ({"candidates": {"x": {"part": "no_such_module_xyz:Source"}}}, "cannot import module 'no_such_module_xyz'"),
    ({"candidates": {"x": {"part": "funnel.candidates:NoSuchSource"}}}, "has no 'NoSuchSource'"),
    ({"models": {"als": {"part": "als", "size": 3}}}, r"unknown setting 'size'; valid settings are \['alpha'"),
    ({"models": {"unused": {"part": "als", "factors": 0}}}, "models entry 'unused'"),  # checked though not read
    ({"features": ()}, "name at least one part in features"),
    ({"features": ("svd", "svd")}, "name one part twice"),
    ({"features": ("svd", "knn")}, "unknown feature group 'knn' in setting 'features'"),
    ({"ranker": "forest"}, r"unknown ranker 'forest' in setting 'ranker'; registered: \['lightgbm', 'logistic'"),
    ({"ranker": {"part": "logistic", "C": 0}}, "ranker 'logistic': setting C: Input should be greater than 0"),
    ({"ranker": {"part": "logistic", "C": "1"}}, "setting C: Input should be a valid number"),
    ({"ranker": {"part": "logistic", "max_iter": 0}}, "setting max_iter"),
    ({"ranker": {"part": "logistic", "gamma": 1}}, "unknown setting 'gamma'"),
    ({"fallback": "als"}, "fallback model 'als' .*does not offer top_unseen"),
])
def test_construction_names_the_bad_setting(change, message):
    with pytest.raises(ConfigError, match=message):
        Recommender(**change)


def test_several_bad_settings_are_reported_together():
    with pytest.raises(ConfigError, match="setting tag_dim.*; setting popularity_weight"):
        Recommender(models={"embedder": {"tag_dim": 0, "popularity_weight": -1.0}})
    with pytest.raises(ConfigError, match="setting seed.*; setting n_threads"):
        FunnelConfig(seed=-1, n_threads=-1)


def test_defaults():
    config = FunnelConfig()
    assert config.candidates == DEFAULT_CANDIDATES == {"tags": 100, "als": 100, "ease": 100, "friends": 50,
                                                       "popularity": 20}
    assert config.features == DEFAULT_FEATURES and config.ranker == "logistic" and config.models == {}
    parts = Stages(config).parts
    assert parts["models/svd"].settings.factors == 16 and parts["candidates/tags"].settings.search_dim == 32
    assert parts["candidates/tags"].settings.n == 100 and parts["ranker/logistic"].settings.C == 0.1


def test_configs_are_frozen():
    config = FunnelConfig()
    with pytest.raises(ConfigError, match=r"cannot be changed.*config.replace\(seed=...\)"):
        config.seed = 7
    assert config.seed == 0


def test_replace_to_dict_from_dict_and_fingerprint():
    base = FunnelConfig()
    assert base.replace(show_progress=True, cache_dir="x", n_threads=3).fingerprint() == base.fingerprint()
    assert base.replace(models={"svd": {"factors": 8}}).fingerprint() != base.fingerprint()
    assert base.replace(candidates={**DEFAULT_CANDIDATES, "tags": 50}).fingerprint() != base.fingerprint()
    reordered = dict(reversed(list(DEFAULT_CANDIDATES.items())))  # the merge order counts
    assert base.replace(candidates=reordered).fingerprint() != base.fingerprint()
    assert base.replace(features=("svd", "als")).fingerprint() != base.fingerprint()
    assert base.replace(ranker={"part": "logistic", "C": 1.0}).fingerprint() != base.fingerprint()
    assert base.fingerprint(("models",)) == base.replace(seed=7).fingerprint(("models",))
    with pytest.raises(ConfigError, match="seed"):
        base.replace(seed=-1)
    as_json = json.loads(json.dumps(base.to_dict()))  # a saved model's manifest
    assert as_json["features"] == list(DEFAULT_FEATURES)
    assert FunnelConfig.from_dict(as_json) == base
    assert FunnelConfig.from_dict(as_json).fingerprint() == base.fingerprint()
    assert base.replace(features=["als", "sources"]).features == ("als", "sources")
    assert "n_threads" not in base.model_settings() and "models" in base.model_settings()


def test_a_config_file_round_trips_in_order(tmp_path):
    config = FunnelConfig(candidates={"popularity": 5, "tags": {"n": 30, "search_dim": 8}},
                          features={"svd": {}, "tags": {"history_weighting": "plays"}},
                          ranker={"part": "lightgbm", "n_estimators": 30}, seed=3)
    path = tmp_path / "tuned.json"
    config.to_file(path)
    again = FunnelConfig.from_file(path)
    assert again == config and list(again.candidates) == ["popularity", "tags"] and list(again.features) == ["svd",
                                                                                                          "tags"]
    assert json.loads(path.read_text())["format"] == "funnel-config-1"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        FunnelConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        FunnelConfig.from_file(tmp_path / "missing.json")


def test_two_parts_of_one_class_with_their_own_settings_and_models():
    config = FunnelConfig(models={"als_16": {"part": "als", "factors": 16, "n_models": 1}},
                          candidates={"als": 10, "als_16": {"part": "als", "n": 5, "models": {"als": "als_16"},
                                                            "min_listeners": 1}},
                          features=("als", "sources"))
    parts = Stages(config).parts
    assert parts["candidates/als_16"].cls is parts["candidates/als"].cls
    assert parts["candidates/als_16"].models == {"als": "als_16"} and parts["candidates/als"].models == {"als": "als"}
    assert (parts["models/als_16"].settings.factors, parts["models/als"].settings.factors) == (16, 32)
    assert parts["candidates/als_16"].settings.n == 5


def test_a_part_is_found_by_dotted_path():
    config = FunnelConfig(candidates={"mine": {"part": "funnel.candidates.sources:PopularitySource", "n": 4}})
    parts = Stages(config).parts
    assert parts["candidates/mine"].cls.__name__ == "PopularitySource"
    assert Stages(config).classes()["candidates/mine"] == "funnel.candidates.sources:PopularitySource"


def test_recommender_stores_arguments_unchanged_and_validates_at_construction():
    small = {"models": {"embedder": {"tag_dim": 5}}}
    with pytest.raises(ConfigError, match="tag_dim"):
        Recommender({"models": {"embedder": {"tag_dim": -1}}}, seed=4)
    with pytest.raises(ConfigError, match="seed"):
        Recommender(small, seed=-4)
    model = Recommender(small, seed=4)
    assert model.config == small and model.overrides == {"seed": 4}
    assert model.get_params() == {"config": small, "seed": 4}


def test_set_params_validates_and_keeps_the_old_params_when_invalid():
    config = FunnelConfig(models={"embedder": {"tag_dim": 5}})
    model = Recommender(config, seed=4)
    assert model.set_params(seed=5, ranker_negatives=3) is model
    assert model.get_params() == {"config": config, "seed": 5, "ranker_negatives": 3}
    with pytest.raises(ConfigError, match="ranker_negatives"):
        model.set_params(ranker_negatives=-1)
    with pytest.raises(ConfigError, match="setting factors"):
        model.set_params(models={"svd": {"factors": 0}})
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        model.set_params(bogus=1)
    assert model.get_params() == {"config": config, "seed": 5, "ranker_negatives": 3}
    model.set_params(config={"seed": 6})
    assert model.get_params() == {"config": {"seed": 6}, "seed": 5, "ranker_negatives": 3}


def test_scikit_learn_can_clone_a_recommender():
    from sklearn.base import clone

    model = Recommender({"models": {"embedder": {"tag_dim": 5}}}, seed=4)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()


def test_every_built_in_parts_settings_are_documented():
    from pathlib import Path

    from funnel.candidates import SOURCES
    from funnel.factors import MODELS
    from funnel.protocols import PartSettings
    from funnel.ranking import FEATURES, RANKERS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections = {heading: doc.split(f"`{heading}`)")[1].split("\n## ")[0]
                for heading in ("models", "candidates", "features", "ranker")}
    for section, registry in (("models", MODELS), ("candidates", SOURCES), ("features", FEATURES),
                              ("ranker", RANKERS)):
        for name in registry:
            if not registry.get(name).__module__.startswith("funnel."):
                continue  # docs/extending.md's examples, registered for the tests
            settings = getattr(registry.get(name), "Settings", PartSettings)
            for field, info in settings.model_fields.items():
                row = f"| `{name}` | `{field}` | {json.dumps(info.default)} |"
                assert row in sections[section], f"docs/configuration.md lacks the row {row} under {section}"
    for field in FunnelConfig.model_fields:
        assert f"`{field}`" in doc.split("## The whole fit")[1].split("\n## ")[0], field
