"""Every baseline has the Recommender's fit / recommend_all shape and its invariants."""

import numpy as np
import pytest

from funnel import ConfigError, NotFittedError, UnknownUserError
from funnel.baselines import ALSRecommender, BPRRecommender, EASERecommender, PopularityRecommender

BASELINES = {
    "als": lambda: ALSRecommender(factors=8, iterations=5),
    "popularity": PopularityRecommender,
    "bpr": lambda: BPRRecommender(factors=8, iterations=20),
    "ease": lambda: EASERecommender(l2=50.0),
}


@pytest.fixture(params=sorted(BASELINES))
def make(request):
    return BASELINES[request.param]


def test_baseline_contract(make, synth):
    model = make()
    with pytest.raises(NotFittedError):
        model.recommend_all()
    assert model.fit(synth) is model
    recs = model.recommend_all(n=10)
    assert list(recs.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
    seen = set(zip(synth.interactions["user_id"], synth.interactions["artist_id"]))
    assert not seen & set(zip(recs["user_id"], recs["artist_id"]))
    assert not recs.duplicated(["user_id", "artist_id"]).any()
    for _, group in recs.groupby("user_id"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["score"].is_monotonic_decreasing
    some = synth.user_ids[:3]
    assert set(model.recommend_all(n=5, users=some)["user_id"]) == set(some)
    with pytest.raises(UnknownUserError):
        model.recommend_all(users=[10**9])


def test_popularity_is_the_chart(synth):
    recs = PopularityRecommender().fit(synth).recommend_all(n=5)
    listeners = synth.interactions.groupby("artist_id").size()
    first = recs[recs["rank"] == 1]
    assert (listeners.reindex(first["artist_id"]).to_numpy() >= np.sort(listeners.to_numpy())[-30]).all()


@pytest.mark.parametrize("user_id", [2**63 - 1, 2**63, -2**63 - 1, 2**70])
def test_baselines_call_ids_beyond_the_catalogue_unknown_users(synth, user_id):
    model = PopularityRecommender().fit(synth)
    with pytest.raises(UnknownUserError, match="unknown user id"):
        model.recommend_all(users=[int(synth.user_ids[0]), user_id])


@pytest.mark.parametrize("tagged_known", [True, False])
def test_als_baseline_ranks_the_unknown_artists_by_its_factors(synth, tagged_known):
    model = ALSRecommender(factors=8, iterations=5, tagged_known=tagged_known).fit(synth)
    recs = model.recommend_all(n=10)
    assert len(recs) == 10 * synth.n_users
    scores = np.asarray(model.model_.user_factors) @ np.asarray(model.model_.item_factors).T
    seen = synth.known_matrix(tagged_known).tocoo()  # played, and tagged under the rule
    assert seen.nnz > synth.matrix.nnz if tagged_known else seen.nnz == synth.matrix.nnz
    scores[seen.row, seen.col] = -np.inf
    best = np.sort(scores, axis=1)[:, ::-1][:, :10]  # the ten best unknown scores of every user
    np.testing.assert_allclose(recs["score"].to_numpy().reshape(-1, 10), best, rtol=1e-4, atol=1e-5)
    rows = synth.user_index(recs["user_id"].to_numpy())
    cols = synth.artist_index(recs["artist_id"].to_numpy())
    np.testing.assert_allclose(recs["score"].to_numpy(), scores[rows, cols], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["als", "ease", "popularity"])
def test_baselines_fold_in_new_listeners(synth, name):
    model = BASELINES[name]().fit(synth)
    user = int(synth.user_ids[3])
    history = synth.interactions.query("user_id == @user").set_index("artist_id")["weight"].to_dict()
    recs = model.recommend_for_history(history, n=10)
    assert list(recs.columns) == ["rank", "artist_id", "artist_name", "score"]
    assert recs["rank"].tolist() == list(range(1, 11)) and not set(recs["artist_id"]) & set(history)
    assert recs["score"].is_monotonic_decreasing
    known = set(model.recommend_all(n=10, users=[user])["artist_id"])
    assert len(known & set(recs["artist_id"])) >= 7  # a user's own history gives (nearly) their own list


def test_bpr_has_no_fold_in(synth):
    model = BASELINES["bpr"]().fit(synth)
    with pytest.raises(ConfigError, match="no fold-in for new listeners"):
        model.recommend_for_history([1, 2, 3])


def test_batches_on_threads_give_what_one_batch_gives(synth, monkeypatch):
    model = EASERecommender(l2=50.0).fit(synth)
    whole = model.recommend_all(n=10)
    monkeypatch.setattr(model, "batch_users", 7)  # 22 batches on every core
    batched = model.recommend_all(n=10)
    assert batched.drop(columns="score").equals(whole.drop(columns="score"))
    np.testing.assert_allclose(batched["score"], whole["score"], rtol=1e-5, atol=1e-7)


def test_in_batches_keeps_the_order_and_shape():
    import pandas as pd

    from funnel.threadpool import RECOMMENDATION_COLUMNS, in_batches

    def rank_batch(rows):
        return pd.DataFrame({"user_id": rows, "rank": 1, "artist_id": rows * 10, "artist_name": "", "score": 1.0})

    rows = np.arange(103)
    for n_threads in (1, 4):
        out = in_batches(rank_batch, rows, 10, n_threads)
        assert out["user_id"].tolist() == rows.tolist() and out.index.tolist() == list(range(103))
    empty = in_batches(rank_batch, np.arange(0), 10, 4)
    assert list(empty.columns) == list(RECOMMENDATION_COLUMNS) and empty.empty
