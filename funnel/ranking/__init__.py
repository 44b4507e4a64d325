"""Stage two, ranking: per-pair features and the logistic ranker."""

from funnel.ranking.features import user_statistics
from funnel.ranking.logistic import LogisticRanker

__all__ = ["LogisticRanker", "user_statistics"]
