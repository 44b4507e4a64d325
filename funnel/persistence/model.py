"""The saved-model format (version 8): a directory of checksummed files and a JSON manifest.

    manifest.json                        format version, provenance, settings, each part's class
                                         path, each file's checksum, size (and an array's dtype
                                         and shape)
    <part>-<array>-<sha>.npy             one file per array of every part and the id maps (no pickle)
    <part>-<file>-<sha>.<ext>            files in their own native formats (FAISS indexes, ...)

One ``.npy`` per array, so that loading can memory-map each one: processes serving the same
model directory then share its pages instead of holding a copy each. Data files are named by
their checksum and written first; the manifest that points at them is replaced atomically
last (and its directory synced), so an interrupted save leaves the previous model loadable,
and no file a loaded model maps is ever changed in place.

A save holds the directory's lock (:func:`~funnel.persistence.files.locked_directory`) from
start to end, so saves into one directory run one at a time. It removes only what a funnel
save wrote: files the previous manifest lists and the new one does not, files an interrupted
save wrote (listed in ``.funnel.pending`` until a manifest lists them) and temp files of
:func:`~funnel.persistence.files.atomic_write`. A directory that holds other files and no
funnel model is refused. A load reads a manifest of at most
:data:`~funnel.persistence.files.JSON_LIMIT` bytes, validated in one place (:class:`Manifest`),
and only regular files named directly inside the directory, each of its recorded size.
Models saved by another format version are refused. Loading imports the module of each
part's class path (``funnel.registry.import_class``): load models from sources you trust, as
you would run their code.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from funnel.errors import ArtifactError, shorten
from funnel.persistence.files import (
    TEMP_NAME,
    atomic_write,
    check_sha256,
    load_json,
    load_npy,
    locked_directory,
    map_npy,
    npy_bytes,
    open_regular,
    read_verified,
    save_json,
    sha256_file,
)
from funnel.protocols import PartState
from funnel.version import __version__

FORMAT_VERSION = 8
MANIFEST = "manifest.json"
LOCK = ".funnel.lock"  # held by a save, removed when it ends
PENDING = ".funnel.pending"  # data files a save created, one name a line, until a manifest lists them
SEP = "|"  # between a part's key ("models/als") and the name of one of its arrays or files
LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "implicit", "scikit-surprise", "faiss-cpu")
_DATA_NAME = re.compile(r"[A-Za-z0-9_.-]+-[0-9a-f]{16}[A-Za-z0-9_.-]*")  # what _write_hashed names files
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def library_versions() -> dict[str, str | None]:
    """Versions of funnel, Python and the libraries a model's numbers depend on."""
    versions: dict[str, str | None] = {"funnel": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# the manifest's schema -------------------------------------------------------------------
def is_plain_name(name: object) -> bool:
    """Whether ``name`` names a file directly inside a directory: no path, no ``..``, not absolute."""
    return (isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\:\0")
            and not os.path.isabs(name))


def _plain_name(name: str) -> str:
    if not is_plain_name(name):
        raise ValueError("must be the plain name of a file directly inside the model directory (no '/', '\\', "
                         "':', '..' or absolute path)")
    return name


def _array_dtype(text: str) -> str:
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise ValueError("is not a numpy dtype") from None
    if dtype.hasobject:
        raise ValueError("holds objects, which need pickle")
    return text


_Role = Annotated[str, StringConstraints(pattern=r"^[^|]+\|.+$")]  # "<part key>|<array or file name>"


class FileEntry(BaseModel):
    """A saved file: its plain name in the model directory, SHA-256 and size in bytes."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: Annotated[str, AfterValidator(_plain_name)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: int = Field(ge=0)


class ArrayEntry(FileEntry):
    """A saved ``.npy`` file, with the dtype (``numpy.dtype.str``) and shape of its array."""

    dtype: Annotated[str, AfterValidator(_array_dtype)]
    shape: list[Annotated[int, Field(ge=0)]]


class Manifest(BaseModel):
    """What ``manifest.json`` must hold; other keys (``saved_at``, ``versions``) are informational."""

    model_config = ConfigDict(strict=True, extra="allow")

    format_version: int
    data_fingerprint: str
    config: dict[str, Any]
    feature_names: list[str]
    sources: list[str]
    classes: dict[str, str]  # part key -> "module:Class", imported on load
    n_users: int = Field(ge=0)
    n_artists: int = Field(ge=0)
    artist_side_only: bool
    ranker_candidate_recall: float = Field(ge=0, le=1, allow_inf_nan=False)
    arrays: dict[_Role, ArrayEntry]
    files: dict[_Role, FileEntry]


def validate_manifest(manifest: dict[str, Any], where: Path) -> Manifest:
    """``manifest`` checked against :class:`Manifest`; what is wrong raises :class:`ArtifactError`."""
    try:
        return Manifest.model_validate(manifest)
    except ValidationError as exc:
        errors = exc.errors()
        problems = []
        for error in errors[:12]:  # every top-level entry, missing, is named
            at = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing":
                problems.append(f"lacks entry {at!r}")
            else:
                shown = shorten(repr(error["input"]), 60)
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"entry {at!r} {message[:1].lower()}{message[1:]} (got {shown})")
        more = f" and {len(errors) - 12} more" if len(errors) > 12 else ""
        raise ArtifactError(f"{where} is malformed: {'; '.join(problems)}{more}; the save is incomplete, damaged "
                            "or from another program: retrain and save again") from None


# writing -------------------------------------------------------------------------------------
def write_model(path: Path, states: dict[str, PartState], manifest: dict[str, Any]) -> Path:
    """Write part states and ``manifest`` (without its ``arrays`` and ``files``) as a model directory.

    ``path`` must be new, empty or hold a funnel model: other files in it are kept, but a
    directory that holds some and no model is refused. The save holds the directory's lock
    throughout and then removes the files of the model it replaced (see the module's notes).

    Raises
    ------
    ArtifactError
        ``path`` holds other files and no funnel model, or cannot be written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the model directory {path}: {exc.strerror or exc}; "
                            "choose another") from exc
    try:
        with locked_directory(path, LOCK):
            pending = _pending(path)
            previous = _previous_names(path, pending)
            for name in os.listdir(path):  # temp files of a save that was killed (no other save runs: locked)
                if _is_temp(name) and os.path.isfile(path / name) and not os.path.islink(path / name):
                    _unlink(path / name)
            created: set[str] = set()
            try:
                arrays = {f"{key}{SEP}{name}": _write_array(path, key, name, value, created)
                          for key, state in states.items() for name, value in state.arrays.items()}
                files = {}
                for key, state in states.items():
                    for name, data in state.files.items():
                        stem, dot, suffix = name.rpartition(".")
                        files[f"{key}{SEP}{name}"] = _write_hashed(
                            path, _stem(key, stem), _UNSAFE.sub("-", dot + suffix), data, created)
                manifest = {"format_version": FORMAT_VERSION, "saved_at": datetime.now(timezone.utc).isoformat(),
                            "versions": library_versions(), **manifest, "arrays": arrays, "files": files}
                validate_manifest(manifest, path / MANIFEST)  # what is written must load
                save_json(path / MANIFEST, manifest)
            except BaseException:
                if not any(os.path.lexists(path / name) for name in pending | created):
                    _unlink(path / PENDING)  # nothing of this save's is left to clean up
                raise
            keep = {entry["name"] for entry in (*arrays.values(), *files.values())} | {MANIFEST}
            for name in (previous | pending) - keep:
                if os.path.isfile(path / name) and not os.path.islink(path / name):
                    _unlink(path / name)
            _unlink(path / PENDING)
    except OSError as exc:  # listing the directory, the note of pending files, ...
        raise ArtifactError(f"saving into {path} failed: {exc.strerror or exc}; the previous model, if any, is "
                            "unchanged") from exc
    return path


def model_directory(path: str | os.PathLike) -> Path:
    """The saved model a user names by ``path``: ``path`` itself when it holds a model or no
    ``model/`` folder (so an error names what was given), else its ``model/``, where a
    ``main.py`` run with ``--artifacts path`` saves."""
    path = Path(path)
    inner = path / "model"
    return inner if not (path / MANIFEST).is_file() and inner.is_dir() else path


def check_model_directory(path: str | os.PathLike) -> None:
    """Raise :class:`ArtifactError` when a model cannot be saved into ``path`` (check it before training).

    It can when ``path`` does not exist, is empty, or holds a funnel model.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise ArtifactError(f"cannot save a model into {path}: it is not a directory; choose a new or empty one")
    if path.is_dir():
        _previous_names(path, _pending(path))


def _pending(path: Path) -> set[str]:
    """The data files an interrupted save created and no manifest may list (see :data:`PENDING`)."""
    if not os.path.lexists(path / PENDING):
        return set()
    with open_regular(path / PENDING) as handle:
        text = handle.read(1 << 20).decode("utf-8", errors="replace")
    return {name for name in text.splitlines() if _DATA_NAME.fullmatch(name)}


def _previous_names(path: Path, pending: set[str]) -> set[str]:
    """The data files the manifest in ``path`` lists; a directory holding other files and no manifest is refused."""
    if not os.path.lexists(path / MANIFEST):
        # hidden files (.gitkeep, .DS_Store) do not make a folder someone else's
        others = sorted(name for name in os.listdir(path)
                        if not name.startswith(".") and name not in pending and not _is_temp(name))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise ArtifactError(f"cannot save a model into {path}: it holds other files ({shown}) and no saved "
                                "model; save into a new or empty directory")
        return set()
    try:
        old = load_json(path / MANIFEST)
        if type(old.get("format_version")) is not int or not isinstance(old.get("arrays"), dict) \
                or not isinstance(old.get("data_fingerprint"), str):
            raise ArtifactError("it has no format version, arrays and data fingerprint")
    except ArtifactError as exc:
        raise ArtifactError(f"cannot save a model into {path}: its {MANIFEST} is not a funnel model's ({exc}); "
                            f"save into a new or empty directory, or remove {path / MANIFEST}") from exc
    entries = [entry for group in ("arrays", "files") if isinstance(old.get(group), dict)
               for entry in old[group].values() if isinstance(entry, dict)]
    # only names a save gives its files: a manifest edited to list "notes.txt" removes nothing else
    return {entry["name"] for entry in entries
            if isinstance(entry.get("name"), str) and _DATA_NAME.fullmatch(entry["name"])}


def _is_temp(name: str) -> bool:
    """Whether ``name`` is a temp file of :func:`atomic_write` writing the manifest or a data file."""
    match = TEMP_NAME.fullmatch(name)
    return match is not None and (match["target"] == MANIFEST or _DATA_NAME.fullmatch(match["target"]) is not None)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # mapped by a running process on Windows: the next save removes it
        pass


def _stem(key: str, name: str) -> str:
    """A file-name stem for a part's array or file (the checksum after it keeps names apart)."""
    return _UNSAFE.sub("-", f"{key}-{name}")


def _write_array(directory: Path, key: str, name: str, value: np.ndarray, created: set[str]) -> dict[str, Any]:
    value = np.asarray(value)
    entry = _write_hashed(directory, _stem(key, name), ".npy", npy_bytes(value, f"{key} {name}"), created)
    return {**entry, "dtype": value.dtype.str, "shape": list(value.shape)}


def _write_hashed(directory: Path, stem: str, suffix: str, data: bytes, created: set[str]) -> dict[str, Any]:
    """Write ``data`` as ``<stem>-<sha>suffix`` unless that file is there already; its manifest entry.

    A new file's name goes to :data:`PENDING` first, so that a save killed before its
    manifest lists the file leaves the next save a note of it.
    """
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    if not os.path.lexists(directory / name):
        fd = os.open(directory / PENDING, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as journal:
            journal.write(name + "\n")
            journal.flush()
            os.fsync(journal.fileno())  # the note must outlive a crash that the file it names survives
        created.add(name)
        atomic_write(directory / name, lambda handle: handle.write(data))
    elif (os.path.islink(directory / name) or not (directory / name).is_file()
          or sha256_file(directory / name) != digest):  # a link is replaced: loads read no links
        atomic_write(directory / name, lambda handle: handle.write(data))
    return {"name": name, "sha256": digest, "size": len(data)}


# reading -------------------------------------------------------------------------------------
def read_model(path: Path, mmap: bool = True) -> tuple[dict[str, Any], dict[str, PartState]]:
    """The manifest and part states of a model directory, every file's checksum verified.

    With ``mmap``, arrays are read-only memory maps of their files (checked, then mapped:
    files are never changed in place, see the module's notes), and each part state's
    ``paths`` names its files so that a part may map them too (FAISS indexes). Each file
    must be a regular file directly inside ``path`` (no symbolic link) of its recorded size,
    and each array of its recorded dtype and shape.
    """
    if not path.is_dir():
        raise ArtifactError(f"no saved model at {path}: the directory does not exist; save one with "
                            "Recommender.save or run main.py")
    manifest = load_json(path / MANIFEST)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise ArtifactError(f"{path / MANIFEST} was saved by format {version!r}; this funnel reads format "
                            f"{FORMAT_VERSION} only: retrain and save the model again")
    checked = validate_manifest(manifest, path / MANIFEST)
    states: dict[str, PartState] = {}
    for role, entry in checked.arrays.items():
        key, _, array = role.partition(SEP)
        file = path / entry.name
        if mmap:
            with open_regular(file, role, entry.size) as handle:
                check_sha256(handle, entry.size, entry.sha256, f"{file} ({role})")
                value: np.ndarray = map_npy(handle, entry.size, role)
        else:
            value = load_npy(read_verified(file, entry.sha256, role, entry.size), role)
        if value.dtype.str != entry.dtype or list(value.shape) != entry.shape:
            raise ArtifactError(f"{file} ({role}) holds an array of {value.dtype.str} {tuple(value.shape)}, its "
                                f"manifest records {entry.dtype} {tuple(entry.shape)}; retrain and save again")
        states.setdefault(key, PartState()).arrays[array] = value
    for role, item in checked.files.items():
        key, _, name = role.partition(SEP)
        state = states.setdefault(key, PartState())
        state.files[name] = read_verified(path / item.name, item.sha256, role, item.size)
        if mmap:
            state.paths[name] = path / item.name
    return manifest, states


def check_model_arrays(path: Path, manifest: dict[str, Any], states: dict[str, PartState]) -> None:
    """Refuse a model whose arrays disagree where serving would break.

    The id maps must hold ``n_users`` and ``n_artists`` ids (and one name per artist), and the
    ranker's float arrays only finite numbers (a NaN coefficient makes every score NaN).
    """
    data = states.get("data", PartState()).arrays
    for name, count in (("user_ids", manifest["n_users"]), ("artist_ids", manifest["n_artists"]),
                        ("artist_names", manifest["n_artists"])):
        if name not in data:
            raise ArtifactError(f"{path / MANIFEST} lacks entry 'arrays.data{SEP}{name}'; the save is incomplete or "
                                "from another program: retrain and save again")
        if data[name].shape != (count,):
            raise ArtifactError(f"{path}: data{SEP}{name} holds an array of shape {data[name].shape} where the "
                                f"manifest counts {count}; retrain and save again")
    for name, value in states.get("ranker", PartState()).arrays.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ArtifactError(f"{path}: the ranker's {name} holds non-finite numbers (NaN or infinity), which "
                                "would make every score NaN; retrain and save again")


def string_array(values: np.ndarray) -> np.ndarray:
    """Names as a fixed-width unicode array (saved without pickle)."""
    return np.asarray(values).astype(str)
