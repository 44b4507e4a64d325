"""The protocols of the funnel's parts: shared models, candidate sources, feature groups, rankers.

Each part is one class with its own settings (a :class:`PartSettings` subclass named
``Settings``), found by registry name, dotted path or entry point (``funnel.registry``) and
built by ``from_config(settings, context)`` from the configuration entry that names it;
``docs/extending.md`` shows one of each. Fitted state leaves a part as :class:`PartState`:
named numpy arrays plus named files in a native format (a FAISS index, a LightGBM model
text), never a pickle.

Beside these, a part may offer a capability that code outside the stages uses, found by
protocol (:meth:`funnel.stages.Stages.offering`), never by the part's name or class:
:class:`SimilaritySpace` (``Recommender.similar_artists``), :class:`ExplanationDriver` (the
history artists an explanation names), :class:`FriendsEvidence` (the friends it counts) and
:class:`ReasonGiver` (the words its reason is made of).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pandas as pd

    from funnel.batch import Batch
    from funnel.candidates.merge import CandidateSet
    from funnel.data import Dataset


class PartSettings(BaseModel):
    """A part's own settings: keyword values with defaults, checked once, unknown keys refused.

    A part class declares ``Settings``, a subclass with its fields (pydantic ``Field`` bounds
    for the checks); a part without settings inherits this empty one. A configuration entry
    gives values for them beside ``part`` (which class) and ``models`` (which shared models).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def tunable(low: float | None = None, high: float | None = None, *, log: bool = False,
            choices: Sequence[Any] | None = None) -> dict[str, Any]:
    """Mark a setting as one :func:`funnel.tune` may search: a range (``log`` scale), or choices.

    Use as a field's ``json_schema_extra``:
    ``factors: int = Field(32, gt=0, json_schema_extra=tunable(16, 128, log=True))``. An
    integer field gets integer values; a range holds the field's default.
    """
    if choices is not None:
        return {"tune": {"choices": list(choices)}}
    return {"tune": {"low": low, "high": high, "log": log}}


class SourceSettings(PartSettings):
    """Settings every candidate source has: how many candidates it returns per user."""

    n: int = Field(100, ge=1, json_schema_extra=tunable(20, 300, log=True))


@dataclass(frozen=True)
class PartContext:
    """What a part is built with beside its settings.

    Attributes
    ----------
    models : mapping of str to model
        The shared models the part ``requires``, by the names in ``requires`` (the
        configuration may map a requirement to another instance of the same kind).
    seed : int
        The funnel's seed, for every random step.
    n_threads : int
        Threads a part may use (0: all cores).
    """

    models: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_threads: int = 0


