"""The two-stage recommender: stage-one candidates ranked by a stage-two logistic ranker."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from funnel import explain as explain_
from funnel.beside import beside, in_forked_child
from funnel.candidates import CandidateSet
from funnel.candidates.index import search
from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.data.dataset import lookup_ids
from funnel.data.history import History, parse_history
from funnel.data.split import per_user
from funnel.errors import ArtifactError, ConfigError, DataError, NotFittedError, UnknownUserError
from funnel.factors import BiasedSVDFactors
from funnel.factors.als import one_openmp_thread, side_by_side_fits, single_threaded_blas
from funnel.persistence import (ArtifactCache, faiss_bytes, load_faiss, load_json, load_npz, npz_bytes,
                                read_verified, save_json, sha256_file)
from funnel.persistence.files import atomic_write
from funnel.ranking import LogisticRanker
from funnel.sparse import csr_from_arrays, csr_to_arrays, top_n_per_row
from funnel.stages import Stages, user_level

logger = logging.getLogger("funnel")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SVD_SETTINGS = ("svd_factors", "svd_epochs", "svd_lr", "svd_reg", "seed")
BATCH_USERS = 512
# Settings added after models were first saved, with the value that reproduces those models:
# they searched the whole tag block, fitted a single ALS, fed every BiasedSVD factor to the ranker
# and scored friends' candidates by their count.
SETTINGS_BEFORE_THEY_EXISTED = {"tag_search_dim": 0, "als_models": 1, "svd_features": "factors",
                                "friends_score": "count", "als_min_listeners": 1}


def check_n(n: Any, n_artists: int) -> int:
    """Validate a top-n length against the catalogue size."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"n={n!r} must be an integer between 1 and {n_artists} (the catalogue size)")
    if not 1 <= n <= n_artists:
        raise ConfigError(f"n={n} is out of range; it must be between 1 and {n_artists} (the catalogue size)")
    return int(n)


