"""Stage two: the logistic and LightGBM rankers, their training examples, and the factor models behind the features.

The contract every registered ranker and feature group passes is in tests/test_contracts.py.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from funnel import ArtifactError, ConfigError, DataError, Dataset, FunnelConfig, NotFittedError, Recommender
from funnel.batch import Batch
from funnel.factors import ALSFactors, BiasedSVDFactors, plays_to_ratings
from funnel.protocols import PartState
from funnel.ranking import LambdaRankRanker, LogisticRanker
from funnel.ranking.training import history_split, sample_negatives
from funnel.stages import Stages


def separable(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] - 0.5 * X[:, 3] + 0.2 * rng.normal(size=n)) > 0
    return X, y


def test_logistic_ranker_learns_and_its_state_round_trips():
    X, y = separable()
    ranker = LogisticRanker(C=1.0)
    assert ranker.fit(X, y, np.zeros(len(X), np.int64)) is ranker
    p = ranker.score(X)
    assert p.shape == (len(X),) and ((p > 0) & (p < 1)).all()
    X_test, y_test = separable(seed=1)
    assert ((ranker.score(X_test) > 0.5) == y_test).mean() > 0.9
    clone = LogisticRanker(C=1.0).set_state(ranker.get_state())
    np.testing.assert_allclose(clone.score(X_test), ranker.score(X_test), rtol=1e-12)
    # the probabilities are the sigmoid of the log-odds
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-ranker.decision_function(X))), rtol=1e-12)


def test_ranker_errors():
    ranker = LogisticRanker()
    with pytest.raises(NotFittedError):
        ranker.score(np.zeros((1, 5)))
    with pytest.raises(NotFittedError):
        ranker.get_state()
    with pytest.raises(DataError, match="positive and negative"):
        ranker.fit(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(DataError, match="shape"):
        ranker.fit(np.zeros((4, 2)), np.zeros(3))
    X, y = separable()
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        ranker.fit(bad, y)
    ranker.fit(X, y)
    with pytest.raises(DataError, match="expects 5 features"):
        ranker.score(np.zeros((1, 3)))
    state = ranker.get_state()
    state.arrays["coef"] = state.arrays["coef"][:3]
    with pytest.raises(ArtifactError, match="differ in length"):
        LogisticRanker().set_state(state)


def test_ranker_is_built_from_its_settings():
    stages = Stages(FunnelConfig(ranker={"part": "logistic", "C": 0.5, "max_iter": 7}))
    assert stages.new_ranker().get_params() == {"C": 0.5, "max_iter": 7}
    assert Stages(FunnelConfig()).new_ranker().C == 0.1
    for params, message in [({"C": 0}, "setting C: Input should be greater than 0"),
                            ({"C": "big"}, "setting C: Input should be a valid number"),
                            ({"C": True}, "setting C: Input should be a valid number"),
                            ({"max_iter": 0}, "setting max_iter: Input should be greater than or equal to 1"),
                            ({"gamma": 1.0}, r"unknown setting 'gamma'; valid settings are \['C', 'max_iter'\]")]:
        with pytest.raises(ConfigError, match=message):
            Recommender(ranker={"part": "logistic", **params})
    with pytest.raises(ConfigError, match="names its class as 'part'"):
        FunnelConfig(ranker={"C": 1.0})


def ranked_queries(seed=0, n_users=60, per_user=40):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_users), per_user)
    X = rng.normal(size=(len(groups), 5))
    y = (X[:, 0] - 0.5 * X[:, 3] + 0.3 * rng.normal(size=len(groups))) > 1.0
    return X, y, groups


def test_lightgbm_ranker_orders_each_query_and_explains_its_scores():
    X, y, groups = ranked_queries()
    order = np.random.default_rng(3).permutation(len(X))  # a query's rows need not be together
    ranker = LambdaRankRanker(n_estimators=60, min_child_samples=10, n_threads=1).fit(X[order], y[order],
                                                                                      groups[order])
    X_test, y_test, groups_test = ranked_queries(seed=1)
    scores = ranker.score(X_test)
    pos, neg = scores[y_test], scores[~y_test]
    assert (pos[:, None] > neg[None, :]).mean() > 0.85
    contributions = ranker.contributions(X_test)
    assert contributions.shape == X_test.shape
    # SHAP values and the expected value add up to the score; features 0 and 3 decide
    expected = ranker.booster_.predict(X_test, pred_contrib=True)[:, -1]
    np.testing.assert_allclose(contributions.sum(axis=1) + expected, scores, rtol=1e-6, atol=1e-6)
    assert set(np.argsort(-np.abs(contributions).mean(axis=0))[:2]) == {0, 3}
    state = ranker.get_state()
    assert state.files["model.txt"].startswith(b"tree")  # LightGBM's own text, no pickle
    clone = LambdaRankRanker().set_state(state)
    np.testing.assert_allclose(clone.score(X_test), scores, rtol=1e-9)
    again = LambdaRankRanker(n_estimators=60, min_child_samples=10, n_threads=1).fit(X[order], y[order],
                                                                                     groups[order])
    np.testing.assert_allclose(again.score(X_test), scores, rtol=1e-9)  # seeded and deterministic


def test_lightgbm_ranker_params_and_errors():
    config = FunnelConfig(ranker={"part": "lightgbm", "n_estimators": 40, "num_leaves": 7}, seed=5)
    ranker = Stages(config).new_ranker()
    assert ranker.get_params()["n_estimators"] == 40 and ranker.seed == 5 and ranker.num_leaves == 7
    assert ranker.set_params(learning_rate=0.2) is ranker and ranker.learning_rate == 0.2
    for params, message in [({"n_estimators": 0}, "greater than or equal to 1"),
                            ({"learning_rate": 0}, "greater than 0"), ({"num_leaves": 1.5}, "valid integer"),
                            ({"C": 1.0}, "unknown setting 'C'")]:
        with pytest.raises(ConfigError, match=message):
            Recommender(ranker={"part": "lightgbm", **params})
    with pytest.raises(ConfigError, match="LambdaRankRanker: setting n_estimators"):
        LambdaRankRanker(n_estimators=0).fit(*ranked_queries())
    with pytest.raises(NotFittedError):
        LambdaRankRanker().score(np.zeros((1, 5)))
    X, y, groups = ranked_queries()
    with pytest.raises(DataError, match="groups"):
        LambdaRankRanker().fit(X, y)
    with pytest.raises(DataError, match="positive and negative"):
        LambdaRankRanker().fit(X, np.zeros(len(X), bool), groups)
    ranker = LambdaRankRanker(n_estimators=5, n_threads=1).fit(X, y, groups)
    with pytest.raises(DataError, match="expects 5 features"):
        ranker.score(np.zeros((1, 3)))
    state = ranker.get_state()
    state.files["model.txt"] = b"not a model"
    with pytest.raises(ArtifactError, match="not a readable LightGBM model"):
        LambdaRankRanker().set_state(state)


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logistic_probabilities_match_scikit_learn_on_standardised_features(C):
    from sklearn.linear_model import LogisticRegression

    X, y = separable(n=3000)
    X = np.column_stack([X * [1, 10, 0.1, 1, 1000], X[:, 0] * 3 + 1])  # unscaled and collinear columns
    ranker = LogisticRanker(C=C).fit(X, y)
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)
    expected = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=200).fit(Xs, y)
    np.testing.assert_allclose(ranker.score(X), expected.predict_proba(Xs)[:, 1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ranker.decision_function(X), expected.decision_function(Xs), rtol=1e-6, atol=1e-7)


def test_logistic_scores_float32_features_like_float64():
    X, y = separable()
    ranker = LogisticRanker().fit(X, y)
    np.testing.assert_allclose(ranker.score(X.astype(np.float32)), ranker.score(X), rtol=1e-4, atol=1e-6)


def test_logistic_contributions_sum_to_log_odds():
    X, y = separable()
    ranker = LogisticRanker().fit(X, y)
    np.testing.assert_allclose(ranker.contributions(X).sum(axis=1) + ranker.intercept_, ranker.decision_function(X),
                               rtol=1e-9, atol=1e-9)
    # the informative columns 0 and 3 carry the contributions
    share = np.abs(ranker.contributions(X)).mean(axis=0)
    assert set(np.argsort(-share)[:2].tolist()) == {0, 3}


def test_sample_negatives_keeps_every_positive_and_at_most_n_negatives_per_row():
    rows = np.repeat(np.arange(4), [6, 2, 5, 0 + 3])
    positive = np.zeros(len(rows), bool)
    positive[[0, 1, 8, 13]] = True
    keep = sample_negatives(rows, positive, 2, np.random.default_rng(0))
    assert keep[positive].all()
    negatives_kept = np.bincount(rows[keep & ~positive], minlength=4)
    negatives = np.bincount(rows[~positive], minlength=4)
    assert negatives_kept.tolist() == np.minimum(negatives, 2).tolist()
    again = sample_negatives(rows, positive, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(again, keep)  # seeded
    assert sample_negatives(rows, positive, 0, np.random.default_rng(0)).all()  # 0 keeps all


def test_history_split_holds_out_part_of_each_users_artists(synth, small_config):
    history, labels = history_split(synth, small_config)
    held = set(zip(labels["user_id"], labels["artist_id"]))
    kept = set(zip(history.interactions["user_id"], history.interactions["artist_id"]))
    every = set(zip(synth.interactions["user_id"], synth.interactions["artist_id"]))
    assert held and not held & kept and held | kept == every
    assert 0.1 < len(held) / len(every) < 0.3  # ranker_holdout 0.2


def test_ratings_are_per_user_ranks(synth):
    ratings = plays_to_ratings(synth.matrix)
    assert ratings.data.min() >= 1 and ratings.data.max() <= 5
    row = synth.matrix[0]
    r = ratings[0]
    assert r.data[np.argmax(row.data)] == 5 and r.data[np.argmin(row.data)] == 1
    one = plays_to_ratings(sp.csr_matrix(np.array([[0, 7.0, 0]])))
    assert one.data.tolist() == [3.0]  # a user with one artist gives it the middle rating


def test_surprise_trainset_is_the_one_surprise_builds_from_a_frame(synth):
    from surprise import Dataset as SurpriseDataset
    from surprise import Reader

    from funnel.factors.svd import RATING_SCALE, surprise_trainset

    ratings = plays_to_ratings(synth.matrix)
    ratings = sp.diags((np.arange(ratings.shape[0]) % 10 != 3).astype(float)) @ ratings
    ratings.eliminate_zeros()  # users without ratings in between
    ratings.data[::7] = 3.25
    ours = surprise_trainset(ratings)
    coo = ratings.tocoo()
    frame = pd.DataFrame({"u": coo.row, "i": coo.col, "r": coo.data})
    theirs = SurpriseDataset.load_from_df(frame, Reader(rating_scale=RATING_SCALE)).build_full_trainset()
    assert list(ours.ur.items()) == list(theirs.ur.items()) and list(ours.ir.items()) == list(theirs.ir.items())
    assert ours._raw2inner_id_users == theirs._raw2inner_id_users
    assert ours._raw2inner_id_items == theirs._raw2inner_id_items
    assert (ours.n_users, ours.n_items, ours.n_ratings, ours.global_mean) == \
        (theirs.n_users, theirs.n_items, theirs.n_ratings, theirs.global_mean)


def test_biased_svd_gives_zero_factors_to_artists_without_plays(synth):
    silent = synth.artist_ids[7]
    data = Dataset.from_frames(synth.interactions[synth.interactions["artist_id"] != silent], artists=synth.artists)
    model = BiasedSVDFactors(factors=6, epochs=5, reg=0.05).fit(data)
    artist = data.artist_index(np.array([silent]))[0]
    assert model.user_factors_.shape == (data.n_users, 6) and model.item_factors_.shape == (data.n_artists, 6)
    assert not model.item_factors_[artist].any() and model.item_bias_[artist] == 0
    played = np.diff(data.matrix.tocsc().indptr) > 0
    assert not played[artist] and (np.abs(model.item_factors_[played]).sum(axis=1) > 0).all()
    assert np.abs(model.user_factors_).sum(axis=1).min() > 0
    np.testing.assert_allclose(model.global_mean_, plays_to_ratings(data.matrix).data.mean(), rtol=1e-6)


def svd_fold_in_reference(svd: BiasedSVDFactors, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """One ridge solve per user: [q_i, 1] x = r - mu - b_i, penalty reg per rating."""
    ratings = plays_to_ratings(history)
    vectors, biases = [], []
    for r in range(history.shape[0]):  # test-only loop
        row = ratings[r]
        if row.nnz == 0:
            vectors.append(np.zeros(svd.factors))
            biases.append(0.0)
            continue
        design = np.column_stack([svd.item_factors_[row.indices], np.ones(row.nnz)]).astype(np.float64)
        target = row.data - svd.global_mean_ - svd.item_bias_[row.indices]
        gram = design.T @ design + svd.reg * row.nnz * np.eye(svd.factors + 1)
        solution = np.linalg.solve(gram, design.T @ target)
        vectors.append(solution[:-1])
        biases.append(solution[-1])
    return np.array(vectors), np.array(biases)


def test_svd_solves_every_new_listener_of_a_batch_at_once(synth):
    svd = BiasedSVDFactors(factors=8, epochs=10).fit(synth)
    history = sp.vstack([synth.matrix[:6], sp.csr_matrix((1, synth.n_artists))]).tocsr()  # the last one is empty
    vec, bias = svd.user_vectors(Batch(np.full(7, -1), history))
    expected_vec, expected_bias = svd_fold_in_reference(svd, history)
    np.testing.assert_allclose(vec, expected_vec, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-4, atol=1e-5)
    assert not vec[6].any() and bias[6] == 0
    # in a mixed batch known users keep their trained factors and new ones get the same solve
    mixed_vec, mixed_bias = svd.user_vectors(Batch(np.array([2, -1, 5]), history[[2, 3, 5]]))
    np.testing.assert_allclose(mixed_vec[[0, 2]], svd.user_factors_[[2, 5]])
    np.testing.assert_allclose(mixed_bias[[0, 2]], svd.user_bias_[[2, 5]])
    np.testing.assert_allclose(mixed_vec[1], expected_vec[3], rtol=1e-4, atol=1e-5)


def test_factor_models_fold_in_new_users(synth):
    history = synth.matrix[:3]
    svd = BiasedSVDFactors(factors=8, epochs=10).fit(synth)
    als = ALSFactors(factors=8, iterations=5).fit(synth)
    known, _ = svd.user_vectors(Batch(np.arange(3), history))
    folded, bias = svd.user_vectors(Batch(np.array([-1, -1, -1]), history))
    assert np.isfinite(folded).all() and np.isfinite(bias).all()
    # folding a user back in lands near the trained vector (same data, same artist factors)
    cos = (known * folded).sum(1) / np.linalg.norm(known, axis=1) / np.linalg.norm(folded, axis=1)
    assert cos.mean() > 0.3
    a_known = als.user_vectors(Batch(np.arange(3), history))
    a_fold = als.user_vectors(Batch(np.array([-1, -1, -1]), history))
    a_cos = (a_known * a_fold).sum(1) / np.linalg.norm(a_known, axis=1) / np.linalg.norm(a_fold, axis=1)
    assert a_cos.min() > 0.95


def test_user_vectors_are_computed_once_per_batch(synth):
    als = ALSFactors(factors=8, iterations=5).fit(synth)
    batch = Batch(np.array([0, -1]), synth.matrix[:2])
    assert als.user_vectors(batch) is als.user_vectors(batch)
    other = als.user_vectors(Batch(np.array([0, -1]), synth.matrix[:2]))
    assert other is not als.user_vectors(batch)
    np.testing.assert_allclose(other, als.user_vectors(batch), rtol=1e-5, atol=1e-6)


def test_als_average_scores_are_the_mean_of_its_models(synth):
    history = synth.matrix[:4]
    single = [ALSFactors(factors=8, iterations=5, seed=s).fit(synth) for s in (3, 4)]
    both = ALSFactors(factors=8, iterations=5, seed=3, n_models=2).fit(synth)
    assert both.item_factors_.shape == (synth.n_artists, 16)
    users = np.arange(4)
    mean = sum(m.user_vectors(Batch(users, history)) @ m.item_factors_.T for m in single) / 2
    np.testing.assert_allclose(both.user_vectors(Batch(users, history)) @ both.item_factors_.T, mean, atol=1e-4)
    # new users are folded into each model separately, also after a save and load
    new = np.full(4, -1)
    folded_mean = sum(m.user_vectors(Batch(new, history)) @ m.item_factors_.T for m in single) / 2
    loaded = ALSFactors(factors=8, iterations=5, seed=3, n_models=2).set_arrays(both.to_arrays())
    for model in (both, loaded):
        np.testing.assert_allclose(model.user_vectors(Batch(new, history)) @ model.item_factors_.T, folded_mean,
                                   atol=1e-4)


@pytest.mark.parametrize("n_models", [0, 1.5, True])
def test_als_rejects_a_bad_number_of_models(n_models):
    with pytest.raises(ConfigError, match="models entry 'als' .*setting n_models"):
        Recommender(models={"als": {"n_models": n_models}})


def test_saved_als_factors_must_split_into_its_models(synth):
    arrays = ALSFactors(factors=5, iterations=2).fit(synth).to_arrays()
    with pytest.raises(ArtifactError, match="n_models"):
        ALSFactors(factors=5, iterations=2, n_models=2).set_arrays(arrays)


def test_unfitted_factor_models_say_so():
    batch = Batch(np.array([0]), sp.csr_matrix((1, 3)))
    for model in (ALSFactors(), BiasedSVDFactors()):
        with pytest.raises(NotFittedError):
            model.user_vectors(batch)
        with pytest.raises(NotFittedError):
            model.to_arrays()


def test_part_state_defaults_are_empty_and_separate():
    a, b = PartState(), PartState()
    a.arrays["x"] = np.zeros(1)
    assert b.arrays == {} and b.files == {}
