"""The in-memory dataset every stage of the funnel is fitted on."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.data.columns import (
    check_weights,
    id_column,
    integer_column,
    label_tags,
    listen_times,
    nanosecond_stamps,
    require_frame,
    row_at,
    same_kind,
)
from funnel.data.ids import as_id_array, lookup_ids
from funnel.data.plays import MAX_WEIGHT as MAX_WEIGHT  # re-exported: other modules import it from here
from funnel.data.plays import empty_interactions
from funnel.errors import DataError

logger = logging.getLogger("funnel")

INTERACTION_COLUMNS = ("user_id", "artist_id", "weight")
ARTIST_COLUMNS = ("artist_id", "name")
TAG_COLUMNS = ("tag_id", "tag")
TAG_ASSIGNMENT_COLUMNS = ("user_id", "artist_id", "tag_id", "timestamp")
FRIEND_COLUMNS = ("user_id", "friend_id")
ARTIST_TAG_COLUMNS = ("artist_id", "tag")
LISTEN_COLUMNS = ("first_listen", "last_listen")


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
        empty_ok: bool = False,
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
        empty_ok : bool
            Accept interactions without rows (new artists and tags alone, for
            :meth:`funnel.Recommender.update`); such a dataset cannot be fitted on.

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
        inter = require_frame(interactions, "interactions", INTERACTION_COLUMNS, src)
        if inter.empty and not empty_ok:
            raise empty_interactions(src)
        users = id_column(inter, "user_id", "interactions", src)
        items = id_column(inter, "artist_id", "interactions", src)
        weights = check_weights(inter, src)
        columns: dict[str, np.ndarray] = {"user_id": users, "artist_id": items, "weight": weights}
        timed = [c for c in LISTEN_COLUMNS if c in inter.columns]
        if timed and len(timed) < len(LISTEN_COLUMNS):
            raise DataError(f"interactions have {timed[0]!r} but not "
                            f"{[c for c in LISTEN_COLUMNS if c not in timed]}; give both listen times or neither")
        for column in timed:
            columns[column] = listen_times(inter, column, src)
        if timed and (columns["first_listen"] > columns["last_listen"]).any():
            row = int(np.flatnonzero(columns["first_listen"] > columns["last_listen"])[0])
            raise DataError(f"interactions {row_at(src, row)} has first_listen after last_listen; swap or fix them")
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
            tag_frame = require_frame(tags, "tags", TAG_COLUMNS, src)
            tag_frame = pd.DataFrame(
                {
                    "tag_id": integer_column(tag_frame, "tag_id", "tags", src),
                    "tag": tag_frame["tag"].astype(str).str.strip().to_numpy(dtype=object),
                }
            ).drop_duplicates("tag_id")

        assign = None
        user_kinds = {"interactions user_id": users}
        artist_kinds = {"interactions artist_id": items}
        if tag_assignments is not None:
            src = sources.get("tag_assignments")
            raw = require_frame(tag_assignments, "tag_assignments", TAG_ASSIGNMENT_COLUMNS, src)
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
                    "user_id": id_column(raw, "user_id", "tag_assignments", src),
                    "artist_id": id_column(raw, "artist_id", "tag_assignments", src),
                    "tag_id": integer_column(raw, "tag_id", "tag_assignments", src),
                    "timestamp": nanosecond_stamps(stamps, src),
                }
            )
            user_kinds["tag_assignments user_id"] = assign["user_id"].to_numpy()
            artist_kinds["tag_assignments artist_id"] = assign["artist_id"].to_numpy()

        if friends is not None:
            src = sources.get("friends")
            raw = require_frame(friends, "friends", FRIEND_COLUMNS, src)
            friends = pd.DataFrame(
                {
                    "user_id": id_column(raw, "user_id", "friends", src),
                    "friend_id": id_column(raw, "friend_id", "friends", src),
                }
            ).drop_duplicates()
            user_kinds["friends user_id"] = friends["user_id"].to_numpy()
            user_kinds["friends friend_id"] = friends["friend_id"].to_numpy()

        labels = None
        if artist_tags is not None:
            src = sources.get("artist_tags")
            raw = require_frame(artist_tags, "artist_tags", ARTIST_TAG_COLUMNS, src)
            labels = pd.DataFrame({"artist_id": id_column(raw, "artist_id", "artist_tags", src),
                                   "tag": raw["tag"].fillna("").astype(str).str.strip().to_numpy(dtype=object)})
            labels = labels[labels["tag"] != ""].drop_duplicates()
            artist_kinds["artist_tags artist_id"] = labels["artist_id"].to_numpy()

        if artists is not None:
            src = sources.get("artists")
            raw = require_frame(artists, "artists", ARTIST_COLUMNS, src)
            art = pd.DataFrame(
                {
                    "artist_id": id_column(raw, "artist_id", "artists", src),
                    "name": raw["name"].fillna("").astype(str).to_numpy(dtype=object),
                }
            )
            artist_kinds["artists artist_id"] = art["artist_id"].to_numpy()
            same_kind(artist_kinds, "artist")
            dup = art["artist_id"].duplicated()
            if dup.any():
                row = int(np.flatnonzero(dup.to_numpy())[0])
                raise DataError(
                    f"artists column 'artist_id' repeats id {art['artist_id'].iloc[row]} "
                    f"at {row_at(src, row)}; each artist must appear once"
                )
            unknown = lookup_ids(np.sort(as_id_array(art["artist_id"].to_numpy())), items) < 0  # input order
            if unknown.any():
                row = int(np.flatnonzero(unknown)[0])
                raise DataError(
                    f"interactions name {int(unknown.sum())} row(s) of artist ids missing from "
                    f"the artists frame{f' ({src})' if src else ''} (first: artist_id {items[row]} at "
                    f"{row_at(sources.get('interactions'), row)}); add those artists or drop the rows"
                )
        else:
            same_kind(artist_kinds, "artist")
            ids = [inter["artist_id"].to_numpy()]
            if assign is not None:
                ids.append(assign["artist_id"].to_numpy())
            if labels is not None:
                ids.append(labels["artist_id"].to_numpy())
            art = pd.DataFrame({"artist_id": np.unique(as_id_array(np.concatenate(ids)))})
            art["name"] = ""
        same_kind(user_kinds, "user")
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
            labels, tag_frame = label_tags(labels[known], tag_frame)
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

