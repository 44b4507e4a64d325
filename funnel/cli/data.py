"""The data flags the subcommands that read training data share (``train``, ``tune``), and reading it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from funnel.data import Dataset

USER_COLUMN, ARTIST_COLUMN, TAG_COLUMN = "user_id", "artist_id", "tag"
_EVENT_FLAGS = {"duckdb": "--duckdb", "user_col": "--user-col", "artist_col": "--artist-col", "time_col": "--time-col",
                "weight_col": "--weight-col", "duration_col": "--duration-col", "min_duration": "--min-duration",
                "artist_tags": "--artist-tags", "tag_col": "--tag-col"}
_COLUMN_FLAGS = {"user": "--user-col", "artist": "--artist-col", "timestamp": "--time-col", "weight": "--weight-col",
                 "duration": "--duration-col"}


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Add the input flags: Last.fm (``--data``) or an event log and its columns."""
    source = parser.add_argument_group("input (one of)").add_mutually_exclusive_group()
    source.add_argument("--data", default=None,
                        help="Last.fm hetrec2011-lastfm-2k directory, the default input (default: $FUNNEL_DATA, "
                             "then ../shared/data/hetrec2011-lastfm-2k)")
    source.add_argument("--events", default=None, metavar="PATH_OR_GLOB",
                        help="event log, one row per play: a Parquet or CSV file, a directory of them, or a glob")
    source.add_argument("--events-sql", default=None, dest="events_sql", metavar="QUERY",
                        help="DuckDB query whose rows are the plays, over files or over the tables of --duckdb")
    log = parser.add_argument_group("event logs (with --events or --events-sql)")
    log.add_argument("--duckdb", default=None, metavar="FILE",
                     help="DuckDB database file --events-sql reads (opened read-only)")
    log.add_argument("--user-col", default=None, dest="user_col", metavar="COLUMN",
                     help=f"column of user ids (default: {USER_COLUMN})")
    log.add_argument("--artist-col", default=None, dest="artist_col", metavar="COLUMN",
                     help=f"column of artist ids, in the log and in --artist-tags (default: {ARTIST_COLUMN})")
    log.add_argument("--time-col", default=None, dest="time_col", metavar="COLUMN",
                     help="column of play times; adds first and last listen times (default: none)")
    log.add_argument("--weight-col", default=None, dest="weight_col", metavar="COLUMN",
                     help="column of weights to sum (default: none, every row is one play)")
    log.add_argument("--duration-col", default=None, dest="duration_col", metavar="COLUMN",
                     help="column of play lengths; with --min-duration, shorter plays are skips and dropped")
    log.add_argument("--min-duration", type=float, default=None, dest="min_duration", metavar="X",
                     help="shortest play kept, in --duration-col's unit (e.g. 30000 for milliseconds)")
    log.add_argument("--artist-tags", default=None, dest="artist_tags", metavar="PATH",
                     help="CSV or Parquet of artist-level labels (genres): columns --artist-col and --tag-col")
    log.add_argument("--tag-col", default=None, dest="tag_col", metavar="COLUMN",
                     help=f"column of labels in --artist-tags (default: {TAG_COLUMN})")


def check_data_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse event-log flags without an event log, then fill in the column defaults (usage errors, exit 2)."""
    events = args.events is not None or args.events_sql is not None
    given = [flag for name, flag in _EVENT_FLAGS.items() if getattr(args, name) is not None]
    if given and not events:
        parser.error(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to event logs only: "
                     "add --events PATH or --events-sql QUERY")
    if args.duckdb is not None and args.events_sql is None:
        parser.error("--duckdb is the database --events-sql reads: add --events-sql QUERY, or drop --duckdb")
    if (args.duration_col is None) != (args.min_duration is None):
        parser.error("--duration-col and --min-duration go together: the column of play lengths and the "
                     "shortest play kept, in its unit (e.g. --duration-col duration_ms --min-duration 30000)")
    if args.tag_col is not None and args.artist_tags is None:
        parser.error("--tag-col names a column of --artist-tags: add --artist-tags PATH, or drop --tag-col")
    args.user_col = args.user_col or USER_COLUMN
    args.artist_col = args.artist_col or ARTIST_COLUMN
    args.tag_col = args.tag_col or TAG_COLUMN


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The training data the flags name: an event log (``--events``, ``--events-sql``), else Last.fm."""
    from funnel import load_lastfm

    if args.events is not None or args.events_sql is not None:
        return load_events(args)
    return load_lastfm(args.data)


