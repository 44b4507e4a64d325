"""The in-memory dataset every stage of the funnel is fitted on."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.errors import DataError

logger = logging.getLogger("funnel")

INTERACTION_COLUMNS = ("user_id", "artist_id", "weight")
ARTIST_COLUMNS = ("artist_id", "name")
TAG_COLUMNS = ("tag_id", "tag")
TAG_ASSIGNMENT_COLUMNS = ("user_id", "artist_id", "tag_id", "timestamp")
FRIEND_COLUMNS = ("user_id", "friend_id")
MAX_WEIGHT = 1e30  # play counts are stored as float32


def _where(source: str | None, row: int) -> str:
    """Describe a row: the file line when the frame was read from a file."""
    if source:
        return f"{source}, line {row + 2}"  # +1 for the header, +1 for 1-based lines
    return f"row {row}"


def _show(value: object) -> str:
    """repr of a cell without numpy's type wrapper (``2.5``, not ``np.float64(2.5)``)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _require_frame(frame: object, name: str, columns: Iterable[str], source: str | None) -> pd.DataFrame:
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


def _integer_column(frame: pd.DataFrame, column: str, name: str, source: str | None) -> np.ndarray:
    """Return ``frame[column]`` as int64, or raise naming the first non-integer row."""
    values = frame[column]
    if not pd.api.types.is_integer_dtype(values) and values.dtype == object:
        exact = pd.to_numeric(values, errors="coerce")  # keeps Python ints exact when all are ints
        if pd.api.types.is_integer_dtype(exact):
            values = exact
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        big = values.to_numpy() > np.iinfo(np.int64).max if values.dtype == np.uint64 else np.zeros(len(values), bool)
        if big.any():
            row = int(np.flatnonzero(big)[0])
            raise DataError(f"{name} column {column!r} holds an id beyond the 64-bit range; "
                            f"{_where(source, row)} has {_show(values.iloc[row])}")
        return values.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numeric)
    bad |= np.where(bad, False, numeric != np.round(numeric))
    huge = np.abs(np.nan_to_num(numeric)) > 2**62
    bad |= huge
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        why = ", beyond the 64-bit range" if huge[row] else ""
        raise DataError(
            f"{name} column {column!r} must hold integer ids; {_where(source, row)} has "
            f"{_show(values.iloc[row])}{why}; correct or delete that row"
        )
    return numeric.astype(np.int64)


def _nanosecond_stamps(stamps: pd.Series, source: str | None) -> np.ndarray:
    try:
        return stamps.astype("datetime64[ns]").to_numpy()
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as exc:
        raise DataError(f"tag_assignments column 'timestamp'{f' ({source})' if source else ''} holds a date "
                        f"outside 1677-2262, which cannot be represented: {exc}") from exc


def _check_weights(frame: pd.DataFrame, source: str | None) -> np.ndarray:
    values = frame["weight"]
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numeric) | (np.nan_to_num(numeric, nan=0.0) <= 0) | (np.abs(numeric) > MAX_WEIGHT)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"interactions column 'weight' must be a finite number > 0 and <= {MAX_WEIGHT:.0e} (a play count); "
            f"{_where(source, row)} has {_show(values.iloc[row])}; correct or delete that row"
        )
    return numeric


