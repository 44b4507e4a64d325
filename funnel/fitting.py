"""Fitting a whole funnel: the ranker's side and the serving stages, at once, and the caches.

The ranker learns on features from stages fitted on a per-user history part of the training
data (:mod:`funnel.ranking.training`); the serving stages are fitted on all of it. The two
sides share nothing until the ranker is trained, so unless ``n_threads`` is 1 they run at
once on a standard ``ThreadPoolExecutor``. Each side's parts have half the cores for their
native threads (implicit, BLAS, OpenMP), whether the sides run at once or not; the heavy
steps (ALS, EASE's inverse, the tag projection, FAISS searches, sparse products) release
the GIL. No process is started, so a script needs no ``if __name__ == "__main__":`` guard.
With ``fit_users``, both sides learn from a sample of listeners, except for the artist-side
models, which count every listener's plays.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.data.split import listener_sample, with_listeners
from funnel.errors import FunnelError
from funnel.persistence import ArtifactCache
from funnel.protocols import Ranker
from funnel.ranking.training import history_split, train_ranker
from funnel.registry import class_path
from funnel.stages import FEATURE_CODE_VERSION, Stages

logger = logging.getLogger("funnel")

T = TypeVar("T")


@dataclass
class Fitted:
    """What :func:`fit` produces; ``learners`` is the sample of listeners the models learned from."""

    stages: Stages
    ranker: Ranker
    candidate_recall: float
    seconds: dict[str, float]
    learners: Dataset


def cached_models(dataset: Dataset, stages: Stages, cache: ArtifactCache | None, suffix: str
                  ) -> dict[str, Callable[[], Any]]:
    """For each ``reusable`` model, a callable fitting it on ``dataset`` through ``cache_dir``.

    The callable returns the cached state when ``reuse_svd`` is on and one matches the data
    and settings; otherwise it fits the model and caches it.
    """
    if cache is None:
        return {}
    config = stages.config
    provided: dict[str, Callable[[], Any]] = {}
    for part in stages.needed_models():
        if not getattr(part.cls, "reusable", False):
            continue
        settings = {"class": class_path(part.cls), **part.settings.model_dump(), "seed": config.seed,
                    "code": FEATURE_CODE_VERSION}
        kind = f"{part.name}{suffix}"

        def provide(part=part, settings=settings, kind=kind) -> Any:
            model = part.build(stages.context(part))
            state = cache.load(kind, dataset.fingerprint(), settings) if config.reuse_svd else None
            if state is not None:
                return model.set_state(state)
            model.fit(dataset)
            cache.save(kind, dataset.fingerprint(), settings, model.get_state())
            return model

        provided[part.name] = provide
    return provided


def ranker_settings(config: FunnelConfig, stages: Stages) -> dict[str, Any]:
    """What a cached ranker must have been trained with to be reused."""
    return {**config.model_settings(), "classes": stages.classes(), "code": FEATURE_CODE_VERSION}


def both(first: Callable[[], Any], second: Callable[[], T], threads: int, at_once: bool) -> tuple[Any, T]:
    """``first()`` and ``second()``, each on ``threads`` native threads; ``at_once``: ``second`` on a pool thread.

    BLAS's thread count is process-wide, so it is limited once for both; OpenMP's (FAISS's
    searches) is per calling thread, so each side limits its own. The limits are the same
    whether the sides run at once or not, so that a fit whose ranker comes from the cache
    computes the serving stages exactly as the fit that trained it.
    """
    openmp = ThreadpoolController().select(user_api="openmp")

    def limited(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with openmp.limit(limits=threads):
                return call()
        return run

    with threadpool_limits(limits=threads, user_api="blas"):
        if not at_once:
            return limited(first)(), limited(second)()
        with ThreadPoolExecutor(1, thread_name_prefix="funnel-fit") as pool:
            later = pool.submit(limited(second))
            return limited(first)(), later.result()


def fit(dataset: Dataset, config: FunnelConfig) -> Fitted:
    """Train the ranker without leakage and fit both stages on all of ``dataset``, at once.

    With ``fit_users``, the models with user arrays, the sources and the ranker learn from a
    sample of the listeners; the artist-side models (no ``user_arrays``) from every listener.
    """
    learners = dataset if config.fit_users is None else listener_sample(dataset, config.fit_users, config.seed)
    sampled = learners is not dataset
    if sampled:
        logger.info("learning from %d of %d listeners (fit_users=%s); artist-side models from all of them",
                    learners.n_users, dataset.n_users, config.fit_users)
    cache = ArtifactCache(config.cache_dir) if config.cache_dir else None
    seconds: dict[str, float] = {}
    plan = Stages(config)
    cached = cache.load("ranker", dataset.fingerprint(), ranker_settings(config, plan)) \
        if cache is not None and config.reuse_ranker else None
    cores = config.n_threads or os.cpu_count() or 1
    threads = max(1, cores // 2)
    side = config if threads == config.n_threads else config.replace(n_threads=threads)

    def ranker_side() -> tuple[Ranker, float]:
        started = time.perf_counter()
        if cached is not None:
            ranker = plan.new_ranker().set_state(cached)
            recall = float(cached.arrays["candidate_recall"][0])
        else:
            history, labels = history_split(dataset, config)
            mine = with_listeners(history, learners.user_ids) if sampled else history
            if sampled:
                labels = labels[np.isin(labels["user_id"].to_numpy(), learners.user_ids)]
            ranker, _, examples = train_ranker(mine, labels, side, cached_models(mine, Stages(side), cache, "_history"),
                                               everyone=history if sampled else None)
            recall = examples.candidate_recall
        seconds["ranker"] = time.perf_counter() - started
        return ranker, recall

    def serving_side() -> Stages:
        logger.info("fitting both stages on all %d interactions", len(learners.interactions))
        started = time.perf_counter()
        stages = Stages(side)
        stages.fit(learners, cached_models(learners, stages, cache, ""), everyone=dataset if sampled else None)
        seconds["stages"] = time.perf_counter() - started
        return stages

    (ranker, recall), stages = both(ranker_side, serving_side, threads, at_once=cached is None and cores > 1)
    if cached is not None and list(cached.arrays["feature_names"]) != stages.feature_names_:
        raise FunnelError("the cached ranker was trained on other feature columns; retrain it "
                          "(--judge True / reuse_ranker=False)")
    if cached is None and cache is not None:
        state = ranker.get_state()
        state.arrays.update(candidate_recall=np.array([recall]), feature_names=np.array(stages.feature_names_))
        cache.save("ranker", dataset.fingerprint(), ranker_settings(config, plan), state)
    seconds.update({f"fit {name}": value for name, value in stages.fit_seconds_.items()})
    return Fitted(stages, ranker, recall, seconds, learners)
