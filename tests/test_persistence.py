"""Saved-model directories: saves keep what they did not write and run one at a time; loads read
only regular files of their recorded sizes, directly inside the directory, from a manifest of
the right shape."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from funnel import ArtifactError, ConfigError, Recommender
from funnel.persistence.files import JSON_LIMIT, npy_bytes
from funnel.persistence.model import FORMAT_VERSION, check_model_directory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saved(fitted, tmp_path):
    return fitted.save(tmp_path / "model")


@pytest.fixture
def other(saved):
    """Another model (the ranker's coefficients reversed): a save of it writes a new ranker file."""
    model = Recommender.load(saved, mmap=False)
    model.ranker_.coef_ = model.ranker_.coef_[::-1].copy()
    return model


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: object) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def _listed(path: Path) -> set[str]:
    manifest = _manifest(path)
    return {e["name"] for e in (*manifest["arrays"].values(), *manifest["files"].values())} | {"manifest.json"}


def _replace_array(path: Path, role: str, value: np.ndarray) -> None:
    """Put ``value`` in place of array ``role`` with a manifest entry that matches it (name, checksum, size...)."""
    data = npy_bytes(value)
    name = f"replaced-{hashlib.sha256(data).hexdigest()[:16]}.npy"
    (path / name).write_bytes(data)
    manifest = _manifest(path)
    manifest["arrays"][role] = {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "dtype": value.dtype.str, "shape": list(value.shape)}
    _write_manifest(path, manifest)


def _entry(path: Path, role: str) -> dict:
    manifest = _manifest(path)
    return (manifest["arrays"] | manifest["files"])[role]


# saving: what a save may remove ------------------------------------------------------------
def test_a_save_keeps_the_files_it_did_not_write(saved, other):
    user = {"notes.txt": b"my notes", "train.py": b"print(1)", "recommendations.csv": b"a,b\n", ".env": b"X=1"}
    for name, data in user.items():
        (saved / name).write_bytes(data)
    before = _listed(saved)
    other.save(saved)
    assert {name: (saved / name).read_bytes() for name in user} == user
    assert {f.name for f in saved.iterdir()} == _listed(saved) | set(user)  # the replaced model's files are gone
    assert before - _listed(saved) and not (before - _listed(saved)) & {f.name for f in saved.iterdir()}
    np.testing.assert_array_equal(Recommender.load(saved).ranker_.coef_, other.ranker_.coef_)


def test_a_save_removes_no_file_of_another_name_than_saves_give_even_if_listed(saved, other):
    (saved / "notes.txt").write_text("mine")
    (saved.parent / "outside.txt").write_text("mine too")
    manifest = _manifest(saved)
    entry = manifest["files"]["candidates/tags|index.faiss"]
    manifest["files"].update({"x|notes": {**entry, "name": "notes.txt"}, "x|out": {**entry, "name": "../outside.txt"}})
    _write_manifest(saved, manifest)
    other.save(saved)
    assert (saved / "notes.txt").read_text() == "mine" and (saved.parent / "outside.txt").read_text() == "mine too"


