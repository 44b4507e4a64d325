"""funnel on Apache Spark: score every listener's history on a cluster, and aggregate play logs there.

Training stays on one machine (:meth:`funnel.Recommender.fit`); what grows with the listeners
of a service, the daily scoring of everyone's list and the aggregation of the raw play log,
runs here on Spark itself. Needs the ``spark`` extra (``pip install -e ".[spark]"``) and a
Java runtime.

- :func:`recommend` scores a Spark DataFrame of histories (``user, artist, plays`` rows)
  with a saved model: the histories are grouped by user with a hash repartition, and each
  partition is scored by :meth:`funnel.Recommender.recommend_for_histories` inside
  ``mapInPandas``. Every Python worker loads the model once and keeps it for the tasks that
  follow, and scores on one BLAS/OpenMP thread, so a task takes one core as Spark assumes.
- :func:`aggregate_events` is :func:`funnel.data.events.read_events` as a Spark job: one row per
  (user, artist) with the play count or summed weight, first and last listen.

Save the model with ``save(path, artist_side_only=True)``: it holds the artist side only,
so its size does not grow with the training users (a full model works too).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from funnel.data.ids import id_kind, lookup_ids
from funnel.data.plays import (
    DURATION,
    EPOCH_HINT,
    NUMBER_TEXT,
    Engine,
    empty_interactions,
    empty_source,
    rules_for,
    violation_in_row,
)
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import Column, DataFrame

    from funnel.recommender import Recommender

logger = logging.getLogger("funnel")

_INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")
_FLOATING = ("FloatType", "DoubleType")
_NUMERIC = _INTEGRAL + _FLOATING + ("DecimalType",)
_EXCLUDED = "_funnel_excluded"
# a Python worker runs one task at a time and is reused for the next (spark.python.worker.reuse)
_CACHE: dict[str, tuple[tuple[int, int], Recommender]] = {}


def _pyspark():
    try:
        import pyspark.sql.functions as F
        from pyspark.sql import DataFrame, types
    except ImportError as exc:
        raise ConfigError(f"funnel.spark needs the spark extra ({exc.name} is missing): "
                          'pip install -e ".[spark]"') from exc
    return F, DataFrame, types


def _type_name(frame: DataFrame, column: str) -> str:
    return type(frame.schema[column].dataType).__name__


def _check_frame(frame: Any, what: str, columns: Sequence[str | None], hint: str) -> None:
    _, DataFrame, _ = _pyspark()
    if not isinstance(frame, DataFrame):
        raise DataError(f"{what} must be a Spark DataFrame, got {type(frame).__name__}: "
                        "create one with spark.read.parquet(...) or spark.createDataFrame(pandas_frame)")
    missing = [column for column in columns if column is not None and column not in frame.columns]
    if missing:
        raise DataError(f"{what} has no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, frame.columns))}: {hint}")


@dataclass(frozen=True)
class _Id:
    """An id column as funnel uses it (long or string), its kind, and how the rules read the column as given."""

    column: Column
    kind: str
    floating: bool  # float or double: NaN is missing too
    fractions: bool  # float, double or decimal with a scale: the rules check that each id is whole


def _id_column(frame: DataFrame, column: str, what: str, kind: str | None = None, fractions: bool = True) -> _Id:
    """``column`` as the id type funnel uses, checked against the model's ``kind``.

    Floating-point and decimal ids (``fractions``) are taken when the rules find every one
    whole (3.0, not 3.5), as the in-process path takes them; they become longs.
    """
    F, _, _ = _pyspark()
    name = _type_name(frame, column)
    whole = name in _INTEGRAL or (name == "DecimalType" and getattr(frame.schema[column].dataType, "scale", 1) == 0)
    if name == "StringType":
        got = "str"
    elif whole or (fractions and name in _NUMERIC):
        got = "int"
    else:
        raise DataError(f"column {column!r} of the {what} is {name}; ids must be integers or strings: cast it")
    if kind is not None and got != kind:
        want = "integers" if kind == "int" else "strings"
        raise ConfigError(f"column {column!r} of the {what} holds {'integers' if got == 'int' else 'strings'}, "
                          f"but the model's artist ids are {want}: cast the column, or score with a model "
                          "trained on ids of that kind")
    return _Id(F.col(column).cast("long") if got == "int" else F.col(column), got, name in _FLOATING,
               got == "int" and not whole)


def _engine(limit: pd.Timestamp | None = None) -> Engine:
    """The :class:`funnel.data.plays.Engine` of Spark Columns."""
    from funnel.data.events import EARLIEST

    F, _, _ = _pyspark()
    return Engine(present=lambda x, floating: x.isNotNull() & ~F.isnan(x) if floating else x.isNotNull(),
                  round=F.round, abs=F.abs, done=lambda p: F.coalesce(p, F.lit(False)),
                  latest=None if limit is None else _utc(limit), earliest=_utc(EARLIEST))


def _check_plays(frame: DataFrame, checked: dict[str, tuple[Column, bool, bool]], shown: dict[str, Column],
                 columns: dict[str, str], what: str, empty: DataError, skip: Column | None = None,
                 limit: pd.Timestamp | None = None, hint: str = "") -> None:
    """Check every row against :data:`funnel.data.plays.RULES` with one Spark job, on the driver.

    ``checked`` maps each role to the value the rules read, whether it is floating-point and
    whether it may hold fractions; ``shown`` to what a message shows of the first bad row, and
    ``columns`` to the input's column. Rows meeting ``skip`` are left out. Raises ``empty``
    for a frame without rows, else the error of the first rule broken, naming the first
    bad row in Spark's order of reading (the input's order for one file or a frame made from
    pandas) by its values: a Spark partition knows no global row number.
    """
    F, _, _ = _pyspark()
    engine = _engine(limit)
    rules = rules_for({role: fractions for role, (_, _, fractions) in checked.items()})
    rows = frame.select(*[value.alias(f"_v_{role}") for role, (value, _, _) in checked.items()],
                        *[value.alias(f"_s_{role}") for role, value in shown.items()],
                        (F.lit(False) if skip is None else skip).alias("_skip"),
                        F.monotonically_increasing_id().alias("_order"))
    kept = ~F.col("_skip")
    first = F.struct(F.col("_order"), *[F.col(f"_s_{role}").alias(role) for role in shown])
    counts = [F.count(F.lit(1)).alias("rows"), F.sum(F.when(kept, 1).otherwise(0)).alias("kept")]
    for i, (role, rule) in enumerate(rules):
        bad = kept & ~rule.valid(F.col(f"_v_{role}"), engine, checked[role][1])
        counts += [F.sum(F.when(bad, 1).otherwise(0)).alias(f"n{i}"), F.min(F.when(bad, first)).alias(f"e{i}")]
    found = rows.agg(*counts).first()
    if found is None or not found["rows"]:
        raise empty
    if not found["kept"]:
        raise DataError(f"no plays left in {what} after dropping plays shorter than min_duration; pass plays, "
                        "or a lower min_duration")
    for i, (role, rule) in enumerate(rules):
        if found[f"n{i}"]:
            raise violation_in_row(role, rule, count=found[f"n{i}"], example=found[f"e{i}"].asDict(),
                                   columns=columns, what=what, latest=limit, hint=hint)


# scoring ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    """What a worker needs to score a partition: small, so it travels with every task."""

    path: str
    shipped: bool
    n: int
    explain: bool
    exclude: np.ndarray | None
    allow: np.ndarray | None
    filter_known: bool
    per_user: bool
    columns: tuple[str, ...]


def _model(task: _Task) -> Recommender:
    """The worker's copy of the model, loaded once per Python worker and per saved version."""
    from funnel.recommender import Recommender

    if task.shipped:
        from pyspark import SparkFiles

        path = SparkFiles.get(task.path)
    else:
        path = task.path
    stat = os.stat(Path(path) / "manifest.json")
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(path)
    if cached is None or cached[0] != version:
        _CACHE.clear()  # one model per worker: a new save replaces the old one
        cached = (version, Recommender.load(path, n_threads=1, show_progress=False))
        _CACHE[path] = cached
    return cached[1]


