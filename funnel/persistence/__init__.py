"""Persistence: atomic writes, npz/JSON files, the saved-model format, and the cache of trained parts."""

from funnel.persistence.cache import ArtifactCache
from funnel.persistence.files import (
                                      atomic_write,
                                      load_json,
                                      load_npz,
                                      npz_bytes,
                                      read_verified,
                                      save_json,
                                      save_npz,
                                      sha256_file,
)

__all__ = ["ArtifactCache", "atomic_write", "load_json", "load_npz", "npz_bytes", "read_verified", "save_json",
           "save_npz", "sha256_file"]
