"""A fitted :class:`funnel.Recommender` as the states and manifest of a saved model, and back.

:func:`model_states` gives what :func:`funnel.persistence.model.write_model` writes;
:func:`restore` rebuilds a model from what :func:`~funnel.persistence.model.read_model`
reads, importing each part's saved class and checking that the pieces fit together.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from funnel.config import FunnelConfig
from funnel.errors import ArtifactError, ConfigError
from funnel.persistence.model import check_model_arrays, read_model, string_array
from funnel.protocols import PartState
from funnel.sparse import csr_from_arrays, csr_to_arrays
from funnel.stages import Stages

if TYPE_CHECKING:
    from funnel.recommender import Recommender


def model_states(model: Recommender, artist_side_only: bool) -> tuple[dict[str, PartState], dict[str, Any]]:
    """Every part's state and the manifest entries of ``model`` (see :meth:`Recommender.save`)."""
    states = model.stages_.get_state(artist_side_only)
    states["ranker"] = model.ranker_.get_state()
    users = model.user_ids_[:0] if artist_side_only else model.user_ids_
    history = model.history_[:0] if artist_side_only else model.history_
    tagged = None if artist_side_only else model.tagged_
    rows = None if artist_side_only else model.model_rows_
    states["data"] = PartState({"user_ids": users, "artist_ids": model.artist_ids_,
                                "artist_names": string_array(model.artist_names_),
                                **csr_to_arrays(sp.csr_matrix(history), "history/"),
                                **(csr_to_arrays(tagged, "tagged/") if tagged is not None else {}),
                                **({"model_rows": rows} if rows is not None else {})})
    return states, {
        "data_fingerprint": model.fingerprint_, "config": model.config_.to_dict(),
        "feature_names": model.feature_names_, "sources": model.stages_.source_names,
        "classes": model.stages_.classes(),
        "n_users": len(users), "n_artists": len(model.artist_ids_),
        "artist_side_only": bool(artist_side_only or model.artist_side_only_),
        "ranker_candidate_recall": model.ranker_candidate_recall_}


def restore(model: Recommender, path: Path, mmap: bool, runtime: dict[str, Any]) -> None:
    """Fill the unfitted ``model`` with the model saved in ``path`` (see :meth:`Recommender.load`).

    Raises
    ------
    ArtifactError
        What is saved is missing, damaged, from another format or program, or names parts
        this environment cannot build.
    ConfigError
        A bad ``runtime`` value.
    """
    unknown = sorted(set(runtime) - {"n_threads", "show_progress"})
    if unknown:
        raise ConfigError(f"load() takes only runtime settings (n_threads, show_progress), not {unknown}: "
                          "what a model learned is fixed when it is fitted")
    manifest, states = read_model(path, mmap=mmap)  # its shape is checked there: only values are left
    try:
        saved = FunnelConfig.from_dict(manifest["config"])
    except ConfigError as exc:
        raise ArtifactError(f"{path} holds settings this funnel cannot use ({exc}); retrain and save it "
                            "again") from exc
    config = saved.replace(**runtime)  # a bad runtime value stays the caller's ConfigError
    check_model_arrays(path, manifest, states)
    try:
        model.config, model.overrides = config, {}
        model.config_ = config
        sources = list(manifest["sources"])
        if not set(sources) <= set(config.candidates):
            raise ArtifactError(f"{path} lists sources {sources} its settings do not all name; the save is "
                                "damaged or from another program: retrain and save it again")
        model.stages_ = Stages.from_state(config, states, sources, manifest["classes"])
        model.ranker_ = model.stages_.new_ranker().set_state(states["ranker"])
        model.feature_names_ = model.stages_.feature_names_
        if model.feature_names_ != list(manifest["feature_names"]):
            raise ArtifactError(f"{path} lists features {manifest['feature_names']}, but its settings give "
                                f"{model.feature_names_}; retrain and save it again")
        model.fingerprint_ = str(manifest["data_fingerprint"])
        model.ranker_candidate_recall_ = float(manifest["ranker_candidate_recall"])
        data = states["data"].arrays
        model.user_ids_ = data["user_ids"]
        model.artist_ids_ = data["artist_ids"]
        model.artist_names_ = data["artist_names"]
        model.history_ = csr_from_arrays(data, "history/")
        model.tagged_ = csr_from_arrays(data, "tagged/") if "tagged/data" in data else None
        model.artist_side_only_ = bool(manifest["artist_side_only"])
        model.model_rows_ = np.asarray(data["model_rows"], np.int64) if "model_rows" in data else None
    except KeyError as exc:
        raise ArtifactError(f"{path} lacks entry {exc}; the save is incomplete or from another program") from exc
    except ConfigError as exc:  # a part's class: its package not installed here, or settings it refuses
        raise ArtifactError(f"{path} holds parts this environment cannot build: {exc}") from exc
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"{path} holds parts this funnel cannot rebuild ({type(exc).__name__}: {exc}); "
                            "the save is damaged or from another program: retrain and save it again") from exc
    shape = (len(model.user_ids_), len(model.artist_ids_))
    for name, matrix in (("history", model.history_), ("tagged", model.tagged_)):
        if matrix is not None and matrix.shape != shape:
            raise ArtifactError(f"{path} holds a {name} matrix of shape {matrix.shape} for {shape[0]} users and "
                                f"{shape[1]} artists; retrain and save it again")
    rows = model.model_rows_
    if rows is not None and (rows.shape != (shape[0],) or not (-1 <= rows.min(initial=-1) <= rows.max(initial=-1)
                                                                 < shape[0])):
        raise ArtifactError(f"{path} maps its {shape[0]} users to model rows with an array of shape {rows.shape} "
                            "or rows outside -1..users-1; retrain and save it again")
    try:  # one row of zeros: a ranker of other features than the stages give, or one that scores NaN
        finite = np.isfinite(model.ranker_.score(np.zeros((1, len(model.feature_names_)), np.float32))).all()
    except Exception as exc:  # a ranker's library raises errors of its own (LightGBMError)
        raise ArtifactError(f"{path} holds a ranker that cannot score its {len(model.feature_names_)} features "
                            f"({type(exc).__name__}: {exc}); retrain and save it again") from exc
    if not finite:
        raise ArtifactError(f"{path} holds a ranker whose scores are not finite numbers; retrain and save it again")
