"""The service's settings: every one and its default in one place, read from ``FUNNEL_*`` variables.

:func:`funnel.serving.create_app`, :func:`funnel.serving.serve` and ``main.py serve`` all
take their defaults from :class:`ServiceSettings`; an argument given to them wins over its
environment variable, which wins over the default.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from funnel.errors import ConfigError
from funnel.serving.auth import key_file_setting

ENV_PREFIX = "FUNNEL_"
QUEUE_PER_THREAD = 4  # default requests admitted to wait, per scoring thread
COST_PER_HISTORY = 4  # default max_cost, in histories of max_history artists
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

Count = Annotated[StrictInt, Field(ge=1)]
Seconds = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


class ServiceSettings(BaseModel):
    """The settings of one service; each field's variable is ``FUNNEL_`` and its name in capitals.

    Parameters
    ----------
    model_dir : str, optional
        A saved model's directory (or a ``main.py --artifacts`` one, whose ``model/`` is used).
    max_n : int
        Largest ``n`` a request may ask for (capped at the catalogue size).
    max_history : int
        Most artists a history may hold (longer ones are a 422): a request's cost grows with it.
    max_batch : int
        Most users, and most histories, in one ``POST /recommend/batch``.
    max_cost : int, optional
        Most artist entries one request may make the model read: the artists of its histories
        plus the training histories of its known users (default ``4 * max_history``).
    threads : int, optional
        Requests scored at once, each on a thread (default: the usable cores, at least 2).
    queue : int, optional
        Requests admitted to wait for a scoring thread (default ``4 * threads``).
    time_budget : float
        Seconds a request may take; past it the request answers 503 with ``Retry-After``.
    cors_origins : tuple of str
        Origins a browser may call the service from (``FUNNEL_CORS_ORIGINS``: comma-separated).
    api_key_file : str, optional
        A file of API key digests (:class:`funnel.serving.APIKeys`); None: no access control.
    max_body_bytes : int
        Larger request bodies get 413.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str | None = None
    max_n: Count = 100
    max_history: Count = 5_000
    max_batch: Count = 100
    max_cost: Count | None = None
    threads: Count | None = None
    queue: Annotated[StrictInt, Field(ge=0)] | None = None
    time_budget: Seconds = 10.0
    cors_origins: tuple[str, ...] = ()
    api_key_file: str | None = None
    max_body_bytes: Count = 1 << 20

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        """The settings of ``overrides`` (None: not given), else of ``FUNNEL_*`` variables, else the defaults.

        Raises
        ------
        ConfigError
            A variable or an override is not a valid value (the message names which, and
            what it must be), or ``FUNNEL_API_KEY_FILE`` is set but blank.
        """
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown service setting(s) {', '.join(unknown)}; the settings are "
                              f"{', '.join(cls.model_fields)}")
        values: dict[str, Any] = {}
        from_env: dict[str, str] = {}
        for name in cls.model_fields:
            if overrides.get(name) is not None:
                value = overrides[name]
                values[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
            elif name == "api_key_file":  # read apart: a blank variable is an error, not open routes
                values[name] = key_file_setting(None)
            elif os.environ.get(env_name(name)):
                from_env[name] = os.environ[env_name(name)]
                values[name] = _parse(name, from_env[name])
        if isinstance(values.get("cors_origins"), (list, tuple)):
            values["cors_origins"] = tuple(values["cors_origins"])
        try:
            return cls(**values)
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            if name in from_env:
                raise ConfigError(f"{env_name(name)}={from_env[name]!r} must be {_requirement(name)}") from None
            raise ConfigError(f"{name} must be {_requirement(name)}, not {values.get(name)!r}") from None

    def resolved(self) -> ResolvedSettings:
        """These settings with the defaults that depend on others filled in (max_cost, threads, queue)."""
        # two threads at least: on one core a cheap request still need not wait for a costly one to end
        threads = self.threads if self.threads is not None else max(2, usable_cores())
        return ResolvedSettings(**{
            **dict(self), "threads": threads,
            "max_cost": self.max_cost if self.max_cost is not None else COST_PER_HISTORY * self.max_history,
            "queue": self.queue if self.queue is not None else QUEUE_PER_THREAD * threads})

    def to_env(self) -> dict[str, str]:
        """The variables that give these settings to another process (a worker): the ones set."""
        return {env_name(name): ",".join(value) if isinstance(value, tuple) else str(value)
                for name, value in self if value is not None}


class ResolvedSettings(ServiceSettings):
    """Settings a service runs with: every default that depends on another is filled in."""

    max_cost: Count
    threads: Count
    queue: Annotated[StrictInt, Field(ge=0)]


def env_name(name: str) -> str:
    """The environment variable of setting ``name``."""
    return ENV_PREFIX + name.upper()


def _parse(name: str, text: str) -> Any:
    """A variable's text as the value of setting ``name``: ConfigError naming the variable if it is none."""
    kind = _kind(name)
    if kind is str:
        return text
    if kind is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{env_name(name)}={text!r} must be {_requirement(name)}") from None


def _kind(name: str) -> type:
    """The Python type of setting ``name``'s values."""
    if name == "cors_origins":
        return tuple
    if name in ("model_dir", "api_key_file"):
        return str
    return float if name == "time_budget" else int


def _requirement(name: str) -> str:
    """What a value of setting ``name`` must be, in words."""
    if _kind(name) is float:
        return "a number of seconds above 0"
    if _kind(name) is int:
        return f"a whole number of at least {int(name != 'queue')}"
    return "a list of origins" if _kind(name) is tuple else "text"


DEFAULTS = ServiceSettings()
