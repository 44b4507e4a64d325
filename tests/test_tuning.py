"""funnel.tune: validation splits cut the way the model is used, a search over the parts' tunable settings,
and adoption only by the rule; ``main.py tune`` and ``--config``."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest

from funnel import ConfigError, DataError, FunnelConfig, TuneResult, tune
from funnel import tuning as tuning_module
from funnel.data.synthetic import synthetic_events
from tests.conftest import SMALL, with_listen_times


@pytest.fixture(scope="module")
def tuned(synth) -> TuneResult:
    return tune(synth, time_budget=600, n_trials=2, seed=0, show_progress=False, config=SMALL)


def test_tune_returns_a_validated_config_a_table_and_the_components(tuned):
    assert isinstance(tuned.config, FunnelConfig) and isinstance(tuned.adopted, bool)
    table = tuned.table
    assert table["trial"].tolist() == [0, 1, 2] and table.loc[0, "state"] == "starting configuration"
    assert table.loc[0, "ndcg@10"] == pytest.approx(table.loc[0, ["ndcg@10 split 1", "ndcg@10 split 2"]].mean())
    assert {"ranker", "models/als.factors", "candidates/tags.n"} <= set(table.columns)
    methods = tuned.components["method"].tolist()
    assert [m.split(" ")[0] for m in methods[:-1]] == ["EASE", "ALS", "BiasedSVD", "tag", "popularity"]
    assert methods[-1].startswith("funnel") and tuned.components["ndcg@10"].between(0, 1).all()
    assert tuned.verdict.startswith(("adopted", "kept the starting configuration"))
    if not tuned.adopted:
        assert tuned.config == FunnelConfig.from_dict({**SMALL, "show_progress": False})


def test_a_trial_draws_every_declared_setting_within_its_range():
    base = FunnelConfig(**SMALL)
    params = {"models/embedder.tag_dim": 40, "models/als.factors": 64, "models/als.iterations": 5,
              "models/als.alpha": 3.0, "models/als.regularization": 0.1, "models/als.confidence": "log",
              "models/svd.factors": 8, "models/ease.l2": 100.0, "models/ease.max_artists": 600,
              "models/log_ease.l2": 500.0, "models/log_ease.max_artists": 600, "models/rp3.beta": 0.5,
              "candidates/tags.n": 30, "candidates/als.n": 25, "candidates/ease.n": 21, "candidates/friends.n": 22,
              "candidates/popularity.n": 23, "ranker": "lightgbm", "ranker/lightgbm.n_estimators": 60,
              "ranker/lightgbm.learning_rate": 0.1, "ranker/lightgbm.num_leaves": 15,
              "ranker/lightgbm.min_child_samples": 50}
    config = tuning_module.suggest(optuna.trial.FixedTrial(params), base)
    assert config.models["als"] == {"factors": 64, "iterations": 5, "alpha": 3.0, "regularization": 0.1,
                                    "confidence": "log"}
    assert config.models["embedder"] == {"tag_dim": 40} and config.models["rp3"] == {"beta": 0.5}
    assert config.candidates["tags"] == {"n": 30, "search_dim": 8} and config.candidates["popularity"] == {"n": 23}
    assert config.ranker == {"part": "lightgbm", "n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15,
                             "min_child_samples": 50}
    # the ranges are the parts' own declarations: a value outside one is flagged by Optuna
    with pytest.warns(UserWarning, match="out of the range of the distribution IntDistribution\\(high=128"):
        tuning_module.suggest(optuna.trial.FixedTrial({**params, "models/als.factors": 1000}), base)


def test_validation_splits_follow_how_the_model_is_used(synth):
    timed = with_listen_times(synth)
    splits = tuning_module.validation_splits(timed, 3, seed=0)
    for train, held in splits:
        # each listener's held-out artists are the ones they started last
        kept = train.interactions.groupby("user_id")["first_listen"].max()
        assert (held["first_listen"].to_numpy() >= kept.loc[held["user_id"]].to_numpy()).all()
        assert train.n_users < timed.n_users  # a seeded share of the listeners
    assert set(splits[0][0].user_ids) != set(splits[1][0].user_ids)
    untimed = tuning_module.validation_splits(synth, 2, seed=0)
    assert untimed[0][1]["user_id"].nunique() > 0.9 * synth.n_users  # per user: every listener holds some out
    assert not untimed[0][1].equals(untimed[1][1])


@pytest.mark.parametrize("further, adopted", [((0.30, 0.31, 0.32), True), ((0.30, 0.20, 0.40), False),
                                              ((0.28, 0.29, 0.27), False)])
def test_the_best_trial_is_adopted_only_when_it_wins_on_further_splits_by_two_standard_errors(
        monkeypatch, further, adopted):
    base, best_config = FunnelConfig(seed=1), FunnelConfig(seed=2)
    scores = {(1, i): 0.29 for i in range(3)} | {(2, i): s for i, s in enumerate(further)}
    monkeypatch.setattr(tuning_module, "ndcg", lambda config, part: scores[(config.seed, part)])
    best = optuna.trial.create_trial(value=0.5, params={}, distributions={},
                                     user_attrs={"config": best_config.to_dict()})
    config, wins, verdict, table = tuning_module._decide(base, best, 0.3, [0, 1, 2], lambda: 1e9, 0.0)
    assert wins is adopted and config == (best_config if adopted else base)
    np.testing.assert_allclose(table["difference"], np.asarray(further) - 0.29)
    assert verdict.startswith("adopted" if adopted else "kept the starting configuration over")


def test_a_best_trial_no_better_than_the_start_is_not_adopted():
    base = FunnelConfig()
    best = optuna.trial.create_trial(value=0.2, params={}, distributions={})
    config, wins, verdict, table = tuning_module._decide(base, best, 0.3, [], lambda: 1e9, 0.0)
    assert config is base and not wins and table.empty and "no trial beat" in verdict


def test_bad_arguments_are_funnel_errors(synth):
    for budget in (0, -1, "600", True):
        with pytest.raises(ConfigError, match="time_budget"):
            tune(synth, time_budget=budget)
    with pytest.raises(ConfigError, match="n_trials"):
        tune(synth, n_trials=-1)
    with pytest.raises(DataError, match="funnel.Dataset"):
        tune(pd.DataFrame(), time_budget=1)
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        tune(synth, config={"bogus": 1})


def test_tune_writes_a_config_that_train_reads(tmp_path, capsys):
    import main

    events, _ = synthetic_events(n_users=150, n_artists=200, n_events=6000, seed=3)
    events.to_parquet(tmp_path / "events.parquet")
    FunnelConfig(**SMALL).to_file(tmp_path / "small.json")
    log = ["--events", str(tmp_path / "events.parquet"), "--user-col", "user", "--artist-col", "artist_mbid",
           "--time-col", "ts"]
    assert main.run(["tune", *log, "--config", str(tmp_path / "small.json"), "--trials", "0", "--time-budget", "600",
                     "--output", str(tmp_path / "tuned.json"), "--progress", "False"]) == 0
    out = capsys.readouterr().out
    assert "Each component alone" in out and "kept the starting configuration" in out
    assert json.loads((tmp_path / "tuned.json").read_text())["format"] == "funnel-config-1"
    assert FunnelConfig.from_file(tmp_path / "tuned.json").models == SMALL["models"]
    assert main.run([*log, "--config", str(tmp_path / "tuned.json"), "--artifacts", str(tmp_path / "artifacts"),
                     "--output", str(tmp_path / "recs.csv"), "--progress", "False"]) == 0
    manifest = json.loads((tmp_path / "artifacts" / "model" / "manifest.json").read_text())
    assert manifest["config"]["models"] == SMALL["models"] and manifest["config"]["seed"] == 0
    assert main.run(["tune", *log, "--output", str(tmp_path / "tuned.txt")]) == 1
    assert "must be a .json file" in capsys.readouterr().err
