"""Run funnel from a checkout: the command line of :mod:`funnel.cli` (installed as ``funnel``).

    python main.py --runsvd True
    python main.py --runsvd True --judge True --evaluate True
    python main.py --events "logs/*.parquet" --user-col user --time-col ts --output recs.parquet
    python main.py --events-sql "SELECT * FROM plays" --duckdb warehouse.duckdb --output warehouse.duckdb \\
        --output-table recommendations
    python main.py serve --artifacts artifacts/ --port 8000
    python main.py score --engine spark --artifacts artifacts/ --histories plays.parquet --output recs.parquet
"""

from funnel.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    main()