def _score_partition(batches: Iterator[pd.DataFrame], task: _Task) -> Iterator[pd.DataFrame]:
    """Score one partition (every row of each of its users) with ``recommend_for_histories``."""
    from threadpoolctl import threadpool_limits

    frames = [frame for frame in batches if len(frame)]
    if not frames:
        return
    rows = pd.concat(frames, ignore_index=True)
    exclude: Any = task.exclude
    if task.per_user:
        excluded = rows[_EXCLUDED].to_numpy(bool)
        exclude = rows.loc[excluded, ["user_id", "artist_id"]]
        rows = rows.loc[~excluded, ["user_id", "artist_id", "weight"]]
    model = _model(task)
    inside = lookup_ids(model.artist_ids_, rows["artist_id"].to_numpy()) >= 0
    if not inside.all():
        logger.warning("ignoring %d history row(s) whose artist is outside the model's catalogue",
                       int((~inside).sum()))
        rows = rows.loc[inside]
    if len(rows) == 0:
        return
    with threadpool_limits(limits=1):  # one core per task, as Spark schedules them
        recommendations = model.recommend_for_histories(rows, task.n, task.explain, exclude=exclude,
                                                        allow=task.allow, filter_known=task.filter_known)
    out = recommendations[list(task.columns)]
    # pyspark converts a column with pandas 3's string dtype as one Arrow array, and a frame
    # concatenated from batches holds several: plain object columns convert whatever their origin
    yield out.astype({column: object for column in out.columns if pd.api.types.is_string_dtype(out[column])})


