"""funnel: a two-stage (candidate generation + ranking) music artist recommender."""

from funnel.config import FunnelConfig
from funnel.data import Dataset, load_lastfm, split
from funnel.data.events import read_events
from funnel.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    EmptyDataError,
    FunnelError,
    NotFittedError,
    UnknownUserError,
)
from funnel.recommender import Recommender
from funnel.tuning import TuneResult, tune
from funnel.version import __version__

__all__ = ["__version__", "ArtifactError", "ConfigError", "DataError", "Dataset", "EmptyDataError", "FunnelConfig",
           "FunnelError", "NotFittedError", "Recommender", "TuneResult", "UnknownUserError", "load_lastfm",
           "read_events", "split", "tune"]
