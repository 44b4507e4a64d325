"""When to refit: ``Recommender.update`` against no update and a full refit, step by step.

    python benchmarks/update_drift.py             # about 7.5 minutes on 2 cores
    python benchmarks/update_drift.py --quick     # a smoke run: small log, 3 steps (writes update_drift_quick.*)

Every model is ``Recommender(seed=SEED, show_progress=False)``: the default FunnelConfig.

1. Synthetic drift log (``synthetic_events``; skips under 30 s dropped, genres as artist
   tags, the catalogue the artists played so far). Fitted on days ``[0, D0)``, then a day
   at a time for ``--days`` days, three arms from the same fit: ``stale`` (no update),
   ``update`` (``model.update`` with the day's raw plays, one row per play with its
   timestamp, and the genres of artists first played that day) and ``refit`` (a fit on
   everything up to the end of the day). A fourth, ``stale+exclude``, is the stale model
   told to leave out what each listener played since D0 (its filter brought up to date, its
   vectors not). After day d, every arm recommends 10 artists to each listener who on day
   d+1 starts an artist they never played up to day d (targets: those artists); NDCG@10 per
   listener. Listeners first heard after D0 are unknown to the stale model: it scores them
   with ``recommend_for_histories`` from their plays up to day d; listeners new on day d+1
   have no history and are skipped by every arm. Step 0 is the fit itself, scored on day D0.
2. Last.fm with tagging dates: a (user, artist) pair is dated by that user's first tag of
   the artist; undated pairs are always in the fit. Fitted on undated pairs and pairs dated
   before ``--cut``, then a month at a time (the month's pairs as plays with their weight,
   the month's tag assignments with ``tags``), scored on the next month's dated pairs.
3. New artists from tags alone (Last.fm): a share of the artists with tag assignments and
   >= 2 listeners is held out (plays and tag assignments), the model fitted without them, then
   ``update`` with no plays, the artists and their tag assignments. Each held-out artist's
   listeners get 20 recommendations; reported: the share of (listener, held-out artist)
   pairs found, the share of listeners given any held-out artist, against popularity and
   chance; then the same artists given as an unplayed part of the catalogue at fit time
   (``Dataset.from_frames(..., artists=..., artist_tags=...)``).

Seconds are those of the ``update`` call, watched by nothing, and of the ``fit`` call
(building the refit's Dataset not included). Peak memory (benchmarks/memory.py, proportional
set size above the step's start) is the fit's and that of the same update run on a copy of
the model (a 5 ms sampler, which would slow the timed call). As freed pages are reused, the
PSS rise understates small steps, so the peak that Python and numpy allocate (tracemalloc)
is reported too: every update's, on another copy, and the first refit's (an extra fit).
Writes benchmarks/results/update_drift.json and update_drift.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from memory import PeakMemory
from sampled_fit import K, per_user_ndcg

from funnel import Dataset, Recommender, load_lastfm
from funnel.baselines import PopularityRecommender
from funnel.data.events import read_events
from funnel.data.synthetic import synthetic_events

RESULTS = Path(__file__).parent / "results"
ARMS = ("stale", "stale+exclude", "update", "refit")
DAY = pd.Timedelta(days=1)


def scores(model: Recommender, test: pd.DataFrame, histories: pd.DataFrame, exclude=None) -> np.ndarray:
    """Per-listener NDCG@K of ``model`` on ``test`` (users sorted); unknown listeners scored from ``histories``."""
    users = np.unique(test["user_id"].to_numpy())
    known = np.isin(users, model.user_ids_)
    if exclude is not None:
        exclude = exclude[exclude["user_id"].isin(users[known])]
    recs = [model.recommend_all(n=K, users=users[known], exclude=exclude)]
    if not known.all():
        recs.append(model.recommend_for_histories(histories[histories["user_id"].isin(users[~known])], n=K))
    return per_user_ndcg(pd.concat(recs, ignore_index=True), test, users)


def traced_mb(call) -> float:
    """Peak MB that ``call()`` allocates through Python and numpy (tracemalloc; native FAISS/implicit memory unseen)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def traced_update_mb(model: Recommender, update: dict) -> float:
    """Peak MB above its start that an update of a copy of ``model`` allocates (tracemalloc).

    Tracing starts before the copy, so that the arrays an update replaces count as freed.
    """
    tracemalloc.start()
    try:
        copied = copy.deepcopy(model)
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        copied.update(**update)
        return (tracemalloc.get_traced_memory()[1] - start) / 2**20
    finally:
        tracemalloc.stop()


