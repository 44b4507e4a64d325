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