@pytest.mark.parametrize("content", [
    {"notes.txt": "mine"},
    {"sub/data.csv": "a,b"},
    {".gitkeep": "", "notes.txt": "mine"},
    {"manifest.json": '{"name": "my web app", "version": 2}'},  # another program's manifest
    {"manifest.json": '{"format_version": 1}'},  # nor is a version alone a funnel model's
    {"manifest.json": "not json"},
])
def test_a_folder_of_other_things_and_no_model_is_refused_untouched(fitted, tmp_path, content):
    folder = tmp_path / "proj"
    for name, text in content.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    listing = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(ArtifactError, match=re.escape(f"cannot save a model into {folder}") + ".*new or empty"):
        fitted.save(folder)
    with pytest.raises(ArtifactError, match="new or empty"):
        check_model_directory(folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == listing  # nothing written, nothing removed
    assert {name: (folder / name).read_text() for name in content} == content


def test_a_new_empty_or_funnel_only_folder_is_accepted(fitted, tmp_path):
    check_model_directory(tmp_path / "new")
    fitted.save(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty")
    leftovers = tmp_path / "leftovers"  # what a save killed at its start leaves: the lock, a temp file
    leftovers.mkdir()
    (leftovers / ".funnel.lock").write_bytes(b"")
    (leftovers / ".manifest.json.k2j_4g5x.tmp").write_bytes(b"{")
    fitted.save(leftovers)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / ".gitkeep").write_bytes(b"")  # hidden files do not make a folder someone else's
    fitted.save(tmp_path / "kept")
    assert (tmp_path / "kept" / ".gitkeep").exists()
    Recommender.load(tmp_path / "kept")
    for folder in (tmp_path / "new" / "deeper", tmp_path / "empty", leftovers):
        assert {f.name for f in folder.iterdir()} == _listed(folder)
        Recommender.load(folder)


def test_concurrent_saves_into_one_folder_leave_one_whole_model(saved, other, fitted):
    third = Recommender.load(saved, mmap=False)
    third.ranker_.coef_ = third.ranker_.coef_ * 2
    third.artist_names_ = np.array([f"name {i}" for i in range(len(third.artist_ids_))])
    (saved / "notes.txt").write_text("mine")
    models = (other, third)
    def save(model: Recommender, start: threading.Barrier, errors: list) -> None:
        try:
            start.wait()
            model.save(saved)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for attempt in range(6):
        start, errors = threading.Barrier(2), []
        threads = [threading.Thread(target=save, args=(model, start, errors)) for model in models]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert (saved / "notes.txt").read_text() == "mine"
        assert {f.name for f in saved.iterdir()} == _listed(saved) | {"notes.txt"}, f"attempt {attempt}"
        loaded = Recommender.load(saved)
        assert any(np.array_equal(loaded.ranker_.coef_, m.ranker_.coef_)
                   and np.array_equal(loaded.artist_names_, m.artist_names_) for m in models)
        fitted.save(saved)  # back to the first model, so that both saves replace it again


KILLED_SAVE = """
import os, signal, sys
import funnel.persistence.files as files
from funnel import Recommender

model = Recommender.load(sys.argv[1], mmap=False)
model.ranker_.coef_ = model.ranker_.coef_ * 3
model.artist_names_ = model.artist_names_[::-1].copy()
calls, replace = [0], os.replace

def replace_then_die(src, dst):
    calls[0] += 1
    if calls[0] == 2:  # the second new file's temp file is written, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

files.os.replace = replace_then_die
model.save(sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no kill -9 here")
def test_the_next_save_removes_what_a_killed_save_left(saved, other):
    (saved / "notes.txt").write_text("mine")
    (saved / ".notes.txt.abcd1234.tmp").write_text("not funnel's")  # like a temp name, but of no model file
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(saved)], cwd=ROOT, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    left = {f.name for f in saved.iterdir()} - _listed(saved) - {"notes.txt", ".notes.txt.abcd1234.tmp"}
    assert any(re.fullmatch(r"\..+\.[a-z0-9_]{8}\.tmp", name) for name in left)  # a temp file
    assert any(not name.startswith(".") for name in left)  # a new data file no manifest lists
    Recommender.load(saved)  # the previous model is still whole
    other.save(saved)
    assert {f.name for f in saved.iterdir()} == _listed(saved) | {"notes.txt", ".notes.txt.abcd1234.tmp"}
    np.testing.assert_array_equal(Recommender.load(saved).ranker_.coef_, other.ranker_.coef_)


def test_the_manifest_records_each_files_size_and_each_arrays_dtype_and_shape(saved):
    manifest = _manifest(saved)
    assert manifest["format_version"] == FORMAT_VERSION == 8
    loaded = Recommender.load(saved, mmap=False)
    data = {"data|artist_ids": loaded.artist_ids_, "data|artist_names": loaded.artist_names_,
            "ranker|coef": loaded.ranker_.coef_}
    for role, value in data.items():
        entry = manifest["arrays"][role]
        assert (entry["dtype"], entry["shape"]) == (value.dtype.str, list(value.shape))
    for entry in (*manifest["arrays"].values(), *manifest["files"].values()):
        assert entry["size"] == (saved / entry["name"]).stat().st_size


# loading: which files are read ---------------------------------------------------------------
@pytest.fixture
def alarm():
    """Fail a test instead of hanging it: a load that blocks is interrupted after 10 s."""
    def timeout(signum, frame):
        raise TimeoutError("the load blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.npy", "sub/x.npy", "a\\b.npy", "..", "", "C:x.npy"])
def test_names_other_than_plain_names_inside_the_folder_are_refused(saved, mmap, name):
    (saved.parent / "outside.npy").write_bytes((saved / _entry(saved, "data|artist_ids")["name"]).read_bytes())
    manifest = _manifest(saved)
    manifest["arrays"]["data|artist_ids"]["name"] = name
    _write_manifest(saved, manifest)
    with pytest.raises(ArtifactError, match=re.escape("arrays.data|artist_ids.name") + ".*plain name"):
        Recommender.load(saved, mmap=mmap)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("make, kind", [
    (lambda path, target: path.symlink_to(target.name), "a symbolic link"),  # to the right file, inside
    (lambda path, target: path.symlink_to("/dev/zero"), "a symbolic link"),
    (lambda path, target: os.mkfifo(path), "a FIFO"),
    (lambda path, target: path.mkdir(), "a directory"),
])
def test_only_regular_files_are_read(saved, alarm, mmap, make, kind):
    for role in ("data|artist_ids", "candidates/tags|index.faiss"):
        name = _entry(saved, role)["name"]
        (saved / name).rename(saved / f"moved-{name}")
        make(saved / name, saved / f"moved-{name}")
        with pytest.raises(ArtifactError, match=re.escape(f"({role}) is {kind}")):
            Recommender.load(saved, mmap=mmap)
        os.rmdir(saved / name) if (saved / name).is_dir() else (saved / name).unlink()
        (saved / f"moved-{name}").rename(saved / name)


def test_a_fifo_or_huge_manifest_is_refused_without_reading_it(saved, alarm):
    (saved / "manifest.json").unlink()
    os.mkfifo(saved / "manifest.json")
    with pytest.raises(ArtifactError, match="manifest.json is a FIFO"):
        Recommender.load(saved)
    (saved / "manifest.json").unlink()
    with open(saved / "manifest.json", "wb") as handle:  # sparse: no disk space, nothing to read
        handle.truncate(JSON_LIMIT + 1)
    with pytest.raises(ArtifactError, match="larger than 64 MiB"):
        Recommender.load(saved)


@pytest.mark.parametrize("mmap", [True, False])
def test_a_file_larger_than_recorded_is_refused_unread(saved, mmap):
    file = saved / _entry(saved, "models/als|item_factors")["name"]
    with open(file, "ab") as handle:  # sparse: 256 MiB more to read and hash, were it read
        handle.truncate(file.stat().st_size + (256 << 20))
    with pytest.raises(ArtifactError, match=re.escape("(models/als|item_factors) has") + ".*bytes where"):
        Recommender.load(saved, mmap=mmap)


# loading: the manifest's shape and the arrays' consistency -----------------------------------
def _set(key, value):
    return lambda manifest: manifest.update({key: value})


@pytest.mark.parametrize("damage, message", [
    (_set("arrays", []), "'arrays' input should be a valid dictionary"),
    (lambda m: m["arrays"]["data|artist_ids"].update(name=5), "'arrays.data|artist_ids.name' input should be"),
    (_set("sources", 5), "'sources' input should be a valid list"),
    (_set("feature_names", None), "'feature_names' input should be a valid list"),
    (_set("n_users", "150"), "'n_users' input should be a valid integer"),
    (_set("ranker_candidate_recall", "high"), "'ranker_candidate_recall' input should be a valid number"),
    (_set("artist_side_only", 1), "'artist_side_only' input should be a valid boolean"),
    (lambda m: m.pop("files"), "lacks entry 'files'"),
    (lambda m: m["arrays"]["ranker|coef"].pop("size"), "lacks entry 'arrays.ranker|coef.size'"),
    (lambda m: m["arrays"]["ranker|coef"].update(sha256="abc"), "'arrays.ranker|coef.sha256' string should match"),
    (lambda m: m["arrays"]["ranker|coef"].update(size=-1), "'arrays.ranker|coef.size' input should be greater"),
    (lambda m: m["arrays"]["ranker|coef"].update(dtype="O"), "'arrays.ranker|coef.dtype' holds objects"),
    (lambda m: m["arrays"]["ranker|coef"].update(dtype="<f4"), "(ranker|coef) holds an array of <f8"),
    (lambda m: m["arrays"]["ranker|coef"].update(shape=[2, 14]), "its manifest records <f8 (2, 14)"),
    (lambda m: m["arrays"]["ranker|coef"].update(size=m["arrays"]["ranker|coef"]["size"] - 8), "bytes where"),
    (lambda m: m["files"].update({"nosep": m["files"]["candidates/tags|index.faiss"]}), "'files.nosep.[key]'"),
    (_set("n_users", 149), "data|user_ids holds an array of shape (150,) where the manifest counts 149"),
    (_set("n_artists", 1000), "data|artist_ids holds an array of shape (240,) where the manifest counts 1000"),
    (_set("sources", ["tags", "nonexistent"]), "lists sources ['tags', 'nonexistent'] its settings do not all name"),
    (_set("classes", {"candidates/tags": 5}), "'classes.candidates/tags' input should be a valid string"),
    (lambda m: m["classes"].update({"candidates/tags": "os:getcwd"}), "'os:getcwd' is a builtin_function_or_method"),
    (lambda m: m["classes"].update({"candidates/tags": "funnel.candidates.sources:ALSSource"}),
     "cannot build: candidates entry 'tags' (tags): unknown setting 'search_dim'"),
    (lambda m: m["config"].update(seed="wide"), "holds settings this funnel cannot use"),
    (lambda m: m["config"].update(models={"svd": {"factors": "wide"}}), "holds parts this environment cannot build"),
    (lambda m: m["config"].update(colour="blue"), "holds settings this funnel cannot use"),
    (_set("format_version", 4), "saved by format 4; this funnel reads format 8 only: retrain"),
    (_set("format_version", True), "saved by format True"),
])
def test_malformed_manifests_are_artifact_errors(saved, damage, message):
    manifest = _manifest(saved)
    damage(manifest)
    _write_manifest(saved, manifest)
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Recommender.load(saved)


@pytest.mark.parametrize("role, value, message", [
    ("data|artist_names", lambda v: v[:-1], "data|artist_names holds an array of shape (239,)"),
    ("data|user_ids", lambda v: v[:-1], "data|user_ids holds an array of shape (149,)"),
    ("data|history/indptr", lambda v: v[:-1], "cannot rebuild (ValueError"),
    ("data|history/shape", lambda v: v + [0, 1], "holds a history matrix of shape (150, 241) for 150 users"),
    ("ranker|coef", lambda v: np.where(np.arange(len(v)) == 3, np.nan, v), "the ranker's coef holds non-finite"),
    ("ranker|intercept", lambda v: v + np.inf, "the ranker's intercept holds non-finite"),
    ("ranker|coef", lambda v: v[:-1], "the saved logistic ranker's arrays differ in length"),
    ("ranker|mean", lambda v: v[:-2], "the saved logistic ranker's arrays differ in length"),
])
def test_arrays_that_disagree_are_refused(saved, role, value, message):
    original = Recommender.load(saved, mmap=False)
    arrays = {"data|artist_names": original.artist_names_, "data|user_ids": original.user_ids_,
              "data|history/indptr": original.history_.indptr, "data|history/shape": np.array(original.history_.shape),
              "ranker|coef": original.ranker_.coef_, "ranker|mean": original.ranker_.mean_,
              "ranker|intercept": np.array([original.ranker_.intercept_])}
    _replace_array(saved, role, np.asarray(value(arrays[role])))
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Recommender.load(saved)


def test_a_ranker_of_other_features_than_the_stages_give_is_refused(saved):
    original = Recommender.load(saved, mmap=False)
    for role in ("coef", "mean", "scale"):  # consistent among themselves, one feature short of the stages
        _replace_array(saved, f"ranker|{role}", getattr(original.ranker_, f"{role}_")[:-1])
    with pytest.raises(ArtifactError, match="holds a ranker that cannot score its 28 features"):
        Recommender.load(saved)


def test_a_bad_runtime_setting_stays_a_config_error(saved):
    with pytest.raises(ConfigError, match="n_threads"):
        Recommender.load(saved, n_threads=-1)


# the property: a mutated manifest loads, or is an ArtifactError --------------------------------
@pytest.fixture(scope="module")
def pristine(fitted, tmp_path_factory):
    path = fitted.save(tmp_path_factory.mktemp("pristine") / "model")
    return path, (path / "manifest.json").read_text()


def _nodes(value, at=()):
    """Every path into a JSON value, the root's too."""
    yield at
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _nodes(child, (*at, key))


JSON_VALUES = {type(None): st.none(), bool: st.booleans(), int: st.integers(-(2 ** 70), 2 ** 70), float: st.floats(),
               str: st.text(max_size=8), list: st.lists(st.integers(0, 3), max_size=3),
               dict: st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)}
