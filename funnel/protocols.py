"""The three small protocols of the funnel's parts: candidate sources, feature groups, rankers.

Each part is one class, registered by name (``funnel.candidates.SOURCES``,
``funnel.ranking.FEATURES``, ``funnel.ranking.RANKERS``) and built from the configuration
that names it; ``docs/extending.md`` shows one of each. Fitted state leaves a part as
:class:`PartState`: named numpy arrays plus named files in a native format (a FAISS index,
a LightGBM model text), never a pickle.

Beside these, a part may offer a capability that code outside the stages uses, found by
protocol (:meth:`funnel.stages.Stages.offering`), never by the part's name or class:
:class:`SimilaritySpace` (``Recommender.similar_artists``), :class:`ExplanationDriver` (the
history artists an explanation names) and :class:`FriendsEvidence` (the friends it counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from funnel.batch import Batch
    from funnel.candidates.merge import CandidateSet
    from funnel.config import FunnelConfig
    from funnel.data import Dataset


@dataclass
class PartState:
    """A fitted part's state: arrays (saved as ``.npy`` files) and files (saved as they are).

    ``paths`` is filled by a memory-mapped load only: where each of ``files`` lies on disk
    (checked), for a part whose library can map the file itself.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


@runtime_checkable
class CandidateSource(Protocol):
    """A stage-one source: scored artists per user, none from the user's history.

    ``retrieve`` returns ``(ids, scores)``: two ``(len(batch), n_candidates)`` arrays, best
    first, of internal artist indices (-1 pads a short row) and float32 scores (-inf pads).
    A source may also define ``available() -> bool``: False when the fitted models give it
    nothing to work with (the tag source on data without tags), and the stages skip it.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]  # the shared models it reads (``funnel.factors.MODELS``)
    n_candidates: int

    @classmethod
    def from_config(cls, config: FunnelConfig, models: Mapping[str, Any]) -> CandidateSource: ...

    def fit(self, dataset: Dataset) -> CandidateSource: ...

    def retrieve(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]: ...

    def get_state(self) -> PartState: ...

    def set_state(self, state: PartState) -> CandidateSource: ...


@runtime_checkable
class FeatureGroup(Protocol):
    """Stage-two feature columns for every (user, candidate) pair of a batch.

    ``compute`` returns a ``(len(cands), len(columns(sources)))`` array (a 1-D array of
    ``len(cands)`` for a single column).
    ``constant_per_user`` names the columns equal for every candidate of a user (they shift
    a user's scores without ranking them, so explanations leave them out).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    constant_per_user: ClassVar[frozenset[str]]

    @classmethod
    def from_config(cls, config: FunnelConfig, models: Mapping[str, Any]) -> FeatureGroup: ...

    def fit(self, dataset: Dataset) -> FeatureGroup: ...

    def columns(self, sources: Sequence[str]) -> list[str]: ...

    def compute(self, batch: Batch, cands: CandidateSet) -> np.ndarray: ...

    def get_state(self) -> PartState: ...

    def set_state(self, state: PartState) -> FeatureGroup: ...


@runtime_checkable
class Ranker(Protocol):
    """The stage-two model: a score per pair, higher is better, learned from labelled pairs.

    ``groups`` gives each row's query (its user), for learning-to-rank models; a pointwise
    model may ignore it.
    """

    name: ClassVar[str]

    @classmethod
    def from_config(cls, config: FunnelConfig) -> Ranker: ...

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Ranker: ...

    def score(self, X: np.ndarray) -> np.ndarray: ...

    def get_state(self) -> PartState: ...

    def set_state(self, state: PartState) -> Ranker: ...


class Space(NamedTuple):
    """An artist space a part offers: its name (the ``space`` of similar artists) and preference."""

    name: str
    preference: float  # of the spaces on offer, the lowest answers


@runtime_checkable
class SimilaritySpace(Protocol):
    """A part that finds the artists nearest to given artists (``Recommender.similar_artists``).

    ``similarity_space`` returns the space it offers once fitted, or ``None`` when the data
    gave it nothing to compare artists with. The built-in parts prefer the tag source's index
    (0), then the tag embedding (10), ALS factors (20), EASE weights (30, log-play EASE 35)
    and the popularity-and-freshness embedding of data without tags (90).
    """

    def similarity_space(self) -> Space | None: ...

    def nearest_artists(self, columns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(len(columns), n)`` nearest artists and similarities, best first, each artist itself
        excluded, -1 / -inf padded."""
        ...


@runtime_checkable
class ExplanationDriver(Protocol):
    """A part whose artist vectors tell which of a listener's artists lie closest to a recommended one.

    An explanation's ``because`` names the listener's artists with the highest cosine to the
    recommended artist in the vectors of the driver with the lowest ``because_preference``
    (the built-in ALS factors 0, the artist embedding 10).
    """

    because_preference: ClassVar[float]

    def because_vectors(self) -> np.ndarray:
        """``(n_artists, dim)`` artist vectors, row ``i`` artist ``i``."""
        ...


@runtime_checkable
class FriendsEvidence(Protocol):
    """A feature group whose columns tell how many of the listener's friends play the artist."""

    def friends_playing(self, values: np.ndarray) -> np.ndarray:
        """Per pair, the friends who play the artist, from the pairs' values of this group's columns."""
        ...


class Stateless:
    """Defaults for a part whose state lives in the shared models: fitting and saving do nothing."""

    def fit(self, dataset: Dataset) -> Any:
        return self

    def get_state(self) -> PartState:
        return PartState()

    def set_state(self, state: PartState) -> Any:
        return self
