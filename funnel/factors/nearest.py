"""The artists nearest to given artists in a model's artist vectors (``similar_artists``)."""

from __future__ import annotations

import numpy as np


def nearest(vectors: np.ndarray, columns: np.ndarray, n: int, cosine: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` rows of ``vectors`` with the largest inner product (or cosine) with each of ``columns``.

    Each row of ``columns`` leaves itself out. Returns ``(len(columns), n)`` row indices and
    float32 similarities, best first.
    """
    if cosine:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    similarity = vectors[columns] @ vectors.T
    similarity[np.arange(len(columns)), columns] = -np.inf
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :n]
    return top.astype(np.int64), np.take_along_axis(similarity, top, axis=1).astype(np.float32)