def in_batches(rank_batch: Callable[[np.ndarray], pd.DataFrame], rows: np.ndarray, batch_size: int,
               n_threads: int = 0, show_progress: bool = False) -> pd.DataFrame:
    """``rank_batch`` over consecutive batches of ``rows`` (equal, at most ``batch_size`` rows each)
    on ``n_threads`` threads (0: all cores).

    With several batch threads, each takes one core: BLAS and OpenMP (FAISS) run on one thread
    inside a batch. Left to start one thread per core in every batch thread, they
    oversubscribed the cores: on Last.fm the funnel's ``recommend_all`` took 1.06 s against
    0.72 s, the ALS-only baseline's 0.33 s against 0.24 s. One batch (a single user, a small
    list) runs here, where they may use every core. Returns the batches' frames concatenated
    in order (an empty recommendation frame for no rows).
    """
    # equal batches of at most batch_size rows, so that the threads finish together
    batches = np.array_split(rows, -(-len(rows) // batch_size)) if len(rows) else []
    if not batches:
        return pd.DataFrame({"user_id": [], "rank": [], "artist_id": [], "artist_name": [], "score": []})
    workers = min(len(batches), n_threads or os.cpu_count() or 1)
    with ExitStack() as stack:
        mapper = map
        if workers > 1:
            stack.enter_context(single_threaded_blas())
            mapper = stack.enter_context(ThreadPoolExecutor(workers, initializer=one_openmp_thread)).map
        return pd.concat(tqdm(mapper(rank_batch, batches), total=len(batches), desc="recommending",
                              disable=not show_progress), ignore_index=True)


class Recommender:
    """Two-stage ("funnel") artist recommender.

    Stage one merges candidates from a FAISS search over tag/popularity/freshness artist
    embeddings, a FAISS search over ALS artist factors, EASE co-listening, friends' artists
    and the popularity chart. Stage two scores each (user, candidate) pair with a logistic
    ranker over BiasedSVD, ALS, EASE and friends features, stage-one scores and ranks, and
    artist and user statistics.

    Parameters
    ----------
    config : FunnelConfig or mapping, optional
        Settings; defaults to ``FunnelConfig()``.
    **overrides
        Individual settings applied on top of ``config`` (e.g. ``tag_candidates=300``).

    Attributes
    ----------
    config_ : FunnelConfig
        The validated settings used by ``fit``.
    stages_ : Stages
        Candidate sources and factor models fitted on all training data.
    ranker_ : LogisticRanker
    feature_names_ : list of str
    fingerprint_ : str
        Fingerprint of the training data.
    user_ids_, artist_ids_, artist_names_ : numpy.ndarray
    history_ : scipy.sparse.csr_matrix
        Training play counts, users x artists.
    ranker_candidate_recall_ : float
        Share of the ranker's label artists that stage one retrieved during training.
    ranker_seconds_ : float
        Seconds spent training the ranker (its stages included; 0 when reused).
    svd_seconds_ : float
        Seconds spent on the serving BiasedSVD (training or loading it from the cache).

    Examples
    --------
    >>> from funnel import Recommender, load_lastfm
    >>> model = Recommender(show_progress=True).fit(load_lastfm())  # doctest: +SKIP
    >>> model.recommend(2, n=10)  # doctest: +SKIP
    """

    def __init__(self, config: FunnelConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        self.config = config
        self.overrides = overrides

    # configuration ----------------------------------------------------------------------
    def _resolve_config(self) -> FunnelConfig:
        base = self.config
        if base is None:
            values: dict[str, Any] = {}
        elif isinstance(base, FunnelConfig):
            values = base.to_dict()
        elif isinstance(base, Mapping):
            values = dict(base)
        else:
            raise ConfigError(f"config must be a FunnelConfig or a mapping, got {type(base).__name__}")
        values.update(self.overrides)
        return FunnelConfig.from_dict(values).validate()

    # fitting ----------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> "Recommender":
        """Train the ranker without leakage, then fit both stages on all of ``dataset``.

        The ranker is trained on a per-user split of ``dataset``: stage one and the factor
        models are fitted on the history part, and the labels are the held-out part they never
        saw. The stages are then refitted on all of ``dataset`` for serving.

        Returns
        -------
        Recommender
            ``self``.
        """
        cfg = self._resolve_config()
        if not isinstance(dataset, Dataset):
            raise DataError(f"fit expects a funnel.Dataset (see funnel.load_lastfm / Dataset.from_frames), "
                            f"got {type(dataset).__name__}")
        cache = ArtifactCache(cfg.cache_dir) if cfg.cache_dir else None
        started = time.perf_counter()
        self.ranker_seconds_ = 0.0
        ranker_settings = cfg.model_settings()
        ranker = None
        if cache is not None and cfg.reuse_ranker:
            arrays = cache.load("ranker", dataset.fingerprint(), ranker_settings)
            if arrays is not None:
                ranker = LogisticRanker(cfg.ranker_C).set_arrays(arrays)
                self.ranker_candidate_recall_ = float(arrays["candidate_recall"][0])

        def trained_ranker() -> tuple[LogisticRanker, float, float]:
            ranker_started = time.perf_counter()
            trained, recall = self._train_ranker(dataset, cfg, cache)
            return trained, recall, time.perf_counter() - ranker_started

        def serving_stages() -> Stages:
            logger.info("fitting both stages on all %d interactions", len(dataset.interactions))
            stages = Stages(cfg).fit(dataset, svd=lambda: self._svd(dataset, cfg, cache, "svd"))
            self.svd_seconds_ = stages.fit_seconds_["BiasedSVD"]
            return stages

        reused = ranker is not None
        if reused:
            self.stages_ = serving_stages()
        elif cfg.n_threads == 1:
            ranker, self.ranker_candidate_recall_, self.ranker_seconds_ = trained_ranker()
            self.stages_ = serving_stages()
        else:
            # the ranker's models and the serving ones are fitted on different data, independently:
            # beside each other, one core each (a forked process on Linux, see funnel.beside)
            with side_by_side_fits(), beside(trained_ranker, "the ranker's training") as ranker_job:
                self.stages_ = serving_stages()
                ranker, self.ranker_candidate_recall_, self.ranker_seconds_ = ranker_job.result()
        if not reused and cache is not None:
            cache.save("ranker", dataset.fingerprint(), ranker_settings,
                       {**ranker.to_arrays(), "candidate_recall": np.array([self.ranker_candidate_recall_])})
        self.feature_names_ = self.stages_.feature_names()
        if len(ranker.coef_) != len(self.feature_names_):
            raise ArtifactError("the saved ranker does not match the features of these settings; "
                                "retrain it (--judge True / reuse_ranker=False)")
        self.ranker_ = ranker
        self.config_ = cfg
        self.fingerprint_ = dataset.fingerprint()
        self.user_ids_ = dataset.user_ids
        self.artist_ids_ = dataset.artist_ids
        self.artist_names_ = dataset.artist_names
        self.history_ = dataset.matrix
        logger.info("fitted in %.1fs", time.perf_counter() - started)
        return self

    @staticmethod
    def _svd(dataset: Dataset, cfg: FunnelConfig, cache: ArtifactCache | None, kind: str) -> BiasedSVDFactors:
        svd = Stages(cfg).make_svd()
        settings = cfg.model_settings(SVD_SETTINGS)
        if cache is not None and cfg.reuse_svd:
            arrays = cache.load(kind, dataset.fingerprint(), settings)
            if arrays is not None:
                return svd.set_arrays(arrays)
        logger.info("training BiasedSVD (%d factors, %d epochs)", cfg.svd_factors, cfg.svd_epochs)
        svd.fit(dataset.matrix)
        if cache is not None:
            cache.save(kind, dataset.fingerprint(), settings, svd.to_arrays())
        return svd

    def _train_ranker(self, dataset: Dataset, cfg: FunnelConfig, cache: ArtifactCache | None
                      ) -> tuple[LogisticRanker, float]:
        """The ranker trained without leakage, and the share of its label artists stage one found."""
        history_part, labels = per_user(dataset, cfg.ranker_holdout, min_artists=2, seed=cfg.seed)
        logger.info("ranker: fitting stage one and factor models on %d history interactions, "
                    "%d held out as labels", len(history_part.interactions), len(labels))
        # in a forked child (see fit), a third process takes some of the longer fit's work
        stages = Stages(cfg).fit(history_part, svd=lambda: self._svd(history_part, cfg, cache, "svd_history"),
                                 split=in_forked_child())
        users = np.unique(history_part.user_index(labels["user_id"].to_numpy()))
        if len(users) == 0:
            raise DataError("the ranker needs users with at least 2 artists to hold some out as labels; "
                            "every user in this dataset has only one")
        rng = np.random.default_rng(cfg.seed)
        if len(users) > cfg.ranker_users:
            users = np.sort(rng.choice(users, cfg.ranker_users, replace=False))
            labels = labels[np.isin(history_part.user_index(labels["user_id"].to_numpy()), users)]
        n_items = np.int64(history_part.n_artists)
        label_keys = np.sort(history_part.user_index(labels["user_id"].to_numpy()) * n_items
                             + history_part.artist_index(labels["artist_id"].to_numpy()))
        features, targets, found = [], [], 0
        for start in tqdm(range(0, len(users), BATCH_USERS), desc="ranker features",
                          disable=not cfg.show_progress):
            batch = users[start:start + BATCH_USERS]
            history = history_part.matrix[batch]
            cands = stages.candidates(batch, history)
            keys = batch[cands.rows] * n_items + cands.items
            y = np.isin(keys, label_keys, assume_unique=False)
            found += int(y.sum())
            keep = _sample_negatives(cands.rows, y, cfg.ranker_negatives, rng)
            sub = _subset(cands, keep)
            features.append(stages.features(batch, history, sub))
            targets.append(y[keep])
        recall = found / max(len(labels), 1)
        X, y = np.vstack(features), np.concatenate(targets)
        logger.info("ranker: stage-one recall of label artists %.3f; training on %d pairs (%d positive)",
                    recall, len(y), int(y.sum()))
        return LogisticRanker(cfg.ranker_C).fit(X, y), recall

    # recommending -----------------------------------------------------------------------
    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless the model is fitted or loaded."""
        if not hasattr(self, "ranker_"):
            raise NotFittedError("this Recommender is not fitted; call fit(dataset) or Recommender.load(path)")

    def _rank(self, users: np.ndarray, history: sp.csr_matrix, n: int, explain: bool = False
              ) -> tuple[np.ndarray, pd.DataFrame]:
        """Batch rows of the top-``n`` pairs and their frame (``artist_id, artist_name, score``, ...)."""
        cands = self.stages_.candidates(users, history, fallback=n)
        X = self.stages_.features(users, history, cands)
        scores = self.ranker_.predict_proba(X)[:, 1]
        best, rank = top_n_per_row(cands.rows, scores, cands.items, n)
        rows, items = cands.rows[best], cands.items[best]
        frame = pd.DataFrame({"rank": rank, "artist_id": self.artist_ids_[items],
                              "artist_name": self.artist_names_[items].astype(object),
                              "score": scores[best].astype(np.float64)})
        if explain:
            frame = pd.concat([frame, self._explain(cands, X, best, history)], axis=1)
        return rows, frame

    def _explain(self, cands: CandidateSet, X: np.ndarray, best: np.ndarray, history: sp.csr_matrix) -> pd.DataFrame:
        """Explanation columns of the chosen candidate pairs ``best``."""
        sources = explain_.found_by({k: v[best] for k, v in cands.ranks.items()},
                                    {s.name: s.n_candidates for s in self.stages_.sources_})
        pair, artist, _ = explain_.closest_history(self.stages_.als_.item_factors_, history,
                                                   cands.rows[best], cands.items[best])
        ranking = ~user_level(self.feature_names_)
        contributions = explain_.top_contributions(self.ranker_.contributions(X[best])[:, ranking],
                                                   [f for f, r in zip(self.feature_names_, ranking) if r])
        return explain_.explanation_columns(sources, (pair, artist), len(best), self.artist_ids_,
                                            self.artist_names_, contributions)

    def _user_rows(self, user_ids: np.ndarray) -> np.ndarray:
        rows = lookup_ids(self.user_ids_, user_ids)
        unknown = rows < 0
        if unknown.any():
            missing = user_ids[unknown]
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
            ``rank, artist_id, artist_name, score`` best first (score = ranker probability).

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
        rows = self._user_rows(np.array([user_id], dtype=np.int64))
        row = int(rows[0])
        return self._rank(rows, self.history_[row:row + 1], n, explain)[1]

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
            gave), ``because_ids`` / ``because`` (up to three history artists closest to it by
            cosine of the ALS artist factors, i.e. co-listening), ``contributions`` (the three feature groups with the
            largest coefficient x standardised value in the ranker's log-odds) and ``reason``
            (all of it as one line).

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
            ids = np.asarray(list(users))
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise UnknownUserError(f"user ids must be integers, got {ids[:3].tolist()}")
            rows = self._user_rows(ids.astype(np.int64))

        def rank_batch(batch: np.ndarray) -> pd.DataFrame:
            r, frame = self._rank(batch, self.history_[batch], n, explain)
            frame.insert(0, "user_id", self.user_ids_[batch[r]])
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
            Add the explanation columns (see :meth:`recommend_all`).

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
        row = self.history_matrix(history)
        return self._rank(np.array([-1]), row, n, explain)[1]

    def similar_artists(self, artist_id: int, n: int = 10) -> pd.DataFrame:
        """The ``n`` artists nearest to ``artist_id`` in the stage-one embedding (inner product).

        Uses the tag source's FAISS index (and its search vectors, see ``tag_search_dim``) when
        the model has one; otherwise an exact product with every artist vector.

        Returns
        -------
        pandas.DataFrame
            ``rank, artist_id, artist_name, similarity`` best first, the artist itself excluded.

        Raises
        ------
        DataError
            ``artist_id`` is not in the catalogue.
        """
        self.check_fitted()
        n = check_n(n, len(self.artist_ids_) - 1)
        if isinstance(artist_id, bool) or not isinstance(artist_id, (int, np.integer)):
            raise DataError(f"artist id {artist_id!r} must be an integer")
        column = int(lookup_ids(self.artist_ids_, np.array([artist_id]))[0])
        if column < 0:
            raise DataError(f"unknown artist id {artist_id}: not in the catalogue ({len(self.artist_ids_)} "
                            f"artists, ids {self.artist_ids_[0]}..{self.artist_ids_[-1]})")
        tags = [s for s in self.stages_.sources_ if s.name == "tags"]
        if tags:
            found, found_scores = search(tags[0].index_, tags[0].search_vectors_[column:column + 1], n + 1)
            ids, scores = found[0], found_scores[0]
        else:
            vectors = self.stages_.embedder_.vectors_
            scores = vectors @ vectors[column]
            ids = np.argpartition(-scores, n)[:n + 1]
            ids = ids[np.lexsort((ids, -scores[ids]))]
            scores = scores[ids]
        keep = (ids >= 0) & (ids != column)
        ids, scores = ids[keep][:n], scores[keep][:n]
        return pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "artist_id": self.artist_ids_[ids],
                             "artist_name": self.artist_names_[ids].astype(object),
                             "similarity": scores.astype(np.float64)})

    # persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save to directory ``path``: npz arrays, FAISS index files and a JSON manifest.

        Data files are named by their checksum and written first; the manifest that points
        at them is replaced atomically last, so an interrupted save leaves the previous model
        loadable. No pickle is involved.
        """
        self.check_fitted()
        path = Path(path)
        arrays, indexes = self.stages_.to_arrays()
        arrays.update({f"ranker/{k}": v for k, v in self.ranker_.to_arrays().items()})
        arrays.update({"data/user_ids": self.user_ids_, "data/artist_ids": self.artist_ids_,
                       "data/artist_names": self.artist_names_.astype(str),
                       **csr_to_arrays(self.history_, "history/")})
        files = {"arrays": _write_hashed(path, "arrays", ".npz", npz_bytes(arrays))}
        for name, index in indexes.items():
            files[f"index/{name}"] = _write_hashed(path, f"index-{name}", ".faiss", faiss_bytes(index))
        manifest = {
            "format_version": FORMAT_VERSION, "data_fingerprint": self.fingerprint_,
            "config": self.config_.to_dict(), "feature_names": self.feature_names_,
            "sources": [s.name for s in self.stages_.sources_],
            "files": files, "n_users": len(self.user_ids_), "n_artists": len(self.artist_ids_),
            "ranker_candidate_recall": self.ranker_candidate_recall_,
        }
        save_json(path / MANIFEST, manifest)
        keep = {entry["name"] for entry in files.values()} | {MANIFEST}
        for old in list(path.glob("arrays-*.npz")) + list(path.glob("index-*.faiss")):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recommender":
        """Load a model written by :meth:`save`, verifying every file's checksum first."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"no saved model at {path}: the directory does not exist; save one with "
                                "Recommender.save or run main.py")
        manifest = load_json(path / MANIFEST)
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(f"{path / MANIFEST} has format version {version!r}; this funnel reads "
                                f"versions up to {FORMAT_VERSION}: upgrade funnel or retrain")
        try:
            blobs = {role: read_verified(path / entry["name"], entry["sha256"], role)
                     for role, entry in manifest["files"].items()}
            arrays = load_npz(blobs.pop("arrays"))
            indexes = {role.split("/", 1)[1]: load_faiss(blob) for role, blob in blobs.items()
                       if role.startswith("index/")}
            config = FunnelConfig.from_dict({**SETTINGS_BEFORE_THEY_EXISTED, **manifest["config"]}).validate()
            self = cls(config)
            self.config_ = config
            self.stages_ = Stages.from_arrays(config, arrays, indexes, list(manifest["sources"]))
            self.ranker_ = LogisticRanker(config.ranker_C).set_arrays(
                {k[len("ranker/"):]: v for k, v in arrays.items() if k.startswith("ranker/")})
            self.feature_names_ = list(manifest["feature_names"])
            self.fingerprint_ = str(manifest["data_fingerprint"])
            self.ranker_candidate_recall_ = float(manifest["ranker_candidate_recall"])
            self.user_ids_ = arrays["data/user_ids"]
            self.artist_ids_ = arrays["data/artist_ids"]
            self.artist_names_ = arrays["data/artist_names"]
            self.history_ = csr_from_arrays(arrays, "history/", (len(self.user_ids_), len(self.artist_ids_)))
        except KeyError as exc:
            raise ArtifactError(f"{path / MANIFEST} or its arrays lack entry {exc}; the save is incomplete "
                                "or from another program") from exc
        return self


def _write_hashed(directory: Path, stem: str, suffix: str, data: bytes) -> dict[str, str]:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    if not (directory / name).is_file() or sha256_file(directory / name) != digest:
        atomic_write(directory / name, lambda handle: handle.write(data))
    return {"name": name, "sha256": digest}


def _sample_negatives(rows: np.ndarray, positive: np.ndarray, per_row: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """Boolean mask keeping every positive and up to ``per_row`` random negatives per row."""
    if per_row == 0:
        return np.ones(len(rows), dtype=bool)
    random = rng.random(len(rows))
    negative = np.flatnonzero(~positive)
    chosen, _ = top_n_per_row(rows[negative], -random[negative], negative, per_row)
    keep = positive.copy()
    keep[negative[chosen]] = True
    return keep


def _subset(cands: CandidateSet, keep: np.ndarray) -> CandidateSet:
    return CandidateSet(rows=cands.rows[keep], items=cands.items[keep],
                        ranks={k: v[keep] for k, v in cands.ranks.items()},
                        scores={k: v[keep] for k, v in cands.scores.items()})
