"""RP3beta and user-kNN: dense reference results and the estimator contract."""

import numpy as np
import pytest
import scipy.sparse as sp

from funnel import ConfigError, NotFittedError
from funnel.factors import EASE, RP3beta, UserKNN


@pytest.fixture(scope="module")
def plays():
    rng = np.random.default_rng(0)
    dense = rng.integers(1, 50, size=(40, 30)) * (rng.random((40, 30)) < 0.3)
    return sp.csr_matrix(dense.astype(np.float32))


def test_rp3beta_matches_dense_reference(plays):
    x = (plays.toarray() > 0).astype(np.float64)
    p_ui = x / np.maximum(x.sum(axis=1, keepdims=True), 1)
    p_iu = x.T / np.maximum(x.T.sum(axis=1, keepdims=True), 1)
    w = (p_iu @ p_ui) / np.maximum(x.sum(axis=0), 1) ** 0.4
    np.fill_diagonal(w, 0.0)
    model = RP3beta(alpha=1.0, beta=0.4, top_k=29, block_size=7).fit(plays)
    np.testing.assert_allclose(model.weights_.toarray(), w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.scores(plays[:5]).toarray(), x[:5] @ w, rtol=1e-4, atol=1e-6)
    small = RP3beta(top_k=3).fit(plays)
    assert np.diff(small.weights_.indptr).max() <= 3
    restored = RP3beta().set_arrays(small.to_arrays())
    assert (restored.weights_ != small.weights_).nnz == 0


def test_user_knn_excludes_self_and_matches_reference(plays):
    x = (plays.toarray() > 0).astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, 0.0)
    model = UserKNN(n_neighbors=39).fit(plays)
    users = np.arange(plays.shape[0])
    np.testing.assert_allclose(model.scores(users, plays).toarray(), sims @ x, rtol=1e-4, atol=1e-5)
    # a new user (-1) is not excluded from anything
    new = model.scores(np.array([-1]), plays[:1]).toarray()
    np.testing.assert_allclose(new, (unit[:1] @ unit.T) @ x, rtol=1e-4, atol=1e-5)
    restored = UserKNN(n_neighbors=39).set_arrays(model.to_arrays())
    np.testing.assert_allclose(restored.scores(users, plays).toarray(), model.scores(users, plays).toarray())


def test_user_knn_neighbours_found_in_fit_serve_known_users(plays):
    model = UserKNN(n_neighbors=5, block_size=7).fit(plays)
    assert (np.diff(model.neighbours_.indptr) <= 5).all()
    assert (model.neighbours_.diagonal() == 0).all()
    users = np.arange(plays.shape[0])
    on_request = UserKNN(n_neighbors=5)._derive(model.rows_)._neighbours(users, model.rows_)
    assert abs(on_request - model.neighbours_).max() < 1e-6
    # a mixed batch: known users use their fitted neighbours, the new row its own history
    mixed = model.scores(np.array([3, -1, 8]), plays[[3, 5, 8]]).toarray()
    np.testing.assert_allclose(mixed[[0, 2]], model.scores(np.array([3, 8]), plays[[3, 8]]).toarray())
    np.testing.assert_allclose(mixed[1], model.scores(np.array([-1]), plays[5]).toarray()[0])
    assert not np.allclose(mixed[1], model.scores(np.array([5]), plays[5]).toarray()[0])
    # saves made before the neighbours were kept get them found again on load
    old_save = {k: v for k, v in model.to_arrays().items() if not k.startswith("neighbours/")}
    restored = UserKNN(n_neighbors=5).set_arrays(old_save)
    assert abs(restored.neighbours_ - model.neighbours_).max() < 1e-6


def test_log_ease_uses_log_plays(plays):
    binary = EASE(l2=10.0, min_listeners=1).fit(plays)
    logged = EASE(l2=10.0, min_listeners=1, weighting="log").fit(plays)
    assert not np.allclose(binary.weights_, logged.weights_)
    x = np.log1p(plays.toarray())[:, logged.items_]
    np.testing.assert_allclose(logged.scores(plays), x @ logged.weights_, rtol=1e-4, atol=1e-5)


def test_bad_settings_and_unfitted():
    with pytest.raises(ConfigError):
        RP3beta(beta=-1.0).fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(ConfigError):
        UserKNN(weighting="raw").fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(ConfigError):
        UserKNN(block_size=0).fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(ConfigError):
        EASE(weighting="raw").fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(NotFittedError):
        RP3beta().scores(sp.csr_matrix((1, 3)))
    with pytest.raises(NotFittedError):
        UserKNN().scores(np.array([0]), sp.csr_matrix((1, 3)))
