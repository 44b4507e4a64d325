"""The one validated configuration of a funnel: every setting, checked once, at construction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from funnel.errors import ConfigError

# Settings that change how a run behaves but not what a model learns.
RUNTIME_SETTINGS = frozenset({"show_progress", "n_threads", "cache_dir", "reuse_svd", "reuse_ranker"})

DEFAULT_CANDIDATES = {"tags": 100, "als": 100, "ease": 100, "friends": 50, "popularity": 20}
DEFAULT_FEATURES = ("svd", "als", "tags", "ease", "friends", "rp3", "log_ease", "sources", "artist", "user",
                    "recency")


class FunnelConfig(BaseModel):
    """Every setting of a :class:`funnel.Recommender`.

    Build it with keyword arguments or :meth:`from_dict`. Unknown keys, values of the wrong
    type and values out of range raise :class:`funnel.ConfigError` at construction; nothing
    downstream checks them again. Figures behind the defaults are in ``docs/experiments.md``.

    Parameters
    ----------
    candidates : dict of str to int
        The stage-one candidate sources, by registry name (see ``docs/extending.md``), and
        how many candidates each returns per user. Built in: ``tags`` (FAISS search of the
        tag/popularity/freshness artist vectors), ``als`` (FAISS search of ALS factors),
        ``ease`` (co-listening), ``friends`` and ``popularity``.
    features : tuple of str
        The stage-two feature groups, by registry name, in column order.
    ranker : str
        The stage-two model, by registry name: ``logistic`` (scikit-learn's logistic
        regression, scores are probabilities) or ``lightgbm`` (LightGBM's LambdaRank, a
        query per user, scores order one user's list).
    ranker_params : dict
        Keyword arguments of the ranker class (e.g. ``{"C": 0.1}`` for ``logistic``,
        ``{"n_estimators": 300, "num_leaves": 31}`` for ``lightgbm``).
    tag_dim : int
        Dimensions of the truncated-SVD projection of the TF-IDF tag text. The design card
        asks for about 500; 250 scored the same on validation at half the cost.
    tag_search_dim : int
        Tag dimensions an exact tag index searches (the strongest SVD components,
        L2-normalised again); 0 searches all ``tag_dim``. IVF and HNSW search all of them.
    popularity_weight, freshness_weight : float
        Norm of the popularity and freshness blocks of an artist vector relative to the tag
        block (unit norm).
    index : {"auto", "flat", "ivf", "hnsw"}
        FAISS index type; ``auto`` is exact search below ``ann_threshold`` artists, else IVF.
    ann_threshold : int
    history_weighting : {"none", "log", "plays"}
        Weight of each history artist in a user's stage-one query.
    als_min_listeners : int
        The ALS source searches only artists with at least this many listeners.
    ease_l2, log_ease_l2 : float
        L2 penalties of the EASE co-listening models on presence and on ``log1p(plays)``.
    ease_max_artists : int
        EASE models at most this many of the most listened artists (its cost is cubic).
    rp3_alpha, rp3_beta : float
        RP3beta random-walk exponent and popularity penalty.
    rp3_top_k : int
        Neighbours RP3beta keeps per artist.
    svd_factors, svd_epochs : int
        BiasedSVD (scikit-surprise ``SVD(biased=True)``) size and epochs.
    svd_lr, svd_reg : float
    als_factors, als_iterations : int
        ALS (implicit ``AlternatingLeastSquares``) size and iterations.
    als_alpha, als_regularization : float
    als_confidence : {"binary", "log", "raw"}
        Confidence of a play count before ``als_alpha``: 1, ``log1p(plays)`` or plays.
    als_models : int
        ALS models (seeds ``seed``, ``seed + 1``, ...) whose scores are averaged.
    tagged_known : bool
        Artists a listener tagged count as known (with those they played): they are not
        recommended as discoveries unless a call passes ``filter_known=False``.
    recent_days : float
        Window of the ``recency`` feature group: an artist's trend counts listeners who
        started playing it in the last ``recent_days``, and a listener's recent taste weighs
        each artist by ``0.5 ** (days since last played / recent_days)``.
    recency_half_life_days : float or None
        With listen times in the data, the confidence of a (listener, artist) pair halves
        every this many days between its last listen and the data's latest listen; ``None``
        weighs every pair by its plays alone. Data without listen times is not weighted.
    ranker_holdout : float
        Share of each user's training artists held out as the ranker's labels.
    ranker_labels : {"auto", "temporal", "random"}
        Which of a user's training artists are held out as the ranker's labels: ``temporal``
        the ones started last (the ranker learns what a listener starts next; needs listen
        times), ``random`` a random share (the ranker learns to fill gaps in a history);
        ``auto`` is temporal when the data has listen times and random otherwise.
    ranker_negatives : int
        Negative candidates sampled per user for ranker training (0 keeps all).
    ranker_users : int
        At most this many random users give ranker training examples.
    seed : int
        Seed of every random step.
    show_progress : bool
        tqdm progress bars on long steps.
    n_threads : int
        Threads for implicit's ALS and for the batches of ``recommend_all`` (0: all cores);
        1 also fits BiasedSVD in this process instead of a worker process beside the rest.
    cache_dir : str or None
        Where trained BiasedSVD embeddings and rankers are cached between runs.
    reuse_svd, reuse_ranker : bool
        Reuse cached BiasedSVD embeddings / ranker when trained on the same data, settings
        and feature code.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    candidates: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CANDIDATES))
    features: tuple[str, ...] = DEFAULT_FEATURES
    ranker: str = "logistic"
    ranker_params: dict[str, Any] = Field(default_factory=dict)
    tag_dim: int = Field(250, gt=0)
    tag_search_dim: int = Field(32, ge=0)
    popularity_weight: float = Field(0.25, ge=0)
    freshness_weight: float = Field(0.1, ge=0)
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    ann_threshold: int = Field(100_000, gt=0)
    history_weighting: Literal["none", "log", "plays"] = "log"
    als_min_listeners: int = Field(2, gt=0)
    ease_l2: float = Field(200.0, gt=0)
    ease_max_artists: int = Field(2000, gt=0)
    log_ease_l2: float = Field(3000.0, gt=0)
    rp3_alpha: float = Field(1.0, gt=0)
    rp3_beta: float = Field(0.25, ge=0)
    rp3_top_k: int = Field(100, gt=0)
    svd_factors: int = Field(16, gt=0)
    svd_epochs: int = Field(20, gt=0)
    svd_lr: float = Field(0.005, gt=0)
    svd_reg: float = Field(0.1, ge=0)
    als_factors: int = Field(32, gt=0)
    als_iterations: int = Field(8, gt=0)
    als_alpha: float = Field(10.0, gt=0)
    als_regularization: float = Field(0.01, ge=0)
    als_confidence: Literal["binary", "log", "raw"] = "binary"
    als_models: int = Field(3, gt=0)
    tagged_known: bool = True
    recent_days: float = Field(30.0, gt=0)
    recency_half_life_days: float | None = Field(60.0, gt=0)
    ranker_holdout: float = Field(0.2, gt=0, lt=1)
    ranker_labels: Literal["auto", "temporal", "random"] = "auto"
    ranker_negatives: int = Field(50, ge=0)
    ranker_users: int = Field(20_000, gt=0)
    seed: int = Field(0, ge=0)
    show_progress: bool = False
    n_threads: int = Field(0, ge=0)
    cache_dir: str | None = None
    reuse_svd: bool = False
    reuse_ranker: bool = False

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise ConfigError(f"a FunnelConfig cannot be changed; build a changed copy with "
                          f"config.replace({name}=...)")

    @field_validator("candidates")
    @classmethod
    def _known_sources(cls, value: dict[str, int]) -> dict[str, int]:
        from funnel.candidates import SOURCES

        if not value:
            raise ValueError("name at least one candidate source")
        for name, k in value.items():
            SOURCES.check(name)
            if k < 1:
                raise ValueError(f"source {name!r} must return at least 1 candidate, got {k}; "
                                 "leave a source out of the mapping to disable it")
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from funnel.ranking import FEATURES

        for name in value:
            FEATURES.check(name)
        if len(set(value)) != len(value):
            raise ValueError(f"feature groups {list(value)} name one group twice")
        if not value:
            raise ValueError("name at least one feature group")
        return value

    @model_validator(mode="after")
    def _known_ranker(self) -> FunnelConfig:
        from funnel.ranking import RANKERS

        RANKERS.check(self.ranker)
        RANKERS.get(self.ranker).from_config(self)  # its own parameters are checked by its class
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FunnelConfig:
        """Build a config from a mapping (e.g. a saved model's manifest)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"settings must be a mapping, got {type(values).__name__}")
        values = dict(values)
        if isinstance(values.get("features"), list):  # JSON has no tuples
            values["features"] = tuple(values["features"])
        return cls(**values)

    def replace(self, **changes: Any) -> FunnelConfig:
        """A copy with ``changes`` applied, validated again."""
        return FunnelConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """All settings as a plain JSON-serialisable dict."""
        values = self.model_dump()
        values["features"] = list(values["features"])
        return values

    def model_settings(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings that shape a trained model (``names`` only, if given), runtime ones excluded."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUNTIME_SETTINGS and (names is None or k in names)}

    def fingerprint(self, names: tuple[str, ...] | None = None) -> str:
        """Hash of :meth:`model_settings`."""
        text = json.dumps(self.model_settings(names), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_errors(exc: ValidationError) -> str:
    """One line per invalid setting: which, what it was given, and what it must be."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        if error.get("type") == "extra_forbidden":
            valid = sorted(FunnelConfig.model_fields)
            lines.append(f"unknown setting {where!r}; valid settings are {valid}")
            continue
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        given = error.get("input")
        shown = f" (got {given!r})" if not isinstance(given, dict) or len(repr(given)) < 200 else ""
        lines.append(f"setting {where}: {message}{shown}")
    return "; ".join(lines)


def resolve(config: FunnelConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> FunnelConfig:
    """``config`` (a config, a mapping or None for the defaults) with ``overrides`` on top."""
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, FunnelConfig):
        values = config.to_dict()
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise ConfigError(f"config must be a FunnelConfig or a mapping, got {type(config).__name__}")
    values.update(overrides)
    return FunnelConfig.from_dict(values)
