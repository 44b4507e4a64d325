"""Implicit-feedback ALS factors (implicit's ``AlternatingLeastSquares``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from funnel.beside import in_forked_child
from funnel.errors import ArtifactError, ConfigError, NotFittedError
from funnel.factors.memo import LastCall
from funnel.sparse import WEIGHTINGS, weighted

logger = logging.getLogger("funnel")

SMALL_FOLD_IN = 16  # below this many new users, one thread: OpenMP start-up costs more than it saves


@lru_cache(maxsize=1)
def _blas_controller():
    """One threadpoolctl controller (building one scans the loaded libraries, ~1.5 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_BLAS_LIMIT = threading.RLock()


def _new_blas_lock() -> None:
    """A forked child gets an unheld lock, whatever another thread of its parent was doing."""
    global _BLAS_LIMIT
    _BLAS_LIMIT = threading.RLock()


os.register_at_fork(after_in_child=_new_blas_lock)

_SIDE_BY_SIDE = threading.Event()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread while inside (implicit runs its own threads).

    The limit is process-wide, so threads take turns: two of them limiting and restoring it
    at once (concurrent fold-ins) could otherwise leave BLAS on one thread for good, or run
    implicit beside unlimited BLAS threads. Inside :func:`side_by_side_fits` the limit is
    already in force for every thread, and nobody waits.
    """
    if _SIDE_BY_SIDE.is_set():
        yield
        return
    with _BLAS_LIMIT, _blas_controller().limit(limits=1, user_api="blas"):
        yield


def one_openmp_thread() -> None:
    """OpenMP regions started from the calling thread (FAISS's searches and BLAS) use one thread.

    OpenMP keeps its thread count per calling thread, so this is for a worker thread of a
    pool whose threads each take one core; the setting ends with the thread.
    """
    _blas_controller().limit(limits=1, user_api="openmp")


@contextmanager
def side_by_side_fits() -> Iterator[None]:
    """One core per fit while inside: numpy's and scipy's BLAS on one thread, ALS fits too.

    For fits that run at once and all finish inside, as the ranker's and the serving models
    do in ``Recommender.fit`` (on two threads, or in this process and a child forked inside,
    which inherits the limits). Left to their own threads, two such fits oversubscribe the
    cores (OpenBLAS and implicit each start one per core) and wait for each other's BLAS
    limit; on Last.fm one core each fits 5-9% faster. The BLAS limit is process-wide (an
    OpenMP BLAS, such as FAISS's, keeps its per-thread setting).
    """
    with single_threaded_blas():
        _SIDE_BY_SIDE.set()
        try:
            yield
        finally:
            _SIDE_BY_SIDE.clear()


def confidence(plays: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    """Turn play counts into ALS confidence before ``alpha``: binary, ``log1p`` or raw."""
    if kind not in WEIGHTINGS:
        raise ConfigError(f"als_confidence={kind!r} is not one of {list(WEIGHTINGS)}")
    return weighted(plays, kind)


class ALSFactors:
    """Weighted-regularised ALS on a users x artists play matrix, optionally an average of several.

    With ``n_models`` > 1, that many ALS models are fitted from seeds ``seed``, ``seed + 1``,
    ... and their factors placed side by side (user factors divided by ``n_models``), so one
    inner product gives the mean of the models' scores. The average is steadier than any one
    random start.

    Parameters
    ----------
    factors, iterations : int
    alpha, regularization : float
    confidence : {"binary", "log", "raw"}
        Transform of play counts before ``alpha`` scales them.
    seed : int
    n_threads : int
        0 means all cores.
    n_models : int
        ALS models averaged.

    Attributes
    ----------
    user_factors_, item_factors_ : numpy.ndarray
        float32 factors by internal user and artist index, ``n_models * factors`` columns.
    """

    def __init__(self, factors: int = 64, iterations: int = 15, alpha: float = 10.0,
                 regularization: float = 0.1, confidence: str = "log", seed: int = 0,
                 n_threads: int = 0, n_models: int = 1) -> None:
        self.factors = factors
        self.iterations = iterations
        self.alpha = alpha
        self.regularization = regularization
        self.confidence = confidence
        self.seed = seed
        self.n_threads = n_threads
        self.n_models = n_models

    def _model(self, seed: int):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, random_state=seed, num_threads=self.n_threads,
        )

    def _new_models(self) -> list:
        """One unfitted implicit model per averaged model, seeded ``seed``, ``seed + 1``, ..."""
        return [self._model(self.seed + i) for i in range(self.n_models)]

    def fit(self, plays: sp.csr_matrix) -> "ALSFactors":
        """Fit on a users x artists CSR matrix of play counts; returns ``self``."""
        if self.factors <= 0 or self.iterations <= 0:
            raise ConfigError(f"ALS needs factors > 0 and iterations > 0, got {self.factors}, {self.iterations}")
        if isinstance(self.n_models, bool) or not isinstance(self.n_models, int) or self.n_models < 1:
            raise ConfigError(f"ALS n_models={self.n_models!r} must be an integer >= 1")
        weights = confidence(plays, self.confidence)
        with single_threaded_blas():  # nested BLAS threads inside implicit's slow it down
            models = self._new_models()
            for model in models:
                if _SIDE_BY_SIDE.is_set() or in_forked_child():
                    model.num_threads = 1
                model.fit(weights, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(
            np.hstack([m.user_factors for m in models]) / self.n_models, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(np.hstack([m.item_factors for m in models]), dtype=np.float32)
        self._implicit = models
        self._last = LastCall()
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
        return self._last.get((users, history), lambda: self._user_vectors(np.asarray(users), history))

    def _user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        out = np.empty((len(users), self.item_factors_.shape[1]), dtype=np.float32)
        known = users >= 0
        out[known] = self.user_factors_[users[known]]
        if (~known).any():
            new = np.flatnonzero(~known)
            rows = confidence(history[new], self.confidence)
            with single_threaded_blas():
                for part, model in zip(self._parts(), self._fold_in_models()):
                    model.num_threads = 1 if len(new) < SMALL_FOLD_IN or in_forked_child() else self.n_threads
                    out[new, part] = model.recalculate_user(np.arange(len(new)), rows) / self.n_models
        return out

    def _parts(self) -> list[slice]:
        """The factor columns of each averaged model."""
        width = self.item_factors_.shape[1] // self.n_models
        return [slice(i * width, (i + 1) * width) for i in range(self.n_models)]

    def _fold_in_models(self) -> list:
        """implicit models holding each averaged model's factors (made once after loading)."""
        if getattr(self, "_implicit", None) is None:  # called with BLAS already single-threaded
            self._implicit = self._new_models()
            for part, model in zip(self._parts(), self._implicit):
                model.user_factors = np.ascontiguousarray(self.user_factors_[:, part] * self.n_models)
                model.item_factors = np.ascontiguousarray(self.item_factors_[:, part])
        return self._implicit

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        self._check()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> "ALSFactors":
        """Restore the state written by :meth:`to_arrays`."""
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        if self.item_factors_.shape[1] % self.n_models:
            raise ArtifactError(f"saved ALS factors have {self.item_factors_.shape[1]} columns, which "
                                f"cannot be {self.n_models} models (n_models) of equal size")
        self._implicit = None
        self._last = LastCall()
        return self
