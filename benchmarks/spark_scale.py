"""Scoring on Spark against scoring in process: equality, per-core throughput, and the artist-side model's size.

Each size runs in its own process: fit the funnel on a synthetic dataset (a catalogue of
50k artists at every size, so only the users grow), save it artist-side only, write the
training histories to Parquet, then score every listener twice in the same process and run:

- in process: read the Parquet histories, ``Recommender.recommend_for_histories`` on
  ``n_threads`` = all cores, write the recommendations to Parquet;
- on Spark ``local[N]`` (N = all cores): ``spark.read.parquet``, ``funnel.spark.recommend``
  grouped into partitions of about 25k listeners, ``funnel.spark.write_parquet``.

Both are timed from reading the histories to the written file (Spark's session start-up is
not counted: a cluster has one running), and compared: the same artists in the same order
for every listener, scores within 1e-5. Last.fm runs the same way with the default model.
The scale-out table projects the measured per-core throughput to 10M and 100M listeners.

    python benchmarks/spark_scale.py                      # lastfm, 20k, 100k, 500k
    python benchmarks/spark_scale.py --sizes lastfm 100k  # a subset (merged into spark_scale.json)

Writes benchmarks/results/spark_scale.json and spark_scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
ARTISTS, PER_USER, CLUSTERS = 50_000, 30, 50
SIZES = {"lastfm": None, "20k": 20_000, "100k": 100_000, "500k": 500_000}
USERS_PER_PARTITION = 25_000
SPARK_DRIVER_MEMORY = "6g"  # local mode: the driver's JVM is the executor, and holds the shuffle
PROJECTION = (10_000_000, 100_000_000)
PROJECTION_CORES = (64, 256, 1024)


def dataset(size: str):
    if SIZES[size] is None:
        from funnel import load_lastfm

        return load_lastfm()
    from funnel.data.synthetic import synthetic

    return synthetic(n_users=SIZES[size], n_artists=ARTISTS, n_clusters=CLUSTERS, artists_per_user=PER_USER,
                     tag_rows_per_artist=6.0, seed=0)


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def compare(local, spark) -> dict:
    """Same artists in the same order for every listener, the largest score difference, and what differs.

    Where a listener's two lists differ, each differing position is a swap of two artists
    whose in-process scores are ``swap_gap`` apart (near ties, if the gap is below the
    scores' own difference), or an artist missing from the other list.
    """
    columns = ["user_id", "rank"]
    a = local.sort_values(columns).reset_index(drop=True)
    b = spark.sort_values(columns).reset_index(drop=True)
    same_rows = len(a) == len(b) and bool((a["user_id"].to_numpy() == b["user_id"].to_numpy()).all())
    out = {"rows": len(a), "spark_rows": len(b), "same_artists_same_order": False,
           "max_score_difference": float("nan")}
    if same_rows:
        differ = a["artist_id"].to_numpy() != b["artist_id"].to_numpy()
        out["same_artists_same_order"] = not differ.any()
        out["max_score_difference"] = float(np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max())
        out["listeners_differing"] = int(a.loc[differ, "user_id"].nunique())
        out["positions_differing"] = int(differ.sum())
        # the in-process score of the artist Spark put at each differing position
        theirs = b.loc[differ, ["user_id", "artist_id"]].merge(a[["user_id", "artist_id", "score"]],
                                                               on=["user_id", "artist_id"], how="left")
        out["artists_only_in_one_list"] = int(theirs["score"].isna().sum())
        gaps = np.abs(a.loc[differ, "score"].to_numpy() - theirs["score"].to_numpy())
        out["max_swap_gap"] = float(np.nanmax(gaps)) if np.isfinite(gaps).any() else 0.0
    out["equal_within_1e-5"] = bool(out["same_artists_same_order"] and out["max_score_difference"] <= 1e-5)
    return out


def measure(size: str) -> dict:
    """Fit, save, and score one size both ways (run in a fresh process)."""
    import pandas as pd
    from pyspark.sql import SparkSession

    from funnel import Recommender
    from funnel import spark as funnel_spark

    cores = os.cpu_count() or 1
    out: dict = {"size": size}
    data = dataset(size)
    out.update(users=data.n_users, artists=data.n_artists, interactions=len(data.interactions))
    started = time.perf_counter()
    model = Recommender().fit(data)
    out["fit_seconds"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="funnel-spark-") as tmp:
        work = Path(tmp)
        model.save(work / "full")
        model.save(work / "model", artist_side_only=True)
        out["full_model_mb"] = directory_mb(work / "full")
        out["artist_side_model_mb"] = directory_mb(work / "model")
        loads = []
        for _ in range(3):
            started = time.perf_counter()
            Recommender.load(work / "model", n_threads=1)
            loads.append(time.perf_counter() - started)
        out["model_load_seconds"] = float(np.median(loads))
        histories = data.interactions[["user_id", "artist_id", "weight"]]
        histories.to_parquet(work / "histories.parquet")
        del model, data, histories

        started = time.perf_counter()
        light = Recommender.load(work / "model")
        frame = pd.read_parquet(work / "histories.parquet")
        read = time.perf_counter() - started
        recommendations = light.recommend_for_histories(frame, n=20)
        scored = time.perf_counter() - started
        recommendations.to_parquet(work / "local.parquet")
        local_seconds = time.perf_counter() - started
        out["local"] = {"seconds": local_seconds, "scoring_seconds": scored - read, "cores": cores,
                        "users_per_second_per_core": out["users"] / local_seconds / cores}
        del light, frame, recommendations

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = (SparkSession.builder.master(f"local[{cores}]").appName("funnel spark_scale")
                 .config("spark.ui.enabled", "false").config("spark.driver.memory", SPARK_DRIVER_MEMORY)
                 .config("spark.sql.session.timeZone", "UTC").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        partitions = max(2 * cores, -(-out["users"] // USERS_PER_PARTITION))
        started = time.perf_counter()
        result = funnel_spark.recommend(spark.read.parquet(str(work / "histories.parquet")), work / "model", n=20,
                                        partitions=partitions)
        funnel_spark.write_parquet(result, work / "spark.parquet")
        spark_seconds = time.perf_counter() - started
        spark.stop()
        out["spark"] = {"seconds": spark_seconds, "cores": cores, "partitions": partitions,
                        "users_per_second_per_core": out["users"] / spark_seconds / cores}
        out["spark_over_local_per_core"] = (out["spark"]["users_per_second_per_core"]
                                            / out["local"]["users_per_second_per_core"])
        out["equality"] = compare(pd.read_parquet(work / "local.parquet"), pd.read_parquet(work / "spark.parquet"))
    return out


def projection(rows: list[dict]) -> list[dict]:
    """Hours to refresh 10M and 100M listeners on C cores, from the largest size's Spark per-core rate."""
    largest = max((r for r in rows if r["size"] != "lastfm"), key=lambda r: r["users"])
    rate = largest["spark"]["users_per_second_per_core"]
    table = []
    for users in PROJECTION:
        for cores in PROJECTION_CORES:
            partitions = -(-users // USERS_PER_PARTITION)
            # partitions run in waves, one per core; each core loads the model once
            waves = -(-partitions // cores)
            seconds = waves * USERS_PER_PARTITION / rate + largest["model_load_seconds"]
            table.append({"users": users, "cores": cores, "partitions": partitions, "waves": waves,
                          "minutes": seconds / 60, "from_size": largest["size"], "per_core_rate": rate})
    return table


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = sorted((r for r in rows if r["size"] != "lastfm"), key=lambda r: r["users"])
    users = [r["users"] for r in synthetic]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(users, [r["local"]["users_per_second_per_core"] for r in synthetic], "o-", label="in process")
    axes[0].plot(users, [r["spark"]["users_per_second_per_core"] for r in synthetic], "s--", label="Spark local")
    axes[0].set_ylabel("listeners / second / core")
    axes[1].plot(users, [r["full_model_mb"] for r in synthetic], "o-", label="full model")
    axes[1].plot(users, [r["artist_side_model_mb"] for r in synthetic], "s--", label="artist side only")
    axes[1].set_ylabel("saved model (MB)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(f"training listeners ({ARTISTS // 1000}k artists)")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spark_scale.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--one", metavar="SIZE", choices=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    path = args.output / "spark_scale.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = {r["size"]: r for r in old.get("runs", [])}
    for size in args.sizes:
        print(f"{size}: fitting and scoring ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--one", size], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{size} failed (exit {done.returncode})")
        rows[size] = json.loads(done.stdout.strip().splitlines()[-1])
        rows[size]["measured"] = time.strftime("%Y-%m-%d %H:%M")
        print(json.dumps(rows[size], indent=1), file=sys.stderr, flush=True)
    runs = [rows[s] for s in SIZES if s in rows]
    import pyspark

    result = {"command": "python benchmarks/spark_scale.py " + " ".join(sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "pyspark": pyspark.__version__},
              "runs": runs, "projection": projection(runs) if any(r["size"] != "lastfm" for r in runs) else []}
    args.output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    if any(r["size"] != "lastfm" for r in runs):
        plot(runs, args.output)
    for r in runs:
        print(f"{r['size']:>7} {r['users']:>8} users  model {r['artist_side_model_mb']:7.1f} MB (full "
              f"{r['full_model_mb']:7.1f})  load {r['model_load_seconds']:.2f}s  local "
              f"{r['local']['users_per_second_per_core']:8.0f}/s/core  spark "
              f"{r['spark']['users_per_second_per_core']:8.0f}/s/core  ratio {r['spark_over_local_per_core']:.2f}  "
              f"equal {r['equality']['equal_within_1e-5']} (max diff {r['equality']['max_score_difference']:.1e}, "
              f"{r['equality'].get('listeners_differing', '?')} listeners' lists differ)")


if __name__ == "__main__":
    main()
