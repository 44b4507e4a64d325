"""Similar artists: the nearest artists in the artist space the fitted parts offer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from funnel.data.ids import check_kind, id_range, lookup_ids, shown_ids
from funnel.errors import ConfigError, DataError
from funnel.protocols import SimilaritySpace
from funnel.rules import check_n

if TYPE_CHECKING:
    from funnel.recommender import Recommender
    from funnel.stages import Stages


def similar_artists(model: Recommender, artist_id: Any, n: int) -> pd.DataFrame:
    """What :meth:`funnel.Recommender.similar_artists` returns, for a fitted ``model``."""
    n = check_n(n, len(model.artist_ids_) - 1)
    many = isinstance(artist_id, (list, tuple, np.ndarray))
    values = list(artist_id) if many else [artist_id]
    check_kind(model.artist_ids_, values, "artist")
    columns = lookup_ids(model.artist_ids_, values)
    if (columns < 0).any():
        missing = [v for v, c in zip(values, columns) if c < 0]
        raise DataError(f"unknown artist id(s) {shown_ids(missing)}: not in the catalogue "
                        f"({len(model.artist_ids_)} artists, {id_range(model.artist_ids_)})")
    space, ids, scores = nearest_in_best_space(model.stages_, columns, n)
    rows = np.repeat(np.arange(len(columns)), ids.shape[1])
    ok = ids.ravel() >= 0
    items = ids.ravel()[ok]
    frame = pd.DataFrame({"rank": (np.arange(ids.size) % ids.shape[1] + 1)[ok],
                          "artist_id": model.artist_ids_[items],
                          "artist_name": model.artist_names_[items].astype(object),
                          "similarity": scores.ravel()[ok].astype(np.float64), "space": space})
    if many:
        frame.insert(0, "query_artist_id", model.artist_ids_[columns[rows[ok]]])
    return frame


def nearest_in_best_space(stages: Stages, columns: np.ndarray, n: int) -> tuple[str, np.ndarray, np.ndarray]:
    """The space used and the ``(len(columns), n)`` nearest artists and similarities (-1 padding).

    Of the fitted parts that offer a :class:`SimilaritySpace`, the most preferred answers
    (the first on ties).
    """
    offers = [(space, part) for part in stages.offering(SimilaritySpace)
              if (space := part.similarity_space()) is not None]
    if not offers:
        raise ConfigError("this model has no artist space to compare artists in: no tag embedding, ALS or "
                          "EASE nor another part offering a SimilaritySpace; add the 'tags' or 'als' source "
                          "(or feature group) and retrain")
    space, part = min(offers, key=lambda offer: offer[0].preference)
    return space.name, *part.nearest_artists(columns, n)
