"""Atomic file writes, checksums, and pickle-free array and index files."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through fcntl (see locked_directory)
    fcntl = None  # type: ignore[assignment]

import numpy as np

from funnel.errors import ArtifactError

JSON_LIMIT = 64 << 20  # bytes; the largest JSON file (a saved model's manifest, a cache entry's) read
# The temp files of atomic_write: mkstemp(prefix=".<name>.", suffix=".tmp") puts 8 characters
# of this set between them; a process killed mid-write leaves one behind.
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows, which has no FIFOs and checks links by lstat only
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


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


def open_regular(path: str | os.PathLike, what: str = "", size: int | None = None) -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file (of ``size`` bytes, if given).

    A symbolic link (even to a file beside it), FIFO, device or directory is refused before
    anything could block on it or lead elsewhere: ``lstat`` first, then ``open`` with
    ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO's open returns at once) and ``fstat`` of what was
    opened, so a name swapped in between is caught too.
    """
    label = f"{os.fspath(path)} ({what})" if what else os.fspath(path)
    try:
        _check_regular(os.lstat(path), label, size)
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{label} is missing; retrain and save again") from exc
    except OSError as exc:
        raise ArtifactError(f"{label} cannot be read: {exc.strerror or exc}") from exc
    try:
        _check_regular(os.fstat(fd), label, size)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(info: os.stat_result, label: str, size: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "a directory" if stat.S_ISDIR(info.st_mode)
                else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "not a regular file")
        raise ArtifactError(f"{label} is {kind}, not a regular file: funnel reads only the regular files it "
                            "writes; retrain and save again")
    if size is not None and info.st_size != size:
        raise ArtifactError(f"{label} has {info.st_size} bytes where {size} were saved: the file is corrupt or "
                            "was changed after saving; retrain and save again")


def read_exactly(handle: BinaryIO, size: int, what: str = "file") -> bytes:
    """The next ``size`` bytes of ``handle``; fewer (a file cut meanwhile) raise :class:`ArtifactError`."""
    data = handle.read(size)
    if len(data) != size:
        raise ArtifactError(f"{what} ended after {len(data)} of its {size} bytes; it was changed while read")
    return data


def check_sha256(handle: BinaryIO, size: int, sha256: str, what: str = "file") -> None:
    """Hash ``size`` bytes of ``handle`` from its start, in chunks, against the recorded SHA-256."""
    digest = hashlib.sha256()
    handle.seek(0)
    left = size
    while left:
        chunk = read_exactly(handle, min(left, 1 << 20), what)
        digest.update(chunk)
        left -= len(chunk)
    if digest.hexdigest() != sha256:
        raise ArtifactError(f"{what} fails its checksum: the file is corrupt or was changed after saving; "
                            "retrain and save again")


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


def map_npy(handle: BinaryIO, size: int, what: str = "array") -> np.memmap:
    """A read-only memory map of the ``.npy`` file open as ``handle`` (``size`` bytes; no pickle).

    Mapped through the handle already checked, not by name again, so the map is of that file.
    """
    try:
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):  # np.save writes these for every dtype funnel saves
            raise ValueError(f"npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if dtype.hasobject:
            raise ValueError("it holds objects, which need pickle")
        offset = handle.tell()
        if offset + dtype.itemsize * int(np.prod(shape, dtype=object)) != size:
            raise ValueError(f"its header gives {shape} {dtype}, which does not fill its {size} bytes")
        return np.memmap(handle, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{what} is unreadable or corrupt ({exc}); retrain and save again") from exc


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


def read_verified(path: str | os.PathLike, sha256: str, what: str = "file", size: int | None = None) -> bytes:
    """The bytes of ``path`` after checking them against their recorded SHA-256.

    The same bytes are then parsed, so a file cannot change between check and use. Only a
    regular file is read (:func:`open_regular`); with ``size``, only one of that many bytes,
    and no more than that is read.
    """
    with open_regular(path, what, size) as handle:
        try:
            data = handle.read() if size is None else read_exactly(handle, size, f"{path} ({what})")
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
    """Atomically write ``payload`` as indented JSON, keys in the order given (a configuration's order counts)."""
    text = json.dumps(payload, indent=2)
    atomic_write(path, lambda handle: handle.write(text), mode="w")


def load_json(path: str | os.PathLike, limit: int = JSON_LIMIT) -> dict:
    """Read a JSON object, raising :class:`ArtifactError` when missing, malformed or over ``limit`` bytes.

    Only a regular file is read (:func:`open_regular`: a FIFO or device named like it cannot
    block the read), and at most ``limit`` bytes of it.
    """
    with open_regular(path) as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(limit + 1) if size <= limit else b""  # + 1: a file grown since
        except OSError as exc:
            raise ArtifactError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    if size > limit or len(data) > limit:
        raise ArtifactError(f"{path} is larger than {limit >> 20} MiB, the most funnel reads of a JSON file; it is "
                            "not one funnel wrote")
    try:
        payload = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to parse
        raise ArtifactError(f"{path} is unreadable or not valid JSON ({exc}); retrain and save again") from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    return payload


@contextlib.contextmanager
def locked_directory(directory: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` while the block runs: ``flock`` of its hidden file ``name``.

    Processes and threads that lock the same directory run their blocks one at a time. The
    file is removed on the way out, while still locked; whoever then gets the lock of the
    removed file sees that the name now leads elsewhere (or nowhere) and locks again. Where
    Python has no ``fcntl`` (Windows) no lock is taken.
    """
    if fcntl is None:
        yield
        return
    path = directory / name
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)  # writable: NFS locks need it
        except OSError as exc:
            raise ArtifactError(f"cannot lock {directory} ({path}: {exc.strerror or exc}); choose a writable "
                                "directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, named = os.fstat(fd), os.lstat(path)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                break
        except FileNotFoundError:
            pass
        except OSError as exc:  # a file system without locks (ENOLCK), ...
            os.close(fd)
            raise ArtifactError(f"cannot lock {directory} ({path}: {exc.strerror or exc}); save into a directory "
                                "on a local file system") from exc
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        _remove(str(path))
        os.close(fd)
