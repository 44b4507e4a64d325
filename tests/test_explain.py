"""Explanations: the helpers on known answers, and the Recommender's explain columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import Dataset, Recommender
from funnel.batch import Batch
from funnel.explain import Reasons, closest_history, feature_groups, found_by, reason, top_contributions
from funnel.protocols import ExplanationDriver, FriendsEvidence, SimilaritySpace

EXPLAIN_COLUMNS = ["sources", "because_ids", "because", "contributions", "reason"]


def test_closest_history_picks_the_most_similar_history_artists():
    vectors = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0.9, 0.1]], np.float32)
    history = sp.csr_matrix(np.array([[1, 1, 1, 1, 0]], np.float32))
    pair, artist, similarity = closest_history(vectors, history, np.array([0]), np.array([4]), k=2)
    assert pair.tolist() == [0, 0]
    assert artist.tolist() == [0, 2]  # artist 3 points away, artist 1 is less similar than 2
    assert np.all(np.diff(similarity) <= 0) and np.all(similarity > 0)


def test_found_by_and_grouped_contributions():
    ranks = {"tags": np.array([1, 41], np.float32), "ease": np.array([21, 3], np.float32)}
    assert found_by(ranks, {"tags": 40, "ease": 20}) == [{"tags": 1}, {"ease": 3}]
    names = ["svd_artist_0", "svd_artist_1", "ease_score", "tag_similarity"]
    top = top_contributions(np.array([[1.0, 2.0, -0.5, 0.1]]), names, k=2)
    assert top == [{"svd_artist": 3.0, "ease_score": -0.5}]
    groups, group_of = feature_groups(names)
    assert groups == ["svd_artist", "ease_score", "tag_similarity"] and group_of.tolist() == [0, 0, 1, 2]


def test_reason_says_in_words_what_led_to_the_artist(fitted):
    reasons = Reasons.of(fitted.stages_)
    line = reason({"ease": 3, "tags": 1}, ["Duran Duran", "Camouflage"], {"ease_score": 0.5, "tag_similarity": 0.2},
                  3, reasons)
    assert line == "because you listen to Duran Duran and Camouflage; its tags match what you play; " \
        "3 of your friends play it"
    # the strongest contribution comes first: here the friends
    assert reason({"friends": 1}, ["A", "B", "C"], {"friends_log_count": 2.0, "als_score": 0.4}, 1, reasons) == \
        "1 of your friends plays it; because you listen to A, B and C"
    assert reason({"popularity": 2}, [], {}, 0, reasons) == "popular with listeners"
    assert reason({"als": 4}, [], {"als_score": 1.0}, 0, reasons) == "listeners like you play it"
    # the words come from the parts (funnel.protocols.ReasonGiver), not from their names
    assert [reasons.words.get(g, "listening") for g in ("friends_share", "tags_log_rank", "tag_similarity",
                                                        "artist_log_plays", "popularity_source_score", "ease_score",
                                                        "svd_prediction")] == \
        ["friends", "tags", "tags", "popular", "popular", "listening", "listening"]
    assert reasons.phrases == {"tags": "its tags match what you play"}


def test_a_second_tag_source_speaks_like_the_first(synth, small_config):
    config = small_config.replace(candidates={"popularity": 5, "tags_2": {"part": "tags", "n": 30}},
                                  features=("sources", "als"))
    model = Recommender(config).fit(synth)
    reasons = Reasons.of(model.stages_)
    assert reasons.phrases == {"tags_2": "its tags match what you play"}
    assert reasons.words["tags_2_log_rank"] == "tags" and reasons.words["popularity_log_rank"] == "popular"
    assert reason({"tags_2": 1}, [], {}, 0, reasons) == "its tags match what you play"


def check_explanations(frame: pd.DataFrame, model: Recommender, history_ids: set[int]) -> None:
    assert list(frame.columns[-5:]) == EXPLAIN_COLUMNS
    limits = {s.name: s.n_candidates for s in model.stages_.sources_}
    constant = set().union(*(group.constant_per_user for group in model.stages_.features_))
    assert constant  # the user feature group is configured: its per-user columns must stay out
    for row in frame.itertuples(index=False):
        assert all(1 <= rank <= limits[name] for name, rank in row.sources.items())
        assert len(row.because_ids) <= 3 and set(row.because_ids) <= history_ids
        assert len(row.because) == len(row.because_ids)
        assert 1 <= len(row.contributions) <= 3
        assert not constant & set(row.contributions)  # they shift a user's scores, they do not rank
        assert isinstance(row.reason, str) and row.reason


def test_the_built_in_parts_offer_their_capabilities_through_the_stages(fitted):
    stages = fitted.stages_
    spaces = {type(part).__name__: part.similarity_space() for part in stages.offering(SimilaritySpace)}
    assert spaces["TagSource"] == ("tags", 0.0) and spaces["ArtistEmbedder"] == ("tags", 10.0)
    assert spaces["ALSFactors"] == ("als", 20.0) and spaces["EASE"] == ("ease", 30.0)
    drivers = sorted(stages.offering(ExplanationDriver), key=lambda part: part.because_preference)
    assert drivers[0] is stages.models_["als"]
    (friends,) = stages.offering(FriendsEvidence)
    assert fitted.feature_names_[stages.columns_of(friends)] == ["friends_log_count", "friends_share"]
    X = np.log1p(np.array([[0.0, 0.0], [3.0, 0.5]]))
    np.testing.assert_array_equal(friends.friends_playing(X), [0, 3])


def test_explained_recommendations_are_the_same_recommendations(fitted, synth):
    user = int(synth.user_ids[5])
    plain = fitted.recommend(user, n=10)
    explained = fitted.recommend(user, n=10, explain=True)
    pd.testing.assert_frame_equal(plain, explained[plain.columns])
    history = set(synth.interactions.query("user_id == @user")["artist_id"])
    check_explanations(explained, fitted, history)
    assert any(row for row in explained["sources"])  # stage one, not only the fallback
    assert explained["because_ids"].map(len).sum() > 0


def test_explanations_for_new_listeners_and_batches(fitted, synth):
    history = [1, 5, 9, 13]
    explained = fitted.recommend_for_history(history, n=5, explain=True)
    check_explanations(explained, fitted, set(history))
    batch = fitted.recommend_all(n=5, users=synth.user_ids[:20].tolist(), explain=True)
    assert len(batch) == 100 and batch["reason"].str.len().min() > 0


@pytest.mark.parametrize("tag_source", [True, False])
def test_similar_artists_come_from_the_same_cluster(fitted, synth, small_config, tag_source):
    without_tags = {name: k for name, k in small_config.candidates.items() if name != "tags"}
    model = fitted if tag_source else Recommender(small_config, candidates=without_tags).fit(synth)
    assert any(s.name == "tags" for s in model.stages_.sources_) == tag_source
    similar = model.similar_artists(1, n=10)
    assert similar["rank"].tolist() == list(range(1, 11))
    assert 1 not in set(similar["artist_id"])
    assert ((similar["artist_id"] - 1) % 4 == 0).mean() >= 0.8
    assert np.all(np.diff(similar["similarity"]) <= 1e-6)


def test_artists_with_tags_and_no_listeners_are_reachable(synth, small_config):
    silent = 201  # cluster 0 ((id - 1) % 4 == 0), tagged like its cluster
    data = Dataset.from_frames(synth.interactions.query("artist_id != @silent"), synth.artists, synth.tags,
                               synth.tag_assignments, synth.friends)
    model = Recommender(small_config, candidates={**small_config.candidates, "tags": 80}).fit(data)
    row = model.history_matrix([1, 5, 9, 13, 17, 21])
    cands = model.stages_.candidates(Batch(np.array([-1]), row))
    assert data.artist_index(np.array([silent]))[0] in set(cands.items.tolist())
    assert ((model.similar_artists(silent, n=10)["artist_id"] - 1) % 4 == 0).mean() >= 0.8
