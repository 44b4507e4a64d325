"""The training data of a fit on a sample of listeners, drawn from aggregated plays on Spark.

Everything that grows with the audience stays on the cluster: the play log is aggregated
there (:func:`funnel.spark.aggregate_events`), listeners are sampled there by a seeded hash
of their id, and only the sample's (listener, artist) rows and the catalogue's artist ids
reach the driver, where :meth:`funnel.Recommender.fit` learns from them. The model, saved
artist-side only, then scores every listener with :func:`funnel.spark.recommend`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from funnel.config import FunnelConfig
from funnel.errors import DataError
from funnel.spark.columns import load_pyspark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from funnel.data import Dataset

logger = logging.getLogger("funnel")

BUCKETS = 1 << 30  # resolution of the hash that samples listeners


def listener_share(pairs: DataFrame, fit_users: int | float | None) -> tuple[float, int]:
    """The share of listeners to sample for ``fit_users`` (a count or a share), and how many listeners there are."""
    FunnelConfig(fit_users=fit_users)  # the one check of the setting: a ConfigError naming it
    F, _, _ = load_pyspark()
    n_users = int(pairs.agg(F.countDistinct("user_id")).collect()[0][0])
    if n_users == 0:
        raise DataError("the plays hold no listener: nothing to fit")
    if fit_users is None:
        return 1.0, n_users
    return (min(1.0, fit_users / n_users) if isinstance(fit_users, int) else float(fit_users)), n_users


def sample_pairs(pairs: DataFrame, share: float, seed: int = 0) -> DataFrame:
    """The rows of about ``share`` of the listeners, chosen by a seeded hash of the listener id.

    Every row of a chosen listener is kept, on whatever partition it is, with no shuffle;
    the same seed and ids choose the same listeners on any cluster.
    """
    if share >= 1.0:
        return pairs
    F, _, _ = load_pyspark()
    bucket = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(BUCKETS))
    return pairs.where(bucket < F.lit(int(share * BUCKETS)))


def sample_dataset(pairs: DataFrame, fit_users: int | float | None, seed: int = 0,
                   artist_tags: pd.DataFrame | None = None) -> tuple[Dataset, int]:
    """The :class:`~funnel.data.Dataset` of a sample of listeners, and how many listeners ``pairs`` holds.

    Parameters
    ----------
    pairs : pyspark.sql.DataFrame
        Aggregated plays, as :func:`funnel.spark.aggregate_events` returns them.
    fit_users : int, float or None
        How many listeners to learn from (a count, met to within sampling noise) or what
        share; ``None`` collects every listener.
    seed : int
    artist_tags : pandas.DataFrame, optional
        ``artist_id, tag`` labels (genres), as for :meth:`Dataset.from_frames`.

    Returns
    -------
    Dataset, int
        The sample, whose catalogue is every artist of ``pairs`` (and of ``artist_tags``),
        so that an artist only listeners outside the sample played can still be scored and
        recommended; and the number of listeners in ``pairs``.
    """
    from funnel.data import Dataset

    share, n_users = listener_share(pairs, fit_users)
    chosen: pd.DataFrame = sample_pairs(pairs, share, seed).toPandas()
    if chosen.empty:
        raise DataError(f"a share of {share:.2g} of the {n_users} listeners drew none of them; raise fit_users")
    artists: pd.Series = pairs.select("artist_id").distinct().toPandas()["artist_id"]  # type: ignore[index]
    if artist_tags is not None:
        artists = pd.concat([artists, artist_tags["artist_id"]], ignore_index=True).drop_duplicates()
    for column in ("first_listen", "last_listen"):
        if column in chosen:
            chosen[column] = pd.to_datetime(chosen[column]).astype("datetime64[us]")
    logger.info("learning from %d of %d listeners (%d rows) over %d artists", chosen["user_id"].nunique(), n_users,
                len(chosen), len(artists))
    artists = artists.sort_values(ignore_index=True)  # the order an in-process read gives them
    catalogue = pd.DataFrame({"artist_id": artists.to_numpy(), "name": artists.astype(str).to_numpy()})
    return Dataset.from_frames(chosen, artists=catalogue, artist_tags=artist_tags), n_users
