"""funnel: a two-stage (candidate generation + ranking) music artist recommender."""

__version__ = "0.2.0"

from funnel.config import FunnelConfig  # noqa: E402 - the version first: saved models record it
from funnel.data import Dataset, load_lastfm, split  # noqa: E402
from funnel.data.events import read_events  # noqa: E402
from funnel.errors import ArtifactError, ConfigError, DataError, FunnelError, NotFittedError, UnknownUserError  # noqa: E402
from funnel.recommender import Recommender  # noqa: E402

__all__ = ["ArtifactError", "ConfigError", "DataError", "Dataset", "FunnelConfig", "FunnelError",
           "NotFittedError", "Recommender", "UnknownUserError", "load_lastfm", "read_events", "split"]
