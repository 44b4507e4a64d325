"""The in-memory dataset every stage of the funnel is fitted on."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.data.ids import INT64_MAX, as_id_array, describe_kind, lookup_ids, string_kind
from funnel.data.plays import MAX_WEIGHT as MAX_WEIGHT  # re-exported: other modules import it from here
from funnel.data.plays import MISSING_ID, PANDAS, WEIGHT, WHOLE_ID, Rule, empty_interactions, pandas_numbers, violation
from funnel.errors import DataError

logger = logging.getLogger("funnel")

INTERACTION_COLUMNS = ("user_id", "artist_id", "weight")
ARTIST_COLUMNS = ("artist_id", "name")
TAG_COLUMNS = ("tag_id", "tag")
TAG_ASSIGNMENT_COLUMNS = ("user_id", "artist_id", "tag_id", "timestamp")
FRIEND_COLUMNS = ("user_id", "friend_id")
ARTIST_TAG_COLUMNS = ("artist_id", "tag")
LISTEN_COLUMNS = ("first_listen", "last_listen")
FUTURE_SLACK = np.timedelta64(1, "D")  # clocks of the machines that logged plays may run a little ahead


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
        big = values.to_numpy() > INT64_MAX if values.dtype == np.uint64 else np.zeros(len(values), bool)
        if big.any():
            row = int(np.flatnonzero(big)[0])
            raise DataError(f"{name} column {column!r} holds an id beyond the 64-bit range; "
                            f"{_where(source, row)} has {_show(values.iloc[row])}")
        return values.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # text that is no number ('abc' in a HetRec file) is NaN here: not an integer id, whatever the rule says of nulls
    _require(WHOLE_ID, numeric, frame[column], name, column, source, missing_ok=False)
    return numeric.astype(np.int64)


def _id_column(frame: pd.DataFrame, column: str, name: str, source: str | None) -> np.ndarray:
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
        return _integer_column(frame, column, name, source)
    kind = string_kind(values)
    if kind == "str":
        return values.to_numpy(dtype=str)
    if kind == "uuid":
        return values.astype(str).to_numpy(dtype=str)
    if kind in ("int", "float", None):
        return _integer_column(frame, column, name, source)
    types = values.map(lambda v: type(v).__name__).to_numpy(dtype=object)
    first = types[0]
    other = np.flatnonzero(types != first)
    if len(other) == 0 or first not in ("str", "int", "UUID"):
        row = int(np.flatnonzero(~np.isin(types, ["str", "int", "UUID"]))[0])
        raise DataError(f"{name} column {column!r} must hold integer or string ids; {_where(source, row)} has "
                        f"{types[row]} {_show(values.iloc[row])}; convert the column to one of those types")
    row = int(other[0])
    raise DataError(
        f"{name} column {column!r} holds ids of mixed types: {_where(source, 0)} has {first} "
        f"{_show(values.iloc[0])}, {_where(source, row)} has {types[row]} {_show(values.iloc[row])}; "
        f"use one type for every id, e.g. frame[{column!r}].astype(str)")


def _same_kind(ids: dict[str, np.ndarray], what: str) -> None:
    """Raise when the id columns naming the same thing (users, artists) hold different kinds."""
    kinds = {where: describe_kind(values) for where, values in ids.items() if len(values)}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{where} holds {kind}" for where, kind in kinds.items())
        raise DataError(f"{what} ids must be of one type in every frame, but {listed}; "
                        "convert them to one type (e.g. .astype(str)) before building the dataset")


def _nanosecond_stamps(stamps: pd.Series, source: str | None, name: str = "tag_assignments",
                       column: str = "timestamp") -> np.ndarray:
    try:
        return stamps.astype("datetime64[ns]").to_numpy()
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as exc:
        raise DataError(f"{name} column {column!r}{f' ({source})' if source else ''} holds a date "
                        f"outside 1677-2262, which cannot be represented: {exc}") from exc


def _label_tags(labels: pd.DataFrame, tags: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def _listen_times(frame: pd.DataFrame, column: str, source: str | None) -> np.ndarray:
    """A listen-time column as datetime64[ns] (UTC, tz-naive); no nulls, none in the future."""
    stamps = frame[column]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise DataError(f"interactions column {column!r} must be datetime64 (got {stamps.dtype}); "
                        "convert it with pandas.to_datetime(..., utc=True)")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert(None)
    values = _nanosecond_stamps(stamps, source, "interactions", column)
    missing = np.isnat(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"interactions column {column!r} has {int(missing.sum())} empty time(s), first at "
                        f"{_where(source, row)}; fill them or drop the listen-time columns")
    now = np.datetime64(pd.Timestamp.now(tz="UTC").tz_convert(None).to_datetime64(), "ns")
    future = values > now + FUTURE_SLACK
    if future.any():
        row = int(np.flatnonzero(future)[0])
        raise DataError(f"interactions column {column!r} has {int(future.sum())} time(s) in the future, first "
                        f"{values[row]} at {_where(source, row)}; fix the clock or the time zone of those rows")
    return values


def _check_weights(frame: pd.DataFrame, source: str | None) -> np.ndarray:
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
        raise violation(rule, what=name, column=column, count=len(rows), where=_where(source, int(rows[0])),
                        value=shown.iloc[rows[0]])


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
        artist_tags: pd.DataFrame | None = None,
    ) -> None:
        self.interactions = interactions
        self.artists = artists
        self.tags = tags
        self.tag_assignments = tag_assignments
        self.friends = friends
        self.artist_tags = artist_tags
        self.user_ids = np.unique(as_id_array(interactions["user_id"].to_numpy()))
        self.artist_ids = as_id_array(artists["artist_id"].to_numpy())
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
        artist_tags: pd.DataFrame | None = None,
        sources: dict[str, str] | None = None,
    ) -> Dataset:
        """Build a dataset from pandas frames, validating every column.

        User and artist ids may be integers or strings (UUIDs become their strings), one
        kind per thing across all frames; every output speaks the same ids.

        Parameters
        ----------
        interactions : pandas.DataFrame
            Columns ``user_id, artist_id, weight`` (weight = play count, finite, > 0 and
            <= 1e30, or text that reads as such a number), and
            optionally ``first_listen, last_listen`` (datetime64, as :func:`funnel.read_events`
            returns them). Duplicate pairs are summed. Required and non-empty.
        artists : pandas.DataFrame, optional
            Columns ``artist_id, name``. When given it defines the catalogue.
        tags : pandas.DataFrame, optional
            Columns ``tag_id, tag`` (integer tag ids): the text of the tag assignments' tags.
        tag_assignments : pandas.DataFrame, optional
            Columns ``user_id, artist_id, tag_id, timestamp`` (datetime64): users tagging
            artists. Rows naming an artist outside the catalogue are dropped with a warning.
        friends : pandas.DataFrame, optional
            Columns ``user_id, friend_id``.
        artist_tags : pandas.DataFrame, optional
            Columns ``artist_id, tag``: artist-level metadata with no user and no time
            (genres, labels, countries). Each row counts as one tag assignment of that
            text in the artist embedding.
        sources : dict, optional
            File each frame was read from, used to name file and line in errors.

        Raises
        ------
        funnel.errors.DataError
            A frame misses a column, an id is null, of mixed types or a float that is not
            whole, a weight is not a finite number > 0 and <= 1e30, listen times do not
            parse or lie in the future, or interactions are empty. The rules of a play are
            those of :data:`funnel.data.plays.RULES`, which DuckDB and Spark apply too; the
            message names the first bad row.
        """
        sources = sources or {}
        src = sources.get("interactions")
        inter = _require_frame(interactions, "interactions", INTERACTION_COLUMNS, src)
        if inter.empty:
            raise empty_interactions(src)
        users = _id_column(inter, "user_id", "interactions", src)
        items = _id_column(inter, "artist_id", "interactions", src)
        weights = _check_weights(inter, src)
        columns: dict[str, np.ndarray] = {"user_id": users, "artist_id": items, "weight": weights}
        timed = [c for c in LISTEN_COLUMNS if c in inter.columns]
        if timed and len(timed) < len(LISTEN_COLUMNS):
            raise DataError(f"interactions have {timed[0]!r} but not "
                            f"{[c for c in LISTEN_COLUMNS if c not in timed]}; give both listen times or neither")
        for column in timed:
            columns[column] = _listen_times(inter, column, src)
        if timed and (columns["first_listen"] > columns["last_listen"]).any():
            row = int(np.flatnonzero(columns["first_listen"] > columns["last_listen"])[0])
            raise DataError(f"interactions {_where(src, row)} has first_listen after last_listen; swap or fix them")
        grouped = (
            pd.DataFrame(columns)
            # duplicates are added in one fixed order, so row order cannot change their sum's
            # last bits (and with it the data fingerprint)
            .sort_values(["user_id", "artist_id", "weight"], kind="stable")
            .groupby(["user_id", "artist_id"], as_index=False, sort=True)
        )
        inter = grouped.agg(**{"weight": ("weight", "sum"),
                               **({"first_listen": ("first_listen", "min"), "last_listen": ("last_listen", "max")}
                                  if timed else {})})
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
        user_kinds = {"interactions user_id": users}
        artist_kinds = {"interactions artist_id": items}
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
                    "user_id": _id_column(raw, "user_id", "tag_assignments", src),
                    "artist_id": _id_column(raw, "artist_id", "tag_assignments", src),
                    "tag_id": _integer_column(raw, "tag_id", "tag_assignments", src),
                    "timestamp": _nanosecond_stamps(stamps, src),
                }
            )
            user_kinds["tag_assignments user_id"] = assign["user_id"].to_numpy()
            artist_kinds["tag_assignments artist_id"] = assign["artist_id"].to_numpy()

        if friends is not None:
            src = sources.get("friends")
            raw = _require_frame(friends, "friends", FRIEND_COLUMNS, src)
            friends = pd.DataFrame(
                {
                    "user_id": _id_column(raw, "user_id", "friends", src),
                    "friend_id": _id_column(raw, "friend_id", "friends", src),
                }
            ).drop_duplicates()
            user_kinds["friends user_id"] = friends["user_id"].to_numpy()
            user_kinds["friends friend_id"] = friends["friend_id"].to_numpy()

        labels = None
        if artist_tags is not None:
            src = sources.get("artist_tags")
            raw = _require_frame(artist_tags, "artist_tags", ARTIST_TAG_COLUMNS, src)
            labels = pd.DataFrame({"artist_id": _id_column(raw, "artist_id", "artist_tags", src),
                                   "tag": raw["tag"].fillna("").astype(str).str.strip().to_numpy(dtype=object)})
            labels = labels[labels["tag"] != ""].drop_duplicates()
            artist_kinds["artist_tags artist_id"] = labels["artist_id"].to_numpy()

        if artists is not None:
            src = sources.get("artists")
            raw = _require_frame(artists, "artists", ARTIST_COLUMNS, src)
            art = pd.DataFrame(
                {
                    "artist_id": _id_column(raw, "artist_id", "artists", src),
                    "name": raw["name"].fillna("").astype(str).to_numpy(dtype=object),
                }
            )
            artist_kinds["artists artist_id"] = art["artist_id"].to_numpy()
            _same_kind(artist_kinds, "artist")
            dup = art["artist_id"].duplicated()
            if dup.any():
                row = int(np.flatnonzero(dup.to_numpy())[0])
                raise DataError(
                    f"artists column 'artist_id' repeats id {art['artist_id'].iloc[row]} "
                    f"at {_where(src, row)}; each artist must appear once"
                )
            unknown = lookup_ids(np.sort(as_id_array(art["artist_id"].to_numpy())), items) < 0  # input order
            if unknown.any():
                row = int(np.flatnonzero(unknown)[0])
                raise DataError(
                    f"interactions name {int(unknown.sum())} row(s) of artist ids missing from "
                    f"the artists frame{f' ({src})' if src else ''} (first: artist_id {items[row]} at "
                    f"{_where(sources.get('interactions'), row)}); add those artists or drop the rows"
                )
        else:
            _same_kind(artist_kinds, "artist")
            ids = [inter["artist_id"].to_numpy()]
            if assign is not None:
                ids.append(assign["artist_id"].to_numpy())
            if labels is not None:
                ids.append(labels["artist_id"].to_numpy())
            art = pd.DataFrame({"artist_id": np.unique(as_id_array(np.concatenate(ids)))})
            art["name"] = ""
        _same_kind(user_kinds, "user")
        art = art.sort_values("artist_id", kind="stable").reset_index(drop=True)
        catalogue = as_id_array(art["artist_id"].to_numpy())

        if assign is not None:
            known = lookup_ids(catalogue, assign["artist_id"].to_numpy()) >= 0
            if not known.all():
                logger.warning(
                    "dropped %d tag assignment row(s) naming %d artist id(s) absent from the "
                    "artists file", int((~known).sum()),
                    len(np.unique(as_id_array(assign["artist_id"].to_numpy()[~known]))),
                )
                assign = assign[known].reset_index(drop=True)
        if labels is not None:
            known = lookup_ids(catalogue, labels["artist_id"].to_numpy()) >= 0
            if not known.all():
                logger.warning("dropped %d artist_tags row(s) naming artists absent from the catalogue",
                               int((~known).sum()))
            labels, tag_frame = _label_tags(labels[known], tag_frame)
        return cls(inter, art, tag_frame, assign, friends, labels)

    def with_interactions(
        self, interactions: pd.DataFrame, tag_assignments: pd.DataFrame | None
    ) -> Dataset:
        """A dataset with the same catalogue, tags and friends but other interactions.

        Used by splits; ``interactions`` must already be clean (as in :attr:`interactions`).
        """
        if interactions.empty:
            raise DataError("a split left no training interactions; use more data")
        inter = interactions.sort_values(["user_id", "artist_id"]).reset_index(drop=True)
        return Dataset(inter, self.artists, self.tags, tag_assignments, self.friends, self.artist_tags)

    def recency_weighted(self, half_life_days: float) -> Dataset:
        """The dataset with each pair's plays halved every ``half_life_days`` since its last listen.

        Age is measured back from the latest listen of the whole dataset, so the newest pair
        keeps its plays; a weight never drops below a millionth of its plays.

        Raises
        ------
        DataError
            The interactions have no listen times.
        """
        if not self.has_listen_times:
            raise DataError("recency_half_life_days needs listen times: build the dataset from an event log "
                            "(funnel.read_events with timestamp=...) or give first_listen/last_listen columns")
        last = self.interactions["last_listen"].to_numpy()
        days = (last.max() - last) / np.timedelta64(1, "D")
        inter = self.interactions.copy()
        inter["weight"] = inter["weight"].to_numpy() * np.maximum(0.5 ** (days / half_life_days), 1e-6)
        return Dataset(inter, self.artists, self.tags, self.tag_assignments, self.friends, self.artist_tags)

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

    @property
    def has_listen_times(self) -> bool:
        """Whether interactions carry ``first_listen`` and ``last_listen``."""
        return all(c in self.interactions.columns for c in LISTEN_COLUMNS)

    @property
    def has_tags(self) -> bool:
        """Whether any artist has a tag (a user's tag assignment or an artist-level label)."""
        return any(frame is not None and len(frame) for frame in (self.tag_assignments, self.artist_tags))

    def tagged_matrix(self) -> sp.csr_matrix:
        """Users x artists, 1 where a user of the interactions tagged the artist (float32)."""
        assign = self.tag_assignments
        if assign is None or assign.empty:
            return sp.csr_matrix(self.matrix.shape, dtype=np.float32)
        rows = self.user_index(assign["user_id"].to_numpy())
        cols = self.artist_index(assign["artist_id"].to_numpy())
        ok = (rows >= 0) & (cols >= 0)
        tagged = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])), shape=self.matrix.shape)
        tagged.sum_duplicates()
        tagged.data[:] = 1.0
        return tagged

    def known_matrix(self, tagged: bool = True) -> sp.csr_matrix:
        """Users x artists with an entry for every artist a user knows: played, or (``tagged``) tagged."""
        return sp.csr_matrix(self.matrix.maximum(self.tagged_matrix())) if tagged else self.matrix

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of every frame of the dataset."""
        if self._fingerprint is None:
            h = hashlib.sha256()

            def add(frame: pd.DataFrame | None, columns: Iterable[str]) -> None:
                if frame is None:
                    return
                for col in columns:
                    values = frame[col].to_numpy()
                    if values.dtype == object:  # strings: their characters, not the objects' addresses
                        values = np.asarray(values, dtype=str)
                    h.update(np.ascontiguousarray(values).tobytes())

            add(self.interactions, [c for c in (*INTERACTION_COLUMNS, *LISTEN_COLUMNS) if c in self.interactions])
            h.update(np.ascontiguousarray(self.artist_ids).tobytes())
            h.update("\x00".join(self.artist_names.tolist()).encode("utf-8", "replace"))
            add(self.tag_assignments, TAG_ASSIGNMENT_COLUMNS)
            if self.tags is not None:
                h.update(np.ascontiguousarray(self.tags["tag_id"].to_numpy()).tobytes())
                h.update("\x00".join(self.tags["tag"].tolist()).encode("utf-8", "replace"))
            add(self.friends, FRIEND_COLUMNS)
            add(self.artist_tags, ("artist_id", "tag_id"))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        parts = [f"{self.n_users} users", f"{self.n_artists} artists",
                 f"{len(self.interactions)} interactions"]
        if self.tag_assignments is not None:
            parts.append(f"{len(self.tag_assignments)} tag assignments")
        if self.friends is not None:
            parts.append(f"{len(self.friends)} friendships")
        if self.artist_tags is not None:
            parts.append(f"{len(self.artist_tags)} artist labels")
        return f"Dataset({', '.join(parts)})"

