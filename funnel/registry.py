"""Registries of the parts a configuration names: shared models, candidate sources, feature groups, rankers.

A configuration names a part's class in one of three ways, tried in this order:

1. a registry name (``"als"``): the built-in parts, and classes added with :meth:`Registry.add`;
2. a dotted path (``"mypackage.parts:MySource"``): imported on use, so a class of one's own
   needs no registration;
3. an entry-point name: an installed package that declares
   ``[project.entry-points."funnel.sources"] my_source = "mypackage.parts:MySource"``
   (groups ``funnel.models``, ``funnel.sources``, ``funnel.features``, ``funnel.rankers``).

A saved model records each part's dotted path (:func:`class_path`), so loading, serving and
scoring import the classes it was fitted with, in any process.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from funnel.errors import ConfigError

T = TypeVar("T")


def class_path(cls: type) -> str:
    """``"module:QualifiedName"`` of a class, which :func:`import_class` imports back."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str, kind: str) -> Any:
    """The class at ``path`` (``"module:Name"``, or ``"module.Name"``), or a ConfigError saying why not."""
    module_name, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(f"{kind} {path!r} is neither a registered name nor a dotted path like "
                          "'mypackage.parts:MyClass'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} of {kind} {path!r} ({exc}); install the "
                          "package that defines it in this environment (and on Spark executors)") from None
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no {attribute!r} (the {kind} {path!r})") from None
    if not isinstance(target, type):
        raise ConfigError(f"{kind} {path!r} is a {type(target).__name__}, not a class")
    return target


class Registry(Generic[T]):
    """Classes by name, for building the parts a :class:`funnel.FunnelConfig` names.

    Parameters
    ----------
    kind : str
        What the registry holds, for messages ("candidate source").
    setting : str
        The setting that names its entries, for messages ("candidates").
    group : str
        The entry-point group searched for names not registered here ("funnel.sources").
    """

    def __init__(self, kind: str, setting: str, group: str) -> None:
        self.kind = kind
        self.setting = setting
        self.group = group
        self._classes: dict[str, type[T]] = {}

    def add(self, name: str, cls: type[T]) -> type[T]:
        """Register ``cls`` under ``name`` (which it must also carry as ``cls.name``)."""
        if getattr(cls, "name", name) != name:
            raise ConfigError(f"{self.kind} {cls.__name__} has name {getattr(cls, 'name', None)!r}, "
                              f"registered as {name!r}")
        if name in self._classes and self._classes[name] is not cls:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered "
                              f"({self._classes[name].__name__})")
        self._classes[name] = cls
        return cls

    def resolve(self, reference: str) -> type[T]:
        """The class a configuration names: a registered name, a dotted path or an entry point.

        Raises
        ------
        ConfigError
            Nothing goes by that name, or its module cannot be imported.
        """
        if reference in self._classes:
            return self._classes[reference]
        if ":" in reference or "." in reference:
            return import_class(reference, self.kind)
        found = entry_points(group=self.group, name=reference)
        if found:
            try:
                cls = next(iter(found)).load()
            except Exception as exc:  # an installed plugin's own import error
                raise ConfigError(f"the {self.kind} {reference!r} of entry-point group {self.group!r} cannot be "
                                  f"loaded ({type(exc).__name__}: {exc})") from None
            return cls
        raise ConfigError(f"unknown {self.kind} {reference!r} in setting {self.setting!r}; registered: "
                          f"{sorted(self._classes)}. A class of one's own is named by its dotted path "
                          f"('mypackage.parts:MyClass') or an entry point of group {self.group!r}")

    def get(self, name: str) -> type[T]:
        """The class registered under ``name`` (registry names only)."""
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; registered: {sorted(self._classes)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)
