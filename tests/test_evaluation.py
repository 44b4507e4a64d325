"""Metrics against hand-computed answers and independent implementations."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from funnel.evaluation import ranking_metrics


def recs(rows):
    return pd.DataFrame(rows, columns=["user_id", "rank", "artist_id"])


def test_known_answers():
    # user 1: hits at ranks 1 and 3 of 3 recommended; 2 relevant. user 2: no hits, 1 relevant.
    r = recs([(1, 1, 10), (1, 2, 11), (1, 3, 12), (2, 1, 10), (2, 2, 11), (2, 3, 13)])
    test = pd.DataFrame({"user_id": [1, 1, 2], "artist_id": [10, 12, 99]})
    m = ranking_metrics(r, test, ks=(3,))
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall@3"] == pytest.approx((1 + 0) / 2)
    ndcg_user1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg_user1 / 2)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2) / 2)


def test_missing_users_count_as_zero():
    test = pd.DataFrame({"user_id": [1, 2], "artist_id": [10, 10]})
    m = ranking_metrics(recs([(1, 1, 10)]), test, ks=(1,))
    assert m["precision@1"] == 0.5 and m["ndcg@1"] == 0.5


def test_ndcg_matches_sklearn():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 40, 10
    relevance = (rng.random((n_users, n_items)) < 0.15).astype(float)
    relevance[relevance.sum(axis=1) == 0, 0] = 1
    scores = rng.random((n_users, n_items))
    order = np.argsort(-scores, axis=1)[:, :k]
    rows = [(u, r + 1, int(order[u, r])) for u in range(n_users) for r in range(k)]
    test = pd.DataFrame([(u, i) for u, i in zip(*np.nonzero(relevance))], columns=["user_id", "artist_id"])
    ours = ranking_metrics(recs(rows), test, ks=(k,))["ndcg@10"]
    assert ours == pytest.approx(ndcg_score(relevance, scores, k=k))
