"""Every baseline has the Recommender's fit / recommend_all shape and its invariants."""

import numpy as np
import pytest

from funnel import NotFittedError, UnknownUserError
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
