"""Bad input, case by case: what load_lastfm and Dataset.from_frames do with it.

Each case either raises DataError naming the file and line (or frame row), the column, the
bad value and a fix, or is accepted as documented (with a log line where data is dropped,
summed or missing). docs/errors.md lists the same cases.
"""

import logging

import numpy as np
import pandas as pd
import pytest

from funnel import DataError, Dataset, Recommender, load_lastfm
from funnel.data.synthetic import synthetic
from tests.conftest import SMALL

UA_HEADER = "userID\tartistID\tweight\r\n"
GOOD = {
    "user_artists.dat": UA_HEADER + "2\t1\t100\r\n2\t2\t5\r\n3\t2\t7\r\n3\t3\t9\r\n",
    "artists.dat": "id\tname\turl\tpictureURL\n1\tMALICE MIZER\tu\tp\n2\tSigur Rós\tu\tp\n3\tÓlafur Arnalds\tu\tp\n",
    "tags.dat": "tagID\ttagValue\r\n1\tmetal\r\n2\tcafé music\r\n",
    "user_taggedartists.dat": "userID\tartistID\ttagID\tday\tmonth\tyear\r\n2\t1\t1\t1\t4\t2009\r\n"
                              "3\t3\t2\t1\t5\t2010\r\n",
    "user_friends.dat": "userID\tfriendID\r\n2\t3\r\n3\t2\r\n",
}


