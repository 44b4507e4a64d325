"""BiasedSVD embeddings (scikit-surprise ``SVD(biased=True)``) on play counts as ratings."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate, tunable
from funnel.sparse import as_csr, row_of_entries

RATING_SCALE = (1.0, 5.0)
FOLD_IN_CELLS = 1 << 18  # float64 cells of new listeners' rating outer products held at once (2 MB)


def plays_to_ratings(plays: sp.csr_matrix) -> sp.csr_matrix:
    """Map each user's play counts to ratings in [1, 5] by their rank within the user.

    A user's most played artist gets 5, the least played 1, the others evenly between by
    play-count rank (ties share the mean rank); a user with one artist gives it 3. Ranks
    make heavy and light listeners comparable, which raw or log counts do not.
    """
    plays = sp.csr_matrix(plays)
    n = np.diff(plays.indptr)
    rows = np.repeat(np.arange(plays.shape[0]), n)
    frame = pd.DataFrame({"row": rows, "plays": plays.data})
    rank = frame.groupby("row")["plays"].rank(method="average").to_numpy()
    size = n[rows].astype(np.float64)
    span = np.where(size > 1, size - 1, 1.0)
    scaled = np.where(size > 1, (rank - 1) / span, 0.5)
    lo, hi = RATING_SCALE
    out = plays.copy().astype(np.float64)
    out.data = lo + (hi - lo) * scaled
    return out


def surprise_trainset(ratings: sp.csr_matrix):
    """scikit-surprise's ``Trainset`` of a users x artists ratings matrix (raw ids: our indices).

    The trainset ``Dataset.load_from_df(...).build_full_trainset()`` builds from the matrix's
    entries in storage order, with the same inner ids and rating order (so ``SVD`` learns the
    same factors), without a DataFrame and surprise's Python loop over every rating.
    """
    from surprise import Trainset

    ratings = as_csr(ratings)
    rows, cols = row_of_entries(ratings), ratings.indices
    users = np.unique(rows)  # inner ids in order of first appearance, as surprise numbers them
    items, first = np.unique(cols, return_index=True)
    items = items[np.argsort(first, kind="stable")]
    user_inner = np.zeros(ratings.shape[0], np.int64)
    user_inner[users] = np.arange(len(users))
    item_inner = np.zeros(ratings.shape[1], np.int64)
    item_inner[items] = np.arange(len(items))
    uid, iid, values = user_inner[rows], item_inner[cols], ratings.data.astype(np.float64)
    by_item = np.argsort(iid, kind="stable")
    ur = _grouped(uid, iid, values, len(users))
    ir = _grouped(iid[by_item], uid[by_item], values[by_item], len(items))
    return Trainset(ur, ir, len(users), len(items), len(values), RATING_SCALE,
                    dict(zip(users.tolist(), range(len(users)))), dict(zip(items.tolist(), range(len(items)))))


def _grouped(keys: np.ndarray, other: np.ndarray, values: np.ndarray, n_keys: int) -> defaultdict:
    """``{key: [(other, value), ...]}`` of entries sorted by key (0..n_keys-1, each present)."""
    pairs = list(zip(other.tolist(), values.tolist()))
    ends = np.cumsum(np.bincount(keys, minlength=n_keys)).tolist()
    starts = [0, *ends[:-1]]
    return defaultdict(list, {key: pairs[start:end] for key, (start, end) in enumerate(zip(starts, ends))})


class BiasedSVDFactors(ArrayState):
    """Biased matrix factorisation of ratings with scikit-surprise's ``SVD``.

    Ratings come from :func:`plays_to_ratings`. Artists and users surprise never saw get
    zero factors and biases.

    Parameters
    ----------
    factors, epochs : int
    lr, reg : float
        Learning rate and regularisation of surprise's SGD.
    seed : int

    Attributes
    ----------
    user_factors_, item_factors_ : numpy.ndarray
    user_bias_, item_bias_ : numpy.ndarray
    global_mean_ : float
    """

    name = "svd"
    reusable = True  # kept in cache_dir and reused with reuse_svd (main.py --runsvd False)
    user_arrays = ("user_factors", "user_bias")  # what grows with the training users

    def __init__(self, *, factors: int = 32, epochs: int = 20, lr: float = 0.005,
                 reg: float = 0.05, seed: int = 0) -> None:
        self.factors = factors
        self.epochs = epochs
        self.lr = lr
        self.reg = reg
        self.seed = seed

    class Settings(PartSettings):
        """scikit-surprise ``SVD(biased=True)``: size, epochs, learning rate and regularisation."""

        factors: int = Field(16, gt=0, json_schema_extra=tunable(4, 64, log=True))
        epochs: int = Field(20, gt=0)
        lr: float = Field(0.005, gt=0)
        reg: float = Field(0.1, ge=0)

    @classmethod
    def from_config(cls, settings: Settings, context: PartContext) -> BiasedSVDFactors:
        return cls(**settings.model_dump(), seed=context.seed)

    def fit(self, dataset: Dataset) -> BiasedSVDFactors:
        """Fit on the dataset's play counts (as ratings); returns ``self``.

        Users and artists without ratings get zero factors and biases.
        """
        from surprise import SVD

        matrix = plays_to_ratings(dataset.matrix)
        trainset = surprise_trainset(matrix)
        algo = SVD(n_factors=self.factors, n_epochs=self.epochs, biased=True, lr_all=self.lr, reg_all=self.reg,
                   random_state=self.seed)
        algo.fit(trainset)
        n_users, n_items = matrix.shape
        uid = _inner_order(trainset._raw2inner_id_users)
        iid = _inner_order(trainset._raw2inner_id_items)
        self.user_factors_ = np.zeros((n_users, self.factors), np.float32)
        self.item_factors_ = np.zeros((n_items, self.factors), np.float32)
        self.user_bias_ = np.zeros(n_users, np.float32)
        self.item_bias_ = np.zeros(n_items, np.float32)
        self.user_factors_[uid], self.item_factors_[iid] = algo.pu, algo.qi
        self.user_bias_[uid], self.item_bias_[iid] = algo.bu, algo.bi
        self.global_mean_ = float(trainset.global_mean)
        return self

    def update(self, change: PartUpdate) -> BiasedSVDFactors:
        """New artists borrow their content neighbours' factors and bias; the log's listeners are solved.

        The artist factors and biases stay as fitted; a new artist's are the weighted mean of
        those of the artists it resembles (``change.neighbours``; zero without any), and each
        listener's vector and bias are the ridge fit a new listener gets at request time
        (:meth:`user_vectors`).
        """
        self._check()
        self.item_factors_ = change.borrowed(change.artists(self.item_factors_))
        self.item_bias_ = change.borrowed(change.artists(self.item_bias_))
        self.user_factors_, self.user_bias_ = change.users(self.user_factors_), change.users(self.user_bias_)
        learned = change.learned
        if len(learned):
            rows = change.model_rows[learned]
            folded = Batch(np.full(len(learned), -1), change.after[learned])
            self.user_factors_[rows], self.user_bias_[rows] = self._user_vectors(folded)
        return self

    def _check(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise NotFittedError("BiasedSVDFactors is not fitted; call fit() first")

    def user_vectors(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Factors and biases of the batch's users; new listeners (-1) are solved from their history.

        A new listener's factors and bias are the ridge least-squares fit of their ratings
        against the fixed artist factors and biases (penalty ``reg`` per rating, as in SGD),
        solved for every new listener of the batch at once. Computed once per batch.
        """
        self._check()
        return batch.memo(self, "user_vectors", lambda: self._user_vectors(batch))

    def _user_vectors(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        users = batch.users
        vec = np.zeros((len(users), self.factors), np.float32)
        bias = np.zeros(len(users), np.float32)
        known = users >= 0
        vec[known] = self.user_factors_[users[known]]
        bias[known] = self.user_bias_[users[known]]
        new = np.flatnonzero(~known & (np.diff(batch.history.indptr) > 0))
        if not len(new):
            return vec, bias
        ratings = plays_to_ratings(batch.history[new])
        # chunks of listeners: each rating's outer product is held until its chunk is solved
        size = max(1, FOLD_IN_CELLS // (self.factors + 1) ** 2)
        ends = np.searchsorted(ratings.indptr[1:], np.arange(size, ratings.nnz, size), side="right")
        bounds = [0, *np.unique(ends[(ends > 0) & (ends < len(new))]).tolist(), len(new)]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            vec[new[start:stop]], bias[new[start:stop]] = self._solve(ratings[start:stop])
        return vec, bias

    def _solve(self, ratings: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Ridge factors and biases of listeners from their ratings (every row has entries)."""
        items = ratings.indices
        target = ratings.data - self.global_mean_ - self.item_bias_[items]
        design = np.hstack([self.item_factors_[items], np.ones((len(items), 1), np.float32)]).astype(np.float64)
        width = self.factors + 1
        starts = ratings.indptr[:-1]  # every row has entries, so each sum below is one user's
        gram = np.add.reduceat(design[:, :, None] * design[:, None, :], starts, axis=0)
        gram += (self.reg * np.diff(ratings.indptr))[:, None, None] * np.eye(width)
        moment = np.add.reduceat(design * target[:, None], starts, axis=0)
        solution = np.linalg.solve(gram, moment[:, :, None])[:, :, 0]
        return solution[:, :-1], solution[:, -1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        self._check()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_,
                "user_bias": self.user_bias_, "item_bias": self.item_bias_,
                "global_mean": np.array([self.global_mean_])}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> BiasedSVDFactors:
        """Restore the state written by :meth:`to_arrays`."""
        self.user_factors_ = np.asarray(arrays["user_factors"], np.float32)
        self.item_factors_ = np.asarray(arrays["item_factors"], np.float32)
        self.user_bias_ = np.asarray(arrays["user_bias"], np.float32)
        self.item_bias_ = np.asarray(arrays["item_bias"], np.float32)
        self.global_mean_ = float(np.asarray(arrays["global_mean"])[0])
        return self


def _inner_order(raw2inner: dict) -> np.ndarray:
    """Our index of each surprise inner id (raw ids are our internal indices)."""
    order = np.empty(len(raw2inner), dtype=np.int64)
    order[np.fromiter(raw2inner.values(), dtype=np.int64, count=len(raw2inner))] = np.fromiter(
        raw2inner.keys(), dtype=np.int64, count=len(raw2inner))
    return order
