"""Both stages of the funnel, built from the configuration and fitted on one dataset.

:class:`Stages` fits the shared models the configured parts need, then the candidate sources
(``candidates`` setting) and the feature groups (``features`` setting), each looked up by name
in its registry. It retrieves the merged candidates of a batch of users and builds the
stage-two feature matrix for them; it knows no part by name. Code beyond the stages finds the
parts that offer a capability (``funnel.protocols``) with :meth:`Stages.offering`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from funnel.batch import Batch
from funnel.candidates import SOURCES, CandidateSet, merge_candidates
from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.factors import MODELS
from funnel.protocols import PartState
from funnel.ranking import FEATURES
from funnel.ranking.features import stack_columns

logger = logging.getLogger("funnel")

# Bump when a built-in model, source or feature group changes what it computes: cached
# rankers trained on other feature code are then retrained instead of reused.
FEATURE_CODE_VERSION = 3
FALLBACK_MODEL = "popularity"  # fills a top-n list when the sources found too few artists


def without_users(arrays: dict[str, np.ndarray], model: Any) -> dict[str, np.ndarray]:
    """``arrays`` with zero rows of each of the model's ``user_arrays`` (a name, or a CSR prefix)."""
    out = dict(arrays)
    for name in getattr(model, "user_arrays", ()):
        if f"{name}indptr" in arrays:  # a CSR matrix written by funnel.sparse.csr_to_arrays
            out[f"{name}data"], out[f"{name}indices"] = arrays[f"{name}data"][:0], arrays[f"{name}indices"][:0]
            out[f"{name}indptr"] = arrays[f"{name}indptr"][:1]
            out[f"{name}shape"] = np.array([0, arrays[f"{name}shape"][1]])
        else:
            out[name] = arrays[name][:0]
    return out


