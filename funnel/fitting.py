"""Fitting a whole funnel: the ranker's stages and examples, the serving stages, caches, a worker.

The ranker learns on features from stages fitted on a per-user history part of the training
data (:mod:`funnel.ranking.training`); the serving stages are then fitted on all of it. Both
need a BiasedSVD, whose SGD (scikit-surprise) holds the GIL: unless ``n_threads`` is 1, the two
are fitted in one worker process of a standard ``ProcessPoolExecutor`` (``spawn`` start
method, the same on every platform) while this process fits everything else.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.errors import FunnelError
from funnel.factors import BiasedSVDFactors
from funnel.persistence import ArtifactCache
from funnel.protocols import PartState, Ranker
from funnel.ranking import RANKERS
from funnel.ranking.training import history_split, train_ranker
from funnel.stages import FEATURE_CODE_VERSION, Stages

logger = logging.getLogger("funnel")

SVD_SETTINGS = ("svd_factors", "svd_epochs", "svd_lr", "svd_reg", "seed")


@dataclass
class Fitted:
    """What :func:`fit` produces."""

    stages: Stages
    ranker: Ranker
    candidate_recall: float
    seconds: dict[str, float]


@contextmanager
def svd_worker(config: FunnelConfig) -> Iterator[Executor | None]:
    """A one-process pool for the BiasedSVD fits, or None to fit them here (``n_threads=1``)."""
    if config.n_threads == 1 or "svd" not in Stages(config).needed_models():
        yield None
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def svd_provider(dataset: Dataset, config: FunnelConfig, cache: ArtifactCache | None, kind: str,
                 pool: Executor | None) -> Callable[[], BiasedSVDFactors]:
    """A callable giving the BiasedSVD of ``dataset``: from the cache, a worker, or fitted on call."""
    model = BiasedSVDFactors.from_config(config)
    settings = {**config.model_settings(SVD_SETTINGS), "code": FEATURE_CODE_VERSION}
    if cache is not None and config.reuse_svd:
        cached = cache.load(kind, dataset.fingerprint(), settings)
        if cached is not None:
            return lambda: model.set_arrays(cached.arrays)
    future: Future | None = None
    if pool is not None:
        function, args = model.fit_job(dataset)
        future = pool.submit(function, *args)

    def provide() -> BiasedSVDFactors:
        logger.info("training BiasedSVD (%d factors, %d epochs)", config.svd_factors, config.svd_epochs)
        if future is None:
            model.fit(dataset)
        else:
            try:
                model.set_arrays(future.result())
            except BrokenProcessPool as exc:
                # e.g. a script without an ``if __name__ == "__main__":`` guard, which a spawned
                # worker runs again on start, or a worker killed for memory
                logger.warning("the worker process fitting BiasedSVD ended without an answer (%s); fitting it "
                               "here instead. Scripts that fit a funnel should guard their top level with "
                               "`if __name__ == \"__main__\":`; n_threads=1 never starts a worker", exc)
                model.fit(dataset)
        if cache is not None:
            cache.save(kind, dataset.fingerprint(), settings, PartState(arrays=model.to_arrays()))
        return model

    return provide


def ranker_settings(config: FunnelConfig) -> dict[str, Any]:
    """What a cached ranker must have been trained with to be reused."""
    return {**config.model_settings(), "code": FEATURE_CODE_VERSION}


def fit(dataset: Dataset, config: FunnelConfig) -> Fitted:
    """Train the ranker without leakage, then fit both stages on all of ``dataset``."""
    cache = ArtifactCache(config.cache_dir) if config.cache_dir else None
    seconds: dict[str, float] = {}
    cached = cache.load("ranker", dataset.fingerprint(), ranker_settings(config)) \
        if cache is not None and config.reuse_ranker else None
    with svd_worker(config) as pool:
        if cached is None:
            history, labels = history_split(dataset, config)
            history_svd = svd_provider(history, config, cache, "svd_history", pool)
        serving_svd = svd_provider(dataset, config, cache, "svd", pool)
        started = time.perf_counter()
        if cached is None:
            ranker, _, examples = train_ranker(history, labels, config, {"svd": history_svd})
            recall = examples.candidate_recall
        else:
            ranker = RANKERS.get(config.ranker).from_config(config).set_state(cached)
            recall = float(cached.arrays["candidate_recall"][0])
        seconds["ranker"] = time.perf_counter() - started
        logger.info("fitting both stages on all %d interactions", len(dataset.interactions))
        started = time.perf_counter()
        stages = Stages(config).fit(dataset, {"svd": serving_svd})
        seconds["stages"] = time.perf_counter() - started
    if cached is not None and list(cached.arrays["feature_names"]) != stages.feature_names_:
        raise FunnelError("the cached ranker was trained on other feature columns; retrain it "
                          "(--judge True / reuse_ranker=False)")
    if cached is None and cache is not None:
        state = ranker.get_state()
        state.arrays.update(candidate_recall=np.array([recall]), feature_names=np.array(stages.feature_names_))
        cache.save("ranker", dataset.fingerprint(), ranker_settings(config), state)
    seconds.update({f"fit {name}": value for name, value in stages.fit_seconds_.items()})
    return Fitted(stages, ranker, recall, seconds)
