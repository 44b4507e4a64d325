"""Reading the Last.fm HetRec 2011 files as they are distributed."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from funnel.data.columns import integer_column
from funnel.data.dataset import Dataset
from funnel.errors import DataError

logger = logging.getLogger("funnel")

DATA_ENV = "FUNNEL_DATA"
REQUIRED_FILES = ("user_artists.dat",)
_FILES = {
    "interactions": ("user_artists.dat", "utf-8", {"userID": "user_id", "artistID": "artist_id", "weight": "weight"}),
    "artists": ("artists.dat", "utf-8", {"id": "artist_id", "name": "name"}),
    "tags": ("tags.dat", "latin-1", {"tagID": "tag_id", "tagValue": "tag"}),
    "friends": ("user_friends.dat", "utf-8", {"userID": "user_id", "friendID": "friend_id"}),
}
_TAGGED = "user_taggedartists.dat"
NUMERIC = ("id", "weight", "day", "month", "year", "timestamp")
_TAGGED_TS = "user_taggedartists-timestamps.dat"
_WITHOUT = {"artists": "artist names (the catalogue is the artists seen in the other files)",
            "tags": "tag names", "friends": "friends"}


def default_data_paths() -> list[Path]:
    """Where :func:`load_lastfm` looks when no path is given, in order."""
    paths = []
    if os.environ.get(DATA_ENV):
        paths.append(Path(os.environ[DATA_ENV]))
    repo = Path(__file__).resolve().parents[2]
    paths.append(repo.parent / "shared" / "data" / "hetrec2011-lastfm-2k")
    paths.append(Path.cwd().parent / "shared" / "data" / "hetrec2011-lastfm-2k")
    return list(dict.fromkeys(paths))


def resolve_data_path(path: str | os.PathLike | None = None) -> Path:
    """Find the data directory: ``path``, then ``$FUNNEL_DATA``, then ``../shared/data``."""
    candidates = [Path(path)] if path is not None else default_data_paths()
    for candidate in candidates:
        if (candidate / REQUIRED_FILES[0]).is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    if path is not None:
        given = candidates[0]
        if not given.exists():
            hint = f"{given} does not exist; pass the directory that holds user_artists.dat"
        elif not given.is_dir():
            hint = f"{given} is not a directory; pass the directory that holds user_artists.dat"
        else:
            hint = f"{given} has no file user_artists.dat; pass the directory that holds it"
    else:
        hint = (f"pass --data PATH (or path=...), or set {DATA_ENV} to the "
                "hetrec2011-lastfm-2k directory")
    raise DataError(f"Last.fm data not found (looked for user_artists.dat in: {looked}); {hint}")


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """Name the line and column of the first byte that ``encoding`` cannot decode."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as full:
        exc = full  # pandas reports offsets within its read buffer; recompute in the file
    start = data.rfind(b"\n", 0, exc.start) + 1
    header = data.split(b"\n", 1)[0].decode(encoding, "replace").rstrip("\r").split("\t")
    field = data.count(b"\t", start, exc.start)
    line = data.count(b"\n", 0, exc.start) + 1
    column = f", column {header[field]!r}" if line > 1 and field < len(header) else ""
    return DataError(
        f"{path}, line {line}{column} is not valid {encoding} text "
        f"(byte {data[exc.start:exc.start + 1]!r}: {exc.reason}); re-save the file as {encoding}"
    )


def _short_line(path: Path, encoding: str, frame: pd.DataFrame) -> None:
    """Raise naming the first line with fewer fields than the header (a cut-short line).

    pandas fills missing trailing fields with ``''``, so only rows whose last column is empty
    are candidates; the file is re-read to count their fields only when there are some.
    """
    last = frame.iloc[:, -1]
    if pd.api.types.is_numeric_dtype(last):
        return
    candidates = np.flatnonzero((last.astype(str) == "").to_numpy())
    if not len(candidates):
        return
    text = path.read_bytes().decode(encoding, "replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = np.array(text.split("\n"), dtype=object)
    numbers = np.flatnonzero(lines != "") + 1  # pandas skips blank lines; [0] is the header
    rows = lines[numbers[candidates + 1] - 1]
    fields = pd.Series(rows, dtype=object).str.count("\t").to_numpy() + 1
    short = np.flatnonzero(fields < frame.shape[1])
    if len(short):
        row = int(short[0])
        line, content = int(numbers[candidates[row] + 1]), str(rows[row])
        comma = fields[row] == 1 and "," in content
        hint = " (it looks comma-separated; the files are tab-separated)" if comma else ""
        raise DataError(
            f"{path}, line {line} ({content!r}) has {fields[row]} tab-separated field(s), "
            f"expected {frame.shape[1]} ({', '.join(map(str, frame.columns))}){hint}; the line is cut "
            "short: complete it or delete it"
        )


def _read(path: Path, encoding: str, columns: dict[str, str], *, replace_undecodable: bool = False) -> pd.DataFrame:
    """Read one tab-separated file and keep ``columns`` (renamed), as text or numbers.

    With ``replace_undecodable`` bytes that ``encoding`` cannot decode become U+FFFD and a
    warning names the first such line; otherwise they raise :class:`DataError`.
    """
    if not path.is_file():
        raise DataError(f"{path} is missing; the Last.fm directory needs it")
    try:
        frame = pd.read_csv(
            path, sep="\t", encoding=encoding, quoting=csv.QUOTE_NONE,
            dtype={c: str for c in columns if not (c.endswith("ID") or c.lower() in NUMERIC)},
            keep_default_na=False, na_filter=False,
            encoding_errors="replace" if replace_undecodable else "strict",
        )
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty (0 bytes); expected a header line and tab-separated rows: "
                        "restore the file from the original archive") from exc
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found is None:
            raise DataError(f"{path} could not be parsed as tab-separated values: {exc}") from exc
        expected, line, saw = found.groups()
        raise DataError(
            f"{path}, line {line} has {saw} tab-separated fields, expected {expected} like the header; "
            "remove the extra tab(s) or delete the line"
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        if len(frame.columns) == 1 and ("," in frame.columns[0] or ";" in frame.columns[0]):
            hint = "it looks comma/semicolon-separated; the Last.fm files are tab-separated"
        else:
            hint = f"the header must name {', '.join(columns)} (tab-separated)"
        raise DataError(
            f"{path}, line 1 (header) lacks column(s) {missing} (header has {list(frame.columns)}); {hint}"
        )
    _short_line(path, encoding, frame)
    frame = frame[list(columns)].rename(columns=columns)
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].astype(str).str.strip()
    if replace_undecodable:
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        bad = frame[text].apply(lambda c: c.str.contains("\ufffd", regex=False)).any(axis=1).to_numpy()
        if bad.any():
            logger.warning(
                "%s: %d line(s) hold bytes that are not valid %s (first: line %d); they are shown "
                "as U+FFFD; re-save the file as %s to keep the text", path, int(bad.sum()), encoding,
                int(np.flatnonzero(bad)[0]) + 2, encoding,
            )
    return frame


