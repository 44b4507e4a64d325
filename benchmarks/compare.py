"""Compare the funnel with its ablations and baselines on the public protocols of DESIGN.md.

    python benchmarks/compare.py            # per-user, global and temporal protocols, seeds 0-2
    python benchmarks/compare.py --quick    # smoke run: one seed, per-user split, 4 methods
    python benchmarks/compare.py --protocols temporal --merge   # re-run one protocol, keep the others
    python benchmarks/compare.py --protocols recbole --seeds 0 1 2 3 4 --merge   # RecBole-GNN's LastFM protocol

Every method counts artists a listener tagged as known and never recommends them (the
known-artist rule); "funnel, tagged artists not known" shows the funnel without the rule.
The temporal protocol runs on the synthetic event log of ``benchmarks/eventlog.py`` (a new
log per seed): each listener's artists started last are held out. The RecBole protocol is
RecBole-GNN's published LastFM setting: a per-user 8:1:1 ratio split rounded as RecBole does
(``split.ratio``), models trained on the 80% part, the full catalogue ranked with training
and validation artists masked, metrics on the test 10%; the published rows are printed beside.

Writes benchmarks/results/compare.json, compare.md, quality.png and candidate_recall.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from eventlog import event_log_dataset
from memory import PeakMemory

from funnel import FunnelConfig, Recommender, load_lastfm, split
from funnel.baselines import (
    ALSRecommender,
    BiasedSVDRecommender,
    BPRRecommender,
    EASERecommender,
    PopularityRecommender,
    TagIndexRecommender,
)
from funnel.batch import Batch
from funnel.candidates import TagSource
from funnel.evaluation import candidate_recall, novelty, ranking_metrics
from funnel.factors import ArtistEmbedder
from funnel.protocols import PartContext

RESULTS = Path(__file__).parent / "results"
KS = (10, 20)
RECALL_KS = (25, 50, 100, 200, 400)


class StageOneOnly:
    """Stage one alone: the tag-embedding index's candidates in retrieval order (as configured
    in the funnel, searching the ``search_dim`` strongest tag components)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, dataset):
        context = PartContext(seed=self.seed)
        embedder = ArtistEmbedder.from_config(ArtistEmbedder.Settings(), context).fit(dataset)
        context = PartContext({"embedder": embedder}, seed=self.seed)
        self.source_ = TagSource.from_config(TagSource.Settings(n=max(KS)), context).fit(dataset)
        self.dataset_ = dataset
        return self

    def recommend_all(self, n=20, users=None):
        d = self.dataset_
        rows = d.user_index(np.asarray(users))
        ids, scores = self.source_.retrieve(Batch(rows, d.matrix[rows], known=d.known_matrix()[rows]))
        ids, scores = ids[:, :n], scores[:, :n]
        r, c = np.nonzero(ids >= 0)
        return pd.DataFrame({"user_id": d.user_ids[rows[r]], "rank": c + 1,
                             "artist_id": d.artist_ids[ids[r, c]], "score": scores[r, c]})


DEFAULTS = FunnelConfig()
TEMPORAL = "temporal: last-started 20% (synthetic event log)"
RECBOLE = "RecBole 8:1:1 per-user ratio split (RecBole-GNN's LastFM protocol)"
# RUCAIBox/RecBole-GNN, results/social/lastfm.md: NDCG@10, Recall@10, Precision@10 (None: not copied here)
PUBLISHED = {"MHCN": (0.2068, 0.2123, 0.1042), "SEPT": (0.2057, None, None), "LightGCN": (0.1972, None, None),
             "NGCF": (0.1898, None, None), "BPR": (0.1674, None, None)}


def without(group: str) -> tuple[str, ...]:
    """The default feature groups but ``group``."""
    return tuple(name for name in DEFAULTS.features if name != group)


def methods(seed: int, quick: bool, temporal: bool = False, recbole: bool = False
            ) -> dict[str, Callable[[], object]]:
    table = {
        "funnel": lambda: Recommender(seed=seed),
        "ALS-only (tuned)": lambda: ALSRecommender(seed=seed),
        "EASE": lambda: EASERecommender(),
        "BiasedSVD": lambda: BiasedSVDRecommender(seed=seed),
        "popularity": lambda: PopularityRecommender(),
    }
    if quick:
        return table
    if recbole:
        table.update({"BPR": lambda: BPRRecommender(seed=seed),
                      "funnel, tagged artists not known": lambda: Recommender(seed=seed, tagged_known=False)})
        return table
    if temporal:
        table.update({
            "funnel without recency features": lambda: Recommender(seed=seed, features=without("recency")),
            "funnel with recency weighting (60 days)": lambda: Recommender(seed=seed, recency_half_life_days=60.0),
            "funnel, random ranker labels": lambda: Recommender(seed=seed, ranker_labels="random"),
            "tag index (genres)": lambda: TagIndexRecommender(seed=seed),
        })
        return table
    table.update({
        "stage one only (tag index)": lambda: StageOneOnly(seed),
        "funnel without SVD features": lambda: Recommender(seed=seed, features=without("svd")),
        "funnel without ALS features": lambda: Recommender(seed=seed, features=without("als")),
        "funnel, tag index only": lambda: Recommender(seed=seed, candidates={"tags": DEFAULTS.candidates["tags"]}),
        "ALS (seed analysis config)": lambda: ALSRecommender(factors=100, alpha=0.51, regularization=0.168,
                                                             confidence="raw", iterations=15, seed=seed),
        "BPR": lambda: BPRRecommender(seed=seed),
        "funnel, tagged artists not known": lambda: Recommender(seed=seed, tagged_known=False),
    })
    return table


