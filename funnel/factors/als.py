"""Implicit-feedback ALS factors (implicit's ``AlternatingLeastSquares``)."""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from funnel.errors import ConfigError, NotFittedError
from funnel.sparse import WEIGHTINGS, weighted

logger = logging.getLogger("funnel")

SMALL_FOLD_IN = 16  # below this many new users, one thread: OpenMP start-up costs more than it saves


@lru_cache(maxsize=1)
def _blas_controller():
    """One threadpoolctl controller (building one scans the loaded libraries, ~1.5 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas():
    """Context manager limiting BLAS to one thread (implicit runs its own threads)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def confidence(plays: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    """Turn play counts into ALS confidence before ``alpha``: binary, ``log1p`` or raw."""
    if kind not in WEIGHTINGS:
        raise ConfigError(f"als_confidence={kind!r} is not one of {list(WEIGHTINGS)}")
    return weighted(plays, kind)


class ALSFactors:
    """Weighted-regularised ALS on a users x artists play matrix.

    Parameters
    ----------
    factors, iterations : int
    alpha, regularization : float
    confidence : {"binary", "log", "raw"}
        Transform of play counts before ``alpha`` scales them.
    seed : int
    n_threads : int
        0 means all cores.

    Attributes
    ----------
    user_factors_, item_factors_ : numpy.ndarray
        float32 factors by internal user and artist index.
    """

    def __init__(self, factors: int = 64, iterations: int = 15, alpha: float = 10.0,
                 regularization: float = 0.1, confidence: str = "log", seed: int = 0,
                 n_threads: int = 0) -> None:
        self.factors = factors
        self.iterations = iterations
        self.alpha = alpha
        self.regularization = regularization
        self.confidence = confidence
        self.seed = seed
        self.n_threads = n_threads

    def _model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, random_state=self.seed, num_threads=self.n_threads,
        )

    def fit(self, plays: sp.csr_matrix) -> "ALSFactors":
        """Fit on a users x artists CSR matrix of play counts; returns ``self``."""
        if self.factors <= 0 or self.iterations <= 0:
            raise ConfigError(f"ALS needs factors > 0 and iterations > 0, got {self.factors}, {self.iterations}")
        with single_threaded_blas():  # nested BLAS threads inside implicit's slow it down
            model = self._model()
            model.fit(confidence(plays, self.confidence), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._implicit = model
        return self

    def _check(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise NotFittedError("ALSFactors is not fitted; call fit() first")

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Factors of ``users`` (internal indices); rows with -1 are folded in from ``history``.

        Fold-in is implicit's ``recalculate_user``: a least-squares solve against the fixed
        artist factors, the same step ALS takes for every user during training.
        """
        self._check()
        users = np.asarray(users)
        out = np.empty((len(users), self.item_factors_.shape[1]), dtype=np.float32)
        known = users >= 0
        out[known] = self.user_factors_[users[known]]
        if (~known).any():
            new = np.flatnonzero(~known)
            model = getattr(self, "_implicit", None)
            if model is None:
                with single_threaded_blas():
                    model = self._model()
                model.user_factors = self.user_factors_
                model.item_factors = self.item_factors_
                self._implicit = model
            rows = confidence(history[new], self.confidence)
            model.num_threads = 1 if len(new) < SMALL_FOLD_IN else self.n_threads
            with single_threaded_blas():
                out[new] = model.recalculate_user(np.arange(len(new)), rows)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        self._check()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "ALSFactors":
        """Restore the state written by :meth:`to_arrays`."""
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        self._implicit = None
        return self
