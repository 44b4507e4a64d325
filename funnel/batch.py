"""A batch of users being recommended for: their rows, their history, and what is computed once for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from funnel.sparse import row_of_entries

T = TypeVar("T")

# A batch of at most this many users x artists marks its history in a dense boolean matrix
# to test candidates against it instead of searching the history's entries.
SEEN_MASK_CELLS = 1 << 25


class Batch:
    """The users of one scoring call and everything the stages compute once for them.

    Several parts read the same per-batch results (the ALS user vectors feed the ALS source,
    the ALS feature and the explanations; EASE scores feed a source and a feature). Each part
    asks the batch through :meth:`memo`, so a result is computed once per batch and lives as
    long as the batch: there is no cache shared between calls or threads.

    Parameters
    ----------
    users : numpy.ndarray
        Internal user indices; -1 for a listener unknown to the fit (a new listener).
    history : scipy.sparse.csr_matrix
        One row of play counts over the catalogue per user: what the stages read.
    known : scipy.sparse.csr_matrix, optional
        Per user, the artists never to recommend (stored entries, any value): by default
        the history; the recommender adds tagged artists and per-user exclusions, or leaves
        the history out when known artists may come back.
    blocked_items : numpy.ndarray, optional
        Boolean mask over the catalogue of artists never to recommend to anyone (excluded,
        or outside an allow-list).
    """

    def __init__(self, users: np.ndarray, history: sp.csr_matrix, known: sp.csr_matrix | None = None,
                 blocked_items: np.ndarray | None = None) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        self.history = sp.csr_matrix(history)
        if self.history.shape[0] != len(self.users):
            raise ValueError(f"a batch of {len(self.users)} users needs as many history rows, "
                             f"got {self.history.shape[0]}")
        self.known = self.history if known is None else sp.csr_matrix(known)
        if self.known.shape != self.history.shape:
            raise ValueError(f"known artists of shape {self.known.shape} do not match the history's "
                             f"{self.history.shape}")
        self.blocked_items = None if blocked_items is None else np.asarray(blocked_items, bool)
        self._memo: dict[tuple[int, str], Any] = {}

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, index: np.ndarray) -> Batch:
        """A batch of some of these users (positions ``index``), under the same rules; nothing memoised."""
        return Batch(self.users[index], self.history[index], self.known[index], self.blocked_items)

    def memo(self, owner: object, what: str, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``owner`` asks for ``what`` on this batch, then its result."""
        key = (id(owner), what)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def excluded(self, ids: np.ndarray) -> np.ndarray:
        """Whether each ``ids[r, j]`` may not be recommended to row ``r`` (False for negative ids).

        True when the artist is in the row's :attr:`known` artists or in :attr:`blocked_items`.
        """
        n_rows, n_items = self.known.shape
        valid = np.maximum(ids, 0)
        if n_rows * n_items <= SEEN_MASK_CELLS:
            seen = self.memo(self, "seen", self._seen_mask)
            found = seen[np.arange(n_rows)[:, None], valid]
        else:
            from funnel.sparse import lookup

            rows = np.repeat(np.arange(n_rows), ids.shape[1])
            found = (lookup(self.known, rows, valid.ravel()) != 0).reshape(ids.shape)
            if self.blocked_items is not None:
                found |= self.blocked_items[valid]
        return found & (ids >= 0)

    def excluded_pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (batch row, artist) pair may not be recommended."""
        from funnel.sparse import lookup

        found = lookup(self.known, rows, items) != 0
        if self.blocked_items is not None:
            found |= self.blocked_items[items]
        return found

    def _seen_mask(self) -> np.ndarray:
        seen = np.zeros(self.known.shape, bool)
        seen[row_of_entries(self.known), self.known.indices] = True
        if self.blocked_items is not None:
            seen[:, self.blocked_items] = True
        return seen

    def max_known(self) -> int:
        """Length of the longest row of :attr:`known`: how many more artists to fetch to keep ``k``."""
        return int(np.diff(self.known.indptr).max(initial=0))
