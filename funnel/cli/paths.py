"""Paths the subcommands read and write: checked before any work."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from funnel.errors import ArtifactError, ConfigError


def check_writable(path: Path) -> None:
    """Fail before training when ``path`` (a file to write) cannot be written."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create directory {directory} for {path}: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise ArtifactError(f"output {path} is a directory; give a file path")
    if not os.access(directory, os.W_OK):
        raise ArtifactError(f"cannot write {path}: directory {directory} is not writable; "
                            "choose another --output/--artifacts")


def local_path(value: str | os.PathLike) -> Path | None:
    """The local path a flag names (``file://`` stripped), or None for a remote URI (``s3a://``, ``hdfs://``)."""
    text = os.fspath(value)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text.removeprefix("file://"))


def check_not_input(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Fail before any work when writing ``output`` would overwrite an input, or write into or over one.

    ``inputs`` maps each flag to its value: a file, a directory, or a glob (checked with
    the paths it matches now). Paths are compared resolved (symlinks, ``./``, ``..``) and,
    where both exist, as files (hard links too). The output may not be an input, lie
    inside an input directory, or be a directory holding an input.
    """
    target = local_path(output)
    if target is None:
        return
    written = target.resolve()
    for flag, value in inputs.items():
        path = local_path(value) if value is not None else None
        if path is None:
            continue
        # a glob's matches first, to name the file; then the pattern itself, which may match nothing yet
        matches = glob.glob(str(path), recursive=True) if any(char in str(path) for char in "*?[") else []
        paths = [*map(Path, matches), path]
        for match in paths:
            read = match.resolve()
            shown = value if match is path else f"{match} (matched by {value})"
            kind = "file" if read.is_file() else "directory" if read.is_dir() else "path"
            if read == written or (read.exists() and written.exists() and os.path.samefile(read, written)):
                raise ConfigError(f"--output {output} is the {flag} {kind} {shown}: writing it would overwrite the "
                                  "input; choose another --output")
            if read in written.parents:
                raise ConfigError(f"--output {output} is inside the {flag} directory {shown}: writing it would add "
                                  "to the input; choose an --output outside it")
            if written in read.parents:
                raise ConfigError(f"--output {output} holds the {flag} {kind} {shown}: writing it would replace "
                                  "the input; choose another --output")