@dataclass
class PartState:
    """A fitted part's state: arrays (saved as ``.npy`` files) and files (saved as they are).

    ``paths`` is filled by a memory-mapped load only: where each of ``files`` lies on disk
    (checked), for a part whose library can map the file itself.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class PartUpdate:
    """New plays (and artists) for a fitted part, in its internal indices: what :class:`Updatable` reads.

    What the parts derive from it (``after``, ``started``, ``new_listeners``, ...) is computed
    once per update and shared.

    The catalogue stays sorted by id, so the artists a part was fitted on move to new
    indices (``artist_rows``) with the new artists among them; the user arrays keep their
    rows and new listeners are appended after them.

    Attributes
    ----------
    artist_rows : numpy.ndarray
        The new index of each artist the part was fitted on (one per old index).
    n_artists : int
        Catalogue size after the update.
    plays : scipy.sparse.csr_matrix
        The new plays: the log's listeners x the new catalogue (summed per pair, sorted
        indices), float32.
    before : scipy.sparse.csr_matrix
        The same listeners' plays before the update, same shape: zero rows for listeners
        the model did not hold (new listeners, or every listener of an artist-side-only
        model, whose returning listeners therefore count as new).
    model_rows : numpy.ndarray
        Each log listener's row in the user arrays after the update; -1 for a listener the
        models do not hold (outside a ``fit_users`` sample, or an artist-side-only model).
    n_model_rows : int
        Rows of the user arrays after the update.
    first_listen, last_listen : numpy.ndarray or None
        datetime64[ns] per stored entry of ``plays`` (its ``data`` order): the pair's first
        and last play in the log; ``None`` for a log without times.
    new_tags : pandas.DataFrame
        ``artist, tag, assigned``: tag texts of artists that arrive with tags (new indices),
        one row per listener's tag assignment (``assigned`` True) or artist-level label.
    taggers : numpy.ndarray
        Model rows of listeners who tagged artists in the update.
    neighbours : tuple of numpy.ndarray, optional
        For the new artists (:attr:`new_artists`, in order), ``(ids, weights)``: their
        nearest known artists by content and weights summing to 1 per row (all 0 for an
        artist with nothing to go by), from the part offering :class:`ArtistPlacement`,
        which is updated first. ``None`` when no part offers one.
    """

    artist_rows: np.ndarray
    n_artists: int
    plays: sp.csr_matrix
    before: sp.csr_matrix
    model_rows: np.ndarray
    n_model_rows: int
    first_listen: np.ndarray | None
    last_listen: np.ndarray | None
    new_tags: pd.DataFrame
    taggers: np.ndarray
    neighbours: tuple[np.ndarray, np.ndarray] | None = None

    @cached_property
    def after(self) -> sp.csr_matrix:
        """The log listeners' plays after the update (``before + plays``)."""
        return sp.csr_matrix(self.before + self.plays)

    @cached_property
    def started(self) -> np.ndarray:
        """Per stored entry of ``plays``: whether the listener had not played the artist before."""
        from funnel.sparse import lookup, row_of_entries

        return lookup(self.before, row_of_entries(self.plays), self.plays.indices) == 0

    @cached_property
    def new_listeners(self) -> np.ndarray:
        """Per artist of the new catalogue, how many of the log's listeners started playing it."""
        return np.bincount(self.plays.indices[self.started], minlength=self.n_artists)

    @cached_property
    def new_artists(self) -> np.ndarray:
        """Indices of the artists the part was not fitted on."""
        old = np.zeros(self.n_artists, bool)
        old[self.artist_rows] = True
        return np.flatnonzero(~old)

    @cached_property
    def learned(self) -> np.ndarray:
        """Positions of the log listeners the user arrays hold (``model_rows >= 0``)."""
        return np.flatnonzero(self.model_rows >= 0)

    @property
    def same_catalogue(self) -> bool:
        """Whether every artist keeps its index (no new artist)."""
        return self.n_artists == len(self.artist_rows)

    def artists(self, array: np.ndarray, fill: Any = 0) -> np.ndarray:
        """``array`` indexed by old artist index, re-indexed to the new catalogue (``fill`` for new artists).

        Without new artists, ``array`` itself: do not write into the result.
        """
        if self.same_catalogue:
            return array
        out = np.full((self.n_artists, *array.shape[1:]), fill, dtype=array.dtype)
        out[self.artist_rows] = array
        return out

    def borrowed(self, array: np.ndarray) -> np.ndarray:
        """``array`` (new indices) with each new artist's rows the weighted mean of its :attr:`neighbours`'.

        Learned artist vectors (factors, biases) of a new artist that has tags: placed
        among the artists it resembles, so that it can be ranked before anyone plays it.
        """
        if self.neighbours is None or not len(self.new_artists):
            return array
        ids, weights = self.neighbours
        weights = weights.reshape(*weights.shape, *[1] * (array.ndim - 1))
        out = array.copy()
        out[self.new_artists] = (weights * array[ids]).sum(axis=1).astype(array.dtype)
        return out

    def users(self, array: np.ndarray, fill: Any = 0) -> np.ndarray:
        """``array`` indexed by model row, grown to :attr:`n_model_rows` rows (``fill`` for new listeners).

        Writable: ``array`` itself when it already has the rows and is writable (the update
        is in place), else a copy.
        """
        if len(array) == self.n_model_rows:
            return array if array.flags.writeable else array.copy()
        out = np.full((self.n_model_rows, *array.shape[1:]), fill, dtype=array.dtype)
        out[:len(array)] = array
        return out

    def matrix(self, matrix: sp.csr_matrix, artist_rows: bool = False) -> sp.csr_matrix:
        """A users x artists (or, with ``artist_rows``, artists x artists) matrix in the new indices.

        Each row keeps its entries' stored order. When nothing moves, ``matrix`` itself: do
        not write into the result.
        """
        from funnel.sparse import moved

        if self.same_catalogue and (artist_rows or matrix.shape[0] >= self.n_model_rows):
            return matrix
        shape = (self.n_artists if artist_rows else max(self.n_model_rows, matrix.shape[0]), self.n_artists)
        return moved(matrix, self.artist_rows if artist_rows else None, self.artist_rows, shape)


