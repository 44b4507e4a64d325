"""The one validated configuration of a funnel: every setting, checked once, at construction."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from funnel.errors import ConfigError

# Settings that change how a run behaves but not what a model learns.
RUNTIME_SETTINGS = frozenset({"show_progress", "n_threads", "parallel_fit", "cache_dir", "reuse_svd",
                              "reuse_ranker"})

DEFAULT_CANDIDATES: dict[str, int | dict[str, Any]] = {"tags": 100, "als": 100, "ease": 100, "friends": 50,
                                                      "popularity": 20}
DEFAULT_FEATURES = ("svd", "als", "tags", "ease", "friends", "rp3", "log_ease", "sources", "artist", "user",
                    "recency")
SECTIONS = ("models", "candidates", "features")  # the sections that list parts by name
RESERVED = ("part", "models")  # keys of a part's entry that are not its own settings


class PartEntry(NamedTuple):
    """One part a configuration lists: its name there, which class, which shared models, its settings."""

    name: str
    part: str  # a registry name, a dotted path or an entry-point name
    models: dict[str, str]  # requirement -> the name of the shared model that fills it
    settings: dict[str, Any]


class FunnelConfig(BaseModel):
    """Every setting of a :class:`funnel.Recommender`.

    Build it with keyword arguments, :meth:`from_dict` or :meth:`from_file`. The
    configuration lists the funnel's parts by name, each with its own settings, and holds
    the settings of the whole fit. Its shape (unknown keys, types, ranges) is checked here, at
    construction; each part's settings are checked by the part's own ``Settings`` class when
    a :class:`funnel.Recommender` is built on it. Every error is a :class:`funnel.ConfigError`.
    Figures behind the defaults are in ``docs/experiments.md``; each part's settings are
    listed in ``docs/configuration.md``.

    A part's entry is its name -> a mapping of its settings, plus two optional keys:
    ``part``, the class (a registry name, a dotted path ``"mypackage.parts:MySource"`` or an
    entry-point name; the entry's name when left out), and ``models``, which shared model
    fills each of its requirements (the model of the same name when left out). A second ALS
    source with other factors is::

        models={"als_64": {"part": "als", "factors": 64}},
        candidates={**DEFAULT_CANDIDATES, "als_64": {"part": "als", "n": 100, "models": {"als": "als_64"}}}

    Parameters
    ----------
    models : dict of str to dict
        Settings of the shared models (``embedder``, ``als``, ``svd``, ``ease``,
        ``log_ease``, ``rp3``, ``listen_times``, ...), by name; a model the parts need and
        this does not list is built with its defaults.
    candidates : dict of str to int or dict
        The stage-one candidate sources, by name, each with its settings, or just how many
        candidates it returns per user (``n``). Built in: ``tags`` (FAISS search of the
        tag/popularity/freshness artist vectors), ``als`` (FAISS search of ALS factors),
        ``ease`` (co-listening), ``friends`` and ``popularity``.
    features : tuple of str, or dict of str to dict
        The stage-two feature groups, in column order: names, or names with settings.
    ranker : str or dict
        The stage-two model: a name (``logistic``: scikit-learn's logistic regression, scores
        are probabilities; ``lightgbm``: LightGBM's LambdaRank, a query per user), or an entry
        with its settings (``{"part": "lightgbm", "n_estimators": 300}``).
    fallback : str
        The shared model whose most popular unheard artists fill a user's top-n list when
        the sources found too few.
    tagged_known : bool
        Artists a listener tagged count as known (with those they played): they are not
        recommended as discoveries unless a call passes ``filter_known=False``.
    recency_half_life_days : float or None
        With listen times in the data, the confidence of a (listener, artist) pair halves
        every this many days between its last listen and the data's latest listen; ``None``
        (the default) weighs every pair by its plays alone. Data without listen times is not
        weighted.
    ranker_holdout : float
        Share of each user's training artists held out as the ranker's labels.
    ranker_labels : {"auto", "temporal", "random"}
        Which of a user's training artists are held out as the ranker's labels: ``temporal``
        the ones started last (the ranker learns what a listener starts next; needs listen
        times), ``random`` a random share (the ranker learns to fill gaps in a history);
        ``auto`` is temporal when the data has listen times and random otherwise.
    ranker_negatives : int
        Negative candidates sampled per user for ranker training (0 keeps all).
    fit_users : int, float or None
        Listeners the user-side models (ALS, BiasedSVD, listener statistics, friends), the
        candidate sources and the ranker learn from: a seeded random sample of this many (an
        integer) or this share of them (a float in (0, 1]); ``None`` (the default) learns
        from all. The artist-side models (popularity, EASE, RP3beta, the artist vectors)
        still count every listener's plays. Every listener stays known and is recommended
        to: those outside the sample are scored from their history as new listeners are
        (fold-in).
    ranker_users : int
        At most this many random users give ranker training examples.
    seed : int
        Seed of every random step.
    show_progress : bool
        tqdm progress bars on long steps.
    n_threads : int
        Cores for implicit's ALS, BLAS and FAISS and for the batches of ``recommend_all`` (0:
        all). With more than one, a fit runs the ranker's side and the serving stages at once,
        each on half of them.
    parallel_fit : {"auto", "process", "thread"}
        Where the serving side of a fit runs while the ranker's side runs here: ``process``
        in a worker process (loky's reusable executor, which stays up between fits and
        holds a copy of the training data while it fits), ``thread`` on a thread of this
        process (the two sides then take turns on the GIL: slower, one copy of the data).
        ``auto`` takes the process unless ``fit_users`` is set or a part's class is defined
        in ``__main__`` or in a function, where another process cannot import it. The
        fitted model is the same either way.
    cache_dir : str or None
        Where trained BiasedSVD embeddings (the ``reusable`` models) and rankers are cached
        between runs.
    reuse_svd, reuse_ranker : bool
        Reuse cached BiasedSVD embeddings / the ranker when trained on the same data,
        settings and feature code.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    candidates: dict[str, int | dict[str, Any]] = Field(default_factory=lambda: dict(DEFAULT_CANDIDATES))
    features: tuple[str, ...] | dict[str, dict[str, Any]] = DEFAULT_FEATURES
    ranker: str | dict[str, Any] = "logistic"
    fallback: str = "popularity"
    tagged_known: bool = True
    recency_half_life_days: float | None = Field(None, gt=0)
    ranker_holdout: float = Field(0.2, gt=0, lt=1)
    ranker_labels: Literal["auto", "temporal", "random"] = "auto"
    ranker_negatives: int = Field(50, ge=0)
    ranker_users: int = Field(20_000, gt=0)
    fit_users: int | float | None = None
    seed: int = Field(0, ge=0)
    show_progress: bool = False
    n_threads: int = Field(0, ge=0)
    parallel_fit: Literal["auto", "process", "thread"] = "auto"
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

    @field_validator("models", "candidates", "features")
    @classmethod
    def _entries(cls, value: Any, info: ValidationInfo) -> Any:
        names = list(value)
        if info.field_name != "models" and not names:
            raise ValueError(f"name at least one part in {info.field_name}")
        if len(set(names)) != len(names):
            raise ValueError(f"{names} name one part twice")
        for name in names:
            if not name or not isinstance(name, str):
                raise ValueError(f"part names must be non-empty strings, got {name!r}")
            entry = value[name] if isinstance(value, dict) else {}
            if isinstance(entry, int) and not isinstance(entry, bool) and entry < 1:
                raise ValueError(f"source {name!r} must return at least 1 candidate, got {entry}; "
                                 "leave a source out of the mapping to disable it")
            if isinstance(entry, dict):
                _check_entry(name, entry)
        return value

    @field_validator("fit_users")
    @classmethod
    def _fit_users(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"a share of listeners is in (0, 1], got {value}; give a count as an integer")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"fit on at least 1 listener, got {value}")
        return value

    @field_validator("ranker")
    @classmethod
    def _ranker_entry(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, dict):
            if not isinstance(value.get("part"), str):
                raise ValueError("a ranker given with settings names its class as 'part' "
                                 "(e.g. {'part': 'lightgbm', 'n_estimators': 300})")
            _check_entry("ranker", value)
        elif not value:
            raise ValueError("name a ranker")
        return value

    def entries(self, section: str) -> list[PartEntry]:
        """The parts of ``section`` (``models``, ``candidates`` or ``features``), in order."""
        value = getattr(self, section)
        if isinstance(value, tuple):
            value = {name: {} for name in value}
        out = []
        for name, entry in value.items():
            entry = {"n": entry} if isinstance(entry, int) else entry
            out.append(PartEntry(name, entry.get("part", name), dict(entry.get("models", {})),
                                 {k: v for k, v in entry.items() if k not in RESERVED}))
        return out

    def ranker_entry(self) -> PartEntry:
        """The ranker's entry."""
        if isinstance(self.ranker, str):
            return PartEntry(self.ranker, self.ranker, {}, {})
        return PartEntry(self.ranker["part"], self.ranker["part"], {},
                         {k: v for k, v in self.ranker.items() if k not in RESERVED})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FunnelConfig:
        """Build a config from a mapping (e.g. a saved model's manifest)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"settings must be a mapping, got {type(values).__name__}")
        values = dict(values)
        if isinstance(values.get("features"), list):  # JSON has no tuples
            values["features"] = tuple(values["features"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FunnelConfig:
        """Read a config written by :meth:`to_file` (or by hand): a JSON object of settings."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"the config file {path} is not JSON ({exc}); write it with FunnelConfig.to_file") \
                from None
        if isinstance(values, dict):
            values.pop("format", None)
        return cls.from_dict(values)

    def to_file(self, path: str | os.PathLike) -> None:
        """Write the settings as JSON (atomically), which :meth:`from_file` reads."""
        from funnel.persistence.files import save_json  # not at the top: funnel.persistence imports this module

        save_json(path, {"format": "funnel-config-1", **self.to_dict()})

    def replace(self, **changes: Any) -> FunnelConfig:
        """A copy with ``changes`` applied, validated again."""
        return FunnelConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """All settings as a plain JSON-serialisable dict."""
        values = self.model_dump()
        if isinstance(values["features"], tuple):
            values["features"] = list(values["features"])
        return values

    def model_settings(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings that shape a trained model (``names`` only, if given), runtime ones excluded."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUNTIME_SETTINGS and (names is None or k in names)}

    def fingerprint(self, names: tuple[str, ...] | None = None) -> str:
        """Hash of :meth:`model_settings` (the order of parts counts: it is the merge and column order)."""
        text = json.dumps(self.model_settings(names), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_entry(name: str, entry: dict[str, Any]) -> None:
    part, models = entry.get("part", name), entry.get("models", {})
    if not isinstance(part, str) or not part:
        raise ValueError(f"{name!r}: 'part' names a class (a registry name, 'package.module:Class' or an "
                         f"entry point), got {part!r}")
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in models.items()):
        raise ValueError(f"{name!r}: 'models' maps a requirement to a shared model's name "
                         f"(e.g. {{'als': 'als_64'}}), got {models!r}")


def settings_of(settings_class: type[BaseModel], values: Mapping[str, Any], where: str) -> Any:
    """``settings_class`` built from ``values``: a part's settings, or a ConfigError naming ``where``."""
    try:
        return settings_class(**values)
    except ValidationError as exc:
        valid = sorted(settings_class.model_fields)
        raise ConfigError(f"{where}: {describe_errors(exc, valid)}") from None
    except TypeError as exc:  # keys that are not strings
        raise ConfigError(f"{where}: {exc}") from None


def describe_errors(exc: ValidationError, valid: list[str] | None = None) -> str:
    """One line per invalid setting: which, what it was given, and what it must be."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        if error.get("type") == "extra_forbidden":
            known = sorted(FunnelConfig.model_fields) if valid is None else valid
            hint = "" if valid is not None else (" (a part's own settings go in its entry, e.g. "
                                                 "models={'svd': {'factors': 16}}: see docs/configuration.md)")
            lines.append(f"unknown setting {where!r}; valid settings are {known}{hint}")
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
