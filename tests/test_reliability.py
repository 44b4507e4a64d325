"""Reliability: artifacts are verified before use, failed writes lose nothing, no pickle anywhere,
and property-based checks of the data and recommend APIs."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funnel
import funnel.persistence.files as files_module
import main
from funnel import ArtifactError, Dataset, FunnelError, Recommender

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_no_pickle_anywhere_in_the_package():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.[A-Za-z_]|\bjoblib\b|allow_pickle\s*=\s*True|\bdill\b|"
                         r"\bcloudpickle\b|np\.load\((?![^)]*allow_pickle=False)")
    sources = [*ROOT.joinpath("funnel").rglob("*.py"), ROOT / "main.py", ROOT / "args.py"]
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in sources
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert len(sources) > 20 and not offenders


def test_every_name_a_module_exports_exists():
    # ruff's F822 (a name in __all__ that is not defined) skips __init__.py; a star import would raise
    missing = [f"{info.name}.{name}" for info in pkgutil.walk_packages(funnel.__path__, "funnel.")
               for module in [importlib.import_module(info.name)]
               for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert not missing


@pytest.fixture
def saved(fitted, tmp_path):
    return fitted.save(tmp_path / "model")


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, **changes}))


@pytest.mark.parametrize("damage, message", [
    (lambda p: next(p.glob("models-als-item_factors-*.npy")).unlink(), "(models/als|item_factors) is missing"),
    (lambda p: next(p.glob("candidates-tags-index-*.faiss")).unlink(), "(candidates/tags|index.faiss) is missing"),
    (lambda p: _flip(next(p.glob("data-artist_ids-*.npy"))), "(data|artist_ids) fails its checksum"),
    (lambda p: _flip(next(p.glob("candidates-als-index-*.faiss")), 0.9),
     "(candidates/als|index.faiss) fails its checksum"),
    (lambda p: _truncate(next(p.glob("candidates-tags-index-*.faiss"))),
     "(candidates/tags|index.faiss) has 100 bytes where"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda p: (p / "manifest.json").write_text('{"format_version": 8, '), "not valid JSON"),
    (lambda p: (p / "manifest.json").write_text('{"format_version": 8}'), "lacks entry 'arrays'"),
    (lambda p: (p / "manifest.json").write_text("[2]"), "does not hold a JSON object"),
    (lambda p: _manifest(p, format_version=1), "saved by format 1; this funnel reads format 8 only: retrain"),
    (lambda p: _manifest(p, format_version=9), "saved by format 9"),
    (lambda p: _manifest(p, format_version="4"), "saved by format '4'"),
    (lambda p: (p / "manifest.json").write_text(json.dumps(
        {k: v for k, v in json.loads((p / "manifest.json").read_text()).items() if k != "format_version"})),
     "saved by format None"),
])
def test_damaged_artifacts_are_refused_before_parsing(saved, damage, message, monkeypatch):
    import funnel.candidates.sources as sources_module

    parsed = []
    for reader in ("index_from_bytes", "index_from_file"):
        monkeypatch.setattr(sources_module, reader, lambda blob, what="": parsed.append(blob))
    damage(saved)
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Recommender.load(saved)
    assert parsed == []  # no FAISS reader ran on unverified bytes


@pytest.mark.parametrize("mmap, reader", [(True, "index_from_file"), (False, "index_from_bytes")])
def test_an_undamaged_save_reaches_the_faiss_reader(saved, monkeypatch, mmap, reader):
    import funnel.candidates.sources as sources_module

    parsed = []
    real = getattr(sources_module, reader)
    monkeypatch.setattr(sources_module, reader, lambda source, what="": parsed.append(what) or real(source, what))
    Recommender.load(saved, mmap=mmap)
    assert sorted(parsed) == ["the als source's index", "the tags source's index"]  # the spy above can see them


def test_a_manifest_listing_other_features_than_its_settings_give_is_refused(saved):
    _manifest(saved, feature_names=["svd_prediction"])
    with pytest.raises(ArtifactError, match="lists features.*retrain"):
        Recommender.load(saved)


def test_the_cache_keeps_part_states_and_refuses_tampered_entries(tmp_path, caplog):
    from funnel.persistence import ArtifactCache
    from funnel.protocols import PartState

    cache = ArtifactCache(tmp_path)
    state = PartState({"coef": np.arange(3.0), "names": np.array(["a", "bc"])}, {"index.faiss": b"\x00\x01native"})
    cache.save("ranker", "fp", {"C": 0.1, "code": 2}, state)
    loaded = cache.load("ranker", "fp", {"C": 0.1, "code": 2})
    assert loaded.files == state.files and loaded.arrays.keys() == state.arrays.keys()
    for name, value in state.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], value)
    with caplog.at_level("INFO", logger="funnel"):
        assert cache.load("ranker", "fp", {"C": 0.1, "code": 3}) is None
        assert cache.load("ranker", "other", {"C": 0.1, "code": 2}) is None
        assert cache.load("svd", "fp", {}) is None
    assert "(code: 2 -> 3)" in caplog.text and "other data" in caplog.text and "no saved svd" in caplog.text
    _flip(tmp_path / "cache" / "ranker.npz")
    with caplog.at_level("WARNING", logger="funnel"):
        assert cache.load("ranker", "fp", {"C": 0.1, "code": 2}) is None
    assert "cannot reuse saved ranker" in caplog.text and "checksum" in caplog.text


def test_a_failed_csv_write_keeps_the_previous_csv(tmp_path, monkeypatch, capsys):
    from funnel.data.synthetic import synthetic
    from tests.test_cli import cli, write_as_lastfm

    data = write_as_lastfm(synthetic(n_users=60, n_artists=100, seed=2), tmp_path / "data")
    assert cli(tmp_path, data) == 0
    before = (tmp_path / "recs.csv").read_bytes()
    real_fsync = files_module.os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", disk_full)
    assert cli(tmp_path, data, "--seed", "1") == 1
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(files_module.os, "fsync", real_fsync)
    assert (tmp_path / "recs.csv").read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.is_file()]  # no temp files
    Recommender.load(tmp_path / "art" / "model")  # the previous model is still whole


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="no file modes to set here")
def test_written_files_get_the_umask_mode_and_replaced_ones_keep_theirs(tmp_path):
    previous = os.umask(0o027)
    try:
        files_module.atomic_write(tmp_path / "new.csv", lambda handle: handle.write(b"a"))
    finally:
        os.umask(previous)
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0o600
    (tmp_path / "new.csv").chmod(0o604)
    files_module.atomic_write(tmp_path / "new.csv", lambda handle: handle.write(b"b"))
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o604
    assert (tmp_path / "new.csv").read_bytes() == b"b"


def test_unwritable_artifacts_directory_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main.run(["--artifacts", str(blocker / "art"), "--output", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot create directory") and "\n" not in err


# property-based checks ---------------------------------------------------------------------

interaction_rows = st.lists(
    st.tuples(st.integers(1, 40), st.integers(1, 60), st.floats(0.5, 1e6, allow_nan=False)),
    min_size=1, max_size=80)


@PROPERTY
@given(interaction_rows)
def test_from_frames_keeps_every_valid_pair_once(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "artist_id", "weight"])
    data = Dataset.from_frames(frame)
    expected = frame.groupby(["user_id", "artist_id"])["weight"].sum()
    assert len(data.interactions) == len(expected) == data.matrix.nnz
    assert np.allclose(data.matrix.sum(), expected.sum(), rtol=1e-4)
    assert data.fingerprint() == Dataset.from_frames(frame.sample(frac=1, random_state=0)).fingerprint()


garbage = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=5), st.binary(max_size=3))


@PROPERTY
@given(st.lists(st.tuples(garbage, garbage, garbage), min_size=0, max_size=6))
def test_from_frames_raises_only_funnel_errors_on_garbage(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "artist_id", "weight"])
    try:
        Dataset.from_frames(frame)
    except FunnelError:
        pass


@PROPERTY
@given(user=st.integers(0, 149), n=st.integers(1, 240))
def test_recommend_invariants(fitted, synth, user, n):
    user_id = int(synth.user_ids[user])
    recs = fitted.recommend(user_id, n=n)
    seen = set(synth.artist_ids[synth.known_matrix()[user].indices])  # played or tagged
    assert len(recs) == min(n, synth.n_artists - len(seen))
    assert recs["artist_id"].is_unique and not seen & set(recs["artist_id"])
    assert (np.diff(recs["score"].to_numpy()) <= 0).all()
    pd.testing.assert_frame_equal(recs, fitted.recommend(user_id, n=n))


@PROPERTY
@given(history=st.lists(st.integers(1, 240), min_size=1, max_size=30), n=st.integers(1, 50))
def test_recommend_for_history_invariants(fitted, history, n):
    recs = fitted.recommend_for_history(history, n=n)
    assert len(recs) == min(n, 240 - len(set(history)))
    assert recs["artist_id"].is_unique and not set(history) & set(recs["artist_id"])
    assert (np.diff(recs["score"].to_numpy()) <= 0).all()


@PROPERTY
@given(user=garbage, n=garbage, history=st.one_of(garbage, st.lists(garbage, max_size=4),
                                                   st.dictionaries(garbage, garbage, max_size=3)))
def test_bad_calls_raise_only_funnel_errors(fitted, user, n, history):
    for call in (lambda: fitted.recommend(user, n=n), lambda: fitted.recommend_all(n=n, users=[user]),
                 lambda: fitted.recommend_for_history(history, n=5), lambda: fitted.similar_artists(user, n=n)):
        try:
            call()
        except FunnelError:
            pass


def test_fingerprint_does_not_depend_on_row_order_of_summed_duplicates():
    rng = np.random.default_rng(0)  # three duplicates of one pair: float sums differ by order
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2], "artist_id": [3, 3, 3, 3],
                          "weight": rng.uniform(0.5, 1e6, 4)})
    fingerprints = {Dataset.from_frames(frame.iloc[order]).fingerprint()
                    for order in ([0, 1, 2, 3], [2, 0, 1, 3], [1, 2, 0, 3], [3, 2, 1, 0])}
    assert len(fingerprints) == 1
