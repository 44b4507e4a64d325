"""The saved-model format (version 2): a directory of checksummed files and a JSON manifest.

    manifest.json                        format version, provenance, settings, file checksums
    arrays-<sha>.npz                     every part's arrays and the id maps (no pickle)
    <part>-<file>-<sha>.<ext>            files in their own native formats (FAISS indexes, ...)

Data files are named by their checksum and written first; the manifest that points at them
is replaced atomically last (and its directory synced), so an interrupted save leaves the
previous model loadable. Models saved by another format version are refused.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import ArtifactError
from funnel.persistence.files import atomic_write, load_json, load_npz, npz_bytes, read_verified, save_json, sha256_file
from funnel.protocols import PartState

FORMAT_VERSION = 3
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
    """Write part states and ``manifest`` (without its ``files``) as a model directory."""
    arrays = {f"{key}{SEP}{name}": value for key, state in states.items() for name, value in state.arrays.items()}
    files = {"arrays": _write_hashed(path, "arrays", ".npz", npz_bytes(arrays))}
    for key, state in states.items():
        for name, data in state.files.items():
            stem, dot, suffix = name.rpartition(".")
            files[f"{key}{SEP}{name}"] = _write_hashed(path, f"{key.replace('/', '-')}-{stem}", dot + suffix, data)
    manifest = {"format_version": FORMAT_VERSION, "saved_at": datetime.now(timezone.utc).isoformat(),
                "versions": library_versions(), **manifest, "files": files}
    save_json(path / MANIFEST, manifest)
    keep = {entry["name"] for entry in files.values()} | {MANIFEST}
    for old in path.iterdir():
        if old.is_file() and old.name not in keep and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return path


def read_model(path: Path) -> tuple[dict[str, Any], dict[str, PartState]]:
    """The manifest and part states of a model directory, every file's checksum verified."""
    if not path.is_dir():
        raise ArtifactError(f"no saved model at {path}: the directory does not exist; save one with "
                            "Recommender.save or run main.py")
    manifest = load_json(path / MANIFEST)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path / MANIFEST} was saved by format {version!r}; this funnel reads format "
                            f"{FORMAT_VERSION} only: retrain and save the model again")
    try:
        entries = manifest["files"]
        arrays = load_npz(read_verified(path / entries["arrays"]["name"], entries["arrays"]["sha256"], "arrays"))
        states: dict[str, PartState] = {}
        for name, value in arrays.items():
            key, _, array = name.partition(SEP)
            states.setdefault(key, PartState()).arrays[array] = value
        for role, entry in entries.items():
            if role != "arrays":
                key, _, file = role.partition(SEP)
                states.setdefault(key, PartState()).files[file] = read_verified(path / entry["name"], entry["sha256"],
                                                                                role)
    except KeyError as exc:
        raise ArtifactError(f"{path / MANIFEST} or its arrays lack entry {exc}; the save is incomplete or "
                            "from another program") from exc
    return manifest, states


def _write_hashed(directory: Path, stem: str, suffix: str, data: bytes) -> dict[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    if not (directory / name).is_file() or sha256_file(directory / name) != digest:
        atomic_write(directory / name, lambda handle: handle.write(data))
    return {"name": name, "sha256": digest}


def string_array(values: np.ndarray) -> np.ndarray:
    """Names as a fixed-width unicode array (saved without pickle)."""
    return np.asarray(values).astype(str)
