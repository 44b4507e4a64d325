"""Checking and converting the columns of the frames a :class:`funnel.data.dataset.Dataset` is built from.

Each helper raises a :class:`funnel.errors.DataError` naming the first bad row (its file line
when the frame was read from a file) and how to fix it; play rules come from
:data:`funnel.data.plays.RULES`, which DuckDB and Spark apply too.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from funnel.data.ids import INT64_MAX, describe_kind, string_kind
from funnel.data.plays import MISSING_ID, PANDAS, WEIGHT, WHOLE_ID, Rule, pandas_numbers, violation
from funnel.errors import DataError

FUTURE_SLACK = np.timedelta64(1, "D")  # clocks of the machines that logged plays may run a little ahead


def row_at(source: str | None, row: int) -> str:
    """Describe a row: the file line when the frame was read from a file."""
    if source:
        return f"{source}, line {row + 2}"  # +1 for the header, +1 for 1-based lines
    return f"row {row}"


def _show(value: object) -> str:
    """repr of a cell without numpy's type wrapper (``2.5``, not ``np.float64(2.5)``)."""
    return repr(value.item() if hasattr(value, "item") else value)


def require_frame(frame: object, name: str, columns: Iterable[str], source: str | None) -> pd.DataFrame:
    """``frame`` with a fresh index, after checking it is a DataFrame with each of ``columns`` once."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.duplicated().any():
        repeated = sorted(set(map(str, frame.columns[frame.columns.duplicated()])))
        raise DataError(f"{name} has repeated column name(s) {repeated}; each column must appear once")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        where = f" ({source})" if source else ""
        raise DataError(
            f"{name}{where} is missing column(s) {missing}; it has {list(map(str, frame.columns))} "
            f"and needs {list(columns)}"
        )
    return frame.reset_index(drop=True)


def integer_column(frame: pd.DataFrame, column: str, name: str, source: str | None) -> np.ndarray:
    """Return ``frame[column]`` as int64, or raise naming the first non-integer row."""
    values = frame[column]
    if not pd.api.types.is_integer_dtype(values) and values.dtype == object:
        exact = pd.to_numeric(values, errors="coerce")  # keeps Python ints exact when all are ints
        if pd.api.types.is_integer_dtype(exact):
            values = exact
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        big = values.to_numpy() > INT64_MAX if values.dtype == np.uint64 else np.zeros(len(values), bool)
        if big.any():
            row = int(np.flatnonzero(big)[0])
            raise DataError(f"{name} column {column!r} holds an id beyond the 64-bit range; "
                            f"{row_at(source, row)} has {_show(values.iloc[row])}")
        return values.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # text that is no number ('abc' in a HetRec file) is NaN here: not an integer id, whatever the rule says of nulls
    _require(WHOLE_ID, numeric, frame[column], name, column, source, missing_ok=False)
    return numeric.astype(np.int64)


def id_column(frame: pd.DataFrame, column: str, name: str, source: str | None) -> np.ndarray:
    """``frame[column]`` as ids of one kind: int64 for integers, a unicode array for strings.

    Raises naming the first bad row: an empty (null) id, ids of mixed types, or a float
    that is not a whole number.
    """
    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    _require(MISSING_ID, values.to_numpy(), values, name, column, source)
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{name} column {column!r} holds booleans; ids must be integers or strings")
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
        return integer_column(frame, column, name, source)
    kind = string_kind(values)
    if kind == "str":
        return values.to_numpy(dtype=str)
    if kind == "uuid":
        return values.astype(str).to_numpy(dtype=str)
    if kind in ("int", "float", None):
        return integer_column(frame, column, name, source)
    types = values.map(lambda v: type(v).__name__).to_numpy(dtype=object)
    first = types[0]
    other = np.flatnonzero(types != first)
    if len(other) == 0 or first not in ("str", "int", "UUID"):
        row = int(np.flatnonzero(~np.isin(types, ["str", "int", "UUID"]))[0])
        raise DataError(f"{name} column {column!r} must hold integer or string ids; {row_at(source, row)} has "
                        f"{types[row]} {_show(values.iloc[row])}; convert the column to one of those types")
    row = int(other[0])
    raise DataError(
        f"{name} column {column!r} holds ids of mixed types: {row_at(source, 0)} has {first} "
        f"{_show(values.iloc[0])}, {row_at(source, row)} has {types[row]} {_show(values.iloc[row])}; "
        f"use one type for every id, e.g. frame[{column!r}].astype(str)")


def same_kind(ids: dict[str, np.ndarray], what: str) -> None:
    """Raise when the id columns naming the same thing (users, artists) hold different kinds."""
    kinds = {where: describe_kind(values) for where, values in ids.items() if len(values)}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{where} holds {kind}" for where, kind in kinds.items())
        raise DataError(f"{what} ids must be of one type in every frame, but {listed}; "
                        "convert them to one type (e.g. .astype(str)) before building the dataset")


def nanosecond_stamps(stamps: pd.Series, source: str | None, name: str = "tag_assignments",
                       column: str = "timestamp") -> np.ndarray:
    """``stamps`` as datetime64[ns], or raise for dates that type cannot hold."""
    try:
        return stamps.astype("datetime64[ns]").to_numpy()
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as exc:
        raise DataError(f"{name} column {column!r}{f' ({source})' if source else ''} holds a date "
                        f"outside 1677-2262, which cannot be represented: {exc}") from exc


def label_tags(labels: pd.DataFrame, tags: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Artist-level labels as ``artist_id, tag_id`` rows, their texts added to the tag table.

    A label whose text is already a tag reuses that tag's id, so a genre given by an editor
    and the same word given by listeners are one token of the embedding.
    """
    if tags is None:
        tags = pd.DataFrame({"tag_id": np.empty(0, np.int64), "tag": np.empty(0, dtype=object)})
    known = pd.Series(tags["tag_id"].to_numpy(), index=tags["tag"].astype(str).str.lower().to_numpy(dtype=object))
    known = known[~known.index.duplicated()]
    texts = pd.unique(labels["tag"].to_numpy(dtype=object))
    new = [t for t in texts if t.lower() not in known.index]
    start = int(tags["tag_id"].max()) + 1 if len(tags) else 1
    added = pd.DataFrame({"tag_id": np.arange(start, start + len(new), dtype=np.int64), "tag": new})
    tags = pd.concat([tags, added], ignore_index=True)
    ids = pd.concat([known, pd.Series(added["tag_id"].to_numpy(), index=[t.lower() for t in new])])
    rows = pd.DataFrame({"artist_id": labels["artist_id"].to_numpy(),
                         "tag_id": ids.reindex(labels["tag"].str.lower().to_numpy()).to_numpy(np.int64)})
    return rows.drop_duplicates().reset_index(drop=True), tags


