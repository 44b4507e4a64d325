"""``update``: add a day's plays (and new artists) to a saved model without a refit, then save it."""

from __future__ import annotations

import argparse
import logging
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from funnel.cli.data import add_data_flags, check_data_flags, load_events
from funnel.errors import EmptyDataError
from funnel.persistence.model import model_directory

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("funnel")

PREVIOUS_SUFFIX = ".previous"


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``update`` subcommand and its flags to ``commands``."""
    parser = commands.add_parser(
        "update", help="add new plays, listeners and artists to a saved model without a refit",
        description="Add an event log of new plays (and, with --artist-tags, new artists placed by their labels) "
                    "to a saved model: listeners' vectors are folded in, artist statistics recounted; the ranker "
                    "and the artist factors stay as fitted. Plays are events: a log given twice counts twice. "
                    "In place (the default), the model directory is replaced atomically and the previous model "
                    f"kept beside it as DIR{PREVIOUS_SUFFIX}; a running service takes the new one on reload.",
    )
    add_data_flags(parser)
    parser.add_argument("--artifacts", default="artifacts/",
                        help="the model directory, or the --artifacts directory of a train run "
                             "(its model/ subdirectory is used) (default: artifacts/)")
    parser.add_argument("--output-model", default=None, dest="output_model", metavar="DIR",
                        help=f"where to save the updated model (default: in place, the previous one kept as "
                             f"DIR{PREVIOUS_SUFFIX})")
    parser.add_argument("--artists", default=None, metavar="PATH",
                        help="CSV or Parquet of artist_id, name rows: names of new artists (and new names of "
                             "known ones); artists listed with no plays join the catalogue too")
    parser.set_defaults(func=run, check=partial(check_flags, parser))
    return parser


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The new plays come from an event log; ``parser.error`` exits with code 2."""
    if args.events is None and args.events_sql is None:
        parser.error("update reads the new plays from an event log: add --events PATH or --events-sql QUERY")
    check_data_flags(parser, args)


def read_artists(path: Path) -> pd.DataFrame:
    """The ``artist_id, name`` frame of ``--artists`` (CSV or Parquet)."""
    import pandas as pd

    from funnel.cli.data import read_artist_tags

    frame = read_artist_tags(path, "artist_id", "name", flag="--artists", column_flags=None)
    return pd.DataFrame({"artist_id": frame["artist_id"], "name": frame["tag"]})


def run(args: argparse.Namespace) -> None:
    """Load the model, update it with the log, save it (in place: the previous model kept beside it)."""
    import pandas as pd

    from funnel import Recommender

    source = model_directory(Path(args.artifacts))
    target = Path(args.output_model) if args.output_model else source
    in_place = target.resolve() == source.resolve()
    started = time.perf_counter()
    model = Recommender.load(source, mmap=False)
    artists = read_artists(Path(args.artists)) if args.artists else None
    try:
        delta = load_events(args)
    except EmptyDataError as exc:
        if artists is None:
            print(f"nothing to update: {exc}; the model in {source} is unchanged")
            return
        delta = pd.DataFrame({"user_id": pd.Series([], dtype=model.user_ids_.dtype),
                              "artist_id": pd.Series([], dtype=model.artist_ids_.dtype)})
    fingerprint = model.fingerprint_
    model.update(delta, artists=artists)
    if model.fingerprint_ == fingerprint:
        print(f"nothing to update: no new plays, tags or artists; the model in {source} is unchanged")
        return
    if in_place:
        previous = source.with_name(source.name + PREVIOUS_SUFFIX)
        Recommender.load(source, mmap=False).save(previous)
        logger.info("kept the previous model in %s", previous)
    path = model.save(target)
    print(f"updated {source} with the log in {time.perf_counter() - started:.1f}s: saved to {path} "
          f"({len(model.user_ids_)} users, {len(model.artist_ids_)} artists)")