def run_one(make: Callable[[], object], train, test, recall_curve: bool = False,
            masked: pd.DataFrame | None = None) -> dict:
    """Fit on ``train`` and score on ``test``; artists of ``masked`` (user, artist pairs) are never counted."""
    users = np.intersect1d(test["user_id"].unique(), train.user_ids)
    test = test[test["user_id"].isin(users)]
    extra = int(masked.groupby("user_id").size().max()) if masked is not None and len(masked) else 0
    with PeakMemory() as memory:
        started = time.perf_counter()
        model = make().fit(train)
        fit_time = time.perf_counter() - started
        started = time.perf_counter()
        recs = model.recommend_all(n=max(KS) + extra, users=users)
        recommend_time = time.perf_counter() - started
    if extra:  # drop the masked artists, then rank what is left
        pairs = pd.MultiIndex.from_frame(recs[["user_id", "artist_id"]])
        recs = recs[~pairs.isin(pd.MultiIndex.from_frame(masked[["user_id", "artist_id"]]))].copy()
        recs["rank"] = recs.groupby("user_id").cumcount() + 1
        recs = recs[recs["rank"] <= max(KS)]
    row = ranking_metrics(recs, test, KS)
    row.update(coverage=recs["artist_id"].nunique() / train.n_artists, novelty=novelty(recs, train),
               fit_seconds=fit_time, recommend_seconds=recommend_time, peak_memory_mb=memory.mb)
    if isinstance(model, Recommender):
        row["candidate_recall"] = candidate_recall(model, train, test)
        if recall_curve:
            row["candidate_recall_by_k"] = recall_by_k(model, train, test)
    return row


def recall_by_k(model: Recommender, train, test) -> dict[str, dict[str, float]]:
    """Candidate recall when every source returns K candidates, per source and merged."""
    sources = model.stages_.sources_
    original = [s.n_candidates for s in sources]
    out: dict[str, dict[str, float]] = {}
    try:
        for k in RECALL_KS:
            for s in sources:
                s.n_candidates = k
            out.setdefault("merged", {})[str(k)] = candidate_recall(model, train, test)
            for s in sources:
                keep = model.stages_.sources_
                model.stages_.sources_ = [s]
                out.setdefault(s.name, {})[str(k)] = candidate_recall(model, train, test)
                model.stages_.sources_ = keep
    finally:
        for s, k in zip(sources, original):
            s.n_candidates = k
    return out


def summarise(runs: list[dict]) -> dict:
    metrics = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {m: {"mean": float(np.mean([r[m] for r in runs])), "std": float(np.std([r[m] for r in runs]))}
            for m in metrics}


