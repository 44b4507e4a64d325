"""Both stages of the funnel, built from the configuration and fitted on one dataset.

:class:`Stages` resolves every part the configuration lists (a registry name, a dotted path
or an entry point; a saved model's class paths on load) and checks its settings, fits the
shared models the parts need, then the candidate sources (``candidates``) and the feature
groups (``features``). It retrieves the merged candidates of a batch of users and builds the
stage-two feature matrix for them; it knows no part by name. Code beyond the stages finds the
parts that offer a capability (``funnel.protocols``) with :meth:`Stages.offering`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from funnel.batch import Batch
from funnel.candidates import SOURCES, CandidateSet, merge_candidates
from funnel.config import FunnelConfig, PartEntry, settings_of
from funnel.data import Dataset
from funnel.errors import ConfigError
from funnel.factors import MODELS
from funnel.protocols import FeatureGroup, FillsShortLists, PartContext, PartSettings, PartState, Ranker
from funnel.ranking import FEATURES, RANKERS
from funnel.ranking.features import stack_columns
from funnel.registry import Registry, class_path, import_class

logger = logging.getLogger("funnel")

# Bump when a built-in model, source or feature group changes what it computes: cached
# rankers trained on other feature code are then retrained instead of reused.
FEATURE_CODE_VERSION = 3
REGISTRIES: dict[str, Registry[Any]] = {"models": MODELS, "candidates": SOURCES, "features": FEATURES,
                                        "ranker": RANKERS}


class Part(NamedTuple):
    """A configuration entry resolved: its class, checked settings and the shared models it reads."""

    section: str  # "models", "candidates", "features" or "ranker"
    name: str
    cls: type
    settings: PartSettings
    models: dict[str, str]  # requirement -> name of the shared model that fills it

    @property
    def key(self) -> str:
        """``section/name``: the key of its state and of its class path in a saved model."""
        return f"{self.section}/{self.name}"

    def build(self, context: PartContext) -> Any:
        """The part, unfitted, named as in the configuration."""
        part = self.cls.from_config(self.settings, context)  # type: ignore[attr-defined]
        part.name = self.name
        return part


def resolve(section: str, entry: PartEntry, classes: Mapping[str, str] | None = None) -> Part:
    """The class an entry names (its saved class path in ``classes`` first) with its settings checked."""
    key, registry = f"{section}/{entry.name}", REGISTRIES[section]
    if classes and key in classes:
        try:
            cls = import_class(classes[key], registry.kind)
        except ConfigError as missing:
            # a class of a script or notebook (module __main__) is found again only if registered in this process
            registered = entry.part in registry and class_path(registry.get(entry.part)) == classes[key]
            if not registered:
                raise missing from None
            cls = registry.get(entry.part)
    else:
        cls = registry.resolve(entry.part)
    where = f"{section} entry {entry.name!r} ({entry.part})" if section != "ranker" else f"ranker {entry.part!r}"
    settings = settings_of(getattr(cls, "Settings", PartSettings), entry.settings, where)
    requires = tuple(getattr(cls, "requires", ()))
    unknown = sorted(set(entry.models) - set(requires))
    if unknown:
        raise ConfigError(f"{where}: 'models' maps {unknown}, which it does not require; it requires {list(requires)}")
    return Part(section, entry.name, cls, settings, {need: entry.models.get(need, need) for need in requires})


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

    Building it resolves every part the configuration lists (registry name, dotted path or
    entry point) and checks each part's settings: a :class:`funnel.ConfigError` here names
    the entry.

    Parameters
    ----------
    config : FunnelConfig
    classes : mapping of str to str, optional
        Class paths by part key (``candidates/als``), as a saved model records them; they
        are imported instead of resolving the configured names.

    Attributes
    ----------
    parts : dict of str to Part
        The resolved parts by key: the shared models the others need, the sources, the
        feature groups and the ranker.
    models_ : dict of str to model
        The fitted shared models, by name.
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

    def __init__(self, config: FunnelConfig, classes: Mapping[str, str] | None = None) -> None:
        self.config = config
        users = [resolve(section, entry, classes) for section in ("candidates", "features")
                 for entry in config.entries(section)]
        listed = {entry.name: entry for entry in config.entries("models")}
        wanted = [config.fallback, *(name for part in users for name in part.models.values())]
        models: dict[str, Part] = {}
        for name in dict.fromkeys(wanted):
            models[name] = resolve("models", listed.get(name, PartEntry(name, name, {}, {})), classes)
        for name in set(listed) - set(models):  # listed and unused: still checked
            resolve("models", listed[name], classes)
        if not callable(getattr(models[config.fallback].cls, "top_unseen", None)):
            raise ConfigError(f"fallback model {config.fallback!r} ({models[config.fallback].cls.__name__}) does not "
                              "offer top_unseen(batch, k); name a model that does, such as 'popularity'")
        ranker = resolve("ranker", config.ranker_entry(), classes)
        self.parts = {part.key: part for part in (*models.values(), *users, ranker)}

    def section(self, name: str) -> list[Part]:
        """The resolved parts of one section, in configuration order."""
        return [part for part in self.parts.values() if part.section == name]

    def context(self, part: Part, models: Mapping[str, Any] | None = None) -> PartContext:
        """What ``part`` is built with: the fitted models it requires, the seed and threads."""
        models = models or {}
        return PartContext({need: models[name] for need, name in part.models.items()}, self.config.seed,
                           self.config.n_threads)

    def needed_models(self) -> list[Part]:
        """The shared models the configured parts read."""
        return self.section("models")

    def classes(self) -> dict[str, str]:
        """Every part's class path, by key, for a saved model to import on load."""
        return {key: class_path(part.cls) for key, part in self.parts.items()}

    def new_ranker(self) -> Ranker:
        """The configured ranker, unfitted."""
        part = self.parts[f"ranker/{self.config.ranker_entry().name}"]
        return part.build(self.context(part))

    def fit(self, dataset: Dataset, prefit: Mapping[str, Callable[[], Any]] | None = None,
            everyone: Dataset | None = None) -> Stages:
        """Fit every needed model, source and feature group on ``dataset``; returns ``self``.

        Parameters
        ----------
        dataset : Dataset
        prefit : mapping of str to callable, optional
            For some models, by name, a callable returning that model already fitted on
            ``dataset`` (reused from a cache).
        everyone : Dataset, optional
            When ``dataset`` is a sample of listeners (``fit_users``), the plays of every
            listener: the shared models with no ``user_arrays`` (artist-side ones such as
            popularity, co-listening and the artist vectors) learn from them instead.
        """
        prefit = prefit or {}
        self.fit_seconds_: dict[str, float] = {}
        models: dict[str, Any] = {}
        for part in tqdm(self.needed_models(), desc="fitting models", disable=not self.config.show_progress):
            started = time.perf_counter()
            artist_side = everyone is not None and not getattr(part.cls, "user_arrays", ())
            models[part.name] = prefit[part.name]() if part.name in prefit and not artist_side \
                else part.build(self.context(part)).fit(everyone if artist_side else dataset)
            self.fit_seconds_[part.name] = time.perf_counter() - started
        self.models_ = models
        started = time.perf_counter()
        self.sources_: list[Any] = []  # CandidateSource classes need not inherit the protocol
        for part in self.section("candidates"):
            source = part.build(self.context(part, models))
            if not getattr(source, "available", lambda: True)():
                logger.info("candidate source %s skipped: the data gives it nothing to work with", part.name)
                continue
            self.sources_.append(source.fit(dataset))
        self.fit_seconds_["sources"] = time.perf_counter() - started
        self.features_: list[FeatureGroup] = [part.build(self.context(part, models)).fit(dataset)
                                              for part in self.section("features")]
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

        Shared models come first, then the sources and the feature groups, each in
        configuration order.
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
            chart: FillsShortLists = self.models_[self.config.fallback]
            extra = [chart.top_unseen(batch, fallback)[0]]
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
        """Every part's fitted state, keyed ``models/NAME``, ``candidates/NAME``, ``features/NAME``.

        ``artist_side_only`` leaves out what grows with the training users (each model's
        ``user_arrays``: user factors, per-user statistics), keeping zero rows of each, so
        the state scores new listeners exactly as the full one and its size depends on the
        catalogue only.
        """
        states = {}
        for name, model in self.models_.items():
            state = model.get_state()
            if artist_side_only:
                state = PartState(arrays=without_users(state.arrays, model), files=state.files)
            states[f"models/{name}"] = state
        states.update({f"candidates/{s.name}": s.get_state() for s in self.sources_})
        states.update({f"features/{g.name}": g.get_state() for g in self.features_})
        return states

    @classmethod
    def from_state(cls, config: FunnelConfig, states: Mapping[str, PartState], source_names: list[str],
                   classes: Mapping[str, str] | None = None) -> Stages:
        """Stages rebuilt from :meth:`get_state` without refitting.

        ``source_names`` are the fitted sources (a source the data gave nothing is left
        out); ``classes`` the saved class paths (:meth:`classes`).
        """
        self = cls(config, classes)
        self.models_ = {part.name: part.build(self.context(part)).set_state(states[part.key])
                        for part in self.needed_models()}
        self.sources_ = [part.build(self.context(part, self.models_)).set_state(states.get(part.key, PartState()))
                         for part in self.section("candidates") if part.name in source_names]
        self.features_ = [part.build(self.context(part, self.models_)).set_state(states.get(part.key, PartState()))
                          for part in self.section("features")]
        self._finish()
        return self