def tag_columns(path: Path, artist: str, tag: str, flag: str = "--artist-tags",
                column_flags: tuple[str, str] | None = ("--artist-col", "--tag-col")) -> tuple[str, str]:
    """How to read an artist-tags file (``"csv"`` or ``"parquet"``, and its separator), after checking its header.

    ``flag`` is the file's flag and ``column_flags`` the flags that name its two columns (None:
    the columns are fixed), for the messages.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.data.duckdb_source import CSV_SUFFIXES, PARQUET_SUFFIXES

    if not path.is_file():
        raise DataError(f"{flag} {path} is {'a directory' if path.is_dir() else 'missing'}; "
                        "give a CSV or Parquet file")
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        kind, sep = "parquet", ""
    elif name.endswith(CSV_SUFFIXES):
        kind, sep = "csv", "\t" if ".tsv" in name else ","
    else:
        raise ConfigError(f"{flag} {path}: unknown file type; use a Parquet ({', '.join(PARQUET_SUFFIXES)}) "
                          f"or CSV ({', '.join(CSV_SUFFIXES)}) file")
    if artist == tag and column_flags:
        raise ConfigError(f"--artist-col and --tag-col both name column {artist!r}; name the label column "
                          "with --tag-col")
    try:
        columns = pq.read_schema(path).names if kind == "parquet" else list(pd.read_csv(path, sep=sep, nrows=0))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {flag} {path}: {' '.join(str(exc).split())}; give a CSV file with "
                        "a header row or a Parquet file") from exc
    missing = [column for column in (artist, tag) if column not in columns]
    if missing:
        if column_flags is None:
            fix = f"the file needs columns {artist!r} and {tag!r}"
        else:
            flags = " and ".join(dict(zip((artist, tag), column_flags))[column] for column in missing)
            fix = f"name the right one{'s' if len(missing) > 1 else ''} with {flags}"
        raise DataError(f"{flag} {path} has no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, columns))}: {fix}")
    return kind, sep


def read_artist_tags(path: Path, artist: str, tag: str, flag: str = "--artist-tags",
                     column_flags: tuple[str, str] | None = ("--artist-col", "--tag-col")) -> pd.DataFrame:
    """The ``artist_id, tag`` frame of an artist-tags file, read from its ``artist`` and ``tag`` columns.

    ``flag`` and ``column_flags``: as :func:`tag_columns`.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind, sep = tag_columns(path, artist, tag, flag, column_flags)
    try:
        if kind == "parquet":
            frame = pq.read_table(path, columns=[artist, tag]).to_pandas()
        else:
            # labels stay text ("1990s", "80"); empty fields become "" and are dropped by from_frames
            frame = pd.read_csv(path, sep=sep, usecols=[artist, tag], dtype={tag: str}, keep_default_na=False,
                                na_values={artist: [""]})
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {flag} {path}: {' '.join(str(exc).split())}; give a CSV file with "
                        "a header row or a Parquet file") from exc
    return pd.DataFrame({"artist_id": frame[artist], "tag": frame[tag]})


def load_events(args: argparse.Namespace) -> Dataset:
    """The dataset of an event log (``--events`` or ``--events-sql``), with ``--artist-tags`` as artist labels."""
    from funnel.data import Dataset
    from funnel.data.events import read_events

    try:
        interactions = read_events(args.events, sql=args.events_sql, database=args.duckdb, user=args.user_col,
                                   artist=args.artist_col, timestamp=args.time_col, weight=args.weight_col,
                                   duration=args.duration_col, min_duration=args.min_duration)
    except DataError as exc:
        # read_events names its keywords ("pass the right name as user=..."); here they are flags
        message = str(exc)
        for keyword, flag in _COLUMN_FLAGS.items():
            message = message.replace(f" as {keyword}=...", f" with {flag}")
        if message == str(exc):
            raise
        raise DataError(message) from exc
    tags = None
    if args.artist_tags is not None:
        tags = read_artist_tags(Path(args.artist_tags), args.artist_col, args.tag_col)
    # no source for the interactions: read_events has aggregated them, so row numbers name no line of a file
    return Dataset.from_frames(interactions, artist_tags=tags,
                               sources={"artist_tags": str(args.artist_tags)} if tags is not None else None)


