"""Aggregating a Spark DataFrame of plays to (user, artist) rows, as DuckDB does: :func:`aggregate_events`."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from funnel.data.plays import DURATION, EPOCH_HINT, empty_source, rules_for
from funnel.errors import ConfigError, DataError
from funnel.spark.columns import (
    FLOATING,
    NUMERIC,
    check_frame,
    check_plays,
    id_column,
    load_pyspark,
    number_column,
    spark_engine,
    type_name,
)

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import Column, DataFrame


def aggregate_events(events: DataFrame, *, user: str = "user_id", artist: str = "artist_id",
                     timestamp: str | None = None, weight: str | None = None, duration: str | None = None,
                     min_duration: float | None = None, now: Any = None, validate: bool = True) -> DataFrame:
    """Aggregate a Spark DataFrame of plays to one row per (user, artist), as :func:`funnel.data.events.read_events`.

    The same rules as the DuckDB path (:data:`funnel.data.plays.RULES`), as one Spark
    ``groupBy``: skips shorter than ``min_duration`` are dropped first; then every play must
    have both ids (whole numbers, if floating-point), a valid weight, a time between 1678
    and ``now`` plus a day, and a valid duration. On the same
    log the two give identical counts and times (with ``spark.sql.session.timeZone`` set
    to ``UTC``: Spark reads zone-less time strings and shows times in the session's zone).

    Parameters
    ----------
    events : pyspark.sql.DataFrame
        One row per play.
    user, artist : str
        The id columns (integers or strings; integers become long).
    timestamp : str, optional
        Play times (timestamp or date columns, epoch seconds, or ISO 8601 strings); adds
        ``first_listen`` and ``last_listen``.
    weight : str, optional
        A column of weights to sum (each finite, > 0 and <= 1e30); None: each row is one play.
    duration, min_duration : str and float, optional
        Given together: plays whose duration is below ``min_duration`` are dropped.
    now : datetime or str, optional
        Plays later than ``now`` plus one day are clock errors. Default: the current UTC time.
    validate : bool
        Check every play first with one Spark job (a pass over the log) and raise a
        :class:`DataError` naming the first rule broken, how many plays break it and the
        first of them, as :func:`funnel.data.events.read_events` does; an empty log is an error
        too. False: skip that job and drop the bad plays instead, for logs already
        validated upstream.

    Returns
    -------
    pyspark.sql.DataFrame
        ``user_id``, ``artist_id``, ``weight`` (double), and with ``timestamp`` also
        ``first_listen`` and ``last_listen`` (timestamps); lazy, unordered.

    Raises
    ------
    ConfigError
        pyspark is missing; ``duration`` without ``min_duration`` or the reverse; a bad ``now``.
    DataError
        A column is missing or of a type that cannot hold its values; with ``validate``,
        no plays, or plays that break a rule.
    """
    from funnel.data.events import future_limit

    F, _, _ = load_pyspark()
    check_frame(events, "events", [user, artist, timestamp, weight, duration],
                 "name the right columns with user=..., artist=..., timestamp=..., weight=..., duration=...")
    if (duration is None) != (min_duration is None):
        raise ConfigError("duration and min_duration go together: the column of play lengths and the shortest "
                          "play kept, in its unit (e.g. duration='duration_ms', min_duration=30_000)")
    if min_duration is not None and not (isinstance(min_duration, (int, float)) and 0 <= min_duration < float("inf")):
        raise ConfigError(f"min_duration must be a finite number >= 0, not {min_duration!r}")
    limit = future_limit(now)
    users, artists = id_column(events, user, "events"), id_column(events, artist, "events")
    columns = {"u": users.column, "a": artists.column}
    checked = {"user": (F.col(user), users.floating, users.fractions),
               "artist": (F.col(artist), artists.floating, artists.fractions)}
    shown, names = {"user": F.col(user), "artist": F.col(artist)}, {"user": user, "artist": artist}
    hint = ""
    if timestamp is not None:
        columns["t"] = _time_column(events, timestamp)
        checked["time"] = (F.col(timestamp), type_name(events, timestamp) in FLOATING, False)
        checked["parsed_time"] = (columns["t"], False, False)
        shown["time"], names["time"] = F.col(timestamp).cast("string"), timestamp
        hint = EPOCH_HINT if type_name(events, timestamp) in NUMERIC else ""
    if weight is not None:
        columns["w"] = number_column(events, weight, "events", "weights")
        checked["weight"], shown["weight"], names["weight"] = (columns["w"], True, False), F.col(weight), weight
    skip = F.lit(False)
    if duration is not None:
        columns["d"] = number_column(events, duration, "events", "durations")
        checked["duration"], shown["duration"] = (columns["d"], True, False), F.col(duration)
        names["duration"] = duration
        # only valid short plays are skips: a broken duration stays in and is reported
        skip = DURATION.valid(columns["d"], spark_engine(), floating=True) & (columns["d"] < float(min_duration or 0))
    if validate:
        check_plays(events, checked, shown, names, "the events DataFrame", empty_source("the events DataFrame"), skip,
                     limit, hint)
        kept = events.where(~skip)
    else:
        engine = spark_engine(limit)
        valid = [rule.valid(checked[role][0], engine, checked[role][1])
                 for role, rule in rules_for({role: fractions for role, (_, _, fractions) in checked.items()})]
        kept = events.where(functools.reduce(lambda a, b: a & b, valid, ~skip))
    plays = kept.select(*[column.alias(key) for key, column in columns.items()])
    parts = [F.count(F.lit(1)).cast("double").alias("weight") if weight is None else F.sum("w").alias("weight")]
    if timestamp is not None:
        parts += [F.min("t").alias("first_listen"), F.max("t").alias("last_listen")]
    return plays.groupBy(F.col("u").alias("user_id"), F.col("a").alias("artist_id")).agg(*parts)



def _time_column(events: DataFrame, column: str) -> Column:
    F, _, _ = load_pyspark()
    name = type_name(events, column)
    value = F.col(column)
    if name in ("TimestampType", "TimestampNTZType", "DateType"):
        return value.cast("timestamp")
    if name in NUMERIC:
        seconds = value.cast("double")
        # epoch seconds at microseconds, as DuckDB rounds them; NaN and overflows become null (reported)
        return F.when(~F.isnan(seconds) & (F.abs(seconds) < 1e13),
                      F.timestamp_micros(F.round(seconds * 1e6).cast("long")))
    if name == "StringType":
        return F.try_to_timestamp(value)
    raise DataError(f"column {column!r} of the events is {name}; play times must be timestamps, epoch seconds or "
                    "ISO 8601 strings: convert the column, or pass timestamp=None")