def markdown(results: dict) -> str:
    cols = ["precision@10", "recall@10", "ndcg@10", "map@10", "precision@20", "recall@20", "ndcg@20",
            "map@20", "candidate_recall", "coverage", "novelty", "fit_seconds", "recommend_seconds",
            "peak_memory_mb"]
    lines = []
    for protocol, by_method in results["protocols"].items():
        command = results.get("commands", {}).get(protocol, results["command"])
        seeds = results.get("seeds_by_protocol", {}).get(protocol, results["seeds"])
        lines += [f"### {protocol} (`{command}`, seeds {', '.join(map(str, seeds))}; mean ± std)", "",
                  "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, summary in by_method.items():
            cells = []
            for c in cols:
                if c not in summary:
                    cells.append("")
                elif c.endswith("seconds") or c.endswith("_mb") or c == "novelty":
                    cells.append(f"{summary[c]['mean']:.2f}")
                else:
                    cells.append(f"{summary[c]['mean']:.4f} ± {summary[c]['std']:.4f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if protocol == RECBOLE:
            lines += ["", "Published on this protocol (RUCAIBox/RecBole-GNN, `results/social/lastfm.md`; "
                      "NDCG@10 / Recall@10 / Precision@10):", ""]
            lines += [f"- {name}: " + " / ".join("-" if v is None else f"{v:.4f}" for v in values)
                      for name, values in PUBLISHED.items()]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, runs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(results["protocols"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(7 * len(protocols), 5), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        by_method = results["protocols"][protocol]
        names = list(by_method)
        means = [by_method[n]["ndcg@10"]["mean"] for n in names]
        stds = [by_method[n]["ndcg@10"]["std"] for n in names]
        ax.barh(names, means, xerr=stds, color=["tab:blue" if n.startswith("funnel") else "tab:gray" for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("NDCG@10 (mean ± std over seeds)")
        ax.set_title(protocol)
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    protocol = protocols[0]
    funnel_runs = runs[protocol]["funnel"]
    for source in funnel_runs[0]["candidate_recall_by_k"]:
        values = [np.mean([r["candidate_recall_by_k"][source][str(k)] for r in funnel_runs]) for k in RECALL_KS]
        ax.plot(RECALL_KS, values, marker="o", label=source)
    ax.set_xscale("log")
    ax.set_xticks(RECALL_KS, [str(k) for k in RECALL_KS])
    ax.set_xlabel("candidates per source (K)")
    ax.set_ylabel("candidate recall (held-out artists retrieved)")
    ax.set_title(f"Stage-one recall, {protocol}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "candidate_recall.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Last.fm directory (default: FUNNEL_DATA or ../shared)")
    parser.add_argument("--quick", action="store_true", help="one seed, per-user split, four methods")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", choices=["per_user", "global", "temporal", "recbole"],
                        default=["per_user", "global", "temporal"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true",
                        help="keep the other protocols of the existing compare.json; replace only those run now")
    args = parser.parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    data = load_lastfm(args.data)
    seeds = args.seeds[:1] if args.quick else args.seeds
    chosen = ["per_user"] if args.quick else args.protocols
    every = {
        "per_user": ("per-user 20% holdout", lambda s: split.per_user(data, seed=s)),
        "global": ("global 80/20 (implicit train_test_split)", lambda s: split.global_random(data, 0.8, seed=s)),
        "temporal": (TEMPORAL, lambda s: split.temporal(event_log_dataset(s))),
        "recbole": (RECBOLE, lambda s: split.ratio(data, (0.8, 0.1, 0.1), seed=s)),
    }
    protocols = dict(every[name] for name in chosen)
    every_names = list(every)
    runs: dict[str, dict[str, list]] = {}
    for protocol, make_split in protocols.items():
        for seed in seeds:
            parts = make_split(seed)
            train, test = parts.train, parts.test
            masked = parts.validation if protocol == RECBOLE else None  # tuning data, never counted
            for name, make in methods(seed, args.quick, temporal=protocol == TEMPORAL,
                                      recbole=protocol == RECBOLE).items():
                row = run_one(make, train, test, recall_curve=name == "funnel", masked=masked)
                runs.setdefault(protocol, {}).setdefault(name, []).append(row)
                print(f"{protocol} seed {seed} {name}: ndcg@10 {row['ndcg@10']:.4f} "
                      f"fit {row['fit_seconds']:.1f}s", flush=True)
    command = ("python benchmarks/compare.py" + (" --quick" if args.quick else "")
               + ("" if args.quick or chosen == every_names else " --protocols " + " ".join(chosen))
               + ("" if args.quick or seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, seeds))))
    results = {
        "command": command,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "seeds": seeds,
        "protocols": {p: {m: summarise(r) for m, r in by.items()} for p, by in runs.items()},
        "commands": {p: command for p in runs},
        "seeds_by_protocol": {p: seeds for p in runs},
        "runs": runs,
    }
    if args.merge and (out / "compare.json").is_file():
        before = json.loads((out / "compare.json").read_text())
        kept = [p for p in before["protocols"] if p not in runs]
        results["protocols"] = {**{p: before["protocols"][p] for p in kept}, **results["protocols"]}
        results["runs"] = {**{p: before["runs"][p] for p in kept}, **runs}
        old_commands = before.get("commands", {p: before["command"] for p in before["protocols"]})
        results["commands"] = {**{p: old_commands[p] for p in kept}, **results["commands"]}
        old_seeds = before.get("seeds_by_protocol", {p: before["seeds"] for p in before["protocols"]})
        results["seeds_by_protocol"] = {**{p: old_seeds[p] for p in kept}, **results["seeds_by_protocol"]}
        results["command"] = "; ".join(dict.fromkeys(results["commands"].values()))
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    (out / "compare.md").write_text(markdown(results))
    plot(results, results["runs"], out)
    print(markdown(results))


if __name__ == "__main__":
    main()
