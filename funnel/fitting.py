"""Fitting a whole funnel: the ranker's side and the serving stages, at once, and the caches.

The ranker learns on features from stages fitted on a per-user history part of the training
data (:mod:`funnel.ranking.training`); the serving stages are fitted on all of it. The two
sides share nothing until the ranker is trained, so unless ``n_threads`` is 1 they run at
once, each with half the cores for its native threads (implicit, BLAS, OpenMP), whether the
sides run at once or not. The serving side runs in a worker process of loky's reusable
executor (``parallel_fit="process"``): the parts' Python steps (surprise's rating loop, tag
tokenising, pandas) would otherwise take turns on the GIL with the ranker's side. The worker
returns the stages' states, rebuilt here as a saved model is loaded; it stays up between
fits and does not run the caller's ``__main__``, so a script needs no ``if __name__ ==
"__main__":`` guard. ``parallel_fit="thread"`` runs the serving side on a thread of this
process instead (one copy of the data in memory). With ``fit_users``, both sides learn from a
sample of listeners, except for the artist-side models, which count every listener's plays.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.data.split import listener_sample, with_listeners
from funnel.errors import ConfigError, FunnelError
from funnel.persistence import ArtifactCache
from funnel.protocols import PartState, Ranker
from funnel.ranking.training import history_split, train_ranker
from funnel.registry import class_path
from funnel.stages import FEATURE_CODE_VERSION, Stages

logger = logging.getLogger("funnel")

WORKER_IDLE_SECONDS = 120  # the worker process exits after this long without a fit


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


def native_limits(threads: int) -> contextlib.ExitStack:
    """BLAS (process-wide) and the calling thread's OpenMP (FAISS) limited to ``threads``.

    Each side runs under the same limits whether the sides run at once or not, so that a fit
    whose ranker comes from the cache computes the serving stages exactly as the fit that
    trained it.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
    stack.enter_context(ThreadpoolController().select(user_api="openmp").limit(limits=threads))
    return stack


def serving_stages(learners: Dataset, config: FunnelConfig, classes: dict[str, str], everyone: Dataset | None,
                   threads: int) -> tuple[Stages, float]:
    """The stages fitted on all of ``learners`` (the artist-side models on ``everyone``) for serving, on
    ``threads`` native threads, and the seconds they took."""
    started = time.perf_counter()
    cache = ArtifactCache(config.cache_dir) if config.cache_dir else None
    with native_limits(threads):  # OpenMP's limit is the calling thread's
        stages = Stages(config, classes)
        stages.fit(learners, cached_models(learners, stages, cache, ""), everyone=everyone)
    return stages, time.perf_counter() - started


_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})))  # what every record has; ``extra`` adds more


