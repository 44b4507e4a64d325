"""The one typed configuration object that holds every setting of a funnel."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, Mapping

from funnel.errors import ConfigError

_CHOICES: dict[str, tuple[str, ...]] = {
    "index": ("auto", "flat", "ivf", "hnsw"),
    "history_weighting": ("none", "log", "plays"),
    "als_confidence": ("binary", "log", "raw"),
    "knn_weighting": ("binary", "log"),
    "ranker": ("logistic",),
    "svd_features": ("prediction", "factors"),
    "friends_score": ("log", "count"),
}

# Settings that change how a run behaves but not what a model learns.
RUNTIME_SETTINGS = frozenset(
    {"show_progress", "n_threads", "cache_dir", "reuse_svd", "reuse_ranker"}
)


@dataclass(frozen=True)
class FunnelConfig:
    """Every setting of a :class:`funnel.Recommender`.

    Build it with keyword arguments or :meth:`from_dict`; unknown keys are rejected.
    Values are checked by :meth:`validate`, which ``Recommender.fit`` calls.

    Parameters
    ----------
    tag_dim : int
        Dimensions of the dense projection of the TF-IDF tag text (stage one). 250 scored
        as 500 on validation (0.1978 against 0.1974 NDCG@10, ``benchmarks/tune.py --seeds 0
        1 2``) at half the cost of the ranker's tag similarity; 128 gave 0.1971.
    tag_search_dim : int
        Tag dimensions an exact stage-one tag index searches: the first (strongest) SVD
        components, L2-normalised again; 0 searches all ``tag_dim``. IVF and HNSW always
        search all of them, and the ranker's tag-similarity feature uses all of them. 32
        scored as 64 on validation (0.1972 against 0.1974, with the other defaults).
    popularity_weight, freshness_weight : float
        Norm of the popularity and freshness blocks of an artist vector relative to the
        tag block (which has unit norm).
    index : {"auto", "flat", "ivf", "hnsw"}
        FAISS index type; "auto" is exact search below ``ann_threshold`` artists.
    ann_threshold : int
        Catalogue size from which ``index="auto"`` switches to IVF (measurements in
        ``funnel.candidates.index``).
    history_weighting : {"none", "log", "plays"}
        How each history artist is weighted in a user's stage-one query.
    tag_candidates, als_candidates, ease_candidates, friends_candidates, popularity_candidates : int
        Candidates each stage-one source returns per user (0 disables the source). 20
        popularity candidates scored as 50 (0.1978 against 0.1974); 50 ALS candidates
        (0.1966) or no tag source (0.1961) scored lower.
    als_min_listeners : int
        Only artists with at least this many listeners are searched by the ALS source (see
        :class:`funnel.candidates.ALSSource`). 2 searches 6,953 of Last.fm's 17,632 artists,
        with the same candidate recall on validation and NDCG@10 0.1968 against 0.1972 for 1
        (global protocol 0.1970 against 0.1972).
    friends_score : {"log", "count"}
        Score of a friends' candidate (a ranker feature): ``log1p`` of the number of friends
        listening, or the number itself (see :class:`funnel.candidates.FriendsSource`).
    ease_l2 : float
        L2 penalty of the EASE co-listening model.
    ease_max_artists : int
        EASE models at most this many of the most listened artists (its cost is cubic;
        2,000 scored 0.1972 on validation against 0.1974 for 3,000).
    rp3_alpha, rp3_beta : float
        RP3beta random-walk exponent and popularity penalty.
    rp3_top_k : int
        Neighbours RP3beta keeps per artist (100 scored as 200 on validation, 0.1974 both
        with the tag and popularity defaults; 50 gave 0.1969).
    use_rp3_features : bool
        Feed the RP3beta score to the ranker.
    use_knn_features : bool
        Feed the user-kNN score (summed similarity of the neighbours who play the artist).
        Off by default: beside the RP3beta and log-play EASE scores it added nothing on
        validation (0.1974 with and without it).
    knn_neighbors : int
        Neighbours of the user-kNN feature.
    knn_weighting : {"binary", "log"}
        Rows the user-kNN cosine similarity compares: presence or ``log1p(plays)``.
    use_log_ease_features : bool
        Feed the score of a second EASE fitted on ``log1p(plays)`` instead of presence.
    log_ease_l2 : float
        L2 penalty of that second EASE.

        Together the RP3beta, user-kNN and log-play EASE features raised validation NDCG@10
        by about 1% when they were added (``benchmarks/tune.py --seeds 0 1 2``; each alone
        0-0.3%). Without the log-play EASE feature validation fell from 0.1974 to 0.1960.
    svd_factors, svd_epochs : int
        BiasedSVD (scikit-surprise ``SVD(biased=True)``) size and training epochs.
    svd_lr, svd_reg : float
        BiasedSVD learning rate and regularisation.
    als_factors, als_iterations : int
        ALS (implicit ``AlternatingLeastSquares``) size and iterations. Eight iterations
        score as 15 on validation (0.1975 NDCG@10 both, five 0.1967; ``benchmarks/tune.py
        --seeds 0 1 2``) in about half the ALS fit time.
    als_alpha, als_regularization : float
        ALS confidence scale and L2 regularisation.
    als_confidence : {"binary", "log", "raw"}
        Confidence given to a play count before ``als_alpha``: 1, ``log1p(plays)`` or plays.
    als_models : int
        ALS models (seeds ``seed``, ``seed + 1``, ...) whose scores are averaged for the ALS
        candidate source and feature. Three models of 15 iterations raised validation
        NDCG@10 by 0.4% over one of 30 (``benchmarks/tune.py --seeds 0 1 2``: 0.1961 against
        0.1953; five models 0.1962).
    ranker : {"logistic"}
        Stage-two model: L2-regularised logistic regression.
    ranker_C : float
        Inverse L2 regularisation of the logistic ranker.
    ranker_holdout : float
        Share of each user's training artists held out as ranker labels.
    ranker_negatives : int
        Negative candidates sampled per user for ranker training (0 keeps all).
    ranker_users : int
        At most this many random users give ranker training examples (bounds its cost on
        large datasets; Last.fm has fewer).
    use_svd_features, use_als_features : bool
        Feed the BiasedSVD / ALS features to the ranker (off only for ablations).
    svd_features : {"prediction", "factors"}
        The BiasedSVD features: its predicted rating alone, or also the user and artist
        factors and their elementwise products (49 columns with 16 factors). The prediction
        alone scored 0.1968 validation NDCG@10 against 0.1961 for all of them
        (``benchmarks/tune.py --seeds 0 1 2``), with 48 fewer columns to assemble.
    seed : int
        Seed of every random step.
    show_progress : bool
        Show tqdm progress bars on long steps.
    n_threads : int
        Threads for implicit's ALS and for the user batches of ``recommend_all`` (0 means all
        cores); 1 also fits the ranker's models and the serving ones one after the other
        instead of side by side (in a forked child process on Linux, see ``funnel.beside``).
    cache_dir : str or None
        Where trained BiasedSVD embeddings and rankers are cached between runs.
    reuse_svd, reuse_ranker : bool
        Reuse cached BiasedSVD embeddings / ranker weights when they were trained on the
        same data with the same settings.
    """

    tag_dim: int = 250
    tag_search_dim: int = 32
    popularity_weight: float = 0.25
    freshness_weight: float = 0.1
    index: str = "auto"
    ann_threshold: int = 100_000
    history_weighting: str = "log"
    tag_candidates: int = 100
    als_candidates: int = 100
    ease_candidates: int = 100
    friends_candidates: int = 50
    popularity_candidates: int = 20
    als_min_listeners: int = 2
    friends_score: str = "log"
    ease_l2: float = 200.0
    ease_max_artists: int = 2000
    rp3_alpha: float = 1.0
    rp3_beta: float = 0.25
    rp3_top_k: int = 100
    use_rp3_features: bool = True
    use_knn_features: bool = False
    knn_neighbors: int = 50
    knn_weighting: str = "binary"
    use_log_ease_features: bool = True
    log_ease_l2: float = 3000.0
    svd_factors: int = 16
    svd_epochs: int = 20
    svd_lr: float = 0.005
    svd_reg: float = 0.1
    als_factors: int = 32
    als_iterations: int = 8
    als_alpha: float = 10.0
    als_regularization: float = 0.01
    als_confidence: str = "binary"
    als_models: int = 3
    ranker: str = "logistic"
    ranker_C: float = 0.1
    ranker_holdout: float = 0.2
    ranker_negatives: int = 50
    ranker_users: int = 20_000
    use_svd_features: bool = True
    use_als_features: bool = True
    svd_features: str = "prediction"
    seed: int = 0
    show_progress: bool = False
    n_threads: int = 0
    cache_dir: str | None = None
    reuse_svd: bool = False
    reuse_ranker: bool = False

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FunnelConfig":
        """Build a config from a mapping, rejecting keys it does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown}; valid settings are {sorted(known)}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "FunnelConfig":
        """Return a copy with ``changes`` applied (unknown keys rejected)."""
        merged = self.to_dict()
        merged.update(changes)
        return FunnelConfig.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        """All settings as a plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def model_settings(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings that shape a trained model (``names`` only, if given), runtime ones excluded."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUNTIME_SETTINGS and (names is None or k in names)}

    def fingerprint(self, names: tuple[str, ...] | None = None) -> str:
        """Hash of :meth:`model_settings`."""
        return hashlib.sha256(json.dumps(self.model_settings(names), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> "FunnelConfig":
        """Check every value; raise :class:`ConfigError` naming the first bad one."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _CHOICES:
                if value not in _CHOICES[f.name]:
                    raise ConfigError(
                        f"setting {f.name}={value!r} is not one of {list(_CHOICES[f.name])}"
                    )
            elif f.name == "cache_dir":
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"setting cache_dir={value!r} must be a path string or None")
            elif f.type in ("bool",):
                if not isinstance(value, bool):
                    raise ConfigError(f"setting {f.name}={value!r} must be True or False")
            elif f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"setting {f.name}={value!r} must be an integer")
            elif f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"setting {f.name}={value!r} must be a number")
        positive = ("tag_dim", "svd_factors", "svd_epochs", "als_factors", "als_iterations",
                    "als_models", "ann_threshold", "svd_lr", "ranker_C", "als_alpha", "ease_l2", "ranker_users",
                    "ease_max_artists", "rp3_alpha", "rp3_top_k", "knn_neighbors", "log_ease_l2",
                    "als_min_listeners")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name}={getattr(self, name)!r} must be > 0")
        non_negative = ("popularity_weight", "freshness_weight", "tag_candidates", "tag_search_dim",
                        "als_candidates", "ease_candidates", "friends_candidates",
                        "popularity_candidates", "svd_reg", "rp3_beta",
                        "als_regularization", "ranker_negatives", "n_threads", "seed")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"setting {name}={getattr(self, name)!r} must be >= 0")
        if not 0.0 < self.ranker_holdout < 1.0:
            raise ConfigError(
                f"setting ranker_holdout={self.ranker_holdout!r} must be between 0 and 1 (exclusive)"
            )
        sources = ("tag_candidates", "als_candidates", "ease_candidates", "friends_candidates",
                   "popularity_candidates")
        if all(getattr(self, name) == 0 for name in sources):
            raise ConfigError(
                f"every candidate source is disabled ({', '.join(sources)} are all 0); "
                "set at least one above 0"
            )
        return self
