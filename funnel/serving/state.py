"""The served model: loaded, held on ``app.state``, and swapped for a checked new one on reload."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from funnel.data.ids import id_kind
from funnel.errors import ConfigError
from funnel.persistence.files import load_json
from funnel.persistence.model import FORMAT_VERSION, model_directory
from funnel.recommender import Recommender
from funnel.serving.schemas import DEFAULT_N, KIND_WORDS
from funnel.serving.settings import ResolvedSettings
from funnel.version import __version__

logger = logging.getLogger("funnel")


@dataclass(frozen=True)
class Served:
    """The model being served, its directory (None: given as an object) and its manifest's provenance."""

    model: Recommender
    directory: str | None
    provenance: dict[str, Any]


def load(directory: str) -> Recommender:
    """The model saved in ``directory``, memory-mapped, scoring each call on its calling thread."""
    # one thread per call: the server's threads, each on a request, are the parallelism
    model = Recommender.load(directory, mmap=True, n_threads=1, show_progress=False)
    logger.info("loaded model from %s (%d users with %s ids, %d artists with %s ids)", directory,
                len(model.user_ids_), id_kind(model.user_ids_), len(model.artist_ids_), id_kind(model.artist_ids_))
    return model


def provenance(directory: str | None) -> dict[str, Any]:
    """What the manifest says of the training run: when it was saved, its format and library versions."""
    if directory is None:
        return {}
    manifest = load_json(os.path.join(directory, "manifest.json"))
    return {key: manifest[key] for key in ("saved_at", "format_version", "versions") if key in manifest}


class Service:
    """What one application serves: the model (swapped whole on reload), its id kinds and the settings.

    A request reads :attr:`current` once, at its start, so a reload during the request
    leaves it on the model it started with; there is no lock around scoring.

    Parameters
    ----------
    model : Recommender
        The fitted model to serve.
    directory : str, optional
        Its directory (None: given as an object, which cannot be reloaded without one).
    settings : ResolvedSettings
        The service's settings, ``max_n`` within the catalogue.
    registry : prometheus_client.CollectorRegistry
        Where the served model's provenance is published (``funnel_model``).
    """

    def __init__(self, model: Recommender, directory: str | None, settings: ResolvedSettings, registry: Any) -> None:
        from prometheus_client import Info

        self.settings = settings
        self.user_kind, self.artist_kind = id_kind(model.user_ids_), id_kind(model.artist_ids_)
        self._info = Info("funnel_model", "The served model's provenance", registry=registry)
        self._reloading = threading.Lock()  # one reload at a time; requests never wait for it
        self.current = Served(model, directory, provenance(directory))
        self._describe()

    @property
    def model(self) -> Recommender:
        """The model served now."""
        return self.current.model

    def _describe(self) -> None:
        served = self.current
        self._info.info({"format_version": str(FORMAT_VERSION), "funnel_version": __version__,
                         "data_fingerprint": served.model.fingerprint_,
                         "n_artists": str(len(served.model.artist_ids_)),
                         "saved_at": str(served.provenance.get("saved_at", ""))})

    def reload(self, directory: str | None = None) -> dict[str, Any]:
        """Load ``directory`` (default: the served one) beside the served model, check it, then swap it in.

        Raises
        ------
        ConfigError
            Nothing to reload, ids of another kind, a catalogue too small for ``max_n``, or a
            model that cannot serve what the served one serves; the old model stays served.
        ArtifactError
            The directory holds no loadable model; the old model stays served.
        """
        max_n = self.settings.max_n
        with self._reloading:
            old = self.current
            target = directory or old.directory
            if target is None:
                raise ConfigError("this service was given a model object, not a directory: name one (model_dir)")
            target = os.fspath(model_directory(target))
            new = load(target)
            kinds = (id_kind(new.user_ids_), id_kind(new.artist_ids_))
            if kinds != (self.user_kind, self.artist_kind):
                raise ConfigError(f"the model in {target} has {KIND_WORDS[kinds[0]]} user and {KIND_WORDS[kinds[1]]} "
                                  f"artist ids, the served one {KIND_WORDS[self.user_kind]} and "
                                  f"{KIND_WORDS[self.artist_kind]}: requests are typed by them, so restart the "
                                  "service to serve it")
            if len(new.artist_ids_) - 1 < max_n:
                raise ConfigError(f"the model in {target} has {len(new.artist_ids_)} artists, too few for max_n "
                                  f"{max_n}: restart the service with a lower --max-n")
            smoke_test(new, old.model, target, min(DEFAULT_N, max_n))  # before anyone depends on it
            self.current = Served(new, target, provenance(target))
            self._describe()
            logger.info("now serving %s (data fingerprint %s, was %s)", target, new.fingerprint_,
                        old.model.fingerprint_)
            return {"status": "reloaded", "model_dir": target, "data_fingerprint": new.fingerprint_,
                    "previous_data_fingerprint": old.model.fingerprint_}


def smoke_test(new: Recommender, old: Recommender, target: str, n: int) -> None:
    """Score a history, and a few users when the served model answers for users: all scores finite.

    Raises
    ------
    ConfigError
        The new model cannot serve what the served one serves (users, for a model saved
        artist-side only) or scores a non-finite value.
    """
    frames = [new.recommend_for_history([new.artist_ids_[0]], n=n)]
    if len(old.user_ids_):
        if not len(new.user_ids_):
            raise ConfigError(f"the model in {target} was saved artist-side only and knows no user, while the "
                              "served one answers POST /recommend for its users: save a full model, or "
                              "restart the service to serve this one")
        picked = new.user_ids_[np.unique(np.linspace(0, len(new.user_ids_) - 1, 3).astype(np.int64))]
        frames.append(new.recommend(users=picked, n=n))
    if not all(np.isfinite(frame["score"].to_numpy(np.float64)).all() for frame in frames):
        raise ConfigError(f"the model in {target} scores non-finite values (NaN or infinity): it is corrupt or "
                          "was trained on broken data; retrain it")