class _Records(logging.Handler):
    """Keeps the records it is given as plain records another process can unpickle: the message
    formatted, the traceback as text, and a record's ``extra`` attributes left out."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        plain = logging.makeLogRecord({key: value for key, value in vars(record).items() if key in _RECORD_FIELDS})
        plain.msg, plain.args = record.getMessage(), None
        if record.exc_info:
            plain.exc_text = logging.Formatter().formatException(record.exc_info)
        plain.exc_info = None
        self.records.append(plain)


def fit_in_worker(learners: Dataset, config: FunnelConfig, classes: dict[str, str], everyone: Dataset | None,
                  threads: int, level: int = logging.WARNING
                  ) -> tuple[dict[str, PartState], list[str], dict[str, float], float, list[logging.LogRecord]]:
    """:func:`serving_stages` in a worker process: the stages' states and sources to rebuild them by, the
    seconds of each part and of the whole, and what the ``funnel`` logger said at ``level`` and above
    (the caller's level), for the caller's handlers."""
    with kept_records(level) as records:
        stages, seconds = serving_stages(learners, config, classes, everyone, threads)
    return stages.get_state(), stages.source_names, stages.fit_seconds_, seconds, records


@contextlib.contextmanager
def kept_records(level: int) -> Iterator[list[logging.LogRecord]]:
    """The records the ``funnel`` logger gives at ``level`` and above meanwhile, kept for another process."""
    records, previous = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(level)
    try:
        yield records.records
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous)


def unimportable(classes: dict[str, str]) -> list[str]:
    """The parts whose class another process cannot import (defined in ``__main__`` or in a function)."""
    return sorted(key for key, path in classes.items() if path.startswith("__main__:") or "<locals>" in path)


def use_worker(config: FunnelConfig, classes: dict[str, str]) -> bool:
    """Whether the serving side of a fit whose sides run at once goes to a worker process (``parallel_fit``).

    ``auto`` takes the worker unless ``fit_users`` is set (a sampled fit is for an audience
    whose data should be held once) or a part's class cannot be imported by another process.

    Raises
    ------
    ConfigError
        ``parallel_fit="process"`` with a part that another process cannot import.
    """
    if config.parallel_fit == "thread":
        return False
    local = unimportable(classes)
    if config.parallel_fit == "process" and local:
        raise ConfigError(f"parallel_fit='process' needs every part's class importable by a worker process, and "
                          f"{', '.join(local)} is defined in __main__ or in a function; move it to a module "
                          "(docs/extending.md) or set parallel_fit='thread'")
    if config.parallel_fit == "auto" and (config.fit_users is not None or local
                                          or multiprocessing.current_process().daemon):
        return False
    return True


def worker_stages(later: Future[Any], config: FunnelConfig, classes: dict[str, str]) -> tuple[Stages, float]:
    """The serving stages :func:`fit_in_worker` fitted, rebuilt from their states as a load rebuilds
    them, and the seconds they took there; what the worker logged goes to this process's handlers."""
    try:
        states, source_names, fit_seconds, seconds, records = later.result()
    except BrokenProcessPool as died:
        raise FunnelError(f"the worker process fitting the serving stages stopped ({died}); if memory ran out, "
                          "set parallel_fit='thread' to fit them in this process with one copy of the data") from died
    for record in records:  # as they were logged there, the worker's process name kept
        logger.handle(record)
    stages = Stages.from_state(config, states, source_names, classes)
    stages.fit_seconds_ = fit_seconds
    return stages, seconds


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

    classes = plan.classes()
    everyone = dataset if sampled else None
    at_once = cached is None and cores > 1

    logger.info("fitting both stages on all %d interactions", len(learners.interactions))
    with native_limits(threads):
        if at_once and use_worker(config, classes):
            from loky import get_reusable_executor

            executor = get_reusable_executor(max_workers=1, timeout=WORKER_IDLE_SECONDS)
            later: Future[Any] = executor.submit(fit_in_worker, learners, side, classes, everyone, threads,
                                                 logger.getEffectiveLevel())
            ranker, recall = ranker_side()
            stages, seconds["stages"] = worker_stages(later, side, classes)
        elif at_once:
            with ThreadPoolExecutor(1, thread_name_prefix="funnel-fit") as pool:
                later = pool.submit(serving_stages, learners, side, classes, everyone, threads)
                ranker, recall = ranker_side()
                stages, seconds["stages"] = later.result()
        else:
            ranker, recall = ranker_side()
            stages, seconds["stages"] = serving_stages(learners, side, classes, everyone, threads)
    if cached is not None and list(cached.arrays["feature_names"]) != stages.feature_names_:
        raise FunnelError("the cached ranker was trained on other feature columns; retrain it "
                          "(--judge True / reuse_ranker=False)")
    if cached is None and cache is not None:
        state = ranker.get_state()
        state.arrays.update(candidate_recall=np.array([recall]), feature_names=np.array(stages.feature_names_))
        cache.save("ranker", dataset.fingerprint(), ranker_settings(config, plan), state)
    seconds.update({f"fit {name}": value for name, value in stages.fit_seconds_.items()})
    return Fitted(stages, ranker, recall, seconds, learners)
