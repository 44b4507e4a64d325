"""How the funnel's cost grows: fit time per stage, throughput, latency and memory by size.

Each size runs in its own subprocess per method so peak memory is the method's own: the
summed proportional set size of that process and any child processes it starts,
sampled every 0.1 s from data generation to the end of the batch recommendations.
A size that does not fit (its process fails or is killed, e.g. out of memory) is recorded as
such and the larger sizes are skipped; the index comparison runs at the largest size that fitted.

    python benchmarks/scale.py                       # Last.fm size, 20k and 100k users
    python benchmarks/scale.py --sizes lastfm 20k    # a subset
    python benchmarks/scale.py --sizes 500k          # the largest this machine holds
    python benchmarks/scale.py --only-index 500k     # redo only the index comparison
    python benchmarks/scale.py --index 100k          # print one, scale.json untouched

Writes benchmarks/results/scale.json and scale.png (log-log cost against users).
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

RESULTS = Path(__file__).parent / "results"
SIZES = {  # users, artists, artists per user, clusters
    "lastfm": (1_892, 17_632, 49, 20),
    "20k": (20_000, 50_000, 40, 50),
    "100k": (100_000, 100_000, 40, 100),
    "500k": (500_000, 200_000, 30, 200),
}
BATCH_USERS = 20_000   # users timed in the batch-throughput measurement
LATENCY_CALLS = 200    # single-user calls timed for p50/p99


def dataset(size: str):
    from funnel.data.synthetic import synthetic

    users, artists, per_user, clusters = SIZES[size]
    return synthetic(n_users=users, n_artists=artists, n_clusters=clusters, artists_per_user=per_user,
                     tag_rows_per_artist=6.0, seed=0)


def measure(size: str, method: str) -> dict:
    """Fit and time one method on one size (run inside a fresh process)."""
    from memory import PeakMemory

    from funnel import Recommender
    from funnel.baselines import ALSRecommender

    with PeakMemory(interval=0.1) as memory:  # the funnel's child processes included
        started = time.perf_counter()
        data = dataset(size)
        out = {"size": size, "method": method, "users": data.n_users, "artists": data.n_artists,
               "interactions": len(data.interactions), "generate_seconds": time.perf_counter() - started}
        started = time.perf_counter()
        model = (Recommender() if method == "funnel" else ALSRecommender()).fit(data)
        out["fit_seconds"] = time.perf_counter() - started
        if method == "funnel":
            out["fit_seconds_by_stage"] = {"ranker (history fit + training)": model.fit_seconds_["ranker"],
                                           **{f"serving {k}": v for k, v in model.stages_.fit_seconds_.items()}}
            out["index"] = [getattr(s, "index_kind", "-") for s in model.stages_.sources_]
        rng = np.random.default_rng(0)
        users = np.sort(rng.choice(data.user_ids, min(BATCH_USERS, data.n_users), replace=False))
        started = time.perf_counter()
        model.recommend_all(n=20, users=users)
        out["batch_users_per_second"] = len(users) / (time.perf_counter() - started)
    out["peak_memory_mb"] = memory.peak_mb  # single calls below add nothing; unsampled, they are not disturbed
    latencies = []
    for user in rng.choice(data.user_ids, LATENCY_CALLS):
        started = time.perf_counter()
        if method == "funnel":
            model.recommend(int(user), n=20)
        else:
            model.recommend_all(n=20, users=[int(user)])
        latencies.append(time.perf_counter() - started)
    out["latency_ms_p50"] = float(np.percentile(latencies, 50) * 1e3)
    out["latency_ms_p99"] = float(np.percentile(latencies, 99) * 1e3)
    return out


def index_comparison(size: str, n_queries: int = 2000) -> dict:
    """Candidate recall of IVF and HNSW relative to exact search, and their speed-up.

    Measured on the vectors approximate indexes search (the whole tag block) with the tag
    source's candidate count, then once more on the vectors cut to ``tag_search_dim`` that
    exact search uses on smaller catalogues (``cut_to_search_dim``), which shows why
    approximate indexes do not cut. Each has the default settings and a sweep of IVF
    ``nprobe`` and HNSW ``efSearch``.
    """
    from funnel.candidates import TagSource
    from funnel.factors import ArtistEmbedder
    from funnel.protocols import PartContext

    source = TagSource.Settings()  # the funnel's default tag source and artist vectors
    data = dataset(size)
    embedder = ArtistEmbedder.from_config(ArtistEmbedder.Settings(), PartContext()).fit(data)
    rng = np.random.default_rng(0)
    rows = rng.choice(data.n_users, min(n_queries, data.n_users), replace=False)
    history = data.matrix[rows]
    out = {"size": size, "artists": data.n_artists, "k": source.n, "queries": len(rows)}
    out.update(compare_indexes(embedder.vectors_, embedder.query(history, source.history_weighting), source.n))
    cut = embedder.search_vectors(source.search_dim)
    out["cut_to_search_dim"] = compare_indexes(cut, embedder.query(history, source.history_weighting, cut),
                                               source.n)
    return out


def compare_indexes(vectors: np.ndarray, queries: np.ndarray, k: int) -> dict:
    """Exact, IVF and HNSW search of ``queries`` over ``vectors``: recall of exact and speed-up."""
    from funnel.candidates.index import build_index, search

    def timed_search(index) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        ids, _ = search(index, queries, k)
        return ids, time.perf_counter() - started

    def recall(ids: np.ndarray) -> float:
        """Share of the returned artists that score at least the exact k-th best score.

        Artists with equal vectors tie, and any of them is as good as another; counting only
        the exact search's own picks would call the tied ones misses.
        """
        found = np.einsum("ij,ikj->ik", queries, vectors[np.maximum(ids, 0)])
        return float(np.mean((found >= kth_best[:, None] - 1e-5) & (ids >= 0)))

    out = {"dimensions": vectors.shape[1], "sweep": []}
    started = time.perf_counter()
    flat = build_index(vectors, "flat")
    build = time.perf_counter() - started
    exact_ids, exact_seconds = timed_search(flat)
    kth_best = np.einsum("ij,ij->i", queries, vectors[exact_ids[:, -1]])
    out["flat"] = {"build_seconds": build, "search_seconds": exact_seconds, "recall_vs_exact": 1.0,
                   "speedup": 1.0}
    for kind, knob, values in (("ivf", "nprobe", (4, 8, 16, 32, 64)), ("hnsw", "efSearch", (200, 300, 400, 600))):
        started = time.perf_counter()
        index = build_index(vectors, kind)
        build = time.perf_counter() - started
        ids, seconds = timed_search(index)
        out[kind] = {"build_seconds": build, "search_seconds": seconds, "recall_vs_exact": recall(ids),
                     "speedup": exact_seconds / seconds}
        params = index.hnsw if kind == "hnsw" else index
        default = getattr(params, knob)
        for value in values:
            setattr(params, knob, value)
            ids, seconds = timed_search(index)
            out["sweep"].append({"index": kind, knob: value, "recall_vs_exact": recall(ids),
                                 "speedup": exact_seconds / seconds})
            print(json.dumps(out["sweep"][-1]), file=sys.stderr, flush=True)
        setattr(params, knob, default)
    return out


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for method, style in (("funnel", "o-"), ("als", "s--")):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["users"])
        users = [r["users"] for r in mine]
        axes[0].plot(users, [r["fit_seconds"] for r in mine], style, label=method)
        axes[1].plot(users, [r["batch_users_per_second"] for r in mine], style, label=method)
        axes[2].plot(users, [r["peak_memory_mb"] for r in mine], style, label=method)
    for ax, label in zip(axes, ("fit seconds", "batch users / second", "peak memory (MB, PSS)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["lastfm", "20k", "100k"])
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--index", metavar="SIZE", choices=list(SIZES),
                        help="print only the index comparison at SIZE, as JSON")
    parser.add_argument("--only-index", metavar="SIZE", choices=list(SIZES),
                        help="only the index comparison at SIZE, written into the index_comparison of an "
                             "existing scale.json (its runs are kept)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    if args.index:
        print(json.dumps(index_comparison(args.index)))
        return
    if args.only_index:
        path = args.output / "scale.json"
        result = json.loads(path.read_text())
        result["index_comparison"] = index_comparison(args.only_index)
        result["index_command"] = f"python benchmarks/scale.py --only-index {args.only_index}"
        path.write_text(json.dumps(result, indent=2))
        print("index comparison:", json.dumps(result["index_comparison"]), flush=True)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    rows, failed, fitted = [], [], []
    for size in sorted(args.sizes, key=lambda name: SIZES[name][0]):
        if failed:
            break
        for method in ("als", "funnel"):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--one", size, method], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                reason = f"exit code {done.returncode}" + (" (killed: out of memory?)" if done.returncode < 0 else "")
                tail = done.stderr.strip().splitlines()[-1:] or [""]
                failed.append({"size": size, "method": method, "error": f"{reason} {tail[0]}".strip(),
                               "seconds_before_failure": time.perf_counter() - started})
                print(f"{size} {method}: did not complete: {failed[-1]['error']}; larger sizes skipped", flush=True)
                break
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{size} {method}: fit {r['fit_seconds']:.1f}s, {r['batch_users_per_second']:.0f} users/s, "
                  f"p99 {r['latency_ms_p99']:.1f} ms, peak {r['peak_memory_mb']:.0f} MB", flush=True)
        else:
            fitted.append(size)
    if not fitted:
        raise SystemExit(f"no size completed: {failed}")
    done = subprocess.run([sys.executable, __file__, "--index", fitted[-1]], capture_output=True, text=True,
                          check=True)
    indexes = json.loads(done.stdout.strip().splitlines()[-1])
    print("index comparison:", json.dumps(indexes), flush=True)
    result = {"command": "python benchmarks/scale.py --sizes " + " ".join(args.sizes),
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python "
                         f"{platform.python_version()}",
              "runs": rows, "did_not_fit": failed, "index_comparison": indexes}
    (args.output / "scale.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.output)


if __name__ == "__main__":
    main()
