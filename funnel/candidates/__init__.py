"""Stage one, candidate generation: artist embeddings, FAISS indexes, candidate sources."""

from funnel.candidates.base import CandidateSource, drop_seen
from funnel.candidates.embeddings import ArtistEmbedder, artist_statistics
from funnel.candidates.merge import CandidateSet, merge_candidates
from funnel.candidates.sources import (ALSSource, EASESource, FriendsSource, PopularitySource,
                                      TagSource)

__all__ = ["ALSSource", "EASESource", "FriendsSource", "ArtistEmbedder", "CandidateSet", "CandidateSource", "PopularitySource",
           "TagSource", "artist_statistics", "drop_seen", "merge_candidates"]