def measured(out: dict, what: str, call, interval: float):
    """``call()``, its seconds and peak memory appended to ``out``'s lists of ``what``."""
    with PeakMemory(interval=interval) as memory:
        started = time.perf_counter()
        result = call()
        out[f"{what}_seconds"].append(time.perf_counter() - started)
    out[f"{what}_memory_mb"].append(memory.mb)
    out[f"{what}_peak_memory_mb"].append(memory.peak_mb)
    return result


def drift(initial: Dataset, steps: list[dict], seed: int) -> dict:
    """The arms from one fit on ``initial``, through ``steps``.

    Each step: ``update`` (keyword arguments of ``Recommender.update``, None for step 0),
    ``dataset`` (a callable: the refit's Dataset), ``test`` (``user_id, artist_id``: the
    next period's new pairs of listeners with a history), ``histories`` (their plays so far)
    and ``exclude`` (pairs played since the first fit, for ``stale+exclude``).
    """
    def make() -> Recommender:
        return Recommender(seed=seed, show_progress=False)
    out = {arm: [] for arm in ARMS} | {"ndcg_per_listener": {arm: [] for arm in ARMS}, "refit_traced_mb": None}
    steps_ = ("first_fit", "update_sampled", "refit")
    for key in ("listeners", "unknown_to_stale", "targets", "update_traced_mb", "update_seconds",
                *(f"{w}_{m}" for w in steps_ for m in ("seconds", "memory_mb", "peak_memory_mb"))):
        out[key] = []
    base = measured(out, "first_fit", partial(make().fit, initial), 0.05)
    models = {"stale": base, "update": copy.deepcopy(base), "refit": base}
    for i, step in enumerate(steps):
        if step["update"] is not None:
            # memory on copies (tracemalloc and a 5 ms sampler slow the call they watch), then the timed call
            out["update_traced_mb"].append(traced_update_mb(models["update"], step["update"]))
            measured(out, "update_sampled", partial(copy.deepcopy(models["update"]).update, **step["update"]), 0.005)
            started = time.perf_counter()
            models["update"].update(**step["update"])
            out["update_seconds"].append(time.perf_counter() - started)
            data = step["dataset"]()
            if out["refit_traced_mb"] is None:
                out["refit_traced_mb"] = traced_mb(partial(make().fit, data))
            models["refit"] = None  # the previous refit's memory is not the new fit's
            models["refit"] = measured(out, "refit", partial(make().fit, data), 0.05)
        test, hist = step["test"], step["histories"]
        per = {"stale": scores(base, test, hist), "stale+exclude": scores(base, test, hist, step["exclude"]),
               "update": scores(models["update"], test, hist), "refit": scores(models["refit"], test, hist)}
        for arm in ARMS:
            out[arm].append(float(np.nanmean(per[arm])))
            out["ndcg_per_listener"][arm].append(per[arm].tolist())
        out["listeners"].append(int(len(per["stale"])))
        out["targets"].append(int(len(test)))
        out["unknown_to_stale"].append(int((~np.isin(np.unique(test["user_id"]), base.user_ids_)).sum()))
        print(f"  step {i}: " + " ".join(f"{a} {out[a][-1]:.4f}" for a in ARMS)
              + f" ({out['listeners'][-1]} listeners"
              + (f"; update {out['update_seconds'][-1]:.2f}s, refit {out['refit_seconds'][-1]:.1f}s" if i else "")
              + ")", flush=True)
    return summarise(out)


