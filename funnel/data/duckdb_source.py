"""Opening the source of a play log in DuckDB: a connection, and a frame, Arrow table, files or query as a FROM item.

Used by :func:`funnel.data.events.read_events`: :func:`connect` opens DuckDB with its
settings, :func:`open_source` turns what the caller passed into a :class:`Source` (finding the
files of a path, directory or glob), and :func:`column_types` and :func:`empty_error` describe it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from funnel.data.plays import empty_source
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger("funnel")

THREAD_MEMORY = 32 * 2**20  # DuckDB memory per thread below which read_events runs fewer threads
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
TABLE = "funnel_events"


@dataclass
class Source:
    """Where the plays come from: ``relation`` goes after FROM, ``name`` into messages."""

    relation: str
    name: str
    frame: pd.DataFrame | None = None
    files: tuple[str, ...] = ()


def connect(database: str | os.PathLike | None, memory_limit: str | int | None,
             temp_directory: str | os.PathLike | None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for one read: in memory, or ``database`` opened read-only; times in UTC.

    Raises
    ------
    ConfigError
        DuckDB refuses ``memory_limit`` or ``temp_directory``.
    DataError
        ``database`` cannot be opened.
    """
    import duckdb

    # never download code while reading data: extensions already installed (httpfs for s3://)
    # still load, others fail with DuckDB's message instead of being fetched
    config: dict[str, Any] = {"autoinstall_known_extensions": False}
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, str | int):
            raise ConfigError(f"memory_limit must be a size such as '4GB' or a number of bytes, not {memory_limit!r}")
        config["memory_limit"] = f"{memory_limit}B" if isinstance(memory_limit, int) else memory_limit
    if temp_directory is not None:
        config["temp_directory"] = os.fspath(temp_directory)
    try:
        if database is None:
            con = duckdb.connect(":memory:", config=config)
        else:
            con = duckdb.connect(os.fspath(database), read_only=True, config=config)
    except duckdb.IOException as exc:
        raise DataError(f"cannot open the DuckDB database {os.fspath(database or '')}: {exc}; pass the path of an "
                        "existing database file") from exc
    except duckdb.Error as exc:
        raise ConfigError(f"DuckDB refuses the settings {config}: {exc}") from exc
    # naive times are UTC, and zoned ones are converted to UTC, whatever the machine's zone
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit is not None:
        # each thread needs its own few tens of MB (hash-table partitions, the row group it decodes, sort
        # runs); short of that DuckDB fails instead of spilling, so a small limit gets fewer threads
        limit, threads = first_row(con, "SELECT current_setting('memory_limit'), current_setting('threads')")
        fits = max(1, int(_bytes(limit) // THREAD_MEMORY))
        if fits < int(threads):
            logger.debug("read_events: memory_limit %s: %d DuckDB threads instead of %s", limit, fits, threads)
            con.execute(f"SET threads = {fits}")
    return con


def first_row(con: duckdb.DuckDBPyConnection, query: str) -> tuple:
    """The first row of a query that returns one (all of it is fetched: DuckDB refuses half-read results)."""
    rows = con.execute(query).fetchall()
    return rows[0] if rows else (None,)


def _bytes(size: str) -> float:
    """Bytes in a size as DuckDB prints it (``19.0 MiB``, ``1.8 GiB``, ``512 bytes``)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGTP]?)(i?)B?(?:ytes?)?\s*", size, flags=re.IGNORECASE)
    if not match:
        return float("inf")  # an unknown format: leave the threads alone
    number, prefix, binary = match.groups()
    return float(number) * (1024 if binary else 1000) ** ("KMGTP".find(prefix.upper()) + 1) if prefix else float(number)


def open_source(con: duckdb.DuckDBPyConnection, source: Any, sql: str | None, database: Any) -> Source:
    """Register a frame or table, or spell the files or query as a FROM item."""
    import pyarrow as pa

    if sql is not None:
        query = sql.strip().rstrip(";").strip()
        shown = query if len(query) <= 200 else query[:197] + "..."
        name = f"query {shown!r}" + (f" on database {os.fspath(database)}" if database is not None else "")
        return Source(f"({query})", name)
    if isinstance(source, pd.DataFrame | pa.Table):
        name = "the DataFrame" if isinstance(source, pd.DataFrame) else "the Arrow table"
        if source.shape[1] == 0:  # DuckDB cannot register it
            raise empty_source(name, columns=False)
        con.register(TABLE, source)
        return Source(TABLE, name, frame=source if isinstance(source, pd.DataFrame) else None)
    if isinstance(source, str | os.PathLike):
        return _files(os.fspath(source))
    raise ConfigError(f"source must be a pandas DataFrame, a pyarrow Table, or the path of a Parquet or CSV file, "
                      f"a directory or a glob, not {type(source).__name__}; for anything else use sql=...")


def _kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _files(path: str) -> Source:
    """The files of a path, directory or glob, all of one kind, as a DuckDB reader call."""
    suffixes = ", ".join(PARQUET_SUFFIXES + CSV_SUFFIXES)
    if glob.has_magic(path):
        matched = sorted(name for name in glob.glob(path, recursive=True) if os.path.isfile(name))
        name = f"glob {path!r}"
        if not matched:
            raise DataError(f"{name} matches no file; check the pattern (relative to {os.getcwd()}) "
                            "and that the files exist")
    elif os.path.isdir(path):
        matched = sorted(str(p) for p in Path(path).rglob("*") if p.is_file()
                         and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        name = f"directory {path}"
    elif os.path.isfile(path):
        if _kind(path) is None:
            raise ConfigError(f"file {path} is neither Parquet nor CSV by its name (expected one of {suffixes}); "
                              f"rename it, or read it with sql=\"SELECT * FROM read_csv('{path}')\"")
        matched, name = [path], f"file {path}"
    else:
        raise DataError(f"{path} does not exist; pass a Parquet or CSV file, a directory of them or a glob")
    files = [f for f in matched if _kind(f) is not None]
    if not files:
        shown = ", ".join(Path(f).name for f in matched[:3]) or "nothing"
        raise DataError(f"{name} holds no Parquet or CSV file ({suffixes}); it has {shown}"
                        f"{' ...' if len(matched) > 3 else ''}: pass a path to such files")
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise DataError(f"{name} mixes Parquet and CSV files ({', '.join(Path(f).name for f in files[:4])} ...); "
                        "pass a glob that matches one kind, e.g. 'logs/*.parquet'")
    if len(files) > 1:
        name += f" ({len(files):,} files)"
    listed = "[" + ", ".join(literal(f) for f in files) + "]"
    if kinds == {"parquet"}:
        relation = f"read_parquet({listed}, union_by_name = true)"
    else:  # sniffing decides the delimiter and types; a header is required since all-text logs fool its guess
        relation = f"read_csv({listed}, header = true, union_by_name = true)"
    return Source(relation, name, files=tuple(files))


def empty_error(con: duckdb.DuckDBPyConnection, src: Source) -> DataError | None:
    """The error for a source without plays, or None when it has some (a count: for error paths only)."""
    import duckdb

    if src.files and all(os.path.getsize(f) == 0 for f in src.files):
        return empty_source(src.name, columns=False)  # not even a header (or not a Parquet file at all)
    try:
        rows = first_row(con, f"SELECT count(*) FROM {src.relation}")[0]
    except duckdb.Error:
        return None
    return empty_source(src.name) if rows == 0 else None


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'



def column_types(con: duckdb.DuckDBPyConnection, src: Source) -> dict[str, str]:
    """Column name -> DuckDB type of the source (binding the query, so a bad query fails here)."""
    import duckdb

    try:
        rows = con.sql(f"DESCRIBE SELECT * FROM {src.relation}").fetchall()
    except duckdb.Error as exc:
        what = "the query failed" if src.relation.startswith("(") else "cannot read it"
        raise DataError(f"{src.name}: {what}: {exc}") from exc
    return {row[0]: row[1] for row in rows}

