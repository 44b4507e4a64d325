"""Spark columns as funnel reads them, and the play rules checked over a Spark DataFrame.

Shared by :mod:`funnel.spark.score` and :mod:`funnel.spark.aggregate`: loading pyspark (an
optional dependency), checking a frame's columns, reading id and number columns, and
checking every row against :data:`funnel.data.plays.RULES` in one Spark job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from funnel.data.plays import NUMBER_TEXT, Engine, rules_for, violation_in_row
from funnel.errors import ConfigError, DataError

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import Column, DataFrame

_INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")
FLOATING = ("FloatType", "DoubleType")
NUMERIC = _INTEGRAL + FLOATING + ("DecimalType",)


def load_pyspark() -> tuple[Any, Any, Any]:
    """``pyspark.sql.functions``, ``DataFrame`` and ``pyspark.sql.types``, imported on use.

    Raises
    ------
    ConfigError
        pyspark is not installed.
    """
    try:
        import pyspark.sql.functions as F
        from pyspark.sql import DataFrame, types
    except ImportError as exc:
        raise ConfigError(f"funnel.spark needs the spark extra ({exc.name} is missing): "
                          'pip install -e ".[spark]"') from exc
    return F, DataFrame, types


def type_name(frame: DataFrame, column: str) -> str:
    """The name of the Spark type of ``column`` (``LongType``, ``StringType``, ...)."""
    return type(frame.schema[column].dataType).__name__


def check_frame(frame: Any, what: str, columns: Sequence[str | None], hint: str) -> None:
    """Raise unless ``frame`` is a Spark DataFrame with every named column (None: not asked for)."""
    _, DataFrame, _ = load_pyspark()
    if not isinstance(frame, DataFrame):
        raise DataError(f"{what} must be a Spark DataFrame, got {type(frame).__name__}: "
                        "create one with spark.read.parquet(...) or spark.createDataFrame(pandas_frame)")
    missing = [column for column in columns if column is not None and column not in frame.columns]
    if missing:
        raise DataError(f"{what} has no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(map(repr, frame.columns))}: {hint}")


@dataclass(frozen=True)
class Id:
    """An id column as funnel uses it (long or string), its kind, and how the rules read the column as given."""

    column: Column
    kind: str
    floating: bool  # float or double: NaN is missing too
    fractions: bool  # float, double or decimal with a scale: the rules check that each id is whole


def id_column(frame: DataFrame, column: str, what: str, kind: str | None = None, fractions: bool = True) -> Id:
    """``column`` as the id type funnel uses, checked against the model's ``kind``.

    Floating-point and decimal ids (``fractions``) are taken when the rules find every one
    whole (3.0, not 3.5), as the in-process path takes them; they become longs.
    """
    F, _, _ = load_pyspark()
    name = type_name(frame, column)
    whole = name in _INTEGRAL or (name == "DecimalType" and getattr(frame.schema[column].dataType, "scale", 1) == 0)
    if name == "StringType":
        got = "str"
    elif whole or (fractions and name in NUMERIC):
        got = "int"
    else:
        raise DataError(f"column {column!r} of the {what} is {name}; ids must be integers or strings: cast it")
    if kind is not None and got != kind:
        want = "integers" if kind == "int" else "strings"
        raise ConfigError(f"column {column!r} of the {what} holds {'integers' if got == 'int' else 'strings'}, "
                          f"but the model's artist ids are {want}: cast the column, or score with a model "
                          "trained on ids of that kind")
    return Id(F.col(column).cast("long") if got == "int" else F.col(column), got, name in FLOATING,
              got == "int" and not whole)


def spark_engine(limit: pd.Timestamp | None = None) -> Engine:
    """The :class:`funnel.data.plays.Engine` of Spark Columns."""
    from funnel.data.events_sql import EARLIEST

    F, _, _ = load_pyspark()
    return Engine(present=lambda x, floating: x.isNotNull() & ~F.isnan(x) if floating else x.isNotNull(),
                  round=F.round, abs=F.abs, done=lambda p: F.coalesce(p, F.lit(False)),
                  latest=None if limit is None else _utc(limit), earliest=_utc(EARLIEST))


def check_plays(frame: DataFrame, checked: dict[str, tuple[Column, bool, bool]], shown: dict[str, Column],
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
    F, _, _ = load_pyspark()
    engine = spark_engine(limit)
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



def _utc(stamp: pd.Timestamp) -> Column:
    """A zone-less UTC time as a Spark timestamp, whatever the session's time zone."""
    F, _, _ = load_pyspark()
    return F.lit(f"{stamp:%Y-%m-%d %H:%M:%S.%f}+00:00").cast("timestamp")



def number_column(frame: DataFrame, column: str, what: str, values: str, fix: str = "") -> Column:
    """``column`` as doubles; text that is not a number (:data:`funnel.data.plays.NUMBER_TEXT`) becomes null."""
    F, _, _ = load_pyspark()
    name = type_name(frame, column)
    if name in NUMERIC:
        return F.col(column).cast("double")
    if name == "StringType":  # only text every engine reads as the same number
        return F.when(F.col(column).rlike(f"^(?:{NUMBER_TEXT})\\z"), F.col(column).try_cast("double"))
    raise DataError(f"column {column!r} of the {what} is {name}; {values} must be numbers: cast it{fix}")

