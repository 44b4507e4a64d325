"""New artists from their tags: borrowed ALS/BiasedSVD vectors, and a median popularity for unplayed artists.

    python benchmarks/update_new_artists.py        # about 4 minutes on 2 cores

The held-out check of benchmarks/update_drift.py on Last.fm (5% of the tagged artists with 2+
listeners held out, plays and tag assignments; fitted without them; ``update`` with their tag
assignments), seeds 0-2, paired per (listener, held-out artist): whether the artist is in the
listener's top 20. Variants: a new artist's vectors borrowed from its 10 nearest artists by tag
block (the default) or zero (``funnel.updating.NEIGHBOURS = 0``); unplayed artists ranked with
their true popularity (the default) or with the median of the played ones (the artist and user
feature groups patched, at fit and at update). Writes benchmarks/results/update_new_artists.json.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from funnel import Dataset, Recommender, load_lastfm, updating
from funnel.ranking import features as F

data = load_lastfm()
inter, tags = data.interactions, data.tag_assignments
artist_compute, user_compute = F.ArtistFeature.compute, F.UserFeature.compute


def median_filled(stats):
    stats = dict(stats)
    unplayed = stats["log_listeners"] == 0
    if unplayed.any() and not unplayed.all():
        for name in ("log_listeners", "log_plays"):
            stats[name] = np.where(unplayed, np.median(stats[name][~unplayed]), stats[name]).astype(np.float32)
    return stats


def neutral(on: bool) -> None:
    if not on:
        F.ArtistFeature.compute, F.UserFeature.compute = artist_compute, user_compute
        return
    def artist(self, batch, cands):
        stats = median_filled(self.model.stats_)
        return np.column_stack([stats[s][cands.items] for s in F.ARTIST_STATISTICS])
    def user(self, batch, cands):
        log_artists, log_plays = F.activity(batch.history)
        years, tagged = self.model.of(batch)
        u = np.column_stack([log_artists, log_plays, years, tagged])[cands.rows]
        return np.column_stack([u, u[:, 0] * median_filled(self.embedder.stats_)["log_listeners"][cands.items]])
    F.ArtistFeature.compute, F.UserFeature.compute = artist, user


hits = {}
for seed in (0, 1, 2):
    listeners = inter.groupby("artist_id").size()
    eligible = np.intersect1d(listeners.index[listeners.to_numpy() >= 2], tags["artist_id"].unique())
    held = np.sort(np.random.default_rng(seed).choice(eligible, int(round(0.05 * len(eligible))), replace=False))
    out_plays, out_tags = inter["artist_id"].isin(held), tags["artist_id"].isin(held)
    hidden, held_tags = inter[out_plays], tags[out_tags]
    fit_data = Dataset.from_frames(inter[~out_plays], artists=data.artists[~data.artists["artist_id"].isin(held)],
                                   tags=data.tags, tag_assignments=tags[~out_tags], friends=data.friends)
    empty = pd.DataFrame({"user_id": np.zeros(0, np.int64), "artist_id": np.zeros(0, np.int64)})
    for median in (False, True):
        neutral(median)
        base = Recommender(seed=seed, show_progress=False).fit(fit_data)
        pairs = hidden[hidden["user_id"].isin(base.user_ids_)][["user_id", "artist_id"]]
        for k in (10, 0):
            name = f"{'borrowed' if k else 'zero vectors'}, {'median' if median else 'true'} popularity"
            updating.NEIGHBOURS = k
            model = copy.deepcopy(base).update(empty, artists=data.artists[data.artists["artist_id"].isin(held)],
                                                tag_assignments=held_tags, tags=data.tags)
            top = model.recommend_all(n=20)
            hit = pd.MultiIndex.from_frame(pairs).isin(pd.MultiIndex.from_frame(top[["user_id", "artist_id"]]))
            hits.setdefault(name, []).append(hit)
            print(seed, name, round(hit.mean(), 4), flush=True)
    neutral(False)
ref = np.concatenate(hits["borrowed, true popularity"]).astype(float)
results = {}
for name in hits:
    h = np.concatenate(hits[name]).astype(float)
    d = h - ref
    error = d.std(ddof=1) / np.sqrt(len(d))
    results[name] = {"pair_share": h.mean(), "minus_default": d.mean(), "standard_error": error, "pairs": len(d),
                     "per_seed": [float(x.mean()) for x in hits[name]]}
    print(f"{name}: pair share {h.mean():.4f}; minus the default {d.mean():+.4f} ± {error:.4f} ({len(d)} pairs)")
Path(__file__).parent.joinpath("results").joinpath("update_new_artists.json").write_text(
    json.dumps({"command": "python benchmarks/update_new_artists.py", "variants": results}, indent=1, default=float))
