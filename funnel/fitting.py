"""Fitting a whole funnel: the ranker's stages and examples, the serving stages, caches, a worker.

The ranker learns on features from stages fitted on a per-user history part of the training
data (:mod:`funnel.ranking.training`); the serving stages are then fitted on all of it. A
model whose fit is a pure function of arrays (:class:`funnel.protocols.FitsInWorker`, such as
BiasedSVD, whose SGD in scikit-surprise holds the GIL) is fitted for both, unless
``n_threads`` is 1, in one worker process of a standard ``ProcessPoolExecutor`` (``spawn``
start method, the same on every platform) while this process fits everything else.
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
from funnel.persistence import ArtifactCache
from funnel.protocols import FitsInWorker, PartState, Ranker
from funnel.ranking.training import history_split, train_ranker
from funnel.registry import class_path
from funnel.stages import FEATURE_CODE_VERSION, Part, Stages

logger = logging.getLogger("funnel")


@dataclass
class Fitted:
    """What :func:`fit` produces."""

    stages: Stages
    ranker: Ranker
    candidate_recall: float
    seconds: dict[str, float]


def worker_models(stages: Stages) -> list[Part]:
    """The needed models a worker process fits (:class:`FitsInWorker`)."""
    return [part for part in stages.needed_models() if callable(getattr(part.cls, "fit_job", None))]


@contextmanager
def model_worker(config: FunnelConfig, stages: Stages) -> Iterator[Executor | None]:
    """A one-process pool for the worker models' fits, or None to fit them here (``n_threads=1``)."""
    if config.n_threads == 1 or not worker_models(stages):
        yield None
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def worker_provider(dataset: Dataset, stages: Stages, part: Part, cache: ArtifactCache | None, kind: str,
                    pool: Executor | None) -> Callable[[], Any]:
    """A callable giving ``part`` fitted on ``dataset``: from the cache, a worker, or fitted on call."""
    model: FitsInWorker = part.build(stages.context(part))
    settings = {"class": class_path(part.cls), **part.settings.model_dump(),
                "seed": stages.config.seed, "code": FEATURE_CODE_VERSION}
    if cache is not None and stages.config.reuse_svd:
        cached = cache.load(kind, dataset.fingerprint(), settings)
        if cached is not None:
            return lambda: model.set_state(cached)  # type: ignore[attr-defined]
    future: Future | None = None
    if pool is not None:
        function, args = model.fit_job(dataset)
        future = pool.submit(function, *args)

    def provide() -> Any:
        logger.info("training %s (%s)", part.name, part.settings)
        if future is None:
            model.fit(dataset)  # type: ignore[attr-defined]
        else:
            try:
                model.set_state(PartState(arrays=future.result()))  # type: ignore[attr-defined]
            except BrokenProcessPool as exc:
                # e.g. a script without an ``if __name__ == "__main__":`` guard, which a spawned
                # worker runs again on start, or a worker killed for memory
                logger.warning("the worker process fitting %s ended without an answer (%s); fitting it "
                               "here instead. Scripts that fit a funnel should guard their top level with "
                               "`if __name__ == \"__main__\":`; n_threads=1 never starts a worker", part.name, exc)
                model.fit(dataset)  # type: ignore[attr-defined]
        if cache is not None:
            cache.save(kind, dataset.fingerprint(), settings, model.get_state())  # type: ignore[attr-defined]
        return model

    return provide


def ranker_settings(config: FunnelConfig, stages: Stages) -> dict[str, Any]:
    """What a cached ranker must have been trained with to be reused."""
    return {**config.model_settings(), "classes": stages.classes(), "code": FEATURE_CODE_VERSION}


def fit(dataset: Dataset, config: FunnelConfig) -> Fitted:
    """Train the ranker without leakage, then fit both stages on all of ``dataset``."""
    cache = ArtifactCache(config.cache_dir) if config.cache_dir else None
    seconds: dict[str, float] = {}
    plan = Stages(config)
    cached = cache.load("ranker", dataset.fingerprint(), ranker_settings(config, plan)) \
        if cache is not None and config.reuse_ranker else None
    with model_worker(config, plan) as pool:
        if cached is None:
            history, labels = history_split(dataset, config)
            history_models = {part.name: worker_provider(history, plan, part, cache, f"{part.name}_history", pool)
                              for part in worker_models(plan)}
        serving_models = {part.name: worker_provider(dataset, plan, part, cache, part.name, pool)
                          for part in worker_models(plan)}
        started = time.perf_counter()
        if cached is None:
            ranker, _, examples = train_ranker(history, labels, config, history_models)
            recall = examples.candidate_recall
        else:
            ranker = plan.new_ranker().set_state(cached)
            recall = float(cached.arrays["candidate_recall"][0])
        seconds["ranker"] = time.perf_counter() - started
        logger.info("fitting both stages on all %d interactions", len(dataset.interactions))
        started = time.perf_counter()
        stages = plan.fit(dataset, serving_models)
        seconds["stages"] = time.perf_counter() - started
    if cached is not None and list(cached.arrays["feature_names"]) != stages.feature_names_:
        raise FunnelError("the cached ranker was trained on other feature columns; retrain it "
                          "(--judge True / reuse_ranker=False)")
    if cached is None and cache is not None:
        state = ranker.get_state()
        state.arrays.update(candidate_recall=np.array([recall]), feature_names=np.array(stages.feature_names_))
        cache.save("ranker", dataset.fingerprint(), ranker_settings(config, plan), state)
    seconds.update({f"fit {name}": value for name, value in stages.fit_seconds_.items()})
    return Fitted(stages, ranker, recall, seconds)
