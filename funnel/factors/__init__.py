"""Interaction embeddings shared by both stages: ALS (implicit) and BiasedSVD (surprise)."""

from funnel.factors.als import ALSFactors, confidence
from funnel.factors.ease import EASE
from funnel.factors.knn import UserKNN
from funnel.factors.rp3 import RP3beta
from funnel.factors.svd import BiasedSVDFactors, plays_to_ratings

__all__ = ["ALSFactors", "EASE", "RP3beta", "UserKNN", "BiasedSVDFactors", "confidence", "plays_to_ratings"]
