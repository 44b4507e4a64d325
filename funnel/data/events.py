"""Listening-event logs (one row per play) aggregated to (user, artist) interactions by DuckDB.

:func:`read_events` checks every play against :data:`funnel.data.plays.RULES` and aggregates
them in one query (:mod:`funnel.data.events_sql` writes its SQL); :mod:`funnel.data.duckdb_source`
opens the connection and the source.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from funnel.data.columns import FUTURE_SLACK
from funnel.data.duckdb_source import TABLE, column_types, connect, empty_error, open_source
from funnel.data.events_sql import Query
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

logger = logging.getLogger("funnel")


def read_events(source: pd.DataFrame | pa.Table | str | os.PathLike | None = None, *, sql: str | None = None,
                database: str | os.PathLike | None = None, user: str = "user_id", artist: str = "artist_id",
                timestamp: str | None = None, weight: str | None = None, duration: str | None = None,
                min_duration: float | None = None, now: datetime | str | None = None,
                memory_limit: str | int | None = None,
                temp_directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """Aggregate a log of plays to one row per (user, artist), in DuckDB.

    The whole aggregation is one ``GROUP BY`` query run by DuckDB in-process, so files are
    read in parallel, column by column, and never loaded into pandas; only the aggregate is.

    Parameters
    ----------
    source : pandas.DataFrame, pyarrow.Table or path, optional
        The plays: a frame, an Arrow table, a Parquet (``.parquet``, ``.pq``) or CSV
        (``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``; with a header row) file, a directory
        of such files (searched recursively; names starting with ``.`` or ``_`` are skipped,
        as are files of other types), or a glob such as ``"logs/*.parquet"`` (``**``
        recurses). Files of several types in one directory or glob are refused.
    sql : str, optional
        Instead of ``source``: a query whose rows are the plays, run by DuckDB, over files
        (``"SELECT * FROM 'logs/*.parquet' WHERE country = 'DE'"``) or over the tables of
        ``database``. Exactly one of ``source`` and ``sql`` is given.
    database : path, optional
        A DuckDB database file for ``sql`` to read, opened read-only.
    user, artist : str
        The columns of the user and artist ids. Integer ids come back as int64, string ids
        (text, UUID columns, ``uuid.UUID`` objects, categoricals) as Python ``str``;
        floating-point or decimal ids must be whole numbers (3.0, not 3.5) and come back as
        int64, as :meth:`funnel.Dataset.from_frames` takes them; object columns that mix
        types are refused.
    timestamp : str, optional
        The column of play times, which adds ``first_listen`` and ``last_listen``. A
        timestamp or date column (with a time zone: converted to UTC), integer or float
        **epoch seconds**, or strings in ISO 8601 (``2024-05-01 13:45:00``, an offset such
        as ``+02:00`` is honoured, none means UTC). None: no times.
    weight : str, optional
        The column of weights to sum (each a finite number > 0 and <= 1e30, or text that
        reads as one, such as ``" 2.5"``). None: every row is one play and ``weight`` is
        the number of plays.
    duration, min_duration : str and float, optional
        Given together: plays whose ``duration`` is below ``min_duration`` (in the
        column's unit, e.g. ``30_000`` for milliseconds) are skips and are dropped before
        anything else is checked. A missing, negative or non-numeric duration is an error.
    now : datetime or str, optional
        Plays later than ``now`` plus one day are refused as clock errors. Default: the
        current UTC time. A time without a zone is UTC.
    memory_limit : str or int, optional
        DuckDB's ``memory_limit`` (``"4GB"``, or bytes). Above it DuckDB spills the
        ``GROUP BY`` to ``temp_directory``, so a log larger than memory still aggregates;
        the limit covers DuckDB's buffers, not the returned frame (which must fit in memory).
        DuckDB needs some 32 MB per thread to spill rather than fail, so a small limit runs
        fewer threads; and each thread decodes one Parquet row group at a time, so row
        groups must fit too (pyarrow writes up to a million rows per group: tens of MB
        of string ids). Default: DuckDB's own, 80% of the machine's memory.
    temp_directory : path, optional
        Where DuckDB spills (created if missing, emptied when done). Default: DuckDB's own
        (``.tmp`` beside a database file, or the working directory in memory mode); point
        it at a disk with room for about the size of the aggregate.

    Returns
    -------
    pandas.DataFrame
        ``user_id``, ``artist_id``, ``weight`` (float64: the summed weights or the count of
        plays), and with ``timestamp`` also ``first_listen`` and ``last_listen``
        (datetime64[ns], UTC, no zone), sorted by ``user_id`` then ``artist_id``: the
        interactions frame of :meth:`funnel.Dataset.from_frames`.

    Raises
    ------
    ConfigError
        Neither or both of ``source`` and ``sql``; a source of another type; an unknown
        file type; ``duration`` without ``min_duration`` or the reverse; a bad setting.
    DataError
        Nothing matches the path or glob; the source is empty (no rows, or no columns: a
        0-byte file); a column is missing (the columns there are are listed); the query
        fails (DuckDB's message is passed on); ids of mixed types in an object column. Then
        the rules of every play (:data:`funnel.data.plays.RULES`, in this order): null ids;
        floating-point ids that are not whole; weights that are not finite, <= 0 or above
        1e30; times that are missing, do not parse, lie in the future or before 1678;
        durations that are not numbers >= 0; and no plays left after dropping skips. Every
        message names the source, the column, how many plays break the rule and the first
        of them (by its ids and value), and a fix; nothing is returned.

    Examples
    --------
    >>> import pandas as pd
    >>> from funnel.data.events import read_events
    >>> plays = pd.DataFrame({"user": ["u1", "u1", "u1", "u2"], "artist": [7, 7, 9, 7],
    ...                       "ts": pd.to_datetime(["2024-03-01 10:00", "2024-03-05 09:00",
    ...                                             "2024-03-02 08:00", "2024-03-03 12:00"]),
    ...                       "ms": [200_000, 180_000, 5_000, 240_000]})
    >>> read_events(plays, user="user", artist="artist", timestamp="ts", duration="ms",
    ...             min_duration=30_000)
      user_id  artist_id  weight        first_listen         last_listen
    0      u1          7     2.0 2024-03-01 10:00:00 2024-03-05 09:00:00
    1      u2          7     1.0 2024-03-03 12:00:00 2024-03-03 12:00:00

    The same from files, or from a query, with DuckDB held to 2 GB (it spills beyond):

    >>> read_events("logs/2024-*.parquet", user="user", artist="artist")  # doctest: +SKIP
    >>> read_events(sql="SELECT * FROM plays WHERE country = 'DE'", database="warehouse.duckdb",
    ...             memory_limit="2GB", temp_directory="/scratch/duckdb")  # doctest: +SKIP
    """
    import duckdb  # on use: `import funnel` should not pay for DuckDB

    columns = _check_arguments(source, sql, database, user, artist, timestamp, weight, duration, min_duration)
    limit = future_limit(now)
    started = time.perf_counter()
    con = connect(database, memory_limit, temp_directory)
    try:
        src = open_source(con, source, sql, database)
        try:
            types = column_types(con, src)
            missing = [column for column in columns if column not in types]
            if missing:
                raise DataError(f"{src.name} has no column {', '.join(map(repr, missing))}; its columns are "
                                f"{', '.join(map(repr, types))}: pass the right name as "
                                f"{_keyword(missing[0], user, artist, timestamp, weight, duration)}=...")
            if src.frame is not None:
                converted = {column: ids for column in (user, artist)
                             if (ids := _object_ids(src.frame[column], column, src.name)) is not None}
                if converted:
                    con.register(TABLE, src.frame.assign(**converted))
                    types = column_types(con, src)
            query = Query(src, types, user, artist, timestamp, weight, duration, min_duration, limit)
        except DataError as exc:
            # a source without plays has no columns or types worth naming: say that it is empty
            empty = empty_error(con, src)
            if empty is not None:
                raise empty from exc
            raise
        logger.debug("read_events: aggregating %s in DuckDB", src.name)
        try:
            # streamed in batches: the aggregate need not fit in DuckDB's memory_limit as well as in pandas
            table = con.sql(query.grouped()).to_arrow_reader(1 << 17).read_all()
        except duckdb.Error as exc:
            raise DataError(f"reading {src.name} failed: {exc}") from exc
        grouped = time.perf_counter()
        _check(con, query, table)
        plays = query.plays(table)
        skipped = query.skipped(con) if logger.isEnabledFor(logging.INFO) else ""
        con.close()  # DuckDB's buffers (the hash table) go back before the sort needs memory of its own
        arrays = {name: table[name] for name in table.column_names if name not in ("plays", "ok")}
        del table  # each column is freed once converted
        frame = _to_frame(arrays)
        done = time.perf_counter()
        logger.info("read_events: %s: %s plays%s -> %s (user, artist) pairs in %.1f s (DuckDB %.1f s, sort %.1f s)",
                    src.name, f"{plays:,}", skipped, f"{len(frame):,}", done - started, grouped - started,
                    done - grouped)
        return frame
    finally:
        con.close()


def _check_arguments(source: Any, sql: str | None, database: Any, user: str, artist: str, timestamp: str | None,
                     weight: str | None, duration: str | None, min_duration: float | None) -> list[str]:
    """The columns read, after checking the arguments that need no data."""
    if (source is None) == (sql is None):
        raise ConfigError("read_events needs exactly one of source (a frame, an Arrow table, a file, a directory "
                          "or a glob) and sql (a DuckDB query); " + ("neither" if source is None else "both")
                          + " was given")
    if sql is not None and (not isinstance(sql, str) or not sql.strip().rstrip(";").strip()):
        raise ConfigError(f"sql must be a non-empty query string, not {sql!r}")
    if database is not None and sql is None:
        raise ConfigError("database is read by sql=...: pass a query such as sql='SELECT * FROM plays', "
                          "or drop database")
    named = {"user": user, "artist": artist, "timestamp": timestamp, "weight": weight, "duration": duration}
    for keyword, column in named.items():
        if column is not None and (not isinstance(column, str) or not column):
            raise ConfigError(f"{keyword} must be a column name (a non-empty string), not {column!r}")
    given = [column for column in named.values() if column is not None]
    if len(set(given)) < len(given):
        raise ConfigError(f"user, artist, timestamp, weight and duration must name different columns; got {named}")
    if (duration is None) != (min_duration is None):
        raise ConfigError("duration and min_duration go together: the column of play lengths and the shortest "
                          "play kept, in the column's unit (e.g. duration='duration_ms', min_duration=30000)")
    if min_duration is not None:
        if isinstance(min_duration, bool) or not isinstance(min_duration, int | float) or not (
                0 <= min_duration < float("inf")):
            raise ConfigError(f"min_duration must be a finite number >= 0, not {min_duration!r}")
    return given


def future_limit(now: datetime | str | None) -> pd.Timestamp:
    """``now`` (UTC, no zone) plus the slack: later plays are clock errors."""
    try:
        stamp = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"now must be a datetime or an ISO 8601 string, not {now!r}") from exc
    if stamp is pd.NaT:
        raise ConfigError(f"now must be a datetime or an ISO 8601 string, not {now!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp + pd.Timedelta(FUTURE_SLACK)


def _keyword(column: str, user: str, artist: str, timestamp: str | None, weight: str | None,
             duration: str | None) -> str:
    for keyword, name in (("user", user), ("artist", artist), ("timestamp", timestamp), ("weight", weight),
                          ("duration", duration)):
        if name == column:
            return keyword
    return "column"


def _object_ids(series: pd.Series, column: str, name: str) -> pd.Series | None:
    """Check ids in an object column: all ints or all strings, else DuckDB would silently make a mix text.

    Returns the column as strings when it holds ``uuid.UUID`` objects (as ``Dataset.from_frames`` reads
    them), else None: the column is fine as it is.
    """
    if series.dtype != object:
        return None
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "integer", "empty"):
        return None
    if kind in ("floating", "mixed-integer-float"):
        return pd.to_numeric(series)  # float ids, checked by the rules as a float column's are
    values = series.dropna()
    kinds = values.map(type)  # the error path (or UUIDs): one pass over the objects is unavoidable
    first = values.iloc[0]
    if (kinds == uuid.UUID).all():
        return series.map(str, na_action="ignore")
    other = values[kinds.map(lambda k: k is not type(first))]
    fix = f"convert it with df[{column!r}] = df[{column!r}].astype(str) (or .astype('int64'))"
    if len(other):
        raise DataError(f"column {column!r} of {name} mixes id types ({type(first).__name__} and "
                        f"{type(other.iloc[0]).__name__}, e.g. {first!r} at row {values.index[0]!r} and "
                        f"{other.iloc[0]!r} at row {other.index[0]!r}); ids must be all integers or all "
                        f"strings: {fix}")
    raise DataError(f"column {column!r} of {name} holds {type(first).__name__} values (e.g. {first!r}); ids "
                    f"must be integers or strings: {fix}")


def _check(con: duckdb.DuckDBPyConnection, query: Query, table: pa.Table) -> None:
    """Check the aggregate, and through its ``ok`` column every play; explain the first failure."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise query.nothing(con)
    if not pc.all(table["ok"]).as_py():
        raise query.failure(con)


def _to_frame(columns: dict[str, pa.ChunkedArray]) -> pd.DataFrame:
    """The checked aggregate as pandas, sorted by the ids; ``columns`` is emptied as they are converted."""
    user_rank, users = _ranked(columns.pop("user_id"))
    artist_rank, artists = _ranked(columns.pop("artist_id"))
    if len(users) * len(artists) < 2**63:
        order = np.argsort(user_rank * len(artists) + artist_rank)  # pairs are unique: no ties to keep stable
    else:
        order = np.lexsort((artist_rank, user_rank))
    frame = {  # an explicit dtype: pandas 3 would turn an object array of str into its str dtype
        "user_id": pd.Series(users[user_rank[order]], dtype=users.dtype),
        "artist_id": pd.Series(artists[artist_rank[order]], dtype=artists.dtype)}
    del user_rank, artist_rank
    frame["weight"] = columns.pop("weight").to_numpy().astype(np.float64, copy=False)[order]
    for key in ("first_listen", "last_listen"):
        if key in columns:
            frame[key] = columns.pop(key).to_numpy().astype("datetime64[ns]", copy=False)[order]
    return pd.DataFrame(frame)


def _ranked(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Each id's rank among the distinct ids, and the distinct ids in order (int64, or object of str).

    Sorting the few distinct ids and then the pairs by rank is several times faster than DuckDB's or Arrow's
    sort of millions of string pairs, and the ids become Python strings once each, not once per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column).combine_chunks()
    distinct = encoded.dictionary
    order = pc.sort_indices(distinct).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    values = distinct.take(pa.array(order)).to_numpy(zero_copy_only=False)
    values = values.astype(np.int64) if pa.types.is_integer(distinct.type) else values.astype(object)
    return rank[encoded.indices.to_numpy()], values
