"""``tune``: search settings for the training data on validation splits cut from it; write the configuration."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

from funnel.cli.data import add_data_flags, check_data_flags, load_dataset
from funnel.cli.flags import boolean
from funnel.cli.paths import check_not_input, check_writable
from funnel.errors import ConfigError

logger = logging.getLogger("funnel")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "tune", help="search settings for the data on validation splits and write them for train --config",
        description="Cut validation splits from the training data (temporal when it has listen times, per user "
                    "otherwise), search the parts' tunable settings and the ranker with Optuna, and write the "
                    "configuration that wins by the rule (else the starting one) to --output, with each component "
                    "alone scored beside the funnel.",
    )
    add_data_flags(parser)
    parser.add_argument("--time-budget", type=float, default=600.0, dest="time_budget", metavar="SECONDS",
                        help="seconds for the whole search, the checks included (default: 600)")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="at most this many trials (default: as many as the budget allows)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON settings to start from (default: the defaults)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--output", default="tuned.json", metavar="FILE",
                        help="where to write the configuration, for 'train --config' (default: tuned.json)")
    parser.add_argument("--progress", type=boolean, default=True, metavar="True/False",
                        help="show a progress bar (default: True)")
    parser.set_defaults(func=run, check=partial(check_data_flags, parser))
    return parser


def run(args: argparse.Namespace) -> None:
    """Tune on the flags' data and write the configuration to ``--output``; print the tables and the verdict."""
    import pandas as pd

    from funnel import FunnelConfig
    from funnel.tuning import tune

    output = Path(args.output)
    if output.suffix.lower() != ".json":
        raise ConfigError(f"--output {output} must be a .json file (a configuration for train --config)")
    check_writable(output)
    check_not_input(output, {"--events": args.events, "--artist-tags": args.artist_tags, "--config": args.config})
    start = FunnelConfig.from_file(args.config) if args.config is not None else None
    dataset = load_dataset(args)
    logger.info("tuning on %s", dataset)
    result = tune(dataset, time_budget=args.time_budget, n_trials=args.trials, seed=args.seed,
                  show_progress=args.progress, config=start)
    result.config.to_file(output)
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print("\nEach component alone and the funnel on the first validation split (NDCG@10):")
        print(result.components.to_string(index=False, float_format="{:.4f}".format))
        print("\nTrials:")
        shown = [c for c in result.table.columns if c in ("trial", "state", "ndcg@10", "seconds", "ranker")]
        print(result.table[shown].to_string(index=False, float_format="{:.4f}".format))
        if len(result.confirmation):
            print("\nThe best trial against the starting configuration on further splits:")
            print(result.confirmation.to_string(index=False, float_format="{:.4f}".format))
    print(f"\n{result.verdict}\nwrote {output}: python main.py --config {output} ...")
