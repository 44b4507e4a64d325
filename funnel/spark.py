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
- :func:`aggregate_events` is :func:`funnel.events.read_events` as a Spark job: one row per
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

from funnel.data.dataset import MAX_WEIGHT
from funnel.data.ids import id_kind, lookup_ids
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import Column, DataFrame

    from funnel.recommender import Recommender

logger = logging.getLogger("funnel")

_INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")
_NUMERIC = _INTEGRAL + ("FloatType", "DoubleType", "DecimalType")
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


def _id_column(frame: DataFrame, column: str, what: str, kind: str | None = None) -> Column:
    """``column`` as the id type funnel uses (long or string), checked against the model's ``kind``."""
    F, _, _ = _pyspark()
    name = _type_name(frame, column)
    if name in _INTEGRAL:
        got = "int"
    elif name == "StringType":
        got = "str"
    else:
        raise DataError(f"column {column!r} of the {what} is {name}; ids must be integers or strings: cast it")
    if kind is not None and got != kind:
        want = "integers" if kind == "int" else "strings"
        raise ConfigError(f"column {column!r} of the {what} holds {'integers' if got == 'int' else 'strings'}, "
                          f"but the model's artist ids are {want}: cast the column, or score with a model "
                          "trained on ids of that kind")
    return F.col(column).cast("long") if got == "int" else F.col(column)


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
        pairs add up), e.g. the output of :func:`aggregate_events`. Ids are integers or
        strings; the artist ids of the model's kind. Artists outside the catalogue are
        ignored (with a warning in the executor's log).
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
        The column of play counts; None: every row is one play.
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
        ``histories`` is not a DataFrame or lacks a column; an id column is neither integers
        nor strings. A history with null ids or bad weights fails its task with the
        :class:`DataError` of ``recommend_for_histories``.
    ArtifactError
        The model cannot be read.

    Examples
    --------
    >>> from funnel import spark as funnel_spark
    >>> plays = spark.read.parquet("histories/")  # doctest: +SKIP
    >>> recs = funnel_spark.recommend(plays, "model/", n=20, exclude=["blocked-artist-id"])  # doctest: +SKIP
    >>> recs.write.parquet("recommendations.parquet")  # doctest: +SKIP
    """
    from funnel.recommender import Recommender, check_n

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
    user_column = _id_column(histories, user, "histories")
    plays = F.col(weight).cast("double") if weight is not None else F.lit(1.0)
    if weight is not None and _type_name(histories, weight) not in _NUMERIC:
        raise DataError(f"column {weight!r} of the histories is {_type_name(histories, weight)}; play counts must "
                        "be numbers: cast it, or pass weight=None to count one play per row")
    rows = histories.select(user_column.alias("user_id"), _id_column(histories, artist, "histories", kind)
                            .alias("artist_id"), plays.alias("weight"))
    if per_user:
        _check_frame(exclude, "exclude", [user, artist], "it needs the user and artist columns of the histories")
        theirs, ours = _type_name(exclude, user), _type_name(histories, user)
        if (theirs in _INTEGRAL) != (ours in _INTEGRAL):
            raise ConfigError(f"column {user!r} is {theirs} in the exclude DataFrame and {ours} in the histories: "
                              "give both the same kind of user id")
        blocked = exclude.select(_id_column(exclude, user, "exclude DataFrame").alias("user_id"),
                                 _id_column(exclude, artist, "exclude DataFrame", kind).alias("artist_id"),
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
                 exclude=None if per_user or exclude is None else np.asarray(_listed(exclude)),
                 allow=None if allow is None else np.asarray(_listed(allow)), filter_known=rules.filter_known,
                 per_user=per_user, columns=columns)
    return grouped.mapInPandas(functools.partial(_score_partition, task=task), types.StructType(fields))


def _listed(ids: Any) -> list[Any]:
    """A list of artist ids as given (already checked by :class:`funnel.rules.Rules` on the driver)."""
    return [ids] if isinstance(ids, (str, int, np.integer)) else list(ids)


# aggregation ------------------------------------------------------------------------------
def aggregate_events(events: DataFrame, *, user: str = "user_id", artist: str = "artist_id",
                     timestamp: str | None = None, weight: str | None = None, duration: str | None = None,
                     min_duration: float | None = None, now: Any = None, validate: bool = True) -> DataFrame:
    """Aggregate a Spark DataFrame of plays to one row per (user, artist), as :func:`funnel.events.read_events`.

    The same rules as the DuckDB path, as one Spark ``groupBy``: skips shorter than
    ``min_duration`` are dropped first; then every play must have both ids, a valid
    weight, a time between 1678 and ``now`` plus a day, and a valid duration. On the same
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
        :class:`DataError` naming how many plays break which rule. False: skip that job
        and drop the bad plays instead, for logs already validated upstream.

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
        plays that break a rule.
    """
    from funnel.events import EARLIEST, future_limit

    F, _, _ = _pyspark()
    _check_frame(events, "events", [user, artist, timestamp, weight, duration],
                 "name the right columns with user=..., artist=..., timestamp=..., weight=..., duration=...")
    if (duration is None) != (min_duration is None):
        raise ConfigError("duration and min_duration go together: the column of play lengths and the shortest "
                          "play kept, in its unit (e.g. duration='duration_ms', min_duration=30_000)")
    if min_duration is not None and not (isinstance(min_duration, (int, float)) and 0 <= min_duration < float("inf")):
        raise ConfigError(f"min_duration must be a finite number >= 0, not {min_duration!r}")
    limit = future_limit(now)
    columns = {"u": _id_column(events, user, "events"), "a": _id_column(events, artist, "events")}
    checks: dict[str, Column] = {"user": F.col("u").isNotNull(), "artist": F.col("a").isNotNull()}
    if timestamp is not None:
        columns["t"] = _time_column(events, timestamp)
        checks["time"] = F.coalesce((F.col("t") >= _utc(EARLIEST)) & (F.col("t") <= _utc(limit)), F.lit(False))
    if weight is not None:
        columns["w"] = _number_column(events, weight)
        checks["weight"] = F.coalesce((F.col("w") > 0) & (F.col("w") <= MAX_WEIGHT), F.lit(False))
    skip = F.lit(False)
    if duration is not None:
        columns["d"] = _number_column(events, duration)
        valid = (F.col("d") >= 0) & (F.col("d") <= float("inf")) & ~F.isnan("d")
        checks["duration"] = F.coalesce(valid, F.lit(False))
        skip = F.coalesce(valid & (F.col("d") < float(min_duration or 0)), F.lit(False))
    plays = events.select(*[column.alias(key) for key, column in columns.items()]).where(~skip)
    if validate:
        _validate(plays, checks, {"user": user, "artist": artist, "time": timestamp, "weight": weight,
                                  "duration": duration})
    else:
        every = functools.reduce(lambda a, b: a & b, checks.values())
        plays = plays.where(every)
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


def _number_column(events: DataFrame, column: str) -> Column:
    F, _, _ = _pyspark()
    name = _type_name(events, column)
    if name in _NUMERIC:
        return F.col(column).cast("double")
    if name == "StringType":
        return F.col(column).try_cast("double")
    raise DataError(f"column {column!r} of the events is {name}; it must hold numbers: convert it")


_RULES = {"user": "have no user id (null)", "artist": "have no artist id (null)",
          "time": "have a time that does not parse, lies before 1678 or more than a day in the future",
          "weight": "have a weight that is not a finite number > 0 and <= 1e30",
          "duration": "have a missing, negative or non-numeric duration"}


def _validate(plays: DataFrame, checks: dict[str, Column], names: dict[str, str | None]) -> None:
    """One job counting the plays that break each rule; a DataError naming them all if any do."""
    F, _, _ = _pyspark()
    counts = plays.agg(F.count(F.lit(1)).alias("plays"),
                       *[F.sum(F.when(~check, 1).otherwise(0)).alias(key) for key, check in checks.items()]).first()
    if counts is None or not counts["plays"]:
        raise DataError("no plays left in the events" + (" after dropping plays shorter than min_duration"
                                                         if "duration" in checks else ""))
    broken = [f"{counts[key]:,} plays {_RULES[key]} (column {names[key]!r})" for key in checks if counts[key]]
    if broken:
        raise DataError(f"{'; '.join(broken)}: fix or drop those rows before aggregating, or pass validate=False "
                        "to drop them")


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
