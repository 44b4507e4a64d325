"""Synthetic datasets in the Last.fm schema, with planted taste clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnel.data import Dataset
from funnel.errors import ConfigError


def synthetic(n_users: int = 200, n_artists: int = 300, n_clusters: int = 5, artists_per_user: int = 20,
              in_cluster: float = 0.85, tags_per_cluster: int = 6, tag_rows_per_artist: float = 4.0,
              n_untagged: int = 0, seed: int = 0) -> Dataset:
    """A seeded random dataset where users mostly listen to artists of their own cluster.

    Artists and users belong to one of ``n_clusters`` clusters. Each user draws
    ``artists_per_user`` artists, a share ``in_cluster`` from their cluster, with Zipf-like
    popularity inside each cluster; play counts are log-normal. Each cluster has its own tag
    words; artists are tagged with their cluster's tags (timestamps 2005-2011, a few bogus
    1956 ones). The last ``n_untagged`` artists get no tags. Friends are pairs of users of
    the same cluster. Everything is vectorised: no Python loop per user or artist.

    Returns
    -------
    Dataset
    """
    if min(n_users, n_artists, n_clusters, artists_per_user) < 1 or n_clusters > n_artists:
        raise ConfigError("synthetic needs n_users, n_artists, n_clusters, artists_per_user >= 1 and "
                          "n_clusters <= n_artists")
    rng = np.random.default_rng(seed)
    artist_cluster = np.arange(n_artists) % n_clusters
    user_cluster = rng.integers(0, n_clusters, n_users)
    # artists of each cluster, in popularity order, with Zipf weights
    by_cluster = [np.flatnonzero(artist_cluster == c) for c in range(n_clusters)]
    size = np.array([len(b) for b in by_cluster])
    members = np.full((n_clusters, size.max()), -1)
    for c, b in enumerate(by_cluster):  # once per cluster
        members[c, : len(b)] = b
    draws = n_users * artists_per_user
    users = np.repeat(np.arange(n_users), artists_per_user)
    own = rng.random(draws) < in_cluster
    cluster = np.where(own, user_cluster[users], rng.integers(0, n_clusters, draws))
    # Zipf-like rank within the cluster by inverse CDF of a power law
    u = rng.random(draws)
    rank = np.minimum((size[cluster] * u ** 2.0).astype(np.int64), size[cluster] - 1)
    artists = members[cluster, rank]
    plays = np.maximum(1, rng.lognormal(4.0, 1.5, draws)).round()
    interactions = pd.DataFrame({"user_id": users + 1, "artist_id": artists + 1, "weight": plays})
    interactions = interactions.groupby(["user_id", "artist_id"], as_index=False)["weight"].sum()

    words = np.array([f"genre{c}_{w}" for c in range(n_clusters) for w in range(tags_per_cluster)])
    tags = pd.DataFrame({"tag_id": np.arange(len(words)) + 1, "tag": words})
    tagged = n_artists - n_untagged
    n_rows = int(tagged * tag_rows_per_artist)
    tag_artist = rng.integers(0, tagged, n_rows) if tagged > 0 else np.empty(0, np.int64)
    tag_id = artist_cluster[tag_artist] * tags_per_cluster + rng.integers(0, tags_per_cluster, n_rows) + 1
    seconds = rng.uniform(np.datetime64("2005-01-01", "s").astype(np.int64),
                          np.datetime64("2011-05-01", "s").astype(np.int64), n_rows)
    bogus = rng.random(n_rows) < 0.005
    seconds[bogus] = np.datetime64("1956-06-01", "s").astype(np.int64)
    assignments = pd.DataFrame({"user_id": rng.integers(1, n_users + 1, n_rows), "artist_id": tag_artist + 1,
                                "tag_id": tag_id,
                                "timestamp": seconds.astype("datetime64[s]").astype("datetime64[ns]")})
    artist_frame = pd.DataFrame({"artist_id": np.arange(n_artists) + 1,
                                 "name": [f"Artist {i + 1}" for i in range(n_artists)]})
    left = rng.integers(0, n_users, n_users * 3)
    by_user_cluster = np.argsort(user_cluster, kind="stable")
    counts = np.bincount(user_cluster, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cluster_of = user_cluster[left]
    right = by_user_cluster[starts[cluster_of] + (rng.random(len(left)) * counts[cluster_of]).astype(np.int64)]
    friends = pd.DataFrame({"user_id": left + 1, "friend_id": right + 1})
    friends = friends[friends.user_id != friends.friend_id]
    return Dataset.from_frames(interactions, artists=artist_frame, tags=tags, tag_assignments=assignments,
                               friends=friends)


def _mbids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random version-4 UUID strings (lowercase 8-4-4-4-12 hex), as MusicBrainz ids look."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    for _ in range(8):  # 122 random bits: a repeat is all but impossible, but ids must be unique
        _, first = np.unique(raw, axis=0, return_index=True)
        if len(first) == n:
            break
        again = np.setdiff1d(np.arange(n), first)
        raw[again] = rng.integers(0, 256, (len(again), 16), dtype=np.uint8)
        raw[again, 6] = (raw[again, 6] & 0x0F) | 0x40
        raw[again, 8] = (raw[again, 8] & 0x3F) | 0x80
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2], hexed[:, 1::2] = digits[raw >> 4], digits[raw & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, np.r_[0:8, 9:13, 14:18, 19:23, 24:36]] = hexed
    return text.view("S36").ravel().astype(str).astype(object)


def _popular_rank(rng: np.random.Generator, size: np.ndarray) -> np.ndarray:
    """Zipf-like ranks below ``size`` (per draw): the inverse CDF of a power law, as :func:`synthetic` draws."""
    return np.minimum((size * rng.random(len(size)) ** 2.0).astype(np.int64), size - 1)


def _labels(prefix: str, n: int) -> np.ndarray:
    """``prefix000042``-style ids, zero-padded to one width, as an object array of str."""
    width = max(6, len(str(n - 1)))
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def synthetic_events(n_users: int = 1000, n_artists: int = 2000, n_events: int = 100_000, n_clusters: int = 8,
                     drift: float = 0.3, genres_per_artist: int = 2, start: str = "2024-01-01", days: int = 365,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random listening log (one row per play) with planted taste clusters that drift.

    Artists belong to one of ``n_clusters`` clusters, with Zipf-like popularity inside each.
    Every user has an early cluster and, with probability ``drift``, a different late one
    (else the late one is the same), and a library of artists drawn by popularity: an early
    part from the early cluster and a late part from the late one, ``5 + sqrt(plays)``
    artists each. A play goes to the late part with a probability that grows linearly from
    0 at ``start`` to 1 at the end of the period, and within a part mostly to the user's
    favourites, so pairs are played many times; one play in twenty goes anywhere in the
    catalogue. So the artists a user started last are mostly new ones, and for drifting
    users of another cluster: a temporal split (the listens a user started last held out)
    is harder than a random one, and recency helps. Plays per user are heavy-tailed
    (log-normal activity), at least 5 each, and every user's first 5 plays go to 5
    different artists. Every artist is played at least once (given ``n_events - 5 * n_users
    >= n_artists``: that many plays are dealt one to each artist). 15% of plays are skips
    shorter than 30 s. Everything is vectorised: no Python loop per play, user or artist.

    Parameters
    ----------
    n_users, n_artists, n_events : int
        Sizes; ``n_events`` must be at least ``5 * n_users`` and every cluster needs 5 artists.
    n_clusters : int
        Taste clusters; artists are dealt to them at random, evenly.
    drift : float
        Share of users (in expectation) whose taste moves to a second cluster, in [0, 1].
    genres_per_artist : int
        Editorial genres per artist, drawn from its cluster's genres (``max(4, genres_per_artist)``
        per cluster); one artist in ten also gets a genre of another cluster.
    start : str
        First day of the log (ISO date).
    days : int
        Length of the log; every ``ts`` lies in ``[start, start + days)``, at whole seconds.
    seed : int
        Seed of every random draw: the same seed gives identical frames.

    Returns
    -------
    events : pandas.DataFrame
        ``user`` (``"user_000042"``), ``artist_mbid`` (lowercase UUID strings), ``ts``
        (datetime64[ns]), ``duration_ms`` (int64), sorted by ``ts``.
    genres : pandas.DataFrame
        ``artist_mbid, genre`` (``"cluster3-genre1"``), one row per label, every artist
        listed.

    Raises
    ------
    ConfigError
        A size or share outside its range, or an unreadable ``start``.

    Examples
    --------
    >>> events, genres = synthetic_events(n_users=50, n_artists=100, n_events=2_000, seed=1)
    >>> list(events.columns), list(genres.columns)
    (['user', 'artist_mbid', 'ts', 'duration_ms'], ['artist_mbid', 'genre'])
    """
    if min(n_users, n_artists, n_clusters, days) < 1 or genres_per_artist < 0:
        raise ConfigError("synthetic_events needs n_users, n_artists, n_clusters and days >= 1 and "
                          "genres_per_artist >= 0")
    if n_events < 5 * n_users:
        raise ConfigError(f"synthetic_events needs n_events >= 5 * n_users (every user plays 5 artists); got "
                          f"n_events={n_events}, n_users={n_users}")
    if n_artists < 5 * n_clusters:
        raise ConfigError(f"synthetic_events needs n_artists >= 5 * n_clusters (5 artists per cluster); got "
                          f"n_artists={n_artists}, n_clusters={n_clusters}")
    if not 0.0 <= drift <= 1.0:
        raise ConfigError(f"drift is a probability, in [0, 1]; got {drift}")
    try:
        origin = np.datetime64(pd.Timestamp(start).floor("D").date(), "s")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"start must be an ISO date such as '2024-01-01', not {start!r}") from exc
    rng = np.random.default_rng(seed)

    artist_cluster = rng.permutation(np.arange(n_artists) % n_clusters)
    # each cluster's artists in popularity order (a random order of its members)
    order = np.lexsort((rng.random(n_artists), artist_cluster))
    size = np.bincount(artist_cluster, minlength=n_clusters)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])

    early = rng.integers(0, n_clusters, n_users)
    moves = (rng.random(n_users) < drift) & (n_clusters > 1)
    late = np.where(moves, (early + rng.integers(1, max(n_clusters, 2), n_users)) % n_clusters, early)

    activity = rng.lognormal(0.0, 1.0, n_users)
    plays = 5 + rng.multinomial(n_events - 5 * n_users, activity / activity.sum())

    # each user's library: an early part (their early cluster) and a late part (their late cluster), each
    # of `shelf` artists drawn by popularity, the first 5 of a part at consecutive ranks so that they differ
    shelf = 5 + np.sqrt(plays).astype(np.int64)
    library_start = np.concatenate([[0], np.cumsum(2 * shelf)[:-1]])
    owner = np.repeat(np.arange(n_users), 2 * shelf)
    slot = np.arange(len(owner)) - library_start[owner]
    is_late = slot >= shelf[owner]
    within = slot - is_late * shelf[owner]
    shelf_cluster = np.where(is_late, late[owner], early[owner])
    rank = _popular_rank(rng, size[shelf_cluster])
    head = library_start[owner] + is_late * shelf[owner]
    fixed = within < 5
    rank[fixed] = (rank[head[fixed]] + within[fixed]) % size[shelf_cluster[fixed]]
    library = order[offset[shelf_cluster] + rank]

    users = np.repeat(np.arange(n_users), plays)
    position = np.arange(n_events) - np.repeat(np.cumsum(plays) - plays, plays)
    when = rng.random(n_events)  # share of the period elapsed at the play
    part = (rng.random(n_events) < when).astype(np.int64)  # the late part's share grows with time
    pick = (shelf[users] * rng.random(n_events) ** 2.0).astype(np.int64)  # favourites get most plays
    first = position < 5  # a user's first 5 plays: the 5 distinct head artists of the early part
    part[first], pick[first] = 0, position[first]
    artists = library[library_start[users] + part * shelf[users] + pick]
    stray = rng.random(n_events) < 0.05  # beyond the library, anywhere in the catalogue
    stray_cluster = rng.integers(0, n_clusters, int(stray.sum()))
    artists[stray] = order[offset[stray_cluster] + _popular_rank(rng, size[stray_cluster])]
    # every artist of the catalogue (the genres frame) is played at least once, by a play that is not one
    # of a user's first 5 (which keep their 5 distinct artists)
    later = np.flatnonzero(~first)
    covered = rng.choice(later, min(n_artists, len(later)), replace=False)
    artists[covered] = rng.permutation(n_artists)[: len(covered)]
    ts = origin + (when * days * 86_400).astype(np.int64)
    skip = rng.random(n_events) < 0.15
    duration = np.where(skip, rng.integers(1_000, 30_000, n_events),
                        np.clip(rng.lognormal(np.log(210_000), 0.35, n_events), 30_000, 1_800_000).astype(np.int64))

    user_names, mbids = _labels("user_", n_users), _mbids(rng, n_artists)
    chronological = np.argsort(ts, kind="stable")
    events = pd.DataFrame({"user": user_names[users[chronological]],
                           "artist_mbid": mbids[artists[chronological]],
                           "ts": ts[chronological].astype("datetime64[ns]"),
                           "duration_ms": duration[chronological].astype(np.int64)})

    per_cluster = max(4, genres_per_artist)
    picks = np.argsort(rng.random((n_artists, per_cluster)), axis=1)[:, :genres_per_artist]
    genre_artist = np.repeat(np.arange(n_artists), genres_per_artist)
    genre_cluster = artist_cluster[genre_artist]
    genre_index = picks.ravel()
    crossed = np.flatnonzero(rng.random(n_artists) < 0.1) if n_clusters > 1 else np.empty(0, np.int64)
    other = (artist_cluster[crossed] + rng.integers(1, max(n_clusters, 2), len(crossed))) % n_clusters
    genre_artist = np.concatenate([genre_artist, crossed])
    genre_cluster = np.concatenate([genre_cluster, other])
    genre_index = np.concatenate([genre_index, rng.integers(0, per_cluster, len(crossed))])
    by_artist = np.argsort(genre_artist, kind="stable")
    words = np.char.add(np.char.add(np.char.add("cluster", genre_cluster[by_artist].astype(str)), "-genre"),
                        genre_index[by_artist].astype(str)).astype(object)
    genres = pd.DataFrame({"artist_mbid": mbids[genre_artist[by_artist]], "genre": words})
    return events, genres
