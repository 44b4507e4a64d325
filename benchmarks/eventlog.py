"""The synthetic listening-event log the benchmarks share, aggregated as a user would do it."""

from __future__ import annotations

from funnel import Dataset
from funnel.data.events import read_events
from funnel.data.synthetic import synthetic_events

# about Last.fm's size: 3,000 listeners, 4,000 artists, 600,000 plays over a year
SIZE = dict(n_users=3000, n_artists=4000, n_events=600_000)


def event_log_dataset(seed: int = 0, **size: int) -> Dataset:
    """The seeded synthetic log (skips under 30 s dropped) with its editorial genres as artist tags."""
    events, genres = synthetic_events(**{**SIZE, **size}, seed=seed)
    plays = read_events(events, user="user", artist="artist_mbid", timestamp="ts", duration="duration_ms",
                        min_duration=30_000)
    return Dataset.from_frames(plays, artist_tags=genres.rename(columns={"artist_mbid": "artist_id",
                                                                         "genre": "tag"}))