class Dataset:
    """Listening data plus optional artist names, tags, tag assignments and friendships.

    Build one with :func:`funnel.load_lastfm` or :meth:`from_frames`. The catalogue is the
    artists frame when given, otherwise every artist seen in interactions or tag assignments.

    Attributes
    ----------
    interactions : pandas.DataFrame
        ``user_id, artist_id, weight`` with duplicate pairs summed, sorted by user and artist.
    artists : pandas.DataFrame
        ``artist_id, name`` for the whole catalogue, sorted by id (names may be empty).
    tags, tag_assignments, friends : pandas.DataFrame or None
        As given (validated); tag assignments naming artists outside the catalogue dropped.
    user_ids, artist_ids : numpy.ndarray
        Sorted external ids; the position of an id is its internal index.
    """

    def __init__(
        self,
        interactions: pd.DataFrame,
        artists: pd.DataFrame,
        tags: pd.DataFrame | None,
        tag_assignments: pd.DataFrame | None,
        friends: pd.DataFrame | None,
    ) -> None:
        self.interactions = interactions
        self.artists = artists
        self.tags = tags
        self.tag_assignments = tag_assignments
        self.friends = friends
        self.user_ids = np.unique(interactions["user_id"].to_numpy())
        self.artist_ids = artists["artist_id"].to_numpy()
        self.artist_names = artists["name"].to_numpy(dtype=str)
        self._matrix: sp.csr_matrix | None = None
        self._fingerprint: str | None = None

    # construction ---------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        interactions: pd.DataFrame,
        artists: pd.DataFrame | None = None,
        tags: pd.DataFrame | None = None,
        tag_assignments: pd.DataFrame | None = None,
        friends: pd.DataFrame | None = None,
        *,
        sources: dict[str, str] | None = None,
    ) -> Dataset:
        """Build a dataset from pandas frames, validating every column.

        Parameters
        ----------
        interactions : pandas.DataFrame
            Columns ``user_id, artist_id, weight`` (weight = play count, finite, > 0).
            Duplicate pairs are summed. Required and non-empty.
        artists : pandas.DataFrame, optional
            Columns ``artist_id, name``. When given it defines the catalogue.
        tags : pandas.DataFrame, optional
            Columns ``tag_id, tag``.
        tag_assignments : pandas.DataFrame, optional
            Columns ``user_id, artist_id, tag_id, timestamp`` (datetime64). Rows naming an
            artist outside the catalogue are dropped with a warning.
        friends : pandas.DataFrame, optional
            Columns ``user_id, friend_id``.
        sources : dict, optional
            File each frame was read from, used to name file and line in errors.

        Raises
        ------
        funnel.errors.DataError
            A frame misses a column, an id is not an integer, a weight is not a finite
            positive number, or interactions are empty.
        """
        sources = sources or {}
        src = sources.get("interactions")
        inter = _require_frame(interactions, "interactions", INTERACTION_COLUMNS, src)
        if inter.empty:
            raise DataError(
                "interactions are empty" + (f" ({src})" if src else "")
                + "; at least one (user_id, artist_id, weight) row is needed"
            )
        users = _integer_column(inter, "user_id", "interactions", src)
        items = _integer_column(inter, "artist_id", "interactions", src)
        weights = _check_weights(inter, src)
        inter = (
            pd.DataFrame({"user_id": users, "artist_id": items, "weight": weights})
            # duplicates are added in one fixed order, so row order cannot change their sum's
            # last bits (and with it the data fingerprint)
            .sort_values(["user_id", "artist_id", "weight"], kind="stable")
            .groupby(["user_id", "artist_id"], as_index=False, sort=True)["weight"]
            .sum()
        )
        if len(inter) < len(users):
            logger.info("summed %d duplicate (user, artist) interaction rows", len(users) - len(inter))

        tag_frame = None
        if tags is not None:
            src = sources.get("tags")
            tag_frame = _require_frame(tags, "tags", TAG_COLUMNS, src)
            tag_frame = pd.DataFrame(
                {
                    "tag_id": _integer_column(tag_frame, "tag_id", "tags", src),
                    "tag": tag_frame["tag"].astype(str).str.strip().to_numpy(dtype=object),
                }
            ).drop_duplicates("tag_id")

        assign = None
        if tag_assignments is not None:
            src = sources.get("tag_assignments")
            raw = _require_frame(tag_assignments, "tag_assignments", TAG_ASSIGNMENT_COLUMNS, src)
            stamps = raw["timestamp"]
            if not pd.api.types.is_datetime64_any_dtype(stamps):
                raise DataError(
                    "tag_assignments column 'timestamp' must be datetime64 "
                    f"(got {stamps.dtype}); convert it with pandas.to_datetime"
                )
            if getattr(stamps.dt, "tz", None) is not None:
                stamps = stamps.dt.tz_convert(None)
            assign = pd.DataFrame(
                {
                    "user_id": _integer_column(raw, "user_id", "tag_assignments", src),
                    "artist_id": _integer_column(raw, "artist_id", "tag_assignments", src),
                    "tag_id": _integer_column(raw, "tag_id", "tag_assignments", src),
                    "timestamp": _nanosecond_stamps(stamps, src),
                }
            )

        if friends is not None:
            src = sources.get("friends")
            raw = _require_frame(friends, "friends", FRIEND_COLUMNS, src)
            friends = pd.DataFrame(
                {
                    "user_id": _integer_column(raw, "user_id", "friends", src),
                    "friend_id": _integer_column(raw, "friend_id", "friends", src),
                }
            ).drop_duplicates()

        if artists is not None:
            src = sources.get("artists")
            raw = _require_frame(artists, "artists", ARTIST_COLUMNS, src)
            art = pd.DataFrame(
                {
                    "artist_id": _integer_column(raw, "artist_id", "artists", src),
                    "name": raw["name"].fillna("").astype(str).to_numpy(dtype=object),
                }
            )
            dup = art["artist_id"].duplicated()
            if dup.any():
                row = int(np.flatnonzero(dup.to_numpy())[0])
                raise DataError(
                    f"artists column 'artist_id' repeats id {art['artist_id'].iloc[row]} "
                    f"at {_where(src, row)}; each artist must appear once"
                )
            unknown = ~np.isin(items, art["artist_id"].to_numpy())  # rows in input order
            if unknown.any():
                row = int(np.flatnonzero(unknown)[0])
                raise DataError(
                    f"interactions name {int(unknown.sum())} row(s) of artist ids missing from "
                    f"the artists frame{f' ({src})' if src else ''} (first: artist_id {items[row]} at "
                    f"{_where(sources.get('interactions'), row)}); add those artists or drop the rows"
                )
        else:
            ids = inter["artist_id"].to_numpy()
            if assign is not None:
                ids = np.concatenate([ids, assign["artist_id"].to_numpy()])
            art = pd.DataFrame({"artist_id": np.unique(ids)})
            art["name"] = ""
        art = art.sort_values("artist_id", kind="stable").reset_index(drop=True)

        if assign is not None:
            known = np.isin(assign["artist_id"].to_numpy(), art["artist_id"].to_numpy())
            if not known.all():
                logger.warning(
                    "dropped %d tag assignment row(s) naming %d artist id(s) absent from the "
                    "artists file", int((~known).sum()),
                    len(np.unique(assign["artist_id"].to_numpy()[~known])),
                )
                assign = assign[known].reset_index(drop=True)
        return cls(inter, art, tag_frame, assign, friends)

    def with_interactions(
        self, interactions: pd.DataFrame, tag_assignments: pd.DataFrame | None
    ) -> Dataset:
        """A dataset with the same catalogue, tags and friends but other interactions.

        Used by splits; ``interactions`` must already be clean (as in :attr:`interactions`).
        """
        if interactions.empty:
            raise DataError("a split left no training interactions; use more data")
        inter = interactions.sort_values(["user_id", "artist_id"]).reset_index(drop=True)
        return Dataset(inter, self.artists, self.tags, tag_assignments, self.friends)

    # views ------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Number of users with at least one interaction."""
        return len(self.user_ids)

    @property
    def n_artists(self) -> int:
        """Number of artists in the catalogue."""
        return len(self.artist_ids)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Internal indices of ``user_ids``; -1 for ids not in the data."""
        return lookup_ids(self.user_ids, user_ids)

    def artist_index(self, artist_ids: np.ndarray) -> np.ndarray:
        """Internal indices of ``artist_ids``; -1 for ids not in the catalogue."""
        return lookup_ids(self.artist_ids, artist_ids)

    @property
    def matrix(self) -> sp.csr_matrix:
        """Users x artists CSR matrix of play counts (float32), by internal index."""
        if self._matrix is None:
            rows = self.user_index(self.interactions["user_id"].to_numpy())
            cols = self.artist_index(self.interactions["artist_id"].to_numpy())
            matrix = sp.csr_matrix(
                (self.interactions["weight"].to_numpy(dtype=np.float32), (rows, cols)),
                shape=(self.n_users, self.n_artists),
            )
            matrix.sort_indices()
            self._matrix = matrix  # published complete: fits in other threads may read it
        return self._matrix

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the interactions, catalogue and tag assignments."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for col in INTERACTION_COLUMNS:
                h.update(np.ascontiguousarray(self.interactions[col].to_numpy()).tobytes())
            h.update(np.ascontiguousarray(self.artist_ids).tobytes())
            h.update("\x00".join(self.artist_names.tolist()).encode("utf-8", "replace"))
            if self.tag_assignments is not None:
                for col in TAG_ASSIGNMENT_COLUMNS:
                    h.update(np.ascontiguousarray(self.tag_assignments[col].to_numpy()).tobytes())
            if self.tags is not None:
                h.update(np.ascontiguousarray(self.tags["tag_id"].to_numpy()).tobytes())
                h.update("\x00".join(self.tags["tag"].tolist()).encode("utf-8", "replace"))
            if self.friends is not None:
                for col in FRIEND_COLUMNS:
                    h.update(np.ascontiguousarray(self.friends[col].to_numpy()).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        parts = [f"{self.n_users} users", f"{self.n_artists} artists",
                 f"{len(self.interactions)} interactions"]
        if self.tag_assignments is not None:
            parts.append(f"{len(self.tag_assignments)} tag assignments")
        if self.friends is not None:
            parts.append(f"{len(self.friends)} friendships")
        return f"Dataset({', '.join(parts)})"


def lookup_ids(sorted_ids: np.ndarray, ids: object) -> np.ndarray:
    """Positions of ``ids`` in the sorted int64 array ``sorted_ids``; -1 for ids not in it.

    An id that cannot be an int64 is in no catalogue and gets -1 without raising: an integer
    beyond the 64-bit range, a non-integral or non-finite float, a string, None, a bool array
    (a list numpy types as int64, ``[True, 2]``, counts True as 1).
    Integer and float arrays are checked vectorised; only object arrays (Python ints beyond
    64 bits, mixed types) and lists numpy cannot type as integers go element by element.
    """
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    values = np.asarray(ids)
    if not hasattr(ids, "dtype") and values.dtype.kind not in "iu":
        # numpy types a list by promotion: ints past int64 next to negative ones become float64
        # (losing digits), ints next to strings become strings; so look at each element instead
        values = np.array(ids, dtype=object)
    kind = values.dtype.kind
    valid: np.ndarray | bool = True
    if kind == "i":
        wanted = values.astype(np.int64, copy=False)
    elif kind == "u":
        valid = values <= hi
        wanted = np.where(valid, values, 0).astype(np.int64)
    elif kind == "f":
        valid = np.isfinite(values) & (values == np.floor(values)) & (values >= lo) & (values < 2.0 ** 63)
        wanted = np.where(valid, values, 0).astype(np.int64)
    elif kind == "O":
        flat = values.ravel()
        wanted, valid = np.zeros(flat.shape, np.int64), np.zeros(flat.shape, bool)
        for i, value in enumerate(flat):
            if isinstance(value, (bool, np.bool_)):
                continue
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            if isinstance(value, (int, np.integer)) and lo <= value <= hi:
                wanted[i], valid[i] = value, True
        wanted, valid = wanted.reshape(values.shape), valid.reshape(values.shape)
    else:  # bools, strings, dates, ...: not ids
        wanted, valid = np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
    if len(sorted_ids) == 0:
        return np.full(values.shape, -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    found = valid & (sorted_ids[pos] == wanted)
    return np.where(found, pos, -1).astype(np.int64)
