"""Scoring every listener's history on Spark with a saved model: :func:`recommend`.

The driver checks the arguments and every row, then groups the histories by user; each
partition is scored on an executor by :func:`_score_partition`, which Spark pickles by
reference to this module, with the :class:`_Task` it needs.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from funnel.data.ids import id_kind, lookup_ids
from funnel.data.plays import empty_interactions
from funnel.errors import ConfigError
from funnel.spark.columns import check_frame, check_plays, id_column, load_pyspark, number_column, type_name

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import DataFrame

    from funnel.recommender import Recommender

logger = logging.getLogger("funnel")

_EXCLUDED = "_funnel_excluded"
# a Python worker runs one task at a time and is reused for the next (spark.python.worker.reuse)
_CACHE: dict[str, tuple[tuple[int, int], Recommender]] = {}


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
        pairs add up), e.g. the output of :func:`funnel.spark.aggregate_events`. Ids are integers,
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

    F, DataFrame, types = load_pyspark()
    check_frame(histories, "histories", [user, artist, weight],
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
    users, artists = id_column(histories, user, "histories"), id_column(histories, artist, "histories", kind)
    plays = F.lit(1.0) if weight is None else number_column(histories, weight, "histories", "weights", (
        ", or pass weight=None to count one play per row"))
    if per_user:
        check_frame(exclude, "exclude", [user, artist], "it needs the user and artist columns of the histories")
        # the exclude frame's ids are not checked by the rules: only ids whole by their type are taken
        theirs = id_column(exclude, user, "exclude DataFrame", fractions=False)
        if theirs.kind != users.kind:
            raise ConfigError(f"column {user!r} is {type_name(exclude, user)} in the exclude DataFrame and "
                              f"{type_name(histories, user)} in the histories: give both the same kind of user id")
    checked = {"user": (F.col(user), users.floating, users.fractions),
               "artist": (F.col(artist), artists.floating, artists.fractions)}
    shown, names = {"user": F.col(user), "artist": F.col(artist)}, {"user": user, "artist": artist}
    if weight is not None:
        checked["weight"], shown["weight"], names["weight"] = (plays, True, False), F.col(weight), weight
    # one job before any scoring: bad rows fail here, on the driver, as in recommend_for_histories (whose messages
    # call the histories interactions)
    check_plays(histories, checked, shown, names, "interactions", empty_interactions())
    rows = histories.select(users.column.alias("user_id"), artists.column.alias("artist_id"), plays.alias("weight"))
    if per_user:
        blocked = exclude.select(theirs.column.alias("user_id"),
                                 id_column(exclude, artist, "exclude DataFrame", kind, fractions=False).column
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

