"""Business rules of one recommendation call: artists never to show, an allow-list, known artists.

The same three keywords reach every recommending call of the library and the service:
``exclude`` (artist ids never to recommend; for many users also a per-user frame), ``allow``
(only these artists may be recommended) and ``filter_known`` (whether artists the listener
knows stay out). The rules become a :class:`funnel.batch.Batch`'s ``known`` rows and
``blocked_items`` mask, which every candidate source honours, so a rule holds whatever the
sources are. :func:`check_n` checks a call's list length, :func:`user_rows` its user ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.data.ids import check_kind, id_range, lookup_ids, query_ids, shown_ids
from funnel.errors import ConfigError, UnknownUserError
from funnel.sparse import select_rows


def _artist_columns(artist_ids: np.ndarray, ids: Any, what: str) -> np.ndarray:
    """Catalogue columns of the artist ids ``ids`` (unknown ids dropped); type errors raise."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable) or isinstance(ids, dict):
        raise ConfigError(f"{what} must be a list of artist ids, got {ids!r}")
    values = list(ids)
    if not values:
        return np.empty(0, np.int64)
    check_kind(artist_ids, values, f"{what}: artist")
    columns = lookup_ids(artist_ids, values)
    return np.unique(columns[columns >= 0])


class Rules:
    """What one call may not recommend, resolved against a model's ids.

    Parameters
    ----------
    artist_ids : numpy.ndarray
        The model's sorted artist ids.
    exclude : list of artist ids or pandas.DataFrame, optional
        Artists never to recommend to anyone in the call, or a frame of ``user_id,
        artist_id`` rows: artists never to recommend to that user (only where ``user_ids``
        is given). Ids not in the catalogue are ignored.
    allow : list of artist ids, optional
        Only these artists may be recommended (e.g. a licensed subset). Ids not in the
        catalogue are ignored; an allow-list with none of the catalogue's artists is an error.
    filter_known : bool
        Keep artists the listener knows (played, or tagged when the model counts tags as
        known) out of the recommendations; ``False`` lets them come back.
    user_ids : numpy.ndarray, optional
        The sorted user ids that a per-user ``exclude`` frame is resolved against: the
        model's training users, or the listeners of a call scoring histories.

    Attributes
    ----------
    blocked_items : numpy.ndarray or None
        Boolean mask of the catalogue: artists nobody in the call may get.
    per_user : scipy.sparse.csr_matrix or None
        Users (of ``user_ids``) x artists, an entry for each artist that user may not get.
    """

    def __init__(self, artist_ids: np.ndarray, *, exclude: Any = None, allow: Any = None,
                 filter_known: bool = True, user_ids: np.ndarray | None = None) -> None:
        if not isinstance(filter_known, (bool, np.bool_)):
            raise ConfigError(f"filter_known={filter_known!r} must be True or False")
        self.filter_known = bool(filter_known)
        n_artists = len(artist_ids)
        blocked = np.zeros(n_artists, bool)
        self.per_user: sp.csr_matrix | None = None
        if isinstance(exclude, pd.DataFrame):
            self.per_user = self._per_user(exclude, artist_ids, user_ids)
        elif exclude is not None:
            blocked[_artist_columns(artist_ids, exclude, "exclude")] = True
        if allow is not None:
            allowed = _artist_columns(artist_ids, allow, "allow")
            if len(allowed) == 0:
                raise ConfigError("allow names no artist of this model's catalogue, so nothing could be "
                                  "recommended; check the ids (or leave allow out)")
            outside = np.ones(n_artists, bool)
            outside[allowed] = False
            blocked |= outside
        self.blocked_items = blocked if blocked.any() else None

    @staticmethod
    def _per_user(frame: pd.DataFrame, artist_ids: np.ndarray, user_ids: np.ndarray | None) -> sp.csr_matrix:
        if user_ids is None:
            raise ConfigError("a per-user exclude frame needs a call for several users (recommend, "
                              "recommend_all, recommend_for_histories); for one new listener pass a list of artist ids")
        missing = [c for c in ("user_id", "artist_id") if c not in frame.columns]
        if missing:
            raise ConfigError(f"the exclude frame lacks column(s) {missing}; it needs user_id, artist_id rows "
                              f"(it has {list(map(str, frame.columns))})")
        users, artists = frame["user_id"].to_numpy(), frame["artist_id"].to_numpy()
        if len(frame):
            check_kind(user_ids, users, "exclude frame: user")
            check_kind(artist_ids, artists, "exclude frame: artist")
        rows, cols = lookup_ids(user_ids, users), lookup_ids(artist_ids, artists)
        ok = (rows >= 0) & (cols >= 0)
        matrix = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])),
                               shape=(len(user_ids), len(artist_ids)))
        matrix.sum_duplicates()
        return matrix

    def known(self, rows: np.ndarray, history: sp.csr_matrix, tagged: sp.csr_matrix | None,
              rule_rows: np.ndarray | None = None) -> sp.csr_matrix:
        """The artists each of ``rows`` (internal user indices, -1 for new listeners) may not get.

        ``history`` holds the rows' plays and ``tagged`` the model's users x artists tagged
        pairs (or ``None``). ``rule_rows`` are the rows' indices into ``user_ids`` for the
        per-user exclusions, when those were resolved against other users than the model's
        (default: ``rows``).
        """
        known = history if self.filter_known else sp.csr_matrix(history.shape, dtype=np.float32)
        if self.filter_known and tagged is not None:
            known = known.maximum(select_rows(tagged, rows))
        if self.per_user is not None:
            known = known.maximum(select_rows(self.per_user, rows if rule_rows is None else rule_rows))
        return sp.csr_matrix(known)


def check_n(n: Any, n_artists: int) -> int:
    """Validate a top-n length against the catalogue size."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"n={n!r} must be an integer between 1 and {n_artists} (the catalogue size)")
    if not 1 <= n <= n_artists:
        raise ConfigError(f"n={n} is out of range; it must be between 1 and {n_artists} (the catalogue size)")
    return int(n)


def user_rows(user_ids: np.ndarray, wanted: Any, artist_side_only: bool = False) -> np.ndarray:
    """Rows of the model's sorted ``user_ids`` for the call's user ids ``wanted``.

    Raises :class:`UnknownUserError` for an id the model does not know (any id, on a model
    saved artist-side only), :class:`ConfigError` for ids of the wrong type or not a list.
    """
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
        raise ConfigError(f"users must be a list of user ids, got {wanted!r}")
    values = wanted if isinstance(wanted, np.ndarray) else list(wanted)
    check_kind(user_ids, values, "user")
    rows = lookup_ids(user_ids, values)
    unknown = rows < 0
    if artist_side_only and (unknown.any() or len(rows) == 0):
        raise UnknownUserError("this model was saved artist-side only (save(..., artist_side_only=True)) and "
                               "knows no user; score listeners from their histories with "
                               "recommend_for_histories or recommend_for_history")
    if unknown.any():
        missing = query_ids(values)[unknown]
        raise UnknownUserError(f"unknown user id(s) {shown_ids(missing.tolist())}: not in the training data "
                               f"({len(user_ids)} users, {id_range(user_ids)}); use recommend_for_history "
                               "for new users")
    return rows
