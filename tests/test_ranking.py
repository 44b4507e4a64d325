"""Stage two: one contract every ranker passes, and the factor models."""

import numpy as np
import pandas as pd
import scipy.sparse as sp
import pytest

from funnel import ConfigError, DataError, NotFittedError
from funnel.factors import ALSFactors, BiasedSVDFactors, plays_to_ratings
from funnel.ranking import LogisticRanker

RANKERS = {"logistic": lambda: LogisticRanker(C=1.0)}


@pytest.fixture(params=sorted(RANKERS))
def ranker(request):
    return RANKERS[request.param]()


def separable(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] - 0.5 * X[:, 3] + 0.2 * rng.normal(size=n)) > 0
    return X, y


def test_ranker_contract(ranker):
    X, y = separable()
    assert ranker.fit(X, y) is ranker
    proba = ranker.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert ((proba >= 0) & (proba <= 1)).all() and np.allclose(proba.sum(axis=1), 1)
    X_test, y_test = separable(seed=1)
    p = ranker.predict_proba(X_test)[:, 1]
    assert ((p > 0.5) == y_test).mean() > 0.9
    arrays = ranker.to_arrays()
    clone = type(ranker)().set_arrays(arrays)
    assert np.array_equal(clone.predict_proba(X_test), ranker.predict_proba(X_test))


def test_ranker_errors(ranker):
    with pytest.raises(NotFittedError):
        ranker.predict_proba(np.zeros((1, 5)))
    with pytest.raises(DataError, match="positive and negative"):
        ranker.fit(np.zeros((4, 2)), np.zeros(4))
    X, y = separable()
    ranker.fit(X, y)
    with pytest.raises(DataError, match="expects 5 features"):
        ranker.predict_proba(np.zeros((1, 3)))


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logistic_matches_scikit_learn(C):
    from sklearn.linear_model import LogisticRegression

    X, y = separable(n=3000)
    X = np.column_stack([X, X[:, 0] * 3 + 1])  # collinear and unscaled columns
    ranker = LogisticRanker(C=C).fit(X, y)
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)
    expected = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-10, max_iter=200).fit(Xs, y)
    np.testing.assert_allclose(ranker.coef_, expected.coef_.ravel(), atol=1e-5)
    assert abs(ranker.intercept_ - expected.intercept_[0]) < 1e-5


def test_logistic_contributions_sum_to_log_odds():
    X, y = separable()
    ranker = LogisticRanker().fit(X, y)
    assert np.allclose(ranker.contributions(X).sum(axis=1) + ranker.intercept_, ranker.decision_function(X))


def test_ratings_are_per_user_ranks(synth):
    ratings = plays_to_ratings(synth.matrix)
    assert ratings.data.min() >= 1 and ratings.data.max() <= 5
    row = synth.matrix[0]
    r = ratings[0]
    assert r.data[np.argmax(row.data)] == 5 and r.data[np.argmin(row.data)] == 1


def test_surprise_trainset_is_the_one_surprise_builds_from_a_frame(synth):
    from surprise import Dataset as SurpriseDataset, Reader

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


def test_factor_models_fold_in_new_users(synth):
    history = synth.matrix[:3]
    svd = BiasedSVDFactors(factors=8, epochs=10).fit(synth.matrix)
    als = ALSFactors(factors=8, iterations=5).fit(synth.matrix)
    known, _ = svd.user_vectors(np.arange(3), history)
    folded, bias = svd.user_vectors(np.array([-1, -1, -1]), history)
    assert np.isfinite(folded).all() and np.isfinite(bias).all()
    # folding a user back in lands near the trained vector (same data, same artist factors)
    cos = (known * folded).sum(1) / np.linalg.norm(known, axis=1) / np.linalg.norm(folded, axis=1)
    assert cos.mean() > 0.3
    a_known = als.user_vectors(np.arange(3), history)
    a_fold = als.user_vectors(np.array([-1, -1, -1]), history)
    a_cos = (a_known * a_fold).sum(1) / np.linalg.norm(a_known, axis=1) / np.linalg.norm(a_fold, axis=1)
    assert a_cos.min() > 0.95


def test_als_average_scores_are_the_mean_of_its_models(synth):
    history = synth.matrix[:4]
    single = [ALSFactors(factors=8, iterations=5, seed=s).fit(synth.matrix) for s in (3, 4)]
    both = ALSFactors(factors=8, iterations=5, seed=3, n_models=2).fit(synth.matrix)
    assert both.item_factors_.shape == (synth.n_artists, 16)
    users = np.arange(4)
    mean = sum(m.user_vectors(users, history) @ m.item_factors_.T for m in single) / 2
    np.testing.assert_allclose(both.user_vectors(users, history) @ both.item_factors_.T, mean, atol=1e-4)
    # new users are folded into each model separately, also after a save and load
    new = np.full(4, -1)
    folded_mean = sum(m.user_vectors(new, history) @ m.item_factors_.T for m in single) / 2
    loaded = ALSFactors(factors=8, iterations=5, seed=3, n_models=2).set_arrays(both.to_arrays())
    for model in (both, loaded):
        np.testing.assert_allclose(model.user_vectors(new, history) @ model.item_factors_.T, folded_mean, atol=1e-4)


@pytest.mark.parametrize("n_models", [0, 1.5, True])
def test_als_rejects_a_bad_number_of_models(synth, n_models):
    with pytest.raises(ConfigError, match="n_models"):
        ALSFactors(factors=4, iterations=2, n_models=n_models).fit(synth.matrix)
