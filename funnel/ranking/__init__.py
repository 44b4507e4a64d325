"""Stage two, ranking: feature groups over (user, candidate) pairs and the rankers that score them.

``FEATURES`` and ``RANKERS`` map the names the ``features`` and ``ranker`` settings use to
classes; registering another class makes it available to every configuration
(``docs/extending.md``).
"""

from funnel.protocols import FeatureGroup, Ranker
from funnel.ranking.features import (
    ALSFeature,
    ArtistFeature,
    EASEFeature,
    FriendsFeature,
    LogEASEFeature,
    ModelFeature,
    RecencyFeature,
    RP3Feature,
    SourceFeature,
    SVDFeature,
    TagFeature,
    UserFeature,
    pair_scores,
)
from funnel.ranking.lambdarank import LambdaRankRanker
from funnel.ranking.logistic import LogisticRanker
from funnel.registry import Registry

FEATURES: Registry[FeatureGroup] = Registry("feature group", "features", "funnel.features")
for _group in (SVDFeature, ALSFeature, TagFeature, EASEFeature, FriendsFeature, RP3Feature, LogEASEFeature,
               SourceFeature, ArtistFeature, UserFeature, RecencyFeature):
    FEATURES.add(_group.name, _group)

RANKERS: Registry[Ranker] = Registry("ranker", "ranker", "funnel.rankers")
RANKERS.add("logistic", LogisticRanker)
RANKERS.add("lightgbm", LambdaRankRanker)

__all__ = ["FEATURES", "FeatureGroup", "LambdaRankRanker", "LogisticRanker", "ModelFeature", "RANKERS", "Ranker",
           "pair_scores"]
