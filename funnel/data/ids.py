"""External ids (the caller's integers or strings) and their internal positions.

A dataset's users and artists may be any scalar ids of one kind per column: integers (kept
as int64) or strings (kept as numpy unicode arrays, so they are saved without pickle and
compared vectorised; UUID objects become their canonical strings). The sorted unique ids
are the id map: the position of an id is its internal index.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd

from funnel.errors import ConfigError, shorten

INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
LONG_ID = 256  # characters: a list with a longer string id is kept as objects, not widened


def id_kind(ids: np.ndarray) -> str:
    """``"int"`` or ``"str"``: the kind of a normalised id array (strings may be unicode or objects)."""
    return "str" if ids.dtype.kind in "UO" else "int"


def as_id_array(values: Any) -> np.ndarray:
    """Already validated ids (a column or array of one kind) as int64 or a unicode array."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "U":
        return array
    return np.asarray(array, dtype=str)


def string_kind(values: pd.Series) -> str | None:
    """How an object or string column holds ids: ``"str"``, ``"int"``, ``"float"``, ``"mixed"``, ``"uuid"``.

    ``None`` when the column is empty.
    """
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "empty":
        return None
    if inferred == "string":
        return "str"
    if inferred == "integer":
        return "int"
    if inferred in ("floating", "mixed-integer-float", "decimal"):
        return "float"
    if inferred == "mixed" and all(isinstance(v, uuid.UUID) for v in values):
        return "uuid"
    return "mixed"


def describe_kind(ids: np.ndarray) -> str:
    """``integers`` or ``strings``, for messages."""
    return "strings" if id_kind(ids) == "str" else "integers"


def id_range(ids: np.ndarray) -> str:
    """``ids 1..240`` or ``ids 'a'..'z'``: a sorted id array's span, for messages."""
    if len(ids) == 0:
        return "no ids"
    first, last = ids[0].item(), ids[-1].item()
    return f"ids {first!r}..{last!r}"


def shown_ids(values: Any, limit: int = 5, width: int = 40) -> str:
    """Up to ``limit`` of ``values`` for a message, each cut at ``width`` characters."""
    values = list(values)
    shown = [shorten(repr(value), width) for value in values[:limit]]
    return f"[{', '.join(shown)}{', ...' if len(values) > limit else ''}]"


def query_ids(ids: Any) -> np.ndarray:
    """A caller's ids as an array for :func:`lookup_ids` (lists are typed element by element)."""
    listed = isinstance(ids, (list, tuple))
    text = listed and all(isinstance(v, str) for v in ids)
    if text and ids and max(map(len, ids)) > LONG_ID:
        # numpy would give every id the longest one's width: one long id among many short
        # ones would cost gigabytes; an object array holds each as it is
        return np.array(ids, dtype=object)
    values = np.asarray(ids)
    promoted = values.dtype.kind == "U" and listed and not text
    if not hasattr(ids, "dtype") and (values.dtype.kind not in "iuU" or promoted):
        # numpy types a list by promotion: ints past int64 next to negative ones become float64
        # (losing digits), ints next to strings become strings; so keep each element as it is
        # (a list of str of its own gives a unicode array, looked up vectorised)
        values = np.array(ids, dtype=object)
        if values.ndim != 1:
            values = values.reshape(-1)
    return values


def wrong_kind(sorted_ids: np.ndarray, ids: Any) -> list[Any]:
    """Up to three of ``ids`` whose type cannot be an id of the kind of ``sorted_ids``."""
    values = query_ids(ids).ravel()
    if id_kind(sorted_ids) == "str":
        if values.dtype.kind == "U":
            return []
        return [v for v in values.tolist() if not isinstance(v, (str, uuid.UUID))][:3]
    if values.dtype.kind in "iu":
        return []
    bad = []
    for value in values.tolist():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            bad.append(value)
        elif isinstance(value, float) and not value.is_integer():
            bad.append(value)
        if len(bad) == 3:
            break
    return bad


