"""FAISS inner-product indexes: exact by default, IVF (or HNSW on request) for large catalogues.

Measured with ``python benchmarks/scale.py`` (200,000 synthetic artists, the funnel's
254-dimension vectors: 250 tag components, popularity and freshness; 2,000 queries,
K = 100): IVF probing 17 of its 1,788 lists (1%, the default) found 1.00 of the exact top
100 at 6.1-7.5x the speed of exact search in two runs (8 lists: 0.92 at 8x); on the
504-dimension vectors of ``tag_dim=500`` the same probes gave 1.00 at 5.9-8.5x. At 100,000
artists 16 lists gave 0.995 at 3.2x (``--index 100k``; 0.999 at 3.9x on 504 dimensions).
HNSW reached at most 0.64-0.71 (efSearch 600), since inner product on vectors of unequal
norm suits it less. On Last.fm's own vectors (17,632 artists, less clustered) IVF needed 6%
of its lists for 0.97 recall at only 3x, so exact search stays the default below
``ann_threshold`` (100,000) artists.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from funnel.errors import ConfigError

logger = logging.getLogger("funnel")


def resolve_kind(kind: str, n_vectors: int, ann_threshold: int) -> str:
    """The concrete index kind: ``auto`` is exact below ``ann_threshold`` vectors, else IVF."""
    if kind == "auto":
        return "flat" if n_vectors < ann_threshold else "ivf"
    if kind not in ("flat", "ivf", "hnsw"):
        raise ConfigError(f"index={kind!r} is not one of ['auto', 'flat', 'ivf', 'hnsw']")
    return kind


def build_index(vectors: np.ndarray, kind: str = "flat", seed: int = 0, ids: np.ndarray | None = None):
    """Build a FAISS inner-product index over ``vectors`` (float32, one row per artist).

    With ``ids``, only those rows are indexed, and searches return their row numbers.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors if ids is None else vectors[ids], dtype=np.float32)
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 256
    elif kind == "ivf":
        nlist = max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = min(nlist, max(16, nlist // 100))
    else:
        raise ConfigError(f"index kind {kind!r} is not one of ['flat', 'ivf', 'hnsw']")
    if ids is None:
        index.add(vectors)
        return index
    if kind != "ivf":  # IVF stores ids itself; flat and HNSW indexes need a map around them
        index = faiss.IndexIDMap(index)
    index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return index


SINGLE_THREAD_QUERIES = 16  # below this many queries, FAISS's thread start-up costs more than it saves
# FAISS's BLAS threshold is process-wide: it stays at 0 while any batch search runs.
_BATCH_SEARCHES = 0
_SAVED_THRESHOLD = 0
_THRESHOLD_LOCK = threading.Lock()


def _new_threshold_lock() -> None:
    """A forked child gets an unheld lock, whatever another thread of its parent was doing."""
    global _THRESHOLD_LOCK
    _THRESHOLD_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_threshold_lock)


@contextmanager
def _blas_path() -> Iterator[None]:
    """FAISS's BLAS path for every search while inside; concurrent batch searches share it."""
    import faiss

    global _BATCH_SEARCHES, _SAVED_THRESHOLD
    with _THRESHOLD_LOCK:
        if _BATCH_SEARCHES == 0:
            _SAVED_THRESHOLD = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = 0
        _BATCH_SEARCHES += 1
    try:
        yield
    finally:
        with _THRESHOLD_LOCK:
            _BATCH_SEARCHES -= 1
            if _BATCH_SEARCHES == 0:
                faiss.cvar.distance_compute_blas_threshold = _SAVED_THRESHOLD


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS on one thread for the calling thread while inside (OpenMP's count is per thread)."""
    import faiss

    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product search; returns ``(ids, scores)`` with -1 / -inf padding.

    Fewer than ``SINGLE_THREAD_QUERIES`` queries run on one thread. More always take FAISS's
    BLAS path: with its default ``distance_compute_blas_threshold`` (128,000 in FAISS 1.15)
    an exact search scanned query by query up to about 1,330 queries of 96 dimensions, 2.5x
    slower per query on this machine for a batch of 512 users.
    """
    k = max(1, min(k, index.ntotal))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) < SINGLE_THREAD_QUERIES:
        with _one_thread():
            scores, ids = index.search(queries, k)
    else:
        with _blas_path():
            scores, ids = index.search(queries, k)
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    return ids.astype(np.int64), scores
