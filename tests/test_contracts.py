"""One contract per protocol, run on every registered part: candidate sources, feature groups, rankers,
and the capabilities a part offers (an artist space, an explanation driver, friends evidence).

The parts are built the way a Recommender builds them: by name from a configuration that
names every registered part, through a fitted :class:`funnel.stages.Stages`. A part added to
a registry is checked here without a line of test code of its own.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import FunnelConfig
from funnel.batch import Batch
from funnel.candidates import SOURCES
from funnel.data.synthetic import synthetic
from funnel.factors import MODELS
from funnel.protocols import (
    CandidateSource,
    ExplanationDriver,
    FeatureGroup,
    FriendsEvidence,
    Model,
    PartState,
    PartUpdate,
    Ranker,
    SimilaritySpace,
    Updatable,
)
from funnel.ranking import FEATURES, RANKERS
from funnel.stages import Stages
from tests.conftest import SMALL, SYNTH, with_listen_times

K = 15


def names(registry) -> list[str]:
    """The registered parts and those of installed packages' entry points (docs/extending.md's among them)."""
    return sorted({*registry, *(point.name for point in entry_points(group=registry.group))})


SOURCE_NAMES = names(SOURCES)
FEATURE_NAMES = names(FEATURES)
RANKER_NAMES = names(RANKERS)
MODEL_NAMES = names(MODELS)


@pytest.fixture(scope="module")
def synth():
    """The shared synthetic data with listen times, so that every group has its columns."""
    return with_listen_times(synthetic(**SYNTH))


@pytest.fixture(scope="module")
def config() -> FunnelConfig:
    return FunnelConfig(**{**SMALL, "candidates": {name: K for name in SOURCE_NAMES},
                           "features": tuple(FEATURE_NAMES)})


@pytest.fixture(scope="module")
def stages(config, synth) -> Stages:
    return Stages(config).fit(synth)


def copied(states: dict[str, PartState]) -> dict[str, PartState]:
    """The states as a save and load would give them back: nothing shared with the fitted parts."""
    return {key: PartState({k: np.array(v, copy=True) for k, v in s.arrays.items()}, dict(s.files))
            for key, s in states.items()}


@pytest.fixture(scope="module")
def restored(config, stages) -> Stages:
    return Stages.from_state(config, copied(stages.get_state()), stages.source_names)


def batch_of(synth) -> Batch:
    """Every training user, then two new listeners (-1) with the histories of users 0 and 1."""
    users = np.concatenate([np.arange(synth.n_users), [-1, -1]])
    return Batch(users, sp.vstack([synth.matrix, synth.matrix[:2]]).tocsr())


def part(parts: list, name: str):
    found = [p for p in parts if p.name == name]
    assert len(found) == 1, f"{name} is registered but the stages did not build it"
    return found[0]


def test_every_registered_part_is_built(stages):
    assert sorted(stages.source_names) == SOURCE_NAMES
    assert sorted(g.name for g in stages.features_) == FEATURE_NAMES
    assert sorted(stages.models_) == MODEL_NAMES  # every shared model is read by some part


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_contract(name, stages, restored, synth):
    model, again = stages.models_[name], restored.models_[name]
    assert isinstance(model, Model) and model.name == name
    state = model.get_state()
    assert isinstance(state, PartState) and state.arrays or state.files
    for array in model.user_arrays:  # what grows with the training users is in the state
        assert array in state.arrays or f"{array}indptr" in state.arrays
    # a model rebuilt from its state gives the same state back
    for key, value in again.get_state().arrays.items():
        np.testing.assert_array_equal(value, state.arrays[key])
    assert again.get_state().files == state.files


# updates -----------------------------------------------------------------------------
def nothing_new(synth) -> PartUpdate:
    """An update with no plays, no listener and no artist."""
    empty = sp.csr_matrix((0, synth.n_artists), dtype=np.float32)
    return PartUpdate(np.arange(synth.n_artists), synth.n_artists, empty, empty, np.zeros(0, np.int64),
                      synth.n_users, None, None,
                      pd.DataFrame({"artist": np.zeros(0, np.int64), "tag": [], "assigned": []}), np.zeros(0, np.int64))


def one_new_artist(synth) -> PartUpdate:
    """A new artist at index 0 (every other moves up one), played by user 0 and a new listener."""
    n = synth.n_artists + 1
    plays = sp.csr_matrix(np.array([[0, 3, 0, 0, 1], [2, 0, 0, 1, 0]], np.float32))
    plays = sp.csr_matrix((plays.data, plays.indices, plays.indptr), shape=(2, n))
    before = sp.csr_matrix((2, n), dtype=np.float32)
    return PartUpdate(np.arange(1, n), n, plays, before, np.array([0, synth.n_users]), synth.n_users + 1,
                      None, None,
                      pd.DataFrame({"artist": [0, 0], "tag": ["rock", "cluster0"], "assigned": [True, False]}),
                      np.zeros(0, np.int64))


def fresh_parts(config, stages) -> Stages:
    return Stages.from_state(config, copied(stages.get_state()), stages.source_names)


def every_part(stages: Stages) -> list:
    return [*stages.models_.values(), *stages.sources_, *stages.features_]


def test_every_part_with_state_can_be_updated(stages):
    for item in every_part(stages):
        state = item.get_state()
        assert isinstance(item, Updatable) or not (state.arrays or state.files), item.name


def test_an_update_with_nothing_new_changes_no_part(config, stages, synth):
    again = fresh_parts(config, stages)
    for item in every_part(again):
        if isinstance(item, Updatable):
            assert item.update(nothing_new(synth)) is item
    for (key, state), (_, after) in zip(stages.get_state().items(), again.get_state().items()):
        assert state.arrays.keys() == after.arrays.keys(), key
        for name, value in state.arrays.items():
            if value.dtype.kind in "fc":
                np.testing.assert_allclose(after.arrays[name], value, rtol=1e-6, err_msg=f"{key} {name}")
            else:
                np.testing.assert_array_equal(after.arrays[name], value, err_msg=f"{key} {name}")


def test_parts_take_a_new_artist_and_a_new_listener(config, stages, synth):
    again = fresh_parts(config, stages)
    change = one_new_artist(synth)
    for item in every_part(again):
        if isinstance(item, Updatable):
            item.update(change)
    history = sp.csr_matrix(sp.hstack([sp.csr_matrix((synth.n_users, 1)), synth.matrix]))
    batch = Batch(np.concatenate([np.arange(synth.n_users), [synth.n_users, -1]]),
                  sp.vstack([history, change.after[1], history[0]]).tocsr())
    cands = again.candidates(batch, fallback=5)
    assert cands.items.max() < change.n_artists
    X = again.features(batch, cands)
    assert X.shape == (len(cands), len(again.feature_names_)) and np.isfinite(X).all()
    # an old artist's values move with it to its new index
    old = stages.models_["popularity"].scores_
    np.testing.assert_allclose(again.models_["popularity"].scores_[1:][old > 0][:5], old[old > 0][:5], rtol=0.5)


# candidate sources -------------------------------------------------------------------
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_source_contract(name, stages, synth):
    source = part(stages.sources_, name)
    assert isinstance(source, CandidateSource) and source.n_candidates == K
    assert set(source.requires) <= set(stages.models_)
    batch = batch_of(synth)
    ids, scores = source.retrieve(batch)
    assert ids.shape == scores.shape == (len(batch), K)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    valid = ids >= 0
    assert (ids[valid] < synth.n_artists).all() and (ids[~valid] == -1).all()
    # padding: -1 ids exactly where the scores are -inf, and only after a row's candidates
    np.testing.assert_array_equal(np.isneginf(scores), ~valid)
    assert np.isfinite(scores[valid]).all()
    assert not (np.diff(valid.astype(np.int8), axis=1) > 0).any(), "a candidate after padding"
    # best first
    steps = np.diff(np.where(valid, scores, np.nan), axis=1)
    assert (steps[valid[:, 1:]] <= 1e-5).all(), "not best first"
    # never an artist of the user's history, never one twice
    seen = batch.history.toarray() > 0
    row, col = np.nonzero(valid)
    assert not seen[row, ids[row, col]].any(), "returned an artist from the history"
    for r in range(len(ids)):  # test-only loop
        assert len(np.unique(ids[r, valid[r]])) == valid[r].sum()
    assert valid[:synth.n_users].any(axis=1).mean() > 0.5, "the source finds nothing for most users"


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_source_state_round_trips(name, stages, restored, synth):
    state = part(stages.sources_, name).get_state()
    assert isinstance(state, PartState)
    assert all(isinstance(v, np.ndarray) for v in state.arrays.values())
    assert all(isinstance(v, bytes) for v in state.files.values())
    ids, scores = part(stages.sources_, name).retrieve(batch_of(synth))
    again_ids, again_scores = part(restored.sources_, name).retrieve(batch_of(synth))
    np.testing.assert_array_equal(again_ids, ids)
    np.testing.assert_allclose(again_scores, scores, rtol=1e-5, atol=1e-6)


# feature groups ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def candidates(stages, synth):
    batch = batch_of(synth)
    return batch, stages.candidates(batch, fallback=5)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_group_contract(name, stages, candidates, synth):
    group = part(stages.features_, name)
    assert isinstance(group, FeatureGroup)
    assert set(group.requires) <= set(stages.models_)
    batch, cands = candidates
    columns = group.columns(stages.source_names)
    assert columns and len(set(columns)) == len(columns)
    assert group.constant_per_user <= set(columns)
    values = np.asarray(group.compute(batch, cands))
    # one column may come as a 1-D array (stack_columns takes either)
    assert values.shape == (len(cands), len(columns)) or (len(columns) == 1 and values.shape == (len(cands),))
    values = values.reshape(len(cands), len(columns))
    assert np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all()
    # the columns it calls constant per user are
    for column in group.constant_per_user:
        at = values[:, columns.index(column)]
        first = at[np.searchsorted(cands.rows, cands.rows)]  # each pair's user's first pair
        np.testing.assert_allclose(at, first, rtol=1e-6)
    # a fresh batch of the same users gives the same values (nothing kept from the last batch)
    again = np.asarray(group.compute(batch_of(synth), cands)).reshape(len(cands), -1)
    np.testing.assert_allclose(again, values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FEATURE_NAMES)
def test_feature_group_state_round_trips(name, stages, restored, candidates, synth):
    state = part(stages.features_, name).get_state()
    assert isinstance(state, PartState)
    _, cands = candidates
    values = part(stages.features_, name).compute(batch_of(synth), cands)
    again = part(restored.features_, name).compute(batch_of(synth), cands)
    np.testing.assert_allclose(np.asarray(again), np.asarray(values), rtol=1e-5, atol=1e-6)


def test_stages_features_are_the_groups_side_by_side(stages, candidates):
    batch, cands = candidates
    X = stages.features(batch, cands)
    assert X.shape == (len(cands), len(stages.feature_names_)) and X.dtype == np.float32
    assert len(set(stages.feature_names_)) == len(stages.feature_names_)
    assert stages.ranking_columns_.sum() < len(stages.feature_names_)  # the user group's constant ones


# capabilities ------------------------------------------------------------------------
def offered(stages: Stages, capability: type) -> dict[str, object]:
    parts = stages.offering(capability)
    keyed = {f"{type(p).__name__}/{p.name}": p for p in parts}
    assert len(keyed) == len(parts)
    return keyed


def test_every_artist_space_gives_the_nearest_other_artists(stages, restored, synth):
    spaces = offered(stages, SimilaritySpace)
    assert spaces and offered(restored, SimilaritySpace).keys() == spaces.keys()
    columns, n = np.array([0, 5, 0]), 8
    for key, space_part in spaces.items():
        space = space_part.similarity_space()
        assert isinstance(space.name, str) and space.name and np.isfinite(space.preference), key
        ids, scores = space_part.nearest_artists(columns, n)
        assert ids.shape == scores.shape == (len(columns), n) and ids.dtype == np.int64, key
        assert scores.dtype == np.float32 and ((ids >= -1) & (ids < synth.n_artists)).all(), key
        assert not (ids == columns[:, None]).any(), f"{key} gives an artist as its own neighbour"
        np.testing.assert_array_equal(np.isfinite(scores), ids >= 0)
        assert (np.diff(np.where(ids >= 0, scores, -np.inf), axis=1) <= 1e-6).all(), f"{key} is not best first"
        np.testing.assert_array_equal(ids[0], ids[2])  # a row does not depend on the others
        again_ids, again_scores = offered(restored, SimilaritySpace)[key].nearest_artists(columns, n)
        np.testing.assert_array_equal(again_ids, ids)
        np.testing.assert_allclose(again_scores, scores, rtol=1e-5, atol=1e-6)


def test_every_explanation_driver_gives_one_vector_per_artist(stages, synth):
    drivers = offered(stages, ExplanationDriver)
    assert drivers
    for key, driver in drivers.items():
        vectors = driver.because_vectors()
        assert vectors.ndim == 2 and len(vectors) == synth.n_artists and np.isfinite(vectors).all(), key
        assert np.isfinite(driver.because_preference), key


def test_friends_evidence_counts_friends_from_the_groups_own_columns(stages, candidates):
    batch, cands = candidates
    X = stages.features(batch, cands)
    groups = offered(stages, FriendsEvidence)
    assert groups
    for key, group in groups.items():
        counts = group.friends_playing(X[:, stages.columns_of(group)])
        assert counts.shape == (len(cands),) and np.issubdtype(counts.dtype, np.integer), key
        assert (counts >= 0).all() and counts.any(), key


# rankers -----------------------------------------------------------------------------
def labelled(seed: int, n_users: int = 60, per_user: int = 30):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_users), per_user)
    X = rng.normal(size=(len(groups), 6))
    y = (X[:, 0] - 0.5 * X[:, 2] + 0.3 * rng.normal(size=len(groups))) > 0.8
    return X, y, groups


@pytest.mark.parametrize("name", RANKER_NAMES)
def test_ranker_contract(name):
    ranker = Stages(FunnelConfig(ranker=name)).new_ranker()
    assert isinstance(ranker, Ranker)
    X, y, groups = labelled(0)
    assert ranker.fit(X, y, groups) is ranker
    X_test, y_test, _ = labelled(1)
    scores = np.asarray(ranker.score(X_test))
    assert scores.shape == (len(X_test),) and np.isfinite(scores).all()
    # higher is better: a positive outscores a negative far more often than not
    pos, neg = scores[y_test], scores[~y_test]
    auc = (pos[:, None] > neg[None, :]).mean()
    assert auc > 0.85
    state = ranker.get_state()
    assert isinstance(state, PartState)
    clone = Stages(FunnelConfig(ranker=name)).new_ranker().set_state(copied({"r": state})["r"])
    np.testing.assert_allclose(clone.score(X_test), scores, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(clone.score(X_test.astype(np.float32)), scores, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["tags", "als"])
def test_index_sources_match_one_search_with_the_largest_margin(name, stages, synth):
    """A listener who knows most of the catalogue is searched again, not every row with their margin."""
    from funnel.candidates.base import drop_seen
    from funnel.candidates.index import search

    batch = batch_of(synth)
    known = sp.lil_matrix(batch.history)
    known[3, : synth.n_artists - 20] = 1.0  # knows all but 20 artists
    known[5, : synth.n_artists // 2] = 1.0
    batch = Batch(batch.users, batch.history, known=sp.csr_matrix(known))
    source = part(stages.sources_, name)
    ids, scores = source.retrieve(batch)
    expected = drop_seen(*search(source.index_, source._queries(batch), K + batch.max_known()), batch, K)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-6, atol=1e-6)
    assert (ids[3] >= 0).sum() == min(K, 20) and not batch.rows(np.array([3])).excluded(ids[3:4]).any()


@pytest.mark.parametrize("name", ["tags", "als"])
def test_a_listeners_candidates_do_not_depend_on_the_batch(name, stages, synth):
    """Bit for bit the same candidates and scores alone, in a shuffled batch, or in another batch size."""
    source = part(stages.sources_, name)
    batch = batch_of(synth)
    new = np.full(batch.history.shape[0], -1)  # folded-in listeners: the query itself comes from the history
    batch = Batch(new, batch.history)
    ids, scores = source.retrieve(batch)
    order = np.random.default_rng(0).permutation(len(new))
    shuffled_ids, shuffled_scores = source.retrieve(batch.rows(order))
    np.testing.assert_array_equal(shuffled_ids, ids[order])
    np.testing.assert_array_equal(shuffled_scores, scores[order])
    for rows in (np.array([7]), np.arange(3, 40), np.arange(0, len(new), 3)):
        alone_ids, alone_scores = source.retrieve(batch.rows(rows))
        np.testing.assert_array_equal(alone_ids, ids[rows])
        np.testing.assert_array_equal(alone_scores, scores[rows])


def test_exact_scores_are_inner_products_independent_of_the_rows_around():
    from funnel.candidates.sources import exact_scores

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 37)).astype(np.float32)
    queries = rng.standard_normal((64, 37)).astype(np.float32)
    ids = rng.integers(-1, 500, (64, 30))
    scores = exact_scores(queries, vectors, ids)
    expected = np.einsum("ij,ikj->ik", queries.astype(np.float64), vectors[np.maximum(ids, 0)].astype(np.float64))
    np.testing.assert_allclose(scores[ids >= 0], expected[ids >= 0], rtol=1e-5, atol=1e-5)
    assert np.isneginf(scores[ids < 0]).all()
    np.testing.assert_array_equal(exact_scores(queries[5:6], vectors, ids[5:6, :11]), scores[5:6, :11])
    np.testing.assert_array_equal(exact_scores(queries[::-1], vectors, ids[::-1]), scores[::-1])