def summarise(out: dict) -> dict:
    """Means over the steps after the first fit (listener-weighted), ratios and paired standard errors."""
    per = {arm: np.concatenate([np.asarray(v, float) for v in out["ndcg_per_listener"][arm][1:]]) for arm in ARMS}

    def paired(a: str, b: str) -> dict:
        diff = per[a] - per[b]
        return {"mean_difference": float(np.nanmean(diff)),
                "standard_error": float(np.nanstd(diff, ddof=1) / np.sqrt(np.isfinite(diff).sum()))}
    mean = {arm: float(np.nanmean(per[arm])) for arm in ARMS}
    out["summary"] = {
        "mean_ndcg@10": mean, "mean_ndcg@10_of_daily_means": {arm: float(np.mean(out[arm][1:])) for arm in ARMS},
        "update_over_refit_ndcg": mean["update"] / mean["refit"],
        "stale_loss_vs_refit": 1 - mean["stale"] / mean["refit"],
        "stale_loss_vs_update": 1 - mean["stale"] / mean["update"],
        "update - refit": paired("update", "refit"), "stale - refit": paired("stale", "refit"),
        "update - stale": paired("update", "stale"), "stale+exclude - stale": paired("stale+exclude", "stale"),
        "update_seconds_mean": float(np.mean(out["update_seconds"])),
        "refit_seconds_mean": float(np.mean(out["refit_seconds"])),
        "update_over_refit_seconds": float(np.mean(out["update_seconds"]) / np.mean(out["refit_seconds"])),
        "update_memory_mb_max": float(np.max(out["update_sampled_memory_mb"])),
        "refit_memory_mb_max": float(np.max(out["refit_memory_mb"])),
        "update_over_refit_memory": float(np.max(out["update_sampled_memory_mb"]) / np.max(out["refit_memory_mb"])),
        "update_traced_mb_max": float(np.max(out["update_traced_mb"])), "refit_traced_mb_first": out["refit_traced_mb"],
        "update_over_refit_traced_memory": float(np.max(out["update_traced_mb"]) / out["refit_traced_mb"]),
        "listener_steps": int(sum(out["listeners"][1:]))}
    return out


