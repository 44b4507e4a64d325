import numpy as np
import pytest
from implicit.evaluation import train_test_split

from funnel import ConfigError, split


def pairs(frame):
    return set(zip(frame["user_id"], frame["artist_id"]))


def test_per_user_holds_out_a_fifth_of_each_eligible_user(synth):
    train, test = split.per_user(synth, seed=1)
    counts = synth.interactions.groupby("user_id").size()
    held = test.groupby("user_id").size().reindex(counts.index, fill_value=0)
    expected = np.where(counts >= 5, np.clip(np.round(0.2 * counts), 1, counts - 1), 0)
    assert (held.to_numpy() == expected).all()
    assert not pairs(train.interactions) & pairs(test)
    assert pairs(train.interactions) | pairs(test) == pairs(synth.interactions)
    assert split.per_user(synth, seed=1).test.equals(test)
    assert not split.per_user(synth, seed=2).test.equals(test)


@pytest.mark.parametrize("make", [lambda d: split.per_user(d, seed=0),
                                  lambda d: split.global_random(d, seed=0)])
def test_splits_remove_held_out_pairs_from_tag_assignments(synth, make):
    train, test = make(synth)
    tagged = pairs(synth.tag_assignments)
    assert tagged & pairs(test), "the fixture should tag some held-out pairs"
    assert not pairs(train.tag_assignments) & pairs(test)
    kept = pairs(synth.tag_assignments) - pairs(test)
    assert pairs(train.tag_assignments) == kept


def test_global_split_is_implicits(synth):
    train, test = split.global_random(synth, seed=5)
    _, expected = train_test_split(synth.matrix.tocoo(), 0.8, random_state=5)
    expected = expected.tocoo()
    want = set(zip(synth.user_ids[expected.row], synth.artist_ids[expected.col]))
    assert pairs(test) == want


def test_split_arguments_are_checked(synth):
    with pytest.raises(ConfigError, match="test_fraction"):
        split.per_user(synth, test_fraction=1.5)
    with pytest.raises(ConfigError, match="train_percentage"):
        split.global_random(synth, train_percentage=0)


def test_new_users_leave_training_entirely(synth):
    train, history, test = split.new_users(synth, user_fraction=0.1, seed=3)
    held = set(history["user_id"]) | set(test["user_id"])
    assert len(held) == round(0.1 * synth.n_users)
    assert not held & set(train.user_ids) and not held & set(train.tag_assignments["user_id"])
    assert not pairs(history) & pairs(test)
    assert pairs(history) | pairs(test) == pairs(synth.interactions[synth.interactions["user_id"].isin(held)])
    assert set(history["user_id"]) == held  # every held-out listener keeps a history to give the model
    assert train.n_artists == synth.n_artists  # the catalogue is unchanged
    again = split.new_users(synth, user_fraction=0.1, seed=3)
    assert again.test.equals(test) and again.history.equals(history)
    with pytest.raises(ConfigError, match="user_fraction"):
        split.new_users(synth, user_fraction=1.0)


def test_ratio_split_rounds_as_recbole_does():
    import pandas as pd

    from funnel import Dataset

    # users with 1, 2, 5, 9, 10, 23 and 50 artists; RecBole's [train, validation, test] counts
    expected = {1: [1, 0, 0], 2: [1, 0, 1], 5: [3, 1, 1], 9: [7, 1, 1], 10: [8, 1, 1], 23: [19, 2, 2], 50: [40, 5, 5]}
    rows = [(user, user * 100 + a, 1.0 + a) for user, n in enumerate(expected) for a in range(list(expected)[user])]
    data = Dataset.from_frames(pd.DataFrame(rows, columns=["user_id", "artist_id", "weight"]))
    parts = split.ratio(data, seed=3)
    counts = {user: [int((frame["user_id"] == user).sum()) for frame in
                     (parts.train.interactions, parts.validation, parts.test)] for user in range(len(expected))}
    assert list(counts.values()) == list(expected.values())
    every = [pairs(parts.train.interactions), pairs(parts.validation), pairs(parts.test)]
    assert not (every[0] & every[1] or every[0] & every[2] or every[1] & every[2])
    assert every[0] | every[1] | every[2] == pairs(data.interactions)
    assert split.ratio(data, seed=3).test.equals(parts.test) and not split.ratio(data, seed=4).test.equals(parts.test)
    with pytest.raises(ConfigError, match="three positive numbers"):
        split.ratio(data, ratios=(0.8, 0.2))


def test_ratio_split_removes_both_held_out_parts_from_tag_assignments(synth):
    parts = split.ratio(synth, seed=0)
    assert not pairs(parts.train.tag_assignments) & (pairs(parts.validation) | pairs(parts.test))