def recommend(histories: DataFrame, model: str | os.PathLike, n: int = 20, *, explain: bool = False,
              exclude: Any = None, allow: Any = None, filter_known: bool = True, user: str = "user_id",
              artist: str = "artist_id", weight: str | None = "weight", partitions: int | None = None,
              ship: bool = False) -> DataFrame:
    """Top-``n`` artists for every listener of a Spark DataFrame of histories.

    Each listener is scored exactly as :meth:`funnel.Recommender.recommend_for_histories`
    scores it in process (user vectors folded in from the history), so the two give the same
    artists in the same order. Lazy like any Spark transformation: nothing runs until the
    result is written or collected.

    Parameters
    ----------
    histories : pyspark.sql.DataFrame
        ``user, artist[, weight]`` rows: one per play or per (user, artist) pair (repeated
        pairs add up), e.g. the output of :func:`aggregate_events`. Ids are integers,
        strings, or floating-point or decimal numbers that are whole (3.0, not 3.5: they
        become integers); the artist ids of the model's kind. Artists outside the catalogue
        are ignored (with a warning in the executor's log).
    model : path
        A model directory written by :meth:`funnel.Recommender.save` (best with
        ``artist_side_only=True``). Every executor must be able to read it at this path (a
        shared file system), unless ``ship`` is set.
    n : int
    explain : bool
        Add a ``reason`` column: why each artist was recommended, in one line.
    exclude : list of artist ids or pyspark.sql.DataFrame, optional
        Artists never to recommend to anyone, or a DataFrame of ``user, artist`` rows (the
        same column names as ``histories``): artists never to recommend to that listener.
    allow : list of artist ids, optional
        Only these artists may be recommended.
    filter_known : bool
        Keep the artists of a listener's history out of its recommendations.
    user, artist : str
        The id columns of ``histories`` (and of an ``exclude`` DataFrame).
    weight : str or None
        The column of play counts (numbers, or text that reads as one); None: every row is
        one play.
    partitions : int, optional
        How many partitions to group the listeners into. Every row of a partition is held
        in its worker's memory at once (with the model): pick enough partitions for that
        to fit. Default: Spark's ``spark.sql.shuffle.partitions``, which adaptive query
        execution coalesces to partitions of about ``spark.sql.adaptive.advisoryPartitionSizeInBytes``.
    ship : bool
        Copy the model directory to every executor with ``SparkContext.addFile`` instead of
        reading it from a path they share; ``model`` is then a path on the driver.

    Returns
    -------
    pyspark.sql.DataFrame
        ``user_id, rank, artist_id, artist_name, score`` (and ``reason`` with ``explain``),
        the columns of the command line's CSV; ``rank`` is 1..n, best first per listener.
        Unordered, as Spark results are.

    Raises
    ------
    ConfigError
        pyspark is missing; ``n``, ``exclude`` or ``allow`` is invalid for this model; an
        id column's kind differs from the model's artist ids.
    DataError
        ``histories`` is not a DataFrame or lacks a column; an id column is neither numbers
        nor strings. Then, checked by one Spark job on the driver before anything is scored,
        with the rules and messages of ``recommend_for_histories``
        (:data:`funnel.data.plays.RULES`): no rows; null ids; ids that are not whole
        numbers within 64 bits; weights that are not finite numbers > 0 and <= 1e30. The
        message names the first bad row by its ids (a Spark partition knows no global row
        number) and its value.
    ArtifactError
        The model cannot be read.

    Examples
    --------
    >>> from funnel import spark as funnel_spark
    >>> plays = spark.read.parquet("histories/")  # doctest: +SKIP
    >>> recs = funnel_spark.recommend(plays, "model/", n=20, exclude=["blocked-artist-id"])  # doctest: +SKIP
    >>> recs.write.parquet("recommendations.parquet")  # doctest: +SKIP
    """
    from funnel.recommender import Recommender
    from funnel.rules import check_n

    F, DataFrame, types = _pyspark()
    _check_frame(histories, "histories", [user, artist, weight],
                 "name the columns with user=..., artist=..., weight=... (weight=None: one play per row)")
    if not isinstance(ship, bool) or not isinstance(explain, bool):
        raise ConfigError(f"ship and explain must be True or False, not {ship!r} and {explain!r}")
    if partitions is not None and (not isinstance(partitions, int) or isinstance(partitions, bool)
                                   or partitions < 1):
        raise ConfigError(f"partitions={partitions!r} must be a positive integer or None")
    path = Path(model)
    # on the driver, once: the model's ids and the rules are checked before any task starts
    local = Recommender.load(path, n_threads=1, show_progress=False)
    n = check_n(n, len(local.artist_ids_))
    per_user = isinstance(exclude, DataFrame)
    rules = local._rules(None if per_user else exclude, allow, filter_known, user_ids=None)
    kind = id_kind(local.artist_ids_)
    users, artists = _id_column(histories, user, "histories"), _id_column(histories, artist, "histories", kind)
    plays = F.lit(1.0) if weight is None else _number_column(histories, weight, "histories", "weights", (
        ", or pass weight=None to count one play per row"))
    if per_user:
        _check_frame(exclude, "exclude", [user, artist], "it needs the user and artist columns of the histories")
        # the exclude frame's ids are not checked by the rules: only ids whole by their type are taken
        theirs = _id_column(exclude, user, "exclude DataFrame", fractions=False)
        if theirs.kind != users.kind:
            raise ConfigError(f"column {user!r} is {_type_name(exclude, user)} in the exclude DataFrame and "
                              f"{_type_name(histories, user)} in the histories: give both the same kind of user id")
    checked = {"user": (F.col(user), users.floating, users.fractions),
               "artist": (F.col(artist), artists.floating, artists.fractions)}
    shown, names = {"user": F.col(user), "artist": F.col(artist)}, {"user": user, "artist": artist}
    if weight is not None:
        checked["weight"], shown["weight"], names["weight"] = (plays, True, False), F.col(weight), weight
    # one job before any scoring: bad rows fail here, on the driver, as in recommend_for_histories (whose messages
    # call the histories interactions)
    _check_plays(histories, checked, shown, names, "interactions", empty_interactions())
    rows = histories.select(users.column.alias("user_id"), artists.column.alias("artist_id"), plays.alias("weight"))
    if per_user:
        blocked = exclude.select(theirs.column.alias("user_id"),
                                 _id_column(exclude, artist, "exclude DataFrame", kind, fractions=False).column
                                 .alias("artist_id"),
                                 F.lit(None).cast("double").alias("weight"), F.lit(True).alias(_EXCLUDED))
        rows = rows.withColumn(_EXCLUDED, F.lit(False)).unionByName(blocked)
    grouped = rows.repartition(partitions, "user_id") if partitions else rows.repartition("user_id")

    name = path.resolve().as_posix()
    if ship:
        histories.sparkSession.sparkContext.addFile(name, recursive=True)
        name = path.resolve().name
    columns = ("user_id", "rank", "artist_id", "artist_name", "score") + (("reason",) if explain else ())
    fields = [types.StructField("user_id", rows.schema["user_id"].dataType),
              types.StructField("rank", types.LongType()),
              types.StructField("artist_id", types.LongType() if kind == "int" else types.StringType()),
              types.StructField("artist_name", types.StringType()),
              types.StructField("score", types.DoubleType())]
    if explain:
        fields.append(types.StructField("reason", types.StringType()))
    task = _Task(path=name, shipped=ship, n=n, explain=explain,
                 exclude=None if per_user or exclude is None else np.asarray(_as_list(exclude)),
                 allow=None if allow is None else np.asarray(_as_list(allow)), filter_known=rules.filter_known,
                 per_user=per_user, columns=columns)
    return grouped.mapInPandas(functools.partial(_score_partition, task=task), types.StructType(fields))