HOSTILE_NAMES = st.sampled_from(["/etc/passwd", "../../../../etc/passwd", "..", ".", "", "sub/x.npy", "a\\b.npy",
                                 "/dev/zero", "C:x.npy", "manifest.json", "x\0y.npy", ".funnel.lock"])


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_manifest_loads_or_is_an_artifact_error(pristine, data):
    path, text = pristine
    manifest = json.loads(text)
    at = data.draw(st.sampled_from(list(_nodes(manifest))), label="at")
    kind = data.draw(st.sampled_from(["delete", "replace", "truncate", "name"]), label="kind")
    if kind == "name":
        at = data.draw(st.sampled_from([a for a in _nodes(manifest) if a and a[-1] == "name"]), label="name at")
    mutated = copy.deepcopy(manifest)
    parent = mutated
    for key in at[:-1]:
        parent = parent[key]
    node = parent[at[-1]] if at else mutated
    if kind == "delete" and at:
        del parent[at[-1]]
    elif kind == "truncate" and isinstance(node, list) and node:
        parent[at[-1]] = node[:data.draw(st.integers(0, len(node) - 1))]
    elif kind == "name":
        parent[at[-1]] = data.draw(HOSTILE_NAMES)
    else:
        value = data.draw(st.one_of(*(values for kind, values in JSON_VALUES.items() if kind is not type(node))),
                          label="value")
        if at:
            parent[at[-1]] = value
        else:
            mutated = value
    try:
        _write_manifest(path, mutated)
        try:
            Recommender.load(path)
            event("loaded")
        except ArtifactError:
            event("refused")
    finally:
        (path / "manifest.json").write_text(text)


def test_a_save_replaces_a_link_in_place_of_one_of_its_files(fitted, tmp_path):
    first = fitted.save(tmp_path / "first")
    folder = fitted.save(tmp_path / "second")
    name = next(p.name for p in folder.glob("data-artist_ids-*.npy"))
    (folder / name).unlink()
    (folder / name).symlink_to(first / name)  # the same bytes, through a link: a load would refuse it
    fitted.save(folder)
    assert not (folder / name).is_symlink()
    Recommender.load(folder)
