"""The public evaluation splits of DESIGN.md, and the per-user split the ranker trains on.

Every split removes the held-out (user, artist) pairs from the training tag assignments too:
a user who tagged an artist has listened to it, so keeping those rows would leak the answer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.data.dataset import Dataset
from funnel.errors import ConfigError, DataError

DAY = np.timedelta64(1, "D")


class Split(NamedTuple):
    """A training dataset and the held-out ``user_id, artist_id, weight`` rows."""

    train: Dataset
    test: pd.DataFrame


def _finish(dataset: Dataset, held_out: np.ndarray) -> Split:
    inter = dataset.interactions
    test = inter[held_out].reset_index(drop=True)
    train = inter[~held_out]
    assign = dataset.tag_assignments
    if assign is not None and len(test):
        held = pd.MultiIndex.from_frame(test[["user_id", "artist_id"]])
        keys = pd.MultiIndex.from_frame(assign[["user_id", "artist_id"]])
        assign = assign[~keys.isin(held)].reset_index(drop=True)
    return Split(dataset.with_interactions(train, assign), test)


def per_user(
    dataset: Dataset, test_fraction: float = 0.2, min_artists: int = 5, seed: int = 0
) -> Split:
    """Hold out ``test_fraction`` of each user's artists (users with ``min_artists`` or more).

    Each qualifying user keeps ``max(1, round(test_fraction * n))`` random artists aside;
    users with fewer artists stay entirely in training.

    Parameters
    ----------
    dataset : Dataset
    test_fraction : float
        Share of each user's artists held out, in (0, 1).
    min_artists : int
        Users with fewer artists are not held out from.
    seed : int
        Random seed; the same seed gives the same split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction!r} must be between 0 and 1 (exclusive)")
    if min_artists < 2:
        raise ConfigError(f"min_artists={min_artists!r} must be at least 2 so training keeps an artist")
    users = dataset.interactions["user_id"].to_numpy()
    rng = np.random.default_rng(seed)
    keys = rng.random(len(users))
    order = np.lexsort((keys, users))
    _, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
    position = np.arange(len(users)) - np.repeat(starts, counts)
    n_test = np.where(counts >= min_artists,
                      np.clip(np.round(test_fraction * counts), 1, counts - 1), 0)
    held_sorted = position < np.repeat(n_test, counts)
    held_out = np.empty(len(users), dtype=bool)
    held_out[order] = held_sorted
    return _finish(dataset, held_out)


