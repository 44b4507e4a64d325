"""The logistic ranker: standardised features, scikit-learn's L2-regularised logistic regression."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from funnel.errors import ArtifactError, DataError, NotFittedError
from funnel.protocols import PartContext, PartSettings, PartState, tunable

# Newton stops when no gradient entry exceeds this. scikit-learn's default (1e-4) stops a step
# short: on the ranker's examples its probabilities were up to 1e-3 off the optimum, 5e-10 here.
TOL = 1e-8


class LogisticRanker:
    """Probability that a user listens to a candidate artist.

    scikit-learn's ``StandardScaler`` and ``LogisticRegression(C=C, solver="newton-cholesky")``
    fit the model; prediction is one numpy product on the stored coefficients, so that
    scoring needs no scikit-learn objects and a saved ranker is plain arrays. Query groups
    are ignored: the model is pointwise.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength (the intercept is not penalised).
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

    name = "logistic"

    def __init__(self, *, C: float = 0.1, max_iter: int = 100) -> None:
        self.C = C
        self.max_iter = max_iter

    class Settings(PartSettings):
        """Inverse L2 regularisation strength and Newton iterations at most."""

        C: float = Field(0.1, gt=0, json_schema_extra=tunable(0.003, 10.0, log=True))
        max_iter: int = Field(100, ge=1)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> LogisticRanker:
        return cls(**settings.model_dump())

    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {"C": self.C, "max_iter": self.max_iter}

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LogisticRanker:
        """Fit on features ``X`` and binary labels ``y``; returns ``self``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise DataError(f"ranker needs X of shape (n, d) and y of length n; got {X.shape} and {y.shape}")
        classes = np.unique(y)
        if len(classes) != 2:
            raise DataError(f"ranker training needs positive and negative examples; labels hold only "
                            f"{classes.tolist()} (too little data for the ranker's holdout: add "
                            "interactions or lower ranker_holdout)")
        if not np.isfinite(X).all():
            raise DataError("ranker features contain NaN or infinite values")
        scaler = StandardScaler().fit(X)
        model = LogisticRegression(C=self.C, solver="newton-cholesky", tol=TOL, max_iter=self.max_iter)
        model.fit(scaler.transform(X), y == classes[1])
        self.mean_ = scaler.mean_
        self.scale_ = scaler.scale_
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        return self

    def _check(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticRanker is not fitted; call fit() first")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of each row."""
        self._check()
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.coef_):
            raise DataError(f"ranker expects {len(self.coef_)} features, got array of shape {X.shape}")
        weights = self.coef_ / self.scale_  # the standardisation folded into the weights
        return X @ weights.astype(X.dtype) + (self.intercept_ - float(self.mean_ @ weights))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the log-odds: coefficient x standardised value."""
        self._check()
        return ((np.asarray(X, np.float64) - self.mean_) / self.scale_) * self.coef_

    def get_state(self) -> PartState:
        self._check()
        return PartState(arrays={"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                                 "intercept": np.array([self.intercept_])})

    def set_state(self, state: PartState) -> LogisticRanker:
        arrays = state.arrays
        self.mean_ = np.asarray(arrays["mean"], np.float64)
        self.scale_ = np.asarray(arrays["scale"], np.float64)
        self.coef_ = np.asarray(arrays["coef"], np.float64)
        self.intercept_ = float(np.asarray(arrays["intercept"])[0])
        if not len(self.mean_) == len(self.scale_) == len(self.coef_):
            raise ArtifactError("the saved logistic ranker's arrays differ in length; retrain it")
        return self
