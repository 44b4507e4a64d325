"""The rules of a play (funnel.data.plays): one set of cases that every engine reading plays runs.

pandas (``Dataset.from_frames``, which ``recommend_for_histories`` and ``score --engine local``
use) and DuckDB (``read_events``) run them here; Spark (``funnel.spark.recommend`` and
``aggregate_events``) runs the same cases in tests/test_spark.py. Every engine must refuse each
bad input with the same rule's message, naming the same first bad row (by its row number where
the engine has one, else by its ids) and value, and accept each good one with the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from funnel import Dataset
from funnel.data.events import read_events
from funnel.data.plays import row_with
from funnel.errors import DataError

COLUMNS = ("user_id", "artist_id", "weight")


def plays(**columns) -> pd.DataFrame:
    """Four plays of artists of the test models' catalogue, with ``columns`` replaced."""
    base = {"user_id": [1, 1, 2, 3], "artist_id": [1, 5, 9, 13], "weight": [1.0, 2.0, 3.0, 4.0]}
    return pd.DataFrame({**base, **columns})


@dataclass(frozen=True)
class Bad:
    """An input every engine refuses: ``message`` (a regex) in every engine's error; ``row`` (the first
    bad row) and ``column`` name the row as the engines name it, None for refusals of a column's type."""

    id: str
    frame: pd.DataFrame
    message: str
    row: int | None = None
    column: str | None = None

    def where(self, numbered: bool) -> str:
        """How an engine names the first bad row: by number (pandas), else by its other cells."""
        if numbered:
            return f"row {self.row}"
        return row_with({c: self.frame[c].iloc[self.row] for c in COLUMNS if c != self.column})


WEIGHT = r"column 'weight' must be a finite number > 0 and <= 1e\+30 \(a play count\); 1 bad row\(s\), the first: "
WHOLE = r"column '{}' must hold integer ids \(whole numbers within 64 bits\); 1 bad row\(s\), the first: "
NULL_ID = r"column '{}' has 1 empty \(null\) id\(s\), first at "
BAD = [
    Bad("NaN weight", plays(weight=[1.0, 2.0, np.nan, 4.0]), WEIGHT + ".* has an empty value \\(null or NaN\\)", 2,
        "weight"),
    Bad("null text weight", plays(weight=["1", "2", None, "4"]), WEIGHT + ".* has an empty value", 2, "weight"),
    Bad("infinite weight", plays(weight=[1.0, np.inf, 3.0, 4.0]), WEIGHT + ".* has inf;", 1, "weight"),
    Bad("zero weight", plays(weight=[1.0, 2.0, 3.0, 0.0]), WEIGHT + ".* has 0.0;", 3, "weight"),
    Bad("negative integer weight", plays(weight=[1, -4, 3, 2]), WEIGHT + ".* has -4;", 1, "weight"),
    Bad("weight above 1e30", plays(weight=[1e31, 2.0, 3.0, 4.0]), WEIGHT + ".* has 1e\\+31;", 0, "weight"),
    Bad("text weight that is no number", plays(weight=["1", "2", "abc", "4"]), WEIGHT + ".* has 'abc';", 2, "weight"),
    Bad("text weights only some engines read as numbers", plays(weight=["1", "5d", "1_000", "4"]),
        WEIGHT.replace("1 bad", "2 bad") + ".* has '5d';", 1, "weight"),
    Bad("two bad weights", plays(weight=[0.0, 2.0, -1.0, 4.0]), WEIGHT.replace("1 bad", "2 bad") + ".* has 0.0;",
        0, "weight"),
    Bad("null user", plays(user_id=[1, None, 2, 3]), NULL_ID.format("user_id"), 1, "user_id"),
    Bad("null string user", plays(user_id=["a", None, "b", "c"]), NULL_ID.format("user_id"), 1, "user_id"),
    Bad("null artist", plays(artist_id=[1.0, 5.0, None, 13.0]), NULL_ID.format("artist_id"), 2, "artist_id"),
    Bad("fractional user id", plays(user_id=[1.0, 3.5, 2.0, 3.0]), WHOLE.format("user_id") + ".* has 3.5;", 1,
        "user_id"),
    Bad("user id beyond 64 bits", plays(user_id=[1.0, 1.0, 1e20, 3.0]), WHOLE.format("user_id") + ".* has 1e\\+20;",
        2, "user_id"),
    Bad("fractional artist id", plays(artist_id=[1.0, 5.0, 9.5, 13.0]), WHOLE.format("artist_id") + ".* has 9.5;",
        2, "artist_id"),
    Bad("null user and a bad weight: the user is reported first", plays(user_id=[1, 2, None, 3],
                                                                        weight=[0.0, 2.0, 3.0, 4.0]),
        NULL_ID.format("user_id"), 2, "user_id"),
    Bad("boolean user ids", plays(user_id=[True, True, False, False]), "ids must be integers or strings"),
    Bad("boolean weights", plays(weight=[True, True, False, True]), "weights must be numbers"),
]


@dataclass(frozen=True)
class Good:
    """An input every engine accepts, aggregating to the same interactions."""

    id: str
    frame: pd.DataFrame


GOOD = [
    Good("whole float user ids", plays(user_id=[1.0, 1.0, 2.0, 3.0])),
    Good("whole float artist ids", plays(artist_id=[1.0, 5.0, 9.0, 13.0])),
    Good("text weights", plays(weight=[" 1", "2.5", "1e1", "+4"])),
    Good("integer weights", plays(weight=[1, 2, 3, 4])),
    Good("weights at the bounds", plays(weight=[1e30, 1e-30, 3.0, 4.0])),
    Good("negative ids", plays(user_id=[-1, -1, -2, -3])),
    Good("string user ids and a repeated pair", plays(user_id=["a", "a", "b", "b"], artist_id=[1, 1, 9, 13])),
]


def interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """The interactions the local engine makes of ``frame``: what every engine must aggregate it to."""
    return Dataset.from_frames(frame).interactions


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_pandas_refuses(case):
    with pytest.raises(DataError, match=case.message) as error:
        Dataset.from_frames(case.frame)
    if case.row is not None:
        assert f"{case.where(numbered=True)} has" in str(error.value) or \
            f"first at {case.where(numbered=True)};" in str(error.value)


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_duckdb_refuses(case):
    with pytest.raises(DataError, match=case.message) as error:
        read_events(case.frame, weight="weight")
    if case.row is not None:
        assert case.where(numbered=False) in str(error.value)


@pytest.mark.parametrize("case", GOOD, ids=[case.id for case in GOOD])
def test_every_engine_accepts_alike(case):
    want = interactions(case.frame)
    assert len(want) == len(case.frame.drop_duplicates(["user_id", "artist_id"]))
    assert_same_interactions(read_events(case.frame, weight="weight"), want)


def assert_same_interactions(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal frames, ids of the same kind (integers, or strings: pandas' str dtype or objects)."""
    assert [dtype.kind for dtype in got.dtypes] == [dtype.kind for dtype in want.dtypes]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_empty_input_is_named_empty():
    empty = plays().iloc[:0]
    with pytest.raises(DataError, match=r"^interactions are empty: no rows; at least one"):
        Dataset.from_frames(empty)
    with pytest.raises(DataError, match=r"^the DataFrame is empty: it has no rows; pass a source with plays"):
        read_events(empty, weight="weight")
