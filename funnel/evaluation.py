"""Top-N metrics on held-out interactions: precision, recall, NDCG, MAP, candidate recall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import DataError


class TopNModel(Protocol):
    """Anything with ``recommend_all(n, users) -> DataFrame(user_id, rank, artist_id, ...)``."""

    def recommend_all(self, n: int = 20, users=None) -> pd.DataFrame: ...


def ranking_metrics(recommendations: pd.DataFrame, test: pd.DataFrame,
                    ks: Sequence[int] = (10, 20)) -> dict[str, float]:
    """Mean precision, recall, NDCG and MAP at each k over the users of ``test``.

    Binary relevance: an artist is relevant when the (user, artist) pair is in ``test``.
    Precision@k divides hits by k; recall@k by the user's number of held-out artists; NDCG
    divides by the ideal DCG of min(k, held-out) hits; MAP@k averages precision at each hit
    and divides by min(k, held-out). Users of ``test`` missing from ``recommendations``
    count as zero.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        ``user_id, rank, artist_id`` with ranks starting at 1.
    test : pandas.DataFrame
        ``user_id, artist_id`` held-out pairs.
    ks : sequence of int
    """
    users, n_relevant = np.unique(test["user_id"].to_numpy(), return_counts=True)
    kmax = max(ks)
    if len(users) == 0:
        raise DataError("the test set is empty: there is nothing to evaluate against")
    top = recommendations[pd.to_numeric(recommendations["rank"]) <= kmax]
    row = np.searchsorted(users, top["user_id"].to_numpy())
    row = np.clip(row, 0, len(users) - 1)
    valid = users[row] == top["user_id"].to_numpy()
    hits = np.zeros((len(users), kmax), dtype=np.float64)
    test_keys_arr = pd.MultiIndex.from_frame(test[["user_id", "artist_id"]])
    rec_keys = pd.MultiIndex.from_frame(top[["user_id", "artist_id"]])
    relevant = rec_keys.isin(test_keys_arr) & valid
    hits[row[relevant], top["rank"].to_numpy(dtype=np.int64)[relevant] - 1] = 1.0
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        ideal = np.minimum(n_relevant, k)
        idcg = np.cumsum(discounts[:k])[ideal - 1]
        precision_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        out[f"precision@{k}"] = float(np.mean(n_hits / k))
        out[f"recall@{k}"] = float(np.mean(n_hits / n_relevant))
        out[f"ndcg@{k}"] = float(np.mean((h @ discounts[:k]) / idcg))
        out[f"map@{k}"] = float(np.mean((precision_at * h).sum(axis=1) / ideal))
    return out


def evaluate(model: TopNModel, train: Dataset, test: pd.DataFrame, ks: Sequence[int] = (10, 20)
             ) -> dict[str, float]:
    """Fitted ``model``'s metrics on ``test`` for test users that are in ``train``."""
    users = np.intersect1d(np.unique(test["user_id"].to_numpy()), train.user_ids)
    test = test[test["user_id"].isin(users)]
    recs = model.recommend_all(n=max(ks), users=users)
    metrics = ranking_metrics(recs, test, ks)
    metrics["coverage"] = recs["artist_id"].nunique() / train.n_artists
    return metrics


def evaluate_new_users(model, history: pd.DataFrame, test: pd.DataFrame, ks: Sequence[int] = (10, 20)
                       ) -> dict[str, float]:
    """Metrics of ``model.recommend_for_history`` for listeners unknown to the model.

    ``history`` holds the artists (and plays) each test user gives the model; ``test`` the
    artists to find. Users are called one at a time, as a service would.
    """
    plays = history.groupby("user_id")
    parts = []
    for user in np.unique(test["user_id"].to_numpy()):
        rows = plays.get_group(user)
        recs = model.recommend_for_history(dict(zip(rows["artist_id"].tolist(), rows["weight"].tolist())),
                                           n=max(ks))
        parts.append(recs.assign(user_id=user))
    return ranking_metrics(pd.concat(parts, ignore_index=True), test, ks)


def candidate_recall(model, train: Dataset, test: pd.DataFrame) -> float:
    """Share of held-out (user, artist) pairs that the model's stage one retrieves (known artists left out)."""
    from funnel.rules import Rules

    users = np.intersect1d(np.unique(test["user_id"].to_numpy()), train.user_ids)
    test = test[test["user_id"].isin(users)]
    found = 0
    n_items = np.int64(train.n_artists)
    test_keys = np.sort(train.user_index(test["user_id"].to_numpy()) * n_items
                        + train.artist_index(test["artist_id"].to_numpy()))
    rows = train.user_index(users)
    for start in range(0, len(rows), 512):
        batch = rows[start:start + 512]
        history = model.history_[batch]
        known = Rules(model.artist_ids_).known(batch, history, model.tagged_)
        cands = model.stages_.candidates(Batch(batch, history, known=known))
        found += int(np.isin(batch[cands.rows] * n_items + cands.items, test_keys).sum())
    return found / max(len(test), 1)


def novelty(recommendations: pd.DataFrame, train: Dataset) -> float:
    """Mean self-information ``-log2(listeners / users)`` of the recommended artists.

    Popularity is measured in ``train``; artists nobody listened to count as one listener.
    """
    listeners = np.diff(train.matrix.tocsc().indptr).astype(np.float64)
    items = train.artist_index(recommendations["artist_id"].to_numpy())
    share = np.maximum(listeners[items], 1.0) / train.n_users
    return float(np.mean(-np.log2(share))) if len(share) else 0.0
