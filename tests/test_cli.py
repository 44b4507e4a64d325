"""The command line end to end: the CSV, reuse of saved parts, one-line errors, no partial output."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from funnel import FunnelConfig
from funnel.cli import parse_args, run, to_config
from funnel.data.synthetic import synthetic


def write_as_lastfm(dataset, root):
    """Write a Dataset in the Last.fm file layout (tab-separated, CRLF, latin-1 tags)."""
    root.mkdir(parents=True, exist_ok=True)
    inter = dataset.interactions.rename(columns={"user_id": "userID", "artist_id": "artistID"})
    inter["weight"] = inter["weight"].astype(int)
    inter.to_csv(root / "user_artists.dat", sep="\t", index=False, lineterminator="\r\n")
    arts = dataset.artists.rename(columns={"artist_id": "id"}).assign(url="u", pictureURL="p")
    arts.to_csv(root / "artists.dat", sep="\t", index=False)
    dataset.tags.rename(columns={"tag_id": "tagID", "tag": "tagValue"}).to_csv(
        root / "tags.dat", sep="\t", index=False, lineterminator="\r\n", encoding="latin-1")
    ts = dataset.tag_assignments["timestamp"]
    tagged = dataset.tag_assignments.drop(columns="timestamp").rename(
        columns={"user_id": "userID", "artist_id": "artistID", "tag_id": "tagID"})
    tagged = tagged.assign(day=ts.dt.day, month=ts.dt.month, year=ts.dt.year)
    tagged.to_csv(root / "user_taggedartists.dat", sep="\t", index=False, lineterminator="\r\n")
    dataset.friends.rename(columns={"user_id": "userID", "friend_id": "friendID"}).to_csv(
        root / "user_friends.dat", sep="\t", index=False, lineterminator="\r\n")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_as_lastfm(synthetic(n_users=120, n_artists=200, seed=1), tmp_path_factory.mktemp("lastfm"))


def cli(tmp_path, data, *extra):
    return run(["--data", str(data), "--artifacts", str(tmp_path / "art"), "--output",
                     str(tmp_path / "recs.csv"), "--progress", "False", *extra])


def test_writes_csv_then_reuses_saved_parts(tmp_path, data_dir, capsys, caplog):
    assert cli(tmp_path, data_dir, "--runsvd", "True", "--judge", "True", "--topn", "7", "--candidates", "30") == 0
    manifest = json.loads((tmp_path / "art" / "model" / "manifest.json").read_text())
    assert manifest["config"]["candidates"] == {**FunnelConfig().candidates, "tags": 30, "als": 30}
    csv = pd.read_csv(tmp_path / "recs.csv")
    assert list(csv.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
    assert len(csv) == 120 * 7 and (csv.groupby("user_id").size() == 7).all()
    history = pd.read_csv(data_dir / "user_artists.dat", sep="\t")
    overlap = csv.merge(history, left_on=["user_id", "artist_id"], right_on=["userID", "artistID"])
    assert overlap.empty
    assert (tmp_path / "art" / "model" / "manifest.json").exists()
    with caplog.at_level("INFO", logger="funnel"):
        assert cli(tmp_path, data_dir, "--topn", "7", "--candidates", "30") == 0
    assert "reusing saved ranker" in caplog.text and "reusing saved svd " in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "recs.csv"), csv)
    assert cli(tmp_path, data_dir, "--topn", "7", "--candidates", "30", "--explain", "True") == 0
    explained = pd.read_csv(tmp_path / "recs.csv")
    assert list(explained.columns) == [*csv.columns, "reason"]
    pd.testing.assert_frame_equal(explained[csv.columns], csv)
    assert explained["reason"].str.contains("because you listen to|of your friends play|its tags match|popular with|"
                                            "listeners like you").all()


def test_errors_are_one_line_and_leave_no_partial_csv(tmp_path, data_dir, capsys, monkeypatch):
    assert cli(tmp_path, tmp_path / "nowhere") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Last.fm data not found") and "\n" not in err
    (tmp_path / "recs.csv").write_text("previous\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run(["--data", str(data_dir), "--output", str(blocker / "x.csv")]) == 1
    assert "cannot create directory" in capsys.readouterr().err

    def explode(self, n=20, users=None, explain=False):
        raise RuntimeError("boom")

    monkeypatch.setattr("funnel.Recommender.recommend_all", explode)
    assert cli(tmp_path, data_dir) == 1
    assert capsys.readouterr().err.strip() == "unexpected error (RuntimeError): boom"
    assert (tmp_path / "recs.csv").read_text() == "previous\n"


def test_flags_map_onto_the_config():
    default = FunnelConfig()
    config = to_config(parse_args(["--candidates", "7", "--seed", "3", "--runsvd", "True", "--progress", "off"]))
    assert config.candidates == {**default.candidates, "tags": 7, "als": 7}  # the other sources keep theirs
    assert config.seed == 3 and config.reuse_svd is False and config.reuse_ranker is True
    assert config.show_progress is False and config.cache_dir == "artifacts/"
    assert to_config(parse_args([])).candidates == default.candidates
    assert to_config(parse_args(["--fit-users", "5000"])).fit_users == 5000
    assert to_config(parse_args(["--fit-users", "0.25"])).fit_users == 0.25
    assert to_config(parse_args([])).fit_users is None
    assert to_config(parse_args([])).parallel_fit == "auto"
    assert to_config(parse_args(["--parallel-fit", "thread"])).parallel_fit == "thread"


def test_flags_without_a_command_are_trains_and_the_retrain_flags_have_long_names():
    assert parse_args([]).command == "train" and parse_args(["score", "--output", "r.csv"]).command == "score"
    short = to_config(parse_args(["--runsvd", "True", "--judge", "yes"]))
    assert short == to_config(parse_args(["train", "--retrain-svd", "True", "--retrain-ranker", "yes"]))
    assert short.reuse_svd is False and short.reuse_ranker is False


def test_main_py_runs_the_command_line_of_the_package():
    root = Path(__file__).resolve().parents[1]
    shown = subprocess.run([sys.executable, "main.py", "--help"], cwd=root, capture_output=True, text=True)
    assert shown.returncode == 0 and "{train,tune,update,serve,score}" in shown.stdout
    refused = subprocess.run([sys.executable, "main.py", "--retrain-svd", "maybe"], cwd=root, capture_output=True,
                             text=True)
    assert refused.returncode == 2
    assert "main.py train: error: argument --runsvd/--retrain-svd: expected True or False" in refused.stderr


def test_a_bad_candidates_flag_is_one_line_before_any_work(tmp_path, data_dir, capsys):
    assert cli(tmp_path, data_dir, "--candidates", "0") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: setting candidates: source 'tags' must return at least 1 candidate")
    assert "\n" not in err and not (tmp_path / "recs.csv").exists()


def test_boolean_flags_need_true_or_false(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["--runsvd", "maybe"])
    assert exit_info.value.code == 2
    assert "expected True or False" in capsys.readouterr().err


def test_evaluate_on_lastfm_beats_the_als_baseline(tmp_path, lastfm_path, capsys):
    assert cli(tmp_path, lastfm_path, "--runsvd", "True", "--judge", "True", "--evaluate", "True") == 0
    out = capsys.readouterr().out
    ndcg = next(line for line in out.splitlines() if line.startswith("ndcg@10")).split()
    funnel_ndcg, als_ndcg = float(ndcg[1]), float(ndcg[2])
    assert funnel_ndcg > als_ndcg
    assert "cand. recall" in out
    floor = next(line for line in out.splitlines() if line.startswith("Each component alone"))
    assert all(name in floor for name in ("EASE", "ALS", "BiasedSVD", "tag index", "popularity"))
    csv = pd.read_csv(tmp_path / "recs.csv")
    assert len(csv) == 1892 * 20 and csv["user_id"].nunique() == 1892
    assert (csv.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


# an event log as a warehouse keeps it: string user ids, MusicBrainz artist ids, its own column names
LOG_COLUMNS = {"user": "listener", "artist_mbid": "mbid", "ts": "played_at", "duration_ms": "ms"}
LOG_FLAGS = ("--user-col", "listener", "--artist-col", "mbid", "--time-col", "played_at", "--duration-col", "ms",
             "--min-duration", "30000")


@pytest.fixture(scope="module")
def event_log(tmp_path_factory):
    from funnel.data.synthetic import synthetic_events

    root = tmp_path_factory.mktemp("log")
    # 150 artists for users of at most a few dozen: 20 unheard artists fit for everyone
    events, genres = synthetic_events(n_users=60, n_artists=150, n_events=3_000, seed=2)
    events.rename(columns=LOG_COLUMNS).to_parquet(root / "plays.parquet", index=False)
    genres.rename(columns={"artist_mbid": "mbid"}).to_csv(root / "genres.csv", index=False)
    return root, events


def events_cli(tmp_path, *extra):
    return run(["--artifacts", str(tmp_path / "art"), "--progress", "False", *extra])


def test_an_event_log_trains_and_writes_parquet_and_duckdb_in_its_own_ids(tmp_path, event_log, capsys):
    root, events = event_log
    plays = events[events["duration_ms"] >= 30_000]
    assert events_cli(tmp_path, "--events", str(root / "plays.parquet"), *LOG_FLAGS, "--artist-tags",
                      str(root / "genres.csv"), "--tag-col", "genre", "--output", str(tmp_path / "recs.parquet")) == 0
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    assert list(recs.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
    assert set(recs["user_id"]) == set(plays["user"]) and len(recs) == 20 * plays["user"].nunique()
    assert (recs.groupby("user_id").size() == 20).all()
    assert set(recs["artist_id"]) <= set(events["artist_mbid"])
    assert all(isinstance(u, str) and isinstance(a, str) for u, a in zip(recs["user_id"], recs["artist_id"]))
    heard = recs.merge(plays, left_on=["user_id", "artist_id"], right_on=["user", "artist_mbid"])
    assert heard.empty
    manifest = json.loads((tmp_path / "art" / "model" / "manifest.json").read_text())
    assert manifest["n_users"] == plays["user"].nunique()  # the saved model serves the same ids

    # the same plays from a DuckDB query over the file, the top artists into a DuckDB table; --evaluate too
    query = f"SELECT * FROM '{root / 'plays.parquet'}' WHERE listener IS NOT NULL"
    database = tmp_path / "warehouse.duckdb"
    assert events_cli(tmp_path, "--events-sql", query, *LOG_FLAGS, "--artist-tags", str(root / "genres.csv"),
                      "--tag-col", "genre", "--output", str(database), "--output-table", "top_artists",
                      "--evaluate", "True") == 0
    assert "ndcg@10" in capsys.readouterr().out
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        table = con.sql("SELECT * FROM top_artists ORDER BY user_id, rank").df()
    pd.testing.assert_frame_equal(table.astype(object), recs.astype(object))


def test_event_flags_are_checked_before_any_work(tmp_path, event_log, capsys):
    root, _ = event_log
    for flags, message in [
        (["--data", str(root), "--events", str(root)], "argument --events: not allowed with argument --data"),
        (["--events", "x", "--events-sql", "SELECT 1"], "argument --events-sql: not allowed with argument --events"),
        (["--user-col", "listener"], "--user-col applies to event logs only"),
        (["--events", "x", "--duckdb", "w.duckdb"], "--duckdb is the database --events-sql reads"),
        (["--events", "x", "--min-duration", "30"], "--duration-col and --min-duration go together"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            run(flags)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    log = ["--events", str(root / "plays.parquet"), *LOG_FLAGS]
    for extra, message in [
        (["--output", str(tmp_path / "recs.json")], "error: cannot write recommendations to "),
        (["--output", str(tmp_path / "recs.duckdb")], "is a DuckDB database: name the table to write"),
        (["--output", str(tmp_path / "recs.db"), "--output-table", "top-artists"], "not a plain SQL identifier"),
        (["--output", str(root / "plays.parquet")], "would overwrite the input"),
        (["--artist-tags", str(root / "missing.csv")], "--artist-tags "),
        (["--artist-tags", str(root / "genres.csv"), "--output", str(tmp_path / "r.csv")], "no column 'tag'"),
        (["--user-col", "user", "--output", str(tmp_path / "r.csv")], "has no column 'user'"),
    ]:
        assert events_cli(tmp_path, *log, *extra) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "art" / "model" / "manifest.json").exists() and not any(tmp_path.glob("r*.*"))


# ids as HetRec names look (+44, -OZ-) and what a CSV reader or a spreadsheet could trip on
AWKWARD_PREFIXES = ["+44 ", "-OZ- ", "=x ", "@y ", "\t", "a\rb ", "a\nb ", '"q" ', "x,y "]


def test_csv_output_reads_back_every_row_and_id_as_written(tmp_path, capsys):
    from funnel.data.synthetic import synthetic_events

    events, _ = synthetic_events(n_users=40, n_artists=100, n_events=1_500, seed=3)
    users = {user: AWKWARD_PREFIXES[i % len(AWKWARD_PREFIXES)] + user for i, user in enumerate(events["user"].unique())}
    artists = {artist: AWKWARD_PREFIXES[i % len(AWKWARD_PREFIXES)] + artist
               for i, artist in enumerate(events["artist_mbid"].unique())}
    plays = pd.DataFrame({"user_id": events["user"].map(users), "artist_id": events["artist_mbid"].map(artists)})
    plays.to_parquet(tmp_path / "plays.parquet")
    assert events_cli(tmp_path, "--events", str(tmp_path / "plays.parquet"), "--topn", "10",
                      "--output", str(tmp_path / "recs.csv")) == 0
    written = pd.read_csv(tmp_path / "recs.csv", keep_default_na=False)
    assert len(written) == 10 * len(users)  # a bare \r written unquoted reads back as a line end: rows more
    assert set(written["user_id"]) == set(users.values()) and set(written["artist_id"]) <= set(artists.values())
    # score writes CSV the same way; a spreadsheet copy guards the formula-like cells and keeps the rows
    assert run(["score", "--artifacts", str(tmp_path / "art"), "--topn", "10", "--progress", "False",
                     "--output", str(tmp_path / "scored.csv"), "--csv-spreadsheet-safe", "True"]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    assert len(scored) == len(written)
    guarded = {("'" + user if user[0] in "=+-@\t" else user) for user in users.values()}
    assert set(scored["user_id"]) == guarded
    with pytest.raises(SystemExit) as exit_info:
        run(["score", "--output", str(tmp_path / "x.parquet"), "--csv-spreadsheet-safe", "True"])
    assert exit_info.value.code == 2 and "--csv-spreadsheet-safe applies to a .csv --output only" in (
        capsys.readouterr().err)


def test_a_missing_artifacts_folder_is_named_as_given(tmp_path, capsys):
    histories = tmp_path / "histories.parquet"
    pd.DataFrame({"user_id": [1], "artist_id": [2]}).to_parquet(histories)
    missing = tmp_path / "nowhere"
    for command in (["score", "--histories", str(histories), "--output", str(tmp_path / "recs.parquet")],
                    ["update", "--events", str(histories)]):
        assert run([*command, "--artifacts", str(missing)]) == 1
        err = capsys.readouterr().err.strip()
        assert f"no saved model at {missing}:" in err and f"{missing}/model" not in err and "\n" not in err, err


def test_score_refuses_to_write_over_or_into_its_inputs_before_any_work(tmp_path, capsys, monkeypatch):
    histories = tmp_path / "histories.parquet"
    pd.DataFrame({"user_id": [1], "artist_id": [2]}).to_parquet(histories)
    before = histories.read_bytes()
    (tmp_path / "link.parquet").symlink_to(histories)
    (tmp_path / "hist.parquet").mkdir()
    pd.DataFrame({"user_id": [1], "artist_id": [2]}).to_parquet(tmp_path / "hist.parquet" / "part-0.parquet")
    monkeypatch.chdir(tmp_path)
    # no model at --artifacts: every refusal comes before the model is read
    base = ["score", "--artifacts", str(tmp_path / "no-model")]
    cases = [
        ("local", histories, histories, "is the --histories file"),
        ("local", histories, "./histories.parquet", "is the --histories file"),
        ("local", histories, tmp_path / "link.parquet", "is the --histories file"),
        ("local", histories, tmp_path / "sub" / ".." / "histories.parquet", "is the --histories file"),
        ("local", tmp_path / "hist.parquet", tmp_path / "hist.parquet" / "recs.csv", "is inside the --histories"),
        ("spark", histories, histories, "is the --histories file"),
        ("spark", "link.parquet", "./histories.parquet", "is the --histories file"),
        ("spark", tmp_path / "hist.parquet", tmp_path / "hist.parquet", "is the --histories directory"),
        ("spark", tmp_path / "hist.parquet", tmp_path / "hist.parquet" / "new.parquet", "is inside the --histories"),
        ("spark", "hist.parquet/*.parquet", "hist.parquet", "holds the --histories file"),
        ("spark", tmp_path / "hist.parquet" / "part-0.parquet", tmp_path / "hist.parquet", "holds the --histories"),
    ]
    for engine, source, output, message in cases:
        assert run([*base, "--engine", engine, "--histories", str(source), "--output", str(output)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --output ") and message in err and "\n" not in err, (engine, source, output)
    assert run([*base, "--engine", "local", "--exclude", str(histories), "--output", str(histories)]) == 1
    assert "is the --exclude file" in capsys.readouterr().err
    # a Spark output written over the model directory (or the folder train saved it in) would replace the model
    assert run(["score", "--engine", "spark", "--artifacts", str(tmp_path / "art.parquet"),
                "--output", str(tmp_path / "art.parquet")]) == 1
    assert "is the --artifacts path" in capsys.readouterr().err
    (tmp_path / "art.parquet" / "model").mkdir(parents=True)
    assert run(["score", "--engine", "spark", "--artifacts", str(tmp_path / "art.parquet"),
                "--output", str(tmp_path / "art.parquet")]) == 1
    assert "holds the --artifacts" in capsys.readouterr().err
    assert histories.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "hist.parquet").iterdir()) == ["part-0.parquet"]


def test_an_empty_api_key_file_is_an_error_not_an_open_service(tmp_path, capsys, monkeypatch):
    from funnel.serving.auth import KEY_FILE_ENV

    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    serve = ["serve", "--artifacts", str(tmp_path / "no-model"), "--host", "0.0.0.0"]
    assert run([*serve, "--api-key-file", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --api-key-file (api_key_file) is empty ('')") and "\n" not in err
    monkeypatch.setenv(KEY_FILE_ENV, " ")
    assert run(serve) == 1
    assert capsys.readouterr().err.startswith(f"error: {KEY_FILE_ENV} is empty (' '); name the API key file")


def test_update_adds_a_days_plays_in_place_keeping_the_previous_model(tmp_path, event_log, capsys):
    from funnel import Recommender

    root, events = event_log
    plays = events[events["duration_ms"] >= 30_000].rename(columns=LOG_COLUMNS)
    cut = plays["played_at"].quantile(0.9)
    plays[plays["played_at"] < cut].to_parquet(tmp_path / "before.parquet", index=False)
    day = plays[plays["played_at"] >= cut]
    day.to_parquet(tmp_path / "day.parquet", index=False)
    day.iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    assert events_cli(tmp_path, "--events", str(tmp_path / "before.parquet"), *LOG_FLAGS, "--output",
                      str(tmp_path / "recs.csv")) == 0
    model_dir = tmp_path / "art" / "model"
    fitted = Recommender.load(model_dir)
    assert run(["update", "--artifacts", str(tmp_path / "art"), "--events", str(tmp_path / "empty.parquet"),
                *LOG_FLAGS]) == 0
    assert "nothing to update" in capsys.readouterr().out
    assert Recommender.load(model_dir).fingerprint_ == fitted.fingerprint_
    assert run(["update", "--artifacts", str(tmp_path / "art"), "--events", str(tmp_path / "day.parquet"),
                *LOG_FLAGS]) == 0
    assert "updated" in capsys.readouterr().out
    updated = Recommender.load(model_dir)
    assert Recommender.load(tmp_path / "art" / "model.previous").fingerprint_ == fitted.fingerprint_
    assert updated.fingerprint_ != fitted.fingerprint_
    assert set(updated.user_ids_) == set(plays["listener"])  # the day's new listeners are known
    assert updated.history_.sum() > fitted.history_.sum()
    # into another directory, the served one untouched
    assert run(["update", "--artifacts", str(model_dir), "--events", str(tmp_path / "day.parquet"), *LOG_FLAGS,
                "--output-model", str(tmp_path / "next")]) == 0
    assert Recommender.load(model_dir).fingerprint_ == updated.fingerprint_
    assert Recommender.load(tmp_path / "next").history_.sum() > updated.history_.sum()  # twice: counted twice
    with pytest.raises(SystemExit) as exit_info:
        run(["update", "--artifacts", str(model_dir)])
    assert exit_info.value.code == 2 and "--events" in capsys.readouterr().err
    # --artists: a new artist's name joins the catalogue; a file without the fixed columns is named as it is
    new_id = "00000000-0000-4000-8000-000000000001"  # a release the log has not played
    pd.DataFrame({"artist_id": [new_id], "title": ["Release"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert run(["update", "--artifacts", str(model_dir), "--events", str(tmp_path / "empty.parquet"), *LOG_FLAGS,
                "--artists", str(tmp_path / "bad.csv")]) == 1
    err = capsys.readouterr().err
    assert f"--artists {tmp_path / 'bad.csv'} has no column 'name'" in err
    assert "needs columns 'artist_id' and 'name'" in err
    assert "--artist-tags" not in err and "--tag-col" not in err
    pd.DataFrame({"artist_id": [new_id], "name": ["Release"]}).to_csv(tmp_path / "artists.csv", index=False)
    assert run(["update", "--artifacts", str(model_dir), "--events", str(tmp_path / "empty.parquet"), *LOG_FLAGS,
                "--artists", str(tmp_path / "artists.csv")]) == 0
    grown = Recommender.load(model_dir)
    assert new_id in set(grown.artist_ids_) and len(grown.artist_ids_) == len(updated.artist_ids_) + 1