def listen_times(frame: pd.DataFrame, column: str, source: str | None) -> np.ndarray:
    """A listen-time column as datetime64[ns] (UTC, tz-naive); no nulls, none in the future."""
    stamps = frame[column]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise DataError(f"interactions column {column!r} must be datetime64 (got {stamps.dtype}); "
                        "convert it with pandas.to_datetime(..., utc=True)")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert(None)
    values = nanosecond_stamps(stamps, source, "interactions", column)
    missing = np.isnat(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"interactions column {column!r} has {int(missing.sum())} empty time(s), first at "
                        f"{row_at(source, row)}; fill them or drop the listen-time columns")
    now = np.datetime64(pd.Timestamp.now(tz="UTC").tz_convert(None).to_datetime64(), "ns")
    future = values > now + FUTURE_SLACK
    if future.any():
        row = int(np.flatnonzero(future)[0])
        raise DataError(f"interactions column {column!r} has {int(future.sum())} time(s) in the future, first "
                        f"{values[row]} at {row_at(source, row)}; fix the clock or the time zone of those rows")
    return values


def check_weights(frame: pd.DataFrame, source: str | None) -> np.ndarray:
    """The ``weight`` column as float64, checked by the :data:`funnel.data.plays.WEIGHT` rule."""
    values = frame["weight"]
    if pd.api.types.is_bool_dtype(values):
        raise DataError("interactions column 'weight' holds booleans; weights must be numbers (play counts): "
                        "convert the column")
    numeric = pandas_numbers(values)
    _require(WEIGHT, numeric, values, "interactions", "weight", source)
    return numeric


def _require(rule: Rule, values: np.ndarray, shown: pd.Series, name: str, column: str, source: str | None,
             missing_ok: bool | None = None) -> None:
    """Raise the rule's error, naming the first row of ``values`` that breaks it (with its cell of ``shown``)."""
    bad = ~rule.valid(values, PANDAS, floating=True, missing_ok=missing_ok)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise violation(rule, what=name, column=column, count=len(rows), where=row_at(source, int(rows[0])),
                        value=shown.iloc[rows[0]])

