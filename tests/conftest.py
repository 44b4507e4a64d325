"""Shared fixtures: small seeded synthetic data, a fitted small model, the real Last.fm data.

Before the tests are collected, the worked examples of docs/extending.md are registered and
its example package installed (``tests/extending_examples.py``), so the contract tests check
them like the built-in parts.
"""

from __future__ import annotations

import numpy as np
import pytest

from funnel import Dataset, FunnelConfig, Recommender
from funnel.data.lastfm import DATA_ENV, resolve_data_path
from funnel.data.synthetic import synthetic
from funnel.errors import DataError
from tests import extending_examples


def pytest_configure(config: pytest.Config) -> None:
    extending_examples.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    extending_examples.uninstall()


# n_threads=1 fits the ranker's side and the serving side one after the other (tests/test_recommender.py
# fits once with both at once)
SMALL = dict(models={"embedder": {"tag_dim": 16}, "svd": {"factors": 8, "epochs": 10},
                     "als": {"factors": 8, "iterations": 8}},
             candidates={"tags": {"n": 40, "search_dim": 8}, "als": 40, "ease": 20, "friends": 10, "popularity": 10},
             ranker_negatives=30, n_threads=1)


@pytest.fixture(scope="session")
def small_config() -> FunnelConfig:
    return FunnelConfig(**SMALL)


def with_string_ids(dataset: Dataset, artist_id) -> Dataset:
    """``dataset`` with users ``user_00002@example`` and artists renamed by ``artist_id`` (mapping or function).

    Tag assignments and friends are renamed too, so every frame keeps naming the same people.
    """
    user = "user_{:05d}@example".format

    def renamed(frame, **columns):
        return frame.assign(**{column: frame[column].map(to) for column, to in columns.items()})

    return Dataset.from_frames(renamed(dataset.interactions, user_id=user, artist_id=artist_id),
                               renamed(dataset.artists, artist_id=artist_id), dataset.tags,
                               renamed(dataset.tag_assignments, user_id=user, artist_id=artist_id),
                               renamed(dataset.friends, user_id=user, friend_id=user))


SYNTH = dict(n_users=150, n_artists=240, n_clusters=4, artists_per_user=20, n_untagged=5, seed=3)


@pytest.fixture(scope="session")
def synth():
    return synthetic(**SYNTH)


def with_listen_times(dataset: Dataset, seed: int = 0) -> Dataset:
    """``dataset`` with seeded first and last listen times (2024) on every interaction."""
    rng = np.random.default_rng(seed)
    inter = dataset.interactions.copy()
    start = np.datetime64("2024-01-01", "s").astype(np.int64)
    first = start + rng.integers(0, 300 * 86400, len(inter))
    inter["first_listen"] = first.astype("datetime64[s]").astype("datetime64[ns]")
    inter["last_listen"] = (first + rng.integers(0, 60 * 86400, len(inter))).astype("datetime64[s]").astype(
        "datetime64[ns]")
    return Dataset.from_frames(inter, artists=dataset.artists, tags=dataset.tags,
                               tag_assignments=dataset.tag_assignments, friends=dataset.friends)


@pytest.fixture(scope="session")
def fitted(synth, small_config):
    return Recommender(small_config).fit(synth)


@pytest.fixture(scope="session")
def lastfm_path():
    try:
        return resolve_data_path()
    except DataError:
        pytest.skip(f"Last.fm data not found; set {DATA_ENV} or put it at ../shared/data")


@pytest.fixture(scope="session")
def lastfm(lastfm_path):
    from funnel import load_lastfm

    return load_lastfm(lastfm_path)
