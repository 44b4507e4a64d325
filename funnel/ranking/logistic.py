"""The stage-two logistic ranker: standardised features, L2-regularised logistic regression."""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
from scipy.special import expit

from funnel.errors import ConfigError, DataError, NotFittedError

logger = logging.getLogger("funnel")


def fit_logistic(X: np.ndarray, y: np.ndarray, C: float, max_iter: int = 100, tol: float = 1e-10
                 ) -> np.ndarray:
    """Weights (then the intercept) minimising ``C * log-loss + |coef|^2 / 2``, by Newton's method.

    The objective of scikit-learn's ``LogisticRegression(C=C)``. Each step solves the
    penalised Hessian by Cholesky and halves until the objective falls (Armijo); iteration
    stops when the Newton decrement falls below ``tol`` per sample, or after ``max_iter`` steps
    with a warning.
    """
    design = np.hstack([X, np.ones((len(X), 1))])
    target = y.astype(np.float64)
    penalty = np.full(design.shape[1], 1.0 / C)
    penalty[-1] = 0.0

    def objective(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - target * z) + 0.5 * penalty @ (w * w))

    w = np.zeros(design.shape[1])
    current = objective(w)
    for _ in range(max_iter):
        p = expit(design @ w)
        gradient = design.T @ (p - target) + penalty * w
        hessian = (design.T * (p * (1.0 - p))) @ design
        hessian[np.diag_indices_from(hessian)] += penalty + 1e-12
        step = scipy.linalg.solve(hessian, gradient, assume_a="pos", check_finite=False)
        decrement = float(gradient @ step)
        if decrement / 2 <= tol * len(design):
            return w
        rate = 1.0
        while rate > 1e-8:
            trial = objective(w - rate * step)
            if trial <= current - 1e-4 * rate * decrement:
                break
            rate /= 2
        w, current = w - rate * step, trial
    logger.warning("the logistic ranker did not converge in %d Newton steps", max_iter)
    return w


class LogisticRanker:
    """Probability that a user listens to a candidate artist.

    Features are standardised with the training mean and standard deviation, then the
    L2-regularised logistic regression of scikit-learn's ``LogisticRegression(C=C)`` (the
    intercept not penalised) is fitted by Newton's method in numpy (:func:`fit_logistic`): a
    few steps on a few dozen features, each one Cholesky solve, reach the optimum that
    scikit-learn's lbfgs stopped short of, in a fraction of a second and without importing
    scikit-learn. Prediction is plain numpy on the stored arrays, so a saved and reloaded
    ranker scores bit-for-bit the same.

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    max_iter : int
        Newton iterations at most.

    Attributes
    ----------
    mean_, scale_ : numpy.ndarray
        Feature standardisation.
    coef_ : numpy.ndarray
        ``(n_features,)`` weights on standardised features.
    intercept_ : float
    """

    def __init__(self, C: float = 0.1, max_iter: int = 100) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogisticRanker":
        """Fit on features ``X`` and binary labels ``y``; returns ``self``."""
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ConfigError(f"LogisticRanker C={self.C!r} must be a number > 0")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise DataError(f"ranker needs X of shape (n, d) and y of length n; got {X.shape} and {y.shape}")
        classes = np.unique(y)
        if len(classes) != 2:
            raise DataError(
                f"ranker training needs positive and negative examples; labels hold only {classes.tolist()}"
                " (too little data for the ranker's holdout: add interactions or lower ranker_holdout)"
            )
        if not np.isfinite(X).all():
            raise DataError("ranker features contain NaN or infinite values")
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        weights = fit_logistic((X - self.mean_) / self.scale_, y == classes[1], self.C, self.max_iter)
        self.coef_, self.intercept_ = weights[:-1], float(weights[-1])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of each row."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticRanker is not fitted; call fit() first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.coef_):
            raise DataError(f"ranker expects {len(self.coef_)} features, got array of shape {X.shape}")
        # standardisation folded into the weights: one product, no scaled copy of X
        weights = self.coef_ / self.scale_
        return X @ weights.astype(X.dtype) + (self.intercept_ - float(self.mean_ @ weights))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, 2)`` probabilities of the negative and positive class."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the log-odds: coefficient x standardised value."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticRanker is not fitted; call fit() first")
        return ((np.asarray(X, np.float64) - self.mean_) / self.scale_) * self.coef_

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticRanker is not fitted; call fit() first")
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                "intercept": np.array([self.intercept_])}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "LogisticRanker":
        """Restore the state written by :meth:`to_arrays`."""
        self.mean_ = np.asarray(arrays["mean"], np.float64)
        self.scale_ = np.asarray(arrays["scale"], np.float64)
        self.coef_ = np.asarray(arrays["coef"], np.float64)
        self.intercept_ = float(np.asarray(arrays["intercept"])[0])
        return self
