"""funnel: a two-stage (candidate generation + ranking) music artist recommender."""

from funnel.config import FunnelConfig
from funnel.data import Dataset, load_lastfm
from funnel.data import split
from funnel.errors import (ArtifactError, ConfigError, DataError, FunnelError, NotFittedError,
                           UnknownUserError)
from funnel.recommender import Recommender

__version__ = "0.1.0"

__all__ = ["ArtifactError", "ConfigError", "DataError", "Dataset", "FunnelConfig", "FunnelError",
           "NotFittedError", "Recommender", "UnknownUserError", "load_lastfm", "split"]
