"""Scoring many users: consecutive batches on a standard thread pool, one core per batch thread."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController, threadpool_limits
from tqdm.auto import tqdm

RECOMMENDATION_COLUMNS = ("user_id", "rank", "artist_id", "artist_name", "score")


def one_openmp_thread() -> Callable[[], Any]:
    """A context manager factory: OpenMP (FAISS's runtime among the libraries loaded now) on one thread.

    OpenMP's thread count is per calling thread: without the limit, each of several threads
    scoring side by side keeps a team of its own, whose idle threads spin and take the cores
    from the others. Call it once the libraries are loaded, and enter the result in each
    thread: ``with limit(): ...``.
    """
    openmp = ThreadpoolController().select(user_api="openmp")
    return lambda: openmp.limit(limits=1)


def in_batches(rank_batch: Callable[[np.ndarray], pd.DataFrame], rows: np.ndarray, batch_size: int,
               n_threads: int = 0, show_progress: bool = False) -> pd.DataFrame:
    """``rank_batch`` over equal consecutive batches of ``rows`` (at most ``batch_size`` each).

    With several batch threads (``n_threads``, 0: all cores), each takes one core: inside the
    pool BLAS runs on one thread (threadpoolctl's limit, for the duration of the call) and
    each batch limits its own OpenMP threads (FAISS) to one. BLAS's thread count is
    process-wide, so two such calls running at once in one process may end with BLAS on one
    thread or on all for the other; results do not depend on it. Returns the batches' frames
    concatenated in order.
    """
    batches = np.array_split(rows, -(-len(rows) // batch_size)) if len(rows) else []
    if not batches:
        return pd.DataFrame({column: [] for column in RECOMMENDATION_COLUMNS})
    workers = min(len(batches), n_threads or os.cpu_count() or 1)
    progress = {"total": len(batches), "desc": "recommending", "disable": not show_progress}
    if workers == 1:
        return pd.concat(tqdm(map(rank_batch, batches), **progress), ignore_index=True)

    one_thread = one_openmp_thread()

    def one_core(batch: np.ndarray) -> pd.DataFrame:
        with one_thread():
            return rank_batch(batch)

    with threadpool_limits(limits=1, user_api="blas"):
        with ThreadPoolExecutor(workers, thread_name_prefix="funnel-batch") as pool:
            return pd.concat(tqdm(pool.map(one_core, batches), **progress), ignore_index=True)
