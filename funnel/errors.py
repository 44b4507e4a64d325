"""The exception hierarchy of funnel: every error the library raises on purpose."""

from __future__ import annotations


def shorten(text: str, limit: int = 40) -> str:
    """``text`` cut at ``limit`` characters: a message names an input, never echoes much of it."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class FunnelError(Exception):
    """Base class of every error funnel raises on purpose."""


class DataError(FunnelError, ValueError):
    """Input data is missing, malformed or inconsistent."""


class EmptyDataError(DataError):
    """The input holds no rows at all (an empty event log or frame)."""


class ConfigError(FunnelError, ValueError):
    """A setting is unknown or outside its valid range."""


class ArtifactError(FunnelError):
    """A saved model or cache entry is missing, corrupt, or does not match."""


class NotFittedError(FunnelError, AttributeError):
    """A model was used before ``fit`` (or ``load``)."""


class UnknownUserError(FunnelError, KeyError):
    """A user id is not in the training data."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
