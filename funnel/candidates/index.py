"""FAISS inner-product indexes: exact by default, IVF (or HNSW on request) for large catalogues.

Exact search stays the default below ``ann_threshold`` artists; the recall and speed of IVF
and HNSW at 100,000 and 200,000 artists are in ``docs/performance.md``
(``python benchmarks/scale.py --index SIZE``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from funnel.errors import ArtifactError

# FAISS's exact search takes one BLAS product per batch from this many queries on (its
# process-wide ``distance_compute_blas_threshold``, 128,000 in FAISS 1.15). funnel's batches
# are smaller and were much slower query by query (docs/performance.md), so funnel lowers the
# threshold, once, when it builds or loads an index.
BLAS_QUERIES = 16


def use_blas_for_batches() -> None:
    """Lower FAISS's process-wide BLAS threshold to :data:`BLAS_QUERIES` (never raise it)."""
    import faiss

    if faiss.cvar.distance_compute_blas_threshold > BLAS_QUERIES:
        faiss.cvar.distance_compute_blas_threshold = BLAS_QUERIES


def resolve_kind(kind: str, n_vectors: int, ann_threshold: int) -> str:
    """The concrete index kind: ``auto`` is exact below ``ann_threshold`` vectors, else IVF."""
    if kind == "auto":
        return "flat" if n_vectors < ann_threshold else "ivf"
    return kind


def build_index(vectors: np.ndarray, kind: str = "flat", seed: int = 0, ids: np.ndarray | None = None) -> Any:
    """A FAISS inner-product index over ``vectors`` (float32, one row per artist).

    With ``ids``, only those rows are indexed, and searches return their row numbers.
    """
    import faiss

    use_blas_for_batches()
    vectors = np.ascontiguousarray(vectors if ids is None else vectors[ids], dtype=np.float32)
    n, dim = vectors.shape
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 256
    else:
        nlist = max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = min(nlist, max(16, nlist // 100))
    if ids is None:
        index.add(vectors)
        return index
    if kind != "ivf":  # IVF stores ids itself; flat and HNSW indexes need a map around them
        index = faiss.IndexIDMap(index)
    index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product search; returns ``(ids, scores)`` with -1 / -inf padding."""
    k = max(1, min(k, index.ntotal))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, ids = index.search(queries, k)
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    return ids.astype(np.int64), scores


def index_bytes(index) -> bytes:
    """A FAISS index in its native serialised format."""
    import faiss

    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes, what: str = "FAISS index"):
    """The index written by :func:`index_bytes` (FAISS's own reader)."""
    import faiss

    use_blas_for_batches()
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise ArtifactError(f"{what} is not a readable FAISS index ({exc}); retrain and save again") from exc


def index_from_file(path: str | os.PathLike, what: str = "FAISS index"):
    """The index in ``path`` with its vectors memory-mapped (``IO_FLAG_MMAP_IFC``), not copied.

    Processes that load the same file share its pages. The file must not change while the
    index is used (saved models are written to new files, never in place).
    """
    import faiss

    use_blas_for_batches()
    try:
        return faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        raise ArtifactError(f"{what} ({path}) is not a readable FAISS index ({exc}); retrain and save again") from exc
