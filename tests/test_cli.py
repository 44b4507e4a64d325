"""main.py end to end: the CSV, reuse of saved parts, one-line errors, no partial output."""

import json

import pandas as pd
import pytest

import main
from args import parse_args, to_config
from funnel import FunnelConfig
from funnel.datasets import synthetic


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
    return main.run(["--data", str(data), "--artifacts", str(tmp_path / "art"), "--output",
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
    assert explained["reason"].str.contains("found by|popular fallback").all()


def test_errors_are_one_line_and_leave_no_partial_csv(tmp_path, data_dir, capsys, monkeypatch):
    assert cli(tmp_path, tmp_path / "nowhere") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Last.fm data not found") and "\n" not in err
    (tmp_path / "recs.csv").write_text("previous\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main.run(["--data", str(data_dir), "--output", str(blocker / "x.csv")]) == 1
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


def test_a_bad_candidates_flag_is_one_line_before_any_work(tmp_path, data_dir, capsys):
    assert cli(tmp_path, data_dir, "--candidates", "0") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: setting candidates: source 'tags' must return at least 1 candidate")
    assert "\n" not in err and not (tmp_path / "recs.csv").exists()


def test_boolean_flags_need_true_or_false(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.run(["--runsvd", "maybe"])
    assert exit_info.value.code == 2
    assert "expected True or False" in capsys.readouterr().err


def test_evaluate_on_lastfm_beats_the_als_baseline(tmp_path, lastfm_path, capsys):
    assert cli(tmp_path, lastfm_path, "--runsvd", "True", "--judge", "True", "--evaluate", "True") == 0
    out = capsys.readouterr().out
    ndcg = next(line for line in out.splitlines() if line.startswith("ndcg@10")).split()
    funnel_ndcg, als_ndcg = float(ndcg[1]), float(ndcg[2])
    assert funnel_ndcg > als_ndcg
    assert "cand. recall" in out
    csv = pd.read_csv(tmp_path / "recs.csv")
    assert len(csv) == 1892 * 20 and csv["user_id"].nunique() == 1892
    assert (csv.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
