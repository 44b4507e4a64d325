"""The saved-model format (version 4): a directory of checksummed files and a JSON manifest.

    manifest.json                        format version, provenance, settings, file checksums
    <part>-<array>-<sha>.npy             one file per array of every part and the id maps (no pickle)
    <part>-<file>-<sha>.<ext>            files in their own native formats (FAISS indexes, ...)

One ``.npy`` per array, so that loading can memory-map each one: processes serving the same
model directory then share its pages instead of holding a copy each. Data files are named by
their checksum and written first; the manifest that points at them is replaced atomically
last (and its directory synced), so an interrupted save leaves the previous model loadable,
and no file a loaded model maps is ever changed in place. Models saved by another format
version are refused.
"""

from __future__ import annotations

import hashlib
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import ArtifactError
from funnel.persistence.files import (
    atomic_write,
    load_json,
    load_npy,
    npy_bytes,
    read_verified,
    save_json,
    sha256_file,
    verify_file,
)
from funnel.protocols import PartState

FORMAT_VERSION = 4
MANIFEST = "manifest.json"
SEP = "|"  # between a part's key ("models/als") and the name of one of its arrays or files
LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "implicit", "scikit-surprise", "faiss-cpu")


def library_versions() -> dict[str, str | None]:
    """Versions of funnel, Python and the libraries a model's numbers depend on."""
    from funnel import __version__

    versions: dict[str, str | None] = {"funnel": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_model(path: Path, states: dict[str, PartState], manifest: dict[str, Any]) -> Path:
    """Write part states and ``manifest`` (without its ``arrays`` and ``files``) as a model directory."""
    arrays = {f"{key}{SEP}{name}": _write_hashed(path, _stem(key, name), ".npy", npy_bytes(value, f"{key} {name}"))
              for key, state in states.items() for name, value in state.arrays.items()}
    files = {}
    for key, state in states.items():
        for name, data in state.files.items():
            stem, dot, suffix = name.rpartition(".")
            files[f"{key}{SEP}{name}"] = _write_hashed(path, _stem(key, stem), dot + suffix, data)
    manifest = {"format_version": FORMAT_VERSION, "saved_at": datetime.now(timezone.utc).isoformat(),
                "versions": library_versions(), **manifest, "arrays": arrays, "files": files}
    save_json(path / MANIFEST, manifest)
    keep = {entry["name"] for entry in (*arrays.values(), *files.values())} | {MANIFEST}
    for old in path.iterdir():
        if old.is_file() and old.name not in keep and not old.name.startswith("."):
            try:
                old.unlink(missing_ok=True)
            except OSError:  # mapped by a running process on Windows: the next save removes it
                pass
    return path


def read_model(path: Path, mmap: bool = True) -> tuple[dict[str, Any], dict[str, PartState]]:
    """The manifest and part states of a model directory, every file's checksum verified.

    With ``mmap``, arrays are read-only memory maps of their files (checked, then mapped:
    files are never changed in place, see the module's notes), and each part state's
    ``paths`` names its files so that a part may map them too (FAISS indexes).
    """
    if not path.is_dir():
        raise ArtifactError(f"no saved model at {path}: the directory does not exist; save one with "
                            "Recommender.save or run main.py")
    manifest = load_json(path / MANIFEST)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path / MANIFEST} was saved by format {version!r}; this funnel reads format "
                            f"{FORMAT_VERSION} only: retrain and save the model again")
    try:
        states: dict[str, PartState] = {}
        for role, entry in manifest["arrays"].items():
            key, _, array = role.partition(SEP)
            file = path / entry["name"]
            if mmap:
                verify_file(file, entry["sha256"], role)
                value = load_npy(file, role, mmap=True)
            else:
                value = load_npy(read_verified(file, entry["sha256"], role), role)
            states.setdefault(key, PartState()).arrays[array] = value
        for role, entry in manifest["files"].items():
            key, _, name = role.partition(SEP)
            state = states.setdefault(key, PartState())
            state.files[name] = read_verified(path / entry["name"], entry["sha256"], role)
            if mmap:
                state.paths[name] = path / entry["name"]
    except KeyError as exc:
        raise ArtifactError(f"{path / MANIFEST} lacks entry {exc}; the save is incomplete or from another "
                            "program") from exc
    return manifest, states


def _stem(key: str, name: str) -> str:
    """A file-name stem for a part's array or file (the checksum after it keeps names apart)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{key}-{name}")


def _write_hashed(directory: Path, stem: str, suffix: str, data: bytes) -> dict[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    if not (directory / name).is_file() or sha256_file(directory / name) != digest:
        atomic_write(directory / name, lambda handle: handle.write(data))
    return {"name": name, "sha256": digest}


def string_array(values: np.ndarray) -> np.ndarray:
    """Names as a fixed-width unicode array (saved without pickle)."""
    return np.asarray(values).astype(str)
