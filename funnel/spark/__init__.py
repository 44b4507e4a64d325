"""funnel on Apache Spark: score every listener's history on a cluster, and aggregate play logs there.

Training stays on one machine (:meth:`funnel.Recommender.fit`); what grows with the listeners
of a service, the daily scoring of everyone's list and the aggregation of the raw play log,
runs here on Spark itself. Needs the ``spark`` extra (``pip install -e ".[spark]"``) and a
Java runtime.

- :func:`recommend` scores a Spark DataFrame of histories (``user, artist, plays`` rows)
  with a saved model: the histories are grouped by user with a hash repartition, and each
  partition is scored by :meth:`funnel.Recommender.recommend_for_histories` inside
  ``mapInPandas``. Every Python worker loads the model once and keeps it for the tasks that
  follow, and scores on one BLAS/OpenMP thread, so a task takes one core as Spark assumes.
- :func:`aggregate_events` is :func:`funnel.data.events.read_events` as a Spark job: one row per
  (user, artist) with the play count or summed weight, first and last listen.

Save the model with ``save(path, artist_side_only=True)``: it holds the artist side only,
so its size does not grow with the training users (a full model works too).
"""

from funnel.spark.aggregate import aggregate_events
from funnel.spark.output import write_parquet
from funnel.spark.score import recommend

__all__ = ["aggregate_events", "recommend", "write_parquet"]
