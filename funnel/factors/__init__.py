"""The models both stages share, fitted once per dataset: factor models, item-item models,
artist embeddings, friends' listening and statistics.

A model follows :class:`funnel.protocols.Model`: its own ``Settings``,
``from_config(settings, context)``, ``fit(dataset)`` and ``get_state`` / ``set_state``;
candidate sources and feature groups name the models they read in their ``requires``, and
:class:`funnel.stages.Stages` fits each needed model once.
"""

from funnel.factors.als import ALSFactors, confidence
from funnel.factors.ease import EASE, LogEASE
from funnel.factors.embeddings import ArtistEmbedder, artist_statistics
from funnel.factors.recency import ListenTimes
from funnel.factors.rp3 import RP3beta
from funnel.factors.social import FriendListening
from funnel.factors.statistics import PopularityChart, UserStatistics
from funnel.factors.svd import BiasedSVDFactors, plays_to_ratings
from funnel.protocols import Model
from funnel.registry import Registry

MODELS: Registry[Model] = Registry("shared model", "models", "funnel.models")
for _model in (ArtistEmbedder, ALSFactors, BiasedSVDFactors, EASE, LogEASE, RP3beta, FriendListening,
               PopularityChart, UserStatistics, ListenTimes):
    MODELS.add(_model.name, _model)

__all__ = ["ALSFactors", "ArtistEmbedder", "BiasedSVDFactors", "EASE", "FriendListening", "ListenTimes", "LogEASE",
           "MODELS",
           "PopularityChart", "RP3beta", "UserStatistics", "artist_statistics", "confidence", "plays_to_ratings"]
