"""Data: loading Last.fm or pandas frames into a :class:`Dataset`, and splitting it."""

from funnel.data.dataset import Dataset
from funnel.data.lastfm import load_lastfm, resolve_data_path

__all__ = ["Dataset", "load_lastfm", "resolve_data_path"]
