"""Aggregating a listening log to (user, artist) rows: pandas against ``funnel.data.events.read_events`` (DuckDB).

The log is ``funnel.data.synthetic.synthetic_events`` (string user ids, UUID artist ids, times),
written to one Parquet file in a temporary directory; generating and writing it is not
timed. Each method then runs in a fresh process, timed from before it reads the file to
the aggregate in memory as a pandas frame:

- pandas: ``pd.read_parquet`` of the three columns, then
  ``groupby(["user", "artist_mbid"]).ts.agg(["count", "min", "max"])``;
- read_events: ``read_events(path, user="user", artist="artist_mbid", timestamp="ts")``,
  one GROUP BY in DuckDB (and, with ``--memory-limit``, again with DuckDB held to that
  limit and spilling to a temporary directory).

CPU seconds are the child's user plus system time over the same span (DuckDB runs a thread
per core, pandas mostly one). Peak memory is the child's peak resident set size (``VmHWM``
of ``/proc/self/status``, read before it writes its aggregate for the comparison), beside
its peak after the imports.
The aggregates must be identical: the same pairs, counts, first and last listens.

    python benchmarks/ingest.py
    python benchmarks/ingest.py --events 1000000 --users 20000 --artists 5000 --memory-limit 200MB

Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux).

    ``VmHWM`` rather than ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``exec``, so a child would start from the size of the parent that forked it, which holds the
    whole generated log.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def job(method: str, parquet: str, output: str, memory_limit: str | None, temp: str | None) -> None:
    """One method in this (fresh) process; prints its figures as JSON and writes its aggregate to ``output``."""
    import pandas as pd

    from funnel.data.events import read_events

    imported = rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if method == "pandas":
        events = pd.read_parquet(parquet, columns=["user", "artist_mbid", "ts"])
        grouped = events.groupby(["user", "artist_mbid"]).ts.agg(["count", "min", "max"]).reset_index()
        aggregate = grouped.set_axis(["user_id", "artist_id", "weight", "first_listen", "last_listen"], axis=1)
    else:
        aggregate = read_events(parquet, user="user", artist="artist_mbid", timestamp="ts",
                                memory_limit=memory_limit, temp_directory=temp)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    peak = rss_mb()
    aggregate.astype({"user_id": str, "artist_id": str, "weight": "int64"}).to_parquet(output, index=False)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "after_imports_mb": imported,
                      "pairs": len(aggregate)}))


def run_job(method: str, parquet: str, output: str, memory_limit: str | None = None,
            temp: str | None = None) -> dict:
    command = [sys.executable, __file__, "--job", method, "--parquet", parquet, "--output", output]
    if memory_limit:
        command += ["--memory-limit", memory_limit, "--temp", temp or ""]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def same_aggregates(left: str, right: str) -> dict:
    """Whether two aggregates agree pair by pair (both sorted by user, artist)."""
    import pandas as pd

    a, b = pd.read_parquet(left), pd.read_parquet(right)
    checks = {"pairs": len(a) == len(b)}
    if checks["pairs"]:
        checks["ids"] = bool((a.user_id.to_numpy() == b.user_id.to_numpy()).all()
                             and (a.artist_id.to_numpy() == b.artist_id.to_numpy()).all())
        checks["counts"] = bool((a.weight.to_numpy() == b.weight.to_numpy()).all())
        checks["first_last"] = bool((a.first_listen.to_numpy() == b.first_listen.to_numpy()).all()
                                    and (a.last_listen.to_numpy() == b.last_listen.to_numpy()).all())
    return checks


def machine() -> str:
    with open("/proc/meminfo") as info:
        total = int(info.readline().split()[1]) / 2**20
    return (f"{platform.machine()}, {os.cpu_count()} cores, {total:.0f} GB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def versions() -> dict:
    import duckdb
    import numpy
    import pandas
    import pyarrow

    import funnel

    return {"funnel": funnel.__version__, "duckdb": duckdb.__version__, "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="plays in the log")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--artists", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", default=None,
                        help="also run read_events with this DuckDB memory_limit (e.g. 500MB), spilling to a temp dir")
    parser.add_argument("--job", choices=["pandas", "read_events"], help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--temp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job(args.job, args.parquet, args.output, args.memory_limit, args.temp)
        return

    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.data.synthetic import synthetic_events

    out: dict = {"command": " ".join(["python", "benchmarks/ingest.py", *sys.argv[1:]]), "machine": machine(),
                 "versions": versions(), "load_average_1min": {"start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        events, _ = synthetic_events(n_users=args.users, n_artists=args.artists, n_events=args.events,
                                     seed=args.seed)
        parquet = f"{work}/events.parquet"
        pq.write_table(pa.Table.from_pandas(events, preserve_index=False), parquet)
        del events
        out["log"] = {"events": args.events, "users": args.users, "artists": args.artists,
                      "parquet_mb": os.path.getsize(parquet) / 1e6,
                      "generate_and_write_seconds": time.perf_counter() - started}
        print(f"{args.events:,} events ({args.users:,} users x {args.artists:,} artists), Parquet "
              f"{out['log']['parquet_mb']:.0f} MB, generated in {out['log']['generate_and_write_seconds']:.0f} s",
              flush=True)
        runs = {"pandas": run_job("pandas", parquet, f"{work}/pandas.parquet"),
                "read_events": run_job("read_events", parquet, f"{work}/read_events.parquet")}
        checks = {"read_events": same_aggregates(f"{work}/pandas.parquet", f"{work}/read_events.parquet")}
        if args.memory_limit:
            label = f"read_events, memory_limit={args.memory_limit}"
            runs[label] = run_job("read_events", parquet, f"{work}/limited.parquet", args.memory_limit,
                                  f"{work}/spill")
            checks[label] = same_aggregates(f"{work}/pandas.parquet", f"{work}/limited.parquet")
    out["load_average_1min"]["end"] = os.getloadavg()[0]  # other work on the machine slows both methods
    for run in runs.values():
        run["events_per_second"] = args.events / run["seconds"]
    out["runs"] = runs
    out["identical_to_pandas"] = checks
    out["speedup_read_events_over_pandas"] = runs["pandas"]["seconds"] / runs["read_events"]["seconds"]
    out["peak_rss_ratio_pandas_over_read_events"] = runs["pandas"]["peak_rss_mb"] / runs["read_events"]["peak_rss_mb"]

    print("\n| method | seconds | CPU seconds | events/s | peak RSS (MB) | after imports (MB) | pairs |\n"
          "|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run['seconds']:.2f} | {run['cpu_seconds']:.2f} | {run['events_per_second'] / 1e6:.2f}M "
              f"| {run['peak_rss_mb']:,.0f} | {run['after_imports_mb']:,.0f} | {run['pairs']:,} |")
    print(f"\nread_events is {out['speedup_read_events_over_pandas']:.2f}x as fast as pandas, with "
          f"{1 / out['peak_rss_ratio_pandas_over_read_events']:.2f}x its peak memory; identical: {checks}; "
          f"load average {out['load_average_1min']['start']:.1f} -> {out['load_average_1min']['end']:.1f}")
    if not all(all(c.values()) for c in checks.values()):
        raise SystemExit("the aggregates differ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
