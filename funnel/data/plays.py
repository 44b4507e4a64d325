"""The rules every play must meet, written once for the three engines that read plays.

A play is a row of an event log or of listeners' histories. pandas reads them in
:meth:`funnel.Dataset.from_frames` (and so in ``recommend_for_histories`` and ``main.py score
--engine local``), DuckDB in :func:`funnel.data.events.read_events`, Spark in
:func:`funnel.spark.recommend` and :func:`funnel.spark.aggregate_events`. :data:`RULES` is the
one table of what a play must be: each entry names the column it reads (its role) and a
:class:`Rule`, whose check is a function of the value written with comparisons, ``&``, ``|``
and the few functions of an :class:`Engine`. Each engine passes its own values (numpy arrays,
:class:`Sql` expressions, Spark Columns) and its own :class:`Engine`, so the pandas mask, the
DuckDB predicate and the Spark predicate all come from that one function, and the messages
from the rule's one template.
"""

from __future__ import annotations

import datetime
import decimal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from funnel.errors import DataError, EmptyDataError, shorten

MAX_WEIGHT = 1e30  # play counts are stored as float32
# text that every engine reads as the same number (pandas, DuckDB and Spark each also take
# forms the others refuse, such as "5d" or "1_000"); ASCII digits only, spaces around allowed
NUMBER_TEXT = r" *[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)? *"
_INT64_END = 2.0**63  # the first float beyond int64


@dataclass(frozen=True)
class Engine:
    """How one engine spells what a check needs besides comparisons, ``&``, ``|`` and ``~``.

    Attributes
    ----------
    present : callable
        ``present(value, floating)``: whether a value is there (not null; not NaN when
        ``floating``, the value being floating-point).
    round, abs : callable
        Rounding to a whole number and the absolute value.
    done : callable
        A finished predicate with nulls counted as false.
    latest, earliest : optional
        The last and first time a play may have, as the engine's values.
    """

    present: Callable[[Any, bool], Any]
    round: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    done: Callable[[Any], Any]
    latest: Any = None
    earliest: Any = None


@dataclass(frozen=True)
class Rule:
    """One rule: the message its violations raise, and its check of a value.

    Attributes
    ----------
    name : str
        What the rule asks, in a few words.
    message : str
        A :meth:`str.format` template with ``what`` (the input), ``column``, ``count`` (the
        rows that break the rule), ``where`` (the first of them) and ``value`` (its value),
        and for times ``latest`` and ``hint``.
    check : callable, optional
        ``check(value, engine)``: true for a valid value that is present. None: the rule is
        that the value is present.
    missing_ok : bool
        A missing value passes (an earlier rule of the table reports it).
    float_only : bool
        The rule applies only to floating-point or decimal columns (an integer or string id
        is whole by its type).
    """

    name: str
    message: str
    check: Callable[[Any, Engine], Any] | None = None
    missing_ok: bool = False
    float_only: bool = False

    def valid(self, value: Any, engine: Engine, floating: bool = False, missing_ok: bool | None = None) -> Any:
        """The engine's predicate (a mask, an expression) true where ``value`` meets the rule."""
        present = engine.present(value, floating)
        if self.check is None:
            return engine.done(present)
        ok = self.check(value, engine)
        if self.missing_ok if missing_ok is None else missing_ok:
            return engine.done(~present | ok)
        return engine.done(present & ok)


def _whole(x: Any, e: Engine) -> Any:
    return (e.round(x) == x) & (e.abs(x) < _INT64_END)


_FIX = "correct or delete those rows"
_BAD = "{count:,} bad row(s), the first: {where} has {value}; "
MISSING_ID = Rule(
    "id present",
    "{what} column {column!r} has {count:,} empty (null) id(s), first at {where}; drop those rows "
    "(frame.dropna(subset=[{column!r}])) or fill them")
WHOLE_ID = Rule(
    "id whole",
    "{what} column {column!r} must hold integer ids (whole numbers within 64 bits); " + _BAD + _FIX,
    _whole, missing_ok=True, float_only=True)
