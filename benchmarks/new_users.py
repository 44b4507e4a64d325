"""New listeners (fold-in): the funnel against the ALS-only baseline's own fold-in.

For each seed, 10% of the users are held out entirely (interactions and tag assignments);
both models are fitted on the rest. Each held-out user then gives the model 80% of their
artists (with play counts) as a history, and the remaining 20% are the test set.

    python benchmarks/new_users.py            # seeds 0-2, about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from funnel import Recommender, load_lastfm, split
from funnel.baselines import ALSRecommender, EASERecommender, PopularityRecommender
from funnel.evaluation import evaluate_new_users

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"funnel": lambda seed: Recommender(seed=seed),
           "ALS-only (fold-in)": lambda seed: ALSRecommender(seed=seed),
           "EASE": lambda seed: EASERecommender(),
           "popularity": lambda seed: PopularityRecommender()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Last.fm directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    data = load_lastfm(args.data)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in METHODS}
    for seed in args.seeds:
        parts = split.new_users(data, user_fraction=0.1, test_fraction=0.2, seed=seed)
        n_users = parts.test["user_id"].nunique()
        for name, make in METHODS.items():
            started = time.perf_counter()
            model = make(seed).fit(parts.train)
            fitted = time.perf_counter()
            metrics = evaluate_new_users(model, parts.history, parts.test)
            metrics.update(fit_seconds=fitted - started,
                           ms_per_user=1000 * (time.perf_counter() - fitted) / n_users)
            runs[name].append(metrics)
            print(f"seed {seed} {name:<20} ndcg@10 {metrics['ndcg@10']:.4f} "
                  f"({n_users} new users, {metrics['ms_per_user']:.1f} ms each)", flush=True)
    summary = {name: {key: [float(np.mean([r[key] for r in rs])), float(np.std([r[key] for r in rs]))]
                      for key in rs[0]} for name, rs in runs.items()}
    ratio = summary["funnel"]["ndcg@10"][0] / summary["ALS-only (fold-in)"]["ndcg@10"][0]
    lines = ["| method | ndcg@10 | precision@10 | recall@10 | map@10 | ndcg@20 | ms per new user |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['ndcg@10'][0]:.4f} ± {s['ndcg@10'][1]:.4f} | {s['precision@10'][0]:.4f} | "
                     f"{s['recall@10'][0]:.4f} | {s['map@10'][0]:.4f} | {s['ndcg@20'][0]:.4f} | "
                     f"{s['ms_per_user'][0]:.1f} |")
    table = "\n".join(lines)
    print(f"\n{table}\n\nfunnel / ALS-only fold-in NDCG@10: {ratio:.3f}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "new_users.json").write_text(json.dumps(
        {"seeds": args.seeds, "machine": f"{platform.machine()}, Python {platform.python_version()}",
         "ratio_ndcg@10": ratio, "summary": summary, "runs": runs}, indent=1))
    (args.output / "new_users.md").write_text(
        f"New listeners, seeds {args.seeds} (`python benchmarks/new_users.py`): mean ± std\n\n{table}\n\n"
        f"funnel / ALS-only fold-in NDCG@10: {ratio:.3f}\n")


if __name__ == "__main__":
    main()
