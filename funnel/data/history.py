"""Listeners' histories as CSR rows over the catalogue: one or many given at scoring time, and what
training listeners tagged beyond what they played."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.data.dataset import MAX_WEIGHT, Dataset
from funnel.data.ids import check_kind, id_kind, id_range, lookup_ids, query_ids, shown_ids
from funnel.errors import ConfigError, DataError

logger = logging.getLogger("funnel")

History = Mapping[int, float] | Mapping[str, float] | Iterable[int] | Iterable[str]


def parse_history(history: History, artist_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """One ``(1, len(artist_ids))`` CSR row of plays, and the history's unknown artist ids.

    Parameters
    ----------
    history : list of ids or mapping of id to float
        Artist ids the listener played (a repeated id counts once more), or id -> plays;
        ids of the catalogue's kind (integers or strings).
    artist_ids : numpy.ndarray
        The sorted catalogue ids.

    Raises
    ------
    DataError
        The history is empty, not ids, has non-positive or non-finite plays, or holds no
        catalogue artist at all.
    """
    if isinstance(history, (Mapping, pd.Series)):
        pairs = list(history.items())
        ids = _artist_ids([key for key, _ in pairs], artist_ids)
        plays = pd.to_numeric(pd.Series([value for _, value in pairs], dtype=object), errors="coerce")
        plays = plays.to_numpy(dtype=np.float64, na_value=np.nan)
    elif isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
        raise DataError(f"history must be a list of artist ids or a mapping id -> plays, got {history!r}")
    else:
        ids = _artist_ids(list(history), artist_ids)
        plays = np.ones(len(ids))
    if len(ids) == 0:
        raise DataError("history is empty; give at least one known artist id")
    fine = np.isfinite(plays) & (plays > 0) & (plays <= MAX_WEIGHT)
    if not fine.all():
        bad = plays[~fine][:3].tolist()
        raise DataError(f"history play counts must be finite numbers > 0 and <= {MAX_WEIGHT:.0e} "
                        f"(stored as float32), got {bad}")
    cols = lookup_ids(artist_ids, ids)
    known = cols >= 0
    if not known.any():
        raise DataError(f"none of the history's artist ids {shown_ids(ids.tolist())} is in the catalogue "
                        f"({len(artist_ids)} artists, {id_range(artist_ids)})")
    row = sp.csr_matrix((plays[known], (np.zeros(int(known.sum()), np.int64), cols[known])),
                        shape=(1, len(artist_ids)), dtype=np.float32)
    row.sum_duplicates()
    return row, np.unique(ids[~known])


def _artist_ids(values: list, artist_ids: np.ndarray) -> np.ndarray:
    """The history's artist ids as the catalogue's kind; ids of another type are refused."""
    if id_kind(artist_ids) == "str":
        try:
            check_kind(artist_ids, values, "artist")
        except ConfigError as exc:  # a history is data: its errors are DataErrors, as for integer ids
            raise DataError(f"history {exc}") from exc
        return query_ids([str(v) for v in values]) if values else np.empty(0, dtype="U1")
    bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
    if bad:
        raise DataError(f"history artist ids must be integers (the ids of this model are), got {bad[:3]!r}")
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError as exc:
        raise DataError(f"history artist ids must fit in 64 bits, got {max(values, key=abs)}") from exc


def parse_histories(histories: pd.DataFrame, artist_ids: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """Many listeners' ``user_id, artist_id[, weight]`` rows as their ids and a listeners x catalogue matrix.

    The rows are validated and summed as interactions are (the messages name them so);
    artist ids outside the catalogue ``artist_ids`` are dropped with a warning, and a
    listener left with none keeps an empty row (warned about).

    Raises
    ------
    DataError
        Not a frame, a bad row (see :meth:`Dataset.from_frames`), or no listener with a
        catalogue artist.
    ConfigError
        The artist ids are of another type than the catalogue's.
    """
    if not isinstance(histories, pd.DataFrame):
        raise DataError(f"histories must be a pandas DataFrame of user_id, artist_id[, weight] rows, "
                        f"got {type(histories).__name__}")
    frame = histories if "weight" in histories.columns else histories.assign(weight=1.0)
    data = Dataset.from_frames(frame[[c for c in ("user_id", "artist_id", "weight") if c in frame.columns]])
    check_kind(artist_ids, data.artist_ids[:1], "histories: artist")
    columns = lookup_ids(artist_ids, data.artist_ids)
    if (columns < 0).any():
        logger.warning("ignoring %d artist id(s) of the histories outside the catalogue: %s",
                       int((columns < 0).sum()), data.artist_ids[columns < 0][:5].tolist())
    plays = data.matrix.tocoo()
    inside = columns[plays.col] >= 0
    matrix = sp.csr_matrix((plays.data[inside], (plays.row[inside], columns[plays.col[inside]])),
                           shape=(data.n_users, len(artist_ids)), dtype=np.float32)
    listening = int((np.diff(matrix.indptr) > 0).sum())
    if listening == 0:
        raise DataError("no listener of the histories has an artist of the catalogue; check the artist ids")
    if listening < data.n_users:
        logger.warning("skipping %d listener(s) whose histories hold no catalogue artist", data.n_users - listening)
    return data.user_ids, matrix


def not_played(tagged: sp.csr_matrix, plays: sp.csr_matrix) -> sp.csr_matrix:
    """The entries of ``tagged`` (users x artists, 1 where tagged) where ``plays`` has none."""
    played = plays.copy()
    played.data[:] = 1.0
    only = sp.csr_matrix(tagged - tagged.multiply(played))
    only.eliminate_zeros()
    return only


def tagged_only(dataset: Dataset) -> sp.csr_matrix | None:
    """Users x artists tagged but not played by each user, or ``None`` when there are none."""
    only = not_played(dataset.tagged_matrix(), dataset.matrix)
    return only if only.nnz else None
