"""Recommendation tables written atomically as CSV, Parquet, or a table of a DuckDB database file."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from funnel.errors import ArtifactError, ConfigError
from funnel.persistence import atomic_write

logger = logging.getLogger("funnel")

CSV, PARQUET, DUCKDB = "csv", "parquet", "duckdb"
FORMATS = {".csv": CSV, ".parquet": PARQUET, ".duckdb": DUCKDB, ".db": DUCKDB}
# a plain SQL identifier: it is interpolated into CREATE OR REPLACE TABLE, which takes no parameters
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_STAGED = "funnel_recommendations_staged"
# DuckDB opens a SQLite file through an extension it downloads on first use, and would then write the
# table into SQLite; an output is a DuckDB database, so neither download nor load anything
_NO_EXTENSIONS: dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_SQLITE_MAGIC = b"SQLite format 3\x00"
# what a spreadsheet reads as the start of a formula (OWASP "CSV injection"): a text cell starting so gets a '
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def output_format(path: str | os.PathLike, table: str | None = None) -> str:
    """The format ``path`` is written in, checked with ``table`` before any work is done.

    Parameters
    ----------
    path : path
        The output file; its extension picks the format: ``.csv``, ``.parquet``, or a
        DuckDB database file, ``.duckdb`` or ``.db`` (any case).
    table : str, optional
        The table to write in a DuckDB database (required there, refused elsewhere): a
        plain identifier, letters, digits and ``_``, not starting with a digit.

    Returns
    -------
    str
        ``"csv"``, ``"parquet"`` or ``"duckdb"``.

    Raises
    ------
    ConfigError
        Another extension; a DuckDB file without ``table``, or ``table`` with another
        format; a ``table`` that is not a plain identifier.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        raise ConfigError(f"cannot write recommendations to {path}: unknown extension {suffix or '(none)'!r}; "
                          "use .csv, .parquet, or a DuckDB database file (.duckdb, .db) with a table name")
    if kind == DUCKDB:
        if table is None:
            raise ConfigError(f"{path} is a DuckDB database: name the table to write (table=..., "
                              "--output-table on the command line)")
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ConfigError(f"table name {table!r} is not a plain SQL identifier; use letters, digits and _, "
                              "not starting with a digit, at most 63 characters (e.g. recommendations)")
    elif table is not None:
        raise ConfigError(f"a table name ({table!r}) is only for a DuckDB database file (.duckdb, .db), and "
                          f"{path} is {kind.upper()}; drop the table name or write to a .duckdb file")
    return kind


def check_output(path: str | os.PathLike, table: str | None = None) -> str:
    """:func:`output_format`, and for an existing DuckDB file that it opens as one (before training).

    A ``.db`` file is often SQLite, and a DuckDB file may be locked by another process;
    finding that out after training would throw the training away. A missing database
    file is not created here.

    Returns
    -------
    str
        The format, as :func:`output_format`.

    Raises
    ------
    ConfigError
        As :func:`output_format`.
    ArtifactError
        An existing database file DuckDB cannot open for writing.
    """
    kind = output_format(path, table)
    if kind == DUCKDB and Path(path).is_file():
        import duckdb

        try:
            duckdb.connect(os.fspath(path), config=dict(_NO_EXTENSIONS)).close()
        except duckdb.Error as exc:
            raise ArtifactError(f"cannot open {path} as a DuckDB database to write table {table!r}: "
                                f"{_duckdb_message(path, exc)}; choose another output file or close the "
                                "process that holds it") from exc
    return kind


