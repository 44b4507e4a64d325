"""A cache of trained parts (BiasedSVD embeddings, ranker weights) keyed by data and settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from funnel.errors import ArtifactError
from funnel.persistence.files import load_json, load_npz, read_verified, save_json, save_npz
from funnel.protocols import PartState

logger = logging.getLogger("funnel")

CACHE_FORMAT = 2
_FILE = "file/"  # a part's files are kept in the cache's npz as uint8 arrays of their bytes


class ArtifactCache:
    """Stores arrays under ``<directory>/cache/<kind>.npz`` with a JSON manifest beside them.

    One entry per kind is kept: the latest. :meth:`load` returns it only when the data
    fingerprint and settings (which include the feature code version) recorded with it
    match, and logs which differs otherwise.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory) / "cache"

    def _paths(self, kind: str) -> tuple[Path, Path]:
        return self.directory / f"{kind}.npz", self.directory / f"{kind}.json"

    def load(self, kind: str, data_fingerprint: str, settings: dict[str, Any]) -> PartState | None:
        """The cached state of ``kind`` when it matches data and settings, else ``None``."""
        arrays_path, meta_path = self._paths(kind)
        if not meta_path.exists():
            logger.info("no saved %s in %s; training it", kind, self.directory)
            return None
        try:
            meta = load_json(meta_path)
            if meta.get("format") != CACHE_FORMAT:
                logger.info("saved %s has cache format %s (expected %s); retraining",
                            kind, meta.get("format"), CACHE_FORMAT)
                return None
            if meta.get("data_fingerprint") != data_fingerprint:
                logger.info("saved %s was trained on other data (fingerprint %s, now %s); retraining",
                            kind, meta.get("data_fingerprint"), data_fingerprint)
                return None
            saved = meta.get("settings")
            if saved != settings:
                saved = saved if isinstance(saved, dict) else {}
                changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
                logger.info("saved %s was trained with other settings (%s); retraining", kind,
                            ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed))
                return None
            arrays = load_npz(read_verified(arrays_path, str(meta.get("sha256")), f"saved {kind}"))
        except (ArtifactError, OSError) as exc:
            logger.warning("cannot reuse saved %s (%s); retraining", kind, exc)
            return None
        logger.info("reusing saved %s from %s", kind, arrays_path)
        files = {k[len(_FILE):]: v.tobytes() for k, v in arrays.items() if k.startswith(_FILE)}
        return PartState({k: v for k, v in arrays.items() if not k.startswith(_FILE)}, files)

    def save(self, kind: str, data_fingerprint: str, settings: dict[str, Any], state: PartState) -> None:
        """Store ``state`` as the entry of ``kind`` (arrays first, then the manifest)."""
        arrays_path, meta_path = self._paths(kind)
        arrays = {**state.arrays, **{_FILE + k: np.frombuffer(v, np.uint8) for k, v in state.files.items()}}
        digest = save_npz(arrays_path, arrays)
        save_json(meta_path, {"format": CACHE_FORMAT, "kind": kind, "data_fingerprint": data_fingerprint,
                              "settings": settings, "sha256": digest})
