"""read_events (plays -> (user, artist) rows, in DuckDB) and funnel.data.synthetic.synthetic_events."""

from __future__ import annotations

import logging
import re
import uuid

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnel.data.events import read_events
from funnel.data.synthetic import synthetic_events
from funnel.errors import ConfigError, DataError

NOW = "2024-06-01"
MBID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def plays() -> pd.DataFrame:
    """Seven plays, one a 5-second skip; the answer is in :func:`expected`."""
    return pd.DataFrame({
        "user": ["u2", "u1", "u1", "u1", "u2", "u1", "u1"],
        "artist": [7, 9, 7, 7, 9, 9, 3],
        "ts": pd.to_datetime(["2024-03-03 12:00", "2024-03-02 08:00", "2024-03-05 09:00", "2024-03-01 10:00",
                              "2024-03-04 00:00", "2024-03-06 07:30", "2024-03-07 23:59"]).astype("datetime64[ns]"),
        "plays": [1.0, 2.5, 1.0, 3.0, 4.0, 0.5, 1.0],
        "ms": [240_000, 200_000, 180_000, 200_000, 190_000, 5_000, 31_000],
    })


def expected(weights: bool = False, skips: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame({
        "user_id": pd.Series(["u1", "u1", "u1", "u2", "u2"], dtype=object),
        "artist_id": np.array([3, 7, 9, 7, 9], dtype=np.int64),
        "weight": [1.0, 2.0, 2.0, 1.0, 1.0],
        "first_listen": pd.to_datetime(["2024-03-07 23:59", "2024-03-01 10:00", "2024-03-02 08:00",
                                        "2024-03-03 12:00", "2024-03-04 00:00"]).astype("datetime64[ns]"),
        "last_listen": pd.to_datetime(["2024-03-07 23:59", "2024-03-05 09:00", "2024-03-06 07:30",
                                       "2024-03-03 12:00", "2024-03-04 00:00"]).astype("datetime64[ns]"),
    })
    if weights:
        frame["weight"] = [1.0, 4.0, 3.0, 1.0, 4.0]
    if skips:  # u1's 5-second play of artist 9 on 03-06 is gone
        frame.loc[2, ["weight", "last_listen"]] = [2.5 if weights else 1.0, pd.Timestamp("2024-03-02 08:00")]
    return frame


KEYS = {"user": "user", "artist": "artist", "timestamp": "ts", "now": NOW}


def as_source(kind: str, frame: pd.DataFrame, tmp_path) -> dict:
    """The keyword arguments that hand ``frame`` to read_events as ``kind``."""
    if kind == "frame":
        return {"source": frame}
    if kind == "arrow":
        return {"source": pa.Table.from_pandas(frame, preserve_index=False)}
    if kind == "parquet":
        frame.to_parquet(tmp_path / "plays.parquet", index=False)
        return {"source": tmp_path / "plays.parquet"}
    if kind == "csv":
        frame.to_csv(tmp_path / "plays.csv", index=False)
        return {"source": str(tmp_path / "plays.csv")}
    if kind == "csv.gz":
        frame.to_csv(tmp_path / "plays.csv.gz", index=False)
        return {"source": str(tmp_path / "plays.csv.gz")}
    if kind in ("directory", "glob"):
        folder = tmp_path / "logs"
        (folder / "day=2").mkdir(parents=True)
        frame.iloc[:3].to_parquet(folder / "part-0.parquet", index=False)
        frame.iloc[3:].to_parquet(folder / "day=2" / "part-1.parquet", index=False)
        (folder / "_SUCCESS").write_text("")  # what Spark leaves behind: ignored
        return {"source": str(folder) if kind == "directory" else str(folder / "**" / "*.parquet")}
    if kind == "sql":
        frame.to_parquet(tmp_path / "plays.parquet", index=False)
        return {"sql": f"SELECT * FROM '{tmp_path / 'plays.parquet'}';"}
    if kind == "database":
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
            con.register("frame", frame)
            con.execute("CREATE TABLE plays AS SELECT * FROM frame")
        return {"sql": "SELECT * FROM plays", "database": tmp_path / "warehouse.duckdb"}
    raise AssertionError(kind)


SOURCES = ["frame", "arrow", "parquet", "csv", "csv.gz", "directory", "glob", "sql", "database"]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_kind_of_source_gives_the_same_aggregate(kind, tmp_path):
    got = read_events(**as_source(kind, plays(), tmp_path), **KEYS)
    pd.testing.assert_frame_equal(got, expected())
    assert isinstance(got.user_id.iloc[0], str)


@pytest.mark.parametrize("kind", ["frame", "parquet", "csv", "sql"])
def test_weights_and_skips(kind, tmp_path):
    source = as_source(kind, plays(), tmp_path)
    pd.testing.assert_frame_equal(read_events(**source, **KEYS, weight="plays"), expected(weights=True))
    skipped = read_events(**source, **KEYS, weight="plays", duration="ms", min_duration=30_000)
    pd.testing.assert_frame_equal(skipped, expected(weights=True, skips=True))
    pd.testing.assert_frame_equal(read_events(**source, **KEYS, duration="ms", min_duration=30_000),
                                  expected(skips=True))


def test_without_times_only_ids_and_weight_and_default_column_names():
    frame = plays().rename(columns={"user": "user_id", "artist": "artist_id"})
    got = read_events(frame)
    assert list(got.columns) == ["user_id", "artist_id", "weight"]
    pd.testing.assert_frame_equal(got, expected()[["user_id", "artist_id", "weight"]])


def test_source_columns_named_like_the_internal_ones_change_nothing():
    frame = plays().assign(t=pd.Timestamp("2099-01-01"), w=-1.0, d=0, u=None, a=None, ok=False)
    pd.testing.assert_frame_equal(read_events(frame, **KEYS, weight="plays", duration="ms", min_duration=30_000),
                                  expected(weights=True, skips=True))


def test_ids_keep_their_type(tmp_path):
    frame = plays()
    frame["user"] = frame.user.map({"u1": 10, "u2": 20})  # int users, str artists
    frame["artist"] = frame.artist.map({3: "c", 7: "a", 9: "b"}).astype("string")  # pandas' string dtype
    got = read_events(frame, user="user", artist="artist")
    assert got.user_id.dtype == np.int64 and got.artist_id.dtype == object
    assert got.user_id.tolist() == [10, 10, 10, 20, 20] and got.artist_id.tolist() == ["a", "b", "c", "a", "b"]
    assert all(type(a) is str for a in got.artist_id)
    frame["user"] = frame.user.astype(object)  # Python ints in an object column
    frame["artist"] = pd.Categorical(frame.artist.astype(str))
    got = read_events(frame, user="user", artist="artist")
    assert got.user_id.dtype == np.int64 and got.artist_id.tolist() == ["a", "b", "c", "a", "b"]
    frame["user"] = frame.user.astype("int32")
    frame.to_parquet(tmp_path / "p.parquet")
    assert read_events(tmp_path / "p.parquet", user="user", artist="artist").user_id.dtype == np.int64


def test_uuid_ids_come_back_as_strings(tmp_path):
    ids = ["6f040f59-e161-436d-af48-e988f927d52d", "0f6f6f5b-a21f-4537-866b-a7d427c434f2"]
    frame = pd.DataFrame({"user_id": [1, 1, 2], "artist_id": [ids[0], ids[1], ids[0]]})
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:  # a real UUID column
        con.register("frame", frame)
        con.execute("CREATE TABLE plays AS SELECT user_id, CAST(artist_id AS UUID) AS artist_id FROM frame")
    got = read_events(sql="SELECT * FROM plays", database=tmp_path / "db.duckdb")
    assert got.artist_id.tolist() == [ids[1], ids[0], ids[0]] and got.artist_id.dtype == object
    as_objects = frame.assign(artist_id=frame.artist_id.map(uuid.UUID))  # as Dataset.from_frames takes them
    pd.testing.assert_frame_equal(read_events(as_objects), got)


def test_times_as_epoch_seconds_iso_strings_and_zones():
    frame = plays()
    want = expected()
    seconds = (frame.ts - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    for ts in (seconds, seconds.astype("float64"), frame.ts.dt.strftime("%Y-%m-%dT%H:%M:%S"),
               frame.ts.dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"),  # the same instants, zoned
               (frame.ts + pd.Timedelta(hours=2)).dt.strftime("%Y-%m-%d %H:%M:%S+02:00")):
        got = read_events(frame.assign(ts=ts), **KEYS)
        pd.testing.assert_frame_equal(got, want)


def test_logs_plays_and_pairs(caplog):
    with caplog.at_level(logging.INFO, logger="funnel"):
        read_events(plays(), **KEYS, duration="ms", min_duration=30_000)
    assert re.search(r"6 plays kept \(1 skips .*\) -> 5 \(user, artist\) pairs", caplog.text)


# --- bad input -------------------------------------------------------------------------------------------------


def test_wrong_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of source"):
        read_events()
    with pytest.raises(ConfigError, match="both"):
        read_events(plays(), sql="SELECT 1")
    with pytest.raises(ConfigError, match="source must be a pandas DataFrame.*not list"):
        read_events([1, 2, 3])
    with pytest.raises(ConfigError, match="database is read by sql"):
        read_events(plays(), database=tmp_path / "x.duckdb")
    with pytest.raises(ConfigError, match="duration and min_duration go together"):
        read_events(plays(), **KEYS, duration="ms")
    with pytest.raises(ConfigError, match="min_duration must be a finite number"):
        read_events(plays(), **KEYS, duration="ms", min_duration=-1)
    with pytest.raises(ConfigError, match="different columns"):
        read_events(plays(), user="user", artist="user")
    with pytest.raises(ConfigError, match="memory_limit"):
        read_events(plays(), **KEYS, memory_limit="lots")
    with pytest.raises(ConfigError, match="now must be"):
        read_events(plays(), user="user", artist="artist", now="yesterday-ish")
    (tmp_path / "plays.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"plays\.json is neither Parquet nor CSV"):
        read_events(tmp_path / "plays.json")


def test_paths_that_match_nothing(tmp_path):
    with pytest.raises(DataError, match=r"glob '.*nothing-\*\.parquet' matches no file"):
        read_events(str(tmp_path / "nothing-*.parquet"))
    with pytest.raises(DataError, match=r"directory .*empty holds no Parquet or CSV file"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("")
        read_events(tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing\.parquet does not exist"):
        read_events(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match=r"cannot open the DuckDB database .*nope\.duckdb"):
        read_events(sql="SELECT * FROM plays", database=tmp_path / "nope.duckdb")
    plays().to_parquet(tmp_path / "a.parquet")
    plays().to_csv(tmp_path / "b.csv")
    with pytest.raises(DataError, match="mixes Parquet and CSV files"):
        read_events(str(tmp_path / "*.*"), **KEYS)


@pytest.mark.parametrize("kind", ["frame", "parquet", "glob", "sql"])
def test_missing_column_lists_the_columns(kind, tmp_path):
    source = as_source(kind, plays(), tmp_path)
    with pytest.raises(DataError, match=r"has no column 'stamp'; its columns are 'user', 'artist', 'ts'.*timestamp="):
        read_events(**source, user="user", artist="artist", timestamp="stamp")
    name = {"frame": "the DataFrame", "parquet": "plays.parquet", "glob": "glob", "sql": "query"}[kind]
    with pytest.raises(DataError, match=name):
        read_events(**source)  # user_id, artist_id by default


def test_failing_query_passes_duckdbs_message_on(tmp_path):
    with pytest.raises(DataError, match=r"query 'SELECT \* FROM nowhere'.*Catalog Error.*nowhere"):
        read_events(sql="SELECT * FROM nowhere")
    with pytest.raises(DataError, match=r"query 'SELEC .*Parser Error"):
        read_events(sql="SELEC user_id FROM x")
    frame = plays()
    frame.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"reading query .*failed: .*Conversion Error"):  # fails while running
        read_events(sql=f"SELECT CAST(user AS INTEGER) AS user_id, artist AS artist_id FROM '{tmp_path}/p.parquet'")


def test_null_ids_are_counted_with_the_fix():
    frame = plays()
    frame.loc[[1, 4], "user"] = None
    with pytest.raises(DataError, match=r"the DataFrame column 'user' has 2 empty \(null\) id\(s\), first at the row "
                                        r"with artist 9; drop those rows \(frame.dropna\(subset=\['user'\]\)\)"):
        read_events(frame, **KEYS)
    frame["user"] = pd.Series([None] * len(frame), dtype=object)
    with pytest.raises(DataError, match=r"column 'user' has 7 empty \(null\) id\(s\)"):
        read_events(frame, **KEYS)
    with pytest.raises(DataError, match=r"the DataFrame is empty: it has no rows"):
        read_events(frame.iloc[:0], **KEYS)
    frame = plays()
    frame["artist"] = frame.artist.astype("Int64")
    frame.loc[0, "artist"] = pd.NA
    with pytest.raises(DataError, match=r"column 'artist' has 1 empty \(null\) id\(s\), first at the row with user "
                                        r"'u2', plays 1.0"):
        read_events(frame, **KEYS, weight="plays")


def test_mixed_and_float_ids():
    frame = plays()
    frame["artist"] = pd.Series([7, 9, "7", 7, 9, 9, 3], dtype=object)
    with pytest.raises(DataError, match=r"column 'artist' of the DataFrame mixes id types \(int and str, e\.g\. 7 at "
                                        r"row 0 and '7' at row 2\).*astype\(str\)"):
        read_events(frame, **KEYS)
    frame["artist"] = [7.0, 9.0, 7.0, 7.0, 9.0, 9.0, np.nan]
    with pytest.raises(DataError, match=r"column 'artist' has 1 empty \(null\) id\(s\)"):
        read_events(frame, **KEYS)
    frame["artist"] = [7.0, 9.0, 7.0, 7.0, 9.0, 9.5, 3.0]
    with pytest.raises(DataError, match=r"column 'artist' must hold integer ids \(whole numbers within 64 bits\); 1 "
                                        r"bad row\(s\), the first: the row with user 'u1' has 9.5"):
        read_events(frame, **KEYS)
    frame["artist"] = pd.Series([7.0, 9.0, 7, 7.0, 9.0, 9.0, 3.0], dtype=object)  # Python floats: whole, so ids
    assert read_events(frame, **KEYS).artist_id.tolist() == expected().artist_id.tolist()
    frame["artist"] = pd.Series([True] * 7)
    with pytest.raises(DataError, match=r"column 'artist' of the DataFrame is BOOLEAN; ids must be integers or "):
        read_events(frame, **KEYS)
    frame["artist"] = pd.Series([b"a"] * 7, dtype=object)
    with pytest.raises(DataError, match="holds bytes values"):
        read_events(frame, **KEYS)


@pytest.mark.parametrize("kind", ["frame", "csv"])
def test_times_that_do_not_parse(kind, tmp_path):
    frame = plays().astype({"ts": str})
    frame.loc[[2, 5], "ts"] = ["last tuesday", "2024-13-45"]
    with pytest.raises(DataError, match=r"column 'ts' must hold times \(.*\); 2 bad row\(s\), the first: the row with "
                                        r"user 'u1', artist 7 has 'last tuesday'"):
        read_events(**as_source(kind, frame, tmp_path), **KEYS)


def test_missing_times():
    frame = plays()
    frame.loc[3, "ts"] = pd.NaT
    with pytest.raises(DataError, match=r"the DataFrame column 'ts' has 1 empty \(null\) time\(s\), first at the row "
                                        r"with user 'u1', artist 7; drop those rows, or pass timestamp=None"):
        read_events(frame, **KEYS)


def test_times_in_the_future(tmp_path):
    frame = plays()
    frame.loc[4, "ts"] = pd.Timestamp("2031-01-01")
    with pytest.raises(DataError, match=r"plays\.parquet column 'ts' has 1 time\(s\) in the future, after 2024-06-02 "
                                        r"00:00:00 \(now \+ 1 day\), the first: the row with user 'u2', artist 9 has "
                                        r"'2031-01-01"):
        read_events(**as_source("parquet", frame, tmp_path), **KEYS)
    assert read_events(frame, **{**KEYS, "now": "2031-01-01"}).last_listen.max() == pd.Timestamp("2031-01-01")
    # a day of slack for clocks that run ahead; "now" defaults to the current time
    read_events(frame, **{**KEYS, "now": "2030-12-31 00:00:01"})
    with pytest.raises(DataError, match="future"):
        read_events(frame, user="user", artist="artist", timestamp="ts")
    milliseconds = (plays().ts - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
    with pytest.raises(DataError, match=r"has 7 time\(s\) in the future.*epoch milliseconds\?"):
        read_events(plays().assign(ts=milliseconds), **KEYS)
    with pytest.raises(DataError, match=r"has 7 time\(s\) before 1678, the first: .* has .1492-03-03"):
        read_events(plays().assign(ts=plays().ts.astype(str).str.replace("2024", "1492")), **KEYS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0, 1e31, None])
def test_bad_weights(bad, tmp_path):
    frame = plays()
    frame.loc[5, "plays"] = bad
    shown = r"(inf|0\.0|-1\.0|1e\+31|an empty value \(null or NaN\))"
    with pytest.raises(DataError, match=r"plays\.parquet column 'plays' must be a finite number > 0 and <= 1e\+30 \(a "
                                        r"play count\); 1 bad row\(s\), the first: the row with user 'u1', artist 9 "
                                        r"has " + shown):
        read_events(**as_source("parquet", frame, tmp_path), **KEYS, weight="plays")
    # the bad play is a skip: dropped before it is checked
    read_events(frame, **KEYS, weight="plays", duration="ms", min_duration=30_000)


def test_bad_durations_are_reported_not_dropped():
    frame = plays()
    frame.loc[2, "ms"] = np.nan
    with pytest.raises(DataError, match=r"column 'ms' must hold durations \(finite numbers >= 0\); 1 bad row\(s\), "
                                        r"the first: the row with user 'u1', artist 7 has an empty value"):
        read_events(frame, **KEYS, duration="ms", min_duration=30_000)


def test_nothing_left(tmp_path):
    with pytest.raises(DataError, match="no plays left in the DataFrame after dropping plays shorter than "
                                        "min_duration=1e"):
        read_events(plays(), **KEYS, duration="ms", min_duration=1e9)
    plays().iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"file .*empty\.parquet is empty: it has no rows; pass a source with plays"):
        read_events(tmp_path / "empty.parquet", **KEYS)


def test_empty_sources_say_they_are_empty(tmp_path):
    (tmp_path / "zero.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("user_id,artist_id\n")
    plays().iloc[:0].to_parquet(tmp_path / "none.parquet")
    floats = pd.DataFrame({"user_id": pd.Series([], dtype=float), "artist_id": pd.Series([], dtype=float)})
    for source, name, what in [
        (pd.DataFrame(), "the DataFrame", "no columns and no rows"),
        (floats, "the DataFrame", "no rows"),  # not "float ids"
        (pd.DataFrame({"user_id": pd.Series([], dtype=bool)}), "the DataFrame", "no rows"),  # not "no column"
        (pa.table({}), "the Arrow table", "no columns and no rows"),
        (tmp_path / "zero.csv", r"file .*zero\.csv", "no columns and no rows"),  # not "no column ... 'column0'"
        (tmp_path / "header.csv", r"file .*header\.csv", "no rows"),
        (tmp_path / "none.parquet", r"file .*none\.parquet", "no rows"),
    ]:
        with pytest.raises(DataError, match=rf"^{name} is empty: it has {what}; pass a source with plays$"):
            read_events(source)
    with pytest.raises(DataError, match=r"^query .* is empty: it has no rows"):
        read_events(sql="SELECT 1 AS user_id, 2 AS artist_id WHERE false")


# --- larger than memory ----------------------------------------------------------------------------------------


def test_spills_to_temp_directory_under_memory_limit(tmp_path):
    """900k plays over ~600k pairs: DuckDB's hash table is larger than a 20 MB memory_limit, so it must spill.

    The proof that it spills: the same read with an unusable temp_directory fails at 20 MB (DuckDB cannot create
    the directory it needs) and succeeds at 1 GB (where it never needs it).
    """
    rng = np.random.default_rng(0)
    n = 900_000
    pair = rng.integers(0, 700_000, n)
    frame = pd.DataFrame({"user": pair // 40, "artist": pair % 40 * 7_919 % 100_000,
                          "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 2e7, n), unit="s")})
    # small row groups: each DuckDB thread decodes one at a time, and a 1M-row group alone is ~20 MB
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "big.parquet", row_group_size=50_000)
    keys = {"user": "user", "artist": "artist", "timestamp": "ts", "now": "2025-01-01"}
    got = read_events(tmp_path / "big.parquet", **keys, memory_limit="20MB", temp_directory=tmp_path / "spill")
    want = (frame.groupby(["user", "artist"]).ts.agg(["size", "min", "max"]).reset_index()
            .set_axis(["user_id", "artist_id", "weight", "first_listen", "last_listen"], axis=1)
            .astype({"weight": "float64", "first_listen": "datetime64[ns]", "last_listen": "datetime64[ns]"}))
    assert len(want) > 500_000
    pd.testing.assert_frame_equal(got, want)
    unusable = tmp_path / "big.parquet" / "spill"  # under a file: cannot be created
    with pytest.raises(DataError, match=r"big\.parquet failed: .*(IO Error|directory)"):
        read_events(tmp_path / "big.parquet", **keys, memory_limit="20MB", temp_directory=unusable)
    assert len(read_events(tmp_path / "big.parquet", **keys, memory_limit="1GB", temp_directory=unusable)) == len(want)


# --- synthetic_events ------------------------------------------------------------------------------------------


def test_synthetic_events_are_seeded_and_well_formed():
    events, genres = synthetic_events(n_users=300, n_artists=400, n_events=20_000, seed=5)
    again, genres_again = synthetic_events(n_users=300, n_artists=400, n_events=20_000, seed=5)
    pd.testing.assert_frame_equal(events, again)
    pd.testing.assert_frame_equal(genres, genres_again)
    other, _ = synthetic_events(n_users=300, n_artists=400, n_events=20_000, seed=6)
    assert not events.artist_mbid.equals(other.artist_mbid)

    assert list(events.columns) == ["user", "artist_mbid", "ts", "duration_ms"] and len(events) == 20_000
    assert events.ts.dtype == "datetime64[ns]" and events.duration_ms.dtype == np.int64
    assert events.ts.min() >= pd.Timestamp("2024-01-01") and events.ts.max() < pd.Timestamp("2024-12-31")
    assert events.ts.is_monotonic_increasing
    assert events.user.str.fullmatch(r"user_\d{6}").all() and events.user.nunique() == 300
    mbids = genres.artist_mbid.drop_duplicates()
    assert len(mbids) == 400 and mbids.str.fullmatch(MBID.pattern).all()
    assert set(events.artist_mbid) == set(mbids)  # every artist played
    skips = (events.duration_ms < 30_000).mean()
    assert 0.1 < skips < 0.2 and events.duration_ms.min() > 0
    assert events.groupby("user").artist_mbid.nunique().min() >= 5
    per_user = events.groupby("user").size()
    assert per_user.min() >= 5 and per_user.max() > 5 * per_user.median()  # heavy-tailed

    assert list(genres.columns) == ["artist_mbid", "genre"] and genres.genre.str.fullmatch(r"cluster\d-genre\d").all()
    per_artist = genres.groupby("artist_mbid").genre.agg(["size", "nunique"])
    assert (per_artist["size"] >= 2).all() and (per_artist["size"] == per_artist["nunique"]).all()
    clusters = genres.genre.str.extract(r"cluster(\d)")[0].groupby(genres.artist_mbid).nunique()
    assert 0 < (clusters > 1).mean() < 0.2  # occasional cross-cluster labels


def test_synthetic_events_drift_is_visible():
    """Later plays leave a user's early cluster more often, and more so with more drift."""
    def away_share(drift: float) -> tuple[float, float]:
        events, genres = synthetic_events(n_users=400, n_artists=800, n_events=40_000, drift=drift, seed=1)
        home_genre = genres.drop_duplicates("artist_mbid").set_index("artist_mbid").genre
        cluster = events.artist_mbid.map(home_genre.str.extract(r"cluster(\d+)", expand=False))
        elapsed = (events.ts - pd.Timestamp("2024-01-01")) / pd.Timedelta(days=365)
        first = elapsed < 0.25
        home = cluster[first].groupby(events.user[first]).agg(lambda c: c.mode().iloc[0])
        away = cluster != events.user.map(home)
        return away[first].mean(), away[elapsed >= 0.75].mean()

    early, late = away_share(0.3)
    assert late > early + 0.15
    still_early, still_late = away_share(0.0)
    assert abs(still_late - still_early) < 0.03


def test_synthetic_events_through_read_events_match_pandas(tmp_path):
    events, _ = synthetic_events(n_users=200, n_artists=300, n_events=10_000, seed=2)
    events.to_parquet(tmp_path / "e.parquet")
    got = read_events(tmp_path / "e.parquet", user="user", artist="artist_mbid", timestamp="ts",
                      duration="duration_ms", min_duration=30_000, now="2025-01-01")
    kept = events[events.duration_ms >= 30_000]
    want = kept.groupby(["user", "artist_mbid"]).ts.agg(["size", "min", "max"]).reset_index()
    assert got.user_id.tolist() == want.user.tolist() and got.artist_id.tolist() == want.artist_mbid.tolist()
    assert (got.weight.to_numpy() == want["size"].to_numpy()).all()
    assert (got.first_listen.to_numpy() == want["min"].to_numpy()).all()
    assert (got.last_listen.to_numpy() == want["max"].to_numpy()).all()


def test_synthetic_events_bad_settings():
    with pytest.raises(ConfigError, match="n_events >= 5 \\* n_users"):
        synthetic_events(n_users=100, n_events=100)
    with pytest.raises(ConfigError, match="drift"):
        synthetic_events(drift=1.5)
    with pytest.raises(ConfigError, match="start"):
        synthetic_events(start="not a date")


def test_duckdb_never_downloads_extensions():
    from funnel.data.duckdb_source import connect

    con = connect(None, None, None)
    try:
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchall() == [(False,)]
    finally:
        con.close()
