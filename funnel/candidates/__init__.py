"""Stage one, candidate generation: sources of scored artists per user, merged into one set.

``SOURCES`` maps the names the ``candidates`` setting uses to source classes; registering
another class there makes it available to every configuration (``docs/extending.md``).
"""

from funnel.candidates.base import drop_seen, top_k_ordered, top_k_unseen
from funnel.candidates.merge import CandidateSet, merge_candidates
from funnel.candidates.sources import (
    ALSSource,
    EASESource,
    FriendsSource,
    IndexSource,
    ModelSource,
    PopularitySource,
    TagSource,
)
from funnel.protocols import CandidateSource
from funnel.registry import Registry

SOURCES: Registry[CandidateSource] = Registry("candidate source", "candidates", "funnel.sources")
SOURCES.add("tags", TagSource)
SOURCES.add("als", ALSSource)
SOURCES.add("ease", EASESource)
SOURCES.add("friends", FriendsSource)
SOURCES.add("popularity", PopularitySource)

__all__ = ["ALSSource", "CandidateSet", "CandidateSource", "EASESource", "FriendsSource", "IndexSource", "ModelSource",
           "PopularitySource", "SOURCES", "TagSource", "drop_seen", "merge_candidates", "top_k_ordered",
           "top_k_unseen"]
