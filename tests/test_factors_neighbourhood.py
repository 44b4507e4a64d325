"""The item-item models RP3beta, EASE and LogEASE: dense reference results and their state."""

import numpy as np
import pytest
import scipy.sparse as sp

from funnel import ConfigError, NotFittedError, Recommender
from funnel.batch import Batch
from funnel.factors import EASE, LogEASE, RP3beta
from funnel.protocols import PartContext


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
    rows, items = np.array([0, 0, 3, 4]), np.array([1, 7, 0, 29])
    batch = Batch(np.arange(5), plays[:5])
    np.testing.assert_allclose(model.pair_scores(batch, rows, items), (x[:5] @ w)[rows, items], rtol=1e-4,
                               atol=1e-6)
    small = RP3beta(top_k=3).fit(plays)
    assert np.diff(small.weights_.indptr).max() <= 3
    restored = RP3beta().set_arrays(small.to_arrays())
    assert (restored.weights_ != small.weights_).nnz == 0


def test_rp3beta_fits_a_dataset_like_its_matrix(synth):
    from_dataset = RP3beta(top_k=20).fit(synth)
    from_matrix = RP3beta(top_k=20).fit(synth.matrix)
    np.testing.assert_allclose(from_dataset.weights_.toarray(), from_matrix.weights_.toarray(), rtol=1e-6)


def test_ease_matches_its_closed_form(plays):
    x = (plays.toarray() > 0).astype(np.float64)
    inverse = np.linalg.inv(x.T @ x + 10.0 * np.eye(x.shape[1]))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    model = EASE(l2=10.0, min_listeners=1).fit(plays)
    assert model.items_.tolist() == np.flatnonzero(x.sum(axis=0) >= 1).tolist()
    np.testing.assert_allclose(model.weights_, weights[np.ix_(model.items_, model.items_)], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.scores(plays[:6]), x[:6] @ weights[:, model.items_], rtol=1e-4, atol=1e-5)


def test_ease_models_only_the_most_listened_artists(plays):
    listeners = np.asarray((plays > 0).sum(axis=0)).ravel()
    model = EASE(l2=10.0, min_listeners=12, max_artists=5).fit(plays)
    order = np.argsort(-listeners, kind="stable")
    expected = np.sort(order[listeners[order] >= 12][:5])
    assert model.items_.tolist() == expected.tolist() and len(expected) == 5
    assert (model.position(expected) == np.arange(5)).all()
    outside = np.setdiff1d(np.arange(plays.shape[1]), expected)
    assert (model.position(outside) == -1).all()
    # an artist outside the model scores 0 for every pair; a modelled one its column of scores
    batch = Batch(np.arange(4), plays[:4])
    rows = np.array([0, 1, 2, 3, 3])
    items = np.array([outside[0], expected[1], outside[-1], expected[4], expected[0]])
    scores = model.pair_scores(batch, rows, items)
    full = model.scores(plays[:4])
    np.testing.assert_allclose(scores, [0.0, full[1, 1], 0.0, full[3, 4], full[3, 0]], rtol=1e-6)
    assert model.scores(batch) is model.scores(batch)  # computed once per batch
    np.testing.assert_allclose(model.scores(batch), full, rtol=1e-6)
    restored = EASE().set_arrays({k: v.copy() for k, v in model.to_arrays().items()})
    np.testing.assert_allclose(restored.pair_scores(Batch(np.arange(4), plays[:4]), rows, items), scores, rtol=1e-6)


def test_log_ease_uses_log_plays(plays):
    binary = EASE(l2=10.0, min_listeners=1).fit(plays)
    logged = EASE(l2=10.0, min_listeners=1, weighting="log").fit(plays)
    assert not np.allclose(binary.weights_, logged.weights_)
    x = np.log1p(plays.toarray())[:, logged.items_]
    np.testing.assert_allclose(logged.scores(plays), x @ logged.weights_, rtol=1e-4, atol=1e-5)
    # LogEASE is that model under its own name and L2 penalty
    model = LogEASE(l2=10.0, min_listeners=1).fit(plays)
    assert model.name == "log_ease" and model.weighting == "log"
    np.testing.assert_allclose(model.weights_, logged.weights_, rtol=1e-6, atol=1e-7)
    context = PartContext()
    assert LogEASE.from_config(LogEASE.Settings(l2=123.0), context).l2 == 123.0
    assert EASE.from_config(EASE.Settings(l2=45.0), context).l2 == 45.0
    assert LogEASE.Settings().l2 == 3000.0 and EASE.Settings().l2 == 200.0


def test_bad_settings_and_unfitted():
    with pytest.raises(ConfigError, match="models entry 'rp3' .*setting beta"):
        Recommender(models={"rp3": {"beta": -1.0}})
    with pytest.raises(ConfigError, match="models entry 'ease' .*setting l2"):
        Recommender(models={"ease": {"l2": 0.0}})
    with pytest.raises(NotFittedError):
        RP3beta().scores(sp.csr_matrix((1, 3)))
    with pytest.raises(NotFittedError):
        EASE().scores(sp.csr_matrix((1, 3)))
    with pytest.raises(NotFittedError):
        EASE().to_arrays()
