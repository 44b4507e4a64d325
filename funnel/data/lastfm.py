"""Reading the Last.fm HetRec 2011 files as they are distributed."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from funnel.data.dataset import Dataset
from funnel.errors import DataError

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
        hint = "pass the directory that holds user_artists.dat"
    else:
        hint = (f"pass --data PATH (or path=...), or set {DATA_ENV} to the "
                "hetrec2011-lastfm-2k directory")
    raise DataError(f"Last.fm data not found (looked for user_artists.dat in: {looked}); {hint}")


def _read(path: Path, encoding: str, columns: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing; the Last.fm directory needs it")
    try:
        frame = pd.read_csv(
            path, sep="\t", encoding=encoding, quoting=csv.QUOTE_NONE,
            dtype={c: str for c in columns if not (c.endswith("ID") or c.lower() in NUMERIC)},
            keep_default_na=False, na_filter=False,
        )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid {encoding} text ({exc.reason} at byte {exc.start})") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty; expected a header line and tab-separated rows") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} could not be parsed as tab-separated values: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing} (header has {list(frame.columns)}); is it "
            "tab-separated with the original header?"
        )
    frame = frame[list(columns)].rename(columns=columns)
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].astype(str).str.strip()
    return frame


def _numeric(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Convert text columns to numbers, leaving unparsable cells for Dataset to report."""
    for col in cols:
        if pd.api.types.is_numeric_dtype(frame[col]):
            continue
        converted = pd.to_numeric(frame[col], errors="coerce")
        if converted.notna().all() and (converted == np.round(converted)).all():
            converted = converted.astype(np.int64)
        frame[col] = converted.where(converted.notna(), frame[col]) if converted.isna().any() else converted
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
        naming artists missing from ``artists.dat`` are dropped with a warning.

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
            frames[key] = None
            continue
        frame = _read(file, encoding, columns)
        numeric = [c for c in frame.columns if c.endswith("_id") or c == "weight"]
        frames[key] = _numeric(frame, numeric)
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
