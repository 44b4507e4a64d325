"""Why an artist was recommended: its stage-one sources, close history artists, ranker features."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnel.batch import Batch
from funnel.candidates import CandidateSet
from funnel.protocols import ExplanationDriver, FriendsEvidence, ReasonGiver
from funnel.ranking.features import rowwise_dot, source_columns
from funnel.sparse import top_n_per_row

if TYPE_CHECKING:
    from funnel.recommender import Recommender
    from funnel.stages import Stages

TRIPLES_PER_CHUNK = 1 << 15
_INDEXED = re.compile(r"_\d+$")


def found_by(ranks: dict[str, np.ndarray], n_candidates: dict[str, int]) -> list[dict[str, int]]:
    """Per pair, the sources that retrieved it and the rank each gave (1 = best)."""
    found = {name: ranks[name] <= n_candidates[name] for name in n_candidates}
    n_pairs = len(next(iter(ranks.values()))) if ranks else 0
    return [{name: int(ranks[name][p]) for name in n_candidates if found[name][p]} for p in range(n_pairs)]


def closest_history(vectors: np.ndarray, history: sp.csr_matrix, rows: np.ndarray, items: np.ndarray,
                    k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` history artists most similar (cosine of ``vectors``) to each pair's artist.

    Returns flat ``(pair, history_artist, similarity)`` arrays sorted by pair, best first;
    only positive similarities are kept, so a pair may have fewer than ``k``.
    """
    history = sp.csr_matrix(history)
    lengths = np.diff(history.indptr)[rows]
    pair = np.repeat(np.arange(len(rows)), lengths)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    artist = history.indices[np.repeat(history.indptr[rows], lengths) + offset]
    similarity = np.empty(len(pair), np.float32)
    for start in range(0, len(pair), TRIPLES_PER_CHUNK):
        part = slice(start, start + TRIPLES_PER_CHUNK)
        left, right = vectors[artist[part]], vectors[items[pair[part]]]
        norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        similarity[part] = rowwise_dot(left, right) / np.where(norms > 0, norms, 1.0)
    best, _ = top_n_per_row(pair, similarity, artist, k)
    pair, artist, similarity = pair[best], artist[best], similarity[best]
    positive = similarity > 0
    return pair[positive], artist[positive], similarity[positive]


def feature_groups(names: list[str]) -> tuple[list[str], np.ndarray]:
    """Group indexed features (``svd_user_0``, ``svd_user_1``, ...) under one name.

    Returns the group names and, per feature, the index of its group.
    """
    stems = [_INDEXED.sub("", name) for name in names]
    groups = list(dict.fromkeys(stems))
    return groups, np.array([groups.index(stem) for stem in stems], dtype=np.int64)