def _duckdb_message(path: Path | str | os.PathLike, exc: Exception) -> str:
    """DuckDB's message on one line, or plain words for a SQLite file (DuckDB talks of extensions)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                return "it is a SQLite database, not a DuckDB one"
    except OSError:
        pass
    return " ".join(str(exc).split())


def write_recommendations(frame: pd.DataFrame, path: str | os.PathLike, table: str | None = None, *,
                          spreadsheet_safe: bool = False) -> None:
    """Write a recommendation frame atomically in the format of ``path``'s extension.

    The columns and their types are written as they are: integer ids stay int64, string
    ids stay strings. A failed write leaves the previous file (or table) as it was.

    A CSV file is data for programs: every text cell is quoted, so ids and names holding
    separators, quotes, ``\\r`` or ``\\n`` read back exactly (``pandas.read_csv``,
    DuckDB, Python's :mod:`csv`), and a text cell starting with ``=``, ``+``, ``-`` or
    ``@`` (artist names such as ``+44`` and ``-OZ-``) is written as it is. A spreadsheet
    opened on such a file may take those cells for formulas: import it with every column
    as text, read the Parquet output, or write with ``spreadsheet_safe=True``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to write, e.g. :meth:`funnel.Recommender.recommend_all`'s (columns of
        scalars; nested columns have no CSV form).
    path : path
        ``.csv`` (UTF-8, ``\\n`` line ends, no index, text cells quoted), ``.parquet`` (written to a temp
        file beside it, synced, then renamed over it), or a DuckDB database file
        (``.duckdb``, ``.db``; created if missing) in which ``table`` is created or
        replaced in one transaction, leaving its other tables alone.
    table : str, optional
        The table of a DuckDB output (see :func:`output_format`).
    spreadsheet_safe : bool, default False
        CSV only: prefix ``'`` to every text cell starting with ``=``, ``+``, ``-``, ``@``,
        a tab or ``\\r``, so a spreadsheet shows it as text instead of running it as a
        formula. Such ids and names no longer read back as they were: a file for people,
        not for programs.

    Raises
    ------
    ConfigError
        A bad extension or table name (:func:`output_format`); ``spreadsheet_safe`` with
        another format than CSV.
    ArtifactError
        The file or database cannot be written; the previous one is unchanged.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user_id": ["u1"], "rank": [1], "artist_id": ["a7"], "score": [0.9]})
    >>> write_recommendations(recs, "recs.parquet")  # doctest: +SKIP
    >>> write_recommendations(recs, "warehouse.duckdb", table="recommendations")  # doctest: +SKIP
    """
    kind = output_format(path, table)
    path = Path(path)
    if spreadsheet_safe and kind != CSV:
        raise ConfigError(f"spreadsheet_safe applies to CSV output only, and {path} is {kind.upper()} (typed "
                          "cells a spreadsheet does not take for formulas); drop it or write a .csv file")
    if kind == CSV:
        cells = _spreadsheet_text(frame) if spreadsheet_safe else frame
        # QUOTE_MINIMAL quotes a line-end character only if the line terminator holds it: a bare \r went out
        # unquoted and readers took it for a line end. Quoting every text cell holds whatever ids and names hold
        atomic_write(path, lambda handle: cells.to_csv(handle, index=False, lineterminator="\n",
                                                       quoting=csv.QUOTE_NONNUMERIC), mode="w")
    elif kind == PARQUET:
        import pyarrow.parquet as pq

        arrow = _arrow(frame)
        atomic_write(path, lambda handle: pq.write_table(arrow, handle), mode="wb")
    else:
        _write_duckdb(frame, path, str(table))


def _spreadsheet_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``'`` before every text cell a spreadsheet would read as a formula (:data:`FORMULA_STARTS`)."""
    safe = frame.copy(deep=False)
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_string_dtype(values):
            formula = values.str.startswith(FORMULA_STARTS, na=False).to_numpy(dtype=bool)
            safe[column] = values.mask(formula, "'" + values)
    return safe


def _arrow(frame: pd.DataFrame):
    """``frame`` as an Arrow table with string columns as plain ``string`` (object and pandas' str alike)."""
    import pyarrow as pa

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    # pandas' str dtype arrives as large_string and object columns of str as string: one type for both,
    # and no pandas metadata, so readers outside pandas see a plain table
    fields = [pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f for f in arrow.schema]
    return arrow.cast(pa.schema(fields)).replace_schema_metadata(None)


def _write_duckdb(frame: pd.DataFrame, path: Path, table: str) -> None:
    import duckdb

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(os.fspath(path), config=dict(_NO_EXTENSIONS))
    except (OSError, duckdb.Error) as exc:
        raise ArtifactError(f"cannot open {path} as a DuckDB database: {_duckdb_message(path, exc)}; choose "
                            "another output file or close the process that holds it") from exc
    try:
        con.register(_STAGED, _arrow(frame))
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM {_STAGED}')
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        try:
            # the commit is durable in the write-ahead log already; folding it into the file lets the
            # database be copied without its .wal, and if that fails the table is still written
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            logger.warning("wrote table %r of %s, but its checkpoint failed (%s): it stays in %s.wal until "
                           "DuckDB next opens the file", table, path, exc, path.name)
    except duckdb.Error as exc:
        raise ArtifactError(f"writing table {table!r} of {path} failed: {' '.join(str(exc).split())}; the "
                            "previous table, if any, is unchanged") from exc
    finally:
        con.close()


def _rollback(con) -> None:
    """Roll back the open transaction; one that DuckDB already aborted (a failed COMMIT) needs none."""
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