def synthetic_arms(args) -> dict:
    events, genres = synthetic_events(n_users=args.users, n_artists=args.artists, n_events=args.events,
                                      seed=args.seed)
    events = events[events["duration_ms"] >= 30_000].reset_index(drop=True)
    events["day"] = ((events["ts"] - events["ts"].min().floor("D")) // DAY).astype(np.int64)
    labels = genres.rename(columns={"artist_mbid": "artist_id", "genre": "tag"})
    first = events.groupby(["user", "artist_mbid"], as_index=False)["day"].min()  # each pair's first day
    user_first = events.groupby("user")["day"].min()
    artist_first = events.groupby("artist_mbid")["day"].min()
    d0 = args.d0

    def dataset(end: int) -> Dataset:  # plays of days [0, end), the catalogue the artists played by then
        plays = read_events(events[events["day"] < end], user="user", artist="artist_mbid", timestamp="ts")
        return Dataset.from_frames(plays, artist_tags=labels[labels["artist_id"].isin(plays["artist_id"])])

    def step(day: int) -> dict:  # after day `day` (-1: the first fit): its update, and day+1's test
        test = first[(first["day"] == day + 1) & (first["user"].map(user_first).to_numpy() <= day)]
        test = test.rename(columns={"user": "user_id", "artist_mbid": "artist_id"})[["user_id", "artist_id"]]
        past = first[first["day"] <= day]
        hist = events[(events["day"] <= day) & events["user"].isin(test["user_id"])]
        hist = hist.groupby(["user", "artist_mbid"], as_index=False).size()
        hist.columns = ["user_id", "artist_id", "weight"]
        since = past[past["day"] >= d0].rename(columns={"user": "user_id", "artist_mbid": "artist_id"})
        today = events[events["day"] == day]
        fresh = artist_first.index[artist_first.to_numpy() == day]
        update = None if day < d0 else {
            "plays": pd.DataFrame({"user_id": today["user"].to_numpy(), "artist_id": today["artist_mbid"].to_numpy(),
                                   "timestamp": today["ts"].to_numpy()}),
            "artist_tags": labels[labels["artist_id"].isin(fresh)] if len(fresh) else None}
        return {"update": update, "dataset": lambda: dataset(day + 1), "test": test, "histories": hist,
                "exclude": since[["user_id", "artist_id"]], "new_artists": int(len(fresh)), "plays": int(len(today))}

    steps = [step(d0 - 1)] + [step(d) for d in range(d0, d0 + args.days)]
    print(f"synthetic: {len(events)} plays (skips dropped), fit on days [0, {d0}), {args.days} daily steps", flush=True)
    out = drift(dataset(d0), steps, args.seed)
    out["new_artists_per_step"] = [s["new_artists"] for s in steps[1:]]
    out["plays_per_step"] = [s["plays"] for s in steps[1:]]
    return out


def dated_pairs(data: Dataset) -> pd.DataFrame:
    """Last.fm's interactions with ``date``: the listener's first tag of the artist (NaT: never tagged)."""
    first = data.tag_assignments.groupby(["user_id", "artist_id"], as_index=False)["timestamp"].min()
    return data.interactions.merge(first.rename(columns={"timestamp": "date"}), on=["user_id", "artist_id"],
                                   how="left")


def lastfm_arms(args, data: Dataset) -> dict:
    pairs = dated_pairs(data)
    tags = data.tag_assignments
    months = pd.period_range(pd.Period(args.cut, "M"), periods=args.months + 1, freq="M")
    start = [m.start_time for m in months] + [(months[-1] + 1).start_time]

    def dataset(end: pd.Timestamp) -> Dataset:
        inter = pairs[pairs["date"].isna() | (pairs["date"] < end)][["user_id", "artist_id", "weight"]]
        return Dataset.from_frames(inter, tags=data.tags, tag_assignments=tags[tags["timestamp"] < end],
                                   friends=data.friends)

    def step(i: int) -> dict:  # after month i - 1 (i = 0: the first fit); tests month i
        lo, hi = start[i], start[i + 1]
        known = pairs[pairs["date"].isna() | (pairs["date"] < lo)]
        test = pairs[(pairs["date"] >= lo) & (pairs["date"] < hi) & pairs["user_id"].isin(known["user_id"])]
        month = pairs[(pairs["date"] >= start[i - 1]) & (pairs["date"] < lo)] if i else None
        since = pairs[(pairs["date"] >= start[0]) & (pairs["date"] < lo)]
        update = None if not i else {
            "plays": month[["user_id", "artist_id", "weight"]],
            "tag_assignments": tags[(tags["timestamp"] >= start[i - 1]) & (tags["timestamp"] < lo)],
            "tags": data.tags}
        return {"update": update, "dataset": lambda: dataset(lo), "test": test[["user_id", "artist_id"]],
                "histories": known[known["user_id"].isin(test["user_id"])][["user_id", "artist_id", "weight"]],
                "exclude": since[["user_id", "artist_id"]]}

    print(f"Last.fm: {int(pairs['date'].notna().sum())} dated pairs of {len(pairs)}; fit before {start[0].date()}, "
          f"{args.months} monthly steps", flush=True)
    out = drift(dataset(start[0]), [step(i) for i in range(args.months + 1)], args.seed)
    out["months_tested"] = [str(m) for m in months]
    return out


def found(recs: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Per row of ``pairs`` (user_id, artist_id): whether ``recs`` holds it."""
    return pd.MultiIndex.from_frame(pairs[["user_id", "artist_id"]]).isin(
        pd.MultiIndex.from_frame(recs[["user_id", "artist_id"]]))


def new_artist_check(args, data: Dataset, n: int = 20) -> dict:
    inter, tags = data.interactions, data.tag_assignments
    listeners = inter.groupby("artist_id").size()
    eligible = np.intersect1d(listeners.index[listeners.to_numpy() >= 2], tags["artist_id"].unique())
    held = np.sort(np.random.default_rng(args.seed).choice(eligible, int(round(args.held_out * len(eligible))),
                                                           replace=False))
    out_plays, out_tags = inter["artist_id"].isin(held), tags["artist_id"].isin(held)
    hidden, held_tags = inter[out_plays], tags[out_tags]
    kept_artists = data.artists[~data.artists["artist_id"].isin(held)]
    fit_data = Dataset.from_frames(inter[~out_plays], artists=kept_artists, tags=data.tags,
                                   tag_assignments=tags[~out_tags], friends=data.friends)
    model = Recommender(seed=args.seed, show_progress=False).fit(fit_data)
    empty = pd.DataFrame({"user_id": np.zeros(0, np.int64), "artist_id": np.zeros(0, np.int64)})
    t0 = time.perf_counter()
    model.update(empty, artists=data.artists[data.artists["artist_id"].isin(held)], tag_assignments=held_tags,
                 tags=data.tags)
    update_seconds = time.perf_counter() - t0
    pairs = hidden[hidden["user_id"].isin(model.user_ids_)]
    users = np.unique(pairs["user_id"].to_numpy())
    own_tag = found(held_tags, pairs)  # the listener tagged the artist: known to the model, never recommended

    def report(recs: pd.DataFrame) -> dict:
        top = recs[recs["rank"] <= n]
        hit = found(top, pairs)
        mine = top[top["user_id"].isin(users)]
        return {"pair_share": float(hit.mean()), "pair_share_not_tagged_by_listener": float(hit[~own_tag].mean()),
                "listener_share_any": float(mine["artist_id"].isin(held).groupby(mine["user_id"]).any()
                                            .reindex(users, fill_value=False).mean()),
                "held_out_artists_in_anyones_top": int(top.loc[top["artist_id"].isin(held), "artist_id"].nunique()),
                "held_out_slots_in_all_tops": int(top["artist_id"].isin(held).sum())}

    result = {"held_out_artists": int(len(held)), "eligible_artists": int(len(eligible)),
              "listener_pairs": int(len(pairs)), "listeners": int(len(users)),
              "pairs_tagged_by_their_listener": int(own_tag.sum()), "update_seconds": update_seconds,
              "catalogue": int(len(model.artist_ids_)), "funnel (update)": report(model.recommend_all(n=n))}
    # popularity, with the held-out artists in its catalogue and 0 listeners
    full = Dataset.from_frames(inter[~out_plays], artists=data.artists, tags=data.tags, tag_assignments=tags,
                               friends=data.friends)
    result["popularity"] = report(PopularityRecommender().fit(full).recommend_all(n=n, users=users))
    # chance: n of the artists the listener does not know, drawn at random
    unknown = len(model.artist_ids_) - np.diff(model.history_[np.searchsorted(model.user_ids_, users)].indptr)
    per_listener = pairs.groupby("user_id").size().reindex(users).to_numpy()
    result["random"] = {"pair_share": float(np.mean(np.repeat(n / unknown, per_listener))),
                        "listener_share_any": float(np.mean(1 - (1 - n / unknown) ** per_listener))}
    # the same artists as an unplayed part of the catalogue at fit time, their tags as artist_tags
    texts = held_tags.merge(data.tags, on="tag_id")[["artist_id", "tag"]]
    catalogue = Dataset.from_frames(inter[~out_plays], artists=data.artists, tags=data.tags,
                                    tag_assignments=tags[~out_tags], friends=data.friends, artist_tags=texts)
    unplayed = Recommender(seed=args.seed, show_progress=False).fit(catalogue)
    result["funnel (unplayed in the fitted catalogue)"] = report(unplayed.recommend_all(n=n))
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, unit in ((axes[0], "synthetic", "day after D0"), (axes[1], "lastfm", "month after the cut")):
        for arm in ARMS:
            ax.plot(results[key][arm], marker=".", label=arm)
        ax.set(title=f"{key}: NDCG@10 on the next period's new artists", xlabel=unit, ylabel="NDCG@10")
        ax.legend()
    for key, style in (("synthetic", "-"), ("lastfm", "--")):
        for what in ("update", "refit"):
            axes[2].plot(results[key][f"{what}_seconds"], style, marker=".", label=f"{key} {what}")
    axes[2].set(yscale="log", title="seconds per step", xlabel="step")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--artists", type=int, default=3000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--d0", type=int, default=300, help="first day after the synthetic first fit")
    parser.add_argument("--days", type=int, default=30, help="daily steps")
    parser.add_argument("--cut", default="2010-03", help="Last.fm: first month after the first fit")
    parser.add_argument("--months", type=int, default=12, help="Last.fm monthly steps")
    parser.add_argument("--held-out", type=float, default=0.05, help="share of eligible Last.fm artists held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="Last.fm directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small log, 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.users, args.artists, args.events, args.days, args.months = 400, 600, 40_000, 3, 3
    started = time.perf_counter()
    data = load_lastfm(args.data)
    results = {"command": "python benchmarks/update_drift.py" + (" --quick" if args.quick else ""),
               "args": vars(args), "machine": f"{platform.machine()}, Python {platform.python_version()}",
               "config": "Recommender(seed=SEED, show_progress=False): the default FunnelConfig"}
    results["synthetic"] = synthetic_arms(args)
    results["lastfm"] = lastfm_arms(args, data)
    print("Last.fm new artists from tags ...", flush=True)
    results["new_artists"] = new_artist_check(args, data)
    results["wall_seconds"] = time.perf_counter() - started
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"update_drift{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, RESULTS / f"update_drift{suffix}.png")
    print(f"\n{'':<10} {'stale':>7} {'st+excl':>7} {'update':>7} {'refit':>7} {'upd/ref':>7} "
          f"{'s upd':>6} {'s ref':>6} {'MB upd':>7} {'MB ref':>7} {'trMB u':>7} {'trMB r':>7}")
    for key in ("synthetic", "lastfm"):
        s = results[key]["summary"]
        print(f"{key:<10} " + " ".join(f"{s['mean_ndcg@10'][a]:7.4f}" for a in ARMS)
              + f" {s['update_over_refit_ndcg']:7.3f} {s['update_seconds_mean']:6.2f} {s['refit_seconds_mean']:6.1f}"
              f" {s['update_memory_mb_max']:7.1f} {s['refit_memory_mb_max']:7.1f}"
              f" {s['update_traced_mb_max']:7.1f} {s['refit_traced_mb_first']:7.1f}")
    new = results["new_artists"]
    print(f"\nnew artists ({new['held_out_artists']} held out, {new['listener_pairs']} listener pairs):")
    for method in ("funnel (update)", "funnel (unplayed in the fitted catalogue)", "popularity", "random"):
        r = new[method]
        print(f"  {method:<42} pairs {r['pair_share']:.4f}"
              + (f" (not self-tagged {r['pair_share_not_tagged_by_listener']:.4f})" if method != "random" else "")
              + f", listeners with any {r['listener_share_any']:.4f}"
              + (f", artists in anyone's top 20: {r['held_out_artists_in_anyones_top']}" if method != "random" else ""))
    print(f"wall {results['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()