def _numeric(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Convert text columns to numbers, leaving unparsable or out-of-range cells as text.

    Dataset reports the cells left as text with their file line; an integer beyond int64 is
    never wrapped around.
    """
    for col in cols:
        if pd.api.types.is_numeric_dtype(frame[col]):
            continue
        converted = pd.to_numeric(frame[col], errors="coerce")
        if pd.api.types.is_signed_integer_dtype(converted):  # every cell an exact int64
            frame[col] = converted.astype(np.int64)
            continue
        numeric = converted.to_numpy(dtype=np.float64, na_value=np.nan)
        usable = np.isfinite(numeric) & (np.abs(numeric) < 2.0**63)
        if usable.all():
            whole = (numeric == np.round(numeric)).all()
            frame[col] = converted.astype(np.int64) if whole else converted.astype(np.float64)
        else:
            frame[col] = converted.astype(object).where(usable, frame[col])
    return frame


def _tag_assignments(root: Path) -> tuple[pd.DataFrame, str] | None:
    ts_path, path = root / _TAGGED_TS, root / _TAGGED
    if ts_path.is_file():
        raw = _read(ts_path, "utf-8", {"userID": "user_id", "artistID": "artist_id",
                                         "tagID": "tag_id", "timestamp": "timestamp"})
        ms = pd.to_numeric(raw["timestamp"], errors="coerce")
        raw["timestamp"] = pd.to_datetime(ms, unit="ms", errors="coerce")
        return _numeric(raw, ["user_id", "artist_id", "tag_id"]), str(ts_path)
    if not path.is_file():
        logger.warning("%s (or %s) not found; loading without tag assignments", path, _TAGGED_TS)
        return None
    raw = _read(path, "utf-8", {"userID": "user_id", "artistID": "artist_id", "tagID": "tag_id",
                                "day": "day", "month": "month", "year": "year"})
    parts = {k: pd.to_numeric(raw[k], errors="coerce") for k in ("year", "month", "day")}
    raw["timestamp"] = pd.to_datetime(pd.DataFrame(parts), errors="coerce")
    raw = raw.drop(columns=["day", "month", "year"])
    return _numeric(raw, ["user_id", "artist_id", "tag_id"]), str(path)


def load_lastfm(path: str | os.PathLike | None = None) -> Dataset:
    """Load the Last.fm HetRec 2011 dataset.

    Parameters
    ----------
    path : str or path-like, optional
        Directory holding ``user_artists.dat`` and friends. Defaults to ``$FUNNEL_DATA``,
        then ``../shared/data/hetrec2011-lastfm-2k`` beside the repository.

    Returns
    -------
    Dataset
        Interactions, artist names, tags, dated tag assignments (from the timestamped file
        when present, else day/month/year; undatable rows get NaT) and friendships. Tag rows
        naming artists missing from ``artists.dat`` are dropped with a warning. A missing
        optional file (all but ``user_artists.dat``) is skipped with a warning; bytes in
        ``artists.dat`` that are not UTF-8 become U+FFFD with a warning.

    Raises
    ------
    funnel.errors.DataError
        The directory or a file is missing, unreadable, or malformed (file and line named).
    """
    root = resolve_data_path(path)
    frames: dict[str, pd.DataFrame | None] = {}
    sources: dict[str, str] = {}
    for key, (name, encoding, columns) in _FILES.items():
        file = root / name
        if key != "interactions" and not file.is_file():
            logger.warning("%s not found; loading without %s", file, _WITHOUT[key])
            frames[key] = None
            continue
        frame = _read(file, encoding, columns, replace_undecodable=key == "artists")
        numeric = [c for c in frame.columns if c.endswith("_id") or c == "weight"]
        frame = _numeric(frame, numeric)
        for column in numeric:
            if column.endswith("_id"):  # the HetRec format's ids are integers
                frame[column] = integer_column(frame, column, key, str(file))
        frames[key] = frame
        sources[key] = str(file)
    tagged = _tag_assignments(root)
    if tagged is not None:
        frames["tag_assignments"], sources["tag_assignments"] = tagged
    else:
        frames["tag_assignments"] = None
    return Dataset.from_frames(
        frames["interactions"], artists=frames["artists"], tags=frames["tags"],
        tag_assignments=frames["tag_assignments"], friends=frames["friends"], sources=sources,
    )
