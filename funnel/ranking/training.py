"""The ranker's training examples: labels the stages never saw, and sampled negatives.

Stage one and the factor models are fitted on a per-user history part of the training data;
the held-out part gives the labels: with listen times, each listener's artists started last
(the ranker learns what a listener starts next), otherwise a random share of each
listener's artists (``ranker_labels``). Each candidate pair of a sampled user is an example,
positive when it is held out; every positive and up to ``ranker_negatives`` random negatives
per user are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from funnel.batch import Batch
from funnel.config import FunnelConfig
from funnel.data import Dataset
from funnel.data.split import as_of_cutoff, per_user, temporal
from funnel.errors import ConfigError, DataError
from funnel.protocols import Ranker
from funnel.sparse import top_n_per_row
from funnel.stages import Stages

logger = logging.getLogger("funnel")

BATCH_USERS = 512


@dataclass
class Examples:
    """Labelled pairs: features ``X``, labels ``y`` and each row's user ``groups`` (contiguous)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    candidate_recall: float


def sample_negatives(rows: np.ndarray, positive: np.ndarray, per_row: int, rng: np.random.Generator
                     ) -> np.ndarray:
    """Boolean mask keeping every positive and up to ``per_row`` random negatives per row."""
    if per_row == 0:
        return np.ones(len(rows), dtype=bool)
    random = rng.random(len(rows))
    negative = np.flatnonzero(~positive)
    chosen, _ = top_n_per_row(rows[negative], -random[negative], negative, per_row)
    keep = positive.copy()
    keep[negative[chosen]] = True
    return keep


def examples(stages: Stages, history: Dataset, labels: pd.DataFrame, config: FunnelConfig) -> Examples:
    """The training examples of ``stages`` (fitted on ``history``) against held-out ``labels``."""
    users = np.unique(history.user_index(labels["user_id"].to_numpy()))
    if len(users) == 0:
        raise DataError("the ranker needs users with at least 2 artists to hold some out as labels; "
                        "every user in this dataset has only one")
    rng = np.random.default_rng(config.seed)
    if len(users) > config.ranker_users:
        users = np.sort(rng.choice(users, config.ranker_users, replace=False))
        labels = labels[np.isin(history.user_index(labels["user_id"].to_numpy()), users)]
    n_items = np.int64(history.n_artists)
    label_keys = np.sort(history.user_index(labels["user_id"].to_numpy()) * n_items
                         + history.artist_index(labels["artist_id"].to_numpy()))
    known = history.known_matrix(config.tagged_known)
    features, targets, groups, found = [], [], [], 0
    for start in tqdm(range(0, len(users), BATCH_USERS), desc="ranker examples", disable=not config.show_progress):
        rows = users[start:start + BATCH_USERS]
        batch = Batch(rows, history.matrix[rows], known=known[rows])
        cands = stages.candidates(batch)
        y = np.isin(rows[cands.rows] * n_items + cands.items, label_keys)
        found += int(y.sum())
        keep = sample_negatives(cands.rows, y, config.ranker_negatives, rng)
        kept = cands.subset(keep)
        features.append(stages.features(batch, kept))
        targets.append(y[keep])
        groups.append(rows[kept.rows])
    recall = found / max(len(labels), 1)
    return Examples(np.vstack(features), np.concatenate(targets), np.concatenate(groups), recall)


def train_ranker(history: Dataset, labels: pd.DataFrame, config: FunnelConfig,
                 prefit: Mapping[str, Callable[[], Any]] | None = None, everyone: Dataset | None = None
                 ) -> tuple[Ranker, Stages, Examples]:
    """A ranker trained without leakage, the stages its features came from, and its examples.

    Parameters
    ----------
    history, labels : Dataset, pandas.DataFrame
        The two parts of :func:`history_split`: the stages are fitted on ``history`` and
        the ``user_id, artist_id`` rows of ``labels`` are the positives.
    config : FunnelConfig
    prefit : mapping of str to callable, optional
        Models fitted elsewhere on ``history``, by name (see :meth:`Stages.fit`).
    everyone : Dataset, optional
        With a sample of listeners, the history part of every listener (see :meth:`Stages.fit`).
    """
    logger.info("ranker: fitting the stages on %d history interactions, %d held out as labels",
                len(history.interactions), len(labels))
    stages = Stages(config).fit(history, prefit, everyone)
    data = examples(stages, history, labels, config)
    logger.info("ranker: stage-one recall of label artists %.3f; training on %d pairs (%d positive)",
                data.candidate_recall, len(data.y), int(data.y.sum()))
    ranker = stages.new_ranker().fit(data.X, data.y, data.groups)
    return ranker, stages, data


def temporal_labels(dataset: Dataset, config: FunnelConfig) -> bool:
    """Whether the ranker's labels are each listener's artists started last (``ranker_labels``).

    Raises
    ------
    ConfigError
        ``ranker_labels="temporal"`` and ``dataset`` has no listen times.
    """
    if config.ranker_labels == "temporal" and not dataset.has_listen_times:
        raise ConfigError("ranker_labels='temporal' needs listen times, and this dataset has none; build it "
                          "from an event log (funnel.read_events with timestamp=...), give first_listen/"
                          "last_listen columns, or set ranker_labels='auto' or 'random'")
    return config.ranker_labels != "random" and dataset.has_listen_times


def history_split(dataset: Dataset, config: FunnelConfig, *, cutoff: bool = False
                  ) -> tuple[Dataset, pd.DataFrame]:
    """The per-user split the ranker trains on: (history part, held-out labels).

    Each listener with at least 2 artists keeps ``ranker_holdout`` of them aside as labels:
    the ones started last (:func:`funnel.data.split.temporal`) when
    :func:`temporal_labels`, random ones (:func:`funnel.data.split.per_user`) otherwise.
    With temporal labels and ``cutoff``, the history part is cut at each listener's first
    label (:func:`funnel.data.split.as_of_cutoff`).

    Raises
    ------
    ConfigError
        ``ranker_labels="temporal"`` and ``dataset`` has no listen times.
    """
    if temporal_labels(dataset, config):
        part = temporal(dataset, config.ranker_holdout, min_artists=2)
        train, labels = part
        if cutoff:  # the weights were aged by Recommender.fit before the split
            train = as_of_cutoff(part, config.recency_half_life_days)
    else:
        train, labels = per_user(dataset, config.ranker_holdout, min_artists=2, seed=config.seed)
    return train, labels