WEIGHT = Rule(
    "weight a play count",
    f"{{what}} column {{column!r}} must be a finite number > 0 and <= {MAX_WEIGHT:.0e} (a play count); " + _BAD + _FIX,
    lambda w, e: (w > 0) & (w <= MAX_WEIGHT))
MISSING_TIME = Rule(
    "time present",
    "{what} column {column!r} has {count:,} empty (null) time(s), first at {where}; drop those rows, or pass "
    "timestamp=None to read no times")
BAD_TIME = Rule(
    "time readable",
    "{what} column {column!r} must hold times (timestamps, epoch seconds or ISO 8601 strings such as 2024-05-01 "
    "13:45:00); " + _BAD + _FIX)
LATE = Rule(
    "time not in the future",
    "{what} column {column!r} has {count:,} time(s) in the future, after {latest} (now + 1 day), the first: {where} "
    "has {value}{hint}; fix the clock or the column, or pass now=... if the log is from a later time",
    lambda t, e: t <= e.latest, missing_ok=True)
EARLY = Rule(
    "time not before 1678",
    "{what} column {column!r} has {count:,} time(s) before 1678, the first: {where} has {value}; " + _FIX,
    lambda t, e: t >= e.earliest, missing_ok=True)
DURATION = Rule(
    "duration a length",
    "{what} column {column!r} must hold durations (finite numbers >= 0); " + _BAD + _FIX,
    lambda d, e: (d >= 0) & (d <= sys.float_info.max))

#: The rules of a play, in the order they are reported: (role, rule). Roles: ``user`` and
#: ``artist`` (the id as given), ``weight`` (as a number; text that is not one is missing),
#: ``time`` (as given), ``parsed_time`` (the time as read; missing when it does not parse),
#: ``duration`` (as a number). An engine checks the roles its input has.
RULES: tuple[tuple[str, Rule], ...] = (
    ("user", MISSING_ID), ("user", WHOLE_ID), ("artist", MISSING_ID), ("artist", WHOLE_ID), ("weight", WEIGHT),
    ("time", MISSING_TIME), ("parsed_time", BAD_TIME), ("parsed_time", LATE), ("parsed_time", EARLY),
    ("duration", DURATION),
)


def rules_for(roles: Mapping[str, bool]) -> list[tuple[str, Rule]]:
    """The rules of the roles an input has, in order; ``roles`` maps each to whether its column may hold fractions."""
    return [(role, rule) for role, rule in RULES if role in roles and (roles[role] or not rule.float_only)]


EPOCH_HINT = " (epoch milliseconds? the column must hold seconds: divide it by 1000)"

PANDAS = Engine(present=lambda x, floating: ~pd.isna(x), round=np.round, abs=np.abs, done=lambda p: p)


class Sql:
    """A SQL expression that comparisons, ``&``, ``|`` and ``~`` extend (DuckDB and Spark SQL spell these alike)."""

    __slots__ = ("text",)
    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def _binary(self, op: str, other: Any) -> Sql:
        right = other.text if isinstance(other, Sql) else repr(float(other))  # the rules compare with numbers only
        return Sql(f"({self.text} {op} {right})")

    def __lt__(self, other: object) -> Sql:
        return self._binary("<", other)

    def __le__(self, other: object) -> Sql:
        return self._binary("<=", other)

    def __gt__(self, other: object) -> Sql:
        return self._binary(">", other)

    def __ge__(self, other: object) -> Sql:
        return self._binary(">=", other)

    def __eq__(self, other: object) -> Sql:  # type: ignore[override]
        return self._binary("=", other)

    def __and__(self, other: object) -> Sql:
        return self._binary("AND", other)

    def __or__(self, other: object) -> Sql:
        return self._binary("OR", other)

    def __invert__(self) -> Sql:
        return Sql(f"(NOT {self.text})")


