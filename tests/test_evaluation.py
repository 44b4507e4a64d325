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


def test_metrics_match_implicits_ranking_metrics_at_k(synth):
    """Same ALS model and split: NDCG and MAP agree with implicit; its precision is total hits
    over the total of min(K, held-out) across users, which we reproduce from our lists."""
    from implicit.evaluation import ranking_metrics_at_k

    from funnel import split
    from funnel.baselines import ALSRecommender
    from funnel.evaluation import evaluate

    train, test = split.per_user(synth, seed=0)
    model = ALSRecommender(factors=8, iterations=5).fit(train)
    ours = evaluate(model, train, test, ks=(10,))
    rows = train.user_index(test["user_id"].to_numpy())
    cols = train.artist_index(test["artist_id"].to_numpy())
    import scipy.sparse as sp

    test_matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=train.matrix.shape)
    implicit_model = model.model_  # the baseline is implicit's own ALS model
    # implicit filters what its train_user_items hold: the known artists, played or tagged
    theirs = ranking_metrics_at_k(implicit_model, train.known_matrix(), test_matrix, K=10, show_progress=False)
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg"], rel=1e-6)
    assert ours["map@10"] == pytest.approx(theirs["map"], rel=1e-6)
    recs = model.recommend_all(n=10, users=np.unique(test["user_id"]))
    hits = recs.merge(test, on=["user_id", "artist_id"]).groupby("user_id").size()
    n_test = test.groupby("user_id").size()
    their_precision = hits.reindex(n_test.index, fill_value=0).sum() / np.minimum(10, n_test).sum()
    assert their_precision == pytest.approx(theirs["precision"], rel=1e-6)


def test_empty_inputs():
    from funnel import DataError

    test = pd.DataFrame({"user_id": [1], "artist_id": [10]})
    empty = pd.DataFrame({"user_id": [], "rank": [], "artist_id": []})
    assert ranking_metrics(empty, test, ks=(10,))["ndcg@10"] == 0.0
    with pytest.raises(DataError, match="empty"):
        ranking_metrics(recs([(1, 1, 10)]), test.iloc[:0], ks=(10,))


def test_novelty_is_the_mean_self_information():
    from funnel import Dataset
    from funnel.evaluation import novelty

    train = Dataset.from_frames(pd.DataFrame({"user_id": [1, 2, 3, 4], "artist_id": [10, 10, 11, 12],
                                              "weight": 1.0}),
                                artists=pd.DataFrame({"artist_id": [10, 11, 12, 13], "name": "x"}))
    # artist 10: 2 of 4 users (1 bit); 11: 1 of 4 (2 bits); 13: nobody, counted as one listener (2 bits)
    assert novelty(recs([(1, 1, 10), (1, 2, 11), (2, 1, 13)]), train) == pytest.approx(5 / 3)
    assert novelty(recs([]), train) == 0.0


def test_new_listeners_are_evaluated_one_request_at_a_time(synth):
    from funnel import split
    from funnel.baselines import PopularityRecommender
    from funnel.evaluation import evaluate_new_users

    train, history, test = split.new_users(synth, seed=0)
    model = PopularityRecommender().fit(train)
    calls = []
    real = model.recommend_for_history
    model.recommend_for_history = lambda h, n: calls.append(h) or real(h, n)
    metrics = evaluate_new_users(model, history, test, ks=(10,))
    assert len(calls) == test["user_id"].nunique()
    first = test["user_id"].min()
    assert calls[0] == dict(history.loc[history["user_id"] == first, ["artist_id", "weight"]].to_numpy().tolist())
    expected = ranking_metrics(pd.concat([real(h, 10).assign(user_id=u) for h, u in
                                          zip(calls, np.unique(test["user_id"]))]), test, ks=(10,))
    assert metrics == pytest.approx(expected)
    assert 0 < metrics["recall@10"] < 1