def _as_list(ids: Any) -> list[Any]:
    """A list of artist ids as given (already checked by :class:`funnel.rules.Rules` on the driver)."""
    return [ids] if isinstance(ids, (str, int, np.integer)) else list(ids)


# aggregation ------------------------------------------------------------------------------
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

    F, _, _ = _pyspark()
    _check_frame(events, "events", [user, artist, timestamp, weight, duration],
                 "name the right columns with user=..., artist=..., timestamp=..., weight=..., duration=...")
    if (duration is None) != (min_duration is None):
        raise ConfigError("duration and min_duration go together: the column of play lengths and the shortest "
                          "play kept, in its unit (e.g. duration='duration_ms', min_duration=30_000)")
    if min_duration is not None and not (isinstance(min_duration, (int, float)) and 0 <= min_duration < float("inf")):
        raise ConfigError(f"min_duration must be a finite number >= 0, not {min_duration!r}")
    limit = future_limit(now)
    users, artists = _id_column(events, user, "events"), _id_column(events, artist, "events")
    columns = {"u": users.column, "a": artists.column}
    checked = {"user": (F.col(user), users.floating, users.fractions),
               "artist": (F.col(artist), artists.floating, artists.fractions)}
    shown, names = {"user": F.col(user), "artist": F.col(artist)}, {"user": user, "artist": artist}
    hint = ""
    if timestamp is not None:
        columns["t"] = _time_column(events, timestamp)
        checked["time"] = (F.col(timestamp), _type_name(events, timestamp) in _FLOATING, False)
        checked["parsed_time"] = (columns["t"], False, False)
        shown["time"], names["time"] = F.col(timestamp).cast("string"), timestamp
        hint = EPOCH_HINT if _type_name(events, timestamp) in _NUMERIC else ""
    if weight is not None:
        columns["w"] = _number_column(events, weight, "events", "weights")
        checked["weight"], shown["weight"], names["weight"] = (columns["w"], True, False), F.col(weight), weight
    skip = F.lit(False)
    if duration is not None:
        columns["d"] = _number_column(events, duration, "events", "durations")
        checked["duration"], shown["duration"] = (columns["d"], True, False), F.col(duration)
        names["duration"] = duration
        # only valid short plays are skips: a broken duration stays in and is reported
        skip = DURATION.valid(columns["d"], _engine(), floating=True) & (columns["d"] < float(min_duration or 0))
    if validate:
        _check_plays(events, checked, shown, names, "the events DataFrame", empty_source("the events DataFrame"), skip,
                     limit, hint)
        kept = events.where(~skip)
    else:
        engine = _engine(limit)
        valid = [rule.valid(checked[role][0], engine, checked[role][1])
                 for role, rule in rules_for({role: fractions for role, (_, _, fractions) in checked.items()})]
        kept = events.where(functools.reduce(lambda a, b: a & b, valid, ~skip))
    plays = kept.select(*[column.alias(key) for key, column in columns.items()])
    parts = [F.count(F.lit(1)).cast("double").alias("weight") if weight is None else F.sum("w").alias("weight")]
    if timestamp is not None:
        parts += [F.min("t").alias("first_listen"), F.max("t").alias("last_listen")]
    return plays.groupBy(F.col("u").alias("user_id"), F.col("a").alias("artist_id")).agg(*parts)