@runtime_checkable
class ArtistPlacement(Protocol):
    """A model that places an artist by its content (tags), so others can borrow for new artists.

    During :meth:`funnel.Recommender.update` it is updated first; its ``neighbours`` become
    :attr:`PartUpdate.neighbours`, which other parts average their learned artist vectors
    over (:meth:`PartUpdate.borrowed`).
    """

    def neighbours(self, artists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(len(artists), k)`` nearest other artists by content, and weights summing to 1 (or all 0)."""
        ...


@runtime_checkable
class Updatable(Protocol):
    """A fitted part that takes new plays and artists without a refit (:meth:`funnel.Recommender.update`).

    ``update`` returns the part refreshed: user-side state of the log's listeners (user
    vectors folded in, statistics recounted), artist statistics, and its artist arrays
    re-indexed to the new catalogue with neutral values for new artists; what it learned
    (artist factors, item-item weights) stays as fitted. A part whose state is empty (a
    :class:`Stateless` one) needs no ``update``.
    """

    def update(self, change: PartUpdate) -> Any: ...


@runtime_checkable
class CandidateSource(Protocol):
    """A stage-one source: scored artists per user, none from the user's history.

    ``retrieve`` returns ``(ids, scores)``: two ``(len(batch), n_candidates)`` arrays, best
    first, of internal artist indices (-1 pads a short row) and float32 scores (-inf pads).
    A source may also define ``available() -> bool``: False when the fitted models give it
    nothing to work with (the tag source on data without tags), and the stages skip it.
    """

    name: str  # its name in the configuration (the stages set it)
    n_candidates: int

    @property
    def requires(self) -> tuple[str, ...]:
        """The shared models it reads, by the names of ``funnel.factors.MODELS`` (a class attribute)."""
        ...

    @classmethod
    def from_config(cls, settings: Any, context: PartContext) -> CandidateSource: ...

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

    name: str

    @property
    def requires(self) -> tuple[str, ...]: ...

    @property
    def constant_per_user(self) -> frozenset[str]: ...

    @classmethod
    def from_config(cls, settings: Any, context: PartContext) -> FeatureGroup: ...

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

    name: str

    @classmethod
    def from_config(cls, settings: Any, context: PartContext) -> Ranker: ...

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Ranker: ...

    def score(self, X: np.ndarray) -> np.ndarray: ...

    def get_state(self) -> PartState: ...

    def set_state(self, state: PartState) -> Ranker: ...


@runtime_checkable
class Model(Protocol):
    """A shared model: fitted once per dataset, read by the sources and feature groups that ``require`` it.

    ``user_arrays`` names the arrays of its state that grow with the training users (a name,
    or the prefix of a CSR matrix written by ``funnel.sparse.csr_to_arrays``): an
    artist-side-only save keeps zero rows of each, and a fit on a sample of listeners
    (``fit_users``) gives a model with none of them every listener's plays.
    """

    name: str

    @property
    def user_arrays(self) -> tuple[str, ...]: ...

    @classmethod
    def from_config(cls, settings: Any, context: PartContext) -> Model: ...

    def fit(self, dataset: Dataset) -> Model: ...

    def get_state(self) -> PartState: ...

    def set_state(self, state: PartState) -> Model: ...


@runtime_checkable
class FillsShortLists(Protocol):
    """A model that offers the most popular artists a user has not heard, to fill short top-n lists."""

    def top_unseen(self, batch: Batch, k: int) -> tuple[np.ndarray, np.ndarray]: ...


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
class ReasonGiver(Protocol):
    """A source or feature group whose evidence an explanation's ``reason`` names in a word.

    ``reason_word`` is what the part stands for: ``tags``, ``friends`` or ``popular`` (a part
    without one counts as the listener's own ``listening``). Its feature columns (for a
    source, its rank and score columns) weigh that word's phrase by the ranker's
    contributions. A source may also give ``reason_phrase``, what having retrieved a
    candidate says ("its tags match what you play").
    """

    reason_word: ClassVar[str]


@runtime_checkable
class FriendsEvidence(Protocol):
    """A feature group whose columns tell how many of the listener's friends play the artist."""

    def friends_playing(self, values: np.ndarray) -> np.ndarray:
        """Per pair, the friends who play the artist, from the pairs' values of this group's columns."""
        ...


class ArrayState:
    """:class:`PartState` of a model whose state is arrays only, from its ``to_arrays``/``set_arrays``."""

    user_arrays: ClassVar[tuple[str, ...]] = ()  # none of its arrays grows with the training users

    def to_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def get_state(self) -> PartState:
        return PartState(arrays=self.to_arrays())

    def set_state(self, state: PartState) -> Any:
        return self.set_arrays(state.arrays)


class Stateless:
    """Defaults for a part whose state lives in the shared models: fitting and saving do nothing."""

    def fit(self, dataset: Dataset) -> Any:
        return self

    def get_state(self) -> PartState:
        return PartState()

    def set_state(self, state: PartState) -> Any:
        return self