def write_lastfm(root, **files):
    """A tiny valid Last.fm directory; ``files`` replace a file (text, raw bytes, or None = absent).

    Keyword names are file names with ``.`` and ``-`` as ``_``: ``user_artists_dat="..."``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, content in GOOD.items():
        content = files.get(name.replace(".", "_").replace("-", "_"), content)
        if content is None:
            continue
        if isinstance(content, str):
            content = content.encode("latin-1" if name == "tags.dat" else "utf-8")
        (root / name).write_bytes(content)
    return root


def interactions(rows: str) -> str:
    return UA_HEADER + rows


# --- the directory and its files ---------------------------------------------------------

def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"Last.fm data not found .*nowhere does not exist; pass the directory"):
        load_lastfm(tmp_path / "nowhere")


def test_missing_required_file(tmp_path):
    root = write_lastfm(tmp_path / "d", user_artists_dat=None)
    with pytest.raises(DataError, match=r"not found .*has no file user_artists.dat; pass the directory"):
        load_lastfm(root)


@pytest.mark.parametrize("missing, attribute, lost", [
    ("tags.dat", "tags", "tag names"),
    ("user_friends.dat", "friends", "friends"),
    ("user_taggedartists.dat", "tag_assignments", "tag assignments"),
])
def test_missing_optional_file_loads_without_it_and_warns(tmp_path, caplog, missing, attribute, lost):
    root = write_lastfm(tmp_path / "d", **{missing.replace(".", "_"): None})
    with caplog.at_level(logging.WARNING, logger="funnel"):
        data = load_lastfm(root)
    assert getattr(data, attribute) is None
    assert data.n_users == 2 and data.n_artists == 3
    assert f"{missing}" in caplog.text and f"loading without {lost}" in caplog.text


def test_missing_artists_file_uses_the_artists_seen(tmp_path, caplog):
    root = write_lastfm(tmp_path / "d", artists_dat=None)
    with caplog.at_level(logging.WARNING, logger="funnel"):
        data = load_lastfm(root)
    assert data.artist_ids.tolist() == [1, 2, 3] and set(data.artist_names) == {""}
    assert "artists.dat not found; loading without artist names" in caplog.text


# --- user_artists.dat: rejected, naming file, line, column, value and a fix --------------

@pytest.mark.parametrize("content, message", [
    pytest.param(b"", r"user_artists.dat is empty \(0 bytes\).*restore the file", id="empty file"),
    pytest.param(UA_HEADER, r"interactions are empty \(.*user_artists.dat\): no rows; at least one .* row is needed",
                 id="header only"),
    pytest.param("userID,artistID,weight\n2,1,3\n",
                 r"user_artists.dat, line 1 \(header\) lacks column.*'userID,artistID,weight'.*comma",
                 id="comma-separated"),
    pytest.param(UA_HEADER + "2,1,3\r\n",
                 r"user_artists.dat, line 2 \('2,1,3'\) has 1 tab-separated field\(s\), expected 3 .*comma",
                 id="comma-separated rows under a tab header"),
    pytest.param("userID\tartistID\tplays\n2\t1\t3\n",
                 r"line 1 \(header\) lacks column\(s\) \['weight'\] .*'plays'.*must name userID, artistID, weight",
                 id="renamed column"),
    pytest.param("userID\tartistID\n2\t1\n", r"line 1 \(header\) lacks column\(s\) \['weight'\]",
                 id="missing column"),
    pytest.param(interactions("2\t1\t100\r\nabc\t2\t5\r\n"),
                 r"'user_id' must hold integer ids \(whole numbers within 64 bits\); 1 bad row\(s\), the first: "
                 r".*user_artists.dat, line 3 has 'abc'; correct or delete",
                 id="non-integer id"),
    pytest.param(interactions("2\t1\t100\r\n2\t2.5\t5\r\n"), r"'artist_id' must hold integer ids .*line 3 has 2.5",
                 id="fractional id"),
    pytest.param(interactions("2\t1\t100\r\n99999999999999999999999\t2\t5\r\n"),
                 r"'user_id' must hold integer ids \(whole numbers within 64 bits\).*line 3 "
                 r"has '99999999999999999999999'",
                 id="id over int64"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t-5\r\n"),
                 r"'weight' must be a finite number > 0 .*line 3 has -5; correct or delete", id="negative weight"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t0\r\n"), r"'weight' must be .*line 3 has 0;", id="zero weight"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\tNaN\r\n"), r"'weight' must be .*line 3 has 'NaN'", id="NaN weight"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t\r\n"), r"'weight' must be .*line 3 has ''", id="empty weight"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t1e300\r\n"), r"'weight' must be .*<= 1e\+30.*line 3 has 1e\+300",
                 id="huge weight"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t1" + "0" * 31 + "\r\n"), r"'weight' must be .*line 3 has '10{31}'",
                 id="integer weight over 1e30"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t5\t9\r\n3\t2\t7\r\n"),
                 r"user_artists.dat, line 3 has 4 tab-separated fields, expected 3 .*remove the extra tab",
                 id="extra field"),
    pytest.param(interactions("2\t1\t100\r\n2\t2\t5\r\n3\t2"),
                 r"user_artists.dat, line 4 \('3\\t2'\) has 2 tab-separated field\(s\), expected 3 "
                 r"\(userID, artistID, weight\); the line is cut short", id="truncated last line"),
    pytest.param(interactions("2\t1\t100\r\n2\r\n3\t2\t7\r\n"),
                 r"line 3 \('2'\) has 1 tab-separated field\(s\), expected 3", id="truncated middle line"),
    pytest.param(interactions("2\t1\t100\r\n\r\n2\t2\r\n"), r"line 4 \('2\\t2'\) has 2 tab-separated",
                 id="truncated line after a blank line"),
    pytest.param((UA_HEADER + "2\t1\t100\r\n2\t\xff\t5\r\n").encode("latin-1"),
                 r"user_artists.dat, line 3, column 'artistID' is not valid utf-8 text \(byte b'\\xff'.*re-save",
                 id="invalid utf-8"),
    pytest.param((UA_HEADER + "2\t1\t100\r\n2\t2\t5\r\n3\t2\t7\xe9\r\n").encode("latin-1"),
                 r"line 4, column 'weight' is not valid utf-8 text \(byte b'\\xe9'", id="latin-1 bytes"),
    pytest.param(interactions("2\t1\t100\r\n2\t42\t5\r\n"),
                 r"1 row\(s\) of artist ids missing from the artists frame \(.*artists.dat\) "
                 r"\(first: artist_id 42 at .*user_artists.dat, line 3\); add those artists or drop",
                 id="artist missing from artists.dat"),
])
def test_bad_interactions_file(tmp_path, content, message):
    root = write_lastfm(tmp_path / "d", user_artists_dat=content)
    with pytest.raises(DataError, match=message):
        load_lastfm(root)


@pytest.mark.parametrize("files, message", [
    pytest.param({"tags_dat": b""}, r"tags.dat is empty \(0 bytes\)", id="empty optional file"),
    pytest.param({"artists_dat": "id\tname\turl\tpictureURL\n"},
                 r"4 row\(s\) of artist ids missing from the artists frame \(.*artists.dat\) "
                 r"\(first: artist_id 1 at .*user_artists.dat, line 2\)", id="header-only artists.dat"),
    pytest.param({"artists_dat": "id,name,url,pictureURL\n1,a,u,p\n"}, r"artists.dat, line 1 \(header\).*comma",
                 id="comma-separated artists.dat"),
    pytest.param({"user_friends_dat": "userID\tfriendID\r\n2\t3\r\n2\tx\r\n"},
                 r"friends column 'friend_id' must hold integer ids .*user_friends.dat, line 3 has 'x'",
                 id="non-integer friend id"),
    pytest.param({"user_taggedartists_dat": GOOD["user_taggedartists.dat"] + "2\t1"},
                 r"user_taggedartists.dat, line 4 \('2\\t1'\) has 2 tab-separated field\(s\), expected 6",
                 id="truncated tag line"),
    pytest.param({"artists_dat": "id\tname\turl\tpictureURL\n1\tA\tu\t\n2\tB\n3\tC\tu\tp\n"},
                 r"artists.dat, line 3 \('2\\tB'\) has 2 tab-separated field\(s\), expected 4 "
                 r"\(id, name, url, pictureURL\)", id="truncated artists line after an empty field"),
    pytest.param({"user_friends_dat": b"userID\tfriendID\r\n2\t\x833\r\n"},
                 r"user_friends.dat, line 2, column 'friendID' is not valid utf-8", id="invalid utf-8 friends"),
])
def test_bad_other_files(tmp_path, files, message):
    root = write_lastfm(tmp_path / "d", **files)
    with pytest.raises(DataError, match=message):
        load_lastfm(root)


# --- accepted as documented ----------------------------------------------------------------

def test_duplicate_rows_are_summed(tmp_path, caplog):
    root = write_lastfm(tmp_path / "d", user_artists_dat=interactions("2\t1\t100\r\n2\t1\t100\r\n3\t2\t7\r\n"))
    with caplog.at_level(logging.INFO, logger="funnel"):
        data = load_lastfm(root)
    assert data.interactions.values.tolist() == [[2, 1, 200.0], [3, 2, 7.0]]
    assert "summed 1 duplicate" in caplog.text


def test_last_line_without_newline_is_read(tmp_path):
    data = load_lastfm(write_lastfm(tmp_path / "d", user_artists_dat=interactions("2\t1\t100\r\n3\t2\t7")))
    assert data.interactions.values.tolist() == [[2, 1, 100.0], [3, 2, 7.0]]


def test_integer_weight_over_int64_but_within_the_limit_is_a_float(tmp_path):
    big = "99999999999999999999999"  # > 2**63, < 1e30: a float, never wrapped to a negative int64
    data = load_lastfm(write_lastfm(tmp_path / "d", user_artists_dat=interactions(f"2\t1\t{big}\r\n3\t2\t7\r\n")))
    assert data.interactions["weight"].tolist() == [float(big), 7.0]


def test_negative_ids_are_labels(tmp_path):
    data = load_lastfm(write_lastfm(tmp_path / "d", user_artists_dat=interactions("-3\t1\t100\r\n2\t2\t7\r\n")))
    assert data.user_ids.tolist() == [-3, 2]


@pytest.mark.parametrize("name", [b"Sigur R\xf3s", b"Sigur R\xc3"], ids=["latin-1 name", "cut utf-8 name"])
def test_undecodable_artist_name_is_replaced_with_a_warning(tmp_path, caplog, name):
    artists = b"id\tname\turl\tpictureURL\n1\tA\tu\tp\n2\t" + name + b"\tu\tp\n3\tC\tu\tp\n"
    with caplog.at_level(logging.WARNING, logger="funnel"):
        data = load_lastfm(write_lastfm(tmp_path / "d", artists_dat=artists))
    assert data.artist_names[1].startswith("Sigur R\ufffd") and data.artist_names[[0, 2]].tolist() == ["A", "C"]
    assert "artists.dat: 1 line(s) hold bytes that are not valid utf-8 (first: line 3)" in caplog.text


def test_undecodable_artist_id_is_rejected(tmp_path):
    artists = b"id\tname\turl\tpictureURL\n1\tA\tu\tp\n2\xff\tB\tu\tp\n3\tC\tu\tp\n"
    with pytest.raises(DataError, match=r"artists column 'artist_id' must hold integer ids .*artists.dat, line 3"):
        load_lastfm(write_lastfm(tmp_path / "d", artists_dat=artists))


def test_tag_rows_for_unknown_artists_are_dropped_with_a_warning(tmp_path, caplog):
    tagged = GOOD["user_taggedartists.dat"] + "2\t99\t1\t1\t4\t2009\r\n"
    with caplog.at_level(logging.WARNING, logger="funnel"):
        data = load_lastfm(write_lastfm(tmp_path / "d", user_taggedartists_dat=tagged))
    assert len(data.tag_assignments) == 2
    assert "dropped 1 tag assignment row(s) naming 1 artist id(s) absent from the artists file" in caplog.text


def test_tiny_datasets_load(tmp_path):
    one_each = load_lastfm(write_lastfm(tmp_path / "a", user_artists_dat=interactions("2\t1\t100\r\n3\t2\t5\r\n")))
    assert one_each.n_users == 2 and len(one_each.interactions) == 2
    one_user = load_lastfm(write_lastfm(tmp_path / "b", user_artists_dat=interactions("2\t1\t100\r\n2\t2\t5\r\n")))
    assert one_user.n_users == 1
    one_artist = load_lastfm(write_lastfm(tmp_path / "c", user_artists_dat=interactions("2\t1\t100\r\n3\t1\t5\r\n"),
                                          artists_dat="id\tname\turl\tpictureURL\n1\tA\tu\tp\n",
                                          user_taggedartists_dat=None))
    assert one_artist.n_artists == 1


# --- Dataset.from_frames -----------------------------------------------------------------

def frame(**columns):
    return pd.DataFrame(columns)


@pytest.mark.parametrize("interactions, message", [
    pytest.param(frame(user_id=[1, 2], artist_id=[1, 2], weight=[1.0, np.nan]),
                 r"'weight' must be a finite number > 0.*row 1 has an empty value \(null or NaN\); correct or delete",
                 id="NaN weight"),
    pytest.param(frame(user_id=[1, 2], artist_id=[1, 2], weight=[1.0, 1e31]), r"'weight'.*row 1 has 1e\+31",
                 id="huge weight"),
    pytest.param(frame(user_id=[1, "x"], artist_id=[1, 2], weight=[1.0, 1.0]), r"'user_id' holds ids of mixed types: "
                 r"row 0 has int 1, row 1 has str 'x'; use one type", id="mixed id types"),
    pytest.param(frame(user_id=[1, 2], artist_id=[1.0, np.nan], weight=[1.0, 1.0]),
                 r"'artist_id' has 1 empty \(null\) id\(s\), first at row 1; drop those rows", id="missing id"),
    pytest.param(frame(user_id=[1e20], artist_id=[1], weight=[1.0]), r"within 64 bits\).*row 0 has 1e\+20",
                 id="id over int64"),
    pytest.param(frame(user_id=[], artist_id=[], weight=[]), r"interactions are empty: no rows; at least one",
                 id="empty frame"),
    pytest.param(pd.DataFrame(), r"missing column\(s\) \['user_id', 'artist_id', 'weight'\]", id="no columns"),
    pytest.param({"user_id": [1]}, r"must be a pandas DataFrame, got dict", id="not a frame"),
])
def test_from_frames_rejects(interactions, message):
    with pytest.raises(DataError, match=message):
        Dataset.from_frames(interactions)


def test_from_frames_names_the_row_of_an_unknown_artist():
    inter = frame(user_id=[1, 1], artist_id=[2, 7], weight=[1.0, 1.0])
    with pytest.raises(DataError, match=r"missing from the artists frame \(first: artist_id 7 at row 1\)"):
        Dataset.from_frames(inter, artists=frame(artist_id=[2], name=["x"]))


def test_from_frames_accepts_negative_ids():
    data = Dataset.from_frames(frame(user_id=[-1, 5], artist_id=[-7, 3], weight=[1.0, 2.0]))
    assert data.user_ids.tolist() == [-1, 5] and data.artist_ids.tolist() == [-7, 3]


# --- fitting on tiny data ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_synth():
    return synthetic(n_users=60, n_artists=80, seed=1)


def rebuild(data, inter, artists=None):
    return Dataset.from_frames(inter, artists=data.artists if artists is None else artists, tags=data.tags,
                               tag_assignments=data.tag_assignments, friends=data.friends)


def test_fit_with_a_user_who_has_one_artist(small_synth):
    inter = pd.concat([small_synth.interactions,
                       frame(user_id=[10_000], artist_id=[small_synth.artist_ids[0]], weight=[3.0])])
    model = Recommender(**SMALL).fit(rebuild(small_synth, inter))
    recs = model.recommend(10_000, n=5)
    assert len(recs) == 5 and small_synth.artist_ids[0] not in recs["artist_id"].tolist()


def test_fit_on_one_artist_is_a_clear_error(small_synth):
    inter = small_synth.interactions
    first = inter["artist_id"].iloc[0]
    one = rebuild(small_synth, inter[inter["artist_id"] == first],
                  artists=small_synth.artists[small_synth.artists["artist_id"] == first])
    with pytest.raises(DataError, match="users with at least 2 artists"):
        Recommender(**SMALL).fit(one)


def test_fit_on_one_user_works(small_synth):
    inter = small_synth.interactions
    one = rebuild(small_synth, inter[inter["user_id"] == inter["user_id"].iloc[0]])
    model = Recommender(**SMALL).fit(one)  # no artist has 2 listeners: EASE models none
    assert len(model.recommend(one.user_ids[0], n=5)) == 5
