"""Implicit-feedback ALS factors (implicit's ``AlternatingLeastSquares``)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import ArtifactError, NotFittedError
from funnel.factors.nearest import nearest
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate, Space, tunable
from funnel.sparse import weighted

SMALL_FOLD_IN = 16  # fewer new listeners than this are folded in on one thread


def confidence(plays: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    """Play counts as ALS confidence before ``alpha``: binary, ``log1p`` or raw."""
    return weighted(plays, kind)


class ALSFactors(ArrayState):
    """Weighted-regularised ALS on a users x artists play matrix, optionally an average of several.

    With ``n_models`` > 1, that many ALS models are fitted from seeds ``seed``, ``seed + 1``,
    ... and their factors placed side by side (user factors divided by ``n_models``), so one
    inner product gives the mean of the models' scores: steadier than any one random start.

    Parameters
    ----------
    factors, iterations : int
    alpha, regularization : float
    confidence : {"binary", "log", "raw"}
        Transform of play counts before ``alpha`` scales them.
    seed : int
    n_threads : int
        implicit's threads (0: all cores).
    n_models : int
        ALS models averaged.

    Attributes
    ----------
    user_factors_, item_factors_ : numpy.ndarray
        float32 factors by internal user and artist index, ``n_models * factors`` columns.
    """

    name = "als"
    user_arrays = ("user_factors",)  # what grows with the training users (see Stages.get_state)

    def __init__(self, *, factors: int = 64, iterations: int = 15, alpha: float = 10.0,
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

    class Settings(PartSettings):
        """The funnel's ALS: ``n_models`` models of ``factors`` each, binary confidence."""

        factors: int = Field(32, gt=0, json_schema_extra=tunable(16, 128, log=True))
        iterations: int = Field(8, gt=0, json_schema_extra=tunable(4, 20))
        alpha: float = Field(10.0, gt=0, json_schema_extra=tunable(1.0, 50.0, log=True))
        regularization: float = Field(0.01, ge=0, json_schema_extra=tunable(0.001, 1.0, log=True))
        confidence: Literal["binary", "log", "raw"] = Field("binary", json_schema_extra=tunable(
            choices=["binary", "log"]))
        n_models: int = Field(3, gt=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> ALSFactors:
        return cls(**settings.model_dump(), seed=context.seed, n_threads=context.n_threads)

    def _models(self, n_threads: int) -> list[Any]:
        from implicit.cpu.als import AlternatingLeastSquares

        return [AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                        alpha=self.alpha, iterations=self.iterations, random_state=self.seed + i,
                                        num_threads=n_threads)
                for i in range(self.n_models)]

    def fit(self, dataset: Dataset) -> ALSFactors:
        """Fit on the dataset's play counts; returns ``self``."""
        weights = confidence(dataset.matrix, self.confidence)
        # implicit runs its own threads; BLAS threads inside them oversubscribe the cores
        with threadpool_limits(1, user_api="blas"):
            models = self._models(self.n_threads)
            for model in models:
                model.fit(weights, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(
            np.hstack([m.user_factors for m in models]) / self.n_models, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(np.hstack([m.item_factors for m in models]), dtype=np.float32)
        self._prepare_fold_in()
        return self

    def update(self, change: PartUpdate) -> ALSFactors:
        """New artists borrow their content neighbours' factors; the log's listeners are folded in.

        The artist factors stay as fitted; a new artist's are the weighted mean of those of
        the artists it resembles (``change.neighbours``; zero without any), and each
        listener's vector is implicit's ``recalculate_user`` against them, as for a new
        listener at request time.
        """
        self._check()
        if not change.same_catalogue:
            self.item_factors_ = np.ascontiguousarray(change.borrowed(change.artists(self.item_factors_)))
            self._prepare_fold_in()
        self.user_factors_ = change.users(self.user_factors_)
        learned = change.learned
        if len(learned):
            folded = Batch(np.full(len(learned), -1), change.after[learned])
            self.user_factors_[change.model_rows[learned]] = self._user_vectors(folded)
        return self

    def _check(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise NotFittedError("ALSFactors is not fitted; call fit() first")

    # an artist space (cosine of the artist factors) and the co-listening an explanation names
    because_preference = 0.0

    def similarity_space(self) -> Space:
        """Co-listening: the cosine of the artist factors (``space`` ``als``)."""
        return Space("als", 20.0)

    def nearest_artists(self, columns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` artists with the closest factors (cosine) to each of ``columns``."""
        self._check()
        return nearest(self.item_factors_, columns, n, cosine=True)

    def because_vectors(self) -> np.ndarray:
        """The artist factors."""
        self._check()
        return self.item_factors_

    def user_vectors(self, batch: Batch) -> np.ndarray:
        """Factors of the batch's users; new listeners (-1) are folded in from their history.

        Fold-in is implicit's ``recalculate_user``: the least-squares step ALS takes for every
        user during training, against the fixed artist factors. Computed once per batch.
        """
        self._check()
        return batch.memo(self, "user_vectors", lambda: self._user_vectors(batch))

    def _user_vectors(self, batch: Batch) -> np.ndarray:
        users = batch.users
        out = np.empty((len(users), self.item_factors_.shape[1]), dtype=np.float32)
        known = users >= 0
        out[known] = self.user_factors_[users[known]]
        if not known.all():
            new = np.flatnonzero(~known)
            rows = confidence(batch.history[new], self.confidence)
            # a few new listeners on one thread: an OpenMP team started for them keeps spinning
            # on the other cores after the solve and slows what follows (docs/performance.md)
            models = self._implicit if len(new) >= SMALL_FOLD_IN else self._implicit_one_thread
            for part, model in zip(self._parts(), models):
                out[new, part] = model.recalculate_user(np.arange(len(new)), rows) / self.n_models
        return out

    def _parts(self) -> list[slice]:
        """The factor columns of each averaged model."""
        width = self.item_factors_.shape[1] // self.n_models
        return [slice(i * width, (i + 1) * width) for i in range(self.n_models)]

    def _prepare_fold_in(self) -> None:
        """implicit models holding each averaged model's artist factors, on all and on one thread.

        ``recalculate_user`` reads only the artist factors, so the models share one copy of
        each model's columns and hold no user factors.
        """
        columns = [np.ascontiguousarray(self.item_factors_[:, part]) for part in self._parts()]
        with threadpool_limits(1, user_api="blas"):  # implicit checks the BLAS threads when built
            self._implicit, self._implicit_one_thread = self._models(self.n_threads), self._models(1)
        for models in (self._implicit, self._implicit_one_thread):
            for model, item_factors in zip(models, columns):
                model.item_factors = item_factors

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        self._check()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> ALSFactors:
        """Restore the state written by :meth:`to_arrays`."""
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        if self.item_factors_.shape[1] % self.n_models:
            raise ArtifactError(f"saved ALS factors have {self.item_factors_.shape[1]} columns, which "
                                f"cannot be {self.n_models} models (setting n_models of the als model) of equal size")
        self._prepare_fold_in()
        return self