class Stages:
    """Stage-one sources and stage-two feature groups over the shared models of one dataset.

    Parameters
    ----------
    config : FunnelConfig

    Attributes
    ----------
    models_ : dict of str to model
        The fitted shared models, by registry name.
    sources_ : list of CandidateSource
    features_ : list of FeatureGroup
    feature_names_ : list of str
        The columns :meth:`features` returns.
    ranking_columns_ : numpy.ndarray
        Boolean mask of the columns that differ between the candidates of one user (the
        others only shift a user's scores; explanations leave them out).
    fit_seconds_ : dict of str to float
        Seconds of each fitting step.
    """

    def __init__(self, config: FunnelConfig) -> None:
        self.config = config

    def needed_models(self) -> list[str]:
        """The shared models the configured parts read, in registry order."""
        wanted = {FALLBACK_MODEL}
        for name in self.config.candidates:
            wanted.update(SOURCES.get(name).requires)
        for name in self.config.features:
            wanted.update(FEATURES.get(name).requires)
        return [name for name in MODELS if name in wanted]

    def fit(self, dataset: Dataset, prefit: Mapping[str, Callable[[], Any]] | None = None) -> Stages:
        """Fit every needed model, source and feature group on ``dataset``; returns ``self``.

        Parameters
        ----------
        dataset : Dataset
        prefit : mapping of str to callable, optional
            For some models, by name, a callable returning that model already fitted on
            ``dataset`` (reused from a cache, or fitted in a worker process).
        """
        cfg, prefit = self.config, prefit or {}
        self.fit_seconds_: dict[str, float] = {}
        models: dict[str, Any] = {}
        for name in tqdm(self.needed_models(), desc="fitting models", disable=not cfg.show_progress):
            started = time.perf_counter()
            models[name] = prefit[name]() if name in prefit else MODELS.get(name).from_config(cfg).fit(dataset)
            self.fit_seconds_[name] = time.perf_counter() - started
        self.models_ = models
        started = time.perf_counter()
        self.sources_: list[Any] = []  # CandidateSource classes need not inherit the protocol
        for name in cfg.candidates:
            source = SOURCES.get(name).from_config(cfg, models)
            if not getattr(source, "available", lambda: True)():
                logger.info("candidate source %s skipped: the data gives it nothing to work with", name)
                continue
            self.sources_.append(source.fit(dataset))
        self.fit_seconds_["sources"] = time.perf_counter() - started
        self.features_: list[Any] = [FEATURES.get(name).from_config(cfg, models).fit(dataset)
                                     for name in cfg.features]
        self._finish()
        logger.info("stage one sources: %s", ", ".join(f"{s.name} ({s.n_candidates})" for s in self.sources_))
        return self

    def _finish(self) -> None:
        names = [s.name for s in self.sources_]
        widths = [len(group.columns(names)) for group in self.features_]
        self.feature_names_ = [column for group in self.features_ for column in group.columns(names)]
        ends = np.cumsum(widths, dtype=np.int64)
        self._columns = {id(group): slice(int(end - width), int(end))
                         for group, width, end in zip(self.features_, widths, ends)}
        constant = set().union(*(group.constant_per_user for group in self.features_))
        self.ranking_columns_ = np.array([name not in constant for name in self.feature_names_], bool)

    @property
    def source_names(self) -> list[str]:
        """Names of the fitted sources, in merge order."""
        return [s.name for s in self.sources_]

    def offering(self, capability: type) -> list[Any]:
        """The fitted parts that offer ``capability`` (a runtime-checkable protocol of ``funnel.protocols``).

        Shared models come first (in registry order), then the sources and the feature groups
        in configuration order.
        """
        parts = [*self.models_.values(), *self.sources_, *self.features_]
        return [part for part in parts if isinstance(part, capability)]

    def columns_of(self, group: Any) -> slice:
        """The columns of :meth:`features` that feature group ``group`` (one of ``features_``) computes."""
        return self._columns[id(group)]

    # stage one --------------------------------------------------------------------------
    def candidates(self, batch: Batch, fallback: int = 0) -> CandidateSet:
        """Merged candidates of every source for a batch of users.

        ``fallback`` > 0 adds that many most popular unseen artists per user (without source
        features) when some user has fewer candidates, so that every top-n list can be filled.
        No candidate is an artist the batch excludes (:meth:`Batch.excluded_pairs`).
        """
        n_artists = batch.history.shape[1]
        retrieved = [(s.name, *s.retrieve(batch)) for s in self.sources_]
        cands = merge_candidates(retrieved, n_artists)
        if fallback and cands.counts(len(batch)).min(initial=fallback) < fallback:
            extra = [self.models_[FALLBACK_MODEL].top_unseen(batch, fallback)[0]]
            cands = merge_candidates(retrieved, n_artists, extra)
        excluded = batch.excluded_pairs(cands.rows, cands.items)
        # the built-in sources never return excluded artists; a source of one's own may
        return cands.subset(~excluded) if excluded.any() else cands

    # stage two --------------------------------------------------------------------------
    def features(self, batch: Batch, cands: CandidateSet) -> np.ndarray:
        """The ``(len(cands), len(feature_names_))`` float32 feature matrix."""
        return stack_columns([group.compute(batch, cands) for group in self.features_], len(cands))

    # persistence ------------------------------------------------------------------------
    def get_state(self, artist_side_only: bool = False) -> dict[str, PartState]:
        """Every part's fitted state, keyed ``models/NAME``, ``sources/NAME``, ``features/NAME``.

        ``artist_side_only`` leaves out what grows with the training users (each model's
        ``user_arrays``: user factors, per-user statistics), keeping zero rows of each, so
        the state scores new listeners exactly as the full one and its size depends on the
        catalogue only.
        """
        states = {f"models/{name}": PartState(arrays=without_users(model.to_arrays(), model) if artist_side_only
                                              else model.to_arrays())
                  for name, model in self.models_.items()}
        states.update({f"sources/{s.name}": s.get_state() for s in self.sources_})
        states.update({f"features/{g.name}": g.get_state() for g in self.features_})
        return states

    @classmethod
    def from_state(cls, config: FunnelConfig, states: Mapping[str, PartState], source_names: list[str]) -> Stages:
        """Stages rebuilt from :meth:`get_state` without refitting (``source_names``: the fitted sources)."""
        self = cls(config)
        models: dict[str, Any] = {}
        for key, state in states.items():
            if key.startswith("models/"):
                name = key[len("models/"):]
                models[name] = MODELS.get(name).from_config(config).set_arrays(state.arrays)
        self.models_ = models
        self.sources_ = [
            SOURCES.get(name).from_config(config, models).set_state(states.get(f"sources/{name}", PartState()))
            for name in source_names]
        self.features_ = [
            FEATURES.get(name).from_config(config, models).set_state(states.get(f"features/{name}", PartState()))
            for name in config.features]
        self._finish()
        return self