def sql_engine(latest: str | None = None, earliest: str | None = None) -> Engine:
    """The :class:`Engine` of SQL text; ``latest`` and ``earliest`` are time literals."""
    return Engine(present=lambda x, floating: Sql(f"({x} IS NOT NULL AND NOT isnan({x}))" if floating
                                                  else f"({x} IS NOT NULL)"),
                  round=lambda x: Sql(f"round({x})"), abs=lambda x: Sql(f"abs({x})"),
                  done=lambda p: Sql(f"coalesce({p}, false)"),
                  latest=None if latest is None else Sql(latest), earliest=None if earliest is None else Sql(earliest))


# messages --------------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    """Whether a cell is null or NaN (the engines do not all keep the two apart)."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))


def show(value: Any, missing: str = "an empty value (null or NaN)") -> str:
    """A cell for a message: ``2.5``, ``'abc'``, the same whichever engine read it."""
    if isinstance(value, np.generic):
        value = value.item()
    if is_missing(value):
        return missing
    if isinstance(value, decimal.Decimal):
        return shorten(str(value))
    if isinstance(value, datetime.date):  # pandas Timestamps too
        return repr(str(value))
    return shorten(repr(value))


def row_with(cells: Mapping[str, Any]) -> str:
    """A row named by its other cells (where an engine has no row number): ``the row with user_id 2, artist_id 3``."""
    return "the row with " + ", ".join(f"{column} {show(value, 'null')}" for column, value in cells.items())


def violation(rule: Rule, *, what: str, column: str, count: int, where: str, value: Any = None,
              latest: Any = None, hint: str = "") -> DataError:
    """The one-line error of ``count`` rows breaking ``rule``, the first at ``where`` with ``value``."""
    return DataError(rule.message.format(what=what, column=column, count=count, where=where, value=show(value),
                                         latest=latest, hint=hint))


def violation_in_row(role: str, rule: Rule, *, count: int, example: Mapping[str, Any], columns: Mapping[str, str],
                     what: str, latest: Any = None, hint: str = "") -> DataError:
    """The error of ``count`` rows breaking ``rule``, for an engine without row numbers.

    ``example`` is the first bad row, role -> value (``time`` for a rule of ``parsed_time``);
    the row is named by its ids and weight, ``columns`` mapping each role to the input's column.
    """
    own = "time" if role == "parsed_time" else role
    cells = {columns[other]: example[other] for other in ("user", "artist", "weight")
             if other != own and other in example}
    return violation(rule, what=what, column=columns[own], count=count, where=row_with(cells), value=example[own],
                     latest=latest, hint=hint)


def empty_interactions(source: str | None = None) -> DataError:
    """The error for interactions (or histories) with no rows, the same on every engine."""
    where = f" ({source})" if source else ""
    return EmptyDataError(f"interactions are empty{where}: no rows; at least one (user_id, artist_id, weight) row "
                          "is needed")


def empty_source(name: str, columns: bool = True) -> DataError:
    """The error for an event log with no rows (and, with ``columns=False``, no columns either)."""
    what = "no rows" if columns else "no columns and no rows"
    return EmptyDataError(f"{name} is empty: it has {what}; pass a source with plays")


def pandas_numbers(values: pd.Series) -> np.ndarray:
    """A column as float64 for the rules, pandas' way: text that is not a number (as :data:`NUMBER_TEXT`) is NaN."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    if values.dtype == object:  # bytes are no number on any engine (pandas would read b"5" as 5)
        numeric[values.map(lambda value: isinstance(value, (bytes, bytearray))).to_numpy(dtype=bool)] = np.nan
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        try:
            matches = values.str.fullmatch(NUMBER_TEXT)
        except (AttributeError, TypeError):  # not a single string in the column, or bytes only
            return numeric
        # NaN (not a string) and NA stay; a string that is not a number the other engines read alike is dropped
        numeric = np.where(matches.eq(False).fillna(False).to_numpy(dtype=bool), np.nan, numeric)
    return numeric