def check_kind(sorted_ids: np.ndarray, ids: Any, what: str) -> None:
    """Raise :class:`ConfigError` when ``ids`` are of another type than the model's ``what`` ids."""
    bad = wrong_kind(sorted_ids, ids)
    if bad:
        kind = describe_kind(sorted_ids)
        raise ConfigError(f"{what} ids of this model are {kind}; got {bad!r} "
                          f"({', '.join(sorted({type(v).__name__ for v in bad}))}); pass {kind}")


def lookup_ids(sorted_ids: np.ndarray, ids: Any) -> np.ndarray:
    """Positions of ``ids`` in the sorted id array ``sorted_ids``; -1 for ids not in it.

    ``sorted_ids`` is int64 or a numpy unicode array. An id that cannot be of that kind is
    in no catalogue and gets -1 without raising: for integer ids, an integer beyond the
    64-bit range, a non-integral or non-finite float, a string, None or a bool; for string
    ids, anything but a string or UUID. Integer, float and string arrays are looked up
    vectorised; only object arrays (mixed types, Python ints beyond 64 bits) go element by
    element.
    """
    values = query_ids(ids)
    if id_kind(sorted_ids) == "str":
        wanted, valid = _as_strings(values, _width(sorted_ids))
    else:
        wanted, valid = _as_int64(values)
    if len(sorted_ids) == 0:
        return np.full(values.shape, -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    found = valid & (sorted_ids[pos] == wanted)
    return np.where(found, pos, -1).astype(np.int64)


def _width(sorted_ids: np.ndarray) -> int | None:
    """Characters of the longest id a unicode id array can hold (None for an object array)."""
    return sorted_ids.dtype.itemsize // 4 if sorted_ids.dtype.kind == "U" else None


def _as_strings(values: np.ndarray, width: int | None) -> tuple[np.ndarray, np.ndarray | bool]:
    """``values`` as strings no wider than the catalogue's ``width``, and which of them can be ids.

    An id longer than the catalogue's longest is in no catalogue: it becomes ``""`` and
    invalid here, so that comparing never widens the catalogue to the query's width (numpy
    would copy the whole catalogue at that width, gigabytes for one long id).
    """
    if values.dtype.kind == "U":
        if width is None or values.dtype.itemsize // 4 <= width:
            return values, True
        valid = np.char.str_len(values) <= width
        return np.where(valid, values, "").astype(f"U{max(width, 1)}"), valid
    if values.dtype.kind != "O":
        return np.full(values.shape, "", dtype="U1"), np.zeros(values.shape, bool)
    flat = values.ravel()
    strings = [str(v) if isinstance(v, (str, uuid.UUID)) else None for v in flat]
    valid = np.array([s is not None and (width is None or len(s) <= width) for s in strings], bool)
    wanted = np.array([s if ok else "" for s, ok in zip(strings, valid)], dtype=str)
    return wanted.reshape(values.shape), valid.reshape(values.shape)


def _as_int64(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | bool]:
    kind = values.dtype.kind
    if kind == "i":
        return values.astype(np.int64, copy=False), True
    if kind == "u":
        valid = values <= INT64_MAX
        return np.where(valid, values, 0).astype(np.int64), valid
    if kind == "f":
        valid = np.isfinite(values) & (values == np.floor(values)) & (values >= INT64_MIN) & (values < 2.0 ** 63)
        return np.where(valid, values, 0).astype(np.int64), valid
    if kind == "O":
        flat = values.ravel()
        wanted, valid = np.zeros(flat.shape, np.int64), np.zeros(flat.shape, bool)
        for i, value in enumerate(flat):
            if isinstance(value, (bool, np.bool_)):
                continue
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            if isinstance(value, (int, np.integer)) and INT64_MIN <= value <= INT64_MAX:
                wanted[i], valid[i] = value, True
        return wanted.reshape(values.shape), valid.reshape(values.shape)
    # bools, strings, dates, ...: not integer ids
    return np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
