"""The ranker's labels follow time when the data has listen times (``ranker_labels``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import Dataset, FunnelConfig, Recommender
from funnel.batch import Batch
from funnel.data.split import per_user
from funnel.errors import ConfigError
from funnel.factors.recency import ListenTimes
from funnel.ranking.training import history_split, temporal_labels
from tests.conftest import with_listen_times

DAY = np.timedelta64(1, "D")
START = np.datetime64("2024-01-01", "ns")


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["artist_id"].tolist()))


@pytest.fixture(scope="module")
def timed() -> Dataset:
    """Listener 1 started artists 1..5 on days 1..5 and played artist 1 until day 20; listener 2
    started them in the opposite order; listener 3 has one artist. Listener 1 tagged artist 1 on
    day 10 and artist 2 on day 3."""
    first = np.r_[1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 1]
    last = first + 1
    last[0] = 20
    inter = pd.DataFrame({"user_id": [1] * 5 + [2] * 5 + [3], "artist_id": [1, 2, 3, 4, 5] * 2 + [1],
                          "weight": [20.0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                          "first_listen": START + first * DAY, "last_listen": START + last * DAY})
    tags = pd.DataFrame({"tag_id": [1], "tag": ["rock"]})
    assign = pd.DataFrame({"user_id": [1, 1], "artist_id": [1, 2], "tag_id": [1, 1],
                           "timestamp": [START + 10 * DAY, START + 3 * DAY]})
    return Dataset.from_frames(inter, tags=tags, tag_assignments=assign)


def untimed(dataset: Dataset) -> Dataset:
    return Dataset.from_frames(dataset.interactions[["user_id", "artist_id", "weight"]])


CONFIG = FunnelConfig(ranker_holdout=0.4, recency_half_life_days=None)


def test_auto_holds_out_each_listeners_latest_started_artists(timed):
    assert temporal_labels(timed, CONFIG)
    history, labels = history_split(timed, CONFIG)
    assert pairs(labels) == {(1, 4), (1, 5), (2, 2), (2, 1)}
    assert pairs(history.interactions) == pairs(timed.interactions) - pairs(labels)


@pytest.mark.parametrize("data", ["timed", "untimed"])
def test_random_labels_are_the_per_user_split(timed, data):
    dataset = timed if data == "timed" else untimed(timed)
    config = CONFIG.replace(ranker_labels="random" if data == "timed" else "auto")
    assert not temporal_labels(dataset, config)
    history, labels = history_split(dataset, config)
    expected = per_user(dataset, 0.4, min_artists=2, seed=config.seed)
    pd.testing.assert_frame_equal(labels, expected.test)
    pd.testing.assert_frame_equal(history.interactions, expected.train.interactions)


def test_temporal_labels_without_listen_times_raise(timed):
    with pytest.raises(ConfigError, match="ranker_labels='temporal' needs listen times"):
        history_split(untimed(timed), CONFIG.replace(ranker_labels="temporal"))
    with pytest.raises(ConfigError, match="ranker_labels"):
        FunnelConfig(ranker_labels="latest")


def test_history_as_of_cutoff_holds_nothing_after_a_listeners_first_label(timed):
    history, labels = history_split(timed, CONFIG, cutoff=True)
    inter = history.interactions.set_index(["user_id", "artist_id"])
    cutoffs = labels.groupby("user_id")["first_listen"].min()
    held = inter.loc[list(cutoffs.index)]
    assert (held["last_listen"] <= held.index.get_level_values("user_id").map(cutoffs)).all()
    # listener 1's artist 1, played days 1..20, keeps the 3/19 of its plays before its cutoff (day 4)
    assert inter.loc[(1, 1), "last_listen"] == START + 4 * DAY
    assert inter.loc[(1, 1), "weight"] == pytest.approx(20.0 * 3 / 19)
    assert inter.loc[(1, 2), "weight"] == 2.0 and inter.loc[(3, 1), "weight"] == 2.0
    assert pairs(history.tag_assignments) == {(1, 2)}  # the tag of day 10 came after the cutoff
    aged = history_split(timed, CONFIG.replace(recency_half_life_days=8.0), cutoff=True)[0]
    aged_weight = aged.interactions.set_index(["user_id", "artist_id"]).loc[(1, 1), "weight"]
    assert aged_weight == pytest.approx(20.0 * 3 / 19 * 0.5 ** (16 / 8))  # 16 days younger


def test_recent_starts_are_each_listeners_latest_started_artists(timed):
    model = ListenTimes(recent_starts=2).fit(timed)
    starts = model.starts_.toarray()
    columns = timed.artist_index(np.array([1, 2, 3, 4, 5]))
    assert starts[timed.user_index(np.array([1, 2, 3]))][:, columns].tolist() == [
        [0, 0, 0, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]
    # a new listener brings no times: every artist of their history is a recent start
    history = sp.csr_matrix(np.array([[0, 3.0, 0, 1.0, 0]], np.float32)[:, np.argsort(columns)])
    batch = Batch(np.array([-1, timed.user_index(np.array([1]))[0]]), sp.vstack([history, timed.matrix[0]]))
    assert model.user_starts(batch).toarray()[:, columns].tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 1, 1]]


def test_a_funnel_fits_with_temporal_labels_and_recent_starts(synth, small_config, fitted):
    model = Recommender(small_config, ranker_labels="temporal").fit(with_listen_times(synth))
    assert model.ranker_candidate_recall_ > 0
    assert len(model.recommend_all(n=5, users=synth.user_ids[:3])) == 15
    starts = {"recent_starts_als", "recent_starts_ease"}
    assert starts <= set(model.feature_names_)
    assert not starts & set(fitted.feature_names_)  # no listen times: no recency columns
    without = Recommender(small_config, models={**small_config.models, "listen_times": {"recent_starts": 0}})
    assert not starts & set(without.fit(with_listen_times(synth)).feature_names_)
