"""The SQL of one :func:`funnel.data.events.read_events`: conversions, the play rules, the GROUP BY, the failures.

:class:`Query` reads the columns of a :class:`funnel.data.duckdb_source.Source` as ids, times
and numbers, checks every play against :data:`funnel.data.plays.RULES` and aggregates them;
when a check fails, it finds the first rule broken and the first play breaking it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

from funnel.data.duckdb_source import Source, first_row, ident, literal
from funnel.data.plays import (
    DURATION,
    EPOCH_HINT,
    NUMBER_TEXT,
    Rule,
    Sql,
    empty_source,
    rules_for,
    sql_engine,
    violation_in_row,
)
from funnel.errors import DataError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

EARLIEST = pd.Timestamp("1678-01-01")  # datetime64[ns] cannot hold anything before 1677-09-21
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                  "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}
_TIME_TYPES = {"TIMESTAMP", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}
_TIMESTAMP_TZ = "TIMESTAMP WITH TIME ZONE"


class Query:
    """The SQL of one read: conversions, the rules of :mod:`funnel.data.plays`, the GROUP BY, the failure queries."""

    def __init__(self, src: Source, types: dict[str, str], user: str, artist: str, timestamp: str | None,
                 weight: str | None, duration: str | None, min_duration: float | None, limit: pd.Timestamp) -> None:
        self.src, self.types = src, types
        self.limit = limit
        self.user, self.artist, self.timestamp, self.weight, self.duration = user, artist, timestamp, weight, duration
        self.min_duration = min_duration
        raw = {"u": user, "a": artist, "t": timestamp, "w": weight, "d": duration}
        select = [f"{ident(column)} AS raw_{key}" for key, column in raw.items() if column is not None]
        user_id, user_float, user_fractions = self._id(user)
        artist_id, artist_float, artist_fractions = self._id(artist)
        select += [f"{user_id} AS u", f"{artist_id} AS a"]
        # role -> (the value the rules check, whether it is floating-point, whether it may hold fractions)
        values: dict[str, tuple[Sql, bool, bool]] = {"user": (Sql("raw_u"), user_float, user_fractions),
                                                     "artist": (Sql("raw_a"), artist_float, artist_fractions)}
        # role -> what a message shows of the first bad row: the value as given (text for ids and times of other types)
        self.shown = {"user": self._shown("raw_u", user), "artist": self._shown("raw_a", artist)}
        self.columns = {"user": user, "artist": artist}
        if timestamp is not None:
            select.append(f"{self._time(timestamp)} AS t")
            values["time"] = (Sql("raw_t"), types[timestamp] in _FLOAT_TYPES, False)
            values["parsed_time"] = (Sql("t"), False, False)
            self.shown["time"], self.columns["time"] = "CAST(raw_t AS VARCHAR)", timestamp
        if weight is not None:
            select.append(f"{self._number(weight, 'weights')} AS w")
            values["weight"] = (Sql("w"), True, False)
            self.shown["weight"], self.columns["weight"] = "raw_w", weight
        engine = sql_engine(latest=f"TIMESTAMP '{limit:%Y-%m-%d %H:%M:%S.%f}'",
                            earliest=f"TIMESTAMP '{EARLIEST:%Y-%m-%d %H:%M:%S}'")
        self.skip = "false"
        if duration is not None:
            select.append(f"{self._number(duration, 'durations')} AS d")
            values["duration"] = (Sql("d"), True, False)
            self.shown["duration"], self.columns["duration"] = "raw_d", duration
            # only valid short plays are skips: a broken duration stays in and is reported
            valid = DURATION.valid(Sql("d"), engine, floating=True)
            self.skip = f"coalesce({valid} AND d < {float(min_duration or 0)!r}, false)"
        self.checks: list[tuple[str, Rule, str]] = [
            (role, rule, str(rule.valid(values[role][0], engine, values[role][1])))
            for role, rule in rules_for({role: fractions for role, (_, _, fractions) in values.items()})]
        # the checks and the filter name u, a, t, w, d one level up, where no column of the source can shadow them
        self.rows = f"SELECT {', '.join(select)} FROM {src.relation}"
        ok = " AND ".join(check for _, _, check in self.checks)
        self.kept = f"SELECT *, ({ok}) AS ok FROM ({self.rows}) WHERE NOT {self.skip}"

    def _id(self, column: str) -> tuple[str, bool, bool]:
        """The id as BIGINT or VARCHAR, whether the column is floating-point, and whether it may hold fractions."""
        kind, name = self.types[column], ident(column)
        if kind in _INTEGER_TYPES or re.fullmatch(r"DECIMAL\(\d+,0\)", kind):
            return f"CAST({name} AS BIGINT)", False, False
        if kind in _FLOAT_TYPES or kind.startswith("DECIMAL"):
            # whole numbers become BIGINT; the rules refuse the others before anything is returned
            return f"try_cast({name} AS BIGINT)", kind in _FLOAT_TYPES, True
        if kind == "VARCHAR":
            return name, False, False
        if kind in ("UUID", '"NULL"') or kind.startswith("ENUM("):  # NULL: an object column of None only
            return f"CAST({name} AS VARCHAR)", False, False
        raise DataError(f"column {column!r} of {self.src.name} is {kind}; ids must be integers or strings: cast it "
                        "to an integer or a string")

    def _shown(self, raw: str, column: str) -> str:
        kind = self.types[column]
        numeric = kind in _INTEGER_TYPES or kind in _FLOAT_TYPES or kind.startswith("DECIMAL")
        return raw if numeric or kind == "VARCHAR" else f"CAST({raw} AS VARCHAR)"

    def _time(self, column: str) -> str:
        kind, name = self.types[column], ident(column)
        if kind == "TIMESTAMP_NS":
            return name  # kept at nanoseconds, as pandas has them
        if kind in _TIME_TYPES or kind == _TIMESTAMP_TZ:
            return f"CAST({name} AS TIMESTAMP)"  # a zoned time becomes UTC: the session's zone is UTC
        if kind in _INTEGER_TYPES or kind in _FLOAT_TYPES or kind.startswith("DECIMAL"):
            # epoch seconds; NaN, infinities and overflows become NULL and are reported as unparsable
            return f"make_timestamp(try_cast(round(CAST({name} AS DOUBLE) * 1e6) AS BIGINT))"
        if kind == "VARCHAR":
            return f"CAST(try_cast({name} AS TIMESTAMPTZ) AS TIMESTAMP)"
        raise DataError(f"column {column!r} of {self.src.name} is {kind}; play times must be timestamps, epoch "
                        "seconds or ISO 8601 strings: convert the column, or pass timestamp=None")

    def _number(self, column: str, what: str) -> str:
        kind, name = self.types[column], ident(column)
        if kind in _INTEGER_TYPES or kind in _FLOAT_TYPES or kind.startswith("DECIMAL"):
            return f"try_cast({name} AS DOUBLE)"
        if kind == "VARCHAR":  # only text every engine reads as the same number
            return f"CASE WHEN regexp_full_match({name}, {literal(NUMBER_TEXT)}) THEN try_cast({name} AS DOUBLE) END"
        raise DataError(f"column {column!r} of {self.src.name} is {kind}; {what} must be numbers: convert the column")

    def grouped(self) -> str:
        """The one GROUP BY: a row per (user, artist), with whether every play in it passed the rules."""
        parts = ["u AS user_id", "a AS artist_id"]
        if self.weight is None:
            parts.append("CAST(count(*) AS DOUBLE) AS weight")
        else:
            parts += ["sum(w) AS weight", "count(*) AS plays"]
        if self.timestamp is not None:
            parts += ["min(t) AS first_listen", "max(t) AS last_listen"]
        parts.append("bool_and(ok) AS ok")
        return f"SELECT {', '.join(parts)} FROM ({self.kept}) GROUP BY u, a"  # sorted by _finish

    def plays(self, table: pa.Table) -> int:
        """The number of plays kept in the aggregate ``table``."""
        import pyarrow.compute as pc

        counts = table["weight" if self.weight is None else "plays"]
        return int(pc.sum(counts).as_py() or 0)

    def skipped(self, con: duckdb.DuckDBPyConnection) -> str:
        """For the log: how many plays the min_duration filter dropped (a second scan of one column)."""
        if self.duration is None:
            return ""
        dropped = first_row(con, f"SELECT count(*) FROM ({self.rows}) WHERE {self.skip}")[0]
        return f" kept ({dropped:,} skips shorter than {self.min_duration:g} dropped)"

    def nothing(self, con: duckdb.DuckDBPyConnection) -> DataError:
        """The error for a GROUP BY without rows: an empty source, or every play a skip."""
        if self.duration is not None and first_row(con, f"SELECT count(*) FROM ({self.rows})")[0]:
            return DataError(f"no plays left in {self.src.name} after dropping plays shorter than min_duration="
                             f"{self.min_duration:g}; pass a source with plays, or a lower min_duration")
        return empty_source(self.src.name)

    def failure(self, con: duckdb.DuckDBPyConnection) -> DataError:
        """The error for a GROUP BY in which some play broke a rule: the first rule broken, how often, the first row."""
        import duckdb

        try:
            counts = first_row(con, "SELECT " + ", ".join(f"count(*) FILTER (WHERE NOT {check})"
                                                          for _, _, check in self.checks) + f" FROM ({self.kept})")
            i = next(i for i, count in enumerate(counts) if count)
            role, rule, check = self.checks[i]
            shown = list(self.shown.items())
            first = first_row(con, f"SELECT {', '.join(sql for _, sql in shown)} FROM ({self.kept}) "
                                   f"WHERE NOT {check} LIMIT 1")
        except duckdb.Error as exc:
            raise DataError(f"reading {self.src.name} failed: {exc}") from exc
        numeric = self.timestamp is not None and self.types[self.timestamp] in _INTEGER_TYPES | _FLOAT_TYPES
        return violation_in_row(role, rule, count=counts[i], example=dict(zip([r for r, _ in shown], first)),
                                columns=self.columns, what=self.src.name, latest=self.limit,
                                hint=EPOCH_HINT if numeric else "")
