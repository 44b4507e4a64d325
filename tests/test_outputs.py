"""funnel.outputs: recommendations as CSV, Parquet or a DuckDB table, atomically, ids in their own type."""

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnel.errors import ArtifactError, ConfigError
from funnel.outputs import check_output, output_format, write_recommendations


def recommendations(ids: str = "str", n_users: int = 3, n: int = 4) -> pd.DataFrame:
    users = [f"user_{u:03d}" for u in range(n_users)] if ids == "str" else [10 * u + 2**40 for u in range(n_users)]
    artists = ([f"0d9ac0ce-8c04-4d5d-9a9f-2b6a0f6e4c{a:02d}" for a in range(n_users * n)] if ids == "str"
               else list(range(-5, n_users * n - 5)))
    return pd.DataFrame({"user_id": [u for u in users for _ in range(n)], "rank": list(range(1, n + 1)) * n_users,
                         "artist_id": artists, "artist_name": ["", "Ådne", "x,y", 'say "hi"'] * n_users,
                         "score": [0.5 / r for r in range(1, n * n_users + 1)]})


def read_back(path, table=None) -> pd.DataFrame:
    kind = output_format(path, table)
    if kind == "csv":
        return pd.read_csv(path, keep_default_na=False)
    if kind == "parquet":
        return pd.read_parquet(path)
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY user_id, rank").df()