def temporal(dataset: Dataset, test_fraction: float = 0.2, min_artists: int = 5) -> Split:
    """Hold out the artists each user started listening to last: the temporal protocol.

    Each user with at least ``min_artists`` artists keeps aside the
    ``max(1, round(test_fraction * n))`` artists of latest ``first_listen`` (ties broken by
    the later ``last_listen``, then the artist id), so a model is judged on what the
    listener discovered after everything it trained on. Training pairs keep their whole
    play counts (the dataset holds one row per pair, not the plays themselves).

    Raises
    ------
    DataError
        The dataset has no listen times (build it from an event log with timestamps).
    ConfigError
        ``test_fraction`` is not in (0, 1) or ``min_artists`` < 2.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction!r} must be between 0 and 1 (exclusive)")
    if min_artists < 2:
        raise ConfigError(f"min_artists={min_artists!r} must be at least 2 so training keeps an artist")
    if not dataset.has_listen_times:
        raise DataError("the temporal split needs listen times: build the dataset from an event log "
                        "(funnel.read_events with timestamp=...) or give first_listen/last_listen columns")
    inter = dataset.interactions
    users = dataset.user_index(inter["user_id"].to_numpy())
    first = inter["first_listen"].to_numpy().astype(np.int64)
    last = inter["last_listen"].to_numpy().astype(np.int64)
    order = np.lexsort((dataset.artist_index(inter["artist_id"].to_numpy()), last, first, users))
    _, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
    position = np.arange(len(users)) - np.repeat(starts, counts)
    n_test = np.where(counts >= min_artists, np.clip(np.round(test_fraction * counts), 1, counts - 1), 0)
    held_sorted = position >= np.repeat(counts - n_test, counts)
    held_out = np.empty(len(users), dtype=bool)
    held_out[order] = held_sorted
    return _finish(dataset, held_out)


def as_of_cutoff(part: Split, half_life_days: float | None = None) -> Dataset:
    """The training part of a temporal split as it stood when each held-out listener's first
    held-out artist started: nothing of those listeners after that moment.

    A pair kept for training may have been played on after the listener's cutoff (the first
    listen of their earliest held-out artist). Its last listen becomes the cutoff and its
    weight keeps the share of its listening span before the cutoff (plays assumed evenly
    spread over the span; at least a millionth of the weight is kept), so recency features
    and play counts fitted on the part describe the listener at the cutoff. Tag assignments
    a held-out listener made after the cutoff are dropped. Listeners with nothing held out
    keep everything.

    Parameters
    ----------
    part : Split
        A split of :func:`temporal`.
    half_life_days : float, optional
        The weights were recency weighted with this half-life (see
        :meth:`Dataset.recency_weighted`): they are aged again from the new last listens.
    """
    train, test = part
    inter = train.interactions.copy()
    cutoffs = test.groupby("user_id")["first_listen"].min()
    cutoff = inter["user_id"].map(cutoffs).to_numpy(dtype="datetime64[ns]")
    first, last = inter["first_listen"].to_numpy(), inter["last_listen"].to_numpy()
    later = ~np.isnat(cutoff) & (last > cutoff)
    span = (last - first)[later] / DAY
    share = np.clip((cutoff - first)[later] / DAY / np.maximum(span, 1e-9), 0.0, 1.0)
    if half_life_days is not None:
        share = share * 0.5 ** ((last - cutoff)[later] / DAY / half_life_days)
    weight = inter["weight"].to_numpy(dtype=np.float64).copy()
    weight[later] = weight[later] * np.maximum(share, 1e-6)
    last = last.copy()
    last[later] = cutoff[later]
    inter["weight"], inter["last_listen"] = weight, last
    assign = train.tag_assignments
    if assign is not None and len(assign):
        when = assign["user_id"].map(cutoffs).to_numpy(dtype="datetime64[ns]")
        stamps = assign["timestamp"].to_numpy()
        assign = assign[np.isnat(when) | np.isnat(stamps) | (stamps <= when)].reset_index(drop=True)
    return train.with_interactions(inter, assign)


class NewUserSplit(NamedTuple):
    """Training data without some users, and those users' history and held-out rows."""

    train: Dataset
    history: pd.DataFrame
    test: pd.DataFrame


def listener_sample(dataset: Dataset, size: int | float, seed: int = 0) -> Dataset:
    """The dataset of a seeded random sample of listeners, with their plays and tag assignments.

    ``size`` is a count (an integer) or a share of the listeners (a float in (0, 1]); the
    catalogue, tags and friendships stay whole. A sample as large as the audience is
    ``dataset`` itself.
    """
    n_users = dataset.n_users
    count = size if isinstance(size, int) else max(1, round(size * n_users))
    if count >= n_users:
        return dataset
    return with_listeners(dataset, dataset.user_ids[np.random.default_rng(seed).choice(n_users, count, replace=False)])


def with_listeners(dataset: Dataset, user_ids: np.ndarray) -> Dataset:
    """``dataset`` with the plays and tag assignments of ``user_ids`` only (catalogue, tags and friendships whole)."""
    inter = dataset.interactions
    assign = dataset.tag_assignments
    if assign is not None:
        assign = assign[np.isin(assign["user_id"].to_numpy(), user_ids)].reset_index(drop=True)
    return dataset.with_interactions(inter[np.isin(inter["user_id"].to_numpy(), user_ids)], assign)