def top_contributions(contributions: np.ndarray, names: list[str], k: int = 3) -> list[dict[str, float]]:
    """Per row, the ``k`` feature groups with the largest absolute log-odds contribution."""
    groups, group_of = feature_groups(names)
    membership = np.zeros((len(names), len(groups)))
    membership[np.arange(len(names)), group_of] = 1.0
    summed = contributions @ membership
    top = np.argsort(-np.abs(summed), axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(summed, top, axis=1)
    return [{groups[g]: round(float(v), 4) for g, v in zip(gs, vs)} for gs, vs in zip(top.tolist(), values)]


class Reasons(NamedTuple):
    """What the fitted parts say in words (:class:`funnel.protocols.ReasonGiver`)."""

    words: dict[str, str]  # feature column -> the word it speaks for; others speak for "listening"
    phrases: dict[str, str]  # source -> what having retrieved a candidate says
    source_words: dict[str, str]  # source -> its word

    @classmethod
    def of(cls, stages: Stages) -> Reasons:
        """The words and phrases of ``stages``' sources and feature groups."""
        names = np.array(stages.feature_names_, dtype=object)
        words = {str(column): group.reason_word for group in stages.features_ if isinstance(group, ReasonGiver)
                 for column in names[stages.columns_of(group)]}
        givers: list[Any] = [s for s in stages.sources_ if isinstance(s, ReasonGiver)]
        words.update({column: s.reason_word for s in givers for column in source_columns(s.name)})
        return cls(words, {s.name: s.reason_phrase for s in givers if getattr(s, "reason_phrase", None)},
                   {s.name: s.reason_word for s in givers})


def _in_words(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def reason(sources: dict[str, int], because: list[str], contributions: dict[str, float], friends: int,
           reasons: Reasons) -> str:
    """A listener's reading of an explanation: which listening, friends or tags led to the artist.

    Each reason with evidence gets a phrase: the history artists closest to it, the friends
    who play it, what a source that retrieved it says (a tag-source match), else its
    popularity. The phrases come in the order of the ranker's contributions for their words
    (the strongest first).
    """
    phrases = {}
    if because:
        phrases["listening"] = "because you listen to " + _in_words(because)
    if friends >= 1:
        phrases["friends"] = f"{friends} of your friends {'plays' if friends == 1 else 'play'} it"
    for source in sources:
        if source in reasons.phrases:
            phrases.setdefault(reasons.source_words[source], reasons.phrases[source])
    if not phrases:
        only_popular = all(reasons.source_words.get(source) == "popular" for source in sources)
        phrases["popular"] = "popular with listeners" if only_popular else "listeners like you play it"
    weight: dict[str, float] = {}
    for column, value in contributions.items():
        word = reasons.words.get(column, "listening")
        weight[word] = weight.get(word, 0.0) + value
    order = sorted(phrases, key=lambda word: -weight.get(word, float("-inf")))  # stable: the default order on ties
    return "; ".join(phrases[word] for word in order)


def explanation_columns(sources: list[dict[str, int]], because_pairs: tuple[np.ndarray, np.ndarray],
                        n_pairs: int, artist_ids: np.ndarray, artist_names: np.ndarray,
                        contributions: list[dict[str, float]], reasons: Reasons,
                        friends: np.ndarray | None = None) -> pd.DataFrame:
    """The explanation columns: ``sources, because_ids, because, contributions, reason``."""
    pair, artist = because_pairs
    bounds = np.searchsorted(pair, np.arange(n_pairs + 1))
    ids = artist_ids[artist].tolist()
    names = artist_names[artist].astype(str).tolist()
    because_ids = [ids[bounds[p]:bounds[p + 1]] for p in range(n_pairs)]
    because = [names[bounds[p]:bounds[p + 1]] for p in range(n_pairs)]
    return pd.DataFrame({
        "sources": sources, "because_ids": because_ids, "because": because,
        "contributions": contributions,
        "reason": [reason(s, b, c, f, reasons) for s, b, c, f in
                   zip(sources, because, contributions, np.zeros(n_pairs, np.int64) if friends is None else friends)],
    })


def explanations(model: Recommender, batch: Batch, cands: CandidateSet, X: np.ndarray, best: np.ndarray
                 ) -> pd.DataFrame:
    """The explanation columns of the chosen candidate pairs ``best`` of a batch."""
    stages = model.stages_
    sources = found_by({k: v[best] for k, v in cands.ranks.items()},
                       {s.name: s.n_candidates for s in stages.sources_})
    drivers = stages.offering(ExplanationDriver)
    pair = artist = np.empty(0, np.int64)
    if drivers:
        vectors = min(drivers, key=lambda part: part.because_preference).because_vectors()
        pair, artist, _ = closest_history(vectors, batch.history, cands.rows[best], cands.items[best])
    contributions: list[dict[str, float]] = [{} for _ in range(len(best))]
    if hasattr(model.ranker_, "contributions"):
        ranking = stages.ranking_columns_
        names = [f for f, r in zip(model.feature_names_, ranking) if r]
        contributions = top_contributions(model.ranker_.contributions(X[best])[:, ranking], names)
    friends = None
    for group in stages.offering(FriendsEvidence)[:1]:
        friends = group.friends_playing(X[best][:, stages.columns_of(group)])
    return explanation_columns(sources, (pair, artist), len(best), model.artist_ids_, model.artist_names_,
                               contributions, Reasons.of(stages), friends)