def same(written: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal values, and ids of the same kind: integers stay int64, strings stay str."""
    assert list(written.columns) == list(expected.columns)
    for column in ("user_id", "artist_id"):
        if pd.api.types.is_integer_dtype(expected[column]):
            assert written[column].dtype == "int64"
        else:
            assert all(isinstance(value, str) for value in written[column])
    pd.testing.assert_frame_equal(written.astype({"user_id": object, "artist_id": object, "artist_name": object}),
                                  expected.astype({"user_id": object, "artist_id": object, "artist_name": object}),
                                  check_dtype=False)


@pytest.mark.parametrize("ids", ["str", "int"])
@pytest.mark.parametrize("name, table", [("recs.csv", None), ("recs.parquet", None), ("recs.duckdb", "recs"),
                                         ("out/RECS.DB", "top_artists")])
def test_each_format_round_trips_with_ids_in_their_type(tmp_path, ids, name, table):
    frame = recommendations(ids)
    write_recommendations(frame, tmp_path / name, table)
    same(read_back(tmp_path / name, table), frame)
    assert [p.name for p in (tmp_path / name).parent.iterdir()] == [(tmp_path / name).name]  # no temp files left


def test_parquet_has_plain_arrow_types(tmp_path):
    write_recommendations(recommendations("str"), tmp_path / "recs.parquet")
    schema = pq.read_schema(tmp_path / "recs.parquet")
    assert schema.field("user_id").type == pa.string() and schema.field("artist_id").type == pa.string()
    assert schema.field("rank").type == pa.int64() and schema.metadata is None  # no pandas index metadata
    write_recommendations(recommendations("int"), tmp_path / "recs.parquet")
    assert pq.read_schema(tmp_path / "recs.parquet").field("user_id").type == pa.int64()


def test_duckdb_replaces_its_table_and_leaves_the_others(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE plays AS SELECT 1 AS user_id, 2 AS artist_id")
        con.execute("CREATE TABLE recs AS SELECT 'old' AS stale")
    write_recommendations(recommendations("str", n_users=2), path, "recs")
    write_recommendations(recommendations("int", n_users=3), path, "recs")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM plays").fetchone() == (1,)
        assert dict(row[:2] for row in con.execute("DESCRIBE recs").fetchall())["user_id"] == "BIGINT"
    same(read_back(path, "recs"), recommendations("int", n_users=3))


@pytest.mark.parametrize("name", ["recs.csv", "recs.parquet"])
def test_a_failed_file_write_leaves_the_previous_file(tmp_path, monkeypatch, name):
    path = tmp_path / name
    write_recommendations(recommendations("int"), path)
    before = path.read_bytes()

    def half_then_fail(*args, **kwargs):
        handle = args[1] if name.endswith(".parquet") else args[0]
        handle.write(b"PAR1 half" if name.endswith(".parquet") else "user_id,half\n")
        raise OSError(28, "No space left on device")

    target = "pyarrow.parquet.write_table" if name.endswith(".parquet") else "pandas.DataFrame.to_csv"
    if name.endswith(".csv"):
        monkeypatch.setattr(target, lambda self, handle, **kwargs: half_then_fail(handle))
    else:
        monkeypatch.setattr(target, half_then_fail)
    with pytest.raises(ArtifactError, match="No space left on device; the previous file, if any, is unchanged"):
        write_recommendations(recommendations("str"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_failed_duckdb_write_rolls_back_to_the_previous_table(tmp_path, monkeypatch):
    path = tmp_path / "recs.duckdb"
    write_recommendations(recommendations("int"), path, "recs")
    connect = duckdb.connect

    class CommitFails:
        """A connection whose COMMIT fails, after CREATE OR REPLACE TABLE has run."""

        def __init__(self, con):
            self.con = con

        def __getattr__(self, name):
            return getattr(self.con, name)

        def execute(self, query, *args):
            if query == "COMMIT":
                raise duckdb.IOException("disk full")
            return self.con.execute(query, *args)

    monkeypatch.setattr(duckdb, "connect", lambda database, **kwargs: CommitFails(connect(database, **kwargs)))
    with pytest.raises(ArtifactError, match="writing table 'recs' of .* failed: .*disk full; the previous table"):
        write_recommendations(recommendations("str", n_users=5), path, "recs")
    monkeypatch.setattr(duckdb, "connect", connect)
    same(read_back(path, "recs"), recommendations("int"))


@pytest.mark.parametrize("name, table, message", [
    ("recs.json", None, "unknown extension '.json'; use .csv, .parquet, or a DuckDB"),
    ("recs", None, r"unknown extension '\(none\)'"),
    ("recs.parquet.tmp", None, "unknown extension '.tmp'"),
    ("recs.duckdb", None, "is a DuckDB database: name the table"),
    ("recs.csv", "recs", "only for a DuckDB database file"),
    ("recs.db", "1recs", "not a plain SQL identifier"),
    ("recs.db", 'recs"; DROP TABLE plays; --', "not a plain SQL identifier"),
    ("recs.db", "main.recs", "not a plain SQL identifier"),
    ("recs.db", "", "not a plain SQL identifier"),
])
def test_bad_extensions_and_table_names_are_refused_before_writing(tmp_path, name, table, message):
    with pytest.raises(ConfigError, match=message):
        check_output(tmp_path / name, table)
    with pytest.raises(ConfigError, match=message):
        write_recommendations(recommendations(), tmp_path / name, table)
    assert list(tmp_path.iterdir()) == []


def test_a_db_file_that_is_not_duckdb_is_refused_before_training(tmp_path):
    path = tmp_path / "app.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(4080))
    with pytest.raises(ArtifactError, match="cannot open .*app.db as a DuckDB database .*: it is a SQLite database"):
        check_output(path, "recs")
    with pytest.raises(ArtifactError, match="cannot open .*app.db as a DuckDB database: it is a SQLite database"):
        write_recommendations(recommendations(), path, "recs")
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"  # DuckDB wrote nothing into it
    (tmp_path / "junk.duckdb").write_bytes(b"not a database" * 300)
    with pytest.raises(ArtifactError, match="not a valid DuckDB database file"):
        check_output(tmp_path / "junk.duckdb", "recs")
    assert check_output(tmp_path / "new.duckdb", "recs") == "duckdb"
    assert not (tmp_path / "new.duckdb").exists()  # checking creates nothing


# names as HetRec holds them (+44, -OZ-), and what a spreadsheet or a CSV reader could trip on
AWKWARD = ["+44", "-OZ-", "=x", "@y", "\tt", "a\rb", "a\nb", "a\r\nb", '"q"', "x,y", "'z", "", "plain"]


def awkward_recommendations() -> pd.DataFrame:
    return pd.DataFrame({"user_id": AWKWARD, "rank": range(1, len(AWKWARD) + 1), "artist_id": AWKWARD[::-1],
                         "artist_name": AWKWARD, "score": [-0.5 + r / 10 for r in range(len(AWKWARD))]})


def test_csv_reads_back_every_id_and_name_exactly(tmp_path):
    import csv

    frame = awkward_recommendations()
    write_recommendations(frame, tmp_path / "recs.csv")
    written = pd.read_csv(tmp_path / "recs.csv", keep_default_na=False)
    assert len(written) == len(frame)  # a bare \r written unquoted read back as a line end: one row more
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)
    with open(tmp_path / "recs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == AWKWARD and [row[2] for row in rows[1:]] == AWKWARD[::-1]
    with duckdb.connect() as con:
        read = con.execute("SELECT user_id, artist_name FROM read_csv(?, header = true, all_varchar = true)",
                           [str(tmp_path / "recs.csv")]).fetchall()
    assert [(u or "", a or "") for u, a in read] == list(zip(AWKWARD, AWKWARD))


def test_spreadsheet_safe_csv_shows_formula_like_text_as_text(tmp_path):
    frame = awkward_recommendations()
    write_recommendations(frame, tmp_path / "recs.csv", spreadsheet_safe=True)
    written = pd.read_csv(tmp_path / "recs.csv", keep_default_na=False)
    guarded = ["'+44", "'-OZ-", "'=x", "'@y", "'\tt", "a\rb", "a\nb", "a\r\nb", '"q"', "x,y", "'z", "", "plain"]
    assert written["user_id"].tolist() == guarded and written["artist_name"].tolist() == guarded
    assert written["artist_id"].tolist() == guarded[::-1]
    pd.testing.assert_series_equal(written["score"], frame["score"])  # numbers stay numbers, -0.5 too
    assert written["rank"].tolist() == frame["rank"].tolist()
    write_recommendations(recommendations("int"), tmp_path / "ints.csv", spreadsheet_safe=True)  # -5 is a number
    same(pd.read_csv(tmp_path / "ints.csv", keep_default_na=False), recommendations("int"))
    assert frame.equals(awkward_recommendations())  # the caller's frame is left as it was
    with pytest.raises(ConfigError, match="spreadsheet_safe applies to CSV output only"):
        write_recommendations(frame, tmp_path / "recs.parquet", spreadsheet_safe=True)
    assert not (tmp_path / "recs.parquet").exists()
