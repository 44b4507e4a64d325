"""Friends' listening: how many of a user's friends listen to each artist."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from funnel.batch import Batch
from funnel.data import Dataset
from funnel.errors import NotFittedError
from funnel.protocols import ArrayState, PartContext, PartSettings, PartUpdate
from funnel.sparse import csr_from_arrays, csr_to_arrays, most_first, select_rows, weighted


class FriendListening(ArrayState):
    """Counts of friends listening to each artist, from the dataset's friendships.

    Attributes
    ----------
    counts_ : scipy.sparse.csr_matrix
        users x artists: number of the user's friends (in the training data) who listen.
        Each row stores its entries most listened first (ties by artist index), so that a
        user's top friends' artists are the start of their row.
    n_friends_ : numpy.ndarray
        Friends of each user that are in the training data.
    friends_ : scipy.sparse.csr_matrix
        users x users, 1 where the column is a friend of the row (both training users).
    """

    name = "friends"
    user_arrays = ("", "n_friends", "friends/")  # the counts matrix (no prefix) and friend numbers, per training user

    Settings = PartSettings

    @classmethod
    def from_config(cls, settings: PartSettings, context: PartContext) -> FriendListening:
        return cls()

    def fit(self, dataset: Dataset) -> FriendListening:
        """Build the counts from ``dataset.friends`` (none when it has no friendships)."""
        n_users = dataset.n_users
        friends = sp.csr_matrix((n_users, n_users), dtype=np.float32)
        if dataset.friends is not None and len(dataset.friends):
            a = dataset.user_index(dataset.friends["user_id"].to_numpy())
            b = dataset.user_index(dataset.friends["friend_id"].to_numpy())
            ok = (a >= 0) & (b >= 0) & (a != b)
            friends = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (a[ok], b[ok])), shape=(n_users, n_users))
            friends.data[:] = 1.0  # duplicate pairs count once
        self.friends_ = friends
        self.counts_ = most_first(sp.csr_matrix(friends @ weighted(dataset.matrix, "binary")))
        self.n_friends_ = np.diff(friends.indptr).astype(np.float32)
        return self

    def update(self, change: PartUpdate) -> FriendListening:
        """Count the log's listeners who started an artist for each of their friends; new listeners have none."""
        if not hasattr(self, "counts_"):
            raise NotFittedError("FriendListening is not fitted; call fit() first")
        n = change.n_model_rows
        if self.friends_.shape[0] != n:  # new listeners: no friends among the training users
            graph = sp.coo_matrix(self.friends_)
            self.friends_ = sp.csr_matrix((graph.data, (graph.row, graph.col)), shape=(n, n))
        self.n_friends_ = change.users(self.n_friends_)
        counts = change.matrix(self.counts_)
        learned = change.learned
        if len(learned):
            plays = change.plays
            started = sp.csr_matrix((change.started.astype(np.float32), plays.indices, plays.indptr),
                                    shape=plays.shape)[learned]
            added = sp.csr_matrix(self.friends_[:, change.model_rows[learned]] @ started)
            touched = np.flatnonzero(np.diff(added.indptr) > 0)
            if len(touched):
                # only the touched rows are counted and ordered again; the others keep their stored order
                rows = most_first(sp.csr_matrix(counts[touched] + added[touched]))
                index = np.arange(counts.shape[0])
                index[touched] = counts.shape[0] + np.arange(len(touched))
                counts = sp.csr_matrix(sp.vstack([counts, rows], format="csr")[index])
        self.counts_ = counts
        return self

    def rows(self, batch: Batch) -> tuple[sp.csr_matrix, np.ndarray]:
        """Friend counts and number of friends of the batch's users; new listeners (-1) have none."""
        if not hasattr(self, "counts_"):
            raise NotFittedError("FriendListening is not fitted; call fit() first")
        return batch.memo(self, "rows", lambda: self._rows(batch.users))

    def _rows(self, users: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        known = users >= 0
        n_friends = np.zeros(len(users))
        n_friends[known] = self.n_friends_[users[known]]
        return select_rows(self.counts_, users), n_friends  # rows keep their most-listened-first order

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays for persistence."""
        return {**csr_to_arrays(self.counts_), "n_friends": self.n_friends_, **csr_to_arrays(self.friends_, "friends/")}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> FriendListening:
        """Restore the state written by :meth:`to_arrays`."""
        self.counts_ = csr_from_arrays(arrays)
        self.n_friends_ = np.asarray(arrays["n_friends"], np.float32)
        self.friends_ = csr_from_arrays(arrays, "friends/")
        return self

