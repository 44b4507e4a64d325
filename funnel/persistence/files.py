"""Atomic file writes, checksums, and pickle-free array and index files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import ArtifactError


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into a temp file beside it, fsync, then rename.

    A failure at any point leaves the previous ``path`` untouched. A new file gets the
    permissions ``open`` would give it (``0o666`` less the umask; a temp file alone would be
    readable by its owner only), a replaced one keeps its own.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write to {path.parent}: {exc.strerror or exc}; "
                            "choose a writable directory") from exc
    try:
        text: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as handle:
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
                os.fchmod(handle.fileno(), _mode_for(path))
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        _remove(tmp)
        raise ArtifactError(f"writing {path} failed: {exc.strerror or exc}; the previous file, if any, "
                            "is unchanged") from exc
    except BaseException:
        _remove(tmp)
        raise


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows has no directory handles to sync)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    """Permissions of the existing ``path``, else those ``open`` would give a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it and put it back
    os.umask(mask)
    return mask


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def npy_bytes(array: np.ndarray, what: str = "array") -> bytes:
    """``array`` as the bytes of a ``.npy`` file (object arrays refused: they need pickle)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise ArtifactError(f"{what} has dtype object, which cannot be saved without pickle")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_npy(source: str | os.PathLike | bytes, what: str = "array", mmap: bool = False) -> np.ndarray:
    """One ``.npy`` (a path or its bytes) read with ``allow_pickle=False``; with ``mmap``, a read-only map."""
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return np.load(handle, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{os.fspath(handle)!s} ({what}) is missing; retrain and save again") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{what} is unreadable or corrupt ({exc}); retrain and save again") from exc


def verify_file(path: str | os.PathLike, sha256: str, what: str = "file") -> None:
    """Check ``path`` against its recorded SHA-256 without holding its bytes (for a file then mapped)."""
    try:
        digest = sha256_file(path)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} ({what}) is missing; retrain and save again") from exc
    except OSError as exc:
        raise ArtifactError(f"{path} ({what}) cannot be read: {exc.strerror or exc}") from exc
    if digest != sha256:
        raise ArtifactError(f"{path} ({what}) fails its checksum: the file is corrupt or was changed "
                            "after saving; retrain and save again")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an uncompressed ``.npz`` (object arrays refused: they need pickle)."""
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ArtifactError(f"array {name!r} has dtype object, which cannot be saved without pickle")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
    return buffer.getvalue()


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """Atomically write ``arrays`` to an uncompressed ``.npz``; returns the file's hex SHA-256."""
    data = npz_bytes(arrays)
    atomic_write(path, lambda handle: handle.write(data))
    return hashlib.sha256(data).hexdigest()


def read_verified(path: str | os.PathLike, sha256: str, what: str = "file") -> bytes:
    """The bytes of ``path`` after checking them against their recorded SHA-256.

    The same bytes are then parsed, so a file cannot change between check and use.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} ({what}) is missing; retrain and save again") from exc
    except OSError as exc:
        raise ArtifactError(f"{path} ({what}) cannot be read: {exc.strerror or exc}") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(f"{path} ({what}) fails its checksum: the file is corrupt or was changed "
                            "after saving; retrain and save again")
    return data


def load_npz(source: str | os.PathLike | bytes) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (a path or its bytes) with ``allow_pickle=False``."""
    name = "npz data" if isinstance(source, bytes) else source
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with np.load(handle, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise ArtifactError(f"{name} is missing") from exc
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{name} is unreadable or corrupt ({exc}); retrain and save again") from exc


def save_json(path: str | os.PathLike, payload: dict) -> None:
    """Atomically write ``payload`` as indented JSON."""
    text = json.dumps(payload, indent=2, sort_keys=True)
    atomic_write(path, lambda handle: handle.write(text), mode="w")


def load_json(path: str | os.PathLike) -> dict:
    """Read a JSON object, raising :class:`ArtifactError` when missing or malformed."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable or not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    return payload
