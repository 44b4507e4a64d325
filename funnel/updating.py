"""Bringing a fitted model up to date with new plays, listeners and artists, without a refit.

:func:`update` places the new data in the model's indices (the catalogue stays sorted by id,
so the artists move to new indices with the new ones among them; the user arrays keep their
rows and new listeners are appended after them), hands every part a
:class:`funnel.protocols.PartUpdate` and updates the model's own histories and id maps. The
ranker and what the parts learned (artist factors, item-item weights, the tag projection)
stay as fitted. Plays are events: a log given twice counts twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel import sparse
from funnel.data import Dataset
from funnel.data.columns import id_column, require_frame
from funnel.data.history import not_played
from funnel.data.ids import as_id_array, check_kind, lookup_ids
from funnel.errors import ConfigError, DataError
from funnel.protocols import ArtistPlacement, PartUpdate, Updatable

if TYPE_CHECKING:
    from funnel.recommender import Recommender

logger = logging.getLogger("funnel")

PLAY_COLUMNS = ("user_id", "artist_id")
NEIGHBOURS = 10  # known artists a new one borrows learned vectors from


def new_data(plays: pd.DataFrame | Dataset, *, artists: pd.DataFrame | None = None,
             artist_tags: pd.DataFrame | None = None, tag_assignments: pd.DataFrame | None = None,
             tags: pd.DataFrame | None = None) -> tuple[Dataset, pd.DataFrame]:
    """The update's plays and tags as a validated :class:`Dataset` (it may hold no plays), and new names.

    ``plays`` is a :class:`Dataset` (from :func:`funnel.read_events`, say) or a frame of
    events: ``user_id, artist_id`` and optionally ``weight`` (plays; 1 per row when absent)
    and ``timestamp`` (datetime64, the play's time) or ``first_listen, last_listen``.
    """
    if isinstance(plays, Dataset):
        if any(frame is not None for frame in (artist_tags, tag_assignments, tags)):
            raise ConfigError("with a Dataset of new plays, give its tags inside it (Dataset.from_frames); "
                              "artist_tags, tag_assignments and tags apply to a frame of plays")
        delta = plays
        names = delta.artists[delta.artists["name"] != ""] if artists is None else artists
    else:
        frame = require_frame(plays, "plays", PLAY_COLUMNS, None)
        columns: dict[str, Any] = {c: frame[c] for c in PLAY_COLUMNS}
        columns["weight"] = frame["weight"] if "weight" in frame else np.ones(len(frame))
        if "timestamp" in frame:
            columns["first_listen"] = columns["last_listen"] = frame["timestamp"]
        for column in ("first_listen", "last_listen"):
            if column in frame:
                columns[column] = frame[column]
        delta = Dataset.from_frames(pd.DataFrame(columns, index=frame.index), tags=tags,
                                    tag_assignments=tag_assignments, artist_tags=artist_tags, empty_ok=True)
        names = artists
    if names is None:
        names = pd.DataFrame({"artist_id": delta.artist_ids[:0], "name": np.empty(0, object)})
    names = require_frame(names, "artists", ("artist_id", "name"), None)
    names = pd.DataFrame({"artist_id": id_column(names, "artist_id", "artists", None),
                          "name": names["name"].fillna("").astype(str).to_numpy(dtype=object)})
    return delta, names.drop_duplicates("artist_id", keep="last")


def merged(old: np.ndarray, incoming: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted union of ids ``old`` (sorted) and ``incoming``: the ids, each old id's new
    position, and the ids of ``incoming`` not in ``old`` with their positions (as a pair)."""
    fresh = np.unique(incoming[lookup_ids(old, incoming) < 0]) if len(incoming) else incoming[:0]
    ids = np.concatenate([old, fresh]) if len(fresh) else old
    order = np.argsort(ids, kind="stable")
    position = np.empty(len(ids), np.int64)
    position[order] = np.arange(len(ids))
    return ids[order], position[:len(old)], position[len(old):]


def _check_kinds(model: Recommender, delta: Dataset, names: pd.DataFrame) -> None:
    for what, ids, values in (("user", model.user_ids_, delta.user_ids), ("artist", model.artist_ids_,
                                                                           delta.artist_ids),
                              ("artist", model.artist_ids_, as_id_array(names["artist_id"].to_numpy()))):
        if len(ids) and len(values):
            try:
                check_kind(ids, values[:1], what)
            except ConfigError as exc:
                raise DataError(f"the new data's {what} ids do not match the model's: {exc}") from None


def _check_parts(model: Recommender) -> list[Any]:
    """Every fitted part, models first; raise for one with state it cannot update."""
    stages = model.stages_
    parts = [*stages.models_.values(), *stages.sources_, *stages.features_]
    for part in parts:
        if isinstance(part, Updatable):
            continue
        state = part.get_state()
        if state.arrays or state.files:
            raise ConfigError(f"part {part.name!r} ({type(part).__name__}) holds fitted state and has no "
                              "update(change) method, so the model cannot be updated without a refit; give it "
                              "one (docs/extending.md) or fit the model again")
    return parts


def update(model: Recommender, delta: Dataset, names: pd.DataFrame) -> bool:
    """Bring ``model`` up to date with ``delta``'s plays and tags and ``names``' artists (in place).

    Returns False, changing nothing, when there is nothing new.
    """
    if model.config_.recency_half_life_days is not None:
        raise ConfigError("this model was fitted with recency_half_life_days, whose play weights are relative "
                          "to the fit's latest listen; update() cannot add plays to them: fit the model again")
    parts = _check_parts(model)
    tagged_rows = [frame for frame in (delta.tag_assignments, delta.artist_tags) if frame is not None and len(frame)]
    if len(delta.interactions) == 0 and not tagged_rows and len(names) == 0:
        logger.info("update: no new plays, tags or artists; the model is unchanged")
        return False
    _check_kinds(model, delta, names)
    incoming = np.concatenate([delta.artist_ids, as_id_array(names["artist_id"].to_numpy())]) \
        if len(names) else delta.artist_ids
    artist_ids, artist_rows, fresh_rows = merged(model.artist_ids_, incoming)
    n_artists = len(artist_ids)
    artist_names = np.empty(n_artists, dtype=object)
    artist_names[artist_rows] = model.artist_names_.astype(object)
    artist_names[fresh_rows] = ""
    if len(names):
        artist_names[lookup_ids(artist_ids, as_id_array(names["artist_id"].to_numpy()))] = names["name"].to_numpy()
    columns = lookup_ids(artist_ids, delta.artist_ids)  # the delta's artist index -> the new catalogue's

    side_only = model.artist_side_only_
    old_users = model.user_ids_
    user_ids, user_rows, fresh_users = (old_users, np.arange(0), np.arange(0)) if side_only \
        else merged(old_users, delta.user_ids)
    old_model_rows = np.arange(len(old_users)) if model.model_rows_ is None else model.model_rows_
    n_model_old = int(old_model_rows.max(initial=-1)) + 1
    model_rows = np.full(len(user_ids), -1, np.int64)
    if not side_only:
        model_rows[user_rows] = old_model_rows
        model_rows[fresh_users] = n_model_old + np.arange(len(fresh_users))
    n_model_rows = n_model_old + len(fresh_users)

    def moved(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
        return sparse.moved(matrix, rows, artist_rows, (len(user_ids), n_artists))

    history = moved(model.history_, user_rows)
    # both catalogues are sorted, so the entries keep the order of the interactions (and their listen times)
    plays = sparse.moved(delta.matrix, None, columns, (delta.n_users, n_artists))
    # an artist-side-only model holds no listener: none of the log's has plays before
    listeners = np.full(delta.n_users, -1) if side_only else lookup_ids(user_ids, delta.user_ids)
    before = sp.csr_matrix(plays.shape, dtype=np.float32) if side_only else history[listeners]
    timed = delta.has_listen_times and len(delta.interactions) > 0
    inter = delta.interactions
    taggers = np.zeros(0, np.int64)
    if delta.tag_assignments is not None and len(delta.tag_assignments) and not side_only:
        rows = lookup_ids(user_ids, delta.tag_assignments["user_id"].to_numpy())
        taggers = np.unique(model_rows[rows[rows >= 0]])
        taggers = taggers[taggers >= 0]
    change = PartUpdate(artist_rows=artist_rows, n_artists=n_artists, plays=plays, before=before,
                        model_rows=listeners if side_only else model_rows[listeners],
                        n_model_rows=n_model_rows,
                        first_listen=inter["first_listen"].to_numpy() if timed else None,
                        last_listen=inter["last_listen"].to_numpy() if timed else None,
                        new_tags=_tag_texts(delta, artist_ids), taggers=taggers)
    # a model that places artists by content goes first: the others borrow for new artists by it
    placers = [part for part in parts if isinstance(part, ArtistPlacement) and isinstance(part, Updatable)]
    for part in placers[:1]:
        part.update(change)
        if len(change.new_artists):
            change = dataclasses.replace(change, neighbours=part.neighbours(change.new_artists, NEIGHBOURS))
    for part in parts:
        if isinstance(part, Updatable) and part not in placers[:1]:
            part.update(change)
    history = sp.csr_matrix((0, n_artists), dtype=np.float32) if side_only else _scattered(history, plays, listeners)
    if model.tagged_ is not None and not side_only:
        model.tagged_ = _tagged(moved(model.tagged_, user_rows), delta, user_ids, artist_ids, history)
    model.user_ids_, model.artist_ids_ = user_ids, artist_ids
    model.artist_names_ = np.asarray(artist_names, dtype=str)
    model.history_ = history
    identity = not side_only and np.array_equal(model_rows, np.arange(len(user_ids)))
    model.model_rows_ = None if identity or side_only else model_rows
    digest = hashlib.sha256(f"{model.fingerprint_}+{delta.fingerprint()}".encode())
    digest.update(np.ascontiguousarray(as_id_array(names["artist_id"].to_numpy())).tobytes())
    model.fingerprint_ = digest.hexdigest()[:16]
    logger.info("updated with %d (user, artist) pairs of plays of %d listeners (%d new) and %d new artists",
                len(inter), delta.n_users, len(fresh_users), len(fresh_rows))
    return True


def _scattered(history: sp.csr_matrix, plays: sp.csr_matrix, listeners: np.ndarray) -> sp.csr_matrix:
    """``history`` with the log's ``plays`` (row ``i`` for user row ``listeners[i]``) added."""
    coo = sp.coo_matrix(plays)
    added = sp.csr_matrix((coo.data, (listeners[coo.row], coo.col)), shape=history.shape)
    out = sp.csr_matrix(history + added)
    out.sort_indices()
    return out


def _tag_texts(delta: Dataset, artist_ids: np.ndarray) -> pd.DataFrame:
    """``artist, tag, assigned``: the text of every tag assignment and label of the update, by new artist index."""
    rows = [frame[["artist_id", "tag_id"]].assign(assigned=assigned)
            for frame, assigned in ((delta.tag_assignments, True), (delta.artist_tags, False))
            if frame is not None and len(frame)]
    if not rows or delta.tags is None:
        return pd.DataFrame({"artist": np.zeros(0, np.int64), "tag": np.empty(0, object),
                             "assigned": np.zeros(0, bool)})
    pairs = pd.concat(rows, ignore_index=True)
    texts = delta.tags.set_index("tag_id")["tag"].reindex(pairs["tag_id"].to_numpy())
    known = texts.notna().to_numpy()
    if not known.all():
        logger.warning("update: %d tag assignment(s) name tag ids without text in tags; they are left out",
                       int((~known).sum()))
    return pd.DataFrame({"artist": lookup_ids(artist_ids, pairs["artist_id"].to_numpy()[known]),
                         "tag": texts.to_numpy(dtype=object)[known], "assigned": pairs["assigned"].to_numpy()[known]})


def _tagged(tagged: sp.csr_matrix, delta: Dataset, user_ids: np.ndarray, artist_ids: np.ndarray,
            history: sp.csr_matrix) -> sp.csr_matrix:
    """Artists each user tagged and never played, with the update's tag assignments."""
    assign = delta.tag_assignments
    if assign is not None and len(assign):
        rows = lookup_ids(user_ids, assign["user_id"].to_numpy())
        cols = lookup_ids(artist_ids, assign["artist_id"].to_numpy())
        ok = (rows >= 0) & (cols >= 0)
        added = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])), shape=tagged.shape)
        tagged = sp.csr_matrix(tagged + added)
        tagged.data[:] = 1.0
    out = not_played(tagged, history)
    out.sort_indices()
    return out