def new_users(dataset: Dataset, user_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
              ) -> NewUserSplit:
    """Hold ``user_fraction`` of the users out entirely, as listeners who sign up after training.

    Their interactions and tag assignments leave the training data. Each held-out user's
    artists are then split as by :func:`per_user` (``test_fraction`` held out, users with at
    least 2 artists): the rest is the ``history`` a model is given at recommendation time.
    """
    if not 0.0 < user_fraction < 1.0:
        raise ConfigError(f"user_fraction={user_fraction!r} must be between 0 and 1 (exclusive)")
    users = dataset.user_ids
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(users, max(1, int(round(user_fraction * len(users)))), replace=False))
    inter = dataset.interactions
    held = inter["user_id"].isin(chosen).to_numpy()
    assign = dataset.tag_assignments
    if assign is not None:
        assign = assign[~assign["user_id"].isin(chosen)].reset_index(drop=True)
    train = dataset.with_interactions(inter[~held], assign)
    cold = per_user(dataset.with_interactions(inter[held], None), test_fraction, min_artists=2, seed=seed)
    return NewUserSplit(train, cold.train.interactions, cold.test)


def global_random(dataset: Dataset, train_percentage: float = 0.8, seed: int = 0) -> Split:
    """``implicit.evaluation.train_test_split(ratings, train_percentage, random_state=seed)``.

    A random share of all (user, artist) pairs is held out regardless of user, exactly as the
    implicit helper does on the users x artists matrix.
    """
    from implicit.evaluation import train_test_split

    if not 0.0 < train_percentage < 1.0:
        raise ConfigError(
            f"train_percentage={train_percentage!r} must be between 0 and 1 (exclusive)"
        )
    matrix = dataset.matrix.tocoo()
    _, test_matrix = train_test_split(matrix, train_percentage, random_state=seed)
    test_matrix = sp.csr_matrix(test_matrix)
    rows = dataset.user_index(dataset.interactions["user_id"].to_numpy())
    cols = dataset.artist_index(dataset.interactions["artist_id"].to_numpy())
    held_out = np.asarray(test_matrix[rows, cols]).ravel() != 0
    return _finish(dataset, held_out)


class RatioSplit(NamedTuple):
    """A training dataset and two held-out parts: ``validation`` (for tuning) and ``test``."""

    train: Dataset
    validation: pd.DataFrame
    test: pd.DataFrame


def ratio(dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> RatioSplit:
    """Each user's artists in random order cut by ``ratios``, rounded as RecBole does.

    RecBole's per-user ratio split (``split_by_ratio`` with random ordering): the validation
    and test parts get ``int(ratio * n)`` of a user's ``n`` artists each, and training the
    rest; then, while training keeps more than one artist, a part whose share is between 0
    and 1 artist gets one (the test part first). This is the split of RecBole's published
    tables (e.g. RecBole-GNN's LastFM results, 8:1:1).

    Parameters
    ----------
    dataset : Dataset
    ratios : three floats
        Training, validation and test shares (normalised to sum 1).
    seed : int
        Random seed of the order; the same seed gives the same split.
    """
    shares = np.asarray(ratios, dtype=np.float64)
    if shares.shape != (3,) or not np.isfinite(shares).all() or (shares <= 0).any():
        raise ConfigError(f"ratios={ratios!r} must be three positive numbers (training, validation, test)")
    shares = shares / shares.sum()
    users = dataset.interactions["user_id"].to_numpy()
    keys = np.random.default_rng(seed).random(len(users))
    order = np.lexsort((keys, users))
    _, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
    position = np.arange(len(users)) - np.repeat(starts, counts)
    held = [(shares[i] * counts).astype(np.int64) for i in (1, 2)]  # int() of each share, as RecBole
    n_train = counts - held[0] - held[1]
    for part in (1, 0):  # the test part, then validation: a share under one artist becomes one
        share = shares[part + 1] * counts
        bump = (n_train > 1) & (share > 0) & (share < 1)
        held[part] = held[part] + bump
        n_train = n_train - bump
    part_sorted = np.where(position < np.repeat(n_train, counts), 0,
                           np.where(position < np.repeat(n_train + held[0], counts), 1, 2))
    parts = np.empty(len(users), dtype=np.int64)
    parts[order] = part_sorted
    train, held_out = _finish(dataset, parts > 0)
    which = parts[parts > 0]
    return RatioSplit(train, held_out[which == 1].reset_index(drop=True), held_out[which == 2].reset_index(drop=True))
