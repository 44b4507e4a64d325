"""The learning-to-rank ranker: LightGBM's ``LGBMRanker`` with the LambdaRank objective, a query per user."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import Field

from funnel.config import settings_of
from funnel.errors import ArtifactError, ConfigError, DataError, NotFittedError
from funnel.protocols import PartContext, PartSettings, PartState, tunable

MODEL_FILE = "model.txt"  # LightGBM's own text format


class LambdaRankRanker:
    """Gradient-boosted trees that order each user's candidates for NDCG (LightGBM ``lambdarank``).

    Each user's candidate pairs are one query (``groups``); the model learns a score whose
    order within a query is what counts, so scores are not probabilities and are comparable
    within one user's list only. The trees are saved in LightGBM's own model text.

    Parameters
    ----------
    objective : {"lambdarank", "rank_xendcg"}
        LightGBM's ranking objective: LambdaRank, or the cheaper cross-entropy surrogate of NDCG.
    n_estimators, learning_rate, num_leaves, min_child_samples, reg_lambda
        LightGBM's parameters of the same names.
    truncation_level : int
        ``lambdarank_truncation_level``: pairs are weighted by how they move NDCG within
        the top this many of a query.
    n_threads : int
        LightGBM's threads (0: all cores).
    seed : int

    Attributes
    ----------
    booster_ : lightgbm.Booster
    n_features_ : int
    """

    name = "lightgbm"

    # small trees, many examples a leaf: Last.fm gives about a hundred thousand pairs, and larger
    # trees scored lower on validation splits (docs/experiments.md)
    def __init__(self, *, objective: str = "lambdarank", n_estimators: int = 150, learning_rate: float = 0.05,
                 num_leaves: int = 7, min_child_samples: int = 400, reg_lambda: float = 1.0,
                 truncation_level: int = 20, n_threads: int = 0, seed: int = 0) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.truncation_level = truncation_level
        self.n_threads = n_threads
        self.seed = seed

    class Settings(PartSettings):
        """LightGBM's objective and parameters of the same names (see the class)."""

        objective: Literal["lambdarank", "rank_xendcg"] = "lambdarank"
        n_estimators: int = Field(150, ge=1, json_schema_extra=tunable(50, 500, log=True))
        learning_rate: float = Field(0.05, gt=0, json_schema_extra=tunable(0.01, 0.2, log=True))
        num_leaves: int = Field(7, ge=2, json_schema_extra=tunable(4, 63, log=True))
        min_child_samples: int = Field(400, ge=1, json_schema_extra=tunable(20, 1000, log=True))
        reg_lambda: float = Field(1.0, ge=0)
        truncation_level: int = Field(20, ge=1)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> LambdaRankRanker:
        return cls(**settings.model_dump(), n_threads=context.n_threads, seed=context.seed)

    def _validate(self) -> None:
        settings_of(self.Settings, {name: getattr(self, name) for name in self.Settings.model_fields},
                    "LambdaRankRanker")
        if isinstance(self.n_threads, bool) or not isinstance(self.n_threads, int) or self.n_threads < 0:
            raise ConfigError(f"LambdaRankRanker n_threads={self.n_threads!r} must be an integer >= 0")

    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {name: getattr(self, name) for name in ("objective", "n_estimators", "learning_rate", "num_leaves",
                                                       "min_child_samples", "reg_lambda", "truncation_level",
                                                       "n_threads", "seed")}

    def set_params(self, **params: Any) -> LambdaRankRanker:
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise ConfigError(f"LambdaRankRanker has no parameter(s) {unknown}; its parameters are "
                              f"{sorted(self.get_params())}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LambdaRankRanker:
        """Fit on features ``X``, binary labels ``y`` and each row's user ``groups``; returns ``self``."""
        from lightgbm import LGBMRanker

        self._validate()
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise DataError(f"ranker needs X of shape (n, d) and y of length n; got {X.shape} and {y.shape}")
        if groups is None or len(groups) != len(y):
            raise DataError("the lightgbm ranker needs each example's user (groups) to rank within")
        if not np.isfinite(X).all():
            raise DataError("ranker features contain NaN or infinite values")
        if not (np.asarray(y) > 0).any() or (np.asarray(y) > 0).all():
            raise DataError("ranker training needs positive and negative examples (too little data for the "
                            "ranker's holdout: add interactions or lower ranker_holdout)")
        order = np.argsort(np.asarray(groups), kind="stable")  # LightGBM wants each query's rows together
        X, y, groups = X[order], (y[order] > 0).astype(np.int32), np.asarray(groups)[order]
        _, sizes = np.unique(groups, return_counts=True)
        model = LGBMRanker(objective=self.objective, n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                           num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
                           reg_lambda=self.reg_lambda, lambdarank_truncation_level=self.truncation_level,
                           n_jobs=self._threads(), random_state=self.seed,
                           deterministic=True, force_row_wise=True, verbose=-1)
        model.fit(X, y, group=sizes)
        self.booster_ = model.booster_
        self.n_features_ = X.shape[1]
        return self

    def _threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1

    def _check(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise NotFittedError("LambdaRankRanker is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise DataError(f"ranker expects {self.n_features_} features, got array of shape {X.shape}")
        return X

    def score(self, X: np.ndarray) -> np.ndarray:
        """Each row's ranking score (higher ranks first; comparable within one user's candidates)."""
        X = self._check(X)
        if not len(X):
            return np.empty(0)
        return np.asarray(self.booster_.predict(X, num_threads=self._threads()))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to each row's score (LightGBM's ``pred_contrib``, SHAP values)."""
        X = self._check(X)
        if not len(X):
            return np.empty((0, self.n_features_))
        contributions = np.asarray(self.booster_.predict(X, pred_contrib=True, num_threads=self._threads()))
        return contributions[:, :-1]  # the last column is the expected value

    def get_state(self) -> PartState:
        if not hasattr(self, "booster_"):
            raise NotFittedError("LambdaRankRanker is not fitted; call fit() first")
        return PartState(arrays={"n_features": np.array([self.n_features_])},
                         files={MODEL_FILE: self.booster_.model_to_string().encode("utf-8")})

    def set_state(self, state: PartState) -> LambdaRankRanker:
        from lightgbm import Booster

        try:
            self.booster_ = Booster(model_str=state.files[MODEL_FILE].decode("utf-8"))
        except Exception as exc:  # LightGBM raises its own LightGBMError on a malformed model text
            raise ArtifactError(f"the saved lightgbm ranker is not a readable LightGBM model ({exc}); "
                                "retrain and save again") from exc
        self.n_features_ = int(state.arrays["n_features"][0])
        if self.booster_.num_feature() != self.n_features_:
            raise ArtifactError("the saved lightgbm ranker's trees and feature count disagree; retrain it")
        return self