def _utc(stamp: pd.Timestamp) -> Column:
    """A zone-less UTC time as a Spark timestamp, whatever the session's time zone."""
    F, _, _ = _pyspark()
    return F.lit(f"{stamp:%Y-%m-%d %H:%M:%S.%f}+00:00").cast("timestamp")


def _time_column(events: DataFrame, column: str) -> Column:
    F, _, _ = _pyspark()
    name = _type_name(events, column)
    value = F.col(column)
    if name in ("TimestampType", "TimestampNTZType", "DateType"):
        return value.cast("timestamp")
    if name in _NUMERIC:
        seconds = value.cast("double")
        # epoch seconds at microseconds, as DuckDB rounds them; NaN and overflows become null (reported)
        return F.when(~F.isnan(seconds) & (F.abs(seconds) < 1e13),
                      F.timestamp_micros(F.round(seconds * 1e6).cast("long")))
    if name == "StringType":
        return F.try_to_timestamp(value)
    raise DataError(f"column {column!r} of the events is {name}; play times must be timestamps, epoch seconds or "
                    "ISO 8601 strings: convert the column, or pass timestamp=None")


def _number_column(frame: DataFrame, column: str, what: str, values: str, fix: str = "") -> Column:
    """``column`` as doubles; text that is not a number (:data:`funnel.data.plays.NUMBER_TEXT`) becomes null."""
    F, _, _ = _pyspark()
    name = _type_name(frame, column)
    if name in _NUMERIC:
        return F.col(column).cast("double")
    if name == "StringType":  # only text every engine reads as the same number
        return F.when(F.col(column).rlike(f"^(?:{NUMBER_TEXT})\\z"), F.col(column).try_cast("double"))
    raise DataError(f"column {column!r} of the {what} is {name}; {values} must be numbers: cast it{fix}")


# output -----------------------------------------------------------------------------------
def write_parquet(frame: DataFrame, path: str | os.PathLike) -> None:
    """Write a Spark DataFrame as a Parquet directory, atomically on a local path.

    A local ``path`` is written into a hidden directory beside it, which is then renamed
    over it, so a failed job leaves the previous output as it was. A URI (``hdfs://``,
    ``s3a://``, ...) is written in place by Spark (``mode("overwrite")``).

    Raises
    ------
    ArtifactError
        The output cannot be written (Spark's or the file system's message is passed on).
    """
    import shutil
    import uuid

    from funnel.errors import ArtifactError

    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        frame.write.mode("overwrite").parquet(text)
        return
    target = Path(text.removeprefix("file://")).absolute()
    if target.is_file():
        raise ArtifactError(f"output {target} is a file; Spark writes a Parquet directory: give another path, "
                            "or remove the file")
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write.parquet(staged.as_uri())
        if target.exists():
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staged.rename(target)
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staged, ignore_errors=True)
