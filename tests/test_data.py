"""Loading files and frames: the real quirks of Last.fm and every validation error."""

import logging

import numpy as np
import pandas as pd
import pytest

from funnel import DataError, Dataset, load_lastfm
from funnel.data.lastfm import DATA_ENV


def write_lastfm(root, *, tags_extra="", interactions=None):
    """A tiny Last.fm directory with the real files' quirks (CRLF, latin-1, quotes)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "artists.dat").write_text(
        'id\tname\turl\tpictureURL\n1\tMALICE MIZER\tu\tp\n2\t"Weird Al" Yankovic\tu\tp\n3\tSigur Rós\tu\tp\n',
        encoding="utf-8")
    (root / "tags.dat").write_bytes("tagID\ttagValue\r\n1\tmetal\r\n2\tpost-rock\r\n3\tcaf\xe9 music\r\n"
                                    .encode("latin-1"))
    rows = interactions or "2\t1\t100\r\n2\t2\t5\r\n3\t2\t7\r\n3\t3\t9\r\n"
    (root / "user_artists.dat").write_text("userID\tartistID\tweight\r\n" + rows, encoding="utf-8", newline="")
    (root / "user_friends.dat").write_text("userID\tfriendID\r\n2\t3\r\n3\t2\r\n", newline="")
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\r\n2\t1\t1\t1\t4\t2009\r\n3\t3\t2\t1\t5\t1956\r\n"
        "3\t3\t3\t1\t6\t2010\r\n2\t99\t1\t1\t4\t2009\r\n" + tags_extra, newline="")
    return root


def test_reads_the_quirks_of_the_real_files(tmp_path, caplog):
    root = write_lastfm(tmp_path / "lastfm")
    with caplog.at_level(logging.WARNING, logger="funnel"):
        data = load_lastfm(root)
    assert data.n_users == 2 and data.n_artists == 3
    assert data.artists["name"].tolist() == ["MALICE MIZER", '"Weird Al" Yankovic', "Sigur Rós"]
    assert "café music" in data.tags["tag"].tolist()
    assert not any("\r" in t for t in data.tags["tag"])
    assert len(data.tag_assignments) == 3  # the row naming artist 99 is dropped ...
    assert "dropped 1 tag assignment" in caplog.text  # ... and counted in a warning
    assert data.tag_assignments["timestamp"].min().year == 1956
    assert len(data.friends) == 2


def test_timestamped_tag_file_is_preferred(tmp_path):
    root = write_lastfm(tmp_path / "lastfm")
    (root / "user_taggedartists-timestamps.dat").write_text(
        "userID\tartistID\ttagID\ttimestamp\r\n2\t1\t1\t1241128800000\r\n", newline="")
    data = load_lastfm(root)
    assert len(data.tag_assignments) == 1
    assert data.tag_assignments["timestamp"].iloc[0] == pd.Timestamp("2009-04-30 22:00:00")


def test_path_resolution_order_and_error(tmp_path, monkeypatch):
    root = write_lastfm(tmp_path / "env")
    monkeypatch.setenv(DATA_ENV, str(root))
    assert load_lastfm().n_users == 2
    with pytest.raises(DataError, match=r"not found .*nowhere.*user_artists.dat"):
        load_lastfm(tmp_path / "nowhere")


def test_bad_file_rows_name_file_and_line(tmp_path):
    root = write_lastfm(tmp_path / "a", interactions="2\t1\t100\r\n2\tx\t5\r\n")
    with pytest.raises(DataError, match=r"user_artists.dat, line 3 .*'x'"):
        load_lastfm(root)
    root = write_lastfm(tmp_path / "b", interactions="2\t1\t100\r\n2\t2\t0\r\n")
    with pytest.raises(DataError, match=r"weight.*line 3"):
        load_lastfm(root)
    root = write_lastfm(tmp_path / "c")
    (root / "user_artists.dat").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_lastfm(root)
    (root / "user_artists.dat").write_text("userID,artistID,weight\n2,1,3\n")
    with pytest.raises(DataError, match="lacks column"):
        load_lastfm(root)


def frame(**columns):
    return pd.DataFrame(columns)


def test_from_frames_needs_only_interactions_and_sums_duplicates():
    data = Dataset.from_frames(frame(user_id=[1, 1, 2], artist_id=[5, 5, 6], weight=[2.0, 3.0, 1.0]))
    assert data.interactions["weight"].tolist() == [5.0, 1.0]
    assert data.artist_ids.tolist() == [5, 6] and data.tags is None
    assert data.matrix.shape == (2, 2) and data.matrix[0, 0] == 5.0


@pytest.mark.parametrize("interactions, message", [
    (frame(user_id=[1], artist_id=[2]), r"missing column.*weight"),
    (frame(user_id=[1, 2], artist_id=[2, 2.5], weight=[1, 1]), r"artist_id.*row 1 has 2.5"),
    (frame(user_id=[1, "a"], artist_id=[2, 2], weight=[1, 1]), r"user_id.*mixed types.*row 1 has str 'a'"),
        (frame(user_id=[1, None], artist_id=[2, 2], weight=[1, 1]), r"user_id.*1 empty \(null\).*row 1"),
    (frame(user_id=[1, 2], artist_id=[2, 3], weight=[1, -4]), r"weight.*row 1 has -4"),
    (frame(user_id=[1, 2], artist_id=[2, 3], weight=[1, np.nan]), r"weight.*row 1"),
    (frame(user_id=[1, 2], artist_id=[2, 3], weight=[np.inf, 1]), r"weight.*row 0"),
    (frame(user_id=[], artist_id=[], weight=[]), "empty"),
])
def test_from_frames_rejects_bad_interactions(interactions, message):
    with pytest.raises(DataError, match=message):
        Dataset.from_frames(interactions)


def test_from_frames_checks_optional_frames():
    inter = frame(user_id=[1], artist_id=[2], weight=[1.0])
    with pytest.raises(DataError, match="artist ids missing from the artists frame"):
        Dataset.from_frames(inter, artists=frame(artist_id=[3], name=["x"]))
    with pytest.raises(DataError, match="datetime64"):
        Dataset.from_frames(inter, tag_assignments=frame(user_id=[1], artist_id=[2], tag_id=[1],
                                                         timestamp=["2009"]))
    with pytest.raises(DataError, match=r"friends.*missing column"):
        Dataset.from_frames(inter, friends=frame(user=[1]))


def test_real_lastfm_counts(lastfm):
    assert lastfm.n_users == 1892 and lastfm.n_artists == 17632
    assert len(lastfm.interactions) == 92834
    assert len(lastfm.tag_assignments) == 186479 - 1538
    assert lastfm.tags["tag"].str.contains("\r").sum() == 0
    assert len(lastfm.fingerprint()) == 16


def test_more_bad_frames_get_funnel_errors():
    with pytest.raises(DataError, match="64-bit"):
        Dataset.from_frames(frame(user_id=np.array([2**63 + 5], dtype=np.uint64), artist_id=[1], weight=[1.0]))
    big = Dataset.from_frames(frame(user_id=pd.Series([2**53, 2**53 + 1], dtype=object), artist_id=[1, 1],
                                    weight=[1.0, 1.0]))
    assert big.n_users == 2  # object ids stay exact
    with pytest.raises(DataError, match=r"weight.*row 0"):
        Dataset.from_frames(frame(user_id=[1], artist_id=[1], weight=[1e300]))
    dup = pd.DataFrame([[1, 2, 3.0, 4]], columns=["user_id", "artist_id", "weight", "weight"])
    with pytest.raises(DataError, match="repeated column"):
        Dataset.from_frames(dup)


def test_fingerprint_covers_friends_and_tag_ids():
    inter = frame(user_id=[1, 2], artist_id=[1, 1], weight=[1.0, 2.0])
    plain = Dataset.from_frames(inter).fingerprint()
    with_friends = Dataset.from_frames(inter, friends=frame(user_id=[1], friend_id=[2])).fingerprint()
    assert plain != with_friends
    a = Dataset.from_frames(inter, tags=frame(tag_id=[1, 2], tag=["x", "y"])).fingerprint()
    b = Dataset.from_frames(inter, tags=frame(tag_id=[2, 1], tag=["x", "y"])).fingerprint()
    assert a != b


def test_ids_at_and_beyond_the_int64_edges_are_not_in_the_data():
    top = 2**63 - 1
    data = Dataset.from_frames(frame(user_id=[-2**63, 1, top], artist_id=[5, 6, 7], weight=[1.0, 1.0, 1.0]))
    assert data.user_ids.tolist() == [-2**63, 1, top]
    edges = [top, 2**63, -2**63, -2**63 - 1, 2**70, -2**70, 1]
    assert data.user_index(edges).tolist() == [2, -1, 0, -1, -1, -1, 1]
    assert data.user_index(np.array(edges, dtype=object)).tolist() == [2, -1, 0, -1, -1, -1, 1]
    assert data.user_index(np.array([2**63, top], dtype=np.uint64)).tolist() == [-1, 2]
    assert data.user_index(np.array([2.0**63, 1.0, 1.5, np.nan])).tolist() == [-1, 1, -1, -1]
    assert data.user_index([True, "1", None, 1.0, 2**70]).tolist() == [-1, -1, -1, 1, -1]  # True is no user 1
    assert data.artist_index([2**70, 6]).tolist() == [-1, 1]
