"""Registries of the parts a configuration names: candidate sources, feature groups, rankers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from funnel.errors import ConfigError


class Registry:
    """Classes by name, for building the parts a :class:`funnel.FunnelConfig` names.

    Parameters
    ----------
    kind : str
        What the registry holds, for messages ("candidate source").
    setting : str
        The setting that names its entries, for messages ("candidates").
    """

    def __init__(self, kind: str, setting: str) -> None:
        self.kind = kind
        self.setting = setting
        self._classes: dict[str, Any] = {}

    def add(self, name: str, cls: Any) -> Any:
        """Register ``cls`` under ``name`` (which it must also carry as ``cls.name``)."""
        if getattr(cls, "name", name) != name:
            raise ConfigError(f"{self.kind} {cls.__name__} has name {cls.name!r}, registered as {name!r}")
        if name in self._classes and self._classes[name] is not cls:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered "
                              f"({self._classes[name].__name__})")
        self._classes[name] = cls
        return cls

    def check(self, name: str) -> None:
        """Raise ``ValueError`` (turned into a ConfigError by the config) for an unknown name."""
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r} in setting {self.setting!r}; "
                             f"registered: {sorted(self._classes)} (a class of your own is registered "
                             "by importing the module that adds it, before building or loading a model)")

    def get(self, name: str) -> Any:
        """The class registered under ``name``."""
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {sorted(self._classes)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)
