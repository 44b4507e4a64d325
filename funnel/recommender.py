"""The two-stage recommender: a thin facade over fitting, stages, ranker and persistence."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel import artifacts, fitting, similar, updating
from funnel import explain as explain_
from funnel.batch import Batch
from funnel.config import FunnelConfig, resolve
from funnel.data import Dataset
from funnel.data.history import History, parse_histories, parse_history, tagged_only
from funnel.errors import ConfigError, DataError, NotFittedError, UnknownUserError
from funnel.persistence.model import write_model
from funnel.rules import Rules, check_n, user_rows
from funnel.sparse import top_n_per_row
from funnel.stages import Stages
from funnel.threadpool import in_batches

logger = logging.getLogger("funnel")

BATCH_USERS = 512


class Recommender:
    """Two-stage ("funnel") artist recommender.

    Stage one merges the candidates of the configured sources (by default a FAISS search of
    tag/popularity/freshness artist vectors, a FAISS search of ALS factors, EASE
    co-listening, friends' artists and the popularity chart). Stage two scores every
    (user, candidate) pair with a learned ranker over the configured feature groups
    (BiasedSVD, ALS, EASE, RP3beta, friends, tag similarity, the sources' ranks and scores,
    artist and user statistics) and keeps the best.

    Parameters
    ----------
    config : FunnelConfig or mapping, optional
        Settings; defaults to ``FunnelConfig()``.
    **overrides
        Individual settings applied on top of ``config`` (e.g. ``seed=1``). Stored as given;
        unknown or invalid settings raise :class:`funnel.ConfigError` here.

    Attributes
    ----------
    config_ : FunnelConfig
        The settings the model was fitted with.
    stages_ : Stages
        Models, candidate sources and feature groups fitted on all training data.
    ranker_ : Ranker
    feature_names_ : list of str
    fingerprint_ : str
        Fingerprint of the training data.
    user_ids_, artist_ids_, artist_names_ : numpy.ndarray
    history_ : scipy.sparse.csr_matrix
        Training play counts, users x artists.
    model_rows_ : numpy.ndarray or None
        With ``fit_users``: each user's row in the models' user arrays, -1 for listeners
        outside the sample (scored by fold-in); ``None`` when every listener was learned from.
    artist_side_only_ : bool
        Whether the model was loaded from an artist-side-only save (it knows no user).
    tagged_ : scipy.sparse.csr_matrix or None
        Artists each training user tagged but never played (known, so not recommended by
        default); ``None`` with ``tagged_known=False`` or no tags.
    ranker_candidate_recall_ : float
        Share of the ranker's label artists that stage one retrieved during training.
    fit_seconds_ : dict of str to float
        Seconds of the fitting steps.

    Examples
    --------
    >>> from funnel import Recommender, load_lastfm
    >>> model = Recommender(show_progress=True).fit(load_lastfm())  # doctest: +SKIP
    >>> model.recommend(2, n=10)  # doctest: +SKIP
    """

    def __init__(self, config: FunnelConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        self.config = config
        self.overrides = overrides
        Stages(resolve(config, overrides))  # unknown or invalid settings, of any part, fail here, not in fit

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments: ``config`` and the individual overrides, as given."""
        return {"config": self.config, **self.overrides}

    def set_params(self, **params: Any) -> Recommender:
        """Change ``config`` or individual settings (validated now); returns ``self``."""
        config = params.pop("config", self.config)
        overrides = {**self.overrides, **params}
        Stages(resolve(config, overrides))
        self.config, self.overrides = config, overrides
        return self

    # fitting ----------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> Recommender:
        """Train the ranker without leakage, then fit both stages on all of ``dataset``.

        The ranker is trained on a per-user split of ``dataset``: stage one and the factor
        models are fitted on the history part, and the labels are the held-out part they
        never saw (with listen times, each listener's artists started last; see
        ``ranker_labels``). The stages are then fitted on all of ``dataset`` for serving.

        Returns
        -------
        Recommender
            ``self``.
        """
        config = resolve(self.config, self.overrides)
        if not isinstance(dataset, Dataset):
            raise DataError(f"fit expects a funnel.Dataset (see funnel.load_lastfm / Dataset.from_frames), "
                            f"got {type(dataset).__name__}")
        started = time.perf_counter()
        if config.recency_half_life_days is not None and dataset.has_listen_times:
            dataset = dataset.recency_weighted(config.recency_half_life_days)
        fitted = fitting.fit(dataset, config)
        self.config_ = config
        self.stages_ = fitted.stages
        self.ranker_ = fitted.ranker
        self.feature_names_ = fitted.stages.feature_names_
        self.ranker_candidate_recall_ = fitted.candidate_recall
        self.fit_seconds_ = fitted.seconds
        self.fingerprint_ = dataset.fingerprint()
        self.user_ids_ = dataset.user_ids
        self.artist_ids_ = dataset.artist_ids
        self.artist_names_ = dataset.artist_names
        self.history_ = dataset.matrix
        self.model_rows_ = None if fitted.learners is dataset else fitted.learners.user_index(dataset.user_ids)
        self.tagged_ = tagged_only(dataset) if config.tagged_known else None
        self.artist_side_only_ = False
        logger.info("fitted in %.1fs", time.perf_counter() - started)
        return self

    def update(self, plays: pd.DataFrame | Dataset, *, artists: pd.DataFrame | None = None,
               artist_tags: pd.DataFrame | None = None, tag_assignments: pd.DataFrame | None = None,
               tags: pd.DataFrame | None = None) -> Recommender:
        """Bring the fitted model up to date with new plays, listeners and artists, without a refit.

        New plays add to their listeners' histories (plays are events: the same log given
        twice counts twice) and refresh those listeners' user-side state (ALS vectors by
        implicit's ``recalculate_user``, BiasedSVD vectors solved, friends' counts, listen
        times); new listeners are added the same way, and artist statistics count the new
        plays. A new artist is placed from its tags with the fitted tag text and projection,
        enters the tag source's FAISS index and borrows the ALS and BiasedSVD vectors of the
        artists it resembles (it has no co-listening yet). The ranker and what the parts
        learned (artist factors, item-item weights) stay as fitted: refit when tastes move
        (``benchmarks/update_drift.py`` measures when). On a model saved artist-side only,
        only the artist side is updated (statistics, new artists).

        Parameters
        ----------
        plays : pandas.DataFrame or Dataset
            One row per play: ``user_id, artist_id`` and optionally ``weight`` (plays, 1 per
            row when absent) and ``timestamp`` (datetime64) or ``first_listen,
            last_listen``; or a :class:`Dataset` of them (:func:`funnel.read_events`), with
            its tags inside. May be empty: with nothing new, the model is unchanged.
        artists : pandas.DataFrame, optional
            ``artist_id, name``: new artists (played or not) and new names of known ones.
        artist_tags : pandas.DataFrame, optional
            ``artist_id, tag``: labels (genres) of new artists.
        tag_assignments : pandas.DataFrame, optional
            ``user_id, artist_id, tag_id, timestamp``: listeners tagging artists; the tag
            texts come from ``tags``.
        tags : pandas.DataFrame, optional
            ``tag_id, tag``: the texts of ``tag_assignments``' tags.

        Returns
        -------
        Recommender
            ``self``, updated in place: not while other threads recommend with it (a service
            takes an updated model from disk with its reload).

        Raises
        ------
        DataError
            A frame is malformed (the rules of :meth:`Dataset.from_frames`), or its ids are
            of another type than the model's.
        ConfigError
            A part of the model holds fitted state and cannot be updated, or the model was
            fitted with ``recency_half_life_days``.
        """
        self.check_fitted()
        delta, names = updating.new_data(plays, artists=artists, artist_tags=artist_tags,
                                         tag_assignments=tag_assignments, tags=tags)
        updating.update(self, delta, names)
        return self

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless the model is fitted or loaded."""
        if not hasattr(self, "ranker_"):
            raise NotFittedError("this Recommender is not fitted; call fit(dataset) or Recommender.load(path)")

    # recommending -----------------------------------------------------------------------
    def _rank(self, batch: Batch, n: int, explain: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
        """Batch rows of the top-``n`` pairs and their frame (``rank, artist_id, artist_name, score``, ...)."""
        cands = self.stages_.candidates(batch, fallback=n)
        X = self.stages_.features(batch, cands)
        scores = self.ranker_.score(X)
        best, rank = top_n_per_row(cands.rows, scores, cands.items, n)
        items = cands.items[best]
        frame = pd.DataFrame({"rank": rank, "artist_id": self.artist_ids_[items],
                              "artist_name": self.artist_names_[items].astype(object),
                              "score": scores[best].astype(np.float64)})
        if explain:
            frame = pd.concat([frame, explain_.explanations(self, batch, cands, X, best)], axis=1)
        return cands.rows[best], frame

    def _batch(self, rows: np.ndarray, history: sp.csr_matrix, rules: Rules,
               rule_rows: np.ndarray | None = None) -> Batch:
        """The batch of users at internal ``rows`` (-1: new listener) with ``history``, under ``rules``."""
        users = rows if self.model_rows_ is None else np.where(rows >= 0, self.model_rows_[np.maximum(rows, 0)], -1)
        return Batch(users, history, known=rules.known(rows, history, self.tagged_, rule_rows),
                     blocked_items=rules.blocked_items)

    def _rules(self, exclude: Any, allow: Any, filter_known: bool, user_ids: Any = True) -> Rules:
        """``user_ids``: True for the model's users, None for no user ids, or the ids of a call's listeners."""
        return Rules(self.artist_ids_, exclude=exclude, allow=allow, filter_known=filter_known,
                     user_ids=self.user_ids_ if user_ids is True else user_ids)

    def recommend(self, user_id: Any = None, n: int = 20, explain: bool = False, *, users: Iterable[Any] | None = None,
                  exclude: Any = None, allow: Any = None, filter_known: bool = True) -> pd.DataFrame:
        """Top-``n`` artists for a known user (or, with ``users``, for each of several).

        Parameters
        ----------
        user_id : int or str
            An id of the training data, of the model's id type.
        n : int
            Number of artists, 1..catalogue size; fewer come back only when the rules leave
            fewer (the user knows almost the whole catalogue, or a short allow-list).
        explain : bool
            Add the explanation columns (see :meth:`recommend_all`).
        users : list of ids, optional
            Instead of ``user_id``: several users at once, as :meth:`recommend_all`.
        exclude : list of artist ids, optional
            Artists never to recommend; with ``users`` (and in :meth:`recommend_all`), also
            ``user_id, artist_id`` rows: artists never to recommend to that user.
        allow : list of artist ids, optional
            Only these artists may be recommended (e.g. a licensed subset of the catalogue).
        filter_known : bool
            Leave out the artists the user knows: played, and tagged unless the model was
            configured with ``tagged_known=False``. ``False`` lets them come back.

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, score`` best first (with ``users``, a leading
            ``user_id`` column).

        Raises
        ------
        UnknownUserError
            ``user_id`` is not in the training data.
        ConfigError
            An id is of another type than the model's ids, ``n`` is not an integer in
            1..catalogue size, or a rule is malformed.
        """
        self.check_fitted()
        if users is not None:
            if user_id is not None:
                raise ConfigError("pass either user_id or users, not both")
            return self.recommend_all(n, users=users, explain=explain, exclude=exclude, allow=allow,
                                      filter_known=filter_known)
        n = check_n(n, len(self.artist_ids_))
        if user_id is None or isinstance(user_id, (list, tuple, np.ndarray, set, dict)):
            raise ConfigError(f"user_id must be one user id, got {user_id!r}; pass several as users=[...]")
        rows = user_rows(self.user_ids_, [user_id], self.artist_side_only_)
        rules = self._rules(exclude, allow, filter_known)
        return self._rank(self._batch(rows, self.history_[rows], rules), n, explain)[1]

    def recommend_all(self, n: int = 20, users: Iterable[Any] | None = None, explain: bool = False, *,
                      exclude: Any = None, allow: Any = None, filter_known: bool = True) -> pd.DataFrame:
        """Top-``n`` artists for every user (or ``users``), batched and vectorised.

        Batches of users are ranked on ``n_threads`` threads (all cores by default).

        Parameters
        ----------
        n : int
        users : iterable of ids, optional
            User ids; all training users by default.
        explain : bool
            Add why each artist was recommended: ``sources`` (stage-one source -> rank it
            gave), ``because_ids`` / ``because`` (up to three history artists closest to it
            by cosine of the ALS artist factors), ``contributions`` (the three feature groups
            with the largest share of the ranker's score, for rankers that report it) and
            ``reason`` (all of it as one line).
        exclude, allow, filter_known
            See :meth:`recommend`.

        Returns
        -------
        pandas.DataFrame
            ``user_id, rank, artist_id, artist_name, score``; rank 1..n, best first per user.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_))
        if users is None and not self.artist_side_only_:
            rows = np.arange(len(self.user_ids_))
        else:  # an artist-side-only model knows no user: this raises
            rows = user_rows(self.user_ids_, [] if users is None else users, self.artist_side_only_)
        rules = self._rules(exclude, allow, filter_known)

        def rank_batch(batch_rows: np.ndarray) -> pd.DataFrame:
            r, frame = self._rank(self._batch(batch_rows, self.history_[batch_rows], rules), n, explain)
            frame.insert(0, "user_id", self.user_ids_[batch_rows[r]])
            return frame

        return in_batches(rank_batch, rows, BATCH_USERS, self.config_.n_threads, self.config_.show_progress)

    def history_matrix(self, history: History) -> sp.csr_matrix:
        """One CSR row over the catalogue from a history of artist ids (or id -> plays).

        Unknown artist ids are dropped with a warning; duplicates in a list count as plays.
        """
        self.check_fitted()
        row, unknown = parse_history(history, self.artist_ids_)
        if len(unknown):
            logger.warning("ignoring %d unknown artist id(s) in the history: %s", len(unknown),
                           unknown[:5].tolist())
        return row

    def recommend_for_history(self, history: History, n: int = 20, explain: bool = False, *,
                              exclude: Any = None, allow: Any = None, filter_known: bool = True) -> pd.DataFrame:
        """Top-``n`` artists for a listener not in the training data.

        Every stage runs as for a known user: the stage-one queries are built from the
        history, the ALS user vector is folded in (implicit's ``recalculate_user``), the
        BiasedSVD user vector and bias are solved by ridge regression against the fixed
        artist factors, and the ranker scores the merged candidates.

        Parameters
        ----------
        history : list of ids or mapping of id to float
            Artist ids the listener played, or artist id -> play count. Unknown ids are
            ignored with a warning.
        n : int
        explain : bool
        exclude, allow : list of artist ids, optional
        filter_known : bool
            See :meth:`recommend`; the history is what the listener knows.

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, score`` best first, none from the history.

        Raises
        ------
        DataError
            The history is empty, malformed or has no catalogue artist.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_))
        rules = self._rules(exclude, allow, filter_known, user_ids=None)
        return self._rank(self._batch(np.array([-1]), self.history_matrix(history), rules), n, explain)[1]

    def recommend_for_histories(self, histories: pd.DataFrame, n: int = 20, explain: bool = False, *,
                                exclude: Any = None, allow: Any = None, filter_known: bool = True) -> pd.DataFrame:
        """Top-``n`` artists for many listeners given by their histories, batched like :meth:`recommend_all`.

        Each listener is scored as :meth:`recommend_for_history` scores one (every user
        vector folded in from the history), whether or not the id was in the training data:
        the histories are all the model reads of a user.

        Parameters
        ----------
        histories : pandas.DataFrame
            ``user_id, artist_id`` rows and optionally ``weight`` (plays; 1 per row when
            absent), one row per play or per (user, artist) pair: repeated pairs add up.
            Artist ids outside the catalogue are ignored with a warning; listeners left
            with no catalogue artist are skipped with a warning.
        n : int
        explain : bool
        exclude : list of artist ids or pandas.DataFrame, optional
            Artists never to recommend to anyone, or ``user_id, artist_id`` rows (ids of
            the histories' listeners): artists never to recommend to that listener.
        allow : list of artist ids, optional
        filter_known : bool
            See :meth:`recommend`; a history is what its listener knows.

        Returns
        -------
        pandas.DataFrame
            ``user_id, rank, artist_id, artist_name, score``, users in sorted id order.

        Raises
        ------
        DataError
            A column is missing, an id is null or of mixed types, a weight is not a finite
            positive number, or no listener has a catalogue artist.
        ConfigError
            The artist ids are of another type than the model's.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_))
        user_ids, matrix = parse_histories(histories, self.artist_ids_)
        rows = np.flatnonzero(np.diff(matrix.indptr) > 0)
        rules = self._rules(exclude, allow, filter_known, user_ids=user_ids)

        def rank_batch(batch_rows: np.ndarray) -> pd.DataFrame:
            new = np.full(len(batch_rows), -1)
            r, ranked = self._rank(self._batch(new, matrix[batch_rows], rules, rule_rows=batch_rows), n, explain)
            ranked.insert(0, "user_id", user_ids[batch_rows[r]])
            return ranked

        return in_batches(rank_batch, rows, BATCH_USERS, self.config_.n_threads, self.config_.show_progress)

    def training_histories(self) -> pd.DataFrame:
        """The training histories the model holds, as the rows :meth:`recommend_for_histories` takes.

        Returns
        -------
        pandas.DataFrame
            ``user_id, artist_id, weight`` (float64 plays), one row per (user, artist) pair
            of the training data, in the model's ids.

        Raises
        ------
        UnknownUserError
            The model was saved artist-side only and holds no histories.
        """
        self.check_fitted()
        if self.artist_side_only_:
            raise UnknownUserError("this model was saved artist-side only (save(..., artist_side_only=True)) and "
                                   "holds no training histories; score listeners from histories of your own with "
                                   "recommend_for_histories")
        plays = self.history_.tocoo()
        return pd.DataFrame({"user_id": self.user_ids_[plays.row], "artist_id": self.artist_ids_[plays.col],
                             "weight": plays.data.astype(np.float64)})

    def similar_artists(self, artist_id: Any, n: int = 10) -> pd.DataFrame:
        """The ``n`` artists nearest to ``artist_id`` (or to each of a list of ids).

        With tags, the space is the stage-one artist embedding: the tag-text block plus the
        popularity and freshness blocks (``popularity_weight``, ``freshness_weight`` of its
        norm), searched by inner product in the tag source's FAISS index when the model has
        one. Without any tag data, co-listening decides: cosine of the ALS artist factors,
        else of the EASE item weights. The ``space`` column says which was used: of the
        fitted parts that offer a :class:`funnel.protocols.SimilaritySpace`, the most
        preferred answers, so a part of one's own joins by offering one.

        Parameters
        ----------
        artist_id : int or str, or a list of them
        n : int

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, similarity, space`` best first, the artist itself
            excluded; for a list, a leading ``query_artist_id`` column.

        Raises
        ------
        DataError
            An artist id is not in the catalogue.
        ConfigError
            An id is of another type than the model's, or the model has no artist space.
        """
        self.check_fitted()
        return similar.similar_artists(self, artist_id, n)

    # persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, artist_side_only: bool = False) -> Path:
        """Save to directory ``path`` in the format of :mod:`funnel.persistence.model` (no pickle).

        Parameters
        ----------
        path : path
            A new or empty directory, or one that holds a saved model: that model is replaced
            (its files removed once the new manifest is written); files a save did not write
            are kept. Saves into one directory run one at a time (a lock inside it).
        artist_side_only : bool
            Leave out everything that grows with the training users (their ids, histories,
            user factors and statistics): the saved model scores listeners from their
            histories only (:meth:`recommend_for_histories`, :meth:`recommend_for_history`)
            exactly as the full model does, and its size depends on the catalogue alone.

        Raises
        ------
        ArtifactError
            ``path`` holds other files and no saved model, or cannot be written.
        """
        self.check_fitted()
        return write_model(Path(path), *artifacts.model_states(self, artist_side_only))

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, **runtime: Any) -> Recommender:
        """Load a model written by :meth:`save`, verifying every file's checksum first.

        Parameters
        ----------
        path : path
        mmap : bool
            Memory-map the saved arrays and FAISS indexes read-only instead of copying them
            into this process: processes that load the same directory (service workers, Spark
            Python workers on one machine) share one copy in the page cache. The files must
            stay where they are while the model is used; :meth:`save` never changes a file in
            place, so saving a new model into the directory is safe.
        **runtime
            Settings of how the model runs, not of what it learned: ``n_threads``,
            ``show_progress`` (e.g. ``n_threads=1`` for a worker that shares its cores).

        Raises
        ------
        ConfigError
            A setting that is not a runtime setting, or an invalid value.
        ArtifactError
            The directory is missing, or does not hold a whole, consistent model of this
            format (see docs/errors.md).
        """
        self = cls.__new__(cls)  # not __init__: the parts are the saved classes, not what names resolve to here
        artifacts.restore(self, Path(path), mmap, runtime)
        return self
