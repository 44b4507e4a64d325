"""What a fit on a sample of listeners (``fit_users``) costs and saves against a fit on all of them.

On a synthetic dataset of ``--size`` (benchmarks/scale.py's sizes), split per user (20% of
each listener's artists held out, seed 0), three methods are fitted, each in a fresh process
so that its peak memory is its own: the ALS-only baseline, the funnel on every listener, and
the funnel on ``--fit-users`` of them. Each recommends 20 artists to the same ``--eval-users``
random test listeners; NDCG@10 is compared per listener (paired, with its standard error),
for every evaluated listener, for those outside the sample, and on tail artists (held-out
pairs whose artist is outside the 20% with most listeners), beside the share of
recommendations that are tail artists.

    python benchmarks/sampled_fit.py --size 500k --fit-users 100000
    python benchmarks/sampled_fit.py --size 20k --fit-users 4000      # a quick look

Writes benchmarks/results/sampled_fit_SIZE.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
K = 10


def per_user_ndcg(recs: pd.DataFrame, test: pd.DataFrame, users: np.ndarray) -> np.ndarray:
    """NDCG@K of each of ``users`` (sorted) against the held-out pairs of ``test``."""
    top = recs[recs["rank"] <= K]
    held = pd.MultiIndex.from_frame(test[["user_id", "artist_id"]])
    hit = pd.MultiIndex.from_frame(top[["user_id", "artist_id"]]).isin(held)
    gains = np.where(hit, 1.0 / np.log2(top["rank"].to_numpy() + 1.0), 0.0)
    dcg = pd.Series(gains).groupby(top["user_id"].to_numpy()).sum().reindex(users, fill_value=0.0).to_numpy()
    relevant = test.groupby("user_id").size().reindex(users, fill_value=0).to_numpy()
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, K + 2)))])[np.minimum(relevant, K)]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), np.nan)


def run_one(size: str, method: str, fit_users: int, eval_users: int) -> dict:
    """Fit and evaluate one method (inside a fresh process)."""
    from memory import PeakMemory
    from scale import dataset

    from funnel import Recommender, split
    from funnel.baselines import ALSRecommender

    with PeakMemory(interval=0.1) as memory:
        data = dataset(size)
        train, test = split.per_user(data, seed=0)
        del data
        started = time.perf_counter()
        if method == "als":
            model = ALSRecommender().fit(train)
        else:
            model = Recommender(fit_users=fit_users if method == "sampled" else None).fit(train)
        fit_seconds = time.perf_counter() - started
    # a seed of its own: the sample of listeners is drawn with seed 0, and a draw with the same seed
    # from as many listeners would begin with the same ones
    users = np.sort(np.random.default_rng(2024).choice(np.unique(test["user_id"].to_numpy()), eval_users,
                                                    replace=False))
    test = test[test["user_id"].isin(users)]
    started = time.perf_counter()
    recs = model.recommend_all(n=20, users=users)
    recommend_seconds = time.perf_counter() - started
    plays = np.asarray((train.matrix > 0).sum(axis=0)).ravel()
    head = train.artist_ids[np.argsort(-plays, kind="stable")[: len(plays) // 5]]
    out = {"method": method, "fit_seconds": fit_seconds, "peak_memory_mb": memory.peak_mb,
           "recommend_seconds": recommend_seconds, "users": users.tolist(),
           "ndcg": per_user_ndcg(recs, test, users).tolist(),
           "tail_ndcg": per_user_ndcg(recs, test[~test["artist_id"].isin(head)], users).tolist(),
           "tail_share_of_recommendations": float((~recs["artist_id"].isin(head)).mean())}
    if method == "sampled":
        rows = model.model_rows_[train.user_index(users)]
        out["outside_sample"] = (rows < 0).tolist()
    return out


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of ``a - b`` over listeners where both are defined, with its standard error."""
    ok = np.isfinite(a) & np.isfinite(b)
    diff = a[ok] - b[ok]
    return {"mean_a": float(a[ok].mean()), "mean_b": float(b[ok].mean()), "diff": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff))), "ratio": float(a[ok].mean() / b[ok].mean()),
            "listeners": int(ok.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="500k", choices=["lastfm", "20k", "100k", "500k"])
    parser.add_argument("--fit-users", type=int, default=100_000)
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.size, args.one, args.fit_users, args.eval_users)))
        return
    runs = {}
    for method in ("als", "full", "sampled"):
        print(f"{method} ...", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, __file__, "--size", args.size, "--fit-users", str(args.fit_users),
                                 "--eval-users", str(args.eval_users), "--one", method],
                                cwd=Path(__file__).parent, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
        runs[method] = json.loads(result.stdout.strip().splitlines()[-1])
        print({k: v for k, v in runs[method].items() if not isinstance(v, list)}, file=sys.stderr, flush=True)
    full, sampled, als = (runs[m] for m in ("full", "sampled", "als"))
    assert full["users"] == sampled["users"] == als["users"]
    outside = np.array(sampled["outside_sample"])
    ndcg = {m: np.array(runs[m]["ndcg"], float) for m in runs}
    tail = {m: np.array(runs[m]["tail_ndcg"], float) for m in runs}
    out = {
        "command": f"python benchmarks/sampled_fit.py --size {args.size} --fit-users {args.fit_users} "
                   f"--eval-users {args.eval_users}",
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "fit_seconds": {m: runs[m]["fit_seconds"] for m in runs},
        "peak_memory_mb": {m: runs[m]["peak_memory_mb"] for m in runs},
        "recommend_seconds": {m: runs[m]["recommend_seconds"] for m in runs},
        "sampled_fit_over_als": sampled["fit_seconds"] / als["fit_seconds"],
        "sampled_memory_over_als": sampled["peak_memory_mb"] / als["peak_memory_mb"],
        "full_fit_over_als": full["fit_seconds"] / als["fit_seconds"],
        "full_memory_over_als": full["peak_memory_mb"] / als["peak_memory_mb"],
        "ndcg@10 sampled vs full": paired(ndcg["sampled"], ndcg["full"]),
        "ndcg@10 sampled vs full, listeners outside the sample": paired(ndcg["sampled"][outside],
                                                                       ndcg["full"][outside]),
        "ndcg@10 sampled vs full, listeners in the sample": paired(ndcg["sampled"][~outside], ndcg["full"][~outside]),
        "tail ndcg@10 sampled vs full": paired(tail["sampled"], tail["full"]),
        "ndcg@10 sampled vs ALS-only": paired(ndcg["sampled"], ndcg["als"]),
        "tail_share_of_recommendations": {m: runs[m]["tail_share_of_recommendations"] for m in runs},
    }
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"sampled_fit_{args.size}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
