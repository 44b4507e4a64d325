"""Interaction embeddings shared by both stages: ALS (implicit) and BiasedSVD (surprise)."""

from funnel.factors.als import ALSFactors, confidence
from funnel.factors.ease import EASE
from funnel.factors.svd import BiasedSVDFactors, plays_to_ratings

__all__ = ["ALSFactors", "EASE", "BiasedSVDFactors", "confidence", "plays_to_ratings"]
