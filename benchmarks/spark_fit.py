"""A fit whose memory does not grow with the audience: ``train --engine spark`` on millions of listeners.

A synthetic play log (one row per listener and artist with a play count, Zipf-like artist
popularity inside taste clusters, and one genre label per artist) is written as Parquet in
chunks, so that no process ever holds it whole. Then, each as its own command, timed, with
the peak memory (proportional set size) of the command and every process it starts, the
Spark JVM included:

1. ``python main.py train --engine spark --master local[2] --events LOG --weight-col plays
   --artist-tags GENRES --fit-users N --histories-output PAIRS``: Spark aggregates the log
   and samples N listeners; this process fits on the sample and saves an artist-side model.
2. ``python main.py score --engine spark --master local[2] --histories PAIRS``: every
   listener scored (``--score-users`` of them, a prefix of the listener ids, when given).

    python benchmarks/spark_fit.py --listeners 500000 --artists 200000
    python benchmarks/spark_fit.py --listeners 5000000 --artists 500000 --score-users 5000000

Writes benchmarks/results/spark_fit_LISTENERSxARTISTS.json; the log goes to --work (deleted after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from memory import PeakMemory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CHUNK = 250_000  # listeners per Parquet file


def write_log(directory: Path, listeners: int, artists: int, per_user: int, clusters: int, seed: int) -> dict:
    """Write the synthetic log and genre labels; returns its size."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cluster_of = rng.integers(0, clusters, artists)
    members = [np.flatnonzero(cluster_of == c) for c in range(clusters)]
    weights = [1.0 / np.arange(1, len(m) + 1) ** 0.9 for m in members]  # Zipf-like inside each cluster
    weights = [w / w.sum() for w in weights]
    overall = 1.0 / np.arange(1, artists + 1) ** 1.1
    overall = overall / overall.sum()
    directory.mkdir(parents=True, exist_ok=True)
    rows = 0
    for start in range(0, listeners, CHUNK):
        users = np.arange(start, min(start + CHUNK, listeners), dtype=np.int64)
        taste = rng.integers(0, clusters, len(users))
        own = rng.random((len(users), per_user)) < 0.85
        picks = rng.choice(artists, size=(len(users), per_user), p=overall)
        for c in range(clusters):
            mine = taste == c
            picks[mine] = np.where(own[mine], members[c][rng.choice(len(members[c]), size=(mine.sum(), per_user),
                                                                    p=weights[c])], picks[mine])
        frame = pd.DataFrame({"user_id": np.repeat(users, per_user), "artist_id": picks.ravel(),
                              "plays": rng.geometric(0.2, picks.size).astype(np.int32)})
        frame = frame.drop_duplicates(["user_id", "artist_id"])
        frame.to_parquet(directory / f"part-{start // CHUNK:05d}.parquet", index=False)
        rows += len(frame)
    genres = pd.DataFrame({"artist_id": np.arange(artists, dtype=np.int64),
                           "tag": [f"genre {c}" for c in cluster_of]})
    genres.to_parquet(directory.parent / "genres.parquet", index=False)
    return {"listeners": listeners, "artists": artists, "rows": rows,
            "parquet_mb": sum(f.stat().st_size for f in directory.iterdir()) / 2**20}


def timed(command: list[str]) -> dict:
    """Run ``command``; its wall seconds and the peak summed PSS of it and its descendants (MB)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(interval=0.5, pid=process.pid) as memory:
        _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - started, "peak_memory_mb": memory.peak_mb, "stderr": err}


def timed_steps(command: list[str]) -> dict:
    """:func:`timed`, with the seconds of each step ``train --engine spark`` logs."""
    import re

    result = timed(command)
    log = result.pop("stderr")
    for step, pattern in (("aggregate_seconds", r"aggregated the plays to .* in ([0-9.]+)s"),
                          ("sample_seconds", r"sampled and collected the listeners in ([0-9.]+)s"),
                          ("fit_and_save_seconds", r"fitted and saved in ([0-9.]+)s")):
        found = re.search(pattern, log)
        result[step] = float(found.group(1)) if found else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=500_000)
    parser.add_argument("--artists", type=int, default=200_000)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--fit-users", type=int, default=100_000)
    parser.add_argument("--score-users", type=int, default=None,
                        help="score only this many listeners (default: every listener)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", type=Path, default=Path("/tmp/funnel_spark_fit"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    out: dict = {"command": "python benchmarks/spark_fit.py " + " ".join(sys.argv[1:]),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    started = time.perf_counter()
    out["log"] = write_log(args.work / "log", args.listeners, args.artists, args.per_user, args.clusters, seed=0)
    out["log"]["write_seconds"] = time.perf_counter() - started
    print(json.dumps(out["log"]), flush=True)
    pairs, model = args.work / "pairs.parquet", args.work / "artifacts"
    out["train"] = timed_steps([sys.executable, "main.py", "train", "--engine", "spark", "--master", args.master,
                          "--events", str(args.work / "log"), "--weight-col", "plays",
                          "--artist-tags", str(args.work / "genres.parquet"), "--fit-users", str(args.fit_users),
                          "--histories-output", str(pairs), "--artifacts", str(model), "--progress", "False",
                          "--runsvd", "True", "--judge", "True"])
    print(json.dumps({"train": out["train"]}), flush=True)
    histories = pairs
    if args.score_users is not None and args.score_users < args.listeners:
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        histories = args.work / "score_histories.parquet"
        table = ds.dataset(pairs).to_table(filter=ds.field("user_id") < args.score_users)
        pq.write_table(table, histories)
    out["score"] = timed([sys.executable, "main.py", "score", "--engine", "spark", "--master", args.master,
                          "--artifacts", str(model), "--histories", str(histories),
                          "--output", str(args.work / "recs.parquet")])
    out["score"].pop("stderr")
    scored = min(args.score_users or args.listeners, args.listeners)
    out["score"]["listeners"] = scored
    out["score"]["listeners_per_second"] = scored / out["score"]["seconds"]
    out["model_mb"] = sum(f.stat().st_size for f in (model / "model").iterdir()) / 2**20
    print(json.dumps({"score": out["score"], "model_mb": out["model_mb"]}), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"spark_fit_{args.listeners}x{args.artists}.json").write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
