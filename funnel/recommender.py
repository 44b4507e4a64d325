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

from funnel import explain as explain_
from funnel import fitting
from funnel.batch import Batch
from funnel.batching import in_batches
from funnel.candidates import TagSource
from funnel.config import FunnelConfig, resolve
from funnel.data import Dataset
from funnel.data.dataset import lookup_ids
from funnel.data.history import History, parse_history
from funnel.errors import ArtifactError, ConfigError, DataError, NotFittedError, UnknownUserError
from funnel.persistence.model import read_model, string_array, write_model
from funnel.protocols import PartState
from funnel.ranking import RANKERS
from funnel.sparse import csr_from_arrays, csr_to_arrays, top_n_per_row
from funnel.stages import Stages

logger = logging.getLogger("funnel")

BATCH_USERS = 512


def check_n(n: Any, n_artists: int) -> int:
    """Validate a top-n length against the catalogue size."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"n={n!r} must be an integer between 1 and {n_artists} (the catalogue size)")
    if not 1 <= n <= n_artists:
        raise ConfigError(f"n={n} is out of range; it must be between 1 and {n_artists} (the catalogue size)")
    return int(n)


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
        resolve(config, overrides)  # unknown or invalid settings fail here, not in fit

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments: ``config`` and the individual overrides, as given."""
        return {"config": self.config, **self.overrides}

    def set_params(self, **params: Any) -> Recommender:
        """Change ``config`` or individual settings (validated now); returns ``self``."""
        config = params.pop("config", self.config)
        overrides = {**self.overrides, **params}
        resolve(config, overrides)
        self.config, self.overrides = config, overrides
        return self

    # fitting ----------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> Recommender:
        """Train the ranker without leakage, then fit both stages on all of ``dataset``.

        The ranker is trained on a per-user split of ``dataset``: stage one and the factor
        models are fitted on the history part, and the labels are the held-out part they
        never saw. The stages are then fitted on all of ``dataset`` for serving.

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
        logger.info("fitted in %.1fs", time.perf_counter() - started)
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

    def _user_rows(self, user_ids: np.ndarray | list[Any]) -> np.ndarray:
        rows = lookup_ids(self.user_ids_, user_ids)
        unknown = rows < 0
        if unknown.any():
            missing = np.asarray(user_ids, dtype=object)[unknown]
            raise UnknownUserError(
                f"unknown user id(s) {missing[:5].tolist()}{' ...' if len(missing) > 5 else ''}: not in the "
                f"training data ({len(self.user_ids_)} users, ids {self.user_ids_[0]}..{self.user_ids_[-1]}); "
                "use recommend_for_history for new users")
        return rows

    def recommend(self, user_id: int, n: int = 20, explain: bool = False) -> pd.DataFrame:
        """Top-``n`` unseen artists for a known user.

        Parameters
        ----------
        user_id : int
        n : int
            Number of artists, 1..catalogue size; fewer come back only when the user has
            heard almost the whole catalogue.
        explain : bool
            Add the explanation columns (see :meth:`recommend_all`).

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, score`` best first.

        Raises
        ------
        UnknownUserError
            ``user_id`` is not in the training data.
        ConfigError
            ``n`` is not an integer in 1..catalogue size.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_))
        if isinstance(user_id, bool) or not isinstance(user_id, (int, np.integer)):
            raise UnknownUserError(f"user id {user_id!r} must be an integer")
        rows = self._user_rows([user_id])
        return self._rank(Batch(rows, self.history_[rows]), n, explain)[1]

    def recommend_all(self, n: int = 20, users: Iterable[int] | None = None, explain: bool = False
                      ) -> pd.DataFrame:
        """Top-``n`` unseen artists for every user (or ``users``), batched and vectorised.

        Batches of users are ranked on ``n_threads`` threads (all cores by default).

        Parameters
        ----------
        n : int
        users : iterable of int, optional
            User ids; all training users by default.
        explain : bool
            Add why each artist was recommended: ``sources`` (stage-one source -> rank it
            gave), ``because_ids`` / ``because`` (up to three history artists closest to it
            by cosine of the ALS artist factors), ``contributions`` (the three feature groups
            with the largest share of the ranker's score, for rankers that report it) and
            ``reason`` (all of it as one line).

        Returns
        -------
        pandas.DataFrame
            ``user_id, rank, artist_id, artist_name, score``; rank 1..n, best first per user.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_))
        if users is None:
            rows = np.arange(len(self.user_ids_))
        else:
            if isinstance(users, (str, bytes)) or not isinstance(users, Iterable):
                raise UnknownUserError(f"users must be a list of user ids, got {users!r}")
            values = list(users)
            ids = np.asarray(values)
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                # not one integer dtype: Python ints beyond 64 bits, or something else
                bad = [u for u in values if isinstance(u, (bool, np.bool_)) or not isinstance(u, (int, np.integer))]
                if bad:
                    raise UnknownUserError(f"user ids must be integers, got {bad[:3]}")
                ids = np.asarray(values, dtype=object)
            rows = self._user_rows(ids)

        def rank_batch(batch_rows: np.ndarray) -> pd.DataFrame:
            r, frame = self._rank(Batch(batch_rows, self.history_[batch_rows]), n, explain)
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

    def recommend_for_history(self, history: History, n: int = 20, explain: bool = False) -> pd.DataFrame:
        """Top-``n`` artists for a listener not in the training data.

        Every stage runs as for a known user: the stage-one queries are built from the
        history, the ALS user vector is folded in (implicit's ``recalculate_user``), the
        BiasedSVD user vector and bias are solved by ridge regression against the fixed
        artist factors, and the ranker scores the merged candidates.

        Parameters
        ----------
        history : list of int or mapping of int to float
            Artist ids the listener played, or artist id -> play count. Unknown ids are
            ignored with a warning.
        n : int
        explain : bool

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
        return self._rank(Batch(np.array([-1]), self.history_matrix(history)), n, explain)[1]

    def similar_artists(self, artist_id: int, n: int = 10) -> pd.DataFrame:
        """The ``n`` artists nearest to ``artist_id`` in the stage-one embedding (inner product).

        Uses the tag source's FAISS index when the model has one; otherwise an exact product
        with every artist vector.

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, similarity`` best first, the artist itself excluded.

        Raises
        ------
        DataError
            ``artist_id`` is not in the catalogue.
        ConfigError
            The model was configured without the artist embedding.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_) - 1)
        if isinstance(artist_id, bool) or not isinstance(artist_id, (int, np.integer)):
            raise DataError(f"artist id {artist_id!r} must be an integer")
        column = int(lookup_ids(self.artist_ids_, [artist_id])[0])
        if column < 0:
            raise DataError(f"unknown artist id {artist_id}: not in the catalogue ({len(self.artist_ids_)} "
                            f"artists, ids {self.artist_ids_[0]}..{self.artist_ids_[-1]})")
        tags = [s for s in self.stages_.sources_ if isinstance(s, TagSource)]
        if tags:
            ids, scores = tags[0].similar(column, n)
        elif "embedder" in self.stages_.models_:
            vectors = self.stages_.models_["embedder"].vectors_
            similarity = vectors @ vectors[column]
            similarity[column] = -np.inf
            ids = np.argsort(-similarity, kind="stable")[:n]
            scores = similarity[ids]
        else:
            raise ConfigError("this model has no artist embedding to compare artists in: neither its candidate "
                              "sources nor its feature groups use one; add the 'tags' source (or the 'tags', "
                              "'artist' or 'user' feature group) and retrain")
        return pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "artist_id": self.artist_ids_[ids],
                             "artist_name": self.artist_names_[ids].astype(object),
                             "similarity": scores.astype(np.float64)})

    # persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save to directory ``path`` in the format of :mod:`funnel.persistence.model` (no pickle)."""
        self.check_fitted()
        path = Path(path)
        states = self.stages_.get_state()
        states["ranker"] = self.ranker_.get_state()
        states["data"] = PartState({"user_ids": self.user_ids_, "artist_ids": self.artist_ids_,
                                    "artist_names": string_array(self.artist_names_),
                                    **csr_to_arrays(self.history_, "history/")})
        return write_model(path, states, {
            "data_fingerprint": self.fingerprint_, "config": self.config_.to_dict(),
            "feature_names": self.feature_names_, "sources": self.stages_.source_names,
            "n_users": len(self.user_ids_), "n_artists": len(self.artist_ids_),
            "ranker_candidate_recall": self.ranker_candidate_recall_})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Load a model written by :meth:`save`, verifying every file's checksum first."""
        path = Path(path)
        manifest, states = read_model(path)
        try:
            config = FunnelConfig.from_dict(manifest["config"])
            self = cls(config)
            self.config_ = config
            self.stages_ = Stages.from_state(config, states, list(manifest["sources"]))
            self.ranker_ = RANKERS.get(config.ranker).from_config(config).set_state(states["ranker"])
            self.feature_names_ = self.stages_.feature_names_
            if self.feature_names_ != list(manifest["feature_names"]):
                raise ArtifactError(f"{path} lists features {manifest['feature_names']}, but its settings give "
                                  f"{self.feature_names_}; retrain and save it again")
            self.fingerprint_ = str(manifest["data_fingerprint"])
            self.ranker_candidate_recall_ = float(manifest["ranker_candidate_recall"])
            data = states["data"].arrays
            self.user_ids_ = data["user_ids"]
            self.artist_ids_ = data["artist_ids"]
            self.artist_names_ = data["artist_names"]
            self.history_ = csr_from_arrays(data, "history/")
        except KeyError as exc:
            raise ArtifactError(f"{path} lacks entry {exc}; the save is incomplete or from another program") from exc
        return self
