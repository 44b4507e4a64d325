"""funnel.spark on a real local[2] Spark session: scoring equals the in-process path, and so does aggregation."""

from __future__ import annotations

import os
import shutil
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from funnel import Recommender
from funnel.data.events import read_events
from funnel.data.synthetic import synthetic_events
from funnel.errors import ConfigError, DataError
from tests.conftest import with_string_ids
from tests.test_play_rules import BAD, GOOD, assert_same_interactions, interactions, plays

if not os.environ.get("CI"):  # CI installs both (.ci/run): there a missing one fails these tests instead
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (apt-get install openjdk-17-jre-headless)", allow_module_level=True)
    pytest.importorskip("pyspark", reason='the spark extra is not installed: pip install -e ".[spark]"')

import pyspark.sql.functions as F  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from funnel import spark as funnel_spark  # noqa: E402
from funnel.spark import score as spark_score  # noqa: E402

COLUMNS = ["user_id", "rank", "artist_id", "artist_name", "score"]


def mbid(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-{i:012x}"


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("funnel tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def string_model_dir(synth, small_config, tmp_path_factory):
    model = Recommender(small_config).fit(with_string_ids(synth, mbid))
    return model.save(tmp_path_factory.mktemp("spark") / "model", artist_side_only=True)


@pytest.fixture(scope="module")
def int_model_dir(fitted, tmp_path_factory):
    return fitted.save(tmp_path_factory.mktemp("spark") / "model", artist_side_only=True)


def histories_of(dataset, n_users: int | None = None) -> pd.DataFrame:
    frame = dataset.interactions[["user_id", "artist_id", "weight"]]
    if n_users is not None:
        frame = frame[frame["user_id"].isin(frame["user_id"].unique()[:n_users])]
    return frame.reset_index(drop=True)


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


def assert_same(spark_frame, local: pd.DataFrame) -> None:
    got, want = ordered(spark_frame.toPandas()), ordered(local)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    np.testing.assert_array_equal(got["user_id"].to_numpy(), want["user_id"].to_numpy())
    np.testing.assert_array_equal(got["rank"].to_numpy(), want["rank"].to_numpy())
    np.testing.assert_array_equal(got["artist_id"].to_numpy(), want["artist_id"].to_numpy())
    np.testing.assert_array_equal(got["artist_name"].to_numpy(), want["artist_name"].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=1e-5)


def test_string_ids_score_as_recommend_for_histories(spark, string_model_dir, synth):
    histories = histories_of(with_string_ids(synth, mbid))
    local = Recommender.load(string_model_dir).recommend_for_histories(histories, n=10)
    result = funnel_spark.recommend(spark.createDataFrame(histories), string_model_dir, n=10, partitions=3)
    assert result.schema.names == COLUMNS
    assert_same(result, local)


def test_a_packaged_part_scores_on_spark_executors(spark, synth, small_config, tmp_path):
    """docs/extending.md's package, shipped to the executors as a user would (``--py-files``), scores as in-process."""
    from tests.extending_examples import PLUGIN_DIR, PLUGIN_MODULE
    from tests.test_extending import plugin_config

    model = Recommender(plugin_config(small_config)).fit(synth)
    path = model.save(tmp_path / "model", artist_side_only=True)
    spark.sparkContext.addPyFile(str(PLUGIN_DIR / f"{PLUGIN_MODULE}.py"))
    histories = histories_of(synth, n_users=40)
    local = Recommender.load(path).recommend_for_histories(histories, n=10)
    assert_same(funnel_spark.recommend(spark.createDataFrame(histories), path, n=10, partitions=2), local)


def test_integer_ids_shipped_model_and_other_column_names(spark, int_model_dir, synth):
    histories = histories_of(synth).rename(columns={"user_id": "listener", "artist_id": "item", "weight": "plays"})
    local = Recommender.load(int_model_dir).recommend_for_histories(
        histories.set_axis(["user_id", "artist_id", "weight"], axis=1), n=5)
    frame = spark.createDataFrame(histories).withColumn("listener", F.col("listener").cast("int"))
    result = funnel_spark.recommend(frame, int_model_dir, n=5, user="listener", artist="item", weight="plays",
                                    ship=True)
    assert dict(result.dtypes) == {"user_id": "bigint", "rank": "bigint", "artist_id": "bigint",
                                   "artist_name": "string", "score": "double"}
    assert_same(result, local)


def test_one_row_per_play_without_weights(spark, int_model_dir, synth):
    histories = histories_of(synth, n_users=20)
    plays = histories.loc[histories.index.repeat(histories["weight"].clip(upper=3).astype(int)),
                          ["user_id", "artist_id"]]
    local = Recommender.load(int_model_dir).recommend_for_histories(plays, n=5)
    assert_same(funnel_spark.recommend(spark.createDataFrame(plays), int_model_dir, n=5, weight=None), local)


def test_rules_and_explanations_as_in_process(spark, string_model_dir, synth):
    histories = histories_of(with_string_ids(synth, mbid), n_users=40)
    model = Recommender.load(string_model_dir)
    popular = model.recommend_for_histories(histories, n=3)["artist_id"].value_counts().index[:3].tolist()
    allow = model.artist_ids_[::2].tolist()
    local = model.recommend_for_histories(histories, n=5, explain=True, exclude=popular, allow=allow)
    local = local[COLUMNS + ["reason"]]
    result = funnel_spark.recommend(spark.createDataFrame(histories), string_model_dir, n=5, explain=True,
                                    exclude=popular, allow=allow)
    assert_same(result, local)
    assert not set(popular) & set(result.toPandas()["artist_id"])
    np.testing.assert_array_equal(ordered(result.toPandas())["reason"], ordered(local)["reason"])


def test_per_user_exclusions_from_a_dataframe(spark, string_model_dir, synth):
    histories = histories_of(with_string_ids(synth, mbid), n_users=30)
    model = Recommender.load(string_model_dir)
    first = model.recommend_for_histories(histories, n=2)
    blocked = first[first["rank"] == 1][["user_id", "artist_id"]]  # each listener's best artist, for that one only
    local = model.recommend_for_histories(histories, n=5, exclude=blocked)
    result = funnel_spark.recommend(spark.createDataFrame(histories), string_model_dir, n=5,
                                    exclude=spark.createDataFrame(blocked))
    assert_same(result, local)
    got = result.toPandas()
    assert got.merge(blocked, on=["user_id", "artist_id"]).empty
    # an artist blocked for one listener still reaches the others
    assert got["artist_id"].isin(blocked["artist_id"]).any()


def test_artists_outside_the_catalogue_are_ignored_and_empty_partitions_give_nothing(spark, int_model_dir, synth):
    histories = histories_of(synth, n_users=10)
    stray = pd.DataFrame({"user_id": [10**9, histories["user_id"].iloc[0]], "artist_id": [10**9, 10**9 + 1],
                          "weight": [1.0, 1.0]})
    local = Recommender.load(int_model_dir).recommend_for_histories(histories, n=4)
    result = funnel_spark.recommend(spark.createDataFrame(pd.concat([histories, stray])), int_model_dir, n=4,
                                    partitions=16)  # more partitions than listeners: some are empty
    assert_same(result, local)


def test_bad_inputs_fail_on_the_driver_with_a_funnel_error(spark, int_model_dir, string_model_dir, synth):
    frame = spark.createDataFrame(histories_of(synth, n_users=5))
    with pytest.raises(DataError, match="Spark DataFrame"):
        funnel_spark.recommend(histories_of(synth), int_model_dir)
    with pytest.raises(DataError, match="no column 'listener'"):
        funnel_spark.recommend(frame, int_model_dir, user="listener")
    with pytest.raises(ConfigError, match="model's artist ids are strings"):
        funnel_spark.recommend(frame, string_model_dir)
    with pytest.raises(DataError, match="BooleanType; ids must be integers or strings"):
        funnel_spark.recommend(frame.withColumn("artist_id", frame["artist_id"].cast("boolean")), int_model_dir)
    with pytest.raises(ConfigError, match="allow names no artist"):
        funnel_spark.recommend(frame, int_model_dir, allow=[10**9])
    with pytest.raises(ConfigError, match="partitions"):
        funnel_spark.recommend(frame, int_model_dir, partitions=0)
    with pytest.raises(DataError, match="weights must be numbers: cast it, or pass weight=None"):
        funnel_spark.recommend(frame.withColumn("weight", frame["artist_id"].cast("boolean")), int_model_dir)


def test_play_rules_give_spark_the_verdicts_of_the_local_engines(spark, int_model_dir):
    """The cases of tests/test_play_rules.py: refused on the driver by the rule pandas and DuckDB report, naming
    the same first bad row and value, before any task runs; accepted and aggregated or scored as in process."""
    for case in BAD:
        with pytest.raises(DataError, match=case.message) as error:
            funnel_spark.recommend(spark.createDataFrame(case.frame), int_model_dir)
        if case.row is not None:
            assert case.where(numbered=False) in str(error.value)
    model = Recommender.load(int_model_dir)
    for case in GOOD:
        got = funnel_spark.aggregate_events(spark.createDataFrame(case.frame), weight="weight").toPandas()
        assert_same_interactions(got.sort_values(["user_id", "artist_id"], ignore_index=True),
                                 interactions(case.frame))
    for case in GOOD[:3]:  # float ids and text weights, scored end to end
        assert_same(funnel_spark.recommend(spark.createDataFrame(case.frame), int_model_dir, n=3),
                    model.recommend_for_histories(case.frame, n=3))
    empty = plays().iloc[:0]
    with pytest.raises(DataError) as local:
        model.recommend_for_histories(empty)
    with pytest.raises(DataError) as on_spark:
        funnel_spark.recommend(spark.createDataFrame(empty, "user_id long, artist_id long, weight double"),
                               int_model_dir)
    assert str(on_spark.value) == str(local.value) == ("interactions are empty: no rows; at least one (user_id, "
                                                       "artist_id, weight) row is needed")


def test_a_worker_keeps_its_model_and_reloads_a_new_save(int_model_dir, fitted, tmp_path):
    path = fitted.save(tmp_path / "model", artist_side_only=True)
    task = spark_score._Task(path=str(path), shipped=False, n=5, explain=False, exclude=None, allow=None,
                             filter_known=True, per_user=False, columns=tuple(COLUMNS))
    first = spark_score._model(task)
    assert spark_score._model(task) is first
    assert first.config_.n_threads == 1
    fitted.save(path, artist_side_only=True)  # a new save at the same path
    os.utime(path / "manifest.json", ns=(1, 1))
    assert spark_score._model(task) is not first


def test_write_parquet_replaces_the_output_atomically(spark, tmp_path):
    out = tmp_path / "recs.parquet"
    funnel_spark.write_parquet(spark.createDataFrame(pd.DataFrame({"a": [1, 2]})), out)
    funnel_spark.write_parquet(spark.createDataFrame(pd.DataFrame({"a": [3]})), out)
    assert pd.read_parquet(out)["a"].tolist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["recs.parquet"]  # no staging directory left behind


# aggregation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def log():
    events, _ = synthetic_events(n_users=200, n_artists=300, n_events=12_000, seed=5)
    return events


def compare_aggregates(spark_frame, duckdb_frame: pd.DataFrame, summed: bool = False) -> None:
    got = spark_frame.toPandas().sort_values(["user_id", "artist_id"]).reset_index(drop=True)
    assert list(got.columns) == list(duckdb_frame.columns)
    assert len(got) == len(duckdb_frame)
    for column in duckdb_frame.columns:
        if column.endswith("_listen"):
            np.testing.assert_array_equal(got[column].to_numpy("datetime64[ns]"), duckdb_frame[column].to_numpy())
        elif column == "weight" and summed:  # sums of floats in another order differ in the last bits
            np.testing.assert_allclose(got[column].to_numpy(), duckdb_frame[column].to_numpy(), rtol=1e-12)
        else:
            np.testing.assert_array_equal(got[column].to_numpy(), duckdb_frame[column].to_numpy())


def test_aggregation_equals_read_events_on_a_synthetic_log(spark, log, tmp_path):
    path = tmp_path / "plays.parquet"
    log.to_parquet(path, coerce_timestamps="us")  # Spark reads no nanosecond Parquet times
    keywords = dict(user="user", artist="artist_mbid", timestamp="ts", duration="duration_ms", min_duration=30_000)
    compare_aggregates(funnel_spark.aggregate_events(spark.read.parquet(str(path)), **keywords),
                       read_events(path, **keywords))
    counted = dict(user="user", artist="artist_mbid")
    compare_aggregates(funnel_spark.aggregate_events(spark.read.parquet(str(path)), **counted),
                       read_events(path, **counted))


def test_aggregation_of_weights_epoch_seconds_and_integer_ids(spark, log):
    frame = pd.DataFrame({"u": log["user"].str[5:].astype(int), "a": log["artist_mbid"],
                          "t": log["ts"].astype("int64") / 1e9, "w": log["duration_ms"] / 1000.0})
    keywords = dict(user="u", artist="a", timestamp="t", weight="w")
    compare_aggregates(funnel_spark.aggregate_events(spark.createDataFrame(frame), **keywords),
                       read_events(frame, **keywords), summed=True)


def test_aggregation_validates_every_play(spark, log):
    bad = log.head(50).copy()
    bad["weight"] = 1.0
    bad.loc[bad.index[:3], "weight"] = -1.0
    bad.loc[bad.index[3], "user"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = spark.createDataFrame(bad)
    with pytest.raises(DataError, match=rf"the events DataFrame column 'user' has 1 empty \(null\) id\(s\), first at "
                                        rf"the row with artist_mbid '{bad.artist_mbid.iloc[3]}', weight 1.0; drop"):
        funnel_spark.aggregate_events(frame, user="user", artist="artist_mbid", weight="weight")
    with pytest.raises(DataError, match=r"column 'weight' must be a finite number > 0 and <= 1e\+30 \(a play count\); "
                                        r"3 bad row\(s\), the first: the row with user 'user_\d+', artist_mbid .* "
                                        r"has -1.0"):
        funnel_spark.aggregate_events(frame.where(frame["user"].isNotNull()), user="user", artist="artist_mbid",
                                      weight="weight")
    kept = funnel_spark.aggregate_events(frame, user="user", artist="artist_mbid", weight="weight", validate=False)
    assert kept.agg({"weight": "sum"}).first()[0] == 46.0
    with pytest.raises(DataError, match="no column 'when'"):
        funnel_spark.aggregate_events(frame, user="user", artist="artist_mbid", timestamp="when")
    with pytest.raises(ConfigError, match="go together"):
        funnel_spark.aggregate_events(frame, user="user", artist="artist_mbid", duration="duration_ms")


# the command line ---------------------------------------------------------------------------
def test_score_command_writes_the_same_on_both_engines(spark, string_model_dir, synth, tmp_path, capsys):
    import main

    histories = histories_of(with_string_ids(synth, mbid))
    histories.to_parquet(tmp_path / "histories.parquet")
    blocked = Recommender.load(string_model_dir).artist_ids_[:5]
    pd.DataFrame({"artist_id": blocked}).to_parquet(tmp_path / "exclude.parquet")
    common = ["--artifacts", str(string_model_dir), "--histories", str(tmp_path / "histories.parquet"),
              "--exclude", str(tmp_path / "exclude.parquet"), "--topn", "7", "--progress", "False"]
    assert main.run(["score", "--engine", "local", "--output", str(tmp_path / "local.parquet"), *common]) == 0
    assert main.run(["score", "--engine", "spark", "--output", str(tmp_path / "spark.parquet"), *common]) == 0
    local, on_spark = (ordered(pd.read_parquet(tmp_path / f"{name}.parquet")) for name in ("local", "spark"))
    pd.testing.assert_frame_equal(on_spark, local, check_exact=False, atol=1e-5)
    assert local["user_id"].nunique() == histories["user_id"].nunique()
    assert not local["artist_id"].isin(blocked).any()


def test_score_command_scores_the_training_histories_of_a_full_model(spark, fitted, tmp_path):
    import main

    fitted.save(tmp_path / "art" / "model")
    for engine in ("local", "spark"):
        args = ["score", "--engine", engine, "--artifacts", str(tmp_path / "art"), "--topn", "5",
                "--output", str(tmp_path / f"{engine}.parquet")]
        assert main.run(args) == 0
    local, on_spark = (ordered(pd.read_parquet(tmp_path / f"{name}.parquet")) for name in ("local", "spark"))
    pd.testing.assert_frame_equal(on_spark, local, check_exact=False, atol=1e-5)
    assert set(local["user_id"]) == set(fitted.user_ids_)


def test_score_command_refuses_bad_histories_alike_on_both_engines(spark, int_model_dir, synth, tmp_path, capsys):
    import main

    histories = histories_of(synth, n_users=30)
    histories.loc[100, "weight"] = np.nan  # a null in the Parquet file
    histories.to_parquet(tmp_path / "nan.parquet")
    histories.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    errors = {}
    for name in ("nan", "empty"):
        for engine in ("local", "spark"):
            assert main.run(["score", "--engine", engine, "--artifacts", str(int_model_dir), "--histories",
                             str(tmp_path / f"{name}.parquet"), "--output", str(tmp_path / "recs.parquet")]) == 1
            errors[name, engine] = capsys.readouterr().err.strip()
    assert errors["empty", "local"] == errors["empty", "spark"] == (
        "error: interactions are empty: no rows; at least one (user_id, artist_id, weight) row is needed")
    rule = ("error: interactions column 'weight' must be a finite number > 0 and <= 1e+30 (a play count); 1 bad "
            "row(s), the first: {} has an empty value (null or NaN); correct or delete those rows")
    assert errors["nan", "local"] == rule.format("row 100")
    user, artist = histories.loc[100, ["user_id", "artist_id"]]
    assert errors["nan", "spark"] == rule.format(f"the row with user_id {user}, artist_id {artist}")
    assert not (tmp_path / "recs.parquet").exists()


def test_score_command_errors_are_one_line(spark, int_model_dir, tmp_path, capsys):
    import main

    base = ["score", "--artifacts", str(int_model_dir)]
    assert main.run([*base, "--engine", "spark", "--output", str(tmp_path / "x.csv")]) == 1
    assert "Parquet directory" in capsys.readouterr().err
    assert main.run([*base, "--output", str(tmp_path / "x.parquet")]) == 1
    err = capsys.readouterr().err
    assert "artist-side only" in err and "pass --histories PATH" in err
    pd.DataFrame({"user": [1]}).to_parquet(tmp_path / "h.parquet")
    assert main.run([*base, "--histories", str(tmp_path / "h.parquet"), "--output", str(tmp_path / "x.parquet")]) == 1
    assert "has no column 'user_id', 'artist_id'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main.run([*base, "--master", "local[2]", "--output", str(tmp_path / "x.parquet")])
    assert exit_.value.code == 2 and "--engine spark only" in capsys.readouterr().err


def test_train_on_spark_learns_what_the_local_engine_learns_and_scores_every_listener(spark, log, tmp_path):
    import main

    path = tmp_path / "plays.parquet"
    log.to_parquet(path, coerce_timestamps="us")
    flags = ["--events", str(path), "--user-col", "user", "--artist-col", "artist_mbid", "--time-col", "ts",
             "--progress", "False", "--runsvd", "True", "--judge", "True"]
    pairs = tmp_path / "pairs.parquet"
    assert main.run(["train", "--engine", "spark", "--master", "local[2]", "--artifacts", str(tmp_path / "spark"),
                     "--histories-output", str(pairs), *flags]) == 0
    assert main.run(["train", "--artifacts", str(tmp_path / "local"), "--output", str(tmp_path / "local.csv"),
                     *flags]) == 0
    on_spark, local = (Recommender.load(tmp_path / name / "model") for name in ("spark", "local"))
    assert on_spark.artist_side_only_ and np.array_equal(on_spark.artist_ids_, local.artist_ids_)
    histories = pd.read_parquet(pairs)
    assert histories["user_id"].nunique() == log["user"].nunique()
    plays = histories[["user_id", "artist_id", "weight"]]
    ours, theirs = on_spark.recommend_for_histories(plays, n=10), local.recommend_for_histories(plays, n=10)
    same = (ours.groupby("user_id")["artist_id"].apply(tuple) == theirs.groupby("user_id")["artist_id"].apply(tuple))
    assert same.mean() >= 0.95  # fitted on the same plays (thread timing moves the last bits)
    output = tmp_path / "everyone.parquet"
    assert main.run(["score", "--engine", "spark", "--artifacts", str(tmp_path / "spark"), "--histories", str(pairs),
                     "--topn", "5", "--output", str(output)]) == 0
    assert pd.read_parquet(output).groupby("user_id").size().eq(5).sum() == log["user"].nunique()


def test_a_spark_sample_takes_every_play_of_the_listeners_it_draws(spark, log):
    from funnel.spark.fit import sample_dataset

    pairs = funnel_spark.aggregate_events(spark.createDataFrame(log), user="user", artist="artist_mbid")
    every = pairs.toPandas()
    half, n_users = sample_dataset(pairs, 0.5, seed=3)
    assert n_users == log["user"].nunique() == 200 and 70 <= half.n_users <= 130
    again, _ = sample_dataset(pairs, 0.5, seed=3)
    assert np.array_equal(again.user_ids, half.user_ids)
    assert not np.array_equal(sample_dataset(pairs, 0.5, seed=4)[0].user_ids, half.user_ids)
    assert len(half.interactions) == every["user_id"].isin(half.user_ids).sum()  # all of each one's plays
    assert set(half.artist_ids) == set(every["artist_id"])  # the catalogue is every artist of the log
    counted, _ = sample_dataset(pairs, 50, seed=3)
    assert 25 <= counted.n_users <= 75
    assert sample_dataset(pairs, None)[0].n_users == 200
    with pytest.raises(ConfigError, match="fit_users"):
        sample_dataset(pairs, 1.5)


def test_train_flags_of_the_other_engine_are_refused(tmp_path, capsys):
    import main

    for flags, message in [(["--master", "local[2]"], "apply to --engine spark only"),
                           (["--engine", "spark"], "--engine spark reads an event log"),
                           (["--engine", "spark", "--events", "x.parquet", "--output", "r.csv"],
                            "apply to --engine local only")]:
        with pytest.raises(SystemExit) as exit_:
            main.run(["train", "--artifacts", str(tmp_path), *flags])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_mllib_als_learns_factors_that_rank_like_implicits(spark, synth):
    from funnel import split
    from funnel.baselines import ALSRecommender, MLlibALSRecommender
    from funnel.evaluation import evaluate

    train, test = split.per_user(synth, seed=0)
    mllib = MLlibALSRecommender(factors=8, iterations=10, regularization=0.01).fit(train)
    assert mllib.model_.user_factors.shape == (train.n_users, 8)
    assert mllib.model_.item_factors.shape == (train.n_artists, 8)
    recs = mllib.recommend_all(n=5)
    assert (recs.groupby("user_id").size() == 5).all()
    heard = recs.merge(train.interactions, on=["user_id", "artist_id"])
    assert heard.empty  # known artists are never recommended
    implicit = ALSRecommender(factors=8, iterations=10, regularization=0.01).fit(train)
    ours, theirs = evaluate(mllib, train, test)["ndcg@10"], evaluate(implicit, train, test)["ndcg@10"]
    assert ours > 0.5 * theirs  # the planted clusters are found by both trainers
